"""Warm start (`config.init_from`): a fresh run begins from another workdir's trained variables.

What is taken: the parameters (the trained ones, not their average where the source kept one:
`config.ema_decay`) and BatchNorm statistics of one checkpoint of the source workdir, and its
vocabularies (token ids must mean what they meant in training). What is not: the optimizer
state, the step, the PRNG key and the data position, which start fresh from this run's config.
This is how a teacher-forced model is fine-tuned with scheduled sampling, and how a later run can
start from weights made elsewhere.

Only a run whose own workdir has no checkpoint reads the source; once it has saved, resuming it
restores its own checkpoints and never looks at `init_from` again (a run stopped before its first
checkpoint reads the source again when restarted).

Every process restores the source's whole state onto its first device and places the variables
on the mesh from there (`training.create_train_state`): right for models that fit one device, the
only ones trained here; a model that needs FSDP to fit would need a restore straight into its
shards.
"""

from __future__ import annotations

import filecmp
import os
import shutil
from typing import Any

import flax
import jax
import numpy as np
from jax.experimental import multihost_utils

from flax_s2s.checkpoint import Checkpointer
from flax_s2s.data.task_data import SRC_VOCAB, TGT_VOCAB

VOCAB_SUFFIXES = (".json", ".model")  # symbol, SentencePiece (see data/vocab.py)


class WarmStartError(ValueError):
    """The source workdir cannot start this run; the message names both workdirs."""


def _vocab_files(workdir: str) -> dict[str, str]:
    """{file name: path} of the vocabularies saved in `workdir`."""
    names = [name + suffix for name in (SRC_VOCAB, TGT_VOCAB) for suffix in VOCAB_SUFFIXES]
    return {name: os.path.join(workdir, name) for name in names
            if os.path.exists(os.path.join(workdir, name))}


def copy_vocabularies(source: str, workdir: str) -> None:
    """Copies the source workdir's vocabularies into `workdir`. Vocabularies `workdir` already
    holds (a run that stopped before its first checkpoint) must be the same files."""
    source_files = _vocab_files(source)
    if {os.path.splitext(name)[0] for name in source_files} != {SRC_VOCAB, TGT_VOCAB}:
        raise WarmStartError(
            f"config.init_from={source!r} holds no saved vocabularies ({SRC_VOCAB}.*, "
            f"{TGT_VOCAB}.*): is it a flax_s2s workdir?"
        )
    own_files = _vocab_files(workdir)
    for name, path in own_files.items():
        if name not in source_files or not filecmp.cmp(path, source_files[name], shallow=False):
            raise WarmStartError(
                f"the vocabulary {name} of {workdir!r} differs from the one of "
                f"config.init_from={source!r}: warm-start into a new workdir"
            )
    os.makedirs(workdir, exist_ok=True)
    for name, path in source_files.items():
        if name not in own_files:
            shutil.copyfile(path, os.path.join(workdir, name))


def _restore_newest_readable(checkpointer: Checkpointer, step: int) -> tuple[dict[str, Any], int]:
    """(variables, step) of checkpoint `step`, or of the newest readable one when step is -1. With
    several processes, process 0's newest step is everyone's, so that all read the same one."""
    saved = checkpointer.all_steps()
    if step < 0 and jax.process_count() > 1 and saved:
        step = int(multihost_utils.broadcast_one_to_all(np.int32(saved[-1])))
    if step >= 0:
        if step not in saved:
            raise WarmStartError(f"config.init_from_step={step}: {checkpointer.directory!r} "
                                 f"has no such checkpoint; saved steps: {saved}")
        return checkpointer.restore_variables(step, raw_weights=True), step
    try:
        return checkpointer.restore_newest_variables(raw_weights=True)
    except FileNotFoundError:
        raise WarmStartError(
            f"config.init_from: no readable checkpoint in {checkpointer.directory!r}"
        ) from None


def load_variables(
    source: str, step: int, expected: dict[str, Any], workdir: str
) -> tuple[dict[str, Any], int]:
    """The source workdir's variables ({"params", "batch_stats"}) on this process's first device,
    checked leaf by leaf against `expected` (the new model's ShapeDtypeStructs), and their step.

    Raises WarmStartError naming both workdirs and the first variable whose path, shape or dtype
    differs.
    """
    directory = os.path.join(source, "checkpoints")
    if not os.path.isdir(directory):  # look first: a Checkpointer would create it
        raise WarmStartError(f"config.init_from={source!r}: no checkpoint directory {directory!r}")
    checkpointer = Checkpointer(directory)
    try:
        restored, restored_step = _restore_newest_readable(checkpointer, step)
    finally:
        checkpointer.close()
    variables = {"params": restored.get("params", {}), "batch_stats": restored.get("batch_stats", {})}
    _check_same_shapes(variables, expected, source, restored_step, workdir)
    return variables, restored_step


def model_differences(source: str, step: int, model_config: dict[str, Any]) -> dict[str, tuple]:
    """{field: (source's value, this run's)} of the `config.model` fields that differ from the
    source run's saved config (fields that change no shape, e.g. dropout; {} when unreadable)."""
    checkpointer = Checkpointer(os.path.join(source, "checkpoints"))
    try:
        saved = checkpointer.restore_config(step).get("model", {})
    except Exception:  # noqa: BLE001 - an old or unreadable config: nothing to compare
        return {}
    finally:
        checkpointer.close()
    return {key: (saved[key], value) for key, value in model_config.items()
            if key in saved and saved[key] != value and not (
                isinstance(value, list | tuple) and list(saved[key]) == list(value))}


def _check_same_shapes(variables: Any, expected: Any, source: str, step: int, workdir: str) -> None:
    found = flax.traverse_util.flatten_dict(variables, sep="/")
    wanted = flax.traverse_util.flatten_dict(expected, sep="/")
    where = f"checkpoint {step} of config.init_from={source!r}"
    for path in sorted(set(found) | set(wanted)):
        if path not in found:
            problem = f"has no {path} {tuple(wanted[path].shape)}"
        elif path not in wanted:
            problem = f"has {path} {tuple(found[path].shape)}, which the model has not"
        elif (found[path].shape, found[path].dtype) != (wanted[path].shape, wanted[path].dtype):
            problem = (f"has {path} {tuple(found[path].shape)} {found[path].dtype}, the model "
                       f"{tuple(wanted[path].shape)} {wanted[path].dtype}")
        else:
            continue
        raise WarmStartError(
            f"{where} does not fit the model of {workdir!r}: it {problem}. The model config "
            "(config.model, vocabularies) must match the source's."
        )

