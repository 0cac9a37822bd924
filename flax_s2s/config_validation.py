"""Config checks that run before any data is read or anything compiles.

ml_collections already refuses unknown keys and wrongly typed overrides; these checks catch values
that are well typed but impossible, naming the key and what is allowed.
"""

from __future__ import annotations

import ml_collections

from flax_s2s.data.tasks import TASKS

_CHOICES = {
    "too_long": ("drop", "error"),
    "nonfinite_policy": ("skip", "stop"),
    "best_mode": ("max", "min"),
    "model.type": ("lstm",),
    "model.cell": ("lstm", "gru"),
}
_POSITIVE = (
    "batch_size",
    "eval_batch_size",
    "num_train_steps",
    "log_every",
    "eval_every",
    "checkpoint_every",
    "max_checkpoints",
    "model.emb_dim",
    "model.hidden_dim",
    "model.num_encoder_layers",
    "model.attention_dim",
)


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key."""


def _get(config: ml_collections.ConfigDict, dotted: str):
    value = config
    for part in dotted.split("."):
        value = value[part]
    return value


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError naming the first impossible value."""
    if config.task not in TASKS:
        raise ConfigError(f"config.task={config.task!r}: must be one of {sorted(TASKS)}")
    for key, allowed in _CHOICES.items():
        value = _get(config, key)
        if value not in allowed:
            raise ConfigError(f"config.{key}={value!r}: must be one of {list(allowed)}")
    for key in _POSITIVE:
        value = _get(config, key)
        if value <= 0:
            raise ConfigError(f"config.{key}={value}: must be > 0")
    for key in ("max_src_len", "max_tgt_len"):
        if config[key] < 2:
            raise ConfigError(f"config.{key}={config[key]}: must be >= 2")
    if config.eval_beam_size < 0:
        raise ConfigError(
            f"config.eval_beam_size={config.eval_beam_size}: must be >= 0 (0: greedy decoding)"
        )
    if not 0.0 <= config.label_smoothing < 1.0:
        raise ConfigError(f"config.label_smoothing={config.label_smoothing}: must be in [0, 1)")
    if not 0.0 <= config.model.dropout_rate < 1.0:
        raise ConfigError(f"config.model.dropout_rate={config.model.dropout_rate}: must be in [0, 1)")
    if config.keep_best < 0:
        raise ConfigError(f"config.keep_best={config.keep_best}: must be >= 0")
    split, _, metric = config.best_metric.partition("/")
    if config.keep_best > 0 and (split not in config.eval_splits or not metric):
        raise ConfigError(
            f"config.best_metric={config.best_metric!r}: must be 'split/metric' with split in "
            f"config.eval_splits={list(config.eval_splits)}"
        )
    if config.optimizer.learning_rate <= 0:
        raise ConfigError(f"config.optimizer.learning_rate={config.optimizer.learning_rate}: must be > 0")
