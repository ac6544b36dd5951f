"""Tests for serving (rhetor/edge/_server.py): port 0, graceful shutdown, signals, Hermes."""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import hypercorn.protocol
import hypercorn.protocol.h11
import hypercorn.protocol.ws_stream
import hypercorn.trio.tcp_server
import pytest
import trio
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.http_stream import HTTPStream
from hypercorn.trio.worker_context import TrioSingleTask
from trio_websocket import ConnectionClosed, open_websocket_url

from rhetor._errors import ValidationError
from rhetor._settings import Settings
from rhetor.edge._hypercorn import (
    CoalescingH11Protocol,
    QuickSingleTask,
    RFC6455Connection,
    WholeReplyStream,
    adjust_hypercorn,
)
from rhetor.edge._server import YOUNG_COLLECTION_THRESHOLD, serve
from tests.helpers import settings_for, simulated_backends

REPO = Path(__file__).resolve().parent.parent


async def start_serving(
    nursery: trio.Nursery, settings: Settings, stop: trio.Event, **options: Any
) -> int:
    """serve() on the simulated provider, without signal handling, until ``stop`` is set."""
    port: int = await nursery.start(
        partial(
            serve,
            settings,
            handle_signals=False,
            shutdown_trigger=stop.wait,
            backends=simulated_backends(settings),
            **options,
        )
    )
    return port


async def test_serve_reports_the_bound_port_and_stops_on_its_trigger(tmp_path: Path) -> None:
    """serve() on port 0 reports the real port, serves, and returns when triggered."""
    settings = settings_for(tmp_path)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        port = await start_serving(nursery, settings, stop)
        assert port > 0
        async with httpx.AsyncClient(verify=False) as client:
            health = await client.get(f"http://127.0.0.1:{port}/health")
        stop.set()
    assert health.json()["status"] == "healthy"
    assert (tmp_path / "data" / "ledger.db").exists()


async def test_stock_hypercorn_serves_on_hypercorns_own_classes_and_keeps_the_websocket_fix(
    tmp_path: Path,
) -> None:
    """RHETOR_STOCK_HYPERCORN=1 undoes the performance adjustments, process-wide; replies are the same."""
    settings = settings_for(tmp_path, stock_hypercorn=True)
    stop = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            port = await start_serving(nursery, settings, stop)
            assert hypercorn.protocol.H11Protocol is H11Protocol
            assert hypercorn.trio.tcp_server.TrioSingleTask is TrioSingleTask
            assert hypercorn.protocol.h11.HTTPStream is HTTPStream
            assert hypercorn.protocol.ws_stream.Connection is RFC6455Connection
            async with httpx.AsyncClient() as client:
                health = await client.get(f"http://127.0.0.1:{port}/health")
                reply = await client.post(
                    f"http://127.0.0.1:{port}/message", json={"message": "hi"}
                )
            stop.set()
    finally:
        adjust_hypercorn()
    assert health.json()["status"] == "healthy"
    assert reply.status_code == 200
    assert reply.json()["message"]
    assert hypercorn.protocol.H11Protocol is CoalescingH11Protocol
    assert hypercorn.trio.tcp_server.TrioSingleTask is QuickSingleTask
    assert hypercorn.protocol.h11.HTTPStream is WholeReplyStream


async def test_serve_applies_the_adjustments_again_after_a_stock_server(tmp_path: Path) -> None:
    """The default (no RHETOR_STOCK_HYPERCORN) puts Rhetor's classes back, whatever ran before."""
    adjust_hypercorn(performance=False)
    stop = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            await start_serving(nursery, settings_for(tmp_path), stop)
            assert hypercorn.protocol.H11Protocol is CoalescingH11Protocol
            assert hypercorn.trio.tcp_server.TrioSingleTask is QuickSingleTask
            assert hypercorn.protocol.h11.HTTPStream is WholeReplyStream
            stop.set()
    finally:
        adjust_hypercorn()


def test_the_stock_hypercorn_flag_is_read_from_the_environment() -> None:
    assert Settings.from_env({"RHETOR_STOCK_HYPERCORN": "1"}).stock_hypercorn is True
    assert Settings.from_env({}).stock_hypercorn is False
    with pytest.raises(ValidationError, match="RHETOR_STOCK_HYPERCORN"):
        Settings.from_env({"RHETOR_STOCK_HYPERCORN": "maybe"})


