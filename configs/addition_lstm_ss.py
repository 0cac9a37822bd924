"""Scheduled sampling on the default job: "a+b" -> sum with the bidirectional LSTM and additive
attention, the decoder reading its own argmax token with probability 1 - p(step), p decaying along
an inverse sigmoid from 1 to ~0 (p = 1/2 near step 1500 of 3000).

`bench/exposure_bias.py` runs it against p = 1, p = 0 and the other decaying schedules."""

from configs import default


def get_config():
    config = default.get_config()
    config.teacher_forcing.schedule = "inverse_sigmoid"
    config.teacher_forcing.k = 270.0  # p(step) = k / (k + exp(step / k)): 1/2 near k ln k = 1511
    config.teacher_forcing.floor = 0.0
    config.teacher_forcing.choice = "argmax"
    config.teacher_forcing.mode = "exact"
    return config
