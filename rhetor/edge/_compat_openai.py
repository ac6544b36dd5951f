"""
The OpenAI half of ``/v1``: Chat Completions, whole or streamed, in OpenAI's wire format.

``POST /v1/chat/completions`` reads a Chat Completions body (its schema is
``rhetor.edge._schemas_openai.ChatCompletionBody``, turned into a request by
:func:`openai_request`) and answers a ``chat.completion`` object, or with
``stream`` the ``chat.completion.chunk`` events ending in ``data: [DONE]``.
:func:`openai_error` is the one place a :class:`RhetorError` becomes OpenAI's
error body; :func:`openai_model` is a model in OpenAI's list format, for
``/v1/models`` (``rhetor.edge._compat_v1``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING, Any

from quart import Blueprint, Response, request

from rhetor._errors import BudgetExceeded, ContextTooLong, NotFound, RhetorError
from rhetor._types import ChatMessage
from rhetor.edge._compat import (
    CompatRequest,
    ErrorReply,
    Role,
    reply_headers,
    rhetor_headers,
    route_model,
    status_and_headers,
)
from rhetor.edge._http import json_response
from rhetor.edge._schema import operation
from rhetor.edge._schemas_openai import ChatCompletionBody, ChatCompletionReply
from rhetor.edge._sse import EventsOf, data, sse_response

if TYPE_CHECKING:
    from rhetor._types import Chunk, Reply
    from rhetor.runtime import Runtime

__all__ = [
    "openai_blueprint",
    "openai_completion",
    "openai_error",
    "openai_error_event",
    "openai_events",
    "openai_model",
    "openai_request",
]

# developer is OpenAI's newer name for system.
_ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
}
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
    body: ChatCompletionBody, *, context_id: str | None = None, component: str | None = None
) -> CompatRequest:
    """
    A checked Chat Completions body as ``Runtime.request`` arguments; context and component come from headers.

    Error handling: :class:`NotFound` for an unknown ``rhetor/`` alias.
    """
    messages = tuple(ChatMessage(_ROLES[m.role], m.text()) for m in body.messages)
    max_tokens = body.max_completion_tokens
    if max_tokens is None:
        max_tokens = body.max_tokens
    stream = bool(body.stream)
    options = body.stream_options
    kwargs = {
        "context_id": context_id,
        "component": component,
        **route_model(body.model),
        "messages": messages,
        "temperature": body.temperature,
        "max_tokens": None if max_tokens is None else int(max_tokens),
    }
    include_usage = stream and options is not None and bool(options.include_usage)
    return CompatRequest(kwargs, stream, include_usage)


# -- errors -----------------------------------------------------------------------


def openai_error(error: RhetorError) -> ErrorReply:
    """
    ``error`` as OpenAI's ``{"error": {message, type, param, code}}``.

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
    body = {"error": {"message": error.message, "type": kind, "param": error.field, "code": code}}
    return ErrorReply(status, body, headers)


def openai_error_event(error: RhetorError) -> bytes:
    """The in-stream error event: OpenAI's error body as one ``data:`` event."""
    return data(openai_error(error).body)


# -- replies ----------------------------------------------------------------------


def _usage(reply: Reply) -> dict[str, int]:
    usage = reply.usage
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def openai_completion(reply: Reply, created: int) -> dict[str, Any]:
    """A whole reply as a ``chat.completion`` object."""
    return {
        "id": f"chatcmpl-{reply.request_id}",
        "object": "chat.completion",
        "created": created,
        "model": reply.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply.message, "refusal": None},
                "logprobs": None,
                "finish_reason": reply.finish_reason,
            }
        ],
        "usage": _usage(reply),
        "system_fingerprint": None,
    }


def openai_events(request_id: str, include_usage: bool) -> EventsOf:
    """The ``chat.completion.chunk`` events of a stream, ending in ``[DONE]``."""
    ident, created = f"chatcmpl-{request_id}", int(time.time())

    def chunk(
        model: str, delta: dict[str, Any] | None, finish: str | None = None
    ) -> dict[str, Any]:
        choices = (
            []
            if delta is None
            else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        )
        return {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": None,
            "choices": choices,
        }

    async def events(first: Chunk, rest: AsyncIterator[Chunk]) -> AsyncGenerator[bytes, None]:
        yield data(chunk(first.model, {"role": "assistant", "content": ""}))
        current: Chunk | None = first
        while current is not None:
            if current.done and current.reply is not None:
                reply = current.reply
                yield data(chunk(reply.model, {}, reply.finish_reason))
                if include_usage:
                    yield data({**chunk(reply.model, None), "usage": _usage(reply)})
                yield data("[DONE]")
                return
            if current.text:
                yield data(chunk(current.model, {"content": current.text}))
            current = await anext(rest, None)

    return events


def openai_model(model: str, owner: str) -> dict[str, Any]:
    """A model in OpenAI's ``/v1/models`` format."""
    return {"id": model, "object": "model", "created": 0, "owned_by": owner}


# -- the blueprint ----------------------------------------------------------------


def openai_blueprint(runtime: Runtime) -> Blueprint:
    """
    The ``/chat/completions`` route over ``runtime``, mounted under ``/v1``.

    Its errors are answered by the ``/v1`` blueprint (``rhetor.edge._compat_v1``).
    """
    bp = Blueprint("openai", __name__)
    rt = runtime

    @bp.post("/chat/completions")
    @operation(body=ChatCompletionBody, reply=ChatCompletionReply, streams=True)
    async def chat_completions(body: ChatCompletionBody) -> Response:
        """
        OpenAI Chat Completions: a ``chat.completion``, or with ``stream`` its chunks ending in ``[DONE]``.

        ``model`` is a model's name or an alias ``rhetor/<task>``; the headers
        ``X-Rhetor-Context`` and ``X-Rhetor-Component`` name the context and
        component. Rhetor's headers on the reply: ``X-Rhetor-Provider``,
        ``X-Rhetor-Request-Id``, ``X-Rhetor-Cost`` and, when there is one,
        ``X-Rhetor-Budget-Warning``.
        """
        parsed = openai_request(body, **rhetor_headers(request.headers))
        llm_request = rt.request(**parsed.kwargs)
        if parsed.stream:
            return await sse_response(
                rt.send_stream(llm_request),
                openai_events(llm_request.request_id, parsed.include_usage),
                openai_error_event,
                name=llm_request.request_id,
            )
        reply = await rt.send(llm_request)
        return json_response(
            openai_completion(reply, int(time.time())), headers=reply_headers(reply)
        )

    return bp
