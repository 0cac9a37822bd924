"""A summarisation dataset from Python's standard library: a function's code -> the first sentence
of its docstring.

    python bench/code2doc.py [--out data/code2doc] [--root DIR] [--all_packages]
        [--sp_vocab_size 4000]

Writes `OUT/{train,validation,test}.jsonl` (one {"source": ..., "target": ...} a line, the
`parallel_text` task's JSON lines) and `OUT/meta.json`, and prints counts and length statistics.
Nothing is downloaded: the data are the `.py` files under `sysconfig.get_paths()["stdlib"]` (or
`--root`), never site-packages. The same Python version (and build) gives the same files, byte for
byte; `meta.json` records the version, the counts, and hashes of each split's module list and file.

The rules:
- Files: every `*.py` under the root, in sorted order, except tests (a folder `test`, `tests`,
  `idle_test` or `*_test(s)`, a file `test_*.py` or `*_test(s).py`), folders that are not the
  standard library's own modules (`site-packages`, `dist-packages`, `config-*`, `lib-dynload`,
  `__pycache__`), and (unless `--all_packages`) the packages that Linux distributions ship apart
  from the standard library, so that the data are the same wherever this Python version runs:
  `SEPARATELY_PACKAGED`. A file that does not decode or parse with this Python is skipped and
  counted.
- Examples: every function (`def` or `async def`) with a docstring at module level or in a
  class body at any depth (methods, nested classes' methods). A function defined inside another
  function is not an example of its own: its code is part of the enclosing function's source, and
  it is usually a closure whose purpose is the enclosing function's.
- Source: the function's lines, decorators included, dedented, with its own docstring statement
  removed (docstrings of functions nested in it stay: they are code the reader sees), trailing
  whitespace and blank lines at the ends removed. A function whose body is only the docstring
  keeps its signature alone.
- Target: `first_sentence(docstring)`: the first paragraph of the cleaned docstring, whitespace
  collapsed, cut after the first ". " that does not end an abbreviation (e.g. i.e. etc. vs. cf.);
  the paragraph also ends before a doctest line (">>>").
  Dropped (and counted): a target of one word ("Constructor.", "**DEPRECATED**"; fewer than
  `MIN_TARGET_WORDS`), one that is a signature (`name(...)` first, as docstrings written after
  C modules' begin: "capwords(s [,sep]) -> string") and one that is a doctest (">>>" first).
- Splits by package: the unit is the top-level name (`email.mime.text` -> `email`), so no package
  is in two splits and sibling modules (which share much code) stay together. The names in the
  order of their sha256 fill the test split until it holds 10% of the examples, then validation
  likewise; the rest are train (`assign_splits`).
- Exact (source, target) duplicates are dropped, keeping the first in the order train, validation,
  test (by module path, then position in the file): a pair in train is never also scored in test.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import io
import json
import os
import platform
import re
import statistics
import sys
import sysconfig
import textwrap
import tokenize
from collections.abc import Iterator
from pathlib import Path

SPLITS = ("train", "validation", "test")
# Percent of the examples per split, filled by whole top-level names (`assign_splits`).
SPLIT_PERCENT = {"train": 80, "validation": 10, "test": 10}
SEPARATELY_PACKAGED = ("distutils", "ensurepip", "idlelib", "lib2to3", "tkinter", "turtle",
                       "turtledemo")
NOT_STDLIB_DIRS = ("site-packages", "dist-packages", "lib-dynload", "__pycache__")
TEST_DIRS = re.compile(r"^(tests?|idle_test|\w+_tests?)$")
TEST_FILES = re.compile(r"^(test_\w*|\w+_tests?)\.py$")
MIN_TARGET_WORDS = 2
ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "vs.", "cf.")
SIGNATURE = re.compile(r"^[\w.]+\(.*\)")


def first_sentence(docstring: str) -> str:
    """The first paragraph of `docstring` (up to its first blank line or doctest line, one that
    starts with ">>>"), whitespace collapsed, cut after the first ". " whose word before is not an
    abbreviation; the whole paragraph when there is none. "" for an empty docstring."""
    paragraph = re.split(r"\n\s*\n|\n\s*>>>", docstring.strip(), maxsplit=1)[0]
    text = " ".join(paragraph.split())
    for match in re.finditer(r"\. ", text):
        words = text[: match.end() - 1].split()
        if words[-1].lstrip("([{\"'").lower() not in ABBREVIATIONS:
            return text[: match.start() + 1]
    return text


def target_problem(target: str) -> str:
    """Why a target is not kept ("" when it is): "short", "signature" or "doctest"."""
    if len(target.split()) < MIN_TARGET_WORDS:
        return "short"
    if SIGNATURE.match(target):
        return "signature"
    if target.startswith(">>>"):
        return "doctest"
    return ""


def module_name(relative: Path) -> str:
    """`email/mime/text.py` -> "email.mime.text"; `json/__init__.py` -> "json"."""
    parts = list(relative.with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def is_pruned(folder: str) -> bool:
    """Whether a folder is not walked: tests, and what is not the standard library's own."""
    return bool(TEST_DIRS.match(folder)) or folder in NOT_STDLIB_DIRS or folder.startswith("config-")


