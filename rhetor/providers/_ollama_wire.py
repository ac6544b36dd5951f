"""
Ollama's native chat wire format (``/api/chat``): request bodies, replies, NDJSON
lines and error bodies, with no I/O (:mod:`rhetor.providers._ollama` sends and receives).

Replies stream as NDJSON: one JSON object a line, each with a piece of
``message.content``; the last has ``done: true`` and the token counts
(``prompt_eval_count``, ``eval_count``). Lines are cut at ``\\n`` only, in linear
time (:class:`rhetor.providers._wire.LineSplitter`): a JSON string may hold the
Unicode line breaks (U+0085, U+2028) that Ollama's encoder leaves unescaped.

A request is built in :func:`chat_body` (top-level fields and ``options``) and
:func:`chat_message` (one turn, where images and tool calls will go). Every 200 body
is checked as it is read: the counts in :func:`usage_of` (malformed ones mark the
reply ``usage_valid=False``), the rest in :func:`reply` and :class:`LineReading`.
Error statuses and ``{"error": ...}`` objects become :mod:`rhetor._errors` in
:func:`translated`.
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
)
from rhetor._types import ChatMessage, ProviderReply, ProviderRequest, StreamEnd, TextDelta, Usage
from rhetor.providers._wire import (
    LineSplitter,
    MalformedReply,
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

__all__ = ["LineReading", "chat_body", "chat_message", "reply", "translated", "usage_of"]


def chat_body(request: ProviderRequest, *, stream: bool) -> dict[str, Any]:
    """
    The JSON body of ``POST /api/chat`` (Ollama streams unless told ``"stream": false``).
    """
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    messages.extend(chat_message(m) for m in request.messages if m.role != "system")
    options: dict[str, Any] = {}
    if request.temperature is not None:
        options["temperature"] = request.temperature
    if request.max_tokens is not None:
        options["num_predict"] = request.max_tokens
    body: dict[str, Any] = {"model": request.model, "messages": messages, "stream": stream}
    if options:
        body["options"] = options
    return body


def chat_message(message: ChatMessage) -> dict[str, Any]:
    """
    One turn as ``/api/chat`` writes it.
    """
    return {"role": message.role, "content": message.content}


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


def item(value: object) -> Mapping[str, Any]:
    """
    A decoded reply object or NDJSON line; :class:`StreamedError` for an error object.
    """
    if not isinstance(value, Mapping):
        raise MalformedReply(f"a reply line is {type(value).__name__}, not an object")
    if "error" in value:
        raise StreamedError(str(value["error"]), value)
    return value


def content(line: Mapping[str, Any]) -> str:
    """
    The text of a reply object or line (its ``message.content``; empty when it has none).
    """
    message = line.get("message")
    if message is None:
        return ""
    if not isinstance(message, Mapping):
        raise MalformedReply("message is not an object")
    return optional_text(message.get("content"), "message.content") or ""


def reply(body: object, request: ProviderRequest, provider: str) -> ProviderReply:
    """
    A decoded whole reply (``"stream": false``); :class:`MalformedReply` when it is not one.
    """
    whole = item(body)
    usage, valid = usage_of(whole, provider)
    return ProviderReply(
        text=content(whole),
        model=model_name(whole.get("model")) or request.model,
        usage=usage,
        finish_reason=_finish_reason(whole.get("done_reason")),
        usage_valid=valid,
    )


@attrs.define
class LineReading:
    """
    One stream's NDJSON lines, read as they come (a StreamReading).

    The line with ``done: true`` carries the counts and ends the stream; a body that
    ends without it is :class:`StreamIncomplete`.
    """

    model: str
    provider: str = "ollama"
    # Set by the line with done: true: nothing after it is read.
    finished: bool = False
    _last: Mapping[str, Any] | None = None
    _lines: LineSplitter = attrs.field(factory=LineSplitter)

    def feed(self, data: bytes) -> list[bytes]:
        """
        The lines these bytes complete.
        """
        return self._lines.feed(data)

    def flush(self) -> Sequence[bytes]:
        """
        A last line the body did not end with a newline.
        """
        return [self._lines.rest()]

    def take(self, line: bytes) -> Sequence[TextDelta]:
        """
        Read one line; the text it adds, if any.
        """
        if self.finished or not line.strip():
            return ()
        decoded = item(decode_json(line))
        text = content(decoded)
        if decoded.get("done"):
            self.finished = True
            self._last = decoded
        return (TextDelta(text),) if text else ()

    def end(self) -> StreamEnd:
        """
        The stream's last item, from the ``done`` line.
        """
        last = self._last
        if not self.finished or last is None:
            raise StreamIncomplete("broke off: the reply ended before its last line")
        usage, valid = usage_of(last, self.provider)
        return StreamEnd(
            usage=usage,
            finish_reason=_finish_reason(last.get("done_reason")),
            model=model_name(last.get("model")) or self.model,
            usage_valid=valid,
        )


def _finish_reason(done_reason: Any) -> str:
    return "length" if done_reason == "length" else "stop"


def translated(exc: Exception, provider: str, model: str | None) -> ProviderError | None:
    """
    The one reading of Ollama's failures: an error status or an ``{"error": ...}``
    object as a Rhetor error; None for what is not one (the transport's are read elsewhere).
    """
    if isinstance(exc, UpstreamStatus):
        return _status_error(exc, provider, model)
    if isinstance(exc, StreamedError):
        return _message_error(str(exc), provider, model)
    return None


def _status_error(exc: UpstreamStatus, provider: str, model: str | None) -> ProviderError:
    status = exc.status
    body = exc.json()
    detail = str(body.get("error") or body) if isinstance(body, Mapping) else ""
    detail = error_detail_text(exc, detail)
    message = f"{provider} answered {status}: {detail}"
    if status in (401, 403):
        return AuthenticationFailed(message, provider=provider, model=model)
    if status == 429:
        return RateLimited(
            message, provider=provider, model=model, retry_after=retry_after(exc.headers)
        )
    if status == 529 or (status == 503 and "busy" in detail.lower()):
        return Overloaded(message, provider=provider, model=model)
    if status >= 500 or status < 400:
        # A 3xx is a redirect (not followed): no chat reply answers one.
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
