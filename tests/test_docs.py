"""The README, docs/ and the package's own docstrings name only what exists: every dotted
`flax_s2s.` name imports (a module, or an attribute of one), every `python -m` command is a
module, every file a page links to is there, and the README stays short."""

from __future__ import annotations

import importlib
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SOURCES = sorted((ROOT / "flax_s2s").rglob("*.py"))
# what else names the package: configs, benchmarks, the training command
OTHER_CODE = [*sorted((ROOT / "configs").glob("*.py")), *sorted((ROOT / "bench").glob("*.py")),
              ROOT / "train.py"]
DOTTED = re.compile(r"\bflax_s2s(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
COMMAND = re.compile(r"python -m (flax_s2s(?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
PATH = re.compile(r"\b((?:flax_s2s|bench|configs|tests|docs)/[\w/.]*\w)")
PLACEHOLDERS = {"X", "NAME"}  # `python -m flax_s2s.X`: a pattern, not a name


def _resolves(dotted: str) -> bool:
    """Whether `dotted` is a module, or a chain of attributes from the longest module prefix."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            value = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            if not hasattr(value, attribute):
                return False
            value = getattr(value, attribute)
        return True
    return False


def _names(paths: list[pathlib.Path]) -> list[tuple[str, str]]:
    found = {(path.relative_to(ROOT).as_posix(), name.rstrip("."))
             for path in paths for name in DOTTED.findall(path.read_text(encoding="utf-8"))}
    return sorted((where, name) for where, name in found
                  if not PLACEHOLDERS & set(name.split(".")))


@pytest.mark.parametrize("where, name", _names(PAGES + SOURCES + OTHER_CODE))
def test_every_dotted_name_exists(where, name):
    assert _resolves(name), f"{where} names {name}, which does not exist"


@pytest.mark.parametrize("page", PAGES, ids=lambda path: path.name)
def test_every_command_and_link_of_a_page_exists(page):
    text = page.read_text(encoding="utf-8")
    for module in COMMAND.findall(text):
        if PLACEHOLDERS & set(module.split(".")):
            continue
        spec = importlib.util.find_spec(module)
        assert spec is not None, f"{page.name}: python -m {module} is no module"
    for target in LINK.findall(text):
        if "://" not in target:
            assert (page.parent / target).exists(), f"{page.name} links to {target}, which is missing"
    for path in PATH.findall(text):
        assert (ROOT / path).exists(), f"{page.name} names {path}, which is missing"


def test_the_readme_is_short_and_links_every_page():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 150
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"docs/{page.name}" in readme, f"README.md does not link docs/{page.name}"


def test_the_layout_page_names_every_module_and_no_other():
    page = (ROOT / "docs" / "layout.md").read_text(encoding="utf-8")
    section = page[page.index("## Modules"):page.index("## Outside the package")]
    folders = {"flax_s2s": "", **{f"flax_s2s/{d.name}": d.name for d in (ROOT / "flax_s2s").iterdir()
                                  if d.is_dir() and (d / "__init__.py").exists()}}
    named = set()
    folder = None
    for line in section.splitlines():
        heading = re.search(r"\(`(flax_s2s(?:/\w+)?)/`\)", line)
        if heading:
            folder = folders[heading.group(1)]
        for name in re.findall(r"`(\w+\.py)`", line):
            named.add(f"{folder}/{name}" if folder else name)
    actual = {path.relative_to(ROOT / "flax_s2s").as_posix() for path in SOURCES
              if path.name != "__init__.py"}
    assert named - actual == set(), f"docs/layout.md names modules that do not exist: {named - actual}"
    assert actual - named == set(), f"docs/layout.md leaves out: {sorted(actual - named)}"


def _package_imports(path: pathlib.Path) -> list[tuple[str, str]]:
    """(module, name) of every `from flax_s2s... import name` in a file, lazy ones included."""
    import ast

    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("flax_s2s"):
            found += [(node.module, alias.name) for alias in node.names]
    return found


@pytest.mark.parametrize("path", OTHER_CODE, ids=lambda path: path.relative_to(ROOT).as_posix())
def test_benchmarks_and_configs_import_what_exists(path):
    """CI runs no benchmark, so a name moved out from under one would go unnoticed until a run."""
    for module, name in _package_imports(path):
        assert _resolves(f"{module}.{name}"), f"{path.name}: from {module} import {name}: no such name"
