"""
The OpenAI half of ``/v1``: Chat Completions, whole or streamed, in OpenAI's wire format.

``POST /v1/chat/completions`` reads a Chat Completions body
(:func:`openai_request`) and answers a ``chat.completion`` object, or with
``stream`` the ``chat.completion.chunk`` events ending in ``data: [DONE]``.
:func:`openai_error` is the one place a :class:`RhetorError` becomes OpenAI's
error body; :func:`openai_model` is a model in OpenAI's list format, for
``/v1/models`` (``rhetor.edge._compat_v1``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, cast

from quart import Blueprint, Response, request

from rhetor import observe
from rhetor._errors import BudgetExceeded, ContextTooLong, NotFound, RhetorError, ValidationError
from rhetor._types import ChatMessage
from rhetor.edge._compat import (
    CompatRequest,
    ErrorReply,
    Role,
    reply_headers,
    rhetor_headers,
    route_model,
    status_and_headers,
    text_of,
)
from rhetor.edge._fields import read_bool, read_int, read_number, read_object, read_str
from rhetor.edge._http import json_response, read_body
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

_ROLES = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
}
_PARTS = frozenset({"text", "refusal"})
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
    body: Mapping[str, Any], *, context_id: str | None = None, component: str | None = None
) -> CompatRequest:
    """
    Read an OpenAI Chat Completions body; the context and component come from headers.

    Unknown parameters are ignored, as tools built for OpenAI send many.

    Error handling: raises :class:`ValidationError` (or :class:`NotFound` for an
    unknown alias) naming the first bad field.
    """
    model = read_str(body, "model", required=True)
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise ValidationError("messages", "must be a non-empty array")
    messages = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise ValidationError(f"messages[{i}]", "must be an object")
        raw_role = m.get("role")
        # Only a string can be looked up: a list or object role is the client's error.
        role = _ROLES.get(raw_role) if isinstance(raw_role, str) else None
        if role is None:
            raise ValidationError(
                f"messages[{i}].role",
                f"role {raw_role!r} is not supported; use system, developer, user or assistant",
            )
        text = text_of(m.get("content"), f"messages[{i}].content", allowed=_PARTS)
        messages.append(ChatMessage(cast("Role", role), text))
    n = read_int(body, "n", minimum=1)
    if n is not None and n > 1:
        raise ValidationError("n", "only one choice (n=1) is supported")
    max_tokens = read_int(body, "max_completion_tokens", minimum=1)
    if max_tokens is None:
        max_tokens = read_int(body, "max_tokens", minimum=1)
    stream = read_bool(body, "stream", False)
    options = read_object(body, "stream_options") or {}
    kwargs = {
        "context_id": context_id,
        "component": component,
        **route_model(model),
        "messages": tuple(messages),
        "temperature": read_number(body, "temperature"),
        "max_tokens": max_tokens,
    }
    return CompatRequest(kwargs, stream, stream and read_bool(options, "include_usage", False))


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
    async def chat_completions() -> Response:
        parsed = openai_request(await read_body(), **rhetor_headers(request.headers))
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
