"""
Session: the actor behind one WebSocket connection.

The HTTP edge accepts the socket, starts one ``Session`` as a temporary child
of the sessions supervisor, and then only moves bytes: every received text
frame becomes an :class:`Inbound` tell, and every dict the session puts in its
outbox becomes a text frame. The protocol lives here and does no socket I/O.

Frames are ``{type, id, source, target, timestamp, payload}``. Client to
server: ``REGISTER``, ``LLM_REQUEST``, ``CHAT_REQUEST``, ``STATUS``,
``CANCEL``. Server to client, each echoing the request's ``id``: ``UPDATE``
(typing, chunks, end of typing), ``RESPONSE`` and ``ERROR``. See
``docs/websocket.md``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from contextlib import aclosing
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, get_args

import anyio
import attrs
import trio
from anyio.streams.memory import MemoryObjectSendStream

import actors
from rhetor import observe
from rhetor._errors import InternalError, PayloadTooLarge, RhetorError, ValidationError
from rhetor.edge._fields import check_json, check_text, load_json, may_hold_surrogates
from rhetor.edge._schema import convert
from rhetor.edge._schemas_content import tool_call_deltas
from rhetor.edge._schemas_ws import (
    CancelPayload,
    ChatRequestPayload,
    ClientFrame,
    FrameType,
    LLMRequestPayload,
)

if TYPE_CHECKING:
    from rhetor.edge._observing import Observer
    from rhetor.observe import Observation
    from rhetor.runtime import Runtime

__all__ = [
    "FRAME_TYPES",
    "Inbound",
    "Oversized",
    "Refused",
    "Session",
    "error_frame",
    "make_frame",
    "parse_frame",
]

log = logging.getLogger("rhetor.session")

FRAME_TYPES: frozenset[str] = frozenset(get_args(FrameType))
# One socket may run several requests at once, but not without bound.
MAX_IN_FLIGHT = 32
Frame = dict[str, Any]


@attrs.frozen
class Inbound:
    """One frame as the client sent it (a tell from the edge)."""

    data: str | bytes


@attrs.frozen
class Refused:
    """A frame the edge refused before it became one the Session reads (a tell): answer ``error``."""

    route: str
    error: RhetorError


@attrs.frozen
class Oversized:
    """The client sent a frame of ``size`` bytes, over the limit; it was dropped (a tell)."""

    size: int
    limit: int


@attrs.frozen
class ParsedFrame:
    """A well-formed client frame."""

    type: str
    id: str | int
    source: str | None
    payload: Mapping[str, Any]


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def make_frame(
    type_: str, frame_id: str | int | None, payload: Mapping[str, Any], target: str | None = None
) -> Frame:
    """A server-to-client frame; one about a request carries its ``request_id``."""
    frame = {
        "type": type_,
        "id": frame_id,
        "source": "rhetor",
        "target": target,
        "timestamp": _now_iso(),
        "payload": dict(payload),
    }
    request_id = observe.request_id()
    if request_id is not None:
        frame["request_id"] = request_id
    return frame


def error_frame(
    frame_id: str | int | None, error: RhetorError | Mapping[str, Any], target: str | None = None
) -> Frame:
    """An ``ERROR`` frame carrying ``{type, message, field?, request_id?}``."""
    body = error.to_dict() if isinstance(error, RhetorError) else dict(error)
    request_id = observe.request_id()
    if request_id is not None:
        body["request_id"] = request_id
    return make_frame("ERROR", frame_id, body, target)


class FrameError(Exception):
    """A client frame that cannot be handled; ``frame_id`` is echoed if it was readable."""

    def __init__(self, frame_id: str | int | None, error: Mapping[str, Any]) -> None:
        super().__init__(error.get("message", ""))
        self.frame_id = frame_id
        self.error = dict(error)


def parse_frame(data: str | bytes) -> ParsedFrame:
    """
    Check one client frame: JSON, then its envelope against :class:`ClientFrame`.

    Every value in it keeps :func:`rhetor.edge._fields.check_json`'s rules (valid
    Unicode, finite numbers, bounded nesting), so nothing malformed reaches a
    request. The ``id`` is read first, so that every later error can echo
    it; a frame without one gets a fresh one, which every answer then
    echoes. The payload is checked against its type's schema when the frame
    is handled (``rhetor.edge._schemas_ws.PAYLOADS``).

    Error handling: raises :class:`FrameError` with the error body to send
    back, carrying the frame's ``id`` whenever it could be read.
    """
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise FrameError(
                None, {"type": "invalid_json", "message": "frame is not UTF-8 text"}
            ) from None
    try:
        raw = load_json(data, what="frame")
        if not isinstance(raw, dict):
            convert(raw, ClientFrame, what="frame")  # raises: a frame is an object
    except RhetorError as exc:
        raise FrameError(None, exc.to_dict()) from None
    frame_id = raw.get("id")
    if frame_id is None:
        frame_id = uuid.uuid4().hex
    elif (
        isinstance(frame_id, bool) or not isinstance(frame_id, str | int) or not _echoable(frame_id)
    ):
        raise FrameError(None, ValidationError("id", "must be a string or a number").to_dict())
    try:
        check_json(raw, what="frame", text=may_hold_surrogates(data))
        frame = convert(raw, ClientFrame, what="frame")
    except ValidationError as exc:
        raise FrameError(frame_id, exc.to_dict()) from None
    return ParsedFrame(frame.type, frame_id, frame.source, frame.payload or {})


class _Cancelled(Exception):
    """A WebSocket request its client cancelled (or left), as the access log names it."""

    code = "cancelled"


# The status of an error a frame is refused with, by its type, for the access log.
_STATUS = {"invalid_json": 400, "validation_error": 422, "payload_too_large": 413}


def _internal() -> InternalError:
    return InternalError("internal error; see the server log")


def _echoable(frame_id: str | int) -> bool:
    """Whether an id can go back in answers: valid text, or a number that fits in 64 bits."""
    if isinstance(frame_id, int):
        return -(2**63) <= frame_id < 2**63
    try:
        check_text(frame_id, "id")
    except ValidationError:
        return False
    return True


# The outbox is trio's memory channel under the edge, anyio's in some tests; either
# one's "the reader is gone" errors, and a reader that stopped reading.
_OUTBOX_GONE = (
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    TimeoutError,
)

# Seconds a frame may wait for room in the outbox before the client counts as gone.
EMIT_TIMEOUT = 30.0


@attrs.define(eq=False)
class Session(actors.Actor):
    """
    Runs one WebSocket client's requests and writes their frames to the outbox.

    Frames are handled in order, one at a time; each LLM request (and each
    STATUS) runs in its own task in the session's task group, tracked by its
    frame id so that ``CANCEL`` can reach it.

    Cancellation: stopping the session (the client disconnected) cancels every
    request in flight down to the provider call; the router bills what was
    produced. ``CANCEL`` does the same for one request.

    Error handling: a bad frame or a failed request becomes an ``ERROR``
    frame for that frame's ``id`` alone; an unexpected exception while
    handling one frame or running one request (a bug) is logged with its
    traceback and answered ``ERROR internal_error`` for that ``id``, and the
    socket's other requests carry on. Nothing a client sends crashes the
    session.
    """

    max_concurrency: ClassVar[int] = 1
    contained: ClassVar[tuple[type[Exception], ...]] = (Exception,)

    _runtime: Runtime
    # The edge's end of the socket: a frame put here is sent to the client.
    _outbox: MemoryObjectSendStream[Frame] | trio.MemorySendChannel[Frame]
    # Each request's id, access-log line, metrics and span (None: not observed).
    _observer: Observer | None = attrs.field(default=None, kw_only=True, alias="observer")
    # The socket's own id (its handshake's X-Request-ID, or a new one).
    _socket: str | None = attrs.field(default=None, kw_only=True, alias="socket")
    # The client's name from REGISTER: the target of frames that name none.
    _source: str | None = attrs.field(default=None, init=False)
    # Invariant: one entry per request task still running, keyed by its frame id.
    _in_flight: dict[str | int, anyio.CancelScope] = attrs.field(factory=dict, init=False)
    # Frame ids of requests a CANCEL stopped, until their task answers "cancelled".
    _cancelled: set[str | int] = attrs.field(factory=set, init=False)

    async def stopping(self) -> None:
        # The edge's outbox pump ends when this closes, and then closes the socket.
        for scope in self._in_flight.values():
            scope.cancel()
        self._outbox.close()

    # -- outbox ------------------------------------------------------------

    async def _emit(self, frame: Frame) -> None:
        try:
            with anyio.fail_after(EMIT_TIMEOUT):
                await self._outbox.send(frame)
        except _OUTBOX_GONE:
            # The socket is gone (the edge is stopping this session), or the
            # client stopped reading: drop its requests rather than hold their
            # provider calls open for a reader that never comes back.
            for scope in self._in_flight.values():
                scope.cancel()

    # -- frames ------------------------------------------------------------

    async def handle(self, message: Any) -> None:
        if isinstance(message, Oversized):
            error = PayloadTooLarge(
                f"frame of {message.size} bytes is over the {message.limit} byte limit"
            )
            await self._refuse("(frame)", None, error, self._source)
            return
        if isinstance(message, Refused):
            await self._refuse(message.route, None, message.error, self._source)
            return
        if not isinstance(message, Inbound):
            raise TypeError(f"Session cannot handle {type(message).__name__}")
        try:
            frame = parse_frame(message.data)
        except FrameError as exc:
            await self._refuse("(frame)", exc.frame_id, exc.error, self._source)
            return
        try:
            await self._dispatch(frame)
        except RhetorError as exc:
            await self._refuse(frame.type, frame.id, exc, frame.source or self._source)
        except Exception:
            # A bug met on this frame: it fails alone, the session keeps serving.
            log.exception("frame %r (%s) on %s failed", frame.id, frame.type, self.name)
            target = frame.source or self._source
            await self._refuse(frame.type, frame.id, _internal(), target)

    # -- observations ----------------------------------------------------------

    def _observation(self, route: str, request_id: str | None = None) -> Observation | None:
        """A new observation for one request on this socket (None when not observed)."""
        if self._observer is None:
            return None
        request_id = request_id or observe.fresh_request_id()
        return self._observer.begin("WS", route, request_id, socket=self._socket)

    def _finish(self, observation: Observation | None, status: int) -> None:
        if observation is not None and self._observer is not None:
            observation.status = status
            self._observer.finish(observation)

    async def _refuse(
        self,
        route: str,
        frame_id: str | int | None,
        error: RhetorError | Mapping[str, Any],
        target: str | None,
    ) -> None:
        """Answer a frame refused before it became a request: its ERROR, its access-log line."""
        observation = self._observation(route)
        body = error.to_dict() if isinstance(error, RhetorError) else dict(error)
        status = error.status if isinstance(error, RhetorError) else _STATUS.get(body["type"], 400)
        frame = error_frame(frame_id, body, target)
        if observation is not None:
            observation.error_type = body.get("type")
            observation.error = str(body.get("message", ""))[:300]
            frame["request_id"] = frame["payload"]["request_id"] = observation.request_id
        await self._emit(frame)
        self._finish(observation, status)

    async def _dispatch(self, frame: ParsedFrame) -> None:
        target = frame.source or self._source
        if frame.type == "REGISTER":
            if frame.source is not None:
                self._source = frame.source
            ack = {"status": "registered", "session": self.name, "source": self._source}
            await self._emit(make_frame("RESPONSE", frame.id, ack, target))
        elif frame.type == "CANCEL":
            wanted = convert(frame.payload, CancelPayload, at="payload").id
            scope = self._in_flight.get(wanted)
            if scope is not None:
                self._cancelled.add(wanted)
                scope.cancel()
            payload: dict[str, Any] = {"id": wanted, "cancelled": scope is not None}
            await self._emit(make_frame("RESPONSE", frame.id, payload, target))
        elif frame.type == "STATUS":
            self._start(frame.id, frame.type, None, self._status, frame.id, target)
        else:
            # Its errors name the payload's fields as the HTTP body's are named (no "payload.").
            body: LLMRequestPayload | ChatRequestPayload
            if frame.type == "CHAT_REQUEST":
                body = convert(frame.payload, ChatRequestPayload)
                kwargs = {**body.request_kwargs(websocket=True), "messages": body.chat_messages()}
            else:
                body = convert(frame.payload, LLMRequestPayload)
                kwargs = {**body.request_kwargs(websocket=True), **body.message_kwargs()}
            request = self._runtime.request(**kwargs, request_id=observe.fresh_request_id())
            streaming = True if body.streaming is None else body.streaming
            self._start(
                frame.id,
                frame.type,
                request.request_id,
                self._generate,
                frame.id,
                target,
                request,
                streaming,
            )

    def _start(
        self, frame_id: str | int, route: str, request_id: str | None, fn: Any, *args: Any
    ) -> None:
        if frame_id in self._in_flight:
            raise ValidationError("id", f"request {frame_id!r} is still running")
        if len(self._in_flight) >= MAX_IN_FLIGHT:
            raise ValidationError("id", f"at most {MAX_IN_FLIGHT} requests may run at once")
        observation = self._observation(route, request_id)
        scope = anyio.CancelScope()
        self._in_flight[frame_id] = scope
        self.task_group.start_soon(self._run, frame_id, scope, observation, fn, args)

    async def _run(
        self,
        frame_id: str | int,
        scope: anyio.CancelScope,
        observation: Observation | None,
        fn: Any,
        args: tuple[Any, ...],
    ) -> None:
        # This task serves this one request: its log lines and frames carry its id.
        observe.bind(observation)
        failed = False
        status = 200
        try:
            with scope:
                status = await fn(*args)
        except Exception as exc:
            # A bug in this one request must not take the socket's other requests down.
            log.exception("request %r on %s failed", frame_id, self.name)
            observe.current().failed(exc)
            failed = True
            status = 500
        finally:
            del self._in_flight[frame_id]
        if failed:
            await self._emit(error_frame(frame_id, _internal(), self._source))
        elif scope.cancelled_caught:
            status = 499  # the client's CANCEL, or it went away
            observe.current().failed(_Cancelled(f"request {frame_id!r} was cancelled"))
            if frame_id in self._cancelled:
                self._cancelled.discard(frame_id)
                error = {"type": "cancelled", "message": f"request {frame_id!r} was cancelled"}
                await self._emit(error_frame(frame_id, error, self._source))
        self._finish(observation, status)

    # -- requests ----------------------------------------------------------

    async def _status(self, frame_id: str | int, target: str | None) -> int:
        """Answer a STATUS frame; answers the HTTP status it came to (for the access log)."""
        try:
            providers = await self._runtime.providers()
            budget = await self._runtime.budget()
        except RhetorError as exc:
            observe.current().failed(exc)
            await self._emit(error_frame(frame_id, exc, target))
            return exc.status
        # This STATUS request is itself in flight; report the others.
        others = len(self._in_flight) - 1
        payload = {"providers": providers, "budget": budget, "in_flight": others}
        await self._emit(make_frame("RESPONSE", frame_id, payload, target))
        return 200

    async def _generate(
        self, frame_id: str | int, target: str | None, request: Any, streaming: bool
    ) -> int:
        """Run one LLM request; answers the HTTP status it came to (for the access log)."""
        context = request.context_id
        typing = {"status": "typing", "isTyping": True, "context": context}
        await self._emit(make_frame("UPDATE", frame_id, typing, target))
        try:
            try:
                if streaming:
                    reply = None
                    stream = self._runtime.send_stream(request)
                    async with aclosing(stream) as chunks:
                        async for chunk in chunks:
                            if chunk.done:
                                reply = chunk.reply
                            elif chunk.text or chunk.tool_calls:
                                update: dict[str, Any] = {"chunk": chunk.text, "context": context}
                                if chunk.tool_calls:
                                    update["tool_calls"] = tool_call_deltas(chunk)
                                await self._emit(make_frame("UPDATE", frame_id, update, target))
                    if reply is None:
                        raise RhetorError("the stream ended without a reply")
                else:
                    reply = await self._runtime.send(request)
            finally:
                # The seeds' client ends its typing indicator on status "typing"
                # with isTyping false, so the end frame keeps that status.
                done = {"status": "typing", "isTyping": False, "context": context}
                with anyio.CancelScope(shield=True), anyio.move_on_after(1.0):
                    await self._emit(make_frame("UPDATE", frame_id, done, target))
        except RhetorError as exc:
            observe.current().failed(exc)
            await self._emit(error_frame(frame_id, exc, target))
            return exc.status
        except Exception as exc:
            # A bug must not take the socket down with it; the client gets an ERROR.
            log.exception("request %s on %s failed", frame_id, self.name)
            observe.current().failed(exc)
            await self._emit(error_frame(frame_id, _internal(), target))
            return 500
        await self._emit(make_frame("RESPONSE", frame_id, reply.to_dict(), target))
        return 200
