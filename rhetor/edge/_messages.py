"""
The messages blueprint: Rhetor's own LLM requests, whole or streamed.

``POST /message`` (one message), ``POST /chat`` (a list of messages) and
``POST /stream`` (``/message``, always streamed). A body, checked against
its schema (``rhetor.edge._schemas_native``), becomes one
:class:`~rhetor.LLMRequest`; the reply is its JSON, or, with
``streaming``, Server-Sent Events: one ``{chunk, context, model, provider,
done: false}`` event per chunk (with ``tool_calls``, the pieces of the calls
it carries: ``{index, id, name, arguments}``), then the reply with ``done:
true`` (its ``tool_calls`` whole and its ``finish_reason``), or an
event with ``done: true`` and an ``error`` if the stream fails after its first
chunk.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING, Any

from quart import Blueprint, Response

from rhetor._errors import RhetorError
from rhetor.edge._http import error_body, json_response
from rhetor.edge._schema import operation
from rhetor.edge._schemas_content import tool_call_deltas
from rhetor.edge._schemas_events import NATIVE_EVENTS
from rhetor.edge._schemas_native import ChatBody, MessageBody, ReplyBody
from rhetor.edge._sse import ErrorEvent, EventsOf, data, sse_response

if TYPE_CHECKING:
    from rhetor._types import Chunk
    from rhetor.runtime import Runtime

__all__ = [
    "chunk_event",
    "messages_blueprint",
    "native_error_event",
    "native_events",
]


def chunk_event(chunk: Chunk, context: str | None) -> bytes:
    """One chunk as its event: text (and pieces of tool calls) while streaming, the whole reply when done."""
    if chunk.done and chunk.reply is not None:
        return data({**chunk.reply.to_dict(), "chunk": "", "done": True})
    event: dict[str, Any] = {
        "chunk": chunk.text,
        "context": context,
        "model": chunk.model,
        "provider": chunk.provider,
        "done": False,
    }
    if chunk.tool_calls:
        event["tool_calls"] = tool_call_deltas(chunk)
    return data(event)


def native_events(context: str | None) -> EventsOf:
    """The events of a stream for ``context``: one per chunk, ending with the done one."""

    async def events(first: Chunk, rest: AsyncIterator[Chunk]) -> AsyncGenerator[bytes, None]:
        # A piece of Anthropic thinking, or a citation, carries neither text nor calls:
        # not shown here.
        if _shown(first):
            yield chunk_event(first, context)
        if first.done:
            return
        async for chunk in rest:
            if _shown(chunk):
                yield chunk_event(chunk, context)

    return events


def _shown(chunk: Chunk) -> bool:
    return bool(chunk.text or chunk.tool_calls or chunk.done) or not (
        chunk.thinking or chunk.citations
    )


def native_error_event(context: str | None) -> ErrorEvent:
    """The last event of a stream for ``context`` that failed: done, with the error."""

    def error_event(error: RhetorError) -> bytes:
        return data({"chunk": "", "context": context, "done": True, "error": error_body(error)})

    return error_event


def messages_blueprint(runtime: Runtime) -> Blueprint:
    """The ``/message``, ``/chat`` and ``/stream`` routes over ``runtime``."""
    bp = Blueprint("messages", __name__)
    rt = runtime

    async def answer(kwargs: dict[str, Any], streaming: bool) -> Response:
        llm_request = rt.request(**kwargs)
        if streaming:
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
    @operation(body=MessageBody, reply=ReplyBody, streams=True, events=NATIVE_EVENTS)
    async def message(body: MessageBody) -> Response:
        """
        One message to a model; with ``streaming``, answered as ``/stream`` is.
        """
        return await answer(
            {**body.request_kwargs(), **body.message_kwargs()}, bool(body.streaming)
        )

    @bp.post("/stream")
    @operation(
        body=MessageBody, streams=True, content_type="text/event-stream", events=NATIVE_EVENTS
    )
    async def stream(body: MessageBody) -> Response:
        """
        One message to a model, answered as Server-Sent Events.

        One ``{chunk, context, model, provider, done: false}`` event per chunk,
        then the reply with ``chunk: ""`` and ``done: true``. A request refused
        before anything streams gets its JSON error instead; a failure after
        the first chunk is a last event with ``done: true`` and an ``error``.
        """
        return await answer({**body.request_kwargs(), **body.message_kwargs()}, True)

    @bp.post("/chat")
    @operation(body=ChatBody, reply=ReplyBody, streams=True, events=NATIVE_EVENTS)
    async def chat(body: ChatBody) -> Response:
        """
        A conversation; with a ``context_id``, the turns it already holds are not repeated.

        System messages become the system prompt (unless ``system_prompt`` is
        given) and are never stored. Of the client's turns, those up to the
        latest point where they end with the context's newest stored turns are
        repeats; only the turns after it are sent after the stored history and
        stored with the reply (see docs/api.md).
        """
        kwargs = {**body.request_kwargs(), "messages": body.chat_messages()}
        return await answer(kwargs, bool(body.streaming))

    return bp
