"""Measures of the package's shape: modules and lines, the largest module, imports that go up a
layer or round a circle (the layers of `tests/test_layout.py`), and how `config` travels from
`training.run` (the calls that pass the config or one of its sections on, depth first, each
function once; a "return" is a stop in a module the flow had left before).

    python bench/code_measures.py [PACKAGE_DIR] [--entry MODULE:FUNCTION] [-v]

Read with `ast` from the source, so it also measures an older checkout's package
(`git archive REV flax_s2s | tar -x -C DIR`; the entry there was `flax_s2s.training:run`).
"""

from __future__ import annotations

import argparse
import ast
import pathlib
import sys

SECTIONS = {"model", "teacher_forcing", "optimizer", "vocab", "early_stopping", "distributed"}


def load(package: pathlib.Path) -> dict[str, ast.Module]:
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        text = path.read_text()
        modules[name] = (ast.parse(text), len(text.splitlines()))
    return modules


def imported_names(name: str, tree: ast.Module, modules: dict) -> dict[str, tuple[str, str | None]]:
    """local name -> (module, attribute or None) for the package's imports."""
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("flax_s2s"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                where = (full, None) if full in modules else (node.module, alias.name)
                found[alias.asname or alias.name] = where
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    found[alias.asname or alias.name.split(".")[0]] = (alias.name, None)
    return found


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


class ConfigFlow:
    """The calls that pass `config` (or a section of it) on, from one entry function."""

    def __init__(self, modules: dict) -> None:
        self.defs = {m: {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)}
                     for m, (tree, _) in modules.items()}
        self.imports = {m: imported_names(m, tree, modules) for m, (tree, _) in modules.items()}
        self.stops: list[str] = []
        self.seen: set = set()

    def _resolve(self, module: str, func: ast.expr):
        defs, imports = self.defs[module], self.imports[module]
        if isinstance(func, ast.Name):
            if func.id in defs:
                return module, defs[func.id]
            target, attribute = imports.get(func.id, (None, None))
            if attribute in self.defs.get(target, {}):
                return target, self.defs[target][attribute]
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            base = func.value.id
            target, attribute = imports.get(base, (None, None))
            owner = None
            if target and attribute is None and func.attr in self.defs.get(target, {}):
                return target, self.defs[target][func.attr]
            if isinstance(defs.get(base), ast.ClassDef):
                owner = (module, defs[base])
            elif attribute and isinstance(self.defs.get(target, {}).get(attribute), ast.ClassDef):
                owner = (target, self.defs[target][attribute])
            if owner:
                for node in owner[1].body:
                    if isinstance(node, ast.FunctionDef) and node.name == func.attr:
                        return owner[0], node
        return None

    @staticmethod
    def _passes(expr: ast.expr, names: set[str]) -> bool:
        if isinstance(expr, ast.Name):
            return expr.id in names
        return (isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name)
                and expr.value.id in names and expr.attr in SECTIONS)

    def follow(self, module: str, node: ast.AST, names: set[str]) -> None:
        key = (module, node.name, node.lineno)
        if key in self.seen:
            return
        self.seen.add(key)
        self.stops.append(f"{module}.{node.name}")
        if isinstance(node, ast.ClassDef):
            for method in (n for n in node.body if isinstance(n, ast.FunctionDef)):
                self.follow(module, method, _config_params(method) or names)
            return
        for call in (n for n in ast.walk(node) if isinstance(n, ast.Call)):
            arguments = [*call.args, *(k.value for k in call.keywords)]
            if any(self._passes(a, names) for a in arguments):
                target = self._resolve(module, call.func)
                if target:
                    callee = target[1]
                    params = _config_params(callee) if isinstance(callee, ast.FunctionDef) else set()
                    self.follow(*target, params or {"config"})

    def returns(self) -> tuple[int, int, list[str]]:
        visited, count, previous, lines = [], 0, None, []
        for stop in self.stops:
            module = stop.rsplit(".", 1)[0]
            back = module != previous and module in visited
            count += back
            lines.append(("<- " if back else "   ") + stop)
            visited += [] if module in visited else [module]
            previous = module
        return count, len(visited), lines


def _config_params(node: ast.FunctionDef) -> set[str]:
    return {a.arg for a in node.args.args + node.args.kwonlyargs if "config" in a.arg}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", nargs="?", default=str(pathlib.Path(__file__).parents[1] / "flax_s2s"))
    parser.add_argument("--entry", default="flax_s2s.training.trainer:run")
    parser.add_argument("-v", action="store_true", help="print the config's stops")
    args = parser.parse_args(argv)
    modules = load(pathlib.Path(args.package))
    graph = {m: {target for target, _ in imported_names(m, tree, modules).values()} - {m}
             for m, (tree, _) in modules.items()}
    sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "tests"))
    from test_layout import LAYERS  # the layers the tests enforce

    def layer(name: str) -> int:  # -1: in no layer (an older checkout's module)
        matches = [(len(p), i) for i, ps in enumerate(LAYERS) for p in ps
                   if name == p or (p != "flax_s2s" and name.startswith(p + "."))]
        return max(matches)[1] if matches else -1

    upward = sorted((m, d) for m, deps in graph.items() for d in deps
                    if layer(m) >= 0 and layer(d) > layer(m))
    module, entry = args.entry.rsplit(":", 1)
    flow = ConfigFlow(modules)
    flow.follow(module, flow.defs[module][entry], {"config"})
    returns, visited, lines = flow.returns()
    largest = max(modules, key=lambda m: modules[m][1])
    print("| measure | value |\n|---|---|")
    print(f"| modules | {len(modules)} |")
    print(f"| lines | {sum(n for _, n in modules.values())} |")
    print(f"| largest module | {largest} ({modules[largest][1]} lines) |")
    print(f"| modules over 450 lines | {sum(n > 450 for _, n in modules.values())} |")
    print(f"| upward imports | {len(upward)} {upward[:5] if upward else ''} |")
    print(f"| import circles | {len(circles(graph))} {circles(graph)} |")
    print(f"| config: stops / modules / returns | {len(flow.stops)} / {visited} / {returns} |")
    if args.v:
        print("\n".join(lines))


if __name__ == "__main__":
    main()
