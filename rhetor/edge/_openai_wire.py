"""
OpenAI's Chat Completions wire format at the edge: requests read, replies and errors written.

:func:`openai_request` reads a checked ``ChatCompletionBody``;
:func:`openai_completion` and :func:`openai_events` write a reply, whole or as
``chat.completion.chunk`` events; :func:`openai_error` is the one place a
:class:`RhetorError` becomes OpenAI's error body; :func:`openai_model` is a
model in OpenAI's list format. The blueprint (``rhetor.edge._compat_openai``),
the direct route (``rhetor.edge._direct``) and ``/v1`` (``rhetor.edge._compat_v1``)
share them.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from rhetor import observe
from rhetor._errors import BudgetExceeded, ContextTooLong, NotFound, RhetorError
from rhetor.edge._compat import CompatRequest, ErrorReply, route_model, status_and_headers
from rhetor.edge._schemas_openai import ChatCompletionBody
from rhetor.edge._sse import EventsOf, data
from rhetor.providers._openai_replies import OpenAIChunks, completion_to_openai
from rhetor.providers._openai_shapes import fields_from_openai

if TYPE_CHECKING:
    from rhetor._types import Chunk, Reply

__all__ = [
    "openai_completion",
    "openai_error",
    "openai_error_event",
    "openai_events",
    "openai_model",
    "openai_request",
]

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_exceeded",
}


# -- requests ---------------------------------------------------------------------


def openai_request(
    body: ChatCompletionBody,
    raw: Mapping[str, Any],
    *,
    context_id: str | None = None,
    component: str | None = None,
) -> CompatRequest:
    """
    A checked Chat Completions body as ``Runtime.request`` arguments; context and component come from headers.

    ``raw`` is the body as sent: its conversation, tools, tool choice, response
    format, stop sequences, sampling fields, user and metadata are translated
    by ``fields_from_openai``, and every parameter Rhetor does not translate is
    kept as an OpenAI passthrough (relayed to an OpenAI-compatible upstream;
    refused, unless harmless, by the Router for another family's).

    Error handling: :class:`NotFound` for an unknown ``rhetor/`` alias;
    :class:`ValidationError` naming a field the translation cannot read.
    """
    max_tokens = body.max_completion_tokens
    if max_tokens is None:
        max_tokens = body.max_tokens
    stream = bool(body.stream)
    options = body.stream_options
    kwargs = {
        "context_id": context_id,
        "component": component,
        **route_model(body.model),
        **fields_from_openai(raw),
        "temperature": body.temperature,
        "max_tokens": None if max_tokens is None else int(max_tokens),
    }
    include_usage = stream and options is not None and bool(options.include_usage)
    return CompatRequest(kwargs, stream, include_usage)


# -- errors -----------------------------------------------------------------------


def openai_error(error: RhetorError) -> ErrorReply:
    """
    ``error`` as OpenAI's ``{"error": {message, type, param, code}}``, plus ``request_id``.

    A budget refusal is a 429 of type ``insufficient_quota`` (what OpenAI sends
    for an exhausted quota, raised by the SDK as ``RateLimitError``) with code
    ``budget_exceeded`` and ``x-should-retry: false``.
    """
    status, headers = status_and_headers(error)
    code: str | None = error.code
    if isinstance(error, BudgetExceeded):
        status, kind = 429, "insufficient_quota"
    else:
        kind = _ERROR_TYPES.get(
            status, "server_error" if status >= 500 else "invalid_request_error"
        )
    if status == 401:
        code = "invalid_api_key"
    elif isinstance(error, NotFound) and error.kind == "model":
        code = "model_not_found"
    elif isinstance(error, ContextTooLong):
        code = "context_length_exceeded"
    fields: dict[str, Any] = {"message": error.message, "type": kind, "param": error.field}
    fields["code"] = code
    request_id = observe.request_id()
    if request_id is not None:
        fields["request_id"] = request_id  # an extra member; OpenAI's SDK keeps it in .body
    return ErrorReply(status, {"error": fields}, headers)


def openai_error_event(error: RhetorError) -> bytes:
    """The in-stream error event: OpenAI's error body as one ``data:`` event."""
    return data(openai_error(error).body)


# -- replies ----------------------------------------------------------------------


def openai_completion(reply: Reply, created: int) -> dict[str, Any]:
    """A whole reply as a ``chat.completion``: text, ``tool_calls``, and usage with its details."""
    return completion_to_openai(reply, created)


def openai_events(request_id: str, include_usage: bool) -> EventsOf:
    """
    The ``chat.completion.chunk`` events of a stream, ending in ``[DONE]``.

    Text arrives as ``delta.content``; tool calls as ``delta.tool_calls``
    items with their ``index``, the call's ``id`` and function ``name`` in the
    first, then ``function.arguments`` fragments, as OpenAI streams them.
    """
    chunks = OpenAIChunks(f"chatcmpl-{request_id}", int(time.time()))

    async def events(first: Chunk, rest: AsyncIterator[Chunk]) -> AsyncGenerator[bytes, None]:
        yield data(chunks.first(first.model))
        current: Chunk | None = first
        while current is not None:
            for written in chunks.of(current):
                yield data(written)
            if current.done and current.reply is not None:
                for written in chunks.last(current.reply, include_usage):
                    yield data(written)
                yield data("[DONE]")
                return
            current = await anext(rest, None)

    return events


def openai_model(model: str, owner: str) -> dict[str, Any]:
    """A model in OpenAI's ``/v1/models`` format."""
    return {"id": model, "object": "model", "created": 0, "owned_by": owner}
