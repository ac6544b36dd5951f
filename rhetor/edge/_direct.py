"""
The hot routes answered straight on ASGI, ahead of Quart: ``POST /message`` and
``POST /v1/chat/completions`` when the reply is whole.

Quart's request and response objects, routing, hooks and per-request task
cost about 0.3 ms of CPU a request on this stack, as much as the rest of the
edge together (``benchmarks/edge.py``). These two routes carry most of the
traffic, so ``asgi_app`` hands them to :class:`DirectRoute` instead, as it
hands ``/ws`` to the WebSocket code. Everything else a request gets stays the
same, because it was never Quart's: the checks (``rhetor.edge._checks.refusal``,
already passed), the observation (request id, headers, access log, metrics,
span, from ``rhetor.edge._observing``), the schema (``convert``), the
translation (the same functions the blueprints call), the error shapes
(``error_parts`` and ``openai_error``) and CORS.

A request that asks for a stream is handed on to Quart, its body replayed:
streams are long, and their per-request cost does not matter. So is one the
checks refused, to be answered in its route's shape by the app's guard.

Cancellation: a client that leaves while its reply is being made cancels
the call, as Quart does: the provider call and everything under it. On
Rhetor's HTTP/1.1 protocol (``rhetor.edge._hypercorn.CoalescingH11Protocol``)
the protocol cancels it when the request's stream closes, through the list
it leaves in the scope (``DISCONNECT_HOOK``); elsewhere (HTTP/2, or
``RHETOR_STOCK_HYPERCORN=1``) a task of the request's own watches
``receive()`` for the ``http.disconnect`` Hypercorn delivers.

Error handling: every error is answered in its route's shape, as the Quart
route would answer it; a bug is logged with its traceback and answered
``internal_error`` (``rhetor_error``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import trio
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable
from quart_trio import QuartTrio
from werkzeug.exceptions import RequestTimeout

from rhetor import observe
from rhetor._errors import PayloadTooLarge, RhetorError
from rhetor.edge._checks import UnreadBody, origin_allowed
from rhetor.edge._compat import COMPONENT_HEADER, CONTEXT_HEADER, present, reply_headers
from rhetor.edge._fields import parse_json
from rhetor.edge._http import JSON_TYPE, error_parts, rhetor_error
from rhetor.edge._hypercorn import DISCONNECT_HOOK, NOT_QUEUED, WHOLE_REPLY, receive_nowait
from rhetor.edge._json import encode
from rhetor.edge._openai_wire import openai_completion, openai_error, openai_request
from rhetor.edge._schema import convert
from rhetor.edge._schemas_native import MessageBody
from rhetor.edge._schemas_openai import ChatCompletionBody

if TYPE_CHECKING:
    from rhetor._settings import Settings
    from rhetor.runtime import Runtime

__all__ = ["BODY_TIMEOUT", "DirectRoute", "Whole", "direct_routes"]

# Seconds a client has to send its whole body (Quart's BODY_TIMEOUT, the same).
BODY_TIMEOUT = 60.0
_CONTEXT = CONTEXT_HEADER.lower().encode()
_COMPONENT = COMPONENT_HEADER.lower().encode()


@attrs.frozen
class Whole:
    """A whole reply: status, headers and the JSON body's bytes."""

    body: bytes
    status: int = 200
    headers: Mapping[str, str] = attrs.field(factory=dict)


# Reads a checked body and the raw headers: a coroutine answering the whole
# reply, or None when the request is Quart's (it asks for a stream).
Answer = Callable[[Any, Any], Callable[[], Awaitable[Whole]] | None]
ErrorShape = Callable[[RhetorError], tuple[int, Mapping[str, str], Any]]


