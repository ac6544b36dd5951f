"""
The messages blueprint: Rhetor's own LLM requests, whole or streamed.

``POST /message`` (one message), ``POST /chat`` (a list of messages) and
``POST /stream`` (``/message``, always streamed). A body becomes one
:class:`~rhetor.LLMRequest` through
:func:`rhetor.edge._fields.read_llm_request`; the reply is its JSON, or, with
``streaming``, Server-Sent Events: one ``{chunk, context, model, provider,
done: false}`` event per chunk, then the reply with ``done: true``, or an
event with ``done: true`` and an ``error`` if the stream fails after its first
chunk.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from quart import Blueprint, Response

from rhetor._errors import RhetorError
from rhetor.edge._fields import read_llm_request
from rhetor.edge._http import error_body, json_response, read_body
from rhetor.edge._sse import ErrorEvent, EventsOf, data, sse_response

if TYPE_CHECKING:
    from rhetor._types import Chunk
    from rhetor.runtime import Runtime

__all__ = ["chunk_event", "messages_blueprint", "native_error_event", "native_events"]


def chunk_event(chunk: Chunk, context: str | None) -> bytes:
    """One chunk as its event: text while streaming, the whole reply when done."""
    if chunk.done and chunk.reply is not None:
        return data({**chunk.reply.to_dict(), "chunk": "", "done": True})
    return data(
        {
            "chunk": chunk.text,
            "context": context,
            "model": chunk.model,
            "provider": chunk.provider,
            "done": False,
        }
    )


def native_events(context: str | None) -> EventsOf:
    """The events of a stream for ``context``: one per chunk, ending with the done one."""

    async def events(first: Chunk, rest: AsyncIterator[Chunk]) -> AsyncGenerator[bytes, None]:
        yield chunk_event(first, context)
        if first.done:
            return
        async for chunk in rest:
            yield chunk_event(chunk, context)

    return events


def native_error_event(context: str | None) -> ErrorEvent:
    """The last event of a stream for ``context`` that failed: done, with the error."""

    def error_event(error: RhetorError) -> bytes:
        return data({"chunk": "", "context": context, "done": True, "error": error_body(error)})

    return error_event


def messages_blueprint(runtime: Runtime) -> Blueprint:
    """The ``/message``, ``/chat`` and ``/stream`` routes over ``runtime``."""
    bp = Blueprint("messages", __name__)
    rt = runtime

    async def answer(body: Mapping[str, Any], *, chat: bool, stream: bool | None) -> Response:
        options = read_llm_request(body, chat=chat)
        llm_request = rt.request(**options.kwargs)
        if options.streaming if stream is None else stream:
            context = llm_request.context_id
            return await sse_response(
                rt.send_stream(llm_request),
                native_events(context),
                native_error_event(context),
                name=llm_request.request_id,
            )
        reply = await rt.send(llm_request)
        return json_response(reply.to_dict())

    @bp.post("/message")
    async def message() -> Response:
        return await answer(await read_body(), chat=False, stream=None)

    @bp.post("/stream")
    async def stream() -> Response:
        return await answer(await read_body(), chat=False, stream=True)

    @bp.post("/chat")
    async def chat() -> Response:
        return await answer(await read_body(), chat=True, stream=None)

    return bp