async def test_serve_with_freeze_heap_freezes_start_up_and_collects_young_objects_less_often(
    tmp_path: Path,
) -> None:
    """
    freeze_heap (what the CLI sets) freezes what start-up allocated, before serving, and
    raises the young generation's threshold; the older generations' stay CPython's.
    """
    settings = settings_for(tmp_path)
    stop = trio.Event()
    assert gc.get_freeze_count() == 0
    before = gc.get_threshold()
    try:
        async with trio.open_nursery() as nursery:
            port = await start_serving(nursery, settings, stop, freeze_heap=True)
            frozen, threshold = gc.get_freeze_count(), gc.get_threshold()
            async with httpx.AsyncClient(verify=False) as client:
                reply = await client.post(
                    f"http://127.0.0.1:{port}/message", json={"message": "hi"}
                )
            stop.set()
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
    assert frozen > 10_000
    assert threshold == (YOUNG_COLLECTION_THRESHOLD, *before[1:])
    assert 10 * before[0] < YOUNG_COLLECTION_THRESHOLD
    assert reply.status_code == 200


async def test_serving_without_freeze_heap_leaves_the_collector_as_it_was(
    tmp_path: Path,
) -> None:
    """An embedder's process keeps its own collector settings: no freeze, no new threshold."""
    settings = settings_for(tmp_path)
    stop = trio.Event()
    before = gc.get_threshold()
    async with trio.open_nursery() as nursery:
        await start_serving(nursery, settings, stop)
        frozen, threshold = gc.get_freeze_count(), gc.get_threshold()
        stop.set()
    assert (frozen, threshold) == (0, before)


async def test_graceful_shutdown_lets_an_in_flight_stream_finish(tmp_path: Path) -> None:
    """After the shutdown trigger, a stream already running still ends with its done event."""
    settings = settings_for(tmp_path, simulated_chunk_delay=0.01, shutdown_grace=5.0)
    stop = trio.Event()
    lines: list[str] = []
    async with trio.open_nursery() as nursery:
        port = await start_serving(nursery, settings, stop)
        body = {"message": " ".join(["word"] * 15)}
        async with (
            httpx.AsyncClient(verify=False) as client,
            client.stream("POST", f"http://127.0.0.1:{port}/stream", json=body) as response,
        ):
            async for line in response.aiter_lines():
                if line:
                    lines.append(line)
                    stop.set()
    assert json.loads(lines[-1][6:])["done"] is True
    assert len(lines) > 10


# trio-websocket's client leaves its socket to the garbage collector when the
# server closes first; that ResourceWarning is the client's (raddr is the server).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_graceful_shutdown_closes_websockets_going_away(tmp_path: Path) -> None:
    """Open WebSockets are closed with 1001 at shutdown instead of holding it up."""
    settings = settings_for(tmp_path, shutdown_grace=5.0)
    stop = trio.Event()
    with trio.fail_after(3):
        async with trio.open_nursery() as nursery:
            port = await start_serving(nursery, settings, stop)
            async with open_websocket_url(f"ws://127.0.0.1:{port}/ws") as ws:
                stop.set()
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()
    code = closed.value.reason.code
    del closed, ws  # they hold the client's leaked socket
    gc.collect()  # so that it warns here, where the warning is ignored
    assert code == 1001


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class FakeHermes:
    """
    A tiny HTTP/1.1 server that records each request's path and JSON body.

    A request to a path in ``slow_paths`` is recorded at once but answered only
    when Rhetor goes away (its answer is still on the way at shutdown).
    """

    def __init__(self, slow_paths: frozenset[str] = frozenset()) -> None:
        self.requests: list[tuple[str, Any]] = []
        self.port = 0
        self.slow_paths = slow_paths

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                data += await stream.receive_some()
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            length = next(
                (int(h.split(":")[1]) for h in lines if h.lower().startswith("content-length")), 0
            )
            while len(body) < length:
                body += await stream.receive_some()
            path = lines[0].split()[1]
            self.requests.append((path, json.loads(body or b"null")))
            if path in self.slow_paths:
                with trio.move_on_after(10):
                    await stream.receive_some()  # b"" once the client closes
                return
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}"
            )


