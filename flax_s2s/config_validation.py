"""Config checks that run before any data is read or anything compiles.

ml_collections already refuses unknown keys and wrongly typed overrides; these checks catch values
that are well typed but impossible, naming the key and what is allowed.
"""

from __future__ import annotations

import ml_collections

from flax_s2s import forcing
from flax_s2s.checkpoint import BEST_MODES
from flax_s2s.data.pipeline import TOO_LONG_POLICIES
from flax_s2s.data.task_data import FILE_TASKS, TASK_NAMES, TASK_SPLITS, VOCAB_TYPES, resolve_data_path
from flax_s2s.data.vocab import SP_MODEL_TYPES
from flax_s2s.errors import ConfigError
from flax_s2s.metrics import TEXT_METRICS
from flax_s2s.models import DTYPES, MODEL_TYPES
from flax_s2s.models.norms import NORM_KINDS, NORM_POSITIONS
from flax_s2s.models.rnn import CELLS
from flax_s2s.models.t5 import FEED_FORWARDS
from flax_s2s.models.transformer import ATTENTIONS, POSITIONS
from flax_s2s.sharding import check_mesh_form, resolve_mesh_shape

# config key -> its allowed values, each defined by the module that acts on them
CHOICES = {
    "too_long": TOO_LONG_POLICIES,
    "nonfinite_policy": ("skip", "stop"),  # read by the training loop
    "best_mode": BEST_MODES,
    "model.type": MODEL_TYPES,
    "model.cell": CELLS,
    "model.norm": NORM_KINDS,
    "model.norm_position": NORM_POSITIONS,
    "model.dtype": tuple(DTYPES),
    "model.positions": POSITIONS,
    "model.attention": ATTENTIONS,
    "model.feed_forward": FEED_FORWARDS,
    "vocab.type": VOCAB_TYPES,
    "vocab.sp_model_type": SP_MODEL_TYPES,
    "teacher_forcing.schedule": forcing.SCHEDULES,
    "teacher_forcing.mode": forcing.MODES,
    "teacher_forcing.position_schedule": forcing.POSITION_SCHEDULES,
    "teacher_forcing.position_combine": forcing.COMBINES,
}
_POSITIVE = (
    "batch_size",
    "eval_batch_size",
    "num_train_steps",
    "log_every",
    "eval_every",
    "checkpoint_every",
    "max_checkpoints",
    "grad_accum_steps",
    "model.emb_dim",
    "model.hidden_dim",
    "model.num_encoder_layers",
    "model.attention_dim",
    "model.d_model",
    "model.num_heads",
    "model.mlp_dim",
    "model.num_decoder_layers",
    "model.relative_attention_max_distance",
)


def _get(config: ml_collections.ConfigDict, dotted: str):
    value = config
    for part in dotted.split("."):
        value = value[part]
    return value


def _validate_pretrained(config: ml_collections.ConfigDict) -> None:
    """`config.pretrained` and what `flax_s2s.pretrained.configure` fills from it agree."""
    if config.pretrained and not config.model.pretrained_config:
        raise ConfigError(f"config.pretrained={config.pretrained!r} but config.model.pretrained_config "
                          "is empty: flax_s2s.pretrained.configure(config) fills it (train.py does)")
    if config.pretrained and config.init_from:
        raise ConfigError(f"config.pretrained={config.pretrained!r} and config.init_from="
                          f"{config.init_from!r}: a fresh run starts from one of them")
    if config.vocab.type == "pretrained" and not config.pretrained:
        raise ConfigError("config.pretrained is empty, but config.vocab.type='pretrained' reads "
                          "the tokenizer of that checkpoint")
    if config.model.pretrained_config and config.model.type not in ("t5", "bart"):
        raise ConfigError(f"config.model.type={config.model.type!r} with a pretrained_config: a "
                          "pretrained model is 't5' or 'bart'")


