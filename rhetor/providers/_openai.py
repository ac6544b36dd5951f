"""
The OpenAI backend: Chat Completions through the official ``openai`` SDK.

Also serves any OpenAI-compatible upstream (vLLM, llama.cpp, Ollama's ``/v1``) given
its ``base_url``. Streams ask for ``stream_options.include_usage`` so that the last
chunk before ``[DONE]`` carries the usage; an upstream that leaves it out gets a
:class:`StreamEnd` marked ``usage_valid=False`` (nothing is estimated here; the
router bills such a call at its reservation).

The SDK sends each request and raises on an error status; the 200 bodies are read
here, whole or as server-sent events, and checked field by field: usage in
:func:`usage_of`, the rest in :func:`_completion` and :class:`_StreamReading`.

The SDK retries nothing here (``max_retries=0``): Rhetor's router owns retries. Its
exceptions, httpx2's where a stream breaks, and malformed replies become
:mod:`rhetor._errors` in :func:`_translate_errors`, their messages redacted.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any

import anyio
import attrs
import httpx2
import openai
import trio
from openai.types.chat import ChatCompletionMessageParam

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
    retry_after,
    token_count,
    usage_anomaly,
)

__all__ = ["DEFAULT_MODELS", "OpenAIBackend", "usage_of"]

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
        register_secret(self.api_key)
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
        a rejected key means unavailable; a models endpoint that errors otherwise, or
        answers something that is not a models listing (some compatible servers have
        none), leaves the configured models available.
        """
        if self._client is None:
            return ProviderStatus(self.name, False, self.models, reason="OPENAI_API_KEY not set")
        try:
            with _translate_errors(self.name, None), trio.fail_after(CHECK_TIMEOUT):
                raw = await self._client.models.with_raw_response.list(timeout=CHECK_TIMEOUT)
                listed = model_ids(decode_json(raw.content), "data", "id")
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
        ``request.timeout`` seconds in all, :class:`rhetor.UpstreamTimeout`; a 200
        body that is not a chat completion, :class:`rhetor.UpstreamServerError`.
        Malformed usage is no error: the reply says ``usage_valid=False``.
        Cancellation: cancelling closes the upstream connection.
        """
        client = self._require_client(request.model)
        with _translate_errors(self.name, request.model), trio.fail_after(request.timeout):
            # The SDK sends the request and raises on an error status; the body is
            # read here, so that one checked reading covers every field of it.
            raw = await client.chat.completions.with_raw_response.create(
                model=request.model,
                messages=_messages(request),
                stream=False,
                temperature=_given(request.temperature),
                timeout=request.timeout,
                extra_body=self._limit(request),
            )
            return _completion(decode_json(raw.content), request, self.name)

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[TextDelta | StreamEnd, None]:
        """
        Stream the reply as :class:`TextDelta` items, then one :class:`StreamEnd`.

        Error handling: raises a :class:`rhetor.ProviderError` subclass, also after
        some deltas when the connection drops, the body ends before ``[DONE]`` or a
        chunk is not a ``chat.completion.chunk``.
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
            reading = _StreamReading(request.model)
            while not reading.done:
                with _translate_errors(self.name, request.model), trio.fail_at(deadline):
                    try:
                        data = await anext(body)
                    except StopAsyncIteration:
                        break
                    payloads = [payload for _, payload in events.feed(data)]
                for payload in payloads:
                    # One event at a time: the text before a bad event still reaches
                    # the caller (and makes a later failure a broken stream).
                    with _translate_errors(self.name, request.model):
                        text = reading.take(payload)
                    if text:
                        yield TextDelta(text)
            if reading.done:
                await _drain(body)
            elif reading.finish_reason is None:
                raise UpstreamConnectionError(
                    f"{self.name} stream ended before the reply finished",
                    provider=self.name,
                    model=request.model,
                )
            yield reading.end(self.name)
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
    return Usage(prompt, completion), True


def _completion(body: object, request: ProviderRequest, provider: str) -> ProviderReply:
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
class _StreamReading:
    """
    What a stream's chunks said so far: the model, the usage, why it finished.

    Chunks arrive through :meth:`take` as the SSE data of each event; anything that is
    not a ``chat.completion.chunk`` raises :class:`MalformedReply`, and an error object
    :class:`StreamedError`.
    """

    model: str
    usage: object = None
    finish_reason: str | None = None
    # Set by [DONE]: nothing after it is read.
    done: bool = False

    def take(self, payload: str) -> str | None:
        """
        Read one event's data; return the text it adds for choice 0, if any.
        """
        if self.done:
            return None
        if payload.strip() == "[DONE]":
            self.done = True
            return None
        chunk = _chunk(payload)
        self.model = model_name(chunk.get("model")) or self.model
        # Only the last chunk carries usage; the others send null.
        if chunk.get("usage") is not None:
            self.usage = chunk["usage"]
        choices = chunk.get("choices")
        if choices is None:
            return None
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
        return "".join(text) or None

    def end(self, provider: str) -> StreamEnd:
        """
        The stream's last item, from what the chunks said.
        """
        usage, valid = usage_of(self.usage, provider)
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
    if isinstance(exc, trio.TooSlowError | openai.APITimeoutError | httpx2.TimeoutException):
        return UpstreamTimeout(f"{provider} did not answer in time", provider=provider, model=model)
    if isinstance(exc, openai.APIStatusError):
        return _status_error(exc, provider, model)
    if isinstance(exc, openai.APIConnectionError | httpx2.TransportError | anyio.EndOfStream):
        return UpstreamConnectionError(
            f"cannot reach {provider}, or it dropped the connection: {exc}",
            provider=provider,
            model=model,
        )
    if isinstance(exc, StreamedError):
        return _body_error(str(exc), exc.body, provider, model)
    if isinstance(exc, openai.APIError):
        return UpstreamServerError(
            f"{provider} failed: {exc.message}", provider=provider, model=model
        )
    if isinstance(exc, MALFORMED):
        # A 2xx body that is not a chat completion (pydantic's ValidationError is a ValueError).
        return UpstreamServerError(
            f"malformed reply from {provider}: {exc}", provider=provider, model=model
        )
    return None


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
