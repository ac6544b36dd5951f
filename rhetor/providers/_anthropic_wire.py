"""
The Anthropic Messages wire format: request bodies, messages, stream events and error
bodies, with no I/O (:mod:`rhetor.providers._anthropic` sends and receives).

The system prompt travels in the ``system`` field; the history is reshaped the way
the Messages API wants it (user first, roles strictly alternating). ``max_tokens`` is
required upstream, so it defaults to :data:`DEFAULT_MAX_TOKENS`. ``temperature`` is
not sent: API version 2026-10-21 (the one the SDK 2.x speaks, and Rhetor with it)
removed the sampling parameters and answers 400 to any of them.

A request is built in :func:`messages_body` (top-level fields: tools, tool choice,
stop sequences, ``metadata.user_id``, the response format's translation, and an
Anthropic client's untranslated parameters) and :func:`anthropic_messages` (the
conversation, reshaped and written by :mod:`rhetor.providers._anthropic_shapes`).
``top_p`` is not sent, as ``temperature`` is not; ``seed`` and ``metadata`` have no
equivalent and are left behind (``docs/compat.md``). A stream is read event by event
in :class:`EventReading`: ``message_start`` carries the input usage,
``content_block_start`` opens a text or ``tool_use`` block (its id and name),
``content_block_delta`` adds text or a fragment of a tool's input
(``input_json_delta``), ``message_delta`` the output usage and stop reason,
``message_stop`` the end; an ``error`` event fails the stream. Usage is read in
:func:`usage_of` alone, and failures become :mod:`rhetor._errors` in :func:`translated`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from rhetor._content import CitationDelta, ThinkingDelta, ToolCallDelta, finish_reason
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
from rhetor._types import ChatMessage, ProviderReply, ProviderRequest, StreamEnd, TextDelta, Usage
from rhetor.providers._anthropic_shapes import (
    citations_of,
    cited_from_anthropic,
    content_from_anthropic,
    messages_to_anthropic,
    response_format_to_anthropic,
    tool_choice_to_anthropic,
    tools_to_anthropic,
)
from rhetor.providers._families import ANTHROPIC
from rhetor.providers._shapes import Untranslatable, compact_json
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
    "API_VERSION",
    "DEFAULT_MAX_TOKENS",
    "EventReading",
    "anthropic_messages",
    "merged_usage",
    "message",
    "messages_body",
    "translated",
    "usage_of",
]

# The Messages API version Rhetor speaks (the anthropic SDK 2.x's).
API_VERSION = "2026-10-21"
# The Messages API requires max_tokens; used when the request leaves it open.
DEFAULT_MAX_TOKENS = 1024


def messages_body(
    request: ProviderRequest, *, stream: bool, provider: str = ANTHROPIC
) -> dict[str, Any]:
    """
    The JSON body of ``POST /v1/messages``.

    Error handling: :class:`rhetor.BadRequest` from ``provider`` for a conversation
    with no user turn, or content Anthropic cannot carry, before anything is sent.
    """
    try:
        messages = anthropic_messages(request.messages)
    except Untranslatable as exc:
        raise BadRequest(
            f"{exc.field}: {exc.message}", provider=provider, model=request.model
        ) from None
    if not messages:
        raise BadRequest(
            "the conversation has no user message", provider=provider, model=request.model
        )
    body: dict[str, Any] = {
        "max_tokens": request.max_tokens if request.max_tokens is not None else DEFAULT_MAX_TOKENS,
        "messages": messages,
        "model": request.model,
    }
    system = request.system
    if request.response_format is not None:
        fields, instruction = response_format_to_anthropic(request.response_format)
        body.update(fields)
        if instruction is not None:
            system = f"{system}\n\n{instruction}" if system else instruction
    if system:
        body["system"] = system
    if request.tools:
        body["tools"] = tools_to_anthropic(request.tools)
        if request.tool_choice is not None:
            body["tool_choice"] = tool_choice_to_anthropic(request.tool_choice)
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    if request.user is not None:
        body["metadata"] = {"user_id": request.user}
    if stream:
        body["stream"] = True
    extra = request.passthrough
    if extra is not None and extra.family == ANTHROPIC:
        relay(body, extra.params)
        _fit_thinking(body)
    return body


# What POST /v1/messages/count_tokens takes of a Messages body (it refuses max_tokens,
# stream, metadata, stop_sequences and the rest).
COUNT_FIELDS = ("model", "messages", "system", "tools", "tool_choice", "thinking", "output_config")


def count_body(request: ProviderRequest, provider: str = ANTHROPIC) -> dict[str, Any]:
    """
    The JSON body of ``POST /v1/messages/count_tokens``: the request's Messages body,
    what the endpoint takes of it.

    Error handling: as :func:`messages_body`.
    """
    body = messages_body(request, stream=False, provider=provider)
    return {key: body[key] for key in COUNT_FIELDS if key in body}


def input_count(body: object) -> int:
    """``input_tokens`` of a count_tokens answer; :class:`MalformedReply` when it has none."""
    count = token_count(body.get("input_tokens")) if isinstance(body, Mapping) else None
    if count is None:
        raise MalformedReply(f"the token count is {preview(body)}, not {{input_tokens}}")
    return count


# The least thinking budget the Messages API takes.
MIN_THINKING_BUDGET = 1024


def _fit_thinking(body: dict[str, Any]) -> None:
    """
    Lower an enabled thinking budget to below ``max_tokens`` (which the API requires).

    Under ``enforce`` the budget may have granted fewer output tokens than the
    client asked for; the thinking budget then shrinks with them rather than
    making the call a 400, as long as the API's least budget still fits.
    """
    thinking = body.get("thinking")
    if not isinstance(thinking, Mapping) or thinking.get("type") != "enabled":
        return
    budget, most = thinking.get("budget_tokens"), body["max_tokens"] - 1
    if type(budget) is int and budget > most >= MIN_THINKING_BUDGET:
        body["thinking"] = {**thinking, "budget_tokens": most}


def anthropic_messages(history: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """
    The history in the shape the Messages API accepts (see
    :func:`rhetor.providers._anthropic_shapes.messages_to_anthropic`).
    """
    return messages_to_anthropic(history)


# The usage fields whose sum is the input: fresh, cache-written and cache-read tokens.
_INPUT_PARTS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def usage_of(usage: object, provider: str = "anthropic") -> tuple[Usage, bool]:
    """
    The one reading of an Anthropic ``usage`` object: the tokens, and whether they are valid.

    Cached prompt tokens (written or read) count as input; those read from the cache
    are also the usage's ``cached_input_tokens``, those written its
    ``cache_write_tokens`` (of which ``cache_creation.ephemeral_1h_input_tokens``
    its ``cache_write_1h_tokens``), and ``output_tokens_details.thinking_tokens``
    its ``reasoning_tokens``. ``input_tokens`` and
    ``output_tokens`` must be counts (:func:`token_count`), the cache counts counts or
    null; when the usage is missing or is not so, the anomaly is logged and the answer
    is what could be read (never negative) with ``False``, so that the call is billed
    at its reservation's worst case. Never raises, whatever ``usage`` is.
    """
    if not isinstance(usage, Mapping):
        usage_anomaly(provider, usage, "no usage object" if usage is None else "not an object")
        return Usage(), False
    fresh, written, read = (usage.get(part) for part in _INPUT_PARTS)
    counts = [token_count(fresh), token_count(usage.get("output_tokens"))]
    # The cache counts may be absent or null (no cache used); not so the others.
    cached = [0 if n is None else token_count(n) for n in (written, read)]
    if None in counts or None in cached:
        usage_anomaly(provider, usage, "input_tokens and output_tokens must be counts")
        return Usage(sum(n or 0 for n in (counts[0], *cached)), counts[1] or 0), False
    output = counts[1] or 0
    details = usage.get("output_tokens_details")
    thinking = token_count(details.get("thinking_tokens")) if isinstance(details, Mapping) else None
    total = sum(n or 0 for n in (counts[0], *cached))
    written = cached[0] or 0
    return (
        Usage(
            total,
            output,
            cached[1] or 0,
            min(thinking or 0, output),
            written,
            min(_written_for_an_hour(usage.get("cache_creation")), written),
        ),
        True,
    )


def _written_for_an_hour(breakdown: object) -> int:
    """Of the cache writes, those kept an hour (``cache_creation.ephemeral_1h_input_tokens``); 0 if not said."""
    if not isinstance(breakdown, Mapping):
        return 0
    return token_count(breakdown.get("ephemeral_1h_input_tokens")) or 0


def merged_usage(earlier: object, update: object) -> object:
    """
    A stream's usage so far, after an event's ``usage``: its non-null fields replace.

    ``message_start`` carries the input counts, ``message_delta`` the cumulative output
    count (and, in newer API versions, the input counts again). Something that is not
    an object, once seen, stays: the usage is then malformed, whatever follows.
    """
    if update is None:
        return earlier
    if not isinstance(update, Mapping):
        return update
    if earlier is not None and not isinstance(earlier, Mapping):
        return earlier
    return {**(earlier or {}), **{k: v for k, v in update.items() if v is not None}}


def message(body: object, request: ProviderRequest, provider: str) -> ProviderReply:
    """
    A decoded Messages API message as a reply; :class:`MalformedReply` when it is not one.
    """
    if not isinstance(body, Mapping):
        raise MalformedReply(f"the reply is {type(body).__name__}, not a message")
    content = body.get("content")
    if not isinstance(content, list):
        raise MalformedReply("the message's content is not a list")
    try:
        text, calls, thinking = content_from_anthropic(content)
        cited = cited_from_anthropic(content)
    except ValidationError as exc:
        raise MalformedReply(exc.message) from None
    stop_reason = optional_text(body.get("stop_reason"), "stop_reason")
    usage, valid = usage_of(body.get("usage"), provider)
    return ProviderReply(
        text=text,
        model=model_name(body.get("model")) or request.model,
        usage=usage,
        finish_reason=finish_reason(stop_reason, tool_calls=bool(calls)),
        usage_valid=valid,
        tool_calls=calls,
        thinking=thinking,
        cited=cited,
    )


# What a stream's events read to.
Item = TextDelta | ToolCallDelta | ThinkingDelta | CitationDelta


@attrs.define
class EventReading:
    """
    One stream's server-sent events, read as they come (a StreamReading).

    Events arrive through :meth:`take` as ``(type, data)``; one that is not what the
    Messages API sends raises :class:`MalformedReply`, an ``error`` event
    :class:`StreamedError`. Each event type is read by its own method. A
    ``tool_use`` block becomes tool-call deltas numbered in the order the calls
    come (not by the block's index, which counts text blocks too): its id and
    name, then each ``input_json_delta`` fragment. A ``thinking`` block becomes
    thinking deltas, numbered in the order the thinking blocks come: its
    ``thinking_delta`` text and its ``signature_delta`` (a ``redacted_thinking``
    block is one delta with its data). Blocks of other types are read past.
    """

    model: str
    provider: str = "anthropic"
    usage: object = None
    stop_reason: str | None = None
    # Set by message_stop: nothing after it is read.
    finished: bool = False
    _events: ServerSentEvents = attrs.field(factory=lambda: ServerSentEvents(keep_dataless=True))
    # Invariant: content block index -> the tool call's number, for each tool_use block so far.
    _calls: dict[int, int] = attrs.field(factory=dict)
    # Invariant: content block index -> the thinking block's number, likewise.
    _thinking: dict[int, int] = attrs.field(factory=dict)

    def feed(self, data: bytes) -> list[tuple[str, str]]:
        """
        The server-sent events these bytes complete, dataless ones kept by their type.
        """
        return self._events.feed(data)

    def flush(self) -> Sequence[tuple[str, str]]:
        """
        Nothing: an event is complete only at its blank line.
        """
        return ()

    def take(self, event: tuple[str, str]) -> Sequence[Item]:
        """
        Read one event; the text or tool-call delta it adds, if any.
        """
        if self.finished:
            return ()
        kind, payload = event
        decoded = _event(kind, payload)
        read = _READERS.get(kind)
        return read(self, decoded) if read is not None else ()

    def _message_start(self, event: Mapping[str, Any]) -> Sequence[Item]:
        started = event.get("message")
        if not isinstance(started, Mapping):
            raise MalformedReply("message_start has no message object")
        self.model = model_name(started.get("model")) or self.model
        self.usage = merged_usage(self.usage, started.get("usage"))
        return ()

    def _content_block_start(self, event: Mapping[str, Any]) -> Sequence[Item]:
        block = event.get("content_block")
        if not isinstance(block, Mapping):
            raise MalformedReply("content_block_start has no content_block object")
        kind = block.get("type")
        if kind in ("thinking", "redacted_thinking"):
            return self._thinking_start(_block_index(event), block)
        if kind != "tool_use":
            text = optional_text(block.get("text"), "a text block's text")
            if kind != "text":
                return ()
            cites = block.get("citations")
            items: list[Item] = [CitationDelta(c) for c in _citations(cites)] if cites else []
            return [*items, TextDelta(text)] if text else items
        index = _block_index(event)
        ident = optional_text(block.get("id"), "a tool_use block's id")
        name = optional_text(block.get("name"), "a tool_use block's name")
        if not ident or not name:
            raise MalformedReply("a tool_use block has no id or name")
        number = self._calls[index] = len(self._calls)
        # The input is {} here and arrives as input_json_delta fragments; a
        # non-empty one (sent whole) is the call's arguments.
        given = block.get("input")
        arguments = compact_json(given) if isinstance(given, Mapping) and given else ""
        return (ToolCallDelta(number, ident, name, arguments),)

    def _thinking_start(self, index: int, block: Mapping[str, Any]) -> Sequence[Item]:
        number = self._thinking[index] = len(self._thinking)
        if block.get("type") == "redacted_thinking":
            data = optional_text(block.get("data"), "a redacted_thinking block's data")
            if not data:
                raise MalformedReply("a redacted_thinking block has no data")
            return (ThinkingDelta(number, redacted=data),)
        text = optional_text(block.get("thinking"), "a thinking block's thinking")
        signature = optional_text(block.get("signature"), "a thinking block's signature")
        return (ThinkingDelta(number, text or "", signature or ""),) if text or signature else ()

    def _content_block_delta(self, event: Mapping[str, Any]) -> Sequence[Item]:
        delta = event.get("delta")
        if not isinstance(delta, Mapping):
            raise MalformedReply("content_block_delta has no delta object")
        if delta.get("type") == "text_delta":
            text = optional_text(delta.get("text"), "a text delta's text")
            return (TextDelta(text),) if text else ()
        if delta.get("type") == "input_json_delta":
            number = self._calls.get(_block_index(event))
            if number is None:
                raise MalformedReply("an input_json_delta for no tool_use block")
            partial = optional_text(delta.get("partial_json"), "an input_json_delta's partial_json")
            return (ToolCallDelta(number, arguments=partial),) if partial else ()
        if delta.get("type") == "citations_delta":
            citation = delta.get("citation")
            if not isinstance(citation, Mapping):
                raise MalformedReply("a citations_delta has no citation object")
            return (CitationDelta(dict(citation)),)
        if delta.get("type") in ("thinking_delta", "signature_delta"):
            number = self._thinking.get(_block_index(event))
            if number is None:
                raise MalformedReply(f"a {delta.get('type')} for no thinking block")
            if delta.get("type") == "thinking_delta":
                text = optional_text(delta.get("thinking"), "a thinking delta's thinking")
                return (ThinkingDelta(number, text),) if text else ()
            signature = optional_text(delta.get("signature"), "a signature delta's signature")
            return (ThinkingDelta(number, signature=signature),) if signature else ()
        return ()

    def _message_delta(self, event: Mapping[str, Any]) -> Sequence[Item]:
        delta = event.get("delta")
        if delta is not None and not isinstance(delta, Mapping):
            raise MalformedReply("message_delta's delta is not an object")
        stop_reason = optional_text((delta or {}).get("stop_reason"), "stop_reason")
        self.stop_reason = stop_reason or self.stop_reason
        self.usage = merged_usage(self.usage, event.get("usage"))
        return ()

    def _message_stop(self, event: Mapping[str, Any]) -> Sequence[Item]:
        self.finished = True
        return ()

    def end(self) -> StreamEnd:
        """
        The stream's last item, from what the events said; :class:`StreamIncomplete`
        before ``message_stop``.
        """
        if not self.finished:
            raise StreamIncomplete("ended before message_stop")
        usage, valid = usage_of(self.usage, self.provider)
        return StreamEnd(
            usage=usage,
            finish_reason=finish_reason(self.stop_reason, tool_calls=bool(self._calls)),
            model=self.model,
            usage_valid=valid,
        )


def _citations(raw: object) -> tuple[Mapping[str, Any], ...]:
    try:
        return citations_of(raw, "citations")
    except ValidationError as exc:
        raise MalformedReply(f"a text block's {exc.message}") from None


def _block_index(event: Mapping[str, Any]) -> int:
    index = event.get("index")
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise MalformedReply(f"a content block event's index is {preview(index)}")
    return index


# How each event type is read; the others (ping, content_block_stop) add nothing.
_READERS: dict[str, Callable[[EventReading, Mapping[str, Any]], Sequence[Item]]] = {
    "message_start": EventReading._message_start,
    "content_block_start": EventReading._content_block_start,
    "content_block_delta": EventReading._content_block_delta,
    "message_delta": EventReading._message_delta,
    "message_stop": EventReading._message_stop,
}


def _event(kind: str, payload: str) -> Mapping[str, Any]:
    """
    One decoded event; raises :class:`StreamedError` for an ``error`` event.
    """
    event = decode_json(payload) if payload else {}
    if not isinstance(event, Mapping):
        raise MalformedReply(f"a {kind} event is {type(event).__name__}, not an object")
    if kind == "error" or event.get("type") == "error":
        error = event.get("error")
        detail = error.get("message") if isinstance(error, Mapping) else None
        raise StreamedError(str(detail or preview(event)), event)
    return event


def translated(exc: Exception, provider: str, model: str | None) -> ProviderError | None:
    """
    The one reading of Anthropic's failures: an error status or an ``error`` event as a
    Rhetor error; None for what is not one (the transport's are read elsewhere).
    """
    if isinstance(exc, UpstreamStatus):
        body = exc.json()
        error = body.get("error") if isinstance(body, Mapping) else None
        detail = str(error.get("message") or "") if isinstance(error, Mapping) else ""
        return _classify(
            exc.status,
            _error_type(body),
            error_detail_text(exc, detail),
            exc.headers,
            provider,
            model,
        )
    if isinstance(exc, StreamedError):
        return _classify(None, _error_type(exc.body), str(exc), None, provider, model)
    return None


def _error_type(body: object) -> str:
    """
    The ``error.type`` of an Anthropic error body (``""`` when it has no error object).
    """
    error = body.get("error") if isinstance(body, Mapping) else None
    return str(error.get("type") or "") if isinstance(error, Mapping) else ""


def _classify(
    status: int | None,
    error_type: str,
    detail: str,
    headers: Mapping[str, str] | None,
    provider: str,
    model: str | None,
) -> ProviderError:
    """
    The Rhetor error for an HTTP status and/or Anthropic error type.
    """
    message = f"{provider} answered {status}: {detail}" if status else f"{provider}: {detail}"
    if status == 529 or error_type == "overloaded_error":
        return Overloaded(message, provider=provider, model=model)
    if status in (401, 403) or error_type in ("authentication_error", "permission_error"):
        return AuthenticationFailed(message, provider=provider, model=model)
    if status == 429 or error_type == "rate_limit_error":
        wait = retry_after(headers) if headers is not None else None
        return RateLimited(message, provider=provider, model=model, retry_after=wait)
    if status == 408 or error_type == "timeout_error":
        return UpstreamTimeout(message, provider=provider, model=model)
    if (status or 0) >= 500 or error_type == "api_error" or (status or 400) < 400:
        # A 3xx is a redirect (not followed): no message answers one.
        return UpstreamServerError(message, provider=provider, model=model)
    if status == 413 or error_type == "request_too_large" or _is_context_overflow(detail):
        return ContextTooLong(message, provider=provider, model=model)
    if status is None and not error_type.endswith("request_error"):
        return UpstreamServerError(message, provider=provider, model=model)
    return BadRequest(message, provider=provider, model=model)


def _is_context_overflow(detail: str) -> bool:
    lowered = detail.lower()
    return (
        "prompt is too long" in lowered
        or "exceed context limit" in lowered
        or "context window" in lowered
    )
