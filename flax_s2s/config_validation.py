"""Config checks that run before any data is read or anything compiles.

ml_collections already refuses unknown keys and wrongly typed overrides; these checks catch values
that are well typed but impossible, naming the key and what is allowed.
"""

from __future__ import annotations

import ml_collections

from flax_s2s import forcing
from flax_s2s.data.tasks import TASKS

_CHOICES = {
    "too_long": ("drop", "error"),
    "model.type": ("lstm",),
    "model.cell": ("lstm", "gru"),
    "teacher_forcing.schedule": forcing.SCHEDULES,
    "teacher_forcing.mode": forcing.MODES,
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
    if not 0.0 <= config.label_smoothing < 1.0:
        raise ConfigError(f"config.label_smoothing={config.label_smoothing}: must be in [0, 1)")
    if not 0.0 <= config.model.dropout_rate < 1.0:
        raise ConfigError(f"config.model.dropout_rate={config.model.dropout_rate}: must be in [0, 1)")
    if config.optimizer.learning_rate <= 0:
        raise ConfigError(f"config.optimizer.learning_rate={config.optimizer.learning_rate}: must be > 0")
    _validate_teacher_forcing(config.teacher_forcing)


def _validate_teacher_forcing(tf: ml_collections.ConfigDict) -> None:
    """The schedule's parameters must give a probability that never increases."""
    if tf.choice in forcing.LATER_CHOICES:
        raise ConfigError(
            f"config.teacher_forcing.choice={tf.choice!r}: not implemented yet (a later variant: "
            f"the model seam feeds tokens, not embeddings); use one of {list(forcing.CHOICES)}"
        )
    if tf.choice not in forcing.CHOICES:
        raise ConfigError(
            f"config.teacher_forcing.choice={tf.choice!r}: must be one of {list(forcing.CHOICES)}"
        )
    if tf.temperature <= 0:
        raise ConfigError(f"config.teacher_forcing.temperature={tf.temperature}: must be > 0")
    for key in ("p", "floor"):
        if not 0.0 <= tf[key] <= 1.0:
            raise ConfigError(f"config.teacher_forcing.{key}={tf[key]}: must be in [0, 1]")
    needs = {
        "linear": (tf.floor <= tf.k <= 1.0 and tf.slope > 0, "floor <= k <= 1 and slope > 0"),
        "exponential": (0.0 < tf.k < 1.0, "0 < k < 1"),
        "inverse_sigmoid": (tf.k >= 1.0, "k >= 1"),
    }
    if tf.schedule in needs and not needs[tf.schedule][0]:
        raise ConfigError(
            f"config.teacher_forcing (schedule={tf.schedule!r}, k={tf.k}, slope={tf.slope}, "
            f"floor={tf.floor}): the {tf.schedule} schedule needs {needs[tf.schedule][1]}"
        )
