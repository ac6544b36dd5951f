"""
Helpers for tests that talk to a real Rhetor server over real sockets.

``running_server()`` starts the whole server (actor runtime plus Hypercorn)
on 127.0.0.1, port 0, inside the test's own trio run, and yields where to
reach it. ``settings_for()`` gives settings that touch nothing outside
``tmp_path``. Both are shared by every edge test; keep their signatures stable.

Real sockets and trio's MockClock do not mix (the clock would jump while the
kernel moves bytes), so tests using these run on the real clock.

Example::

    async def test_health(tmp_path):
        async with running_server(settings_for(tmp_path)) as server:
            async with httpx.AsyncClient(base_url=server.base_url) as client:
                assert (await client.get("/health")).status_code == 200
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio

import rhetor.runtime
from rhetor._settings import Settings
from rhetor.edge._server import serve_runtime
from rhetor.routing._plan import TaskConfig

__all__ = ["ServerInfo", "running_server", "settings_for", "simulated_backends"]


@attrs.frozen
class ServerInfo:
    """Where a running test server listens, and its in-process runtime handle."""

    base_url: str
    ws_url: str
    port: int
    runtime: rhetor.runtime.Runtime
    settings: Settings


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    """
    Settings for a test server: loopback, port 0, data under ``tmp_path``, no Hermes.

    Defaults: simulated provider "auto", budget policy "warn", no limits, no
    API key, a 1 s shutdown grace. ``overrides`` replace any field.
    """
    fields: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "data_dir": tmp_path / "data",
        "hermes_url": None,
        "simulated": "auto",
        "budget_policy": "warn",
        "shutdown_grace": 1.0,
    }
    fields.update(overrides)
    return Settings(**fields)


def simulated_backends(settings: Settings) -> Mapping[str, rhetor.runtime.BackendFactory]:
    """Only the simulated provider: no keys, no network, deterministic replies."""
    config = TaskConfig.load(settings.task_config)
    return {"simulated": rhetor.runtime.default_backends(settings, config)["simulated"]}


@asynccontextmanager
async def running_server(
    settings: Settings | None = None, **runtime_kwargs: Any
) -> AsyncIterator[ServerInfo]:
    """
    Run the real server for the duration of the block; yield a :class:`ServerInfo`.

    ``runtime_kwargs`` go to :func:`rhetor.runtime.start`; ``backends``
    defaults to :func:`simulated_backends`. Leaving the block stops the
    server at once (no grace) and then the runtime, which flushes the ledger.
    """
    if settings is None:
        settings = settings_for(Path(tempfile.mkdtemp(prefix="rhetor-test-")))
    runtime_kwargs.setdefault("backends", simulated_backends(settings))
    try:
        async with (
            rhetor.runtime.start(settings, **runtime_kwargs) as runtime,
            trio.open_nursery() as nursery,
        ):
            port = await nursery.start(
                partial(serve_runtime, runtime, settings, handle_signals=False)
            )
            try:
                yield ServerInfo(
                    base_url=f"http://127.0.0.1:{port}",
                    ws_url=f"ws://127.0.0.1:{port}/ws",
                    port=port,
                    runtime=runtime,
                    settings=settings,
                )
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The server's nurseries wrap what the test body raised; hand the test
        # its own exception back so ``pytest.raises`` works as expected.
        sole: BaseException = group
        while isinstance(sole, BaseExceptionGroup) and len(sole.exceptions) == 1:
            sole = sole.exceptions[0]
        if sole is group:
            raise
        raise sole from None
