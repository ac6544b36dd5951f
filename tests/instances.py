"""
Real Rhetor processes for the scaling tests: ``python -m rhetor serve`` on ephemeral ports, one database.

:func:`instances` starts several at once (each prints ``Rhetor serving on
URL`` when it is ready) and stops them at the end of the block: SIGTERM,
then SIGKILL for any that does not stop in time. Each process's stderr goes
to ``<log_dir>/<name>.log``, so a failing test can show what a server said.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs
import h11
import trio

__all__ = ["Instance", "instance_env", "instances", "post", "start", "stop"]

ROOT = Path(__file__).resolve().parent.parent
_START_TIMEOUT = 60.0


@attrs.define(eq=False)
class Instance:
    """One ``rhetor serve`` process: its process, its URL, and where its log goes."""

    name: str
    process: subprocess.Popen[str]
    url: str
    log: Path

    def kill(self) -> None:
        """kill -9, and wait for it to be gone."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def logged(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def instance_env(database_url: str, **variables: str) -> dict[str, str]:
    """The environment of a test instance: no provider keys or Rhetor settings of the caller's."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RHETOR_", "OPENAI_", "ANTHROPIC_", "OLLAMA_", "PROMETHEUS_"))
    }
    env.update(
        RHETOR_PORT="0",
        RHETOR_HOST_BIND="127.0.0.1",
        RHETOR_DATABASE_URL=database_url,
        RHETOR_SIMULATED="never",
        RHETOR_SHUTDOWN_GRACE="2",
        HERMES_API_URL="",
        OLLAMA_BASE_URL="http://127.0.0.1:9",
        PYTHONPATH=str(ROOT),
    )
    env.update(variables)
    return env


def _spawn(
    name: str, env: Mapping[str, str], log_dir: Path, args: Sequence[str]
) -> tuple[subprocess.Popen[str], Path]:
    log = log_dir / f"{name}.log"
    with log.open("a") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "rhetor", "serve", *args],
            cwd=log_dir,
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    return process, log


async def _ready(name: str, process: subprocess.Popen[str], log: Path) -> str:
    assert process.stdout is not None
    line = await trio.to_thread.run_sync(process.stdout.readline)
    if "serving on" not in line:
        process.kill()
        process.wait()
        said = await trio.to_thread.run_sync(lambda: log.read_text(errors="replace"))
        raise AssertionError(f"{name} did not start: {line!r}\n{said}")
    return line.split()[-1]


async def start(
    names: Sequence[str], env: Mapping[str, str], log_dir: Path, args: Sequence[str] = ()
) -> list[Instance]:
    """Start one process per name at once; answers them once every one serves."""
    spawned = [(name, *_spawn(name, env, log_dir, args)) for name in names]
    urls: dict[str, str] = {}

    async def wait(name: str, process: subprocess.Popen[str], log: Path) -> None:
        urls[name] = await _ready(name, process, log)

    try:
        with trio.fail_after(_START_TIMEOUT):
            async with trio.open_nursery() as nursery:
                for item in spawned:
                    nursery.start_soon(wait, *item)
    except BaseException:
        for _, process, _ in spawned:
            process.kill()
            process.wait()
        raise
    return [Instance(name, process, urls[name], log) for name, process, log in spawned]


def stop(instance: Instance, timeout: float = 15.0) -> int:
    """SIGTERM, then SIGKILL past ``timeout``; answers the exit status."""
    process = instance.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()
    return process.returncode


@asynccontextmanager
async def instances(
    count: int, env: Mapping[str, str], log_dir: Path, args: Sequence[str] = ()
) -> AsyncIterator[list[Instance]]:
    """``count`` instances for the block, stopped (and reaped) at its end."""
    started = await start([f"rhetor-{i}" for i in range(count)], env, log_dir, args)
    try:
        yield started
    finally:
        await trio.to_thread.run_sync(lambda: [stop(i) for i in started])


async def post(url: str, path: str, body: Any, timeout: float = 60.0) -> tuple[int, Any]:
    """
    POST ``body`` as JSON to ``url + path`` on a connection of its own; answers the status and JSON.

    A bare h11 client: a thousand of these at once cost the test process a
    fraction of what as many httpx requests do, so the servers, not the load
    generator, are what a burst measures. Error handling: ``OSError`` (and
    trio's stream errors) when the server is gone; ``TooSlowError`` past ``timeout``.
    """
    parts = urlsplit(url)
    data = json.dumps(body).encode()
    conn = h11.Connection(h11.CLIENT)
    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream(parts.hostname or "127.0.0.1", parts.port or 80)
        async with stream:
            request = h11.Request(
                method="POST",
                target=path,
                headers=[
                    ("Host", parts.netloc),
                    ("Content-Type", "application/json"),
                    ("Content-Length", str(len(data))),
                    ("Connection", "close"),
                ],
            )
            await stream.send_all(conn.send(request) + conn.send(h11.Data(data=data)))
            await stream.send_all(conn.send(h11.EndOfMessage()))
            status, chunks = 0, []
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    chunks.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
    return status, json.loads(b"".join(chunks))
