"""The one-hour CMUdict G2P recipe (`configs/g2p_gru.py`) trained with scheduled sampling.

Each decoder input is the gold previous phone with probability p(step), else the model's own
argmax phone of the previous position (`mode="exact"`: the decoder is scanned step by step so every
input is the model's real previous output). p follows an inverse sigmoid from 1 down to 1/2 at the
middle step and near 0 at the end, the shape and scaling `bench/exposure_bias.py` uses on addition.

`k` is derived from `num_train_steps` here: a run given another number of steps should set
`--config.teacher_forcing.k` to match, `flax_s2s.schedules.inverse_sigmoid_k(num_train_steps / 2)`.
"""

from configs import g2p_gru
from flax_s2s.schedules import inverse_sigmoid_k


def get_config():
    config = g2p_gru.get_config()
    config.teacher_forcing.schedule = "inverse_sigmoid"
    config.teacher_forcing.k = inverse_sigmoid_k(config.num_train_steps / 2)
    config.teacher_forcing.floor = 0.0
    config.teacher_forcing.choice = "argmax"
    config.teacher_forcing.mode = "exact"
    return config
