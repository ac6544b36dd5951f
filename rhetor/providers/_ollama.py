"""
The Ollama backend: a local (or remote) Ollama server reached over its native ``/api/chat``.

Replies stream as NDJSON: one JSON object a line, each with a piece of
``message.content``; the last has ``done: true`` and the token counts
(``prompt_eval_count``, ``eval_count``). ``/api/tags`` lists the pulled models.
The lines are split here (:class:`rhetor.providers._wire.LineSplitter`), at ``\\n`` only
and in linear time; httpx's ``aiter_lines`` would also split a JSON string at the
Unicode line breaks (U+0085, U+2028) that Ollama's encoder leaves unescaped.

Every 200 body is checked as it is read: the counts in :func:`usage_of` (malformed
ones mark the reply ``usage_valid=False``), the rest in :func:`_item`,
:func:`_content` and :func:`_line`.

httpx's exceptions, HTTP error statuses, Ollama's in-stream ``{"error": ...}``
lines and malformed replies all become :mod:`rhetor._errors` in
:func:`_translate_errors`, their messages redacted.
"""

from __future__ import annotations

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
from rhetor._redact import redact_error
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
    LineSplitter,
    MalformedReply,
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

__all__ = ["OllamaBackend", "usage_of"]

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

        Error handling: never raises for an upstream failure; the reason says what
        failed. A listing that is not Ollama's is a failure like any other.
        """
        try:
            with _translate_errors(self.name, None), trio.fail_after(CHECK_TIMEOUT):
                response = await self._client.get("/api/tags", timeout=CHECK_TIMEOUT)
                response.raise_for_status()
                tags = model_ids(decode_json(response.content), "models", "name", "model")
        except ProviderError as exc:
            return ProviderStatus(self.name, False, self.models, reason=exc.message)
        return ProviderStatus(self.name, True, merge_models(tags, self.models))

    async def complete(self, request: ProviderRequest) -> ProviderReply:
        """
        One whole completion (``"stream": false``).

        Error handling: raises a :class:`rhetor.ProviderError` subclass; past
        ``request.timeout`` seconds in all, :class:`rhetor.UpstreamTimeout`; a 200
        body that is not Ollama's, :class:`rhetor.UpstreamServerError`. Malformed
        counts are no error: the reply says ``usage_valid=False``.
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
            body = _item(decode_json(response.content))
            return ProviderReply(
                text=_content(body),
                model=model_name(body.get("model")) or request.model,
                usage=(counted := usage_of(body, self.name))[0],
                finish_reason=_finish_reason(body.get("done_reason")),
                usage_valid=counted[1],
            )

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[TextDelta | StreamEnd, None]:
        """
        Stream the reply as :class:`TextDelta` items, then one :class:`StreamEnd`.

        Error handling: raises a :class:`rhetor.ProviderError` subclass, also after
        some deltas when the connection drops, a line is not Ollama's JSON, or the
        NDJSON ends without ``done``.
        Cancellation: closing or cancelling the generator closes the upstream connection.
        """
        deadline = trio.current_time() + request.timeout
        outgoing = self._client.build_request(
            "POST", "/api/chat", json=_chat_body(request, stream=True), timeout=request.timeout
        )
        with _translate_errors(self.name, request.model), trio.fail_at(deadline):
            response = await self._client.send(outgoing, stream=True)
        body = response.aiter_bytes()
        reading = False
        try:
            with _translate_errors(self.name, request.model), trio.fail_at(deadline):
                if response.is_error:
                    await response.aread()
                    response.raise_for_status()
            reading = True
            lines = LineSplitter()
            while True:
                with _translate_errors(self.name, request.model), trio.fail_at(deadline):
                    data = await anext(body, None)
                arrived = lines.feed(data) if data is not None else [lines.rest()]
                for line in arrived:
                    if not line.strip():
                        continue
                    # One line at a time: the text before a bad line still reaches
                    # the caller (and makes a later failure a broken stream).
                    with _translate_errors(self.name, request.model):
                        text, end = _line(line, request.model, self.name)
                    if text:
                        yield TextDelta(text)
                    if end is not None:
                        yield end
                        return
                if data is None:
                    raise UpstreamConnectionError(
                        f"{self.name} stream broke off: the reply ended before its last line",
                        provider=self.name,
                        model=request.model,
                    )
        finally:
            # Shielded: this runs when the consumer is cancelled or closes us early.
            with trio.move_on_after(CLEANUP_TIMEOUT, shield=True):
                if reading:
                    await finish(body)
                await response.aclose()


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


