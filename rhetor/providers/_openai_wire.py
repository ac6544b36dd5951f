"""
The OpenAI Chat Completions wire format: request bodies, replies, stream chunks and
error bodies, with no I/O (:mod:`rhetor.providers._openai` sends and receives).

A request is built in three steps, each the place where later fields go:
:func:`chat_body` (the top-level fields), :func:`chat_messages` (the conversation),
:func:`chat_message` (one turn, whose content is text today and a list of parts
once turns carry images or tool calls). A reply is read field by field and checked
as it is read: usage in :func:`usage_of`, the rest in :func:`completion` and
:class:`ChunkReading` (one call's stream). Error statuses and error objects inside
a stream become :mod:`rhetor._errors` in :func:`translated`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from rhetor._errors import (
    AuthenticationFailed,
    BadRequest,
    ContextTooLong,
    Overloaded,
    ProviderError,
    RateLimited,
    UpstreamServerError,
    UpstreamTimeout,
)
from rhetor._types import ChatMessage, ProviderReply, ProviderRequest, StreamEnd, TextDelta, Usage
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
    retry_after,
    token_count,
    usage_anomaly,
)

__all__ = [
    "ChunkReading",
    "chat_body",
    "chat_message",
    "chat_messages",
    "completion",
    "translated",
    "usage_of",
]


def chat_body(request: ProviderRequest, *, stream: bool, max_tokens_field: str) -> dict[str, Any]:
    """
    The JSON body of ``POST /chat/completions`` for ``request``.

    A stream asks for ``stream_options.include_usage``, so that its last chunk
    before ``[DONE]`` carries the usage. ``max_tokens_field`` is OpenAI's
    ``max_completion_tokens`` or, for older compatible servers, ``max_tokens``.
    """
    body: dict[str, Any] = {"model": request.model, "messages": chat_messages(request)}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.max_tokens is not None:
        body[max_tokens_field] = request.max_tokens
    return body


def chat_messages(request: ProviderRequest) -> list[dict[str, Any]]:
    """
    The conversation: the system prompt first, then the user and assistant turns in order.
    """
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    messages.extend(chat_message(m) for m in request.messages if m.role != "system")
    return messages


def chat_message(message: ChatMessage) -> dict[str, Any]:
    """
    One turn as Chat Completions writes it.
    """
    return {"role": message.role, "content": message.content}


def usage_of(usage: object, provider: str = "openai") -> tuple[Usage, bool]:
    """
    The one reading of an OpenAI ``usage`` object: the tokens, and whether they are valid.

    ``prompt_tokens`` and ``completion_tokens`` must be counts (:func:`token_count`);
    when the usage is missing or either is not, the anomaly is logged and the answer
    is what could be read (never negative) with ``False``, so that the call is billed
    at its reservation's worst case. Never raises, whatever ``usage`` is.
    """
    if not isinstance(usage, Mapping):
        usage_anomaly(provider, usage, "no usage object" if usage is None else "not an object")
        return Usage(), False
    prompt = token_count(usage.get("prompt_tokens"))
    completion = token_count(usage.get("completion_tokens"))
    if prompt is None or completion is None:
        usage_anomaly(provider, usage, "prompt_tokens and completion_tokens must be counts")
        return Usage(prompt or 0, completion or 0), False
    details = usage.get("prompt_tokens_details")
    cached = token_count(details.get("cached_tokens")) if isinstance(details, Mapping) else None
    return Usage(prompt, completion, cached or 0), True


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
    finish_reason = optional_text(choice.get("finish_reason"), "finish_reason")
    usage, valid = usage_of(body.get("usage"), provider)
    return ProviderReply(
        text=text,
        model=model_name(body.get("model")) or request.model,
        usage=usage,
        finish_reason=finish_reason or "stop",
        usage_valid=valid,
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

    def take(self, event: tuple[str, str]) -> Sequence[TextDelta]:
        """
        Read one event's data; the text it adds for choice 0, if any.
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
        return (TextDelta("".join(text)),) if text else ()

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
            finish_reason=self.finish_reason or "stop",
            model=self.model,
            usage_valid=valid,
        )


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
