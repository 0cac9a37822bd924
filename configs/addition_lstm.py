"""The default job: "a+b" -> sum (operands up to 3 digits) with a bidirectional LSTM (128 per
direction) and additive attention, fully teacher forced, 3500 steps of batch 128.

Measured on 2 CPU cores (`python train.py --workdir runs/addition`, 2026-12-01, a fresh clone):
99.85% greedy exact match on the 2000 held-out test problems in 81-85 s wall time, data
preparation and compiles included; the same at the commit before this change (99.90% in 132 s
when first measured, several commits earlier).
"""

from configs import default


def get_config():
    return default.get_config()
