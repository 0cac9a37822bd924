"""The text files a user brings: per split, one of `{split}.jsonl`, `{split}.tsv`, `{split}.csv`
or the line-aligned pair `{split}.src` / `{split}.tgt`, read into (source, target) pairs.

- JSON lines: one object a line; the source in `src_field` (or a dialogue: a list of turns in
  `context_field`, joined by `turn_separator`, see `dialogue.py`), the target in `tgt_field`: a
  string, or a list of strings, each a reference (one pair each, with the same source).
- TSV (tab-separated, no quoting) and CSV (the csv module's quoting, quoted fields may span
  lines): a header row naming the columns, read by name.
- `.src` / `.tgt`: line i of one the translation of line i of the other.

UTF-8, with or without a byte order mark. A bad line (not JSON, not an object, a missing, non-text,
empty or whitespace-only field, the wrong number of columns) raises FileFormatError naming the
file, the line and the field; with `skip_bad_lines` it is counted, skipped and the count printed.
Readers are generators over the file, one line at a time.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ml_collections

from flax_s2s.data.dialogue import DEFAULT_SEPARATOR, join_turns
from flax_s2s.errors import ConfigError, FileFormatError

Pair = tuple[str, str]


class SourcedPair(tuple):
    """A (source, target) pair that knows where it was read: `origin`, "FILE:LINE", so that an
    error about it (too_long="error") names the line; it is a plain pair everywhere else."""

    origin: str

    def __new__(cls, source: str, target: str, origin: str) -> SourcedPair:
        pair = super().__new__(cls, (source, target))
        pair.origin = origin
        return pair

FORMATS = (".jsonl", ".tsv", ".csv", ".src")  # ".src": with its ".tgt"
_JSON_TYPES = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
               int: "a number", float: "a number", type(None): "null"}


@dataclasses.dataclass(frozen=True)
class TextFields:
    """Where a row's texts are (`config.src_field`, `tgt_field`, `context_field`, the last ""
    for none), how turns are joined (`turn_separator`) and whether bad lines are skipped."""

    src_field: str = "source"
    tgt_field: str = "target"
    context_field: str = "context"
    turn_separator: str = DEFAULT_SEPARATOR
    skip_bad_lines: bool = False

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> TextFields:
        return cls(config.src_field, config.tgt_field, config.context_field,
                   config.turn_separator, config.skip_bad_lines)


DEFAULT_FIELDS = TextFields()


def check_config(config: ml_collections.ConfigDict) -> None:
    """The field names are distinct, non-empty (context_field may be "": no dialogues), and the
    turn separator is not empty."""
    for key in ("src_field", "tgt_field"):
        if not config[key]:
            raise ConfigError(f"config.{key} is empty: it names the JSON field or column to read")
    for key, other in (("tgt_field", "src_field"), ("context_field", "src_field"),
                       ("context_field", "tgt_field")):
        if config[key] == config[other]:
            raise ConfigError(f"config.{key}={config[key]!r} is also config.{other}: each field "
                              "names a different part of a row")
    if not config.turn_separator:
        raise ConfigError("config.turn_separator is empty: turns joined without one could not be "
                          "told apart (default ' | ')")


class BadLine(Exception):
    """What is wrong with one line (its message), raised inside a reader's loop."""


