"""
Server-Sent Events: the one helper behind every streamed HTTP reply.

Rhetor's ``/stream`` (and ``/message`` or ``/chat`` with ``streaming``), the
OpenAI ``chat.completion.chunk`` stream and the Anthropic Messages stream
differ only in their events. Each API gives :func:`sse_response` a function
turning the chunks into its events and one turning an error into its error
event; framing, the answer to a request refused before its first chunk, the
error event after it, and cancellation when the client leaves are here, once.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import trio
from quart import Response

from rhetor._errors import RhetorError
from rhetor.edge._http import rhetor_error
from rhetor.edge._json import encode

if TYPE_CHECKING:
    from rhetor._types import Chunk

__all__ = ["SSE_HEADERS", "ErrorEvent", "EventsOf", "data", "event", "sse_response"]

# The events of one stream: given its first chunk and the rest, the bytes to send.
EventsOf = Callable[["Chunk", AsyncIterator["Chunk"]], AsyncGenerator[bytes, None]]
# The last event of a stream that failed after its first chunk.
ErrorEvent = Callable[[RhetorError], bytes]

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# Seconds closing a stream refused before its first chunk may take.
_CLOSE_TIMEOUT = 5.0


def data(body: Mapping[str, Any] | str) -> bytes:
    """One ``data:`` event: ``body`` as JSON, or a string (``[DONE]``) as it is."""
    payload = body.encode() if isinstance(body, str) else encode(body)
    return b"data: " + payload + b"\n\n"


def event(kind: str, body: Mapping[str, Any]) -> bytes:
    """One named event: ``event: kind`` and ``body`` as its JSON data."""
    return b"event: " + kind.encode() + b"\ndata: " + encode(body) + b"\n\n"


async def sse_response(
    chunks: AsyncGenerator[Chunk, None],
    events_of: EventsOf,
    error_event: ErrorEvent,
    *,
    name: str,
) -> Response:
    """
    Answer a stream of chunks (``Runtime.send_stream``) as Server-Sent Events.

    The first chunk is awaited before answering, so a request refused up front
    (budget, validation, no provider) raises here and gets its status and its
    API's JSON error. After that a failure is the API's ``error_event``, the
    stream's last; ``name`` (the request id) names it in the log when it is a
    bug.

    Cancellation: when the client goes away, Quart cancels the response and
    closes its body, whose ``aclosing`` closes ``chunks`` and with it the
    provider call (the router bills what was produced). Chunks refused up
    front are closed here, shielded, within a deadline.
    """
    try:
        first = await chunks.__anext__()
    except BaseException:
        with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_TIMEOUT):
            await chunks.aclose()
        raise

    async def body() -> AsyncIterator[bytes]:
        async with aclosing(chunks), aclosing(events_of(first, chunks)) as events:
            try:
                async for item in events:
                    yield item
            except Exception as exc:
                # No request context while a body is sent: the log names the stream.
                yield error_event(rhetor_error(exc, f"stream {name}"))

    response = Response(body(), content_type="text/event-stream", headers=SSE_HEADERS)
    response.timeout = None  # the router enforces the request's deadline
    return response
