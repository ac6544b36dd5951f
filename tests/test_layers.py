"""
The direction of dependencies between Rhetor's parts, read from the source.

    cli, __main__  →  edge  →  runtime  →  routing  →  budget, providers  →  storage  →  observe  →  shared

``shared`` is the value objects and helpers every layer uses (``rhetor``'s
``__init__``, ``_types``, ``_content``, ``_errors``, ``_settings``, ``_asks``, ``_redact``,
``_tokens``, ``_documents``). ``observe`` (request ids, the access log, metrics, traces) sits
just above it, so that every layer may record what it sees. A module may import its own layer and any layer to its right,
never one to its left; ``budget`` and ``providers`` do not import each other.
``actors`` never imports ``rhetor``, and ``rhetor.client`` imports nothing of
the server. Every import counts: those under ``TYPE_CHECKING`` and those
inside functions too, so the rule holds however a module is loaded.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = {
    "__init__",
    "_types",
    "_content",
    "_errors",
    "_settings",
    "_asks",
    "_redact",
    "_tokens",
    "_documents",
}
# Left to right: a layer may import itself and anything after it.
ORDER = ["entry", "edge", "runtime", "routing", "budget|providers", "storage", "observe", "shared"]
# Layers in one slot of ORDER that may not import each other.
SIBLINGS = {"budget": "providers", "providers": "budget"}


def layer_of(module: str) -> str | None:
    """The layer of a ``rhetor...`` module name; None for ``rhetor.client`` and outsiders."""
    parts = module.split(".")
    if parts[0] != "rhetor":
        return None
    if len(parts) == 1:
        return "shared"
    head = parts[1]
    if not (ROOT / "rhetor" / f"{head}.py").exists() and not (ROOT / "rhetor" / head).is_dir():
        return "shared"  # a name ``rhetor`` itself exports (from rhetor import RhetorError)
    if head == "client":
        return None
    if head in ("cli", "__main__") or head.startswith("_cli_"):
        return "entry"
    if head in SHARED:
        return "shared"
    if head in ("_stores", "_tree") or head.startswith("_runtime_"):
        return "runtime"  # the runtime's stores and actor tree, split out of runtime.py
    if head in ("edge", "runtime", "routing", "budget", "providers", "storage", "observe"):
        return head
    raise AssertionError(f"{module} is in no layer: add it to tests/test_layers.py")


def rank(layer: str) -> int:
    return next(i for i, slot in enumerate(ORDER) if layer in slot.split("|"))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path) -> Iterator[str]:
    """Every module ``path`` imports (absolute names; relative imports resolved)."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def sources(*parts: str) -> list[Path]:
    return sorted((ROOT.joinpath(*parts)).rglob("*.py"))


def test_every_rhetor_module_is_in_a_layer() -> None:
    """Each server module belongs to exactly one layer, so none escapes the rule."""
    for path in sources("rhetor"):
        layer_of(module_name(path))


@pytest.mark.parametrize("path", sources("rhetor"), ids=lambda p: module_name(p))
def test_imports_only_point_down_the_layers(path: Path) -> None:
    """A module imports its own layer or lower ones: edge → runtime → routing → {budget, providers} → storage → shared."""
    own = layer_of(module_name(path))
    if own is None:
        return
    for name in imports(path):
        target = layer_of(name) if name.startswith("rhetor") else None
        if target is None or target == own:
            continue
        assert rank(target) >= rank(own), f"{module_name(path)} ({own}) imports {name} ({target})"
        assert SIBLINGS.get(own) != target, f"{module_name(path)} ({own}) imports {name} ({target})"


def test_actors_never_imports_rhetor() -> None:
    """The actor runtime is generic: nothing under actors/ imports rhetor."""
    for path in sources("actors"):
        found = [n for n in imports(path) if n == "rhetor" or n.startswith("rhetor.")]
        assert not found, f"{module_name(path)} imports {found}"


def test_the_client_imports_nothing_of_the_server() -> None:
    """rhetor.client imports only itself and third-party libraries, never the server or actors."""
    for path in sources("rhetor", "client"):
        for name in imports(path):
            top = name.split(".")[0]
            assert top != "actors", f"{module_name(path)} imports {name}"
            if top == "rhetor":
                assert name.startswith("rhetor.client"), f"{module_name(path)} imports {name}"


def test_a_layer_violation_is_caught() -> None:
    """The checker itself: storage importing routing, or budget importing providers, is reported."""
    assert rank(layer_of("rhetor.routing._router") or "") < rank("storage")
    assert SIBLINGS["budget"] == layer_of("rhetor.providers._actor")