def json_object(line: str) -> dict[str, Any]:
    """One line of a JSON-lines file as its object; BadLine says why a line is not one."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise BadLine(f"not valid JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(row, dict):
        raise BadLine(f"{_JSON_TYPES.get(type(row), 'a value')}, not a JSON object")
    return row


class _BadLines:
    """A file's bad lines: each raises FileFormatError naming file and line, or with `skip` is
    counted (`report` prints the count and the first)."""

    def __init__(self, path: Path, skip: bool) -> None:
        self.path, self.skip, self.count, self.first = path, skip, 0, ""

    def __call__(self, number: int, problem: str) -> None:
        message = f"{self.path}:{number}: {problem}"
        if not self.skip:
            raise FileFormatError(f"{message} (config.skip_bad_lines=True skips such lines)")
        self.count += 1
        self.first = self.first or message

    def report(self) -> None:
        if self.count:
            print(f"{self.path}: skipped {self.count} bad lines (config.skip_bad_lines); the "
                  f"first: {self.first}")


def read_lines(path: str | Path, expected: str, keep_ends: bool = False) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line of a UTF-8 file, a leading byte order mark dropped, the
    line ending dropped unless `keep_ends`. A missing file raises FileNotFoundError; an empty one
    or a line that is not UTF-8 raises FileFormatError naming the file (and the line) and what
    was `expected`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    empty = True
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if number == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)
                if not raw:
                    continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise FileFormatError(f"{path}:{number}: not valid UTF-8 ({error.reason} at byte "
                                      f"{error.start} of the line); expected {expected}") from None
            empty = False
            if not keep_ends:
                text = text.removesuffix("\n").removesuffix("\r")
            yield number, text
    if empty:
        raise FileFormatError(f"{path}: empty file; expected {expected}")


def field_text(value: Any, field: str) -> str:
    """`value`, a JSON row's `field`, when it is a non-blank string; else BadLine says why."""
    if not isinstance(value, str):
        raise BadLine(f"field {field!r} is {_JSON_TYPES.get(type(value), type(value).__name__)}; "
                      "expected a string")
    if not value.strip():
        raise BadLine(f"field {field!r} is empty or whitespace only")
    return value


def row_source(row: dict[str, Any], fields: TextFields) -> str:
    """The source of a JSON row: its `src_field`, or its `context_field` turns joined."""
    context = fields.context_field
    if context and context in row:
        if fields.src_field in row:
            raise BadLine(f"fields {fields.src_field!r} and {context!r} are both present; expected "
                          f"one source (config.context_field='' reads {fields.src_field!r} only)")
        turns = row[context]
        if not isinstance(turns, list) or not turns:
            raise BadLine(f"field {context!r} is {_JSON_TYPES.get(type(turns), 'not a list')}"
                          f"{' (empty)' if turns == [] else ''}; expected a list of turns (strings)")
        return join_turns([field_text(turn, f"{context}[{i}]") for i, turn in enumerate(turns)],
                          fields.turn_separator)
    if fields.src_field not in row:
        also = f" (or {context!r})" if context else ""
        raise BadLine(f"field {fields.src_field!r}{also} is missing")
    return field_text(row[fields.src_field], fields.src_field)


def _row_targets(row: dict[str, Any], field: str) -> list[str]:
    """The references of a JSON row: its `field`, a string or a non-empty list of strings."""
    if field not in row:
        raise BadLine(f"field {field!r} is missing")
    value = row[field]
    if isinstance(value, list):
        if not value:
            raise BadLine(f"field {field!r} is an empty list; expected a string or a list of strings")
        return [field_text(reference, f"{field}[{i}]") for i, reference in enumerate(value)]
    return [field_text(value, field)]


def read_jsonl(path: str | Path, fields: TextFields = DEFAULT_FIELDS) -> Iterator[Pair]:
    """(source, target) pairs of a JSON-lines file, one for each reference of a row."""
    path = Path(path)
    bad = _BadLines(path, fields.skip_bad_lines)
    for number, line in read_lines(path, "JSON lines, one object a line"):
        try:
            row = json_object(line)
            source, targets = row_source(row, fields), _row_targets(row, fields.tgt_field)
        except BadLine as problem:
            bad(number, str(problem))
            continue
        for target in targets:
            yield SourcedPair(source, target, f"{path}:{number}")
    bad.report()


