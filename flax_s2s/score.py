"""Score given outputs with a trained workdir: the log-probability of each target line after its
source line (fairseq's `--score-reference`).

```
python -m flax_s2s.score --workdir runs/addition --input SRC --targets TGT
                         [--format text|jsonl] [--batch_size 64] [--step S] [--average K]
                         [--raw_weights] [--strict]
```
Line i of TGT is scored as the output for line i of SRC; the two files must have as many lines.
Prints one line per pair, in input order: `log_prob<TAB>tokens<TAB>mean` (text), or one JSON
object with `index` (from 0), `log_prob`, `length`, `mean_log_prob`, the target's `tokens` and
their `token_log_probs` (jsonl). `log_prob` is the natural-log probability of the whole target,
EOS included, as the model's decoders define it (`flax_s2s.scoring`: PAD and BOS never emitted),
so the greedy output of a source scores what greedy decoding reported for it; `tokens` (`length`)
counts the target's tokens with its EOS; `mean` is log_prob / tokens.

A target is encoded as training encodes one (the target vocabulary, then EOS), so a subword
target is scored in its tokenizer's own segmentation. Pairs are scored in batches of sources of
similar length (longest first), each cut to its longest row, and put back in input order.

A pair that cannot be scored (a line not valid UTF-8 or empty on either side, a source over the
config's max_src_len, a target over max_tgt_len with its EOS) gets an empty output line (jsonl:
null scores) and a message on stderr naming the file and line. Nothing is cut: the score of a cut
source or target would not be the score of the pair given. Symbols outside a vocabulary are
counted on stderr. `--strict` makes the first such line (or symbol) an error instead; the exit
status is otherwise 0 unless no pair at all could be scored.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from flax_s2s import input_lines, scoring
from flax_s2s.data.vocab import Vocab
from flax_s2s.infer import InputError, Line, encode_lines, length_sorted_batches
from flax_s2s.workdirs import TrainedModel, WorkdirError, load_workdir

OUTPUT_FORMATS = ("text", "jsonl")
MIN_WIDTH = 8  # the narrowest batch; widths are powers of two up to the model's maximum lengths


class Scored(NamedTuple):
    """One target's score."""

    tokens: list[int]  # the target ids scored, EOS included
    token_log_probs: list[float]  # log p of each, given the source and the tokens before it

    @property
    def log_prob(self) -> float:
        return float(sum(self.token_log_probs))

    @property
    def mean_log_prob(self) -> float:
        return self.log_prob / len(self.tokens)


def encode_targets(
    lines: Sequence[Line], vocab: Vocab, max_tgt_len: int, warn: Callable[[str], None],
    strict: bool = False,
) -> list[list[int] | None]:
    """Target ids per line, EOS included (as training encodes targets), or None for a line that
    cannot be scored, checked as every decoder checks its lines (`input_lines.encode_checked`):
    reported through `warn`, with `strict` an InputError naming the line."""

    def encode(text: str) -> tuple[list[int], list[str]]:
        return vocab.encode(text, add_eos=True), []

    return input_lines.encode_checked(lines, encode, max_tgt_len, vocab.special_tokens.unk, warn,
                                      strict, input_lines.TARGET)


def _width(longest: int, most: int) -> int:
    """The batch width for rows of up to `longest` tokens: a power of two from MIN_WIDTH, at
    most `most` (few shapes, so few compiles, and short batches stay short)."""
    return min(most, max(MIN_WIDTH, 1 << (longest - 1).bit_length()))


def _padded(rows: Sequence[list[int]], batch_size: int, most: int, pad: int) -> np.ndarray:
    """[batch_size, width] int32: `rows`, then PAD, then PAD rows filling the batch."""
    out = np.full((batch_size, _width(max(map(len, rows)), most)), pad, np.int32)
    for row, ids in enumerate(rows):
        out[row, : len(ids)] = ids
    return out


def _check_pairs(sources: Sequence[Line], targets: Sequence[Line]) -> None:
    if len(sources) != len(targets):
        raise InputError(f"--input has {len(sources)} lines but --targets has {len(targets)}: "
                         "each target line is scored as the output for the source line beside it")


