"""Shared fixtures: tiny models and data, compiled once per module or session."""

from __future__ import annotations

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # `configs` is imported from the repository root, as train.py does
    sys.path.insert(0, ROOT)


@pytest.fixture(scope="session")
def addition_data_dir(tmp_path_factory) -> str:
    """The addition task prepared once for the whole test session."""
    from flax_s2s.data import tasks

    data_dir = str(tmp_path_factory.mktemp("tfds"))
    tasks.prepare("addition", data_dir)
    return data_dir


def tiny_config(**overrides):
    """The default config shrunk to a model that compiles and trains in seconds."""
    from configs import default

    config = default.get_config()
    config.model.emb_dim = 16
    config.model.hidden_dim = 32
    config.model.attention_dim = 16
    config.batch_size = 32
    config.eval_batch_size = 64
    config.num_train_steps = 20
    config.log_every = 10
    config.eval_every = 10
    config.checkpoint_every = 10
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return config
