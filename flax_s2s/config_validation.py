"""Config checks that run before any data is read or anything compiles.

ml_collections already refuses unknown keys and wrongly typed overrides; these checks catch values
that are well typed but impossible, naming the key and what is allowed.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def _check_mesh_form(shape: tuple) -> None:
    where = f"config.mesh_shape={shape}"
    if len(shape) != 2 or not all(isinstance(n, int) for n in shape):
        raise ConfigError(f"{where}: must be two integers (data, model)")
    if any(n == 0 or n < -1 for n in shape) or shape == (-1, -1):
        raise ConfigError(f"{where}: each axis must be > 0, or -1 (all remaining devices) for one")


def resolve_mesh_shape(mesh_shape: Sequence[int], device_count: int) -> tuple[int, int]:
    """The (data, model) mesh shape with its -1 (if any) replaced by the remaining devices.

    Raises ConfigError naming the mesh and the device count when they do not fit.
    """
    shape = tuple(mesh_shape)
    _check_mesh_form(shape)
    where = f"config.mesh_shape={shape}"
    fixed = abs(shape[0] * shape[1])  # the product of the axes that are not -1
    if -1 in shape:
        if device_count % fixed:
            raise ConfigError(f"{where}: {fixed} does not divide the {device_count} devices")
        return tuple(device_count // fixed if n == -1 else n for n in shape)
    if fixed != device_count:
        raise ConfigError(f"{where}: the mesh holds {fixed} devices, but there are {device_count}")
    return shape


def _validate_mesh(config: ml_collections.ConfigDict, device_count: int | None) -> None:
    """The mesh's form; with `device_count`, also that it fits the devices and that its `data`
    axis divides the train and eval batches."""
    _check_mesh_form(tuple(config.mesh_shape))
    if device_count is None:
        return
    data, _ = resolve_mesh_shape(config.mesh_shape, device_count)
    for key in ("batch_size", "eval_batch_size"):
        if config[key] % data:
            raise ConfigError(
                f"config.{key}={config[key]} is not divisible by the mesh's data axis of {data} "
                f"(config.mesh_shape={tuple(config.mesh_shape)} on {device_count} devices)"
            )


def _validate_distributed(config: ml_collections.ConfigDict) -> None:
    dist = config.distributed
    if dist.num_processes < 0:
        raise ConfigError(f"config.distributed.num_processes={dist.num_processes}: must be >= 0")
    if dist.process_id < -1 or (dist.num_processes and dist.process_id >= dist.num_processes):
        raise ConfigError(
            f"config.distributed.process_id={dist.process_id}: must be -1 (from the environment) "
            f"or in [0, config.distributed.num_processes={dist.num_processes})"
        )


def validate_config(config: ml_collections.ConfigDict, device_count: int | None = None) -> None:
    """Raises ConfigError naming the first impossible value. With `device_count` (all devices of
    all processes), also checks the mesh against the devices and the batch sizes."""
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
    _validate_mesh(config, device_count)
    _validate_distributed(config)
