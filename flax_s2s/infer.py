"""Decode text with a trained workdir's newest readable checkpoint (or a chosen one, or a mean).

```
python -m flax_s2s.infer --workdir runs/addition [--beam 4] [--alpha 0.6] [--input FILE]
                         [--batch_size 64] [--step S] [--average K] [--strict]
```
Reads one source per line from FILE (default: stdin), prints one output per line in input order.
The model, its config and its vocabularies all come from the workdir. Lines are decoded in padded
batches of one fixed shape, so the decoder compiles once.

A line that cannot be decoded (not valid UTF-8, empty, or longer than the config's max_src_len)
gets an empty output line and a message on stderr naming its number, so the outputs stay aligned
with the inputs and no valid line is lost; the exit status is 0 unless no line at all could be
decoded. `--strict` makes the first such line an error instead. Symbols outside the source
vocabulary are read as <unk> and counted on stderr.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import numpy as np
from absl import app, flags, logging

from flax_s2s import decoding
from flax_s2s.data.vocab import SymbolVocab, Vocab, split_symbols
from flax_s2s.errors import FileFormatError
from flax_s2s.workdirs import TrainedModel, WorkdirError, load_workdir


class InputError(Exception):
    """A problem with the input that stops decoding; the message says what."""


Line = str | UnicodeDecodeError  # an input line's text, or why its bytes are not UTF-8


def encode_lines(
    lines: Sequence[Line], vocab: Vocab, max_src_len: int, warn, strict: bool = False
) -> list[list[int] | None]:
    """Token ids per line, or None for a line that cannot be decoded (reported through `warn`;
    with `strict`, an InputError naming the line instead).

    Surrounding whitespace is ignored. Symbols outside `vocab` become UNK and are reported.
    """
    encoded: list[list[int] | None] = []

    def skip(number: int, reason: str) -> None:
        if strict:
            raise InputError(f"line {number}: {reason} (--strict)")
        warn(f"line {number}: {reason}; printing an empty line")
        encoded.append(None)

    for number, line in enumerate(lines, start=1):
        if isinstance(line, UnicodeDecodeError):
            skip(number, f"not valid UTF-8 (byte {line.object[line.start]:#04x} at offset "
                         f"{line.start}: {line.reason})")
            continue
        text = line.strip()
        if not text:
            skip(number, "empty input")
            continue
        ids = vocab.encode(text, add_eos=False)
        unk = vocab.special_tokens.unk
        unknown = ids.count(unk)
        if unknown:
            shown = ""
            if isinstance(vocab, SymbolVocab):  # symbols and ids align one to one
                symbols = [s for s, i in zip(split_symbols(text, vocab.separator), ids, strict=True)
                           if i == unk]
                shown = ": " + ", ".join(repr(s) for s in dict.fromkeys(symbols))
            warn(f"line {number}: {unknown} symbol(s) outside the source vocabulary read as "
                 f"<unk>{shown}")
        if len(ids) > max_src_len:
            skip(number, f"{len(ids)} source symbols exceed the model's max_src_len={max_src_len}")
            continue
        encoded.append(ids)
    return encoded


def decode_lines(
    trained: TrainedModel,
    lines: Sequence[Line],
    beam_size: int = 0,
    alpha: float = 0.6,
    batch_size: int = 64,
    warn=lambda message: print(message, file=sys.stderr),
    strict: bool = False,
) -> list[str]:
    """One output text per input line, in order; "" for lines that cannot be decoded.

    beam_size 0 decodes greedily; beam_size >= 1 returns the best beam-search hypothesis. Raises
    InputError when there are lines but none can be decoded (or, with `strict`, at the first
    line that cannot).
    """
    config = trained.config
    encoded = encode_lines(lines, trained.src_vocab, config.max_src_len, warn, strict)
    rows = [i for i, ids in enumerate(encoded) if ids is not None]
    if lines and not rows:
        raise InputError(f"none of the {len(lines)} input line(s) could be decoded")
    outputs = [""] * len(lines)
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        # Every batch has the same shape (PAD rows fill the last), so one compile serves all.
        src_tokens = np.full((batch_size, config.max_src_len),
                             trained.src_vocab.special_tokens.pad, np.int32)
        for row, line_index in enumerate(chunk):
            src_tokens[row, : len(encoded[line_index])] = encoded[line_index]
        tokens = decoding.best_sequences(
            trained.model, trained.variables, src_tokens, config.max_tgt_len, beam_size, alpha
        )
        for line_index, row_tokens in zip(chunk, np.asarray(tokens)[: len(chunk)], strict=True):
            outputs[line_index] = trained.tgt_vocab.decode(row_tokens)
    return outputs


def read_lines(path: str | None) -> list[Line]:
    """The lines of `path` (default: stdin), each decoded from UTF-8 on its own: a line that is
    not valid UTF-8 is kept, in its place, as the UnicodeDecodeError that says why, so one bad
    line costs only itself."""
    if path is None:
        data = sys.stdin.buffer.read()
    else:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as error:
            raise InputError(f"cannot read --input {path!r}: {error.strerror}") from error
    lines: list[Line] = []
    for raw in data.splitlines():
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as error:
            lines.append(error)
    return lines


def decode_file(
    workdir: str, input_path: str | None = None, beam_size: int = 0, alpha: float = 0.6,
    batch_size: int = 64, step: int | None = None, average: int = 1, strict: bool = False,
    raw_weights: bool = False,
) -> list[str]:
    """What the CLI prints: one output per line of `input_path` (default: stdin), in order.
    Raises WorkdirError or InputError with a message naming the problem."""
    if beam_size < 0:
        raise InputError(f"--beam={beam_size}: must be >= 0 (0: greedy)")
    if batch_size <= 0:
        raise InputError(f"--batch_size={batch_size}: must be > 0")
    if not os.path.isdir(workdir):
        raise WorkdirError(f"--workdir {workdir!r} does not exist")
    # A file is read first, to fail fast; stdin only once the model is known to load.
    lines = None if input_path is None else read_lines(input_path)
    trained = load_workdir(workdir, step, average, raw_weights)
    lines = read_lines(None) if lines is None else lines
    return decode_lines(trained, lines, beam_size, alpha, batch_size, strict=strict)


def define_flags() -> None:
    """The CLI's flags, defined only when it runs (as `flax_s2s.evaluate` does), so that importing
    this module beside another absl program defines no second --workdir."""
    flags.DEFINE_string("workdir", None, "A training workdir with checkpoints.")
    flags.DEFINE_integer("beam", 0, "Beam width; 0 (default) decodes greedily, 1 is a beam of one.")
    flags.DEFINE_float("alpha", 0.6,
                       "Length-penalty exponent for beam search, ((5 + len) / 6) ** alpha.")
    flags.DEFINE_string("input", None, "File with one source per line (default: stdin).")
    flags.DEFINE_integer("batch_size", 64, "Lines decoded per batch.")
    flags.DEFINE_integer("step", None, "Checkpoint step to decode with (default: the newest).")
    flags.DEFINE_integer("average", 1, "Decode with the mean variables of this many kept "
                         "checkpoints, ending at --step.")
    flags.DEFINE_boolean("raw_weights", False, "Decode with the trained parameters, not their "
                         "moving average where the run kept one (config.ema_decay > 0).")
    flags.DEFINE_boolean("strict", False, "Fail at the first line that cannot be decoded (not "
                         "UTF-8, empty, too long) instead of printing an empty line for it.")
    flags.mark_flags_as_required(["workdir"])


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every restore at INFO
    args = flags.FLAGS
    try:
        outputs = decode_file(args.workdir, args.input, args.beam, args.alpha, args.batch_size,
                              args.step, args.average, args.strict, args.raw_weights)
    except (WorkdirError, InputError, FileFormatError) as error:
        raise SystemExit(f"decode: {error}") from None
    for output in outputs:
        print(output)


def run() -> None:
    """The CLI: `python -m flax_s2s.infer ...`."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
