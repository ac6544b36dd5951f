"""
Where Rhetor adjusts Hypercorn (0.18): three module-level names, replaced process-wide.

Importing ``rhetor.edge._server`` replaces all three; ``serve_runtime`` then
applies the operator's choice (``RHETOR_STOCK_HYPERCORN``) before it serves.

Hypercorn builds its per-connection objects from module-level names, and
these are the only changes Rhetor makes to it. Each keeps what goes on the
wire; ``tests/test_edge_hypercorn.py`` checks them over real sockets.

- **WebSocket protocol errors** (:class:`RFC6455Connection`): a client that
  breaks the protocol gets a close frame with the code RFC 6455 asks for,
  instead of a dropped connection.
- **One write per whole reply** (:class:`CoalescingH11Protocol`): Hypercorn
  writes a reply's head, its body and its end (nothing, for a body framed by
  ``content-length``) separately, each under the connection's send lock and a
  shielded scope. A head that declares ``content-length`` now waits for the
  body and goes with it, and an empty write is skipped. A head without it (a
  stream: server-sent events, chunked) is still written at once, so a
  stream's client sees its head before the first event.
- **The keep-alive timer** (:class:`QuickSingleTask`): Hypercorn restarts a
  connection's idle timer after every request with a lock and ``nursery.start``
  (the caller waits for the new task to begin). Here the old timer is
  cancelled and the new one spawned without waiting; its cancel scope exists
  before the task does, so a stop that comes first still stops it.

Measured on a bare ASGI app (``docs/architecture.md``): about a quarter less
CPU a request at one connection, and about 1.45 times the requests per second
at 32 connections.

The last two are performance only: ``RHETOR_STOCK_HYPERCORN=1`` makes
``rhetor serve`` put Hypercorn's own classes back
(``adjust_hypercorn(performance=False)``), for an operator who suspects
them; the WebSocket fix stays.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Generator
from typing import Any

import h11
import hypercorn.protocol
import hypercorn.protocol.ws_stream
import hypercorn.trio.tcp_server
import trio
import wsproto.connection
from hypercorn.events import RawData
from hypercorn.protocol.events import Event as StreamEvent
from hypercorn.protocol.events import StreamClosed
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.typing import H11SendableEvent, TaskGroup
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection, Event

__all__ = ["CoalescingH11Protocol", "QuickSingleTask", "RFC6455Connection", "adjust_hypercorn"]

log = logging.getLogger("rhetor.server")


class RFC6455Connection(wsproto.connection.Connection):
    """
    wsproto's server connection, answering a client's protocol error with a close frame.

    When a client breaks the protocol (invalid UTF-8 in a text frame, an
    unknown opcode, a bad close code, an unmasked frame), wsproto reports a
    ``CloseConnection`` with the code RFC 6455 asks for (1007 or 1002) but
    stays ``OPEN``, and Hypercorn (0.18) answers a close only in
    ``REMOTE_CLOSING``: it dropped the TCP connection without one. Moving to
    ``REMOTE_CLOSING`` here makes Hypercorn send the close frame with that
    code before it closes the connection.
    """

    def events(self) -> Generator[Event, None, None]:
        for event in super().events():
            if isinstance(event, CloseConnection) and self.state is ConnectionState.OPEN:
                self._state = ConnectionState.REMOTE_CLOSING
            yield event


class CoalescingH11Protocol(H11Protocol):
    """
    Hypercorn's HTTP/1.1 protocol, writing a whole reply's head and body in one write.

    Invariant: ``_pending`` holds at most one reply's head, and only between
    that head and the reply's first body bytes, its end or its stream's close.
    """

    _pending: bytes = b""

    async def _send_h11_event(self, event: H11SendableEvent) -> None:
        try:
            data = self.connection.send(event)
        except h11.LocalProtocolError:
            # As Hypercorn's own: nothing is sent once the client broke the protocol.
            if self.connection.their_state != h11.ERROR:
                raise
            return
        if type(event) is h11.Response and any(
            name == b"content-length" for name, _ in event.headers
        ):
            self._pending += data or b""
            return
        if self._pending:
            data, self._pending = self._pending + (data or b""), b""
        if data:
            await self.send(RawData(data=data))

    async def stream_send(self, event: StreamEvent) -> None:
        if isinstance(event, StreamClosed) and self._pending:
            # A head whose body never came (the app failed after starting it).
            data, self._pending = self._pending, b""
            await self.send(RawData(data=data))
        await super().stream_send(event)


async def _run_in(scope: trio.CancelScope, action: Callable[[], Awaitable[None]]) -> None:
    with scope:
        await action()


class QuickSingleTask:
    """
    Hypercorn's ``SingleTask`` for a connection's idle timer: restart without waiting.

    Needs no lock: neither method awaits, so in trio each runs whole.
    """

    def __init__(self) -> None:
        self._handle: trio.CancelScope | None = None

    async def restart(self, task_group: TaskGroup, action: Callable[[], Awaitable[None]]) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = scope = trio.CancelScope()
        nursery: Any = task_group._nursery  # type: ignore[attr-defined]
        nursery.start_soon(_run_in, scope, action)

    async def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = None


# Hypercorn's own classes for the two performance adjustments, as imported.
_STOCK: dict[tuple[Any, str], Any] = {
    (module, name): getattr(module, name)
    for module, name in (
        (hypercorn.protocol, "H11Protocol"),
        (hypercorn.trio.tcp_server, "TrioSingleTask"),
    )
    if hasattr(module, name)
}


def adjust_hypercorn(*, performance: bool = True) -> None:
    """
    Replace the three names in Hypercorn's modules (idempotent).

    With ``performance`` False, the two performance adjustments are undone
    (Hypercorn's own classes put back) and only the WebSocket fix is applied.
    It is process-wide: it acts on every Hypercorn server the process starts
    afterwards.

    Error handling: a name this Hypercorn no longer has is left alone and
    logged as a warning (``tests/test_edge_hypercorn.py`` then fails).
    """
    # Hypercorn builds each object from these module-level names: a WebSocket's
    # connection in Handshake.accept, a connection's HTTP/1.1 protocol in
    # ProtocolWrapper, a connection's idle timer in TCPServer.
    for module, name, replacement in (
        (hypercorn.protocol.ws_stream, "Connection", RFC6455Connection),
        (hypercorn.protocol, "H11Protocol", CoalescingH11Protocol),
        (hypercorn.trio.tcp_server, "TrioSingleTask", QuickSingleTask),
    ):
        if not hasattr(module, name):
            log.warning("Hypercorn has no %s.%s: not adjusted", module.__name__, name)
            continue
        if not performance and (module, name) in _STOCK:
            replacement = _STOCK[(module, name)]
        setattr(module, name, replacement)
