"""
OpenAI- and Anthropic-compatible endpoints, so the official SDKs work against Rhetor.

A Quart blueprint mounted at ``/v1`` by :func:`rhetor.edge._app.create_app`:

- ``POST /v1/chat/completions``: OpenAI Chat Completions, whole or streamed
  (``chat.completion.chunk`` events ending in ``data: [DONE]``);
- ``GET /v1/models`` and ``GET /v1/models/{id}``: every routable model plus the
  ``rhetor/<task>`` aliases, in OpenAI's list format (Anthropic's when the
  request carries ``anthropic-version``, as the Anthropic SDK's always do);
- ``POST /v1/messages``: Anthropic Messages, whole or streamed (``message_start``
  ... ``message_stop`` events).

Like the rest of the edge it only translates: a wire-format body becomes one
:class:`~rhetor.LLMRequest`, and the :class:`~rhetor.Reply` or
its :class:`~rhetor.Chunk` stream becomes the wire format again. Auth,
body limits and CORS are the app's (``create_app``'s ``guard``), so they apply
here unchanged; the Anthropic SDK's ``x-api-key`` header is the app's
``X-API-Key``.

``model`` is either an exact model name (routed to the provider serving it)
or an alias ``rhetor/code|chat|planning|reasoning|default`` (routed by task,
with fallbacks). ``X-Rhetor-Component`` and ``X-Rhetor-Context`` name the
component and context; with a context, the stored history is prepended and
the client's turns that repeat it are dropped by the Router (the rule of
``POST /chat``, in ``docs/api.md``), and without one the request is stateless.

Errors leave in each API's own shape, with a status its SDK maps to the
fitting exception class; :func:`openai_error` and :func:`anthropic_error` are
the one place that mapping lives (the table is in ``docs/compat.md``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, Literal, cast

import attrs
import trio
from quart import Blueprint, Response, request

from rhetor._errors import (
    BadRequest,
    BudgetExceeded,
    ContextTooLong,
    NotFound,
    RateLimited,
    RhetorError,
    ValidationError,
)
from rhetor._settings import Settings
from rhetor._types import ChatMessage
from rhetor.edge._app import _as_rhetor_error, _body, dumps
from rhetor.edge._fields import read_bool, read_int, read_number, read_object, read_str
from rhetor.routing._plan import TASK_TYPES

if TYPE_CHECKING:
    from rhetor._types import Chunk, LLMRequest, Reply
    from rhetor.runtime import Runtime

__all__ = [
    "ALIASES",
    "COMPONENT_HEADER",
    "CONTEXT_HEADER",
    "ErrorReply",
    "anthropic_error",
    "anthropic_request",
    "compat_blueprint",
    "openai_error",
    "openai_request",
    "rhetor_headers",
]

log = logging.getLogger("rhetor.compat")

ALIAS_PREFIX = "rhetor/"
# Alias -> task type; every task the router knows has one.
ALIASES: Mapping[str, str] = {f"{ALIAS_PREFIX}{task}": task for task in TASK_TYPES}
CONTEXT_HEADER = "X-Rhetor-Context"
COMPONENT_HEADER = "X-Rhetor-Component"

Role = Literal["system", "user", "assistant"]
_JSON = "application/json"
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# Rhetor's finish reasons are OpenAI's; Anthropic names them differently.
_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}


# -- requests: wire format -> Runtime.request keyword arguments -----------------


@attrs.frozen
class CompatRequest:
    """
    A compatible request, read: the ``Runtime.request`` arguments and how to answer.
    """

    kwargs: dict[str, Any]
    stream: bool
    include_usage: bool = False


def _route(model: str) -> dict[str, Any]:
    """An alias routes by task; anything else is an exact model name."""
    task = ALIASES.get(model)
    if task is not None:
        return {"task_type": task, "model": None}
    if model.startswith(ALIAS_PREFIX):
        raise NotFound("model", model, field="model")
    return {"task_type": "default", "model": model}


def rhetor_headers(headers: Any) -> dict[str, str | None]:
    """The context and component a request names in Rhetor's headers (absent: None)."""
    return {
        "context_id": headers.get(CONTEXT_HEADER) or None,
        "component": headers.get(COMPONENT_HEADER) or None,
    }


