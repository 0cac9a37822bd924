"""What a run trains with, set up once: data, model, optimizer, the state's shardings and the train
state, restored from the newest readable checkpoint, warm-started from another run, or
fine-tuned from pretrained weights; and the jitted train step and evaluator over the mesh."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections
import optax
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from flax_s2s import early_stopping, lora, resume, sharding, warm_start
from flax_s2s.checkpoint import CONFIG_KEYS, Checkpointer
from flax_s2s.data import made_from, pipeline
from flax_s2s.data.registry import resolve_data_path
from flax_s2s.data.task_data import TaskData, load_task_data
from flax_s2s.data.vocab import model_special_tokens
from flax_s2s.early_stopping import EarlyStopping
from flax_s2s.errors import ConfigError
from flax_s2s.forcing import TeacherForcing
from flax_s2s.models import Seq2Seq, build_model
from flax_s2s.pretrained import load_variables, pretrained_module
from flax_s2s.training import distill, frozen
from flax_s2s.training.evaluation import Evaluator, make_evaluator
from flax_s2s.training.state import (
    TrainState,
    abstract_train_state,
    create_train_state,
    make_optimizer,
)
from flax_s2s.training.step import make_train_step


@dataclasses.dataclass(frozen=True)
class Steps:
    """A run's jitted functions over a mesh. Each takes numpy batches and places them as global
    arrays split over the mesh's `data` axis.

    train: (state, this process's rows of a batch) -> (state, metrics); the state is donated.
    evaluator: decoding and scoring of whole eval batches (replicated results).
    """

    train: Callable[..., Any]
    evaluator: Evaluator


def jit_steps(
    model: Seq2Seq,
    tx: optax.GradientTransformation,
    config: ml_collections.ConfigDict,
    mesh: Mesh,
    state_shardings: TrainState,
    forcing: TeacherForcing | None = None,
    forced_bos: int = -1,
    teachers: distill.Teachers | None = None,
) -> Steps:
    """Compiles (lazily) the train step and the evaluator with explicit in/out shardings; the
    evaluator's outputs start with `forced_bos` unless it is -1. With `teachers`
    (`distill.load_teachers`), the step also reads their placed variables, a frozen argument."""
    batch_sharding, replicated = sharding.batch_sharding(mesh), sharding.replicated(mesh)
    models = teachers.models if teachers else ()
    in_shardings = (state_shardings, batch_sharding) + ((teachers.shardings,) if teachers else ())
    train = jax.jit(
        make_train_step(model, tx, config, forcing, data_shards=mesh.shape[sharding.DATA],
                        teachers=models),
        in_shardings=in_shardings,
        out_shardings=(state_shardings, replicated),
        donate_argnums=0,
    )
    extra = (teachers.variables,) if teachers else ()

    def train_step(state, local_batch):
        return train(state, sharding.global_batch(local_batch, batch_sharding, config.batch_size),
                     *extra)

    evaluator = make_evaluator(model, config, mesh, state_shardings.variables, forced_bos)
    return Steps(train=train_step, evaluator=evaluator)


def _load_data(
    config: ml_collections.ConfigDict, workdir: str, splits: Sequence[str], warm_start_from: str = ""
) -> TaskData:
    """The task data of `splits`; with several processes, process 0 prepares it and writes the
    vocabularies first, and the others read them after (no two processes write the same files).
    `warm_start_from`: a workdir whose vocabularies are copied in first (see warm_start.py).
    What the workdir's vocabularies were made from is checked before the data is read, and
    recorded after it where it was not (`made_from.json`, see `flax_s2s.data.made_from`)."""
    pretrained = config.pretrained if config.vocab.type == "pretrained" else ""

    def load() -> TaskData:
        if warm_start_from:
            warm_start.copy_vocabularies(warm_start_from, workdir)
        made_from.check(workdir, pretrained)
        data = load_task_data(config, workdir, splits)
        if made_from.read(workdir) is None:
            made_from.record(workdir, pretrained)
        return data

    if jax.process_count() == 1:
        return load()
    data = load() if jax.process_index() == 0 else None
    multihost_utils.sync_global_devices("flax_s2s: task data prepared")
    return data if data is not None else load_task_data(config, workdir, splits)


@dataclasses.dataclass
class RunSetup:
    """What a run trains with, from `prepare_run`."""

    data: TaskData
    model: Seq2Seq
    tx: optax.GradientTransformation
    state: TrainState
    state_shardings: TrainState
    data_iterator: Any
    checkpointer: Checkpointer
    state_template: TrainState  # ShapeDtypeStructs on the mesh: what a checkpoint restores into
    early_stopping: EarlyStopping  # with the restored run's eval history
    teachers: distill.Teachers | None = None  # config.distill.teachers, loaded and placed


def prepare_run(
    config: ml_collections.ConfigDict, workdir: str, mesh: Mesh, eval_splits: Sequence[str]
) -> RunSetup:
    """Data, model, optimizer, the state's shardings on `mesh`, and the train state: restored
    from the newest readable checkpoint (onto this mesh, whichever mesh saved it) or fresh,
    with the variables of `config.init_from` when it names a workdir to warm-start from, or of
    `config.pretrained` when it names a checkpoint to fine-tune."""
    checkpointer = Checkpointer(
        os.path.join(workdir, "checkpoints"), config.max_checkpoints, config.keep_best,
        config.best_mode,
    )
    resuming = bool(checkpointer.all_steps())
    if resuming:  # before any data is read: a run this config cannot continue fails at once
        _check_resume(config, workdir, checkpointer)
    warm_start_from = "" if resuming else config.init_from
    # Read before anything is written into the workdir: a checkpoint whose weights do not load
    # fails with the workdir as it was, not after its tokenizer was saved there.
    pretrained = _pretrained_variables(config) if not (resuming or warm_start_from) else None
    data = _load_data(config, workdir, ("train", *eval_splits), warm_start_from)
    model = build_model(config, len(data.src_vocab), len(data.tgt_vocab),
                        model_special_tokens(data.src_vocab, data.tgt_vocab))
    teachers = distill.load_teachers(config, data.src_vocab, data.tgt_vocab, workdir, mesh)
    tx = make_optimizer(config)
    # This process reads only its rows of each global batch, the rows its devices hold.
    process_index, process_count = sharding.process_batch_rows(mesh, config.batch_size)
    train_data = pipeline.train_dataset(
        data.splits["train"], config.batch_size, config.seed, process_index, process_count,
        bucket_boundaries=tuple(config.bucket_boundaries), pack=config.pack,
    )
    data_iterator = pipeline.train_iterator(train_data)
    shapes = pipeline.first_batch(train_data)  # what the parameters are initialised for
    ema, lora_spec = config.ema_decay > 0, lora.LoraSpec.from_config(config)
    abstract_state = abstract_train_state(model, tx, config.seed, shapes, ema, lora_spec)
    base_params = lora.without_factors(abstract_state.params)
    frozen.check_params(config, base_params)  # before any checkpoint or weights are read
    lora.check_targets(lora_spec, base_params)
    state_shardings = sharding.train_state_shardings(abstract_state, tx, mesh, config.fsdp)
    template = sharding.with_shardings(abstract_state, state_shardings)
    history = None
    if resuming:
        state = checkpointer.restore(template, data_iterator)
        history = checkpointer.restore_extra(early_stopping.CHECKPOINT_ITEM, checkpointer.restored_step)
        _print(f"resumed from {checkpointer.directory} at step {int(state.step)}")
    else:
        variables = _initial_variables(config, warm_start_from, abstract_state, workdir,
                                       pretrained)
        state = create_train_state(model, tx, config.seed, shapes, state_shardings, variables,
                                   ema, lora_spec)
    return RunSetup(data, model, tx, state, state_shardings, data_iterator, checkpointer, template,
                    EarlyStopping.from_config(config, history), teachers)


def _initial_variables(
    config: ml_collections.ConfigDict, warm_start_from: str, abstract_state: TrainState,
    workdir: str, pretrained: dict[str, Any] | None,
) -> dict[str, Any] | None:
    """The variables a fresh run starts from: another run's (`config.init_from`), a pretrained
    checkpoint's (`config.pretrained`, read already: `pretrained`), or None (initialised from
    the seed)."""
    if warm_start_from:
        return _warm_start_variables(config, warm_start_from, abstract_state, workdir)
    if pretrained is not None:
        _print(f"fine-tuning {config.model.type} from {config.pretrained}: its weights, a fresh "
               "optimizer, step 0")
    return pretrained


def _pretrained_variables(config: ml_collections.ConfigDict) -> dict[str, Any] | None:
    """The variables of `config.pretrained` (None without one), for the module its config.json
    describes: the model the run builds from it has the same shapes (only dtype, dropout and the
    attention kernel may differ)."""
    if not config.pretrained:
        return None
    module = pretrained_module(config.pretrained)
    return {"batch_stats": {}, **load_variables(config.pretrained, module)}


# The config keys that hold paths, with how the run resolves each: a relative data path against
# the repository root, a teacher's workdir against the working directory.
RESUME_PATHS: resume.PathResolvers = {
    "data_path": resolve_data_path, "distill.teachers": os.path.abspath,
}


def _check_resume(
    config: ml_collections.ConfigDict, workdir: str, checkpointer: Checkpointer
) -> None:
    """Refuses a config that changes what the saved run's state depends on (see
    `flax_s2s.resume`); lists in the log the changes it takes."""
    # A damaged saved config names itself (FileFormatError): without it nothing can be checked.
    saved = checkpointer.restore_config(required=CONFIG_KEYS)
    accepted = resume.check_resume(saved, json.loads(config.to_json()), workdir, RESUME_PATHS)
    if accepted:
        _print("resuming with changed settings (saved -> this run): " + ", ".join(accepted))


def _warm_start_variables(
    config: ml_collections.ConfigDict, source: str, abstract_state: TrainState, workdir: str
) -> dict[str, Any]:
    """The variables of `source`'s checkpoint, checked against this run's model; says in the log
    where they come from and which model fields differ from the source's."""
    expected = {**abstract_state.variables, "params": lora.without_factors(abstract_state.params)}
    variables, source_step = warm_start.load_variables(source, config.init_from_step, expected,
                                                       workdir)
    _print(f"warm start from {source} (checkpoint {source_step}): its parameters, a fresh "
           "optimizer, step 0")
    if jax.process_index() == 0:
        changed = warm_start.model_differences(source, source_step, config.model.to_dict())
        if changed:
            _print("warm start: model fields that differ from the source's (source -> this "
                   "run): " + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items()))
    return variables


def _print(message: str) -> None:
    """A line in the log, from process 0 only."""
    if jax.process_index() == 0:
        print(message, flush=True)


def final_eval_splits(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The splits the final evaluation covers: the periodic evals' `eval_splits`, then
    `final_eval_split`."""
    return tuple(dict.fromkeys((*config.eval_splits, config.final_eval_split)))


def check_config(config: ml_collections.ConfigDict) -> None:
    """Where a fresh run starts: another run's checkpoint (`init_from`), or a pretrained one."""
    if config.init_from_step < -1:
        raise ConfigError(
            f"config.init_from_step={config.init_from_step}: must be a checkpoint step >= 0, or -1 "
            "(the newest readable one)"
        )
    if config.pretrained and config.init_from:
        raise ConfigError(f"config.pretrained={config.pretrained!r} and config.init_from="
                          f"{config.init_from!r}: a fresh run starts from one of them")