def is_skipped(relative: Path, all_packages: bool) -> str:
    """Why a file in a walked folder is not read ("" when it is read): "test" or "separately
    packaged"."""
    if TEST_FILES.match(relative.name):
        return "test"
    if not all_packages and module_name(relative).split(".")[0] in SEPARATELY_PACKAGED:
        return "separately packaged"
    return ""


def python_files(root: Path, all_packages: bool, skipped: dict[str, int]) -> list[Path]:
    """The `.py` files read under `root`, relative to it, sorted; `skipped` counts the others of
    the walked folders by reason (what the folders left out hold differs between installations
    of one version, so it is not counted)."""
    kept = []
    for directory, folders, files in os.walk(root):
        folders[:] = sorted(folder for folder in folders if not is_pruned(folder))
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            relative = Path(directory, name).relative_to(root)
            reason = is_skipped(relative, all_packages)
            if reason:
                skipped[reason] = skipped.get(reason, 0) + 1
            else:
                kept.append(relative)
    return sorted(kept)


def documented_functions(tree: ast.Module) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    """Functions with a docstring at module level or in class bodies (at any depth), in source
    order; functions inside functions are not descended into."""
    stack: list[ast.AST] = [tree]
    found = []
    while stack:
        node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                if ast.get_docstring(child) is not None:
                    found.append(child)
            elif isinstance(child, ast.ClassDef) or not isinstance(child, ast.expr):
                stack.append(child)  # class bodies, and if/try blocks at module or class level
    yield from sorted(found, key=lambda node: (node.lineno, node.col_offset))