def _text_of(content: Any, field: str, *, allowed: frozenset[str]) -> str:
    """A message's content as text: a string, or an array of text parts."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ValidationError(field, "must be a string or an array of content parts")
    texts = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(kind, str) or kind not in allowed:
            raise ValidationError(
                f"{field}[{i}]", f"content part type {kind!r} is not supported; only text is"
            )
        text = part.get("text", part.get("refusal"))
        if not isinstance(text, str):
            raise ValidationError(f"{field}[{i}].text", "must be a string")
        texts.append(text)
    return "".join(texts)


_OPENAI_ROLES = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
}
_OPENAI_PARTS = frozenset({"text", "refusal"})


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
        role = _OPENAI_ROLES.get(raw_role) if isinstance(raw_role, str) else None
        if role is None:
            raise ValidationError(
                f"messages[{i}].role",
                f"role {raw_role!r} is not supported; use system, developer, user or assistant",
            )
        text = _text_of(m.get("content"), f"messages[{i}].content", allowed=_OPENAI_PARTS)
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
        **_route(model),
        "messages": tuple(messages),
        "temperature": read_number(body, "temperature"),
        "max_tokens": max_tokens,
    }
    return CompatRequest(kwargs, stream, stream and read_bool(options, "include_usage", False))


_ANTHROPIC_PARTS = frozenset({"text"})


def anthropic_request(
    body: Mapping[str, Any], *, context_id: str | None = None, component: str | None = None
) -> CompatRequest:
    """
    Read an Anthropic Messages body; the context and component come from headers.

    ``model``, ``messages`` and ``max_tokens`` are required, as in Anthropic's
    API; ``system`` is a string or an array of text blocks. Unknown parameters
    (``metadata``, ``top_k``, ...) are ignored.

    Error handling: raises :class:`ValidationError` (or :class:`NotFound` for an
    unknown alias) naming the first bad field.
    """
    model = read_str(body, "model", required=True)
    if body.get("max_tokens") is None:
        raise ValidationError("max_tokens", "Field required")
    max_tokens = read_int(body, "max_tokens", minimum=1)
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise ValidationError("messages", "must be a non-empty array")
    messages = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise ValidationError(f"messages[{i}]", "must be an object")
        role = m.get("role")
        if not isinstance(role, str) or role not in ("user", "assistant"):
            raise ValidationError(f"messages[{i}].role", "must be user or assistant")
        text = _text_of(m.get("content"), f"messages[{i}].content", allowed=_ANTHROPIC_PARTS)
        messages.append(ChatMessage(cast("Role", role), text))
    system = body.get("system")
    if system is not None:
        system = _text_of(system, "system", allowed=_ANTHROPIC_PARTS) or None
    temperature = read_number(body, "temperature")
    if temperature is not None and not 0 <= temperature <= 1:
        raise ValidationError("temperature", "must be from 0 to 1")
    kwargs = {
        "context_id": context_id,
        "component": component,
        **_route(model),
        "messages": tuple(messages),
        "system_prompt": system,
        "temperature": temperature,
        "max_tokens": max_tokens,
    }
    return CompatRequest(kwargs, read_bool(body, "stream", False))


# -- errors: RhetorError -> each API's status and body ---------------------------


@attrs.frozen
class ErrorReply:
    """
    An error in one API's wire format: status, JSON body and extra headers.
    """

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = attrs.field(factory=dict)


def _status_and_headers(error: RhetorError) -> tuple[int, dict[str, str]]:
    headers: dict[str, str] = {}
    # Both APIs answer a bad field with 400, which their SDKs raise as BadRequestError.
    status = 400 if isinstance(error, ValidationError) else error.status
    if error.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="rhetor"'
    if isinstance(error, BudgetExceeded):
        # Retrying cannot help before the budget period rolls over.
        headers["x-should-retry"] = "false"
    if isinstance(error, RateLimited) and error.retry_after is not None:
        headers["retry-after"] = f"{error.retry_after:g}"
    return status, headers


_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_exceeded",
}


def openai_error(error: RhetorError) -> ErrorReply:
    """
    ``error`` as OpenAI's ``{"error": {message, type, param, code}}``.

    A budget refusal is a 429 of type ``insufficient_quota`` (what OpenAI sends
    for an exhausted quota, raised by the SDK as ``RateLimitError``) with code
    ``budget_exceeded`` and ``x-should-retry: false``.
    """
    status, headers = _status_and_headers(error)
    code: str | None = error.code
    if isinstance(error, BudgetExceeded):
        status, kind = 429, "insufficient_quota"
    else:
        kind = _OPENAI_TYPES.get(
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


_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def anthropic_error(error: RhetorError) -> ErrorReply:
    """
    ``error`` as Anthropic's ``{"type": "error", "error": {type, message}}``.

    A budget refusal keeps Rhetor's 402, Anthropic's ``billing_error``, which
    the SDK raises as ``PaymentRequiredError`` and does not retry.
    """
    status, headers = _status_and_headers(error)
    if status == 422 or isinstance(error, BadRequest):
        status = 400
    kind = _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    body = {"type": "error", "error": {"type": kind, "message": error.message}}
    return ErrorReply(status, body, headers)


def _as_error(exc: BaseException) -> RhetorError:
    error = _as_rhetor_error(exc)
    if error is None:
        log.error(
            "unexpected %s on %s %s", type(exc).__name__, request.method, request.path, exc_info=exc
        )
        error = RhetorError("internal error; see the server log")
    return error


def _json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(dumps(body), status=status, content_type=_JSON, headers=dict(headers or {}))


def _error_response(reply: ErrorReply) -> Response:
    return _json(reply.body, reply.status, reply.headers)


# -- replies: Reply and Chunk -> each API's wire format ---------------------------


def _reply_headers(reply: Reply) -> dict[str, str]:
    headers = {
        "X-Rhetor-Provider": reply.provider,
        "X-Rhetor-Request-Id": reply.request_id,
        "X-Rhetor-Cost": f"{reply.cost:.8f}",
    }
    if reply.budget_warning:
        headers["X-Rhetor-Budget-Warning"] = reply.budget_warning.replace("\n", " ")
    return headers


def _openai_usage(reply: Reply) -> dict[str, int]:
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
        "usage": _openai_usage(reply),
        "system_fingerprint": None,
    }


def _anthropic_usage(reply: Reply) -> dict[str, int]:
    return {"input_tokens": reply.usage.input_tokens, "output_tokens": reply.usage.output_tokens}


def anthropic_message(reply: Reply) -> dict[str, Any]:
    """A whole reply as an Anthropic ``message`` object."""
    return {
        "id": f"msg_{reply.request_id}",
        "type": "message",
        "role": "assistant",
        "model": reply.model,
        "content": [{"type": "text", "text": reply.message}],
        "stop_reason": _STOP_REASONS.get(reply.finish_reason, "end_turn"),
        "stop_sequence": None,
        "usage": _anthropic_usage(reply),
    }


def _data(body: Mapping[str, Any] | str) -> bytes:
    payload = body if isinstance(body, str) else dumps(body)
    return f"data: {payload}\n\n".encode()


def _event(kind: str, body: Mapping[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {dumps(body)}\n\n".encode()


def openai_events(
    first: Chunk, rest: AsyncIterator[Chunk], request_id: str, include_usage: bool
) -> AsyncGenerator[bytes, None]:
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

    async def events() -> AsyncGenerator[bytes, None]:
        yield _data(chunk(first.model, {"role": "assistant", "content": ""}))
        current: Chunk | None = first
        while current is not None:
            if current.done and current.reply is not None:
                reply = current.reply
                yield _data(chunk(reply.model, {}, reply.finish_reason))
                if include_usage:
                    yield _data({**chunk(reply.model, None), "usage": _openai_usage(reply)})
                yield _data("[DONE]")
                return
            if current.text:
                yield _data(chunk(current.model, {"content": current.text}))
            current = await anext(rest, None)

    return events()


def anthropic_events(
    first: Chunk, rest: AsyncIterator[Chunk], request_id: str
) -> AsyncGenerator[bytes, None]:
    """
    The Messages stream: ``message_start``, one text block's start, deltas and
    stop, then ``message_delta`` (stop reason, usage) and ``message_stop``.

    Input tokens are known only at the end, so ``message_start`` says 0 and
    ``message_delta`` carries the final counts (the SDK takes them from there).
    """

    async def events() -> AsyncGenerator[bytes, None]:
        message: dict[str, Any] = {
            "id": f"msg_{request_id}",
            "type": "message",
            "role": "assistant",
            "model": first.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        yield _event("message_start", {"type": "message_start", "message": message})
        yield _event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        )
        current: Chunk | None = first
        while current is not None:
            if current.done and current.reply is not None:
                reply = current.reply
                yield _event("content_block_stop", {"type": "content_block_stop", "index": 0})
                delta = {
                    "stop_reason": _STOP_REASONS.get(reply.finish_reason, "end_turn"),
                    "stop_sequence": None,
                }
                yield _event(
                    "message_delta",
                    {"type": "message_delta", "delta": delta, "usage": _anthropic_usage(reply)},
                )
                yield _event("message_stop", {"type": "message_stop"})
                return
            if current.text:
                text_delta = {"type": "text_delta", "text": current.text}
                yield _event(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": 0, "delta": text_delta},
                )
            current = await anext(rest, None)

    return events()


# -- the blueprint ----------------------------------------------------------------

EventsOf = Callable[["Chunk", AsyncIterator["Chunk"]], AsyncGenerator[bytes, None]]


async def _stream_response(
    runtime: Runtime,
    llm_request: LLMRequest,
    events_of: EventsOf,
    error_event: Callable[[RhetorError], bytes],
) -> Response:
    """
    Stream a request as Server-Sent Events in one API's format.

    The first chunk is awaited before answering, so a request refused up front
    (budget, validation, no provider) gets its status and the API's error body.
    An error after that is the API's in-stream error event.

    Cancellation: when the client goes away Quart cancels the response and
    closes the body generator; ``aclosing`` then closes ``send_stream`` and
    with it the provider call (the router bills what was produced).
    """
    chunks = runtime.send_stream(llm_request)
    try:
        first = await chunks.__anext__()
    except BaseException:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await chunks.aclose()
        raise

    async def body() -> AsyncIterator[bytes]:
        async with aclosing(chunks), aclosing(events_of(first, chunks)) as events:
            try:
                async for event in events:
                    yield event
            except Exception as exc:
                yield error_event(_as_error(exc))

    response = Response(body(), content_type="text/event-stream", headers=_SSE_HEADERS)
    response.timeout = None  # the router enforces the request's deadline
    return response


def _openai_error_event(error: RhetorError) -> bytes:
    return _data(openai_error(error).body)


def _anthropic_error_event(error: RhetorError) -> bytes:
    return _event("error", anthropic_error(error).body)


def _wants_anthropic() -> bool:
    return request.path.startswith("/v1/messages") or "anthropic-version" in request.headers


def compat_blueprint(runtime: Runtime, settings: Settings | None = None) -> Blueprint:
    """
    The ``/v1`` blueprint: OpenAI Chat Completions, models, Anthropic Messages.

    ``settings`` is accepted for symmetry with ``create_app``; auth and body
    limits are the app's and apply to these routes unchanged.

    Error handling: every error, including auth and size refusals from the
    app's guard, answers in the format of the API the route speaks.
    """
    del settings  # the app's guard applies them
    bp = Blueprint("compat", __name__, url_prefix="/v1")
    rt = runtime

    @bp.errorhandler(Exception)
    async def on_error(exc: Exception) -> Response:
        error = _as_error(exc)
        reply = anthropic_error(error) if _wants_anthropic() else openai_error(error)
        return _error_response(reply)

    @bp.post("/chat/completions")
    async def chat_completions() -> Response:
        parsed = openai_request(await _body(), **rhetor_headers(request.headers))
        llm_request = rt.request(**parsed.kwargs)
        if parsed.stream:

            def events(first: Chunk, rest: AsyncIterator[Chunk]) -> AsyncGenerator[bytes, None]:
                return openai_events(first, rest, llm_request.request_id, parsed.include_usage)

            return await _stream_response(rt, llm_request, events, _openai_error_event)
        reply = await rt.send(llm_request)
        return _json(openai_completion(reply, int(time.time())), headers=_reply_headers(reply))

    @bp.post("/messages")
    async def messages() -> Response:
        parsed = anthropic_request(await _body(), **rhetor_headers(request.headers))
        llm_request = rt.request(**parsed.kwargs)
        if parsed.stream:

            def events(first: Chunk, rest: AsyncIterator[Chunk]) -> AsyncGenerator[bytes, None]:
                return anthropic_events(first, rest, llm_request.request_id)

            return await _stream_response(rt, llm_request, events, _anthropic_error_event)
        reply = await rt.send(llm_request)
        return _json(anthropic_message(reply), headers=_reply_headers(reply))

    async def routable() -> list[tuple[str, str]]:
        """(model, owner) for every model of an available provider, then the aliases."""
        info = await rt.providers()
        found: dict[str, str] = {}
        for provider, status in info["providers"].items():
            if status["available"]:
                for model in status["models"]:
                    found.setdefault(model, provider)
        return [*found.items(), *((alias, "rhetor") for alias in ALIASES)]

    @bp.get("/models")
    async def models() -> Response:
        listed = await routable()
        if _wants_anthropic():
            data = [_anthropic_model(m) for m, _ in listed]
            return _json(
                {
                    "data": data,
                    "has_more": False,
                    "first_id": data[0]["id"] if data else None,
                    "last_id": data[-1]["id"] if data else None,
                }
            )
        return _json({"object": "list", "data": [_openai_model(m, o) for m, o in listed]})

    @bp.get("/models/<path:model_id>")
    async def model(model_id: str) -> Response:
        owner = dict(await routable()).get(model_id)
        if owner is None:
            raise NotFound("model", model_id, field="model")
        if _wants_anthropic():
            return _json(_anthropic_model(model_id))
        return _json(_openai_model(model_id, owner))

    return bp


def _openai_model(model: str, owner: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": 0, "owned_by": owner}


def _anthropic_model(model: str) -> dict[str, Any]:
    return {
        "type": "model",
        "id": model,
        "display_name": model,
        "created_at": "1970-01-01T00:00:00Z",
    }
