"""
:class:`Session`: one WebSocket on ``/ws``, carrying many requests at once.

Frames are ``{type, id, source, target, timestamp, payload}``. A background
reader, in the session's own task group, routes each incoming frame to the
request with the same ``id`` over an unbounded memory channel, so a slow
reader of one request never holds up another. Requests surface what the
server sends as events:

    TypingStarted  ->  Chunk ...  ->  TypingStopped  ->  Completed(reply)

``Completed`` is always last; a failed request raises its
:class:`~rhetor.client.RhetorClientError` from the iteration instead.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
import httpx_ws
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from rhetor.client._errors import (
    RequestCancelled,
    RhetorClientError,
    ServerError,
    Timeout,
    error_from_body,
    transport_errors,
)
from rhetor.client._models import (
    Chunk,
    Completed,
    Reply,
    SessionEvent,
    TypingStarted,
    TypingStopped,
)

if TYPE_CHECKING:
    from rhetor.client._http import RhetorClient

__all__ = ["Session", "SessionRequest", "open_session"]

log = logging.getLogger("rhetor.client")

# What the reader hands a request: a frame, or the error that ends it.
_Item = dict[str, Any] | RhetorClientError
# Seconds a CANCEL may take to send while the caller is itself being cancelled.
_CANCEL_GRACE = 2.0


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


def _event(request_id: str, frame: Mapping[str, Any]) -> SessionEvent | None:
    """The event a server frame stands for, or None for one the client does not know."""
    payload = frame.get("payload")
    payload = payload if isinstance(payload, Mapping) else {}
    context = payload.get("context") if isinstance(payload.get("context"), str) else None
    if frame.get("type") == "RESPONSE":
        return Completed(request_id, Reply.from_dict(payload))
    if "isTyping" in payload:
        if payload["isTyping"]:
            return TypingStarted(request_id, context)
        return TypingStopped(request_id, context)
    chunk = payload.get("chunk")
    pieces = payload.get("tool_calls")
    calls = tuple(p for p in pieces if isinstance(p, Mapping)) if isinstance(pieces, list) else ()
    if (isinstance(chunk, str) and chunk) or calls:
        return Chunk(request_id, chunk if isinstance(chunk, str) else "", context, calls)
    return None


class SessionRequest(AsyncIterator[SessionEvent]):
    """
    One request on a :class:`Session`: iterate it for its events.

    The request frame goes out when iteration starts (or on :meth:`reply`).
    Leaving ``async with`` (or :meth:`aclose`) before ``Completed`` cancels the
    request on the server.

    Error handling: a server ``ERROR`` for this request, or the socket closing,
    raises a :class:`~rhetor.client.RhetorClientError` from the iteration;
    :meth:`Session.cancel` makes it raise :class:`~rhetor.client.RequestCancelled`.
    """

    def __init__(self, session: Session, kind: str, payload: dict[str, Any]) -> None:
        #: The id every frame of this request carries.
        self.id = uuid.uuid4().hex
        self._session = session
        self._kind = kind
        self._payload = payload
        self._receive: MemoryObjectReceiveStream[_Item] | None = None
        self._done = False
        #: The whole reply, once ``Completed`` has been seen.
        self.result: Reply | None = None

    def __aiter__(self) -> SessionRequest:
        return self

    async def __anext__(self) -> SessionEvent:
        if self._done:
            raise StopAsyncIteration
        if self._receive is None:
            self._receive = self._session._route(self.id)
            await self._session._send(self._kind, self._payload, self.id)
        while True:
            try:
                frame = await self._session._receive_frame(self._receive)
            except RhetorClientError:
                self._finish()
                raise
            event = _event(self.id, frame)
            if event is None:
                continue
            if isinstance(event, Completed):
                self.result = event.reply
                self._finish()
            return event

    async def reply(self) -> Reply:
        """Run the request to the end and answer its reply."""
        async for _ in self:
            pass
        if self.result is None:
            raise ServerError(f"request {self.id} ended without a reply")
        return self.result

    async def cancel(self) -> None:
        """Cancel this request on the server; see :meth:`Session.cancel`."""
        await self._session.cancel(self.id)

    async def aclose(self) -> None:
        """Stop following this request, cancelling it on the server if it still runs."""
        if self._receive is not None and not self._done:
            self._finish()
            # Awaited cleanup under a shield: the caller may itself be cancelled.
            # A failed send means the socket is gone, and the server cancels on disconnect.
            with (
                anyio.CancelScope(shield=True),
                anyio.move_on_after(_CANCEL_GRACE),
                suppress(RhetorClientError),
            ):
                await self._session._send("CANCEL", {"id": self.id})

    async def __aenter__(self) -> SessionRequest:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _finish(self) -> None:
        self._done = True
        self._session._unroute(self.id)
        if self._receive is not None:
            self._receive.close()


class Session:
    """
    A registered WebSocket session with Rhetor; open it with ``client.session(...)``.

    Several requests may run at once; each is independent, and frames are
    matched to them by id. Frames for ids nobody waits for are dropped.
    """

    def __init__(
        self, ws: httpx_ws.AsyncWebSocketSession, source: str, url: str, timeout: float
    ) -> None:
        self.source = source
        self._ws = ws
        self._url = url
        # Seconds to wait for each frame of a request before raising Timeout.
        self._timeout = timeout
        # Invariant: holds exactly the ids whose requests are still being followed.
        self._routes: dict[str, MemoryObjectSendStream[_Item]] = {}
        # Invariant: once set, the socket is unusable and every route has been told.
        self._failure: RhetorClientError | None = None

    # -- public -------------------------------------------------------------

    def send_message(
        self,
        message: str | Sequence[Mapping[str, Any]],
        *,
        context: str | None = None,
        task_type: str | None = None,
        component: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        system_prompt: str | None = None,
        streaming: bool = True,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        response_format: Mapping[str, Any] | None = None,
    ) -> SessionRequest:
        """
        An ``LLM_REQUEST``: iterate the answer for typing, chunk and completion events.

        ``context`` is the context id that keeps a conversation's turns on the server.
        ``message`` is text or a list of blocks; ``tools``, ``tool_choice`` and
        ``response_format`` are the native shape's (docs/api.md).
        """
        return self._request(
            "LLM_REQUEST",
            message=message if isinstance(message, str) else [dict(b) for b in message],
            tools=None if tools is None else [dict(t) for t in tools],
            tool_choice=tool_choice,
            response_format=response_format,
            context=context,
            task_type=task_type,
            component=component,
            provider=provider,
            model=model,
            temperature=temperature,
            max_tokens=max_tokens,
            system_prompt=system_prompt,
            streaming=streaming,
        )

    def send_chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        context: str | None = None,
        task_type: str | None = None,
        component: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        system_prompt: str | None = None,
        streaming: bool = True,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        response_format: Mapping[str, Any] | None = None,
    ) -> SessionRequest:
        """A ``CHAT_REQUEST`` of ``{role, content}`` turns; events as for :meth:`send_message`."""
        return self._request(
            "CHAT_REQUEST",
            messages=[dict(m) for m in messages],
            tools=None if tools is None else [dict(t) for t in tools],
            tool_choice=tool_choice,
            response_format=response_format,
            context=context,
            task_type=task_type,
            component=component,
            provider=provider,
            model=model,
            temperature=temperature,
            max_tokens=max_tokens,
            system_prompt=system_prompt,
            streaming=streaming,
        )

    async def status(self) -> dict[str, Any]:
        """The server's providers and budget, as a ``STATUS`` request answers them."""
        return await self._exchange("STATUS", {})

    async def cancel(self, request_id: str) -> None:
        """
        Cancel request ``request_id``: the server stops its work down to the
        provider call, and the local request raises :class:`RequestCancelled`.
        """
        route = self._routes.pop(request_id, None)
        if route is not None:
            route.send_nowait(RequestCancelled(f"request {request_id} was cancelled"))
            route.close()
        await self._send("CANCEL", {"id": request_id})

    # -- plumbing -----------------------------------------------------------

    def _request(self, kind: str, **fields: Any) -> SessionRequest:
        """A request of ``kind`` whose payload holds the fields that are set."""
        return SessionRequest(self, kind, {k: v for k, v in fields.items() if v is not None})

    def _route(self, request_id: str) -> MemoryObjectReceiveStream[_Item]:
        send, receive = anyio.create_memory_object_stream[_Item](math.inf)
        if self._failure is not None:
            send.send_nowait(self._failure)
            send.close()
        else:
            self._routes[request_id] = send
        return receive

    def _unroute(self, request_id: str) -> None:
        route = self._routes.pop(request_id, None)
        if route is not None:
            route.close()

    def _lost(self) -> RhetorClientError:
        failure = self._failure
        return ServerError(failure.message if failure else "the WebSocket session is closed")

    async def _send(
        self, kind: str, payload: Mapping[str, Any], frame_id: str | None = None
    ) -> None:
        if self._failure is not None:
            raise self._lost()
        frame = {
            "type": kind,
            "id": frame_id or uuid.uuid4().hex,
            "source": self.source,
            "target": "rhetor",
            "timestamp": _now(),
            "payload": dict(payload),
        }
        with transport_errors(self._url):
            await self._ws.send_text(json.dumps(frame))

    async def _exchange(self, kind: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Send one frame and answer the payload of the ``RESPONSE`` with its id."""
        frame_id = uuid.uuid4().hex
        receive = self._route(frame_id)
        try:
            await self._send(kind, payload, frame_id)
            with receive:
                frame = await self._receive_frame(receive)
        finally:
            self._unroute(frame_id)
        answer = frame.get("payload")
        return dict(answer) if isinstance(answer, Mapping) else {}

    async def _receive_frame(self, receive: MemoryObjectReceiveStream[_Item]) -> dict[str, Any]:
        """
        The next frame routed to one id.

        Error handling: an ``ERROR`` frame, a failed socket or a closed route
        raises the matching :class:`~rhetor.client.RhetorClientError`.
        """
        try:
            with anyio.fail_after(self._timeout):
                item = await receive.receive()
        except anyio.EndOfStream:
            raise self._lost() from None
        except TimeoutError:
            raise Timeout(f"no frame from {self._url} in {self._timeout:g}s") from None
        if isinstance(item, RhetorClientError):
            raise item
        if item.get("type") == "ERROR":
            raise error_from_body(item.get("payload"))
        return item

    async def _read(self) -> None:
        """
        Route every incoming frame to its request until the socket ends.

        Error handling: a transport failure never escapes; it becomes the error
        every waiting request raises, and the session stays failed.
        """
        try:
            while True:
                with transport_errors(self._url):
                    text = await self._ws.receive_text()
                try:
                    frame = json.loads(text)
                except json.JSONDecodeError:
                    log.warning("Rhetor sent a WebSocket frame that is not JSON: %.200s", text)
                    continue
                if not isinstance(frame, dict):
                    continue
                route = self._routes.get(str(frame.get("id")))
                if route is None:
                    # An error for no request at all (a frame the server could not
                    # read) is worth a warning; one for a request nobody follows any
                    # more (say, the "cancelled" after a CANCEL) is not.
                    if frame.get("type") == "ERROR" and frame.get("id") is None:
                        log.warning("Rhetor reported a session error: %s", frame.get("payload"))
                    continue
                try:
                    route.send_nowait(frame)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    self._routes.pop(str(frame.get("id")), None)
        except RhetorClientError as exc:
            self._fail(exc)
        except httpx_ws.WebSocketInvalidTypeReceived:
            self._fail(ServerError("Rhetor sent a binary WebSocket frame"))

    def _fail(self, error: RhetorClientError) -> None:
        self._failure = error
        routes, self._routes = self._routes, {}
        for route in routes.values():
            route.send_nowait(error)
            route.close()


@asynccontextmanager
async def open_session(client: RhetorClient, source: str) -> AsyncIterator[Session]:
    """
    Connect to ``/ws``, start the frame reader and send ``REGISTER``; yield the session.

    Cancellation: leaving the block stops the reader and closes the socket;
    the server cancels whatever requests were still running.

    Error handling: connection failures raise the client's errors
    (:class:`ConnectionRefused`, :class:`Unauthorized`, ...); an exception from
    the block comes out as itself, not wrapped in an exception group.
    """
    url = client.base_url.replace("http", "ws", 1) + "/ws"
    try:
        async with AsyncExitStack() as stack:
            with transport_errors(url):
                ws: httpx_ws.AsyncWebSocketSession = await stack.enter_async_context(
                    httpx_ws.aconnect_ws(client.base_url + "/ws", client.http)
                )
            tg: TaskGroup = await stack.enter_async_context(anyio.create_task_group())
            session = Session(ws, source, url, client.timeout)
            tg.start_soon(session._read)
            try:
                await session._exchange("REGISTER", {"source": source})
                yield session
            finally:
                tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        leaves = list(_leaves(group))
        if len(leaves) != 1:
            raise
        raise leaves[0] from leaves[0].__cause__