def score_pairs(
    trained: TrainedModel, sources: Sequence[Line], targets: Sequence[Line], batch_size: int = 64,
    warn: Callable[[str], None] = lambda message: print(message, file=sys.stderr),
    strict: bool = False, sort: bool = True,
) -> list[Scored | None]:
    """The score of each target line as the output for the source line beside it, in input order
    (None for a pair that cannot be scored). Batches hold sources of similar length unless
    `sort` is False; the scores are the same either way. Raises InputError for unequal line
    counts, and when there are lines but no pair can be scored."""
    _check_pairs(sources, targets)
    config = trained.config
    try:
        src_ids = encode_lines(sources, trained.src_vocab, config.max_src_len,
                               lambda message: warn(f"--input {message}"), strict,
                               config.vocab.get("src_eos", False))
    except InputError as error:  # name the file: both have lines
        raise InputError(f"--input {error}") from None
    tgt_ids = encode_targets(targets, trained.tgt_vocab, config.max_tgt_len, warn, strict)
    pairs = [s if t is not None else None for s, t in zip(src_ids, tgt_ids, strict=True)]
    batches = length_sorted_batches(pairs, batch_size, sort)
    if sources and not batches:
        raise InputError(f"none of the {len(sources)} line pair(s) could be scored")
    scored: list[Scored | None] = [None] * len(sources)
    src_pad = trained.src_vocab.special_tokens.pad
    tgt_pad = trained.model.special_tokens.pad
    for chunk in batches:
        src = _padded([src_ids[i] for i in chunk], batch_size, config.max_src_len, src_pad)
        tgt = _padded([tgt_ids[i] for i in chunk], batch_size, config.max_tgt_len, tgt_pad)
        log_probs = np.asarray(scoring.target_log_probs(trained.model, trained.variables, src, tgt))
        for row, index in enumerate(chunk):
            length = len(tgt_ids[index])
            scored[index] = Scored(tgt_ids[index], log_probs[row, :length].tolist())
    return scored


def format_scores(scored: Sequence[Scored | None], output_format: str = "text") -> list[str]:
    """What the command prints, one line per pair: text `log_prob<TAB>tokens<TAB>mean` ("" for
    a pair not scored), or jsonl objects (null scores for a pair not scored)."""
    if output_format not in OUTPUT_FORMATS:
        raise InputError(f"--format={output_format!r}: must be one of {OUTPUT_FORMATS}")
    if output_format == "text":
        return ["" if s is None else f"{s.log_prob:.4f}\t{len(s.tokens)}\t{s.mean_log_prob:.4f}"
                for s in scored]
    return [json.dumps({
        "index": index,
        "log_prob": None if s is None else s.log_prob,
        "length": None if s is None else len(s.tokens),
        "mean_log_prob": None if s is None else s.mean_log_prob,
        "tokens": [] if s is None else s.tokens,
        "token_log_probs": [] if s is None else s.token_log_probs,
    }) for index, s in enumerate(scored)]


def score_file(
    workdir: str, input_path: str, targets_path: str, output_format: str = "text",
    batch_size: int = 64, step: int | None = None, average: int = 1, raw_weights: bool = False,
    strict: bool = False,
) -> list[str]:
    """What the command prints (`format_scores`) for the pairs of lines of `input_path` and
    `targets_path`. Raises WorkdirError or InputError with a message naming the problem."""
    if batch_size <= 0:
        raise InputError(f"--batch_size={batch_size}: must be > 0")
    if output_format not in OUTPUT_FORMATS:
        raise InputError(f"--format={output_format!r}: must be one of {OUTPUT_FORMATS}")
    if not os.path.isdir(workdir):
        raise WorkdirError(f"--workdir {workdir!r} does not exist")
    sources = input_lines.read_lines(input_path, "--input")
    targets = input_lines.read_lines(targets_path, "--targets")
    _check_pairs(sources, targets)  # before the model loads
    trained = load_workdir(workdir, step, average, raw_weights)
    return format_scores(score_pairs(trained, sources, targets, batch_size, strict=strict),
                         output_format)


if __name__ == "__main__":  # `python -m flax_s2s.score` runs the command
    import runpy

    runpy.run_module("flax_s2s.cli.score", run_name="__main__", alter_sys=True)