def _validate_data(config: ml_collections.ConfigDict) -> None:
    """The task, its data location and splits, buckets, vocabulary and text metrics."""
    if config.task not in TASK_NAMES:
        raise ConfigError(f"config.task={config.task!r}: must be one of {sorted(TASK_NAMES)}")
    if config.task in FILE_TASKS:
        if not config.data_path:
            raise ConfigError(f"config.data_path is empty: task {config.task!r} reads local data from it")
        path = resolve_data_path(config.data_path)
        exists = path.is_file() if config.task == "cmudict_g2p" else path.is_dir()
        if not exists:
            kind = "file" if config.task == "cmudict_g2p" else "directory"
            raise ConfigError(f"config.data_path={config.data_path!r}: no such {kind} {path}")
    _validate_pretrained(config)
    if config.task == "tfds" and not config.tfds_name:
        raise ConfigError("config.tfds_name is empty: task 'tfds' loads a prepared dataset by name")
    known_splits = TASK_SPLITS.get(config.task)
    if known_splits:
        for key in ("eval_splits", "final_eval_split"):
            wanted = [config[key]] if isinstance(config[key], str) else list(config[key])
            unknown = [split for split in wanted if split not in known_splits]
            if unknown:
                raise ConfigError(
                    f"config.{key}={config[key]!r}: task {config.task!r} has only splits {list(known_splits)}"
                )
    boundaries = list(config.bucket_boundaries)
    if any(not isinstance(b, int) or b < 1 for b in boundaries) or boundaries != sorted(set(boundaries)):
        raise ConfigError(
            f"config.bucket_boundaries={config.bucket_boundaries!r}: must be increasing ints >= 1"
        )
    if config.vocab.sp_vocab_size < 5:
        raise ConfigError(f"config.vocab.sp_vocab_size={config.vocab.sp_vocab_size}: must be > 4")
    unknown = [name for name in config.text_metrics if name not in TEXT_METRICS]
    if unknown:
        raise ConfigError(
            f"config.text_metrics={config.text_metrics!r}: {unknown} not in {list(TEXT_METRICS)}"
        )


