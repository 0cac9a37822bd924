"""The decode CLI's JSON-lines input: each line's source read as training reads a JSONL row (its
`config.src_field`, or its `config.context_field` list of turns joined by `config.turn_separator`
as a `Dialogue`, whose latest turns that fit are kept when it is encoded), and optionally its
target prefix from a field of the same row.

A line that is not valid UTF-8 stays the UnicodeDecodeError that says why; a line that holds no
usable source or prefix becomes the `BadLine` that says why, in its place, so that one bad line
costs only itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flax_s2s.data.dialogue import DEFAULT_SEPARATOR
from flax_s2s.data.text_files import BadLine, TextFields, json_object, row_source

INPUT_FORMATS = ("auto", "text", "jsonl")

Line = str | UnicodeDecodeError | BadLine  # a source text, or why a line holds none


def reads_jsonl(input_format: str, path: str | None) -> bool:
    """Whether the input is JSON lines: `input_format` "jsonl", or "auto" with a `path` ending
    in ".jsonl" (stdin under "auto" is text). ValueError names an unknown format."""
    if input_format not in INPUT_FORMATS:
        raise ValueError(f"input_format={input_format!r}: must be one of {INPUT_FORMATS}")
    return input_format == "jsonl" or (
        input_format == "auto" and path is not None and path.endswith(".jsonl"))


def fields_of(config: Any) -> TextFields:
    """Where a run's JSONL rows keep their source (`src_field`, `context_field`) and how turns
    are joined (`turn_separator`); a config older than these fields gets their defaults."""
    return TextFields(src_field=config.get("src_field", "source"),
                      context_field=config.get("context_field", "context"),
                      turn_separator=config.get("turn_separator", DEFAULT_SEPARATOR))


def _prefix(row: dict[str, Any], field: str) -> str:
    if field not in row:
        raise BadLine(f"field {field!r} (--prefix_field) is missing")
    if not isinstance(row[field], str):
        raise BadLine(f"field {field!r} (--prefix_field) is not a string")
    return row[field]


def jsonl_sources(
    lines: Sequence[str | UnicodeDecodeError], fields: TextFields, prefix_field: str | None = None,
) -> tuple[list[Line], list[str] | None]:
    """(sources, prefixes): one per line; a source is a `str` or a `Dialogue`, or the
    UnicodeDecodeError or BadLine that says why the line has none. `prefixes` (None without
    `prefix_field`): each row's `prefix_field` string ("" for none, and for a bad line)."""
    sources: list[Line] = []
    prefixes: list[str] = []
    for line in lines:
        source: Line = line
        prefix = ""
        if isinstance(line, str):
            try:
                row = json_object(line)
                source = row_source(row, fields)
                prefix = _prefix(row, prefix_field) if prefix_field else ""
            except BadLine as problem:
                source = problem
        sources.append(source)
        prefixes.append(prefix)
    return sources, prefixes if prefix_field else None
