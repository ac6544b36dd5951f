"""
The OpenAI backend: Chat Completions through the official ``openai`` SDK.

Also serves any OpenAI-compatible upstream (vLLM, llama.cpp, Ollama's ``/v1``) given
its ``base_url``. Streams ask for ``stream_options.include_usage`` so that the last
chunk before ``[DONE]`` carries the usage; an upstream that leaves it out gets a
:class:`StreamEnd` with what is known (nothing is estimated).

The SDK retries nothing here (``max_retries=0``): Rhetor's router owns retries. Its
exceptions, and httpx2's where a stream breaks, become :mod:`rhetor._errors` in
:func:`_translate_errors`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any

import anyio
import attrs
import httpx2
import openai
import trio
from openai.types.chat import ChatCompletionMessageParam
from openai.types.completion_usage import CompletionUsage

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

__all__ = ["DEFAULT_MODELS", "OpenAIBackend"]

DEFAULT_MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-4.1", "gpt-4.1-mini")

# Seconds check() waits for the models endpoint.
CHECK_TIMEOUT = 3.0
# Seconds to wait for the end of the body after [DONE].
DRAIN_TIMEOUT = 0.1


@attrs.define(eq=False)
class OpenAIBackend:
    """
    Completions from OpenAI's (or a compatible server's) Chat Completions API.

    ``max_tokens_field`` names the request field for ``max_tokens``: OpenAI's own
    ``max_completion_tokens``, or ``max_tokens`` for older compatible servers.
    """

    api_key: str | None
    base_url: str | None = None
    models: tuple[str, ...] = attrs.field(default=DEFAULT_MODELS, converter=model_names)
    name: str = "openai"
    max_tokens_field: str = "max_completion_tokens"
    # Invariant: None exactly when there is no API key.
    _client: openai.AsyncOpenAI | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        if self.api_key:
            self._client = openai.AsyncOpenAI(
                api_key=self.api_key, base_url=self.base_url, max_retries=0
            )

    async def aclose(self) -> None:
        """
        Close the SDK's HTTP client.
        """
        if self._client is not None:
            await self._client.close()

    def _require_client(self, model: str) -> openai.AsyncOpenAI:
        if self._client is None:
            raise ProviderUnavailable("OPENAI_API_KEY not set", provider=self.name, model=model)
        return self._client

    async def check(self) -> ProviderStatus:
        """
        Merge the configured models with the models endpoint's, where it answers.

        Error handling: never raises for an upstream failure. Unreachable, too slow or
        a rejected key means unavailable; a models endpoint that errors otherwise (some
        compatible servers have none) leaves the configured models available.
        """
        if self._client is None:
            return ProviderStatus(self.name, False, self.models, reason="OPENAI_API_KEY not set")
        try:
            with _translate_errors(self.name, None), trio.fail_after(CHECK_TIMEOUT):
                page = await self._client.models.list(timeout=CHECK_TIMEOUT)
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
        One whole chat completion.

        Error handling: raises a :class:`rhetor.ProviderError` subclass; past
        ``request.timeout`` seconds in all, :class:`rhetor.UpstreamTimeout`.
        Cancellation: cancelling closes the upstream connection.
        """
        client = self._require_client(request.model)
        with _translate_errors(self.name, request.model), trio.fail_after(request.timeout):
            completion = await client.chat.completions.create(
                model=request.model,
                messages=_messages(request),
                stream=False,
                temperature=_given(request.temperature),
                timeout=request.timeout,
                extra_body=self._limit(request),
            )
            choice = completion.choices[0] if completion.choices else None
            text = (choice.message.content if choice else None) or ""
        return ProviderReply(
            text=text,
            model=completion.model or request.model,
            usage=_usage(completion.usage),
            finish_reason=(choice.finish_reason if choice else None) or "stop",
        )

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[TextDelta | StreamEnd, None]:
        """
        Stream the reply as :class:`TextDelta` items, then one :class:`StreamEnd`.

        Error handling: raises a :class:`rhetor.ProviderError` subclass, also after
        some deltas when the connection drops or the body ends before ``[DONE]``.
        Cancellation: closing or cancelling the generator closes the upstream response.
        """
        client = self._require_client(request.model)
        deadline = trio.current_time() + request.timeout
        # The SDK sends the request and raises on an error status; the body is read
        # here rather than through the SDK's AsyncStream, which abandons its inner
        # async generators half-way (on [DONE]) and so makes trio warn.
        opening = client.chat.completions.with_streaming_response.create(
            model=request.model,
            messages=_messages(request),
            stream=True,
            stream_options={"include_usage": True},
            temperature=_given(request.temperature),
            timeout=request.timeout,
            extra_body=self._limit(request),
        )
        with _translate_errors(self.name, request.model), trio.fail_at(deadline):
            response = await opening.__aenter__()
        body = response.http_response.aiter_bytes()
        try:
            events = ServerSentEvents()
            model = request.model
            usage: Mapping[str, Any] | None = None
            finish_reason: str | None = None
            done = False
            while not done:
                with _translate_errors(self.name, request.model), trio.fail_at(deadline):
                    try:
                        data = await anext(body)
                    except StopAsyncIteration:
                        break
                for _, payload in events.feed(data):
                    if payload.strip() == "[DONE]":
                        done = True
                        break
                    with _translate_errors(self.name, request.model):
                        chunk = _chunk(payload)
                    model = chunk.get("model") or model
                    usage = chunk.get("usage") or usage
                    for choice in chunk.get("choices") or ():
                        if choice.get("index", 0) != 0:
                            continue
                        finish_reason = choice.get("finish_reason") or finish_reason
                        text = (choice.get("delta") or {}).get("content")
                        if text:
                            yield TextDelta(text)
            if done:
                await _drain(body)
            elif finish_reason is None:
                raise UpstreamConnectionError(
                    f"{self.name} stream ended before the reply finished",
                    provider=self.name,
                    model=request.model,
                )
            yield StreamEnd(
                usage=_usage_of(usage), finish_reason=finish_reason or "stop", model=str(model)
            )
        finally:
            # Shielded: this also runs when the consumer is cancelled or closes us early.
            with trio.move_on_after(CLEANUP_TIMEOUT, shield=True):
                await finish(body)
                await opening.__aexit__(None, None, None)

    def _limit(self, request: ProviderRequest) -> dict[str, Any] | None:
        if request.max_tokens is None:
            return None
        return {self.max_tokens_field: request.max_tokens}


