"""A run's config, filled and checked at the edge, before any data is read or anything compiles.

Each rule lives beside the code whose fields it protects, as that module's `check_config`; this
module only runs them, in the order a reader meets the fields (data, model, method, training,
devices). The first impossible value raises ConfigError naming the key and what is allowed.
"""

from __future__ import annotations

import ml_collections

from flax_s2s import checkpoint, early_stopping, forcing, input_noise, lora, mrt, oracle, sharding
from flax_s2s.data import pipeline, registry, task_data, text_files, token_store
from flax_s2s.errors import ConfigError
from flax_s2s.models import registry as model_registry
from flax_s2s.models import remat
from flax_s2s.pretrained import finetune
from flax_s2s.training import distill, evaluation, frozen, loop, setup, state, step

# Every module that owns config fields, with its check; a new feature adds its module here.
CHECKS = (
    registry.check_config,  # the task and its data
    text_files.check_config,  # the fields of the text files a user brings
    task_data.check_config,  # the vocabulary
    pipeline.check_config,  # lengths, batches, buckets, packing
    token_store.check_config,  # the train split on disk
    finetune.check_config,  # config.pretrained
    setup.check_config,  # where a fresh run starts
    model_registry.check_config,  # config.model, its kind's own checks
    remat.check_config,  # config.model.remat
    forcing.check_config,  # config.teacher_forcing
    input_noise.check_config,  # config.teacher_forcing.input_noise
    oracle.check_config,  # config.teacher_forcing.oracle_targets
    mrt.check_config,  # config.mrt
    state.check_config,  # config.optimizer
    frozen.check_config,  # config.frozen
    lora.check_config,  # config.lora
    step.check_config,  # label smoothing, EMA
    distill.check_config,  # config.distill: token-level distillation
    evaluation.check_config,  # eval batches, search, text metrics
    checkpoint.check_config,  # what is kept
    early_stopping.check_config,
    loop.check_config,  # intervals, the non-finite policy, the best metric
)

__all__ = ["CHECKS", "ConfigError", "prepare_config", "validate_config"]


def validate_config(config: ml_collections.ConfigDict, device_count: int | None = None) -> None:
    """Raises ConfigError naming the first impossible value. With `device_count` (all devices of
    all processes), also checks the mesh against the devices and the batch sizes."""
    for check in CHECKS:
        check(config)
    sharding.check_config(config, device_count)
    step.check_microbatches(config, sharding.data_shards(config, device_count))


def prepare_config(config: ml_collections.ConfigDict, device_count: int | None = None) -> None:
    """Fills the config from `config.pretrained` (`finetune.configure`), then validates it; the
    one function that owns both. Idempotent: `train.py` calls it before joining other processes
    (without the device count), `training.run` again with it."""
    finetune.configure(config)
    validate_config(config, device_count)
