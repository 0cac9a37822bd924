"""Config checks that run before any data is read or anything compiles.

ml_collections already refuses unknown keys and wrongly typed overrides; these checks catch values
that are well typed but impossible, naming the key and what is allowed.
"""

from __future__ import annotations

import ml_collections

from flax_s2s.data.tasks import TASKS
from flax_s2s.models.norms import NORM_KINDS, NORM_POSITIONS

_CHOICES = {
    "too_long": ("drop", "error"),
    "model.type": ("lstm", "transformer"),
    "model.cell": ("lstm", "gru"),
    "model.norm": NORM_KINDS,
    "model.norm_position": NORM_POSITIONS,
    "model.dtype": ("float32", "bfloat16"),
    "model.positions": ("sinusoidal", "learned"),
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
    "model.d_model",
    "model.num_heads",
    "model.mlp_dim",
    "model.num_decoder_layers",
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
    if not 0.0 <= config.label_smoothing < 1.0:
        raise ConfigError(f"config.label_smoothing={config.label_smoothing}: must be in [0, 1)")
    if not 0.0 <= config.model.dropout_rate < 1.0:
        raise ConfigError(f"config.model.dropout_rate={config.model.dropout_rate}: must be in [0, 1)")
    if config.optimizer.learning_rate <= 0:
        raise ConfigError(f"config.optimizer.learning_rate={config.optimizer.learning_rate}: must be > 0")
    if config.model.type == "transformer" and config.model.d_model % config.model.num_heads:
        raise ConfigError(
            f"config.model.d_model={config.model.d_model}: must be divisible by "
            f"config.model.num_heads={config.model.num_heads}"
        )
    _check_batch_norm_forcing(config)


def _check_batch_norm_forcing(config: ml_collections.ConfigDict) -> None:
    """BatchNorm needs batch x time statistics, which exist only on the fully teacher-forced
    path; a decoder unrolled step by step on its own tokens has none (see models/norms.py)."""
    forcing = config.get("teacher_forcing")
    if config.model.norm != "batch" or forcing is None:
        return
    if forcing.get("schedule", "constant") != "constant" or forcing.get("p", 1.0) != 1.0:
        raise ConfigError(
            "config.model.norm='batch' trains only with full teacher forcing "
            "(config.teacher_forcing.schedule='constant', p=1.0): scheduled sampling unrolls the "
            "decoder step by step, where BatchNorm has no batch x time statistics"
        )