def _csv_records(path: Path, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(first line number, fields) of each record of a CSV file (quoted fields may span lines),
    or of a TSV file (one record a line, split at tabs)."""
    lines = read_lines(path, f"{'CSV' if delimiter == ',' else 'TSV'} with a header row",
                       keep_ends=delimiter == ",")
    if delimiter != ",":
        yield from ((number, line.split("\t")) for number, line in lines)
        return
    reader = csv.reader((line for _, line in lines), strict=True)
    while True:
        start = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise FileFormatError(f"{path}:{start}: not valid CSV ({error})") from None
        yield start, record


def read_delimited(
    path: str | Path, fields: TextFields = DEFAULT_FIELDS, delimiter: str = ","
) -> Iterator[Pair]:
    """(source, target) pairs of a CSV (`delimiter` ",") or TSV ("\\t") file with a header row,
    the columns named `fields.src_field` and `fields.tgt_field`."""
    path = Path(path)
    bad = _BadLines(path, fields.skip_bad_lines)
    records = _csv_records(path, delimiter)
    header_line, header = next(records)
    columns = {}
    for name in (fields.src_field, fields.tgt_field):
        if name not in header:
            raise FileFormatError(f"{path}:{header_line}: the header has no column {name!r} "
                                  f"(columns: {header}); expected a header row naming the columns")
        columns[name] = header.index(name)
    for number, record in records:
        try:
            if len(record) != len(header):
                raise BadLine(f"{len(record)} columns, the header has {len(header)}")
            pair = SourcedPair(field_text(record[columns[fields.src_field]], fields.src_field),
                               field_text(record[columns[fields.tgt_field]], fields.tgt_field),
                               f"{path}:{number}")
        except BadLine as problem:
            bad(number, str(problem))
            continue
        yield pair
    bad.report()


def read_line_pairs(
    src_path: str | Path, tgt_path: str | Path, skip_bad_lines: bool = False
) -> Iterator[Pair]:
    """(source, target) pairs of two line-aligned files; an empty or whitespace-only line on
    either side is a bad line (the pair is skipped with `skip_bad_lines`). Unequal line counts
    raise a FileFormatError naming both files, their line counts and the first line without a
    partner."""
    src_path, tgt_path = Path(src_path), Path(tgt_path)
    expected = "UTF-8 text, one example a line"
    src_lines, tgt_lines = read_lines(src_path, expected), read_lines(tgt_path, expected)
    bad = {path: _BadLines(path, skip_bad_lines) for path in (src_path, tgt_path)}
    count = 0
    for number, source in src_lines:
        target_line = next(tgt_lines, None)
        if target_line is None:  # the target file ran out first
            _unaligned(src_path, tgt_path, number + sum(1 for _ in src_lines), count)
        count, target = number, target_line[1]
        blank = [path for path, text in ((src_path, source), (tgt_path, target)) if not text.strip()]
        for path in blank:
            bad[path](number, "an empty or whitespace-only line; expected one example a line")
        if not blank:
            yield SourcedPair(source, target, f"{src_path}:{number}")
    more_targets = sum(1 for _ in tgt_lines)
    if more_targets:
        _unaligned(src_path, tgt_path, count, count + more_targets)
    for counter in bad.values():
        counter.report()


def _unaligned(src_path: Path, tgt_path: Path, src_count: int, tgt_count: int) -> None:
    """Raises for line-aligned files of `src_count` and `tgt_count` lines, naming the first line
    without a partner."""
    longer, shorter = (src_path, tgt_path) if src_count > tgt_count else (tgt_path, src_path)
    raise FileFormatError(
        f"{longer}:{min(src_count, tgt_count) + 1}: no partner line in {shorter} ({src_path} has "
        f"{src_count} lines, {tgt_path} has {tgt_count}; expected line-aligned files, line i of "
        "one the translation of line i of the other)"
    )


def split_files(directory: str | Path, split: str) -> list[Path]:
    """The file(s) of `split` in `directory`: one of `FORMATS` (`.src` with its `.tgt`). None, or
    two formats, raise naming what was looked for."""
    directory = Path(directory)
    present = [directory / f"{split}{suffix}" for suffix in FORMATS
               if (directory / f"{split}{suffix}").is_file()]
    if not present and (directory / f"{split}.tgt").is_file():
        present = [directory / f"{split}.src"]  # its absence is named below
    if len(present) > 1:
        raise FileFormatError(f"{directory}: split {split!r} is in both {present[0].name} and "
                              f"{present[1].name}; keep one format per split")
    if not present:
        raise FileNotFoundError(f"{directory / (split + '.src')}: no such file; split {split!r} "
                                f"reads one of {split}.jsonl, {split}.tsv, {split}.csv or "
                                f"{split}.src with {split}.tgt")
    if present[0].suffix == ".src":
        return [present[0], present[0].with_suffix(".tgt")]
    return present


def read_split_pairs(
    directory: str | Path, split: str, fields: TextFields = DEFAULT_FIELDS
) -> Iterator[Pair]:
    """(source, target) pairs of `split` from whichever file `split_files` finds."""
    files = split_files(directory, split)
    suffix = files[0].suffix
    if suffix == ".jsonl":
        return read_jsonl(files[0], fields)
    if suffix in (".tsv", ".csv"):
        return read_delimited(files[0], fields, "\t" if suffix == ".tsv" else ",")
    return read_line_pairs(files[0], files[1], fields.skip_bad_lines)
