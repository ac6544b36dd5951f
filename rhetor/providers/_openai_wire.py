"""
The OpenAI Chat Completions wire format: request bodies, replies, stream chunks and
error bodies, with no I/O (:mod:`rhetor.providers._openai` sends and receives).

A request is built in :func:`chat_body` (the top-level fields: sampling, tools, tool
choice, response format, and a same-family client's untranslated parameters) and
:func:`chat_messages` (the conversation, each turn written by
:mod:`rhetor.providers._openai_shapes`: text, image parts, assistant ``tool_calls``,
``tool`` messages for tool results). A reply is read field by field and checked as
it is read: usage in :func:`usage_of` (with the cached-prompt and reasoning token
details), the rest in :func:`completion` and :class:`ChunkReading` (one call's
stream, whose ``tool_calls`` deltas carry an index, then the call's id and name,
then fragments of its arguments). Error statuses and error objects inside a stream
become :mod:`rhetor._errors` in :func:`translated`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from rhetor._content import ToolCall, ToolCallDelta, finish_reason
from rhetor._errors import (
    AuthenticationFailed,
    BadRequest,
    ContextTooLong,
    Overloaded,
    ProviderError,
    RateLimited,
    UpstreamServerError,
    UpstreamTimeout,
    ValidationError,
)
from rhetor._types import ProviderReply, ProviderRequest, StreamEnd, TextDelta, Usage
from rhetor.providers._families import OPENAI
from rhetor.providers._openai_shapes import (
    messages_to_openai,
    response_format_to_openai,
    tool_calls_from_openai,
    tool_choice_to_openai,
    tools_to_openai,
)
from rhetor.providers._shapes import Untranslatable
from rhetor.providers._wire import (
    MalformedReply,
    ServerSentEvents,
    StreamedError,
    StreamIncomplete,
    UpstreamStatus,
    decode_json,
    error_detail_text,
    model_name,
    optional_text,
    preview,
    relay,
    retry_after,
    token_count,
    usage_anomaly,
)

__all__ = [
    "ChunkReading",
    "chat_body",
    "chat_messages",
    "completion",
    "translated",
    "usage_of",
]


def chat_body(
    request: ProviderRequest, *, stream: bool, max_tokens_field: str, provider: str = OPENAI
) -> dict[str, Any]:
    """
    The JSON body of ``POST /chat/completions`` for ``request``.

    A stream asks for ``stream_options.include_usage``, so that its last chunk
    before ``[DONE]`` carries the usage. ``max_tokens_field`` is OpenAI's
    ``max_completion_tokens`` or, for older compatible servers, ``max_tokens``.
    The request's tools, tool choice, response format, stop sequences, ``top_p``,
    ``seed``, ``user`` and ``metadata`` go as OpenAI names them; an OpenAI client's
    untranslated parameters (``passthrough``) are added as they came, under
    whatever Rhetor sets itself.

    Error handling: content OpenAI cannot carry (an image in a tool result) is
    :class:`rhetor.BadRequest` from ``provider``, before anything is sent.
    """
    try:
        messages = chat_messages(request)
    except Untranslatable as exc:
        raise BadRequest(
            f"{exc.field}: {exc.message}", provider=provider, model=request.model
        ) from None
    body: dict[str, Any] = {"model": request.model, "messages": messages}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.max_tokens is not None:
        body[max_tokens_field] = request.max_tokens
    if request.tools:
        body["tools"] = tools_to_openai(request.tools)
        if request.tool_choice is not None:
            body.update(tool_choice_to_openai(request.tool_choice))
    if request.response_format is not None:
        body["response_format"] = response_format_to_openai(request.response_format)
    if request.stop:
        body["stop"] = list(request.stop)
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.seed is not None:
        body["seed"] = request.seed
    if request.user is not None:
        body["user"] = request.user
    if request.metadata:
        body["metadata"] = dict(request.metadata)
    extra = request.passthrough
    if extra is not None and extra.family == OPENAI:
        relay(body, extra.params)
    return body


def chat_messages(request: ProviderRequest) -> list[dict[str, Any]]:
    """
    The conversation: the system prompt first, then the user and assistant turns in order.

    Error handling: content OpenAI cannot carry raises
    :class:`rhetor.providers._shapes.Untranslatable`.
    """
    return messages_to_openai(request.messages, request.system)


def _details(usage: Mapping[str, Any], key: str, part: str) -> int:
    """A count inside a usage details object (0 when absent or not a count)."""
    details = usage.get(key)
    count = token_count(details.get(part)) if isinstance(details, Mapping) else None
    return count or 0


def usage_of(usage: object, provider: str = "openai") -> tuple[Usage, bool]:
    """
    The one reading of an OpenAI ``usage`` object: the tokens, and whether they are valid.

    ``prompt_tokens`` and ``completion_tokens`` must be counts (:func:`token_count`);
    when the usage is missing or either is not, the anomaly is logged and the answer
    is what could be read (never negative) with ``False``, so that the call is billed
    at its reservation's worst case. The cached-prompt and reasoning counts
    (``prompt_tokens_details.cached_tokens``, ``completion_tokens_details.reasoning_tokens``)
    are read where they are counts and never above their totals. Never raises,
    whatever ``usage`` is.
    """
    if not isinstance(usage, Mapping):
        usage_anomaly(provider, usage, "no usage object" if usage is None else "not an object")
        return Usage(), False
    prompt = token_count(usage.get("prompt_tokens"))
    completion = token_count(usage.get("completion_tokens"))
    if prompt is None or completion is None:
        usage_anomaly(provider, usage, "prompt_tokens and completion_tokens must be counts")
        return Usage(prompt or 0, completion or 0), False
    cached = min(_details(usage, "prompt_tokens_details", "cached_tokens"), prompt)
    reasoning = min(_details(usage, "completion_tokens_details", "reasoning_tokens"), completion)
    return Usage(prompt, completion, cached, reasoning), True


def completion(body: object, request: ProviderRequest, provider: str) -> ProviderReply:
    """
    A decoded chat completion as a reply; :class:`MalformedReply` when it is not one.
    """
    if not isinstance(body, Mapping):
        raise MalformedReply(f"the reply is {type(body).__name__}, not a chat completion")
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        raise MalformedReply("the reply has no choices")
    choice = choices[0]
    message = choice.get("message") if isinstance(choice, Mapping) else None
    if not isinstance(message, Mapping):
        raise MalformedReply("choices[0] has no message object")
    text = optional_text(message.get("content"), "message.content") or ""
    calls: tuple[ToolCall, ...] = ()
    if message.get("tool_calls") is not None:
        try:
            calls = tool_calls_from_openai(message["tool_calls"], "message.tool_calls")
        except ValidationError as exc:
            raise MalformedReply(exc.message) from None
    reason = optional_text(choice.get("finish_reason"), "finish_reason")
    usage, valid = usage_of(body.get("usage"), provider)
    return ProviderReply(
        text=text,
        model=model_name(body.get("model")) or request.model,
        usage=usage,
        finish_reason=finish_reason(reason, tool_calls=bool(calls)),
        usage_valid=valid,
        tool_calls=calls,
    )


@attrs.define
class ChunkReading:
    """
    One stream's ``chat.completion.chunk`` events, read as they come (a StreamReading).

    Chunks arrive through :meth:`take` as the SSE data of each event; anything that is
    not a ``chat.completion.chunk`` raises :class:`MalformedReply`, and an error object
    :class:`StreamedError`.
    """

    model: str
    provider: str = "openai"
    usage: object = None
    finish_reason: str | None = None
    # Set by [DONE]: nothing after it is read.
    finished: bool = False
    # Set by the first tool-call delta: the reply calls tools.
    called: bool = False
    _events: ServerSentEvents = attrs.field(factory=ServerSentEvents)

    def feed(self, data: bytes) -> list[tuple[str, str]]:
        """
        The server-sent events these bytes complete.
        """
        return self._events.feed(data)

    def flush(self) -> Sequence[tuple[str, str]]:
        """
        Nothing: an event is complete only at its blank line.
        """
        return ()

    def take(self, event: tuple[str, str]) -> Sequence[TextDelta | ToolCallDelta]:
        """
        Read one event's data; the text and tool-call deltas it adds for choice 0.
        """
        payload = event[1]
        if self.finished:
            return ()
        if payload.strip() == "[DONE]":
            self.finished = True
            return ()
        chunk = _chunk(payload)
        self.model = model_name(chunk.get("model")) or self.model
        # Only the last chunk carries usage; the others send null.
        if chunk.get("usage") is not None:
            self.usage = chunk["usage"]
        choices = chunk.get("choices")
        if choices is None:
            return ()
        if not isinstance(choices, list):
            raise MalformedReply("a chunk's choices is not a list")
        text: list[str] = []
        calls: list[ToolCallDelta] = []
        for choice in choices:
            if not isinstance(choice, Mapping):
                raise MalformedReply("a chunk's choice is not an object")
            if choice.get("index", 0) != 0:
                continue
            self.finish_reason = (
                optional_text(choice.get("finish_reason"), "finish_reason") or self.finish_reason
            )
            delta = choice.get("delta")
            if delta is None:
                continue
            if not isinstance(delta, Mapping):
                raise MalformedReply("a chunk's delta is not an object")
            if content := optional_text(delta.get("content"), "delta.content"):
                text.append(content)
            if delta.get("tool_calls") is not None:
                calls.extend(_call_deltas(delta["tool_calls"]))
        self.called = self.called or bool(calls)
        items: list[TextDelta | ToolCallDelta] = [TextDelta("".join(text))] if text else []
        return [*items, *calls]

    def end(self) -> StreamEnd:
        """
        The stream's last item, from what the chunks said.

        A body that ended without ``[DONE]`` is complete when a finish reason came
        (some compatible servers omit ``[DONE]``); else :class:`StreamIncomplete`.
        """
        if not self.finished and self.finish_reason is None:
            raise StreamIncomplete("ended before the reply finished")
        usage, valid = usage_of(self.usage, self.provider)
        return StreamEnd(
            usage=usage,
            finish_reason=finish_reason(self.finish_reason, tool_calls=self.called),
            model=self.model,
            usage_valid=valid,
        )


def _call_deltas(raw: object) -> list[ToolCallDelta]:
    """
    A delta's ``tool_calls`` pieces: each its index, and the id, name or arguments fragment it adds.

    A piece without an index (some compatible servers) takes its place in the list.
    """
    if not isinstance(raw, list):
        raise MalformedReply("a delta's tool_calls is not a list")
    deltas = []
    for k, piece in enumerate(raw):
        if not isinstance(piece, Mapping):
            raise MalformedReply("a tool call delta is not an object")
        index = piece.get("index")
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < 1024:
            if index is not None:
                raise MalformedReply(f"a tool call delta's index is {preview(index)}")
            index = k
        function = piece.get("function") or {}
        if not isinstance(function, Mapping):
            raise MalformedReply("a tool call delta's function is not an object")
        deltas.append(
            ToolCallDelta(
                index,
                optional_text(piece.get("id"), "tool_calls.id") or None,
                optional_text(function.get("name"), "tool_calls.function.name") or None,
                optional_text(function.get("arguments"), "tool_calls.function.arguments") or "",
            )
        )
    return deltas


def _chunk(payload: str) -> Mapping[str, Any]:
    """
    One decoded ``chat.completion.chunk``; raises :class:`StreamedError` for an error object.
    """
    chunk = decode_json(payload)
    if not isinstance(chunk, Mapping):
        raise MalformedReply(f"a stream event is {type(chunk).__name__}, not a chunk")
    if chunk.get("error"):
        raise StreamedError(_detail(chunk), chunk)
    return chunk


def translated(exc: Exception, provider: str, model: str | None) -> ProviderError | None:
    """
    The one reading of OpenAI's failures: an error status or an error object in a stream
    as a Rhetor error; None for what is not one (the transport's are read elsewhere).
    """
    if isinstance(exc, UpstreamStatus):
        return _status_error(exc, provider, model)
    if isinstance(exc, StreamedError):
        return _body_error(str(exc), exc.body, provider, model)
    return None


def _status_error(exc: UpstreamStatus, provider: str, model: str | None) -> ProviderError:
    status = exc.status
    body = exc.json()
    detail = error_detail_text(exc, _detail(body))
    message = f"{provider} answered {status}: {detail}"
    if status in (401, 403):
        return AuthenticationFailed(message, provider=provider, model=model)
    if status == 429:
        return RateLimited(
            message, provider=provider, model=model, retry_after=retry_after(exc.headers)
        )
    if status == 408:
        return UpstreamTimeout(message, provider=provider, model=model)
    if status == 529 or (status == 503 and "overload" in detail.lower()):
        return Overloaded(message, provider=provider, model=model)
    if status >= 500 or status < 400:
        # A 3xx is a redirect (not followed): no chat completion answers one.
        return UpstreamServerError(message, provider=provider, model=model)
    if status == 413 or _is_context_overflow(body, detail):
        return ContextTooLong(message, provider=provider, model=model)
    return BadRequest(message, provider=provider, model=model)


def _body_error(message: str, body: object, provider: str, model: str | None) -> ProviderError:
    detail = _detail(body) or message
    text = f"{provider} reported: {detail}"
    inner = body.get("error", body) if isinstance(body, Mapping) else None
    error = inner if isinstance(inner, Mapping) else {}
    kind = f"{error.get('type')} {error.get('code')}".lower()
    if _is_context_overflow(body, detail):
        return ContextTooLong(text, provider=provider, model=model)
    if "rate_limit" in kind:
        return RateLimited(text, provider=provider, model=model)
    if "overload" in detail.lower() or "overload" in kind:
        return Overloaded(text, provider=provider, model=model)
    if "invalid_request" in kind:
        return BadRequest(text, provider=provider, model=model)
    return UpstreamServerError(text, provider=provider, model=model)


def _detail(body: object) -> str:
    """
    The error message in an OpenAI error body (``{"error": {...}}`` or the inner object).
    """
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
    return ""


def _is_context_overflow(body: object, detail: str) -> bool:
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping) and inner.get("code") == "context_length_exceeded":
            return True
    lowered = detail.lower()
    return "maximum context length" in lowered or "context_length_exceeded" in lowered
