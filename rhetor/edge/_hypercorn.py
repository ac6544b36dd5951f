"""
Where Rhetor adjusts Hypercorn (0.18): five module-level names, replaced process-wide.

Importing ``rhetor.edge._server`` replaces all five; ``serve_runtime`` then
applies the operator's choice (``RHETOR_STOCK_HYPERCORN``) before it serves.

Hypercorn builds its per-connection objects from module-level names, and
these are the only changes Rhetor makes to it. The connection server's two
(:class:`QuickTCPServer`, :class:`QuickSingleTask`) are in
:mod:`rhetor.edge._hypercorn_tcp`. Each keeps what goes on the
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
- **A whole reply in one message** (:class:`WholeReplyStream`): an app that
  finds ``WHOLE_REPLY`` in ``scope["extensions"]`` may send its status,
  headers and body as one ASGI message; the stream and the protocol then
  build and write the head, body and end in one pass instead of three. It
  also puts a request's body, its end and its close in the app's queue
  without a checkpoint while the queue has room (a context switch each,
  three a request), and an app may take what is queued already without one
  (:func:`receive_nowait`).
- **The keep-alive timer** (:class:`QuickSingleTask`): Hypercorn restarts a
  connection's idle timer after every request with a lock and ``nursery.start``
  (the caller waits for the new task to begin), and cancels it when the next
  request arrives. Here one watcher task per connection sleeps in a cancel
  scope until ``keep_alive_timeout`` after the last restart or stop, so a
  request starts and cancels no task for it.
- **Writes and reads** (:class:`QuickTCPServer`): a write that the socket
  takes whole goes out at once, with no lock, scope or context switch, and
  a read is timed only when ``read_timeout`` is set.

Measured on a bare ASGI app (``docs/architecture.md``): about a quarter less
CPU a request at one connection, and about 1.45 times the requests per second
at 32 connections.

The last four are performance only: ``RHETOR_STOCK_HYPERCORN=1`` makes
``rhetor serve`` put Hypercorn's own classes back
(``adjust_hypercorn(performance=False)``), for an operator who suspects
them; the WebSocket fix stays.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import h11
import hypercorn.protocol
import hypercorn.protocol.h11
import hypercorn.protocol.ws_stream
import hypercorn.trio.run
import hypercorn.trio.tcp_server
import trio
import wsproto.connection
from hypercorn.events import Closed, RawData
from hypercorn.events import Event as HypercornEvent
from hypercorn.protocol.events import Body, EndBody, StreamClosed
from hypercorn.protocol.events import Event as StreamEvent
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.http_stream import ASGIHTTPState, HTTPStream
from hypercorn.typing import ASGISendEvent, H11SendableEvent
from hypercorn.utils import build_and_validate_headers, suppress_body
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection, Event

from rhetor.edge._hypercorn_tcp import QuickSingleTask, QuickTCPServer

__all__ = [
    "DISCONNECT_HOOK",
    "WHOLE_REPLY",
    "CoalescingH11Protocol",
    "QuickSingleTask",
    "QuickTCPServer",
    "RFC6455Connection",
    "WholeReplyStream",
    "adjust_hypercorn",
    "receive_nowait",
]

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


# The ASGI scope key under which CoalescingH11Protocol leaves a list for a
# request's app: callables it calls when the request's stream closes (the
# client left, or the reply is done), before the app is told
# ``http.disconnect``. An app that finds it needs no task of its own to
# watch ``receive()`` for the disconnect (``rhetor.edge._direct``).
DISCONNECT_HOOK = "rhetor.on_stream_closed"

# An ASGI extension (in ``scope["extensions"]``) and the message type it allows:
# ``{"type": WHOLE_REPLY, "status": int, "headers": [...], "body": bytes}``, a
# whole reply (its head, its body framed by the ``content-length`` it declares,
# its end) sent as one message instead of ``http.response.start`` and
# ``http.response.body``. Offered by :class:`WholeReplyStream` on
# :class:`CoalescingH11Protocol` only; an app that finds no extension sends the
# two messages.
WHOLE_REPLY = "rhetor.http.whole_reply"


@dataclass(frozen=True)
class _WholeResponse(StreamEvent):
    """A whole reply, from the stream to the protocol: head, body and end in one event."""

    status_code: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class WholeReplyStream(HTTPStream):
    """
    Hypercorn's HTTP stream, also taking a whole reply as one ASGI message (``WHOLE_REPLY``).

    What the two messages would do, with one pass through the stream and the
    protocol: the head's headers checked as Hypercorn checks them, the access
    log told, the stream closed. Any other message is Hypercorn's.
    """

    async def handle(self, event: StreamEvent) -> None:
        # A request's body, its end and its stream's close go to the app's queue
        # as Hypercorn puts them, but without a checkpoint when the queue has room
        # (a context switch each, three a request); a full queue is waited on.
        kind = type(event)
        if self.closed or kind not in _QUEUED:
            await super().handle(event)
            return
        if kind is Body:
            body: Any = event
            message: Any = {"type": "http.request", "body": bytes(body.data), "more_body": True}
        elif kind is EndBody:
            message = {"type": "http.request", "body": b"", "more_body": False}
        else:
            self.closed = True
            if self.state != ASGIHTTPState.CLOSED:
                # As Hypercorn's: no response to log (its logger takes None).
                log_access: Any = self.config.log.access
                await log_access(self.scope, None, time.time() - self.start_time)
            if getattr(self, "app_put", None) is None:
                return
            message = {"type": "http.disconnect"}
        put = self.app_put
        queue = getattr(put, "__self__", None)
        if type(queue) is trio.MemorySendChannel:
            try:
                queue.send_nowait(message)
                return
            except trio.WouldBlock:
                pass
        await put(message)

    async def app_send(self, message: ASGISendEvent | None) -> None:
        if message is None or message["type"] != WHOLE_REPLY:
            await super().app_send(message)
            return
        if self.closed:  # the client left: nobody to send it to
            return
        if self.state != ASGIHTTPState.REQUEST:  # a reply already started: the app's bug
            await super().app_send(message)  # Hypercorn's UnexpectedMessageError
            return
        whole: Any = message
        status = int(whole["status"])
        headers = build_and_validate_headers(whole["headers"])
        self.response = {"type": "http.response.start", "status": status, "headers": headers}
        body = b"" if suppress_body(self.scope["method"], status) else bytes(whole["body"])
        await self.send(
            _WholeResponse(stream_id=self.stream_id, status_code=status, headers=headers, body=body)
        )
        self.state = ASGIHTTPState.CLOSED
        await self.config.log.access(self.scope, self.response, time.time() - self.start_time)
        await self.send(StreamClosed(stream_id=self.stream_id))


# What receive_nowait raises when no event can be taken at once: wait with receive().
NOT_QUEUED = (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError)


def receive_nowait(receive: Any) -> Any:
    """
    The next ASGI event already queued for the app, taken without a checkpoint.

    ``receive`` is Hypercorn's own (a trio channel's ``receive``), or a
    wrapper with a ``nowait`` method that does this for the callable it wraps.

    Error handling: one of ``NOT_QUEUED`` when nothing is queued, or when
    ``receive`` is neither (another server, HTTP/2's queue): the caller then
    awaits ``receive()`` as usual.
    """
    nowait = getattr(receive, "nowait", None)
    if nowait is not None:
        return nowait()
    channel = getattr(receive, "__self__", None)
    if type(channel) is not trio.MemoryReceiveChannel:
        raise trio.WouldBlock
    return channel.receive_nowait()


# The stream events WholeReplyStream.handle queues for the app itself.
_QUEUED = (Body, EndBody, StreamClosed)


# The server's own headers of the current second (its date changes once a second):
# the config they were made for, the second, the headers.
_SERVER_HEADERS: list[Any] = [None, -1, []]


def _server_headers(config: Any) -> list[tuple[bytes, bytes]]:
    """``config.response_headers("h11")`` (date, server, alt-svc), made once a second."""
    now = int(time.time())
    cached = _SERVER_HEADERS
    if cached[0] is not config or cached[1] != now:
        cached[:] = [config, now, config.response_headers("h11")]
    headers: list[tuple[bytes, bytes]] = cached[2]
    return headers


class CoalescingH11Protocol(H11Protocol):
    """
    Hypercorn's HTTP/1.1 protocol, writing a whole reply's head and body in one write.

    Invariant: ``_pending`` holds at most one reply's head, and only between
    that head and the reply's first body bytes, its end or its stream's close.
    """

    _pending: bytes = b""
    # Told once the connection has closed (the idle timer's watcher, which then ends).
    on_closed: Callable[[], None] | None = None

    async def handle(self, event: HypercornEvent) -> None:
        await super().handle(event)
        if isinstance(event, Closed) and self.on_closed is not None:
            self.on_closed()

    async def _create_stream(self, request: h11.Request) -> None:
        await super()._create_stream(request)
        stream = self.stream
        stream_scope = getattr(stream, "scope", None)
        if isinstance(stream, HTTPStream) and isinstance(stream_scope, dict):
            # The app has not run yet: it finds the list in its scope (see DISCONNECT_HOOK).
            stream_scope[DISCONNECT_HOOK] = []
            if isinstance(stream, WholeReplyStream):
                stream_scope["extensions"][WHOLE_REPLY] = {}

    async def _close_stream(self) -> None:
        stream_scope = getattr(self.stream, "scope", None)
        if isinstance(stream_scope, dict):
            for callback in stream_scope.get(DISCONNECT_HOOK, ()):
                callback()
        await super()._close_stream()

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
        if type(event) is _WholeResponse:
            await self._send_whole(event)
            return
        if isinstance(event, StreamClosed) and self._pending:
            # A head whose body never came (the app failed after starting it).
            data, self._pending = self._pending, b""
            await self.send(RawData(data=data))
        await super().stream_send(event)

    async def _send_whole(self, event: _WholeResponse) -> None:
        """Hypercorn's head (its date and server headers, its close), body and end: one write."""
        headers = [*event.headers, *_server_headers(self.config)]
        if self.keep_alive_requests >= self.config.keep_alive_max_requests:
            headers.append((b"connection", b"close"))
        connection = self.connection
        try:
            data = connection.send(h11.Response(status_code=event.status_code, headers=headers))
            if event.body:
                data += connection.send(h11.Data(data=event.body)) or b""
            data += connection.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:
            # As Hypercorn's own: nothing is sent once the client broke the protocol.
            if connection.their_state != h11.ERROR:
                raise
            return
        await self.send(RawData(data=self._pending + (data or b"")))
        self._pending = b""


# Hypercorn's own classes for the four performance adjustments, as imported.
_STOCK: dict[tuple[Any, str], Any] = {
    (module, name): getattr(module, name)
    for module, name in (
        (hypercorn.protocol, "H11Protocol"),
        (hypercorn.protocol.h11, "HTTPStream"),
        (hypercorn.trio.tcp_server, "TrioSingleTask"),
        (hypercorn.trio.run, "TCPServer"),
    )
    if hasattr(module, name)
}


def adjust_hypercorn(*, performance: bool = True) -> None:
    """
    Replace the five names in Hypercorn's modules (idempotent).

    With ``performance`` False, the four performance adjustments are undone
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
        (hypercorn.protocol.h11, "HTTPStream", WholeReplyStream),
        (hypercorn.trio.tcp_server, "TrioSingleTask", QuickSingleTask),
        (hypercorn.trio.run, "TCPServer", QuickTCPServer),
    ):
        if not hasattr(module, name):
            log.warning("Hypercorn has no %s.%s: not adjusted", module.__name__, name)
            continue
        if not performance and (module, name) in _STOCK:
            replacement = _STOCK[(module, name)]
        setattr(module, name, replacement)
