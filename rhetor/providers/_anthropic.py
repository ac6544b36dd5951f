"""
The Anthropic backend: the Messages API through the official ``anthropic`` SDK.

The system prompt travels in the ``system`` field; the history is reshaped the way
the Messages API wants it (user first, roles strictly alternating). ``max_tokens`` is
required upstream, so it defaults to :data:`DEFAULT_MAX_TOKENS`. ``temperature`` is
not sent: SDK 2.x speaks API version 2026-10-21, which removed the sampling
parameters and answers 400 to any of them.

A stream is read as server-sent events: ``message_start`` carries the input usage,
``content_block_delta`` the text, ``message_delta`` the output usage and stop reason,
``message_stop`` the end; an ``error`` event fails the stream.

The SDK sends each request and raises on an error status; the 200 bodies are read
here, whole or as events, and checked field by field: usage in :func:`usage_of`
(malformed usage marks the reply ``usage_valid=False``), the rest in
:func:`_message` and :class:`_StreamReading`.

The SDK retries nothing here (``max_retries=0``): Rhetor's router owns retries. Its
exceptions, httpx2's where a stream breaks, and malformed replies become
:mod:`rhetor._errors` in :func:`_translate_errors`, their messages redacted.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import anthropic
import anyio
import attrs
import httpx2
import trio
from anthropic.types import MessageParam

from rhetor._errors import (
    AuthenticationFailed,
    BadRequest,
    ContextTooLong,
    Overloaded,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    UpstreamConnectionError,
    UpstreamServerError,
    UpstreamTimeout,
)
from rhetor._redact import redact_error, register_secret
from rhetor._types import (
    ChatMessage,
    ProviderReply,
    ProviderRequest,
    ProviderStatus,
    StreamEnd,
    TextDelta,
    Usage,
)
from rhetor.providers._wire import (
    CLEANUP_TIMEOUT,
    MALFORMED,
    MalformedReply,
    ServerSentEvents,
    StreamedError,
    decode_json,
    finish,
    merge_models,
    model_ids,
    model_name,
    model_names,
    optional_text,
    preview,
    retry_after,
    token_count,
    usage_anomaly,
)

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_MODELS",
    "AnthropicBackend",
    "anthropic_messages",
    "merged_usage",
    "usage_of",
]

DEFAULT_MODELS = ("claude-sonnet-5-5", "claude-haiku-5-5", "claude-opus-5-5")
# The Messages API requires max_tokens; used when the request leaves it open.
DEFAULT_MAX_TOKENS = 1024

# Seconds check() waits for the models endpoint.
CHECK_TIMEOUT = 3.0

# Anthropic stop reasons in Rhetor's (OpenAI's) words.
_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


@attrs.define(eq=False)
class AnthropicBackend:
    """
    Completions from Anthropic's Messages API, whole or streamed.
    """

    api_key: str | None
    base_url: str | None = None
    models: tuple[str, ...] = attrs.field(default=DEFAULT_MODELS, converter=model_names)
    name: str = "anthropic"
    # Invariant: None exactly when there is no API key.
    _client: anthropic.AsyncAnthropic | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        register_secret(self.api_key)
        if self.api_key:
            self._client = anthropic.AsyncAnthropic(
                api_key=self.api_key, base_url=self.base_url, max_retries=0
            )

    async def aclose(self) -> None:
        """
        Close the SDK's HTTP client.
        """
        if self._client is not None:
            await self._client.close()

    def _require_client(self, model: str) -> anthropic.AsyncAnthropic:
        if self._client is None:
            raise ProviderUnavailable("ANTHROPIC_API_KEY not set", provider=self.name, model=model)
        return self._client

    async def check(self) -> ProviderStatus:
        """
        Merge the configured models with the models endpoint's, where it answers.

        Error handling: never raises for an upstream failure. Unreachable, too slow or
        a rejected key means unavailable; a models endpoint that errors otherwise, or
        answers something that is not a models listing, leaves the configured models
        available.
        """
        if self._client is None:
            return ProviderStatus(self.name, False, self.models, reason="ANTHROPIC_API_KEY not set")
        try:
            with _translate_errors(self.name, None), trio.fail_after(CHECK_TIMEOUT):
                raw = await self._client.models.with_raw_response.list(
                    limit=100, timeout=CHECK_TIMEOUT
                )
                listed = model_ids(decode_json(await raw.read()), "data", "id")
        except (UpstreamConnectionError, UpstreamTimeout, AuthenticationFailed) as exc:
            return ProviderStatus(self.name, False, self.models, reason=exc.message)
        except ProviderError as exc:
            return ProviderStatus(
                self.name, True, self.models, reason=f"models endpoint failed: {exc.message}"
            )
        return ProviderStatus(self.name, True, merge_models(self.models, listed))

    async def complete(self, request: ProviderRequest) -> ProviderReply:
        """
        One whole message.

        Error handling: raises a :class:`rhetor.ProviderError` subclass; past
        ``request.timeout`` seconds in all, :class:`rhetor.UpstreamTimeout`; a 200
        body that is not a message, :class:`rhetor.UpstreamServerError`. Malformed
        usage is no error: the reply says ``usage_valid=False``.
        Cancellation: cancelling closes the upstream connection.
        """
        client = self._require_client(request.model)
        messages = self._messages(request)
        with _translate_errors(self.name, request.model), trio.fail_after(request.timeout):
            # The SDK sends the request and raises on an error status; the body is
            # read here, so that one checked reading covers every field of it.
            raw = await client.messages.with_raw_response.create(
                model=request.model,
                messages=messages,
                max_tokens=_max_tokens(request),
                system=request.system or anthropic.omit,
                stream=False,
                timeout=request.timeout,
            )
            return _message(decode_json(await raw.read()), request, self.name)

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[TextDelta | StreamEnd, None]:
        """
        Stream the reply as :class:`TextDelta` items, then one :class:`StreamEnd`.

        Error handling: raises a :class:`rhetor.ProviderError` subclass, also after
        some deltas when the connection drops, an ``error`` event arrives, an event is
        not what the Messages API sends, or the body ends before ``message_stop``.
        Cancellation: closing or cancelling the generator closes the upstream response.
        """
        client = self._require_client(request.model)
        messages = self._messages(request)
        deadline = trio.current_time() + request.timeout
        # The SDK sends the request and raises on an error status; the events are read
        # here rather than through the SDK's AsyncStream, which leaves its inner async
        # generators unfinished when it raises mid-stream, and so makes trio warn.
        opening = client.messages.with_streaming_response.create(
            model=request.model,
            messages=messages,
            max_tokens=_max_tokens(request),
            system=request.system or anthropic.omit,
            stream=True,
            timeout=request.timeout,
        )
        with _translate_errors(self.name, request.model), trio.fail_at(deadline):
            response = await opening.__aenter__()
        body = response.http_response.aiter_bytes()
        try:
            events = ServerSentEvents(keep_dataless=True)
            reading = _StreamReading(request.model)
            while not reading.stopped:
                with _translate_errors(self.name, request.model), trio.fail_at(deadline):
                    try:
                        data = await anext(body)
                    except StopAsyncIteration:
                        raise UpstreamConnectionError(
                            f"{self.name} stream ended before message_stop",
                            provider=self.name,
                            model=request.model,
                        ) from None
                    arrived = events.feed(data)
                for kind, payload in arrived:
                    # One event at a time: the text before a bad event still reaches
                    # the caller (and makes a later failure a broken stream).
                    with _translate_errors(self.name, request.model):
                        text = reading.take(kind, payload)
                    if text:
                        yield TextDelta(text)
            yield reading.end(self.name)
        finally:
            # Shielded: this also runs when the consumer is cancelled or closes us early.
            with trio.move_on_after(CLEANUP_TIMEOUT, shield=True):
                await finish(body)
                await opening.__aexit__(None, None, None)

    def _messages(self, request: ProviderRequest) -> list[MessageParam]:
        messages = anthropic_messages(request.messages)
        if not messages:
            raise BadRequest(
                "the conversation has no user message", provider=self.name, model=request.model
            )
        return messages


def anthropic_messages(history: Sequence[ChatMessage]) -> list[MessageParam]:
    """
    The history in the shape the Messages API accepts.

    System turns are dropped (the system prompt travels apart), as are empty turns
    and assistant turns before the first user turn; consecutive turns of one role
    are merged with a blank line, so roles strictly alternate starting with user.
    """
    merged: list[tuple[str, list[str]]] = []
    for message in history:
        if message.role == "system" or not message.content.strip():
            continue
        if not merged and message.role != "user":
            continue
        if merged and merged[-1][0] == message.role:
            merged[-1][1].append(message.content)
        else:
            merged.append((message.role, [message.content]))
    result: list[MessageParam] = []
    for role, parts in merged:
        content = "\n\n".join(parts)
        if role == "user":
            result.append({"role": "user", "content": content})
        else:
            result.append({"role": "assistant", "content": content})
    return result


def _max_tokens(request: ProviderRequest) -> int:
    return request.max_tokens if request.max_tokens is not None else DEFAULT_MAX_TOKENS


def _finish_reason(stop_reason: str | None) -> str:
    if stop_reason is None:
        return "stop"
    return _FINISH_REASONS.get(stop_reason, stop_reason)


# The usage fields whose sum is the input: fresh, cache-written and cache-read tokens.
_INPUT_PARTS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def usage_of(usage: object, provider: str = "anthropic") -> tuple[Usage, bool]:
    """
    The one reading of an Anthropic ``usage`` object: the tokens, and whether they are valid.

    Cached prompt tokens (written or read) count as input. ``input_tokens`` and
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
    return Usage(sum(n or 0 for n in (counts[0], *cached)), counts[1] or 0), True


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