@attrs.frozen
class DirectRoute:
    """One route answered on ASGI: how it reads its body, answers, and shapes errors."""

    rule: str
    answer: Answer
    error_shape: ErrorShape
    _settings: Settings
    # A header that sends the request to Quart instead (lower case).
    _declined_by: bytes | None = None

    def declines(self, headers: Any) -> bool:
        """Whether a request with these raw headers is Quart's to answer."""
        wanted = self._declined_by
        return wanted is not None and any(name == wanted for name, _ in headers)

    async def serve(
        self,
        app: QuartTrio,
        scope: Any,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
    ) -> None:
        """
        Answer the request, or hand it (its body replayed) to ``app``.

        Unlike the app's routes, it is not wrapped in ``UnreadBody``: it reads
        the whole body before it answers, except when it refuses the body
        itself (then it wraps its reply).
        """
        observe.current().routed(self.rule)
        where = f"{scope['method']} {self.rule}"
        try:
            raw = await self._read_body(receive)
        except Exception as exc:
            # Answered before the whole body arrived (413, 408): UnreadBody
            # closes the connection after the reply and drains the rest.
            unread = UnreadBody(receive, send, app.nursery)
            await self._send(unread.send, scope, self._error(exc, where), whole_reply=False)
            return
        if raw is None:  # the client left before its body was all sent
            return
        try:
            value = parse_json(raw) if raw.strip() else {}
            make = self.answer(value, scope["headers"])
        except Exception as exc:
            await self._send(send, scope, self._error(exc, where))
            return
        if make is None:
            await app(scope, _replay(raw, receive), send)
            return
        whole: Whole | None = None
        hook = scope.get(DISCONNECT_HOOK)
        if isinstance(hook, list):
            # Rhetor's HTTP/1.1 protocol cancels this scope when the stream closes.
            with trio.CancelScope() as watched:
                hook.append(watched.cancel)
                whole = await self._answered(make, where)
            if watched.cancelled_caught:
                # What seeing http.disconnect tells the observation otherwise: a 499.
                observe.current().client_left()
                whole = None
        else:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope)
                whole = await self._answered(make, where)
                nursery.cancel_scope.cancel()
        if whole is not None:  # None: the client left, and nobody is there to answer
            await self._send(send, scope, whole)

    async def _read_body(self, receive: ASGIReceiveCallable) -> bytes | None:
        """
        The request's whole body, or None if the client left first.

        A body already queued whole (Hypercorn queues a small one with its
        request) is taken at once, with no timer and no checkpoint; otherwise
        the rest is awaited for up to ``BODY_TIMEOUT`` seconds.
        """
        body = _Body(self._settings.max_body_bytes)
        try:
            while body.more:
                body.take(receive_nowait(receive))
        except NOT_QUEUED:
            with trio.move_on_after(BODY_TIMEOUT):
                while body.more:
                    body.take(await receive())
            if body.more:
                raise RequestTimeout("the request body did not arrive in time") from None
        return body.whole()

    async def _answered(self, make: Callable[[], Awaitable[Whole]], where: str) -> Whole:
        """The route's reply, or its error in the route's shape."""
        try:
            return await make()
        except Exception as exc:
            return self._error(exc, where)

    def _error(self, exc: Exception, where: str) -> Whole:
        status, headers, body = self.error_shape(rhetor_error(exc, where))
        return Whole(encode(body), status, headers)

    async def _send(
        self, send: ASGISendCallable, scope: Any, whole: Whole, *, whole_reply: bool = True
    ) -> None:
        headers = [
            (b"content-type", JSON_TYPE.encode()),
            (b"content-length", str(len(whole.body)).encode()),
            # A value outside Latin-1 (none of Rhetor's should be) loses those characters,
            # rather than the reply.
            *(
                (k.encode("latin-1"), v.encode("latin-1", "replace"))
                for k, v in whole.headers.items()
            ),
        ]
        if self._settings.cors_origins:
            headers.extend(self._cors(scope))
        if whole_reply and WHOLE_REPLY in scope["extensions"]:
            # One message where the server takes it (see rhetor.edge._hypercorn).
            reply: Any = {
                "type": WHOLE_REPLY,
                "status": whole.status,
                "headers": headers,
                "body": whole.body,
            }
            await send(reply)
            return
        start: Any = {"type": "http.response.start", "status": whole.status, "headers": headers}
        await send(start)
        await send({"type": "http.response.body", "body": whole.body, "more_body": False})

    def _cors(self, scope: Any) -> list[tuple[bytes, bytes]]:
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value.decode("latin-1")
                if origin and origin_allowed(self._settings, origin, None):
                    return [(b"access-control-allow-origin", value), (b"vary", b"Origin")]
                break
        return []


