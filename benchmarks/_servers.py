"""
What the benchmarks share to run their servers: a subprocess started and its URL, a stop, a free port.

Every server a benchmark starts (Rhetor, a baseline app, an upstream) prints
one line ending in its URL once it serves; :func:`started` waits for that
line, and :func:`stop` ends the process (SIGTERM, then SIGKILL after a grace).
"""

from __future__ import annotations

import signal
import socket
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

__all__ = ["REPO", "free_port", "started", "stop"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def started(
    args: list[str],
    env: Mapping[str, str],
    *,
    cwd: str | None = None,
    stderr: Any = subprocess.DEVNULL,
    preexec_fn: Callable[[], Any] | None = None,
    code: Path = REPO,
) -> tuple[subprocess.Popen[str], str]:
    """
    Start ``args`` with ``code`` (this checkout) on ``PYTHONPATH``; answer the process and its URL.

    Error handling: a first line that does not say it serves kills the process
    and ends the benchmark with that line.
    """
    proc = subprocess.Popen(
        args,
        cwd=cwd,
        env={**env, "PYTHONPATH": str(code)},
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        preexec_fn=preexec_fn,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "serving" not in line:
        proc.kill()
        raise SystemExit(f"{args} did not start: {line!r}")
    return proc, line.split()[-1]


def stop(proc: subprocess.Popen[str], grace: float = 15) -> None:
    """SIGTERM, then SIGKILL if ``proc`` has not ended within ``grace`` seconds."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
