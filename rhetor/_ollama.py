"""
The Ollama backend: a local (or remote) Ollama server reached over its native ``/api/chat``.

Replies stream as NDJSON: one JSON object a line, each with a piece of
``message.content``; the last has ``done: true`` and the token counts
(``prompt_eval_count``, ``eval_count``). ``/api/tags`` lists the pulled models.

httpx's exceptions, HTTP error statuses and Ollama's in-stream ``{"error": ...}``
lines all become :mod:`rhetor._errors` in :func:`_translate_errors`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import attrs
import httpx
import trio

from rhetor._errors import (
    AuthenticationFailed,
    BadRequest,
    ContextTooLong,
    Overloaded,
    ProviderError,
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
from rhetor._upstream import CLEANUP_TIMEOUT, finish, merge_models, model_names, retry_after

__all__ = ["OllamaBackend"]

# Seconds check() waits for /api/tags: a local server answers at once or not at all.
CHECK_TIMEOUT = 2.0


class _UpstreamError(Exception):
    """
    An error Ollama reported in a 2xx body (an NDJSON ``{"error": ...}`` line).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@attrs.define(eq=False)
class OllamaBackend:
    """
    Completions from an Ollama server's ``/api/chat``, whole or streamed.
    """

    base_url: str = "http://localhost:11434"
    models: tuple[str, ...] = attrs.field(default=(), converter=model_names)
    name: str = "ollama"
    _client: httpx.AsyncClient = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        # Every call passes its own timeout; this default only bounds stray calls.
        self._client = httpx.AsyncClient(base_url=self.base_url, timeout=60.0)

    async def aclose(self) -> None:
        """
        Close the HTTP client and its pooled connections.
        """
        await self._client.aclose()

    async def check(self) -> ProviderStatus:
        """
        Ask ``/api/tags`` which models are pulled; unreachable means unavailable.

        Error handling: never raises for an upstream failure; the reason says what failed.
        """
        try:
            with _translate_errors(self.name, None), trio.fail_after(CHECK_TIMEOUT):
                response = await self._client.get("/api/tags", timeout=CHECK_TIMEOUT)
                response.raise_for_status()
                body = response.json()
        except ProviderError as exc:
            return ProviderStatus(self.name, False, self.models, reason=exc.message)
        tags = tuple(
            str(entry.get("name") or entry.get("model"))
            for entry in body.get("models", ())
            if isinstance(entry, dict) and (entry.get("name") or entry.get("model"))
        )
        return ProviderStatus(self.name, True, merge_models(tags, self.models))

    async def complete(self, request: ProviderRequest) -> ProviderReply:
        """
        One whole completion (``"stream": false``).

        Error handling: raises a :class:`rhetor.ProviderError` subclass; past
        ``request.timeout`` seconds in all, :class:`rhetor.UpstreamTimeout`.
        Cancellation: cancelling closes the upstream connection.
        """
        with (
            _translate_errors(self.name, request.model),
            trio.fail_after(request.timeout),
        ):
            response = await self._client.post(
                "/api/chat", json=_chat_body(request, stream=False), timeout=request.timeout
            )
            response.raise_for_status()
            body = response.json()
            if not isinstance(body, dict):
                raise _UpstreamError(f"unexpected reply: {body!r:.200}")
            if "error" in body:
                raise _UpstreamError(str(body["error"]))
        message = body.get("message") or {}
        return ProviderReply(
            text=str(message.get("content") or ""),
            model=str(body.get("model") or request.model),
            usage=_usage(body),
            finish_reason=_finish_reason(body.get("done_reason")),
        )

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[TextDelta | StreamEnd, None]:
        """
        Stream the reply as :class:`TextDelta` items, then one :class:`StreamEnd`.

        Error handling: raises a :class:`rhetor.ProviderError` subclass, also after
        some deltas when the connection drops or the NDJSON ends without ``done``.
        Cancellation: closing or cancelling the generator closes the upstream connection.
        """
        deadline = trio.current_time() + request.timeout
        outgoing = self._client.build_request(
            "POST", "/api/chat", json=_chat_body(request, stream=True), timeout=request.timeout
        )
        with _translate_errors(self.name, request.model), trio.fail_at(deadline):
            response = await self._client.send(outgoing, stream=True)
        lines = response.aiter_lines()
        reading = False
        try:
            with _translate_errors(self.name, request.model), trio.fail_at(deadline):
                if response.is_error:
                    await response.aread()
                    response.raise_for_status()
            reading = True
            while True:
                with _translate_errors(self.name, request.model), trio.fail_at(deadline):
                    try:
                        line = await anext(lines)
                    except StopAsyncIteration:
                        raise _DroppedStream("the reply ended before its last line") from None
                    if not line.strip():
                        continue
                    item = json.loads(line)
                    if not isinstance(item, dict):
                        raise _UpstreamError(f"unexpected line: {line:.200}")
                    if "error" in item:
                        raise _UpstreamError(str(item["error"]))
                text = str((item.get("message") or {}).get("content") or "")
                if text:
                    yield TextDelta(text)
                if item.get("done"):
                    yield StreamEnd(
                        usage=_usage(item),
                        finish_reason=_finish_reason(item.get("done_reason")),
                        model=str(item.get("model") or request.model),
                    )
                    return
        finally:
            # Shielded: this runs when the consumer is cancelled or closes us early.
            with trio.move_on_after(CLEANUP_TIMEOUT, shield=True):
                if reading:
                    await finish(lines)
                await response.aclose()