async def _cancel_on_disconnect(receive: ASGIReceiveCallable, scope: trio.CancelScope) -> None:
    """Cancel ``scope`` when the client goes away (its body has been read already)."""
    while True:
        event: Any = await receive()
        if event["type"] == "http.disconnect":
            scope.cancel()
            return


def _replay(raw: bytes, receive: ASGIReceiveCallable) -> ASGIReceiveCallable:
    """``receive`` with the body already read handed out again first."""
    pending = [{"type": "http.request", "body": raw, "more_body": False}]

    async def replayed() -> Any:
        if pending:
            return pending.pop()
        return await receive()

    return replayed


def _header(headers: Any, wanted: bytes) -> str | None:
    for name, value in headers:
        if name == wanted:
            return value.decode("latin-1") or None
    return None


# -- the routes ---------------------------------------------------------------------


class _Body:
    """A request body as its ASGI events bring it, within ``limit`` bytes."""

    __slots__ = ("left", "limit", "more", "parts", "size")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[bytes] = []
        self.size = 0
        # Until the last part, or the client leaving (``left``).
        self.more = True
        self.left = False

    def take(self, event: Any) -> None:
        """
        Add one ``receive()`` event.

        Error handling: ``PayloadTooLarge`` past the limit.
        """
        if event["type"] != "http.request":  # http.disconnect: the client left
            self.more, self.left = False, True
            return
        part = event.get("body", b"")
        self.size += len(part)
        if self.size > self.limit:
            raise PayloadTooLarge("request body is over the size limit")
        self.parts.append(part)
        self.more = bool(event.get("more_body", False))

    def whole(self) -> bytes | None:
        """The whole body, None if the client left."""
        if self.left:
            return None
        return self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)


def direct_routes(runtime: Runtime, settings: Settings) -> dict[str, DirectRoute]:
    """The direct routes by path, all ``POST``: ``/message`` and ``/v1/chat/completions``."""
    rt = runtime

    def message(value: Any, headers: Any) -> Callable[[], Awaitable[Whole]] | None:
        body = convert(value, MessageBody)
        if body.streaming:
            return None
        llm_request = rt.request(**body.request_kwargs(), **body.message_kwargs())

        async def answer() -> Whole:
            reply = await rt.send(llm_request)
            return Whole(encode(reply.to_dict()))

        return answer

    def chat_completions(value: Any, headers: Any) -> Callable[[], Awaitable[Whole]] | None:
        body = convert(value, ChatCompletionBody)
        if body.stream:
            return None
        parsed = openai_request(
            body,
            present(value),
            context_id=_header(headers, _CONTEXT),
            component=_header(headers, _COMPONENT),
        )
        llm_request = rt.request(**parsed.kwargs)

        async def answer() -> Whole:
            reply = await rt.send(llm_request)
            completion = openai_completion(reply, int(time.time()))
            return Whole(encode(completion), headers=reply_headers(reply))

        return answer

    def openai_shape(error: RhetorError) -> tuple[int, Mapping[str, str], Any]:
        reply = openai_error(error)
        return reply.status, reply.headers, reply.body

    return {
        "/message": DirectRoute("/message", message, error_parts, settings),
        # With anthropic-version, the /v1 blueprint answers errors in Anthropic's shape.
        "/v1/chat/completions": DirectRoute(
            "/v1/chat/completions", chat_completions, openai_shape, settings, b"anthropic-version"
        ),
    }