def _messages(request: ProviderRequest) -> list[ChatCompletionMessageParam]:
    messages: list[ChatCompletionMessageParam] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    for message in request.messages:
        if message.role == "user":
            messages.append({"role": "user", "content": message.content})
        elif message.role == "assistant":
            messages.append({"role": "assistant", "content": message.content})
    return messages


def _given(value: float | None) -> float | openai.Omit:
    return openai.omit if value is None else value


def _usage(usage: CompletionUsage | None) -> Usage:
    if usage is None:
        return Usage()
    return Usage(usage.prompt_tokens or 0, usage.completion_tokens or 0)


def _usage_of(usage: Mapping[str, Any] | None) -> Usage:
    if not usage:
        return Usage()
    return Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))


def _chunk(payload: str) -> Mapping[str, Any]:
    """
    One decoded ``chat.completion.chunk``; raises :class:`StreamedError` for an error object.
    """
    chunk = json.loads(payload)
    if not isinstance(chunk, dict):
        raise ValueError(f"unexpected stream data: {payload:.200}")
    if chunk.get("error"):
        raise StreamedError(_detail(chunk), chunk)
    return chunk


async def _drain(body: AsyncIterator[bytes]) -> None:
    """
    Read what follows ``[DONE]`` (normally nothing) so the connection can be reused.
    """
    with trio.move_on_after(DRAIN_TIMEOUT), suppress(Exception):
        async for _ in body:
            pass


@contextmanager
def _translate_errors(provider: str, model: str | None) -> Iterator[None]:
    """
    The one place the SDK's (and httpx2's) failures become :mod:`rhetor._errors`.
    """
    try:
        yield
    except ProviderError:
        raise
    except (trio.TooSlowError, openai.APITimeoutError, httpx2.TimeoutException) as exc:
        raise UpstreamTimeout(
            f"{provider} did not answer in time", provider=provider, model=model
        ) from exc
    except openai.APIStatusError as exc:
        raise _status_error(exc, provider, model) from exc
    except (openai.APIConnectionError, httpx2.TransportError, anyio.EndOfStream) as exc:
        raise UpstreamConnectionError(
            f"cannot reach {provider}, or it dropped the connection: {exc}",
            provider=provider,
            model=model,
        ) from exc
    except StreamedError as exc:
        raise _body_error(str(exc), exc.body, provider, model) from exc
    except openai.APIError as exc:
        raise UpstreamServerError(
            f"{provider} failed: {exc.message}", provider=provider, model=model
        ) from exc
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        # pydantic's ValidationError is a ValueError.
        raise UpstreamServerError(
            f"{provider} sent a malformed reply: {exc}", provider=provider, model=model
        ) from exc


def _status_error(exc: openai.APIStatusError, provider: str, model: str | None) -> ProviderError:
    status = exc.status_code
    detail = _detail(exc.body) or exc.message
    message = f"{provider} answered {status}: {detail}"
    if status in (401, 403):
        return AuthenticationFailed(message, provider=provider, model=model)
    if status == 429:
        return RateLimited(
            message,
            provider=provider,
            model=model,
            retry_after=retry_after(exc.response.headers),
        )
    if status == 408:
        return UpstreamTimeout(message, provider=provider, model=model)
    if status == 529 or (status == 503 and "overload" in detail.lower()):
        return Overloaded(message, provider=provider, model=model)
    if status >= 500:
        return UpstreamServerError(message, provider=provider, model=model)
    if status == 413 or _is_context_overflow(exc.body, detail):
        return ContextTooLong(message, provider=provider, model=model)
    return BadRequest(message, provider=provider, model=model)


def _body_error(message: str, body: object, provider: str, model: str | None) -> ProviderError:
    detail = _detail(body) or message
    text = f"{provider} reported: {detail}"
    error = body if isinstance(body, Mapping) else {}
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
