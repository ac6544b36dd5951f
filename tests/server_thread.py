"""
A real Rhetor server in a background thread, for tests of the client.

The client must work under asyncio and under trio, so its tests are sync
functions that run the client with ``asyncio.run`` or ``trio.run``; the
server then cannot share their event loop. :class:`ServerThread` runs
``tests.helpers.running_server`` in its own ``trio.run`` on a daemon thread.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

import trio

from rhetor._settings import Settings
from tests.helpers import ServerInfo, running_server

__all__ = ["ServerThread"]

_START_TIMEOUT = 30.0


class ServerThread:
    """
    ``with ServerThread(settings) as info:`` serves on ``info.port`` until the block ends.
    """

    def __init__(self, settings: Settings, **runtime_kwargs: Any) -> None:
        self._settings = settings
        self._runtime_kwargs = runtime_kwargs
        self._ready = threading.Event()
        self._info: ServerInfo | None = None
        self._error: BaseException | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="rhetor-test-server", daemon=True)

    def _run(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:  # reported to the test thread, not lost in this one
            self._error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with running_server(self._settings, **self._runtime_kwargs) as info:
            self._info = info
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> ServerInfo:
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT):
            raise RuntimeError("the test server did not start")
        if self._info is None:
            raise RuntimeError("the test server failed to start") from self._error
        return self._info

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None and self._stop is not None and self._thread.is_alive():
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(_START_TIMEOUT)
        if self._error is not None:
            raise RuntimeError("the test server crashed") from self._error

    def call(self, fn: Any, *args: Any) -> Any:
        """Run ``await fn(*args)`` in the server's trio run (e.g. on its runtime); answer it."""
        assert self._token is not None
        return trio.from_thread.run(fn, *args, trio_token=self._token)