def usage_of(usage: object, provider: str = "ollama") -> tuple[Usage, bool]:
    """
    The one reading of Ollama's usage: the tokens, and whether they are valid.

    Ollama has no usage object: the counts are fields of the reply's last object
    (``prompt_eval_count`` in, ``eval_count`` out), so ``usage`` is that object. Both
    must be counts (:func:`token_count`); when one is missing or is not, the anomaly
    is logged and the answer is what could be read (never negative) with ``False``,
    so that the call is billed at its reservation's worst case. Never raises,
    whatever ``usage`` is.
    """
    if not isinstance(usage, Mapping):
        usage_anomaly(provider, usage, "the last object is not an object")
        return Usage(), False
    prompt = token_count(usage.get("prompt_eval_count"))
    output = token_count(usage.get("eval_count"))
    if prompt is None or output is None:
        fields = {k: usage.get(k) for k in ("prompt_eval_count", "eval_count")}
        usage_anomaly(provider, fields, "prompt_eval_count and eval_count must be counts")
        return Usage(prompt or 0, output or 0), False
    return Usage(prompt, output), True


def _item(value: object) -> Mapping[str, Any]:
    """
    A decoded reply object or NDJSON line; :class:`_UpstreamError` for an error object.
    """
    if not isinstance(value, Mapping):
        raise MalformedReply(f"a reply line is {type(value).__name__}, not an object")
    if "error" in value:
        raise _UpstreamError(str(value["error"]))
    return value


def _content(item: Mapping[str, Any]) -> str:
    """
    The text of a reply object or line (its ``message.content``; empty when it has none).
    """
    message = item.get("message")
    if message is None:
        return ""
    if not isinstance(message, Mapping):
        raise MalformedReply("message is not an object")
    return optional_text(message.get("content"), "message.content") or ""


def _line(line: bytes, model: str, provider: str) -> tuple[str, StreamEnd | None]:
    """
    One NDJSON line of a stream: the text it adds and, on the last (``done``), the end.
    """
    item = _item(decode_json(line))
    text = _content(item)
    if not item.get("done"):
        return text, None
    usage, valid = usage_of(item, provider)
    end = StreamEnd(
        usage=usage,
        finish_reason=_finish_reason(item.get("done_reason")),
        model=model_name(item.get("model")) or model,
        usage_valid=valid,
    )
    return text, end


def _finish_reason(done_reason: Any) -> str:
    return "length" if done_reason == "length" else "stop"


@contextmanager
def _translate_errors(provider: str, model: str | None) -> Iterator[None]:
    """
    The one place httpx's and Ollama's failures become :mod:`rhetor._errors`.

    Every message is redacted (:func:`rhetor._redact.redact`): an upstream, or a
    proxy before it, may echo credentials into its error.
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
    The Rhetor error for one exception from httpx or a reply's reading; None for an
    exception that is no upstream's doing.
    """
    if isinstance(exc, trio.TooSlowError | httpx.TimeoutException):
        return UpstreamTimeout(f"{provider} did not answer in time", provider=provider, model=model)
    if isinstance(exc, httpx.HTTPStatusError):
        return _status_error(exc.response, provider, model)
    if isinstance(exc, httpx.TransportError):
        return UpstreamConnectionError(
            f"cannot reach {provider}: {exc or type(exc).__name__}", provider=provider, model=model
        )
    if isinstance(exc, _UpstreamError):
        return _message_error(exc.message, provider, model)
    if isinstance(exc, MALFORMED):
        # A 2xx body that is not the JSON Ollama sends.
        return UpstreamServerError(
            f"malformed reply from {provider}: {exc}", provider=provider, model=model
        )
    return None


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
