"""
The WebSocket edge: ``/ws`` and the first Rhetor's ``/ws/rhetor/streaming``.

These sockets are served straight from ASGI, ahead of the Quart app (Quart's
per-connection request context, tasks and channels cost about 15 KB a
socket). A handshake passes the same checks as an HTTP request
(``rhetor.edge._checks``); each accepted socket is then one :class:`Session`
actor, fed frames by an inbound pump and read by an outbox pump. The
protocol itself lives in ``rhetor.edge._session``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import uuid
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import attrs
import msgspec
import trio
from werkzeug.datastructures import Headers, MultiDict

import actors
from rhetor._errors import Forbidden, RhetorError, ServiceUnavailable, Unauthorized
from rhetor._settings import Settings
from rhetor.edge._checks import authorized, check_host, check_origin, presented_key
from rhetor.edge._fields import parse_json
from rhetor.edge._json import dumps, encode
from rhetor.edge._observing import Observer, request_id_of
from rhetor.edge._schema import convert
from rhetor.edge._schemas_ws import LegacyChunk, LegacyError, LegacyRequest
from rhetor.edge._session import Frame, Inbound, Oversized, Refused, Session, error_frame

if TYPE_CHECKING:
    from rhetor.runtime import Runtime

__all__ = ["LEGACY_WS_PATH", "WS_PATH", "EdgeState", "serve_websocket"]

log = logging.getLogger("rhetor.edge")

WS_PATH = "/ws"
# The first Rhetor's streaming socket, kept for the clients written against it.
LEGACY_WS_PATH = "/ws/rhetor/streaming"
# Frames waiting for a slow client before the session's requests pause.
_OUTBOX_FRAMES = 64
# Seconds a new socket waits for its Session actor to start.
_SESSION_START_TIMEOUT = 5.0


@attrs.define(eq=False)
class EdgeState:
    """
    What the app's parts share: the runtime, settings, routes, and open WebSockets.

    The server reaches the WebSockets through it, to close them at shutdown.
    """

    runtime: Runtime
    settings: Settings
    # The Host names served (Settings.allowed_host_names); None: any.
    allowed_hosts: frozenset[str] | None = attrs.field(init=False)
    # Every route, as GET / lists it: set once by create_app, after every blueprint.
    endpoints: tuple[str, ...] = ()
    # Request ids, the access log, metrics and spans of this app's requests.
    observer: Observer = attrs.field(init=False)
    # Invariant: one scope per WebSocket handler between accept and close.
    _sockets: set[trio.CancelScope] = attrs.field(factory=set)
    closing: bool = False

    def __attrs_post_init__(self) -> None:
        self.allowed_hosts = self.settings.allowed_host_names()
        self.observer = Observer(metrics=self.settings.metrics)

    def close_websockets(self) -> None:
        """Close every open WebSocket (going away); new ones are refused from now on."""
        self.closing = True
        for scope in list(self._sockets):
            scope.cancel()


async def _deny(scope: Any, send: Any, error: RhetorError, socket_id: str) -> None:
    """Refuse a WebSocket handshake with a JSON HTTP answer where the server allows it."""
    if "websocket.http.response" in scope.get("extensions", {}):
        await send(
            {
                "type": "websocket.http.response.start",
                "status": error.status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"x-request-id", socket_id.encode()),
                ],
            }
        )
        body = encode({"error": {**error.to_dict(), "request_id": socket_id}})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008})


async def serve_websocket(state: EdgeState, scope: Any, receive: Any, send: Any) -> None:
    """
    One WebSocket on ``/ws``: check it, then run it with a Session actor.

    Cancellation: a disconnect (or server shutdown) ends this; the session is
    then stopped, which cancels its requests down to the provider calls.
    """
    # The checks run in their own frame, so that the parsed headers and query
    # are not kept alive for the life of the socket (about 1.5 KB together).
    socket_id = request_id_of(scope["headers"])
    if not await _admit(state, scope, receive, send, socket_id):
        return
    legacy = _Legacy() if scope["path"] == LEGACY_WS_PATH else None
    client = scope.get("client")
    log.info(
        "WebSocket %s opened on %s from %s",
        socket_id,
        scope["path"],
        client[0] if client else "unknown",
        extra={"request_id": socket_id},
    )
    state.observer.metrics.websockets.inc()
    try:
        await _serve_socket(state, receive, send, legacy, socket_id)
    finally:
        state.observer.metrics.websockets.dec()
        log.info("WebSocket %s closed", socket_id, extra={"request_id": socket_id})


async def _admit(state: EdgeState, scope: Any, receive: Any, send: Any, socket_id: str) -> bool:
    """Take the handshake; True if the socket may open, else refuse it and answer False."""
    settings = state.settings
    headers = Headers([(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]])
    query = MultiDict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
    if (await receive())["type"] != "websocket.connect":
        return False
    host = headers.get("Host")
    error: RhetorError | None = None
    try:
        check_host(state.allowed_hosts, host)
        # A WebSocket is never a same-origin-policy-protected read: check every Origin.
        check_origin(settings, headers.get("Origin"), host)
    except Forbidden as exc:
        error = exc
    if error is None and not authorized(settings.api_key, presented_key(headers, query)):
        error = Unauthorized("a valid API key is required")
    if error is None and state.closing:
        error = ServiceUnavailable("the server is shutting down")
    if error is not None:
        log.info(
            "WebSocket %s refused: %s %s",
            socket_id,
            error.code,
            error.message,
            extra={"request_id": socket_id},
        )
        await _deny(scope, send, error, socket_id)
        return False
    return True


class _Legacy:
    """
    Translation for the first Rhetor's streaming socket (``/ws/rhetor/streaming``).

    Its clients send ``{"prompt", "temperature", "stream", "model"?}`` and read
    ``content_chunk`` / ``content_complete`` / ``error`` messages, each with
    its request's ``request_id`` (the schemas are ``LEGACY_FRAMES`` in
    ``rhetor.edge._schemas_ws``). A request is checked against
    :class:`LegacyRequest` (a refusal names its fields: ``prompt``), then
    becomes an ``LLM_REQUEST`` frame for the same Session actor, and the
    Session's frames are translated back; nothing else differs.
    """

    _OPTIONS = (
        "model",
        "provider",
        "temperature",
        "max_tokens",
        "task_type",
        "context",
        "component",
        "system_prompt",
    )

    def __init__(self) -> None:
        self._ids = itertools.count(1)

    def inbound(self, data: str | bytes) -> str | bytes | Refused:
        try:
            body = parse_json(data, what="frame")
        except RhetorError:
            return data  # the Session answers a bad frame with an ERROR
        if not isinstance(body, dict) or "type" in body:
            return data
        try:
            convert(body, LegacyRequest, what="frame")
        except RhetorError as exc:
            return Refused("LLM_REQUEST", exc)
        payload: dict[str, Any] = {
            "message": body.get("prompt"),
            "streaming": body.get("stream", True),
        }
        payload.update((k, body[k]) for k in self._OPTIONS if k in body)
        frame = {
            "type": "LLM_REQUEST",
            "id": f"legacy-{next(self._ids)}",
            "source": "legacy",
            "payload": payload,
        }
        return dumps(frame)

    def outbound(self, frame: Frame) -> dict[str, Any] | None:
        payload = frame.get("payload") or {}
        request_id = frame.get("request_id")
        if frame["type"] == "UPDATE":
            if "chunk" not in payload:
                return None
            chunk = LegacyChunk(type="content_chunk", text=payload["chunk"], request_id=request_id)
            shown: dict[str, Any] = msgspec.to_builtins(chunk)
            return shown
        if frame["type"] == "RESPONSE":
            return {"type": "content_complete", "text": payload.get("message", ""), **payload}
        if frame["type"] == "ERROR":
            error = LegacyError(
                type="error",
                error=payload.get("message", ""),
                error_type=payload.get("type"),
                field=payload.get("field"),
                request_id=request_id,
            )
            shown = msgspec.to_builtins(error)
            if error.field is None:
                del shown["field"]  # as before: a field only when one is at fault
            return shown
        return None


async def _serve_socket(
    state: EdgeState, receive: Any, send: Any, legacy: _Legacy | None, socket_id: str
) -> None:
    """
    Run one accepted WebSocket: a Session actor, an inbound pump and an outbox pump.
    """
    runtime, limit = state.runtime, state.settings.max_body_bytes
    # trio's channel: less memory per idle socket and half the cost per frame of anyio's.
    outbox, frames = trio.open_memory_channel[Frame](_OUTBOX_FRAMES)
    name = f"session:{uuid.uuid4().hex}"
    session = partial(Session, runtime, outbox, observer=state.observer, socket=socket_id)
    spec = actors.ChildSpec(name, session, restart="temporary", shutdown_timeout=5.0)
    try:
        with trio.fail_after(_SESSION_START_TIMEOUT):
            ref = await runtime.sessions.start_child(spec)
    except (actors.ActorError, TimeoutError) as exc:
        outbox.close()
        frames.close()
        log.error("could not start a session: %s", exc)
        await send({"type": "websocket.close", "code": 1011, "reason": "session unavailable"})
        return
    await send({"type": "websocket.accept", "headers": [(b"x-request-id", socket_id.encode())]})
    scope = trio.CancelScope()
    state._sockets.add(scope)
    try:
        with scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_pump_out, frames, send, nursery.cancel_scope, legacy)
                await _pump_in(ref, receive, limit, legacy)
                nursery.cancel_scope.cancel()
        if scope.cancelled_caught:
            with (
                trio.CancelScope(shield=True),
                trio.move_on_after(2.0),
                contextlib.suppress(Exception),
            ):
                await send(
                    {"type": "websocket.close", "code": 1001, "reason": "server shutting down"}
                )
    finally:
        state._sockets.discard(scope)
        frames.close()
        # ActorError: already gone, it crashed or stopped itself.
        with (
            trio.CancelScope(shield=True),
            trio.move_on_after(6.0),
            contextlib.suppress(actors.ActorError),
        ):
            await runtime.sessions.stop_child(name)


def _frame_text(frame: Frame, legacy: _Legacy | None) -> str | None:
    """A Session frame as the text to send (translated for the legacy socket), or None."""
    out = frame if legacy is None else legacy.outbound(frame)
    if out is None:
        return None
    try:
        return dumps(out)
    except ValueError:
        # NaN or Infinity in a reply, a bug before this point: JSON cannot carry
        # it, so the client hears of an internal error for that request.
        log.error("a %s frame for %r holds a non-finite number", frame["type"], frame.get("id"))
        error = {"type": "internal_error", "message": "internal error; see the server log"}
        return _frame_text(error_frame(frame.get("id"), error, frame.get("target")), legacy)


async def _pump_in(ref: actors.Ref, receive: Any, limit: int, legacy: _Legacy | None) -> None:
    while True:
        event = await receive()
        if event["type"] != "websocket.receive":
            return  # websocket.disconnect
        data = event.get("text")
        if data is None:
            data = event.get("bytes") or b""
        if legacy is not None:
            data = legacy.inbound(data)
        message: Inbound | Oversized | Refused
        if isinstance(data, Refused):
            message = data
        else:
            size = len(data.encode()) if isinstance(data, str) else len(data)
            message = Oversized(size, limit) if size > limit else Inbound(data)
        try:
            await ref.tell(message)
        except actors.ActorError:
            return  # the session is gone; close the socket


async def _pump_out(frames: Any, send: Any, done: trio.CancelScope, legacy: _Legacy | None) -> None:
    with frames:
        async for frame in frames:
            text = _frame_text(frame, legacy)
            if text is None:
                continue
            try:
                await send({"type": "websocket.send", "text": text})
            except Exception:
                break  # the client went away; the inbound side sees the disconnect
    # The session stopped and closed its outbox: close the socket.
    done.cancel()