def function_source(lines: list[str], node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    """The function's lines (decorators included) with its docstring statement cut out, dedented.
    `lines` are the file's lines with their endings; ast columns count UTF-8 bytes."""
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    doc = node.body[0]
    text = lines[first - 1: node.end_lineno]
    start_line, end_line = doc.lineno - first, doc.end_lineno - first
    head = text[start_line].encode()[: doc.col_offset].decode()
    tail = text[end_line].encode()[doc.end_col_offset:].decode()
    tail = re.sub(r"^\s*;", "", tail).strip()  # `"""doc"""; rest`: the rest stays
    if head.strip():  # `def f(): """doc"""`: the signature stays
        replacement = [head.rstrip() + (" " + tail if tail else "") + "\n"]
    else:
        replacement = [head + tail + "\n"] if tail else []
    kept = text[:start_line] + replacement + text[end_line + 1:]
    body = textwrap.dedent("".join(line.rstrip() + "\n" for line in kept))
    return body.strip("\n")


def file_examples(path: Path) -> list[tuple[str, str, str]] | None:
    """(source, target, drop reason) of each documented function of a file, or None when the file
    does not decode or parse."""
    try:
        data = path.read_bytes()
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
        text = data.decode(encoding)
        tree = ast.parse(text, filename=str(path))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return None
    lines = text.splitlines(keepends=True)
    examples = []
    for node in documented_functions(tree):
        target = first_sentence(ast.get_docstring(node, clean=True) or "")
        examples.append((function_source(lines, node), target, target_problem(target)))
    return examples


def assign_splits(counts: dict[str, int]) -> dict[str, str]:
    """{top-level name: split}: the names in the order of their sha256, the first to the test
    split until it holds `SPLIT_PERCENT["test"]` percent of the examples (`counts`: examples per
    name), the next to validation likewise, the rest to train."""
    total = sum(counts.values())
    order = sorted(counts, key=lambda name: hashlib.sha256(name.encode()).hexdigest())
    held, splits = {"test": 0, "validation": 0}, {}
    for name in order:
        split = next((s for s in held if held[s] * 100 < SPLIT_PERCENT[s] * total), "train")
        splits[name] = split
        held[split] = held.get(split, 0) + counts[name]
    return splits


def build(root: str | Path, all_packages: bool = False) -> tuple[dict[str, list[dict]], dict]:
    """{split: [{"source", "target"}, ...]} of the files under `root`, and the facts for
    meta.json (counts of skipped files, dropped targets and duplicates, each split's modules)."""
    root = Path(root)
    skipped: dict[str, int] = {}
    dropped: dict[str, int] = {}
    by_module: dict[str, list[tuple[str, str]]] = {}
    for relative in python_files(root, all_packages, skipped):
        examples = file_examples(root / relative)
        if examples is None:
            skipped["unparsable"] = skipped.get("unparsable", 0) + 1
            continue
        by_module[module_name(relative)] = pairs = []
        for source, target, problem in examples:
            if problem:
                dropped[problem] = dropped.get(problem, 0) + 1
            else:
                pairs.append((source, target))
    counts: dict[str, int] = {}
    for name, pairs in by_module.items():
        top = name.split(".")[0]
        counts[top] = counts.get(top, 0) + len(pairs)
    split_of = assign_splits(counts)
    modules: dict[str, list[str]] = {split: [] for split in SPLITS}
    for name in by_module:
        modules[split_of[name.split(".")[0]]].append(name)
    seen: set[tuple[str, str]] = set()
    data: dict[str, list[dict]] = {split: [] for split in SPLITS}
    for split in SPLITS:
        for pair in (pair for name in modules[split] for pair in by_module[name]):
            if pair in seen:
                dropped["duplicate"] = dropped.get("duplicate", 0) + 1
                continue
            seen.add(pair)
            data[split].append({"source": pair[0], "target": pair[1]})
    facts = {"skipped_files": skipped, "dropped_examples": dropped, "modules": modules}
    return data, facts


def jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def write(data: dict[str, list[dict]], facts: dict, out: str | Path, all_packages: bool) -> dict:
    """`out/{split}.jsonl` and `out/meta.json`; returns the meta."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "python_build": " ".join(platform.python_build()),
        "all_packages": all_packages,
        "split_percent": SPLIT_PERCENT,
        "examples": {split: len(data[split]) for split in SPLITS},
        "modules": {split: len(facts["modules"][split]) for split in SPLITS},
        "module_list_sha256": {split: sha256("\n".join(facts["modules"][split])) for split in SPLITS},
        "file_sha256": {},
        "skipped_files": facts["skipped_files"],
        "dropped_examples": facts["dropped_examples"],
    }
    for split in SPLITS:
        text = jsonl(data[split])
        (out / f"{split}.jsonl").write_text(text, encoding="utf-8")
        meta["file_sha256"][f"{split}.jsonl"] = sha256(text)
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return meta


def quantiles(values: list[int]) -> tuple[float, float, int]:
    """(median, 90th percentile (nearest rank), max)."""
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, max(0, -(-9 * len(ordered) // 10) - 1))]
    return statistics.median(ordered), p90, ordered[-1]


def length_lines(data: dict[str, list[dict]], units: dict) -> list[str]:
    """A Markdown table of the median / p90 / max of source and target lengths per split and
    unit; `units` maps a unit's name to a function (side, text) -> length."""
    lines = ["| split | side | unit | median | p90 | max |", "|---|---|---|---|---|---|"]
    for split in SPLITS:
        for side in ("source", "target"):
            for unit, length in units.items():
                med, p90, top = quantiles([length(side, r[side]) for r in data[split]])
                lines.append(f"| {split} | {side} | {unit} | {med:g} | {p90:g} | {top} |")
    return lines


def piece_counter(train: list[dict], vocab_size: int):
    """(side, text) -> SentencePiece pieces (EOS included) of a unigram model of `vocab_size`
    trained on the train split's side, as `vocab.type="sentencepiece"` trains one per side."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from flax_s2s.data.vocab import SentencePieceVocab

    vocabs = {side: SentencePieceVocab.train((r[side] for r in train), vocab_size)
              for side in ("source", "target")}
    return lambda side, text: len(vocabs[side].encode(text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    root = Path(__file__).resolve().parents[1]
    parser.add_argument("--out", default=str(root / "data" / "code2doc"))
    parser.add_argument("--root", default=sysconfig.get_paths()["stdlib"],
                        help="the standard library's folder (default: this Python's)")
    parser.add_argument("--all_packages", action="store_true",
                        help="also read " + ", ".join(SEPARATELY_PACKAGED))
    parser.add_argument("--sp_vocab_size", type=int, default=0,
                        help="also print lengths in SentencePiece pieces of this vocabulary size")
    args = parser.parse_args()
    data, facts = build(args.root, args.all_packages)
    meta = write(data, facts, args.out, args.all_packages)
    print(json.dumps({key: meta[key] for key in ("python", "examples", "modules", "skipped_files",
                                                  "dropped_examples")}))
    units = {"characters": lambda side, text: len(text),
             "words": lambda side, text: len(text.split())}
    if args.sp_vocab_size:
        units[f"pieces ({args.sp_vocab_size})"] = piece_counter(data["train"], args.sp_vocab_size)
    print("\n".join(length_lines(data, units)))


if __name__ == "__main__":
    main()
