"""Decode text with a trained workdir's newest readable checkpoint (or a chosen one, or a mean).

```
python -m flax_s2s.decode --workdir runs/addition [--beam 4] [--alpha 0.6] [--input FILE]
                          [--batch_size 64] [--step S] [--average K]
```
Reads one source per line from FILE (default: stdin), prints one output per line in input order.
The model, its config and its vocabularies all come from the workdir. Lines are decoded in padded
batches of one fixed shape, so the decoder compiles once.

A line that cannot be decoded (empty, or longer than the config's max_src_len) gets an empty output
line and a message on stderr naming it; symbols outside the source vocabulary are read as <unk>
and counted on stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from flax_s2s import decoding, training
from flax_s2s.checkpoint import Checkpointer
from flax_s2s.data.task_data import SRC_VOCAB, TGT_VOCAB, load_vocabs
from flax_s2s.data.vocab import PAD, SPECIALS, UNK, SymbolVocab, Vocab
from flax_s2s.models import Seq2Seq, build_model


class DecodeError(Exception):
    """A problem with the workdir or the input that stops decoding; the message says what."""


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    """What decoding needs from a workdir."""

    config: ml_collections.ConfigDict
    model: Seq2Seq
    variables: dict[str, Any]
    src_vocab: Vocab
    tgt_vocab: Vocab
    step: int
    averaged_steps: tuple[int, ...]  # the checkpoint steps `variables` are the mean of: (step,) or more


def load_trained_model(workdir: str, step: int | None = None, average: int = 1) -> TrainedModel:
    """A checkpoint of `workdir` (default: the latest) with the config and vocabularies saved
    beside it.

    `average` > 1 averages the variables of that many checkpoints: `step` and the ones kept before
    it. Near the end of a decayed learning rate the kept checkpoints sit close together, and their
    mean often decodes a little better than any one of them (fairseq's average_checkpoints). The
    kept ones are whatever the run kept: the newest, `keep_best` ones, a checkpoint saved on a stop.
    """
    if average < 1:
        raise DecodeError(f"average={average}: must be >= 1 checkpoint")
    vocabs = load_vocabs(workdir)
    checkpoint_dir = os.path.join(workdir, "checkpoints")
    no_checkpoint = DecodeError(
        f"no checkpoint in {checkpoint_dir!r}: train one first "
        f"(python train.py --workdir {workdir})"
    )
    if not os.path.isdir(checkpoint_dir):  # look first: a Checkpointer creates its directory
        raise no_checkpoint
    checkpointer = Checkpointer(checkpoint_dir)
    try:
        saved = checkpointer.all_steps()
        steps = _steps_to_load(saved, step, average, checkpoint_dir)
        if not steps:
            raise no_checkpoint
        if vocabs is None:
            raise DecodeError(f"{workdir!r} has no saved vocabularies ({SRC_VOCAB}.*, {TGT_VOCAB}.*)")
        # No step named: the newest readable checkpoint, as a resuming run would pick.
        named = step is not None or average > 1
        config = _read_config(checkpointer, steps[-1:] if named else saved[::-1], checkpoint_dir)
        model = build_model(config, len(vocabs[0]), len(vocabs[1]))
        # Restore into the shapes of a fresh train state; eval_shape builds them without
        # computing anything.
        example = {
            "src_tokens": np.zeros((1, config.max_src_len), np.int32),
            "tgt_tokens": np.zeros((1, config.max_tgt_len), np.int32),
        }
        template = jax.eval_shape(
            lambda: training.create_train_state(
                model, training.make_optimizer(config), config.seed, example
            )
        )
        if named:
            restored = [_restore_step(checkpointer, template, s).variables for s in steps]
        else:
            # set_aside=False: a reader leaves unreadable checkpoints where they are (a trainer
            # may still be writing this workdir).
            restored = [checkpointer.restore(template, set_aside=False).variables]
            steps = [checkpointer.restored_step]
    except FileNotFoundError as error:  # no readable checkpoint: the message names the directory
        raise DecodeError(str(error)) from None
    finally:
        checkpointer.close()
    return TrainedModel(config, model, _mean_variables(restored), *vocabs, steps[-1], tuple(steps))


def _read_config(checkpointer: Checkpointer, steps: list[int], directory: str) -> ml_collections.ConfigDict:
    """The run's config as saved with the first of `steps` that has a readable one."""
    for step in steps:
        try:
            return ml_collections.ConfigDict(checkpointer.restore_config(step))
        except Exception:  # noqa: BLE001 - an unreadable checkpoint; an older one may do
            continue
    raise DecodeError(f"no readable config in the checkpoints {steps} of {directory!r}")


def _restore_step(checkpointer: Checkpointer, template: Any, step: int) -> Any:
    try:
        return checkpointer.restore(template, step=step)
    except Exception as error:  # noqa: BLE001 - any failure to read it: say which checkpoint
        raise DecodeError(
            f"checkpoint {step} in {checkpointer.directory!r} is unreadable: {error!r:.300}"
        ) from error


def _steps_to_load(saved: list[int], step: int | None, average: int, directory: str) -> list[int]:
    """The `average` newest saved steps up to `step` (default: the newest), oldest first."""
    if not saved:
        return []
    step = saved[-1] if step is None else step
    if step not in saved:
        raise DecodeError(f"no checkpoint for step {step} in {directory!r}; saved steps: {saved}")
    upto = [s for s in saved if s <= step]
    if len(upto) < average:
        raise DecodeError(
            f"cannot average {average} checkpoints up to step {step}: {directory!r} keeps "
            f"{len(upto)} ({upto})"
        )
    return upto[-average:]


def _mean_variables(variables: list[dict[str, Any]]) -> dict[str, Any]:
    """The elementwise mean of same-structured variable trees, each leaf in its own dtype; leaves
    that are not floating point come from the newest tree."""
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


def _symbols(vocab: SymbolVocab, text: str) -> list[str]:
    return list(text) if vocab.separator == "" else [s for s in text.split(vocab.separator) if s]


def encode_lines(
    lines: Sequence[str], vocab: Vocab, max_src_len: int, warn
) -> list[list[int] | None]:
    """Token ids per line, or None for a line that cannot be decoded (reported through `warn`).

    Surrounding whitespace is ignored. Symbols outside `vocab` become UNK and are reported.
    """
    encoded: list[list[int] | None] = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            warn(f"line {number}: empty input; printing an empty line")
            encoded.append(None)
            continue
        ids = vocab.encode(text, add_eos=False)
        unknown = ids.count(UNK)
        if unknown:
            shown = ""
            if isinstance(vocab, SymbolVocab):  # symbols and ids align one to one
                symbols = [s for s, i in zip(_symbols(vocab, text), ids, strict=True) if i == UNK]
                shown = ": " + ", ".join(repr(s) for s in dict.fromkeys(symbols))
            warn(f"line {number}: {unknown} symbol(s) outside the source vocabulary read as "
                 f"{SPECIALS[UNK]}{shown}")
        if len(ids) > max_src_len:
            warn(f"line {number}: {len(ids)} source symbols exceed the model's "
                 f"max_src_len={max_src_len}; printing an empty line")
            encoded.append(None)
            continue
        encoded.append(ids)
    return encoded


def decode_lines(
    trained: TrainedModel,
    lines: Sequence[str],
    beam_size: int = 0,
    alpha: float = 0.6,
    batch_size: int = 64,
    warn=lambda message: print(message, file=sys.stderr),
) -> list[str]:
    """One output text per input line, in order; "" for lines that cannot be decoded.

    beam_size 0 decodes greedily; beam_size >= 1 returns the best beam-search hypothesis.
    """
    config = trained.config
    encoded = encode_lines(lines, trained.src_vocab, config.max_src_len, warn)
    rows = [i for i, ids in enumerate(encoded) if ids is not None]
    outputs = [""] * len(lines)
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        # Every batch has the same shape (PAD rows fill the last), so one compile serves all.
        src_tokens = np.full((batch_size, config.max_src_len), PAD, np.int32)
        for row, line_index in enumerate(chunk):
            src_tokens[row, : len(encoded[line_index])] = encoded[line_index]
        tokens = decoding.best_sequences(
            trained.model, trained.variables, src_tokens, config.max_tgt_len, beam_size, alpha
        )
        for line_index, row_tokens in zip(chunk, np.asarray(tokens)[: len(chunk)], strict=True):
            outputs[line_index] = trained.tgt_vocab.decode(row_tokens)
    return outputs


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m flax_s2s.decode", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--workdir", required=True, help="a training workdir with checkpoints")
    parser.add_argument("--beam", type=int, default=0,
                        help="beam width; 0 (default) decodes greedily")
    parser.add_argument("--alpha", type=float, default=0.6,
                        help="length-penalty exponent for beam search, ((5 + len) / 6) ** alpha")
    parser.add_argument("--input", default=None,
                        help="file with one source per line (default: stdin)")
    parser.add_argument("--batch_size", type=int, default=64, help="lines decoded per batch")
    parser.add_argument("--step", type=int, default=None,
                        help="checkpoint step to decode with (default: the latest)")
    parser.add_argument("--average", type=int, default=1,
                        help="decode with the mean variables of this many kept checkpoints, "
                             "ending at --step")
    args = parser.parse_args(argv)
    if args.beam < 0:
        parser.error(f"--beam={args.beam}: must be >= 0 (0: greedy)")
    if args.batch_size <= 0:
        parser.error(f"--batch_size={args.batch_size}: must be > 0")
    if args.average < 1:
        parser.error(f"--average={args.average}: must be >= 1")
    return args


def _read_lines(path: str | None) -> list[str]:
    if path is None:
        return sys.stdin.read().splitlines()
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().splitlines()
    except OSError as error:
        raise DecodeError(f"cannot read --input {path!r}: {error.strerror}") from error


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse(sys.argv[1:] if argv is None else argv)
    logging.set_verbosity(logging.WARNING)  # orbax logs every restore at INFO
    try:
        if not os.path.isdir(args.workdir):
            raise DecodeError(f"--workdir {args.workdir!r} does not exist")
        # A file is read first, to fail fast; stdin only once the model is known to load.
        lines = None if args.input is None else _read_lines(args.input)
        trained = load_trained_model(args.workdir, args.step, args.average)
        lines = _read_lines(None) if lines is None else lines
        outputs = decode_lines(trained, lines, args.beam, args.alpha, args.batch_size)
    except DecodeError as error:
        raise SystemExit(f"decode: {error}") from None
    for output in outputs:
        print(output)


if __name__ == "__main__":
    main()
