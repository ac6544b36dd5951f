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

The SDK retries nothing here (``max_retries=0``): Rhetor's router owns retries. Its
exceptions, and httpx2's where a stream breaks, become :mod:`rhetor._errors` in
:func:`_translate_errors`.
"""

from __future__ import annotations

import json
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
from rhetor._types import (
    ChatMessage,
    ProviderReply,
    ProviderRequest,
    ProviderStatus,
    StreamEnd,
    TextDelta,
    Usage,
)
from rhetor._upstream import (
    CLEANUP_TIMEOUT,
    ServerSentEvents,
    StreamedError,
    finish,
    merge_models,
    model_names,
    retry_after,
)

__all__ = ["DEFAULT_MAX_TOKENS", "DEFAULT_MODELS", "AnthropicBackend", "anthropic_messages"]

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
        a rejected key means unavailable; a models endpoint that errors otherwise
        leaves the configured models available.
        """
        if self._client is None:
            return ProviderStatus(self.name, False, self.models, reason="ANTHROPIC_API_KEY not set")
        try:
            with _translate_errors(self.name, None), trio.fail_after(CHECK_TIMEOUT):
                page = await self._client.models.list(limit=100, timeout=CHECK_TIMEOUT)
                listed = tuple(m.id for m in page.data)
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
        ``request.timeout`` seconds in all, :class:`rhetor.UpstreamTimeout`.
        Cancellation: cancelling closes the upstream connection.
        """
        client = self._require_client(request.model)
        messages = self._messages(request)
        with _translate_errors(self.name, request.model), trio.fail_after(request.timeout):
            message = await client.messages.create(
                model=request.model,
                messages=messages,
                max_tokens=_max_tokens(request),
                system=request.system or anthropic.omit,
                stream=False,
                timeout=request.timeout,
            )
        text = "".join(block.text for block in message.content if block.type == "text")
        usage = message.usage
        return ProviderReply(
            text=text,
            model=message.model or request.model,
            usage=Usage(
                usage.input_tokens
                + (usage.cache_creation_input_tokens or 0)
                + (usage.cache_read_input_tokens or 0),
                usage.output_tokens,
            ),
            finish_reason=_finish_reason(message.stop_reason),
        )

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[TextDelta | StreamEnd, None]:
        """
        Stream the reply as :class:`TextDelta` items, then one :class:`StreamEnd`.

        Error handling: raises a :class:`rhetor.ProviderError` subclass, also after
        some deltas when the connection drops, an ``error`` event arrives, or the body
        ends before ``message_stop``.
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
            model = request.model
            input_tokens = output_tokens = 0
            stop_reason: str | None = None
            stopped = False
            while not stopped:
                with _translate_errors(self.name, request.model), trio.fail_at(deadline):
                    try:
                        data = await anext(body)
                    except StopAsyncIteration:
                        raise UpstreamConnectionError(
                            f"{self.name} stream ended before message_stop",
                            provider=self.name,
                            model=request.model,
                        ) from None
                for kind, payload in events.feed(data):
                    with _translate_errors(self.name, request.model):
                        event = _event(kind, payload)
                    if kind == "message_start":
                        message = event.get("message") or {}
                        model = message.get("model") or model
                        input_tokens, output_tokens = _tokens(
                            message.get("usage"), input_tokens, output_tokens
                        )
                    elif kind == "content_block_delta":
                        delta = event.get("delta") or {}
                        if delta.get("type") == "text_delta" and delta.get("text"):
                            yield TextDelta(delta["text"])
                    elif kind == "message_delta":
                        stop_reason = (event.get("delta") or {}).get("stop_reason") or stop_reason
                        input_tokens, output_tokens = _tokens(
                            event.get("usage"), input_tokens, output_tokens
                        )
                    elif kind == "message_stop":
                        stopped = True
                        break
            yield StreamEnd(
                usage=Usage(input_tokens, output_tokens),
                finish_reason=_finish_reason(stop_reason),
                model=str(model),
            )
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


def _tokens(usage: Any, input_tokens: int, output_tokens: int) -> tuple[int, int]:
    """
    Input and output counts updated from a usage object; what it leaves out is kept.

    Cached prompt tokens (written or read) count as input. ``output_tokens`` in
    ``message_delta`` is cumulative, so it replaces the earlier count.
    """
    if not isinstance(usage, Mapping):
        return input_tokens, output_tokens
    parts = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    if any(usage.get(part) is not None for part in parts):
        input_tokens = sum(int(usage.get(part) or 0) for part in parts)
    if usage.get("output_tokens") is not None:
        output_tokens = int(usage["output_tokens"])
    return input_tokens, output_tokens


def _event(kind: str, payload: str) -> Mapping[str, Any]:
    """
    One decoded event; raises :class:`StreamedError` for an ``error`` event.
    """
    event = json.loads(payload) if payload else {}
    if not isinstance(event, dict):
        raise ValueError(f"unexpected {kind} event: {payload:.200}")
    if kind == "error" or event.get("type") == "error":
        error = event.get("error")
        message = error.get("message") if isinstance(error, Mapping) else None
        raise StreamedError(str(message or event), event)
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
    """
    try:
        yield
    except ProviderError:
        raise
    except (trio.TooSlowError, anthropic.APITimeoutError, httpx2.TimeoutException) as exc:
        raise UpstreamTimeout(
            f"{provider} did not answer in time", provider=provider, model=model
        ) from exc
    except anthropic.APIStatusError as exc:
        raise _status_error(exc, provider, model) from exc
    except (anthropic.APIConnectionError, httpx2.TransportError, anyio.EndOfStream) as exc:
        raise UpstreamConnectionError(
            f"cannot reach {provider}, or it dropped the connection: {exc}",
            provider=provider,
            model=model,
        ) from exc
    except StreamedError as exc:
        raise _classify(None, _error_type(exc.body), str(exc), None, provider, model) from exc
    except anthropic.APIError as exc:
        raise UpstreamServerError(
            f"{provider} failed: {exc.message}", provider=provider, model=model
        ) from exc
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        # A 2xx body that is not what the Messages API sends (pydantic's
        # ValidationError is a ValueError).
        raise UpstreamServerError(
            f"{provider} sent a malformed reply: {exc}", provider=provider, model=model
        ) from exc


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
