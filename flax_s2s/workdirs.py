"""A trained workdir, loaded for use: its config, vocabularies, model and the variables of one
checkpoint (or the mean of several).

```
trained = load_workdir("runs/addition")            # the newest readable checkpoint
trained = load_workdir("runs/g2p", step=70_000, average=3)
tokens = decoding.best_sequences(trained.model, trained.variables, src_tokens, max_len)
```
Only the variables are read (`Checkpointer.restore_variables`): no optimizer, no train state,
nothing of training is imported. The decode and evaluate CLIs, the report and the benchmarks load
trained models through here.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from flax_s2s.checkpoint import CONFIG_KEYS, Checkpointer
from flax_s2s.data.pretrained_tokenizer import forced_bos_id
from flax_s2s.data.task_data import SRC_VOCAB, TGT_VOCAB, load_vocabs
from flax_s2s.data.vocab import Vocab, model_special_tokens
from flax_s2s.decoding import GenerationControls
from flax_s2s.models import Seq2Seq, build_model


class WorkdirError(Exception):
    """The workdir cannot give what was asked of it; the message names the directory and why."""


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    """A workdir's model, ready to decode."""

    config: ml_collections.ConfigDict
    model: Seq2Seq
    variables: dict[str, Any]
    src_vocab: Vocab
    tgt_vocab: Vocab
    step: int
    averaged_steps: tuple[int, ...]  # the checkpoint steps `variables` are the mean of: (step,) or more


def load_workdir(
    workdir: str, step: int | None = None, average: int = 1, raw_weights: bool = False
) -> TrainedModel:
    """A checkpoint of `workdir` (default: the newest readable one) with the config and
    vocabularies saved beside it. Where the run kept an average of its parameters
    (`config.ema_decay` > 0), the variables hold that average, unless `raw_weights`.

    `average` > 1 averages the variables of that many checkpoints: `step` and the ones kept before
    it. Near the end of a decayed learning rate the kept checkpoints sit close together, and their
    mean often decodes a little better than any one of them (fairseq's average_checkpoints). The
    kept ones are whatever the run kept: the newest, `keep_best` ones, a checkpoint saved on a stop.
    Unreadable checkpoints are skipped with a warning and left where they are (a trainer may still
    be writing this workdir), unless `step` names one.
    """
    if average < 1:
        raise WorkdirError(f"average={average}: must be >= 1 checkpoint")
    checkpoint_dir = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(checkpoint_dir):  # look first: a Checkpointer creates its directory
        raise WorkdirError(f"no checkpoint in {checkpoint_dir!r}: train one first "
                           f"(python train.py --workdir {workdir})")
    vocabs = load_vocabs(workdir)
    checkpointer = Checkpointer(checkpoint_dir)
    try:
        saved = checkpointer.all_steps()
        if not saved:
            raise WorkdirError(f"no checkpoint in {checkpoint_dir!r}: train one first "
                               f"(python train.py --workdir {workdir})")
        if vocabs is None:
            raise WorkdirError(f"{workdir!r} has no saved vocabularies ({SRC_VOCAB}.*, {TGT_VOCAB}.*)")
        if step is None and average == 1:
            variables, newest = _restore_newest_readable(checkpointer, raw_weights)
            steps, restored = [newest], [variables]
        else:
            steps = _steps_to_load(saved, step, average, checkpoint_dir)
            restored = [_restore_step(checkpointer, s, raw_weights) for s in steps]
        config = _read_config(checkpointer, steps[-1])
    finally:
        checkpointer.close()
    # The special tokens come from the saved vocabularies, not the config: a workdir saved before
    # the model carried them (default ids only) rebuilds the very same model.
    model = build_model(config, len(vocabs[0]), len(vocabs[1]), model_special_tokens(*vocabs))
    return TrainedModel(config, model, mean_variables(restored), *vocabs, steps[-1], tuple(steps))


def _restore_newest_readable(
    checkpointer: Checkpointer, raw_weights: bool
) -> tuple[dict[str, Any], int]:
    try:
        return checkpointer.restore_newest_variables(raw_weights)
    except FileNotFoundError as error:  # none readable: the message names the directory
        raise WorkdirError(str(error)) from None


def _restore_step(checkpointer: Checkpointer, step: int, raw_weights: bool) -> dict[str, Any]:
    try:
        return checkpointer.restore_variables(step, raw_weights)
    except Exception as error:  # noqa: BLE001 - any failure to read it: say which checkpoint
        raise WorkdirError(
            f"checkpoint {step} in {checkpointer.directory!r} is unreadable: {error!r:.300}"
        ) from error


def _read_config(checkpointer: Checkpointer, step: int) -> ml_collections.ConfigDict:
    """The saved config of `step`; a damaged one raises FileFormatError naming its file."""
    return ml_collections.ConfigDict(checkpointer.restore_config(step, required=CONFIG_KEYS))


def _steps_to_load(saved: list[int], step: int | None, average: int, directory: str) -> list[int]:
    """The `average` newest saved steps up to `step` (default: the newest), oldest first."""
    step = saved[-1] if step is None else step
    if step not in saved:
        raise WorkdirError(f"no checkpoint for step {step} in {directory!r}; saved steps: {saved}")
    upto = [s for s in saved if s <= step]
    if len(upto) < average:
        raise WorkdirError(
            f"cannot average {average} checkpoints up to step {step}: {directory!r} keeps "
            f"{len(upto)} ({upto})"
        )
    return upto[-average:]


def mean_variables(variables: list[dict[str, Any]]) -> dict[str, Any]:
    """The elementwise mean of same-structured variable trees, each leaf in its own dtype; leaves
    that are not floating point come from the newest (last) tree."""
    if len(variables) == 1:
        return variables[0]

    def mean(*leaves):
        if not jnp.issubdtype(leaves[-1].dtype, jnp.floating):
            return leaves[-1]
        # Summed in at least float32 so that bfloat16 parameters keep their small differences.
        wide = jnp.promote_types(leaves[-1].dtype, jnp.float32)
        total = sum(leaf.astype(wide) for leaf in leaves)
        return (total / len(leaves)).astype(leaves[-1].dtype)

    return jax.tree.map(mean, *variables)


def forced_controls(
    trained: TrainedModel, controls: GenerationControls | None, forced_bos: str = ""
) -> GenerationControls | None:
    """`controls` with the forced first token of every output: `forced_bos` (a token of the
    target vocabulary, by name or id; "": the run's config.forced_bos, "none": none), e.g.
    mBART's target language code. Fails (a FileFormatError) on a token the vocabulary lacks."""
    first = forced_bos_id(trained.tgt_vocab, forced_bos or trained.config.get("forced_bos", ""))
    if first is None:
        return controls
    return dataclasses.replace(controls or GenerationControls(), forced_bos=first)