def _message(body: object, request: ProviderRequest, provider: str) -> ProviderReply:
    """
    A decoded Messages API message as a reply; :class:`MalformedReply` when it is not one.
    """
    if not isinstance(body, Mapping):
        raise MalformedReply(f"the reply is {type(body).__name__}, not a message")
    content = body.get("content")
    if not isinstance(content, list):
        raise MalformedReply("the message's content is not a list")
    text: list[str] = []
    for block in content:
        if not isinstance(block, Mapping):
            raise MalformedReply("a content block is not an object")
        if block.get("type") == "text":
            text.append(optional_text(block.get("text"), "a text block's text") or "")
    stop_reason = optional_text(body.get("stop_reason"), "stop_reason")
    usage, valid = usage_of(body.get("usage"), provider)
    return ProviderReply(
        text="".join(text),
        model=model_name(body.get("model")) or request.model,
        usage=usage,
        finish_reason=_finish_reason(stop_reason),
        usage_valid=valid,
    )


@attrs.define
class _StreamReading:
    """
    What a stream's events said so far: the model, the usage, the stop reason.

    Events arrive through :meth:`take`; one that is not what the Messages API sends
    raises :class:`MalformedReply`, an ``error`` event :class:`StreamedError`.
    """

    model: str
    usage: object = None
    stop_reason: str | None = None
    # Set by message_stop: nothing after it is read.
    stopped: bool = False

    def take(self, kind: str, payload: str) -> str | None:
        """
        Read one event; return the text it adds, if any.
        """
        if self.stopped:
            return None
        event = _event(kind, payload)
        if kind == "message_start":
            message = event.get("message")
            if not isinstance(message, Mapping):
                raise MalformedReply("message_start has no message object")
            self.model = model_name(message.get("model")) or self.model
            self.usage = merged_usage(self.usage, message.get("usage"))
        elif kind == "content_block_delta":
            delta = event.get("delta")
            if not isinstance(delta, Mapping):
                raise MalformedReply("content_block_delta has no delta object")
            if delta.get("type") == "text_delta":
                return optional_text(delta.get("text"), "a text delta's text") or None
        elif kind == "message_delta":
            delta = event.get("delta")
            if delta is not None and not isinstance(delta, Mapping):
                raise MalformedReply("message_delta's delta is not an object")
            stop_reason = optional_text((delta or {}).get("stop_reason"), "stop_reason")
            self.stop_reason = stop_reason or self.stop_reason
            self.usage = merged_usage(self.usage, event.get("usage"))
        elif kind == "message_stop":
            self.stopped = True
        return None

    def end(self, provider: str) -> StreamEnd:
        """
        The stream's last item, from what the events said.
        """
        usage, valid = usage_of(self.usage, provider)
        return StreamEnd(
            usage=usage,
            finish_reason=_finish_reason(self.stop_reason),
            model=self.model,
            usage_valid=valid,
        )