def _validate_mesh(config: ml_collections.ConfigDict, device_count: int | None) -> None:
    """The mesh's form; with `device_count`, also that it fits the devices and that its `data`
    axis divides the train and eval batches."""
    check_mesh_form(tuple(config.mesh_shape))
    if device_count is None:
        return
    data, _ = resolve_mesh_shape(config.mesh_shape, device_count)
    for key in ("batch_size", "eval_batch_size"):
        if config[key] % data:
            raise ConfigError(
                f"config.{key}={config[key]} is not divisible by the mesh's data axis of {data} "
                f"(config.mesh_shape={tuple(config.mesh_shape)} on {device_count} devices)"
            )
    if (config.batch_size // data) % config.grad_accum_steps:
        raise ConfigError(
            f"config.batch_size={config.batch_size} over the mesh's data axis of {data} gives "
            f"{config.batch_size // data} rows a device, not divisible by "
            f"config.grad_accum_steps={config.grad_accum_steps}: each device splits its rows "
            f"into the microbatches"
        )


def _validate_averaging_and_stopping(config: ml_collections.ConfigDict) -> None:
    """Gradient accumulation's split of the batch, the EMA decay, early stopping's fields."""
    if config.batch_size % config.grad_accum_steps:
        raise ConfigError(
            f"config.batch_size={config.batch_size} is not divisible by "
            f"config.grad_accum_steps={config.grad_accum_steps} (microbatches per step)"
        )
    if not 0.0 <= config.ema_decay < 1.0:
        raise ConfigError(f"config.ema_decay={config.ema_decay}: must be in [0, 1) (0: off)")
    stopping = config.early_stopping
    if stopping.patience < 0:
        raise ConfigError(f"config.early_stopping.patience={stopping.patience}: must be >= 0 (0: off)")
    if stopping.min_delta < 0:
        raise ConfigError(f"config.early_stopping.min_delta={stopping.min_delta}: must be >= 0")
    if stopping.patience > 0 and config.keep_best < 1:
        raise ConfigError(
            f"config.early_stopping.patience={stopping.patience} needs config.keep_best >= 1 "
            f"(got {config.keep_best}): the final evaluation reads the best checkpoint kept"
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
    _validate_data(config)
    for key, allowed in CHOICES.items():
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
    if config.init_from_step < -1:
        raise ConfigError(
            f"config.init_from_step={config.init_from_step}: must be a checkpoint step >= 0, or -1 "
            "(the newest readable one)"
        )
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
    if config.model.type in ("transformer", "t5") and config.model.d_model % config.model.num_heads:
        raise ConfigError(
            f"config.model.d_model={config.model.d_model}: must be divisible by "
            f"config.model.num_heads={config.model.num_heads}"
        )
    if config.model.type == "transformer" and config.model.attention == "cudnn" and (
            config.model.dtype == "float32"):
        raise ConfigError(
            "config.model.dtype='float32': config.model.attention='cudnn' needs 'bfloat16' "
            "(cuDNN's fused attention computes in 16 bits; 'auto' picks it where it can run)"
        )
    _check_batch_norm_forcing(config)
    _validate_teacher_forcing(config.teacher_forcing)
    _validate_packing(config)
    _validate_averaging_and_stopping(config)
    _validate_mesh(config, device_count)
    _validate_distributed(config)


def _check_batch_norm_forcing(config: ml_collections.ConfigDict) -> None:
    """BatchNorm needs batch x time statistics, which exist only on the fully teacher-forced
    path; a decoder unrolled step by step on its own tokens has none (see models/norms.py)."""
    teacher_forcing = config.teacher_forcing
    if config.model.norm != "batch":
        return
    if (teacher_forcing.schedule != "constant" or teacher_forcing.p != 1.0
            or teacher_forcing.position_schedule != "none"):
        raise ConfigError(
            "config.model.norm='batch' trains only with full teacher forcing "
            "(config.teacher_forcing.schedule='constant', p=1.0, position_schedule='none'): "
            "scheduled sampling unrolls the "
            "decoder step by step, where BatchNorm has no batch x time statistics"
        )


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
    if not 0.0 <= tf.position_floor <= 1.0:
        raise ConfigError(
            f"config.teacher_forcing.position_floor={tf.position_floor}: must be in [0, 1]"
        )
    k, slope, floor = tf.position_k, tf.position_slope, tf.position_floor
    position_needs = {
        "linear": (floor <= k <= 1.0 and slope > 0,
                   "position_floor <= position_k <= 1 and position_slope > 0"),
        "exponential": (0.0 < k < 1.0, "0 < position_k < 1"),
        "inverse_sigmoid": (k >= 1.0, "position_k >= 1"),
    }
    kind = tf.position_schedule
    if kind in position_needs and not position_needs[kind][0]:
        raise ConfigError(
            f"config.teacher_forcing (position_schedule={kind!r}, position_k={k}, "
            f"position_slope={slope}, position_floor={floor}): the {kind} position schedule "
            f"needs {position_needs[kind][1]}"
        )


# config.model.type values whose models train on packed rows (`Seq2Seq.takes_packed_rows`), and
# why the others do not
PACKED_MODEL_TYPES = ("transformer", "bart", "t5")
_WHY_NOT_PACKED = {
    "lstm": "the RNN's recurrent state would carry from one example of a row into the next "
            "unless reset at each example's start, which costs its sequential scan its simplicity",
}


def _validate_packing(config: ml_collections.ConfigDict) -> None:
    """`config.pack` needs a Transformer (or BART, T5), no length buckets, and teacher forcing or a
    parallel scheduled-sampling mode (`forcing.PACKED_MODES`)."""
    if not config.pack:
        return
    if config.model.type not in PACKED_MODEL_TYPES:
        raise ConfigError(
            f"config.pack=True with config.model.type={config.model.type!r}: packing trains "
            f"model.type in {list(PACKED_MODEL_TYPES)} only; "
            f"{_WHY_NOT_PACKED.get(config.model.type, 'it reads no segments')}"
        )
    if config.bucket_boundaries:
        raise ConfigError(
            f"config.pack=True with config.bucket_boundaries={tuple(config.bucket_boundaries)}: "
            "packed rows are filled to max_src_len / max_tgt_len; use one or the other"
        )
    tf = config.teacher_forcing
    always_gold = tf.schedule == "constant" and tf.p == 1.0 and tf.position_schedule == "none"
    if not always_gold and tf.mode not in forcing.PACKED_MODES:
        raise ConfigError(
            f"config.pack=True with scheduled sampling (config.teacher_forcing.schedule="
            f"{tf.schedule!r}, p={tf.p}, position_schedule={tf.position_schedule!r}) in "
            f"config.teacher_forcing.mode={tf.mode!r}: packed rows train with full teacher "
            f"forcing or mode in {list(forcing.PACKED_MODES)} (the exact mode scans the decoder "
            "step, whose state would carry across the examples of a row)"
        )