async def test_serve_registers_with_hermes_and_deregisters_at_shutdown(tmp_path: Path) -> None:
    """With hermes_url set, serve() registers the seeds' payload and deregisters on stop."""
    hermes = FakeHermes()
    async with trio.open_nursery() as outer:
        await outer.start(hermes.serve)
        settings = settings_for(tmp_path, hermes_url=f"http://127.0.0.1:{hermes.port}")
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            port = await start_serving(nursery, settings, stop)
            with trio.fail_after(2):
                while not hermes.requests:
                    await trio.sleep(0.01)
            stop.set()
        outer.cancel_scope.cancel()
    (path, payload), (gone, goodbye) = hermes.requests
    assert path == "/api/register" and gone == "/api/unregister"
    assert payload["id"] == "rhetor" and payload["name"] == "Rhetor"
    assert payload["endpoints"] == {
        "http": f"http://127.0.0.1:{port}",
        "ws": f"ws://127.0.0.1:{port}/ws",
    }
    assert "llm_management" in payload["capabilities"]
    assert goodbye["component_id"] == "rhetor"


async def test_shutdown_while_hermes_has_not_answered_the_registration_still_deregisters(
    tmp_path: Path,
) -> None:
    """A registration Hermes received but had not answered when serve() stopped is undone."""
    hermes = FakeHermes(slow_paths=frozenset({"/api/register"}))
    with trio.fail_after(10):
        async with trio.open_nursery() as outer:
            await outer.start(hermes.serve)
            settings = settings_for(tmp_path, hermes_url=f"http://127.0.0.1:{hermes.port}")
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                await start_serving(nursery, settings, stop)
                while not hermes.requests:
                    await trio.sleep(0.01)
                stop.set()
            outer.cancel_scope.cancel()
    assert [path for path, _ in hermes.requests] == ["/api/register", "/api/unregister"]


async def test_absent_hermes_costs_one_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A Hermes that is not there never fails the start; it logs one warning."""
    settings = settings_for(tmp_path, hermes_url=f"http://127.0.0.1:{_free_port()}")
    stop = trio.Event()
    with caplog.at_level(logging.WARNING, logger="rhetor.hermes"):
        async with trio.open_nursery() as nursery:
            port = await start_serving(nursery, settings, stop)
            async with httpx.AsyncClient(verify=False) as client:
                health = await client.get(f"http://127.0.0.1:{port}/health")
            await trio.sleep(0.05)
            stop.set()
    assert health.status_code == 200
    warnings = [r for r in caplog.records if r.name == "rhetor.hermes"]
    assert len(warnings) == 1 and "unavailable" in warnings[0].getMessage()


@pytest.mark.parametrize(
    ("host", "api_key", "warned"),
    [("0.0.0.0", None, True), ("0.0.0.0", "k", False), ("127.0.0.1", None, False)],
)
async def test_serving_every_interface_without_an_api_key_warns_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, host: str, api_key: str | None, warned: bool
) -> None:
    """Binding 0.0.0.0 with no RHETOR_API_KEY logs a loud warning; loopback or a key does not."""
    settings = settings_for(tmp_path, host=host, api_key=api_key)
    stop = trio.Event()
    with caplog.at_level(logging.WARNING, logger="rhetor.server"):
        async with trio.open_nursery() as nursery:
            await start_serving(nursery, settings, stop)
            stop.set()
    warnings = [r.getMessage() for r in caplog.records if r.name == "rhetor.server"]
    assert bool(warnings) is warned
    if warned:
        assert "WITH NO API KEY" in warnings[0] and "RHETOR_API_KEY" in warnings[0]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_python_m_rhetor_exits_0_after_a_signal(tmp_path: Path, signum: int) -> None:
    """
    ``python -m rhetor serve`` on port 0 binds loopback by default, prints its URL
    and exits 0 on SIGTERM or SIGINT.
    """
    env = {
        **os.environ,
        "RHETOR_PORT": "0",
        "RHETOR_DATA_DIR": str(tmp_path / "data"),
        "HERMES_API_URL": "",
        "OLLAMA_BASE_URL": f"http://127.0.0.1:{_free_port()}",
        "PYTHONPATH": str(REPO),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "rhetor", "serve"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("Rhetor serving on http://127.0.0.1:"), line
        url = line.split()[-1]
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200
        httpx.post(f"{url}/message", json={"message": "bill me"}, timeout=5)
        process.send_signal(signum)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
    assert (tmp_path / "data" / "ledger.db").exists()
