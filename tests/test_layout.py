"""The package's rooms: each module imports only modules of its own layer or below, no two
modules import each other (directly or round a circle), and no module outgrows a screen's worth
of jobs. Read from the source with `ast`, so a lazy import inside a function counts like any
other; only the `if __name__ == "__main__":` block of a former command (its alias) is left out."""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "flax_s2s"
# Layers from the bottom; a module's layer is that of its longest matching prefix ("flax_s2s"
# itself, the package's __init__, matches only itself).
LAYERS = (
    ("flax_s2s", "flax_s2s.errors", "flax_s2s.special_tokens", "flax_s2s.config_checks",
     "flax_s2s.hf_files", "flax_s2s.compilation_cache", "flax_s2s.signals", "flax_s2s.logs",
     "flax_s2s.early_stopping", "flax_s2s.resume", "flax_s2s.workdir_lock", "flax_s2s.metrics",
     "flax_s2s.sequence_costs",
     "flax_s2s.sharding", "flax_s2s.checkpoint", "flax_s2s.exported", "flax_s2s.schedules",
     "flax_s2s.input_lines", "flax_s2s.outputs",
     "flax_s2s.lora"),
    ("flax_s2s.data",),
    ("flax_s2s.models",),
    ("flax_s2s.decoding", "flax_s2s.forcing", "flax_s2s.mbr", "flax_s2s.ensemble",
     "flax_s2s.reference_eval", "flax_s2s.workdirs", "flax_s2s.warm_start", "flax_s2s.scoring",
     "flax_s2s.input_noise", "flax_s2s.oracle", "flax_s2s.diagnostics", "flax_s2s.mrt"),
    ("flax_s2s.pretrained", "flax_s2s.infer", "flax_s2s.evaluate", "flax_s2s.export",
     "flax_s2s.report", "flax_s2s.decode", "flax_s2s.score", "flax_s2s.distill"),
    ("flax_s2s.training",),
    ("flax_s2s.cli",),
)
MAX_LINES = 450


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
assert len(MODULES) > 40, f"found only {len(MODULES)} modules under {PACKAGE}"


def _is_alias_block(node: ast.AST) -> bool:
    """`if __name__ == "__main__":`, where a former command runs its new module."""
    test = getattr(node, "test", None)
    return (isinstance(node, ast.If) and isinstance(test, ast.Compare)
            and isinstance(test.left, ast.Name) and test.left.id == "__name__")


def _imports(name: str) -> set[str]:
    """The package modules `name` imports (`from a import b` counts b where it is a module)."""
    path = MODULES[name]
    tree = ast.parse(path.read_text())
    body = [node for node in tree.body if not _is_alias_block(node)]
    found = set()
    for node in (n for top in body for n in ast.walk(top)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("flax_s2s"):
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in MODULES else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in MODULES)
    found.discard(name)
    return found


GRAPH = {name: _imports(name) for name in MODULES}


def _layer(name: str) -> int:
    matches = [(len(prefix), index) for index, prefixes in enumerate(LAYERS) for prefix in prefixes
               if name == prefix or (prefix != "flax_s2s" and name.startswith(prefix + "."))]
    assert matches, f"{name} is in no layer of LAYERS: add it"
    return max(matches)[1]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_a_module_imports_nothing_above_its_layer(name):
    upward = sorted(dep for dep in GRAPH[name] if _layer(dep) > _layer(name))
    assert not upward, f"{name} (layer {_layer(name)}) imports {upward} from above"


def test_no_import_circles():
    """Depth-first search for a module that leads back to itself."""
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for dep in sorted(GRAPH[name]):
            if state.get(dep) == "open":
                raise AssertionError("import circle: " + " -> ".join(path[path.index(dep):] + [dep]))
            if dep not in state:
                visit(dep, [*path, dep])
        state[name] = "done"

    for name in sorted(MODULES):
        if name not in state:
            visit(name, [name])


def test_the_data_layer_knows_no_model_and_models_know_no_data():
    for name, deps in GRAPH.items():
        if name.startswith("flax_s2s.data"):
            assert not {d for d in deps if d.startswith(("flax_s2s.models", "flax_s2s.pretrained"))}, name
        if name.startswith("flax_s2s.models"):
            assert not {d for d in deps if d.startswith(("flax_s2s.data", "flax_s2s.training"))}, name


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_outgrows_its_job(name):
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name}: {lines} lines (at most {MAX_LINES}: split it by job)"


# The commands that moved to flax_s2s.cli, by their former `python -m` names
FORMER_COMMANDS = {"flax_s2s.infer": "decode", "flax_s2s.decode": "decode",
                   "flax_s2s.evaluate": "evaluate", "flax_s2s.export": "export",
                   "flax_s2s.report": "report", "flax_s2s.pretrained.__main__": "export_pretrained"}


@pytest.mark.parametrize("former, command", sorted(FORMER_COMMANDS.items()))
def test_a_former_command_runs_its_new_module_and_says_where_it_went(former, command):
    """Read statically (the decode and evaluate aliases also run end to end in their tests)."""
    text = MODULES[former].read_text()
    new = f"flax_s2s.cli.{command}"
    assert new in MODULES, new
    assert f'runpy.run_module("{new}", run_name="__main__"' in text
    shown = former.removesuffix(".__main__")
    assert f"python -m {shown} is now python -m {new}" in text
