"""The default job: "a+b" -> sum (operands up to 3 digits) with a bidirectional LSTM and additive
attention, fully teacher forced. Reaches >= 99.5% greedy exact match on the held-out test split
within a few minutes on 2 CPU cores."""

from configs import default


def get_config():
    config = default.get_config()
    return config