class _DroppedStream(Exception):
    """
    The upstream's body ended before the stream's last item.
    """


def _chat_body(request: ProviderRequest, *, stream: bool) -> dict[str, Any]:
    messages: list[dict[str, str]] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    messages.extend(
        {"role": m.role, "content": m.content} for m in request.messages if m.role != "system"
    )
    options: dict[str, Any] = {}
    if request.temperature is not None:
        options["temperature"] = request.temperature
    if request.max_tokens is not None:
        options["num_predict"] = request.max_tokens
    body: dict[str, Any] = {"model": request.model, "messages": messages, "stream": stream}
    if options:
        body["options"] = options
    return body


def _usage(body: Mapping[str, Any]) -> Usage:
    return Usage(
        input_tokens=int(body.get("prompt_eval_count") or 0),
        output_tokens=int(body.get("eval_count") or 0),
    )


def _finish_reason(done_reason: Any) -> str:
    return "length" if done_reason == "length" else "stop"


@contextmanager
def _translate_errors(provider: str, model: str | None) -> Iterator[None]:
    """
    The one place httpx's and Ollama's failures become :mod:`rhetor._errors`.
    """
    try:
        yield
    except ProviderError:
        raise
    except (trio.TooSlowError, httpx.TimeoutException) as exc:
        raise UpstreamTimeout(
            f"{provider} did not answer in time", provider=provider, model=model
        ) from exc
    except httpx.HTTPStatusError as exc:
        raise _status_error(exc.response, provider, model) from exc
    except _DroppedStream as exc:
        raise UpstreamConnectionError(
            f"{provider} stream broke off: {exc}", provider=provider, model=model
        ) from exc
    except httpx.TransportError as exc:
        raise UpstreamConnectionError(
            f"cannot reach {provider}: {exc or type(exc).__name__}", provider=provider, model=model
        ) from exc
    except _UpstreamError as exc:
        raise _message_error(exc.message, provider, model) from exc
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        # A 2xx body that is not the JSON Ollama sends.
        raise UpstreamServerError(
            f"{provider} sent a malformed reply: {exc}", provider=provider, model=model
        ) from exc


def _status_error(response: httpx.Response, provider: str, model: str | None) -> ProviderError:
    status = response.status_code
    try:
        body = response.json()
        detail = str(body.get("error") or body) if isinstance(body, dict) else str(body)
    except ValueError:
        detail = response.text[:500] or response.reason_phrase
    message = f"{provider} answered {status}: {detail}"
    if status in (401, 403):
        return AuthenticationFailed(message, provider=provider, model=model)
    if status == 429:
        return RateLimited(
            message, provider=provider, model=model, retry_after=retry_after(response.headers)
        )
    if status == 529 or (status == 503 and "busy" in detail.lower()):
        return Overloaded(message, provider=provider, model=model)
    if status >= 500:
        return UpstreamServerError(message, provider=provider, model=model)
    if _is_context_overflow(detail):
        return ContextTooLong(message, provider=provider, model=model)
    return BadRequest(message, provider=provider, model=model)


def _message_error(detail: str, provider: str, model: str | None) -> ProviderError:
    message = f"{provider} reported: {detail}"
    if _is_context_overflow(detail):
        return ContextTooLong(message, provider=provider, model=model)
    if "not found" in detail.lower():
        return BadRequest(message, provider=provider, model=model)
    return UpstreamServerError(message, provider=provider, model=model)


def _is_context_overflow(detail: str) -> bool:
    lowered = detail.lower()
    return "context length" in lowered or "context window" in lowered or "too long" in lowered
