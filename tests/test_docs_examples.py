"""
Every code example in README.md and docs/*.md runs as written, against a live Rhetor.

One server (simulated provider, no API key, data in a temporary directory)
serves the module on an ephemeral port; ``localhost:8300`` in an example
becomes its address, and the clients' defaults (``RHETOR_HOST``,
``RHETOR_PORT``) point at it. Every Markdown file is picked up, so a new doc's
examples are run without touching this module.

- **Python** (`python` blocks): each document's blocks run in order in one
  namespace, as one session of ``python -m asyncio`` would run them
  (``tests/doc_examples.py``): top-level ``await`` works, and a later block
  may use what an earlier one made. One subprocess per document, in a
  temporary directory, with no provider keys in its environment.
- **Shell** (`bash`, `sh`, `shell` blocks): each block runs in ``bash`` with
  ``set -euo pipefail``, ``curl`` failing on an HTTP error status.
- **Not run**: a block whose opening fence follows the line
  ``<!-- not-run: reason -->`` (a command that serves on port 8300 until
  stopped, installs something, or changes the checkout). Each reason must say
  why; a marker that precedes no runnable block fails the test below.

Blocks in other languages (``json`` answers, plain-text trees, ``js``) are not
run here; the JavaScript client's tests run the ``js`` ones of its docs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.doc_examples import ADDRESS, PYTHON, SHELL, Example, examples, markers
from tests.helpers import ServerInfo, settings_for
from tests.server_thread import ServerThread

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Secrets and addresses of real providers that must not leak into an example's run.
_UNSET = (
    "RHETOR_API_KEY",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "RHETOR_TASK_CONFIG",
    "RHETOR_PRICE_OVERRIDES",
)
# curl as the shell examples run it: an HTTP error status fails the example.
_SHELL_PRELUDE = """set -euo pipefail
curl() { command curl --fail-with-body --show-error --max-time 30 "$@"; }
"""
_TIMEOUT = 120


def _runnable(languages: frozenset[str]) -> list[Example]:
    return [e for doc in DOCS for e in examples(doc) if e.runs and e.language in languages]


PYTHON_DOCS = sorted({e.path for e in _runnable(PYTHON)})
SHELL_EXAMPLES = _runnable(SHELL)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerInfo]:
    """One Rhetor on the simulated provider for every example of the module."""
    with ServerThread(settings_for(tmp_path_factory.mktemp("docs-server"))) as info:
        yield info


def _environment(server: ServerInfo, workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _UNSET}
    env.update(
        RHETOR_HOST="127.0.0.1",
        RHETOR_PORT=str(server.port),
        RHETOR_DOCS_ADDRESS=f"127.0.0.1:{server.port}",
        # The embedded examples (rhetor.runtime.start()) keep their data here, with no
        # Hermes to register with and an Ollama that refuses at once.
        RHETOR_DATA_DIR=str(workdir / "data"),
        HERMES_API_URL="",
        OLLAMA_BASE_URL="http://127.0.0.1:1",
        PYTHONPATH=str(ROOT),
        # `rhetor` and `python` are this venv's, as after the README's install.
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
    )
    return env


def test_the_docs_have_examples_to_run() -> None:
    """README.md and docs/*.md are read and their Python and shell examples found."""
    assert ROOT / "docs" / "api.md" in DOCS
    assert len([e for e in examples(ROOT / "README.md") if e.language in PYTHON]) >= 2
    assert len(_runnable(PYTHON)) >= 20
    assert any("curl" in e.code for e in SHELL_EXAMPLES)


def test_blocks_and_markers_are_read_as_markdown_writes_them(tmp_path: Path) -> None:
    """Fences with ``` or ~~~, indented in a list, and markers with or without a block are read right."""
    doc = tmp_path / "sample.md"
    doc.write_text(
        "Intro\n\n```python\nprint(1)\n```\n\n"
        "<!-- not-run: serves forever -->\n\n```bash\n./serve\n```\n\n"
        "- a list item:\n\n  ~~~sh\n  curl localhost:8300/health\n  ~~~\n\n"
        "<!-- not-run: stray -->\nSome text.\n\n```json\n{}\n```\n"
        "<!-- not-run -->\n```\nplain\n```\n",
        encoding="utf-8",
    )
    found = examples(doc)
    assert [(e.line, e.language, e.code, e.not_run) for e in found] == [
        (4, "python", "print(1)\n", None),
        (10, "bash", "./serve\n", "serves forever"),
        (16, "sh", "curl localhost:8300/health\n", None),
        (23, "json", "{}\n", None),
        (27, "", "plain\n", None),
    ]
    assert [e.runs for e in found] == [True, False, True, False, False]
    assert [(m.line, m.reason, m.before_block) for m in markers(doc)] == [
        (7, "serves forever", True),
        (19, "stray", False),
        (25, "", False),
    ]


def test_not_run_markers_sit_right_before_a_runnable_block_and_say_why() -> None:
    """Each not-run marker has a reason and comes just before a Python or shell block."""
    found = [m for doc in DOCS for m in markers(doc)]
    for marker in found:
        where = f"{marker.path.name}:{marker.line}"
        assert marker.reason, f"{where}: write it as <!-- not-run: the reason -->"
        assert marker.before_block, f"{where}: a not-run marker must come right before a block"
    for doc in DOCS:
        for example in examples(doc):
            if example.not_run is not None:
                assert example.language in PYTHON | SHELL, (
                    f"{example.where}: only Python and shell blocks are run, so a "
                    f"{example.language or 'plain'} block needs no marker"
                )


@pytest.mark.slow
@pytest.mark.parametrize("doc", PYTHON_DOCS, ids=[d.name for d in PYTHON_DOCS])
def test_python_examples_run_as_written(server: ServerInfo, doc: Path, tmp_path: Path) -> None:
    """Every Python block of the document runs, in order, without an error."""
    expected = len([e for e in examples(doc) if e.runs and e.language in PYTHON])
    done = subprocess.run(
        [sys.executable, "-m", "tests.doc_examples", str(doc)],
        cwd=tmp_path,
        env=_environment(server, tmp_path),
        capture_output=True,
        text=True,
        timeout=_TIMEOUT,
        check=False,
    )
    report = f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-8000:]}"
    assert done.returncode == 0, report
    assert f"{expected} python examples ran" in done.stdout, report


@pytest.mark.slow
@pytest.mark.parametrize("example", SHELL_EXAMPLES, ids=[e.where for e in SHELL_EXAMPLES])
def test_shell_examples_run_as_written(
    server: ServerInfo, example: Example, tmp_path: Path
) -> None:
    """The shell block runs in bash and exits 0; its HTTP calls get no error status."""
    code = example.code.replace(ADDRESS, f"127.0.0.1:{server.port}")
    done = subprocess.run(
        ["bash", "-c", _SHELL_PRELUDE + code],
        cwd=tmp_path,
        env=_environment(server, tmp_path),
        capture_output=True,
        text=True,
        timeout=_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
