"""The text lines every way of decoding reads (the decode and score commands, `ExportedDecoder`),
read and checked by one rule, with the standard library alone.

A file is split into lines at LF, CRLF or CR; a UTF-8 byte-order mark at its start (or at the start
of a line, as in files joined together) is dropped, and so is the whitespace around a line. Each
line is decoded from UTF-8 on its own: a line that is not valid UTF-8 stays, in its place, the
UnicodeDecodeError that says why, so one bad line costs only itself.

`encode_checked` is the one loop over the lines: a line that cannot be used (not UTF-8, empty,
another reader's reason, longer than the model's limit) is reported through `warn` and kept as
None; symbols outside the vocabulary are counted and reported. With `strict`, each of these is an
InputError naming the line instead.
"""

from __future__ import annotations

import codecs
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

BOM = "\ufeff"

Line = Any  # a line's text (a str, or a reader's richer source), or the exception saying why not
Encode = Callable[[Any], tuple[list[int], list[str]]]  # text -> (ids, the symbols read as <unk>)


class InputError(ValueError):
    """A problem with the input that stops decoding; the message says what."""


def split_lines(data: bytes) -> list[str | UnicodeDecodeError]:
    """The lines of `data` (LF, CRLF or CR), each decoded from UTF-8 on its own; a BOM at the
    start goes, a line that is not UTF-8 stays as its UnicodeDecodeError."""
    lines: list[str | UnicodeDecodeError] = []
    for raw in data.removeprefix(codecs.BOM_UTF8).splitlines():
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as error:
            lines.append(error)
    return lines


def read_lines(path: str | None, flag: str = "--input") -> list[str | UnicodeDecodeError]:
    """`split_lines` of the file `path` (default: stdin); InputError naming `flag` and the path
    when it cannot be read."""
    if path is None:
        return split_lines(sys.stdin.buffer.read())
    try:
        with open(path, "rb") as f:
            return split_lines(f.read())
    except OSError as error:
        raise InputError(f"cannot read {flag} {path!r}: {error.strerror}") from error


def clean(text: str) -> str:
    """A line's text without a leading BOM and surrounding whitespace."""
    return text.strip().removeprefix(BOM).strip()


def not_utf8(error: UnicodeDecodeError) -> str:
    """Why a line is not UTF-8, in words."""
    return (f"not valid UTF-8 (byte {error.object[error.start]:#04x} at offset {error.start}: "
            f"{error.reason})")


class Side(NamedTuple):
    """How the messages of one side's lines read."""

    flag: str = ""  # the file's flag, before "line N" ("" for the decode input)
    empty: str = "empty input"
    tokens: str = "source symbols"  # what is counted against the limit
    limit: str = "max_src_len"
    vocab: str = "source vocabulary"
    unk: str = "read as"  # what becomes of a symbol outside the vocabulary


SOURCE = Side()
TARGET = Side("--targets ", "empty target", "target tokens with EOS", "max_tgt_len",
              "target vocabulary", "scored as")


def encode_checked(
    lines: Sequence[Line], encode: Encode, max_len: int, unk: int, warn: Callable[[str], None],
    strict: bool = False, side: Side = SOURCE,
) -> list[list[int] | None]:
    """The ids of each line (`encode` of its `clean` text), or None for a line that cannot be
    used: an exception in its place (not UTF-8, or the reason another reader gave), empty, or
    over `max_len` ids; reported through `warn`. Symbols outside the vocabulary (id `unk`) are
    counted and reported. With `strict`, the first of any of these raises InputError naming the
    line."""
    encoded: list[list[int] | None] = []

    def problem(number: int, reason: str, skipped: bool = True) -> None:
        if strict:
            raise InputError(f"{side.flag}line {number}: {reason} (--strict)")
        warn(f"{side.flag}line {number}: {reason}" + ("; printing an empty line" if skipped else ""))

    for number, line in enumerate(lines, start=1):
        if isinstance(line, BaseException):
            problem(number, not_utf8(line) if isinstance(line, UnicodeDecodeError) else str(line))
            encoded.append(None)
            continue
        text = clean(line) if type(line) is str else line  # a richer source (a dialogue) as is
        if not text:
            problem(number, side.empty)
            encoded.append(None)
            continue
        ids, unknown_symbols = encode(text)
        unknown = ids.count(unk)
        if unknown:
            shown = ": " + ", ".join(map(repr, dict.fromkeys(unknown_symbols))) if unknown_symbols else ""
            problem(number, f"{unknown} symbol(s) outside the {side.vocab} {side.unk} <unk>{shown}",
                    skipped=False)
        if len(ids) > max_len:
            problem(number, f"{len(ids)} {side.tokens} exceed the model's {side.limit}={max_len}")
            encoded.append(None)
            continue
        encoded.append(ids)
    return encoded


def check_min_len(min_len: int, max_len: int, flag: str = "min_len") -> None:
    """InputError naming `flag` unless 0 <= min_len < max_len (the output's EOS must fit)."""
    if not 0 <= min_len < max_len:
        raise InputError(f"{flag}={min_len}: must be >= 0 and below the model's "
                         f"max_tgt_len={max_len} (EOS included)")


def check_alpha(alpha: float, flag: str = "alpha") -> None:
    """InputError naming `flag` for a length-penalty exponent that is not a finite number."""
    try:
        finite = math.isfinite(alpha)
    except TypeError:
        finite = False
    if not finite:
        raise InputError(f"{flag}={alpha}: must be a finite number")
