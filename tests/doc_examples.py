"""
The code examples of README.md and docs/*.md: finding them, and running one document's Python.

:func:`examples` reads a Markdown file's fenced code blocks. A block whose
language Rhetor's docs run (``python``; ``bash``, ``sh`` or ``shell``) is run
by ``tests/test_docs_examples.py`` unless the line right before its opening
fence (blank lines aside) is a marker saying why it cannot run::

    <!-- not-run: serves on port 8300 until stopped -->

Blocks of other languages (``json``, ``js``, plain text) are not run here;
the ``js`` ones of the JavaScript client's docs are run by its own tests.

Run as ``python -m tests.doc_examples FILE.md``, this module runs every
runnable Python block of FILE in order, in one namespace, the way one session
of ``python -m asyncio`` would: top-level ``await`` and ``async with`` work,
and a name set by one block is there for the next. Nothing is rewritten but
the address ``localhost:8300``, which becomes ``RHETOR_DOCS_ADDRESS`` when
that is set. A failure's traceback names the Markdown file and line.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import os
import re
import sys
from pathlib import Path

import attrs

__all__ = ["ADDRESS", "PYTHON", "SHELL", "Example", "Marker", "examples", "markers", "run_python"]

PYTHON = frozenset({"python", "py"})
SHELL = frozenset({"bash", "sh", "shell"})
ADDRESS = "localhost:8300"

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^`\n]*)$")
_MARKER = re.compile(r"^\s*<!--\s*not-run:(?P<reason>.*?)-->\s*$")
_ANY_MARKER = re.compile(r"^\s*<!--\s*not-run\b")


@attrs.frozen
class Example:
    """One fenced code block: where it starts, its language, its code, and why it is not run."""

    path: Path
    line: int  # of the first line of code, 1-based
    language: str
    code: str
    not_run: str | None = None

    @property
    def where(self) -> str:
        return f"{self.path.name}:{self.line}"

    @property
    def runs(self) -> bool:
        return self.not_run is None and self.language in PYTHON | SHELL


@attrs.frozen
class Marker:
    """A ``not-run`` marker: its line, its reason, and whether a code block follows it."""

    path: Path
    line: int
    reason: str
    before_block: bool


def _scan(path: Path) -> tuple[list[Example], list[Marker]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Example] = []
    marks: list[Marker] = []
    pending: Marker | None = None  # a marker not yet followed by anything but blank lines
    i = 0
    while i < len(lines):
        line = lines[i]
        opening = _FENCE.match(line)
        if opening:
            fence = opening["fence"]
            language = opening["info"].strip().split(" ")[0].lower()
            end = i + 1
            while end < len(lines) and not lines[end].strip().startswith(fence):
                end += 1
            indent = len(opening["indent"])
            # A fence indented inside a list item indents its code as much.
            code = (
                "\n".join(
                    text[indent:] if text[:indent].isspace() else text
                    for text in lines[i + 1 : end]
                )
                + "\n"
            )
            reason = None
            if pending is not None:
                marks.append(attrs.evolve(pending, before_block=True))
                reason = pending.reason
                pending = None
            found.append(Example(path, i + 2, language, code, reason))
            i = end + 1
            continue
        if line.strip():
            if pending is not None:
                marks.append(pending)
                pending = None
            marker = _MARKER.match(line)
            if marker:
                pending = Marker(path, i + 1, marker["reason"].strip(), before_block=False)
            elif _ANY_MARKER.match(line):
                marks.append(Marker(path, i + 1, "", before_block=False))
        i += 1
    if pending is not None:
        marks.append(pending)
    return found, marks


def examples(path: Path) -> list[Example]:
    """Every fenced code block of the Markdown file ``path``, in order."""
    return _scan(path)[0]


def markers(path: Path) -> list[Marker]:
    """Every ``not-run`` marker of ``path`` (a malformed one has an empty reason)."""
    return _scan(path)[1]


def run_python(path: Path, address: str | None = None) -> int:
    """
    Run the runnable Python blocks of ``path`` in order, in one namespace; answers how many ran.

    A block with top-level ``await`` runs to completion on one asyncio event
    loop kept for the whole document (so a client made in one block works in
    the next); any other block runs as a plain script would, free to call
    ``asyncio.run`` or ``trio.run`` itself.
    """
    namespace: dict[str, object] = {"__name__": "__main__", "__file__": str(path)}
    loop = asyncio.new_event_loop()
    ran = 0
    try:
        for example in examples(path):
            if not example.runs or example.language not in PYTHON:
                continue
            code = example.code
            if address is not None:
                code = code.replace(ADDRESS, address)
            # Padded so that a traceback's line numbers are the Markdown file's.
            source = "\n" * (example.line - 1) + code
            compiled = compile(
                source, str(path), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
            )
            if compiled.co_flags & inspect.CO_COROUTINE:
                loop.run_until_complete(eval(compiled, namespace))
            else:
                exec(compiled, namespace)
            ran += 1
            print(f"ran {example.where}", file=sys.stderr, flush=True)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    return ran


if __name__ == "__main__":
    count = run_python(Path(sys.argv[1]), os.environ.get("RHETOR_DOCS_ADDRESS"))
    print(f"{count} python examples ran", flush=True)
