"""The package's import graph: no module imports in a circle (type-checking and function-level
imports included), and the recipe and suite layer depends on no loop and no runner."""

from __future__ import annotations

import ast
from pathlib import Path

import mbrl_bench

ROOT = Path(mbrl_bench.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """``module -> modules of this package it imports`` (every import statement anywhere)."""
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            deps |= {t for t in targets if t in modules and t != name}
        graph[name] = deps
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for dep in graph[todo.pop()]:
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def test_no_module_imports_in_a_circle() -> None:
    graph = import_graph()
    cycles = sorted(m for m in graph if m in reachable(graph, m))
    assert not cycles, f"modules on an import cycle: {cycles}"


def test_the_recipe_layer_depends_on_no_loop_or_runner() -> None:
    graph = import_graph()
    for layer in ("mbrl_bench.spec", "mbrl_bench.config", "mbrl_bench.parts"):
        above = {m for m in reachable(graph, layer)
                 if m.startswith(("mbrl_bench.runner", "mbrl_bench.cli", "mbrl_bench.reporting"))
                 or (m.startswith("mbrl_bench.loops.") and m != "mbrl_bench.loops.configs")}
        assert not above, f"{layer} imports {sorted(above)}"


def test_loops_import_no_runner_and_no_other_loop() -> None:
    graph = import_graph()
    loops = ("mbrl_bench.loops.policy", "mbrl_bench.loops.mpc", "mbrl_bench.loops.tabular")
    for loop in loops:
        deps = graph[loop]
        assert not {d for d in deps if d.startswith("mbrl_bench.runner")}, loop
        assert not set(loops) & deps, f"{loop} imports another loop"
