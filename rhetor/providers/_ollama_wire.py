"""
Ollama's native chat wire format (``/api/chat``): request bodies, replies, NDJSON
lines and error bodies, with no I/O (:mod:`rhetor.providers._ollama` sends and receives).

Replies stream as NDJSON: one JSON object a line, each with a piece of
``message.content``; the last has ``done: true`` and the token counts
(``prompt_eval_count``, ``eval_count``). Lines are cut at ``\\n`` only, in linear
time (:class:`rhetor.providers._wire.LineSplitter`): a JSON string may hold the
Unicode line breaks (U+0085, U+2028) that Ollama's encoder leaves unescaped.

A request is built in :func:`chat_body` (top-level fields: ``tools``, ``format`` for
a response format, ``options`` for the sampling fields) and :func:`chat_message` (one
turn: its text, its images as base64 ``images``, an assistant's ``tool_calls`` with
their arguments as objects; a tool result is a ``tool`` message naming its tool).
Ollama has no tool choice: ``none`` sends no tools, ``auto`` is its only way, and a
forced choice never reaches it (the Router keeps such requests from Ollama models).
Every 200 body is checked as it is read: the counts in :func:`usage_of` (malformed
ones mark the reply ``usage_valid=False``), the rest in :func:`reply` and
:class:`LineReading`, whose lines may carry whole ``message.tool_calls`` (each
becomes one tool-call delta). Error statuses and ``{"error": ...}`` objects become
:mod:`rhetor._errors` in :func:`translated`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from rhetor._content import (
    Image,
    Text,
    ToolCall,
    ToolCallDelta,
    ToolResult,
    Verbatim,
    finish_reason,
)
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
from rhetor.providers._families import OLLAMA
from rhetor.providers._openai_shapes import ERROR_PREFIX
from rhetor.providers._shapes import Untranslatable, compact_json
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
    relay,
    retry_after,
    token_count,
    usage_anomaly,
)

__all__ = [
    "LineReading",
    "chat_body",
    "chat_message",
    "chat_messages",
    "reply",
    "tool_calls",
    "translated",
    "usage_of",
]


def chat_body(request: ProviderRequest, *, stream: bool, provider: str = OLLAMA) -> dict[str, Any]:
    """
    The JSON body of ``POST /api/chat`` (Ollama streams unless told ``"stream": false``).

    Error handling: content Ollama cannot carry (an image URL, a forced tool choice)
    is :class:`rhetor.BadRequest` from ``provider``, before anything is sent.
    """
    try:
        messages = chat_messages(request)
        if request.tool_choice is not None and request.tool_choice.forces and request.tools:
            raise Untranslatable("tool_choice", "Ollama has no way to force a tool call")
    except Untranslatable as exc:
        raise BadRequest(
            f"{exc.field}: {exc.message}", provider=provider, model=request.model
        ) from None
    options: dict[str, Any] = {}
    extra = request.passthrough
    if request.temperature is not None:
        options["temperature"] = request.temperature
    if request.max_tokens is not None:
        options["num_predict"] = request.max_tokens
    if request.top_p is not None:
        options["top_p"] = request.top_p
    if request.seed is not None:
        options["seed"] = request.seed
    if request.stop:
        options["stop"] = list(request.stop)
    body: dict[str, Any] = {"model": request.model, "messages": messages, "stream": stream}
    if request.tools and (request.tool_choice is None or request.tool_choice.mode != "none"):
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    **({"description": tool.description} if tool.description is not None else {}),
                    "parameters": dict(tool.parameters),
                },
            }
            for tool in request.tools
        ]
    fmt = request.response_format
    if fmt is not None and fmt.type == "json_object":
        body["format"] = "json"
    elif fmt is not None and fmt.type == "json_schema":
        body["format"] = dict(fmt.schema or {})
    if options:
        body["options"] = options
    if extra is not None and extra.family == OLLAMA:
        relay(body, extra.params)
    return body


def chat_messages(request: ProviderRequest) -> list[dict[str, Any]]:
    """
    The conversation: the system prompt first, then each turn (a turn with tool results is several).

    Error handling: content Ollama cannot carry raises
    :class:`rhetor.providers._shapes.Untranslatable`.
    """
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    names: dict[str, str] = {}
    for i, message in enumerate(request.messages):
        if message.role == "system":
            continue
        for call in message.tool_calls:
            names[call.id] = call.name
        messages.extend(chat_message(message, f"messages[{i}]", names))
    return messages


def chat_message(
    message: ChatMessage, field: str = "message", tool_names: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """
    One turn as ``/api/chat`` writes it: one message, or a ``tool`` message per tool
    result (named by the call it answers, from ``tool_names``) and then the rest.
    """
    if not message.blocks:
        return [{"role": message.role, "content": message.content}]
    if message.role == "assistant":
        out: dict[str, Any] = {"role": "assistant", "content": message.content}
        calls = []
        for j, call in enumerate(message.tool_calls):
            try:
                arguments = call.input()
            except ValueError:
                raise Untranslatable(
                    f"{field}.content[{j}]",
                    f"tool call {call.id}'s arguments are not a JSON object",
                ) from None
            calls.append({"function": {"name": call.name, "arguments": arguments}})
        if calls:
            out["tool_calls"] = calls
        return [out]
    written: list[dict[str, Any]] = []
    rest: list[Text | Image] = []
    for j, block in enumerate(message.blocks):
        where = f"{field}.content[{j}]"
        if isinstance(block, ToolResult):
            text = (ERROR_PREFIX if block.is_error else "") + block.text
            tool: dict[str, Any] = {"role": "tool", "content": text}
            if tool_names and block.call_id in tool_names:
                tool["tool_name"] = tool_names[block.call_id]
            images = [_image(b, where) for b in block.content if isinstance(b, Image)]
            if images:
                tool["images"] = images
            written.append(tool)
        elif isinstance(block, Text | Image):
            rest.append(block)
        elif isinstance(block, Verbatim):
            raise Untranslatable(
                where, f"{block.family}'s {block.block.get('type')} block cannot go to Ollama"
            )
    if rest:
        user: dict[str, Any] = {
            "role": message.role,
            "content": "".join(b.text for b in rest if isinstance(b, Text)),
        }
        images = [_image(b, field) for b in rest if isinstance(b, Image)]
        if images:
            user["images"] = images
        written.append(user)
    return written


def _image(image: Image, field: str) -> str:
    if image.data is None:
        raise Untranslatable(field, "Ollama takes images as base64 data, not URLs")
    return image.data


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


def tool_calls(line: Mapping[str, Any], first: int, prefix: str) -> tuple[ToolCall, ...]:
    """
    The tool calls of a reply object or line (its ``message.tool_calls``), numbered from ``first``.

    Each call's arguments object becomes JSON text; a call without an id (Ollama
    before 0.12) is given ``call_<prefix>_<number>``.
    """
    message = line.get("message")
    raw = message.get("tool_calls") if isinstance(message, Mapping) else None
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise MalformedReply("message.tool_calls is not a list")
    calls = []
    for k, entry in enumerate(raw):
        function = entry.get("function") if isinstance(entry, Mapping) else None
        if not isinstance(function, Mapping):
            raise MalformedReply("a tool call has no function object")
        name = optional_text(function.get("name"), "a tool call's name")
        arguments = function.get("arguments", {})
        if not name or not isinstance(arguments, Mapping):
            raise MalformedReply("a tool call has no name, or arguments that are not an object")
        assert isinstance(entry, Mapping)
        ident = optional_text(entry.get("id"), "a tool call's id") or f"call_{prefix}_{first + k}"
        calls.append(ToolCall(ident, name, compact_json(arguments)))
    return tuple(calls)


def reply(body: object, request: ProviderRequest, provider: str) -> ProviderReply:
    """
    A decoded whole reply (``"stream": false``); :class:`MalformedReply` when it is not one.
    """
    whole = item(body)
    usage, valid = usage_of(whole, provider)
    calls = tool_calls(whole, 0, request.request_id or "ollama")
    return ProviderReply(
        text=content(whole),
        model=model_name(whole.get("model")) or request.model,
        usage=usage,
        finish_reason=finish_reason(whole.get("done_reason"), tool_calls=bool(calls)),
        usage_valid=valid,
        tool_calls=calls,
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
    # Names the tool calls that come without an id (see tool_calls).
    call_prefix: str = "ollama"
    # Set by the line with done: true: nothing after it is read.
    finished: bool = False
    _last: Mapping[str, Any] | None = None
    _lines: LineSplitter = attrs.field(factory=LineSplitter)
    # Invariant: the tool calls read so far.
    _calls: int = 0

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

    def take(self, line: bytes) -> Sequence[TextDelta | ToolCallDelta]:
        """
        Read one line; the text it adds, then a delta for each whole tool call it carries.
        """
        if self.finished or not line.strip():
            return ()
        decoded = item(decode_json(line))
        text = content(decoded)
        calls = tool_calls(decoded, self._calls, self.call_prefix)
        if decoded.get("done"):
            self.finished = True
            self._last = decoded
        items: list[TextDelta | ToolCallDelta] = [TextDelta(text)] if text else []
        for call in calls:
            items.append(ToolCallDelta(self._calls, call.id, call.name, call.arguments))
            self._calls += 1
        return items

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
            finish_reason=finish_reason(last.get("done_reason"), tool_calls=self._calls > 0),
            model=model_name(last.get("model")) or self.model,
            usage_valid=valid,
        )


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