def _event(kind: str, payload: str) -> Mapping[str, Any]:
    """
    One decoded event; raises :class:`StreamedError` for an ``error`` event.
    """
    event = decode_json(payload) if payload else {}
    if not isinstance(event, Mapping):
        raise MalformedReply(f"a {kind} event is {type(event).__name__}, not an object")
    if kind == "error" or event.get("type") == "error":
        error = event.get("error")
        message = error.get("message") if isinstance(error, Mapping) else None
        raise StreamedError(str(message or preview(event)), event)
    return event


def _error_type(body: Mapping[str, Any]) -> str:
    """
    The ``error.type`` of an Anthropic error body (``""`` when it has no error object).
    """
    error = body.get("error")
    return str(error.get("type")) if isinstance(error, Mapping) else ""


@contextmanager
def _translate_errors(provider: str, model: str | None) -> Iterator[None]:
    """
    The one place the SDK's (and httpx2's) failures become :mod:`rhetor._errors`.

    Every message is redacted (:func:`rhetor._redact.redact`): an upstream may echo
    the request's key into its error.
    """
    try:
        yield
    except ProviderError:
        raise
    except Exception as exc:
        error = _translated(exc, provider, model)
        if error is None:
            raise
        raise redact_error(error) from exc


def _translated(exc: Exception, provider: str, model: str | None) -> ProviderError | None:
    """
    The Rhetor error for one exception from the SDK, httpx2 or a reply's reading; None
    for an exception that is no upstream's doing.
    """
    if isinstance(exc, trio.TooSlowError | anthropic.APITimeoutError | httpx2.TimeoutException):
        return UpstreamTimeout(f"{provider} did not answer in time", provider=provider, model=model)
    if isinstance(exc, anthropic.APIStatusError):
        return _status_error(exc, provider, model)
    if isinstance(exc, anthropic.APIConnectionError | httpx2.TransportError | anyio.EndOfStream):
        return UpstreamConnectionError(
            f"cannot reach {provider}, or it dropped the connection: {exc}",
            provider=provider,
            model=model,
        )
    if isinstance(exc, StreamedError):
        return _classify(None, _error_type(exc.body), str(exc), None, provider, model)
    if isinstance(exc, anthropic.APIError):
        return UpstreamServerError(
            f"{provider} failed: {exc.message}", provider=provider, model=model
        )
    if isinstance(exc, MALFORMED):
        # A 2xx body that is not what the Messages API sends.
        return UpstreamServerError(
            f"malformed reply from {provider}: {exc}", provider=provider, model=model
        )
    return None


def _status_error(exc: anthropic.APIStatusError, provider: str, model: str | None) -> ProviderError:
    detail = exc.api_message or exc.message
    return _classify(exc.status_code, exc.type or "", detail, exc.response.headers, provider, model)


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
    if (status or 0) >= 500 or error_type == "api_error":
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
