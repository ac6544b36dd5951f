"""
The edge package's shape (rhetor/edge/): no import cycle, shared helpers below the blueprints.

The imports are read from the source (every ``rhetor.edge`` import, those
under ``TYPE_CHECKING`` and inside functions included), so the rule holds
however a module is loaded.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

EDGE = Path(__file__).resolve().parent.parent / "rhetor" / "edge"
# What every blueprint may use; none of them may reach a blueprint or the app.
SHARED = {
    "_checks",
    "_fields",
    "_json",
    "_http",
    "_sse",
    "_compat",
    "_openai_wire",
    "_schema",
    "_schemas_native",
    "_schemas_admin",
    "_schemas_openai",
    "_schemas_anthropic",
    "_schemas_ws",
    "_schemas_responses",
    "_schemas_content",
}
BLUEPRINTS = {
    "_core",
    "_messages",
    "_templates",
    "_prompts",
    "_contexts",
    "_budget",
    "_evaluate",
    "_compat_openai",
    "_compat_anthropic",
    "_compat_responses",
    "_compat_v1",
    "_openapi",
}


def edge_imports() -> dict[str, set[str]]:
    """Each edge module and the edge modules it imports."""
    graph: dict[str, set[str]] = {}
    for path in sorted(EDGE.glob("*.py")):
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[:2] == ["rhetor", "edge"] and len(parts) > 2:
                    found.add(parts[2])
        graph[path.stem] = found & {p.stem for p in EDGE.glob("*.py")}
    return graph


def test_no_edge_module_imports_itself_back_through_another() -> None:
    """The edge's imports form no cycle (``_app`` and ``_compat`` once imported each other)."""
    graph = edge_imports()
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, " -> ".join((*path, module))
        if module in done:
            return
        for imported in graph[module]:
            visit(imported, (*path, module))
        done.add(module)

    for module in graph:
        visit(module, ())


@pytest.mark.parametrize("module", sorted(SHARED))
def test_a_shared_module_imports_no_blueprint_and_not_the_app(module: str) -> None:
    """The helpers the blueprints share sit below them: they import no blueprint, nor ``_app``."""
    assert not edge_imports()[module] & (BLUEPRINTS | {"_app", "_server"})


def test_only_the_app_assembles_the_blueprints() -> None:
    """``_app`` mounts every top-level blueprint; no other module imports one but ``_compat_v1``."""
    graph = edge_imports()
    top = BLUEPRINTS - {"_compat_openai", "_compat_anthropic", "_compat_responses"}
    assert top <= graph["_app"]
    for module, imported in graph.items():
        if module not in ("_app", "_compat_v1"):
            assert not imported & BLUEPRINTS, module
    assert {"_compat_openai", "_compat_anthropic", "_compat_responses"} <= graph["_compat_v1"]


def test_no_edge_module_runs_past_500_lines() -> None:
    """Every edge module stays small enough to read whole (the layout's rule of about 500)."""
    lengths = {p.name: len(p.read_text().splitlines()) for p in EDGE.glob("*.py")}
    assert max(lengths.values()) <= 500, lengths
