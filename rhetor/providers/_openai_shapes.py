"""
OpenAI Chat Completions shapes <-> the internal model, both ways, with no I/O.

Reading (a client's request at the edge, an upstream's reply here): chat messages
(:func:`messages_from_openai`), tools, tool choice, response format and stop
sequences, and the ``tool_calls`` of an assistant message. Writing (a request to an
OpenAI-compatible upstream, a reply to an OpenAI client): the same, the other way,
and a reply as a ``chat.completion`` or its ``chat.completion.chunk`` events
(:func:`completion_to_openai`, :class:`OpenAIChunks`).

The translation of turns (``docs/compat.md``):

- ``system`` and ``developer`` messages are system turns (text only);
- a ``user`` message's parts are text and ``image_url`` (a ``data:`` URL becomes
  base64 data);
- an ``assistant`` message's ``content`` and ``tool_calls`` are one turn of text and
  :class:`~rhetor._content.ToolCall` blocks;
- ``tool`` messages become :class:`~rhetor._content.ToolResult` blocks of one user
  turn, which also takes a ``user`` message right after them. Written back, a user
  turn's results come first, one ``tool`` message each, then its other content as a
  ``user`` message. OpenAI has no error flag on a tool message: a failed result's
  text is written with ``Error: `` before it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

from rhetor._content import (
    Image,
    Passthrough,
    ResponseFormat,
    Text,
    Tool,
    ToolCall,
    ToolChoice,
    ToolResult,
    Verbatim,
)
from rhetor._errors import ValidationError
from rhetor._types import ChatMessage
from rhetor.providers._families import OPENAI
from rhetor.providers._shapes import (
    Untranslatable,
    as_list,
    as_object,
    optional_bool,
    optional_str,
    required_str,
    sampling_fields,
    string_map,
)

__all__ = [
    "ERROR_PREFIX",
    "TRANSLATED",
    "fields_from_openai",
    "message_to_openai",
    "messages_from_openai",
    "messages_to_openai",
    "response_format_from_openai",
    "response_format_to_openai",
    "stop_from_openai",
    "tool_calls_from_openai",
    "tool_choice_from_openai",
    "tool_choice_to_openai",
    "tools_from_openai",
    "tools_to_openai",
]

# The Chat Completions parameters Rhetor reads itself; any other is relayed (see fields_from_openai).
TRANSLATED = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "temperature",
        "max_tokens",
        "max_completion_tokens",
        "n",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "stop",
        "top_p",
        "seed",
        "user",
        "metadata",
    }
)

# What a failed tool result's text starts with in a tool message (which has no error flag).
ERROR_PREFIX = "Error: "

_SYSTEM_ROLES = frozenset({"system", "developer"})


# -- reading ------------------------------------------------------------------------


def fields_from_openai(body: Mapping[str, Any]) -> dict[str, Any]:
    """
    A Chat Completions body's conversation and its fields beyond the edge's own, as
    keyword arguments of ``Runtime.request``: ``messages``, ``tools``, ``tool_choice``,
    ``response_format``, ``stop``, ``top_p``, ``seed``, ``user``, ``metadata``, and
    every parameter not in :data:`TRANSLATED` as an OpenAI ``passthrough``.

    ``model``, ``stream``, ``stream_options``, ``temperature``, the token limits and
    ``n`` are left to the edge, which reads them today.

    Error handling: a :class:`ValidationError` naming the first bad field.
    """
    fields: dict[str, Any] = {
        "messages": messages_from_openai(body.get("messages")),
        "tools": tools_from_openai(body.get("tools")),
        "tool_choice": tool_choice_from_openai(
            body.get("tool_choice"), body.get("parallel_tool_calls")
        ),
        "response_format": response_format_from_openai(body.get("response_format")),
        "stop": stop_from_openai(body.get("stop")),
        "user": _user(body.get("user")),
        "metadata": string_map(body.get("metadata"), "metadata"),
        **sampling_fields(body),
    }
    extra = {k: v for k, v in body.items() if k not in TRANSLATED}
    if extra:
        fields["passthrough"] = Passthrough(OPENAI, extra)
    return fields


def messages_from_openai(raw: object, field: str = "messages") -> tuple[ChatMessage, ...]:
    """
    A Chat Completions ``messages`` array as turns (see the module docstring).

    Error handling: a :class:`ValidationError` naming the first bad field.
    """
    turns: list[ChatMessage] = []
    results: list[ToolResult] = []
    for i, item in enumerate(as_list(raw, field)):
        where = f"{field}[{i}]"
        message = as_object(item, where)
        role = message.get("role")
        if role == "tool":
            call_id = required_str(message, "tool_call_id", where)
            content = _parts(message.get("content"), f"{where}.content", images=False)
            results.append(ToolResult(call_id, content))
            continue
        if results and role != "user":
            turns.append(ChatMessage("user", blocks=tuple(results)))
            results = []
        if isinstance(role, str) and role in _SYSTEM_ROLES:
            text = _parts(message.get("content"), f"{where}.content", images=False)
            turns.append(ChatMessage("system", blocks=text))
        elif role == "user":
            parts = _user_parts(message.get("content"), f"{where}.content")
            turns.append(ChatMessage("user", blocks=(*results, *parts)))
            results = []
        elif role == "assistant":
            turns.append(_assistant(message, where))
        else:
            raise ValidationError(
                f"{where}.role",
                f"role {role!r} is not supported; use system, developer, user, assistant or tool",
            )
    if results:
        turns.append(ChatMessage("user", blocks=tuple(results)))
    return tuple(turns)


def _user(value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValidationError("user", "must be a string")
    return value


def _assistant(message: Mapping[str, Any], where: str) -> ChatMessage:
    content = message.get("content")
    text = () if content is None else _parts(content, f"{where}.content", images=False)
    calls: tuple[ToolCall, ...] = ()
    if message.get("tool_calls") is not None:
        calls = tool_calls_from_openai(message["tool_calls"], f"{where}.tool_calls")
    if message.get("function_call") is not None:
        raise ValidationError(f"{where}.function_call", "is deprecated; use tool_calls")
    return ChatMessage("assistant", blocks=(*text, *calls))


def _parts(content: object, field: str, *, images: bool) -> tuple[Text | Image, ...]:
    """A message's content: a string, or an array of text (and, for a user, image) parts."""
    blocks = _user_parts(content, field, images=images, files=False)
    return tuple(b for b in blocks if not isinstance(b, Verbatim))


# The parts of a user message relayed as they came, to OpenAI-compatible models only
# (a file as file_data, audio as base64 data and its format). Not a file by its id:
# its cost is reserved before it is sent, which needs its size (rhetor._documents).
_VERBATIM_PARTS = {"file": ("file", ("file_data",)), "input_audio": ("input_audio", ())}


def _verbatim_part(part: Mapping[str, Any], where: str) -> Verbatim:
    kind = str(part.get("type"))
    key, either = _VERBATIM_PARTS[kind]
    inner = as_object(part.get(key), f"{where}.{key}")
    if either and not any(isinstance(inner.get(name), str) for name in either):
        raise ValidationError(
            f"{where}.{key}",
            f"needs {' or '.join(either)}: its cost is reserved before it is sent, which "
            "needs its size (a file id has none here)",
        )
    if kind == "input_audio":
        required_str(inner, "data", f"{where}.{key}")
        required_str(inner, "format", f"{where}.{key}")
    return Verbatim(OPENAI, dict(part))


def _user_parts(
    content: object, field: str, *, images: bool = True, files: bool = True
) -> tuple[Text | Image | Verbatim, ...]:
    """
    A message's content: a string, or an array of text parts, and for a user image parts
    and (``files``) file and audio parts, which are relayed as they came.
    """
    if isinstance(content, str):
        return (Text(content),)
    blocks: list[Text | Image | Verbatim] = []
    for j, item in enumerate(as_list(content, field)):
        where = f"{field}[{j}]"
        part = as_object(item, where)
        kind = part.get("type")
        if files and kind in _VERBATIM_PARTS:
            blocks.append(_verbatim_part(part, where))
        elif kind == "text":
            blocks.append(Text(required_str(part, "text", where)))
        elif kind == "refusal":
            blocks.append(Text(required_str(part, "refusal", where)))
        elif kind == "image_url" and images:
            image = as_object(part.get("image_url"), f"{where}.image_url")
            url = required_str(image, "url", f"{where}.image_url")
            detail = optional_str(image, "detail", f"{where}.image_url")
            if detail not in (None, "low", "high", "auto"):
                raise ValidationError(f"{where}.image_url.detail", "must be low, high or auto")
            try:
                blocks.append(Image.from_url(url, cast("Any", detail)))
            except ValidationError as exc:
                raise ValidationError(f"{where}.image_url.url", exc.message) from None
        else:
            allowed = "text and image_url" if images else "text"
            if files:
                allowed = "text, image_url, file and input_audio"
            raise ValidationError(
                f"{where}.type", f"content part type {kind!r} is not supported here; only {allowed}"
            )
    return tuple(blocks)


def tool_calls_from_openai(raw: object, field: str) -> tuple[ToolCall, ...]:
    """An assistant message's ``tool_calls`` (function calls only)."""
    calls = []
    for k, item in enumerate(as_list(raw, field)):
        where = f"{field}[{k}]"
        call = as_object(item, where)
        if call.get("type", "function") != "function":
            raise ValidationError(f"{where}.type", "only function tool calls are supported")
        function = as_object(call.get("function"), f"{where}.function")
        arguments = optional_str(function, "arguments", f"{where}.function") or "{}"
        calls.append(
            ToolCall(
                required_str(call, "id", where),
                required_str(function, "name", f"{where}.function"),
                arguments,
            )
        )
    return tuple(calls)


def tools_from_openai(raw: object, field: str = "tools") -> tuple[Tool, ...]:
    """A ``tools`` array of function tools."""
    if raw is None:
        return ()
    tools = []
    for i, item in enumerate(as_list(raw, field)):
        where = f"{field}[{i}]"
        tool = as_object(item, where)
        if tool.get("type") != "function":
            raise ValidationError(f"{where}.type", "only function tools are supported")
        function = as_object(tool.get("function"), f"{where}.function")
        name = required_str(function, "name", f"{where}.function")
        description = optional_str(function, "description", f"{where}.function")
        parameters = as_object(
            function.get("parameters", {"type": "object", "properties": {}}),
            f"{where}.function.parameters",
        )
        strict = optional_bool(function, "strict", f"{where}.function")
        try:
            tools.append(Tool(name, description, parameters, strict))
        except ValidationError as exc:
            raise ValidationError(f"{where}.function.name", exc.message) from None
    return tuple(tools)


def tool_choice_from_openai(
    raw: object, parallel_tool_calls: object = None, field: str = "tool_choice"
) -> ToolChoice | None:
    """``tool_choice`` (and ``parallel_tool_calls``) as one choice; None when neither is given."""
    if parallel_tool_calls is not None and not isinstance(parallel_tool_calls, bool):
        raise ValidationError("parallel_tool_calls", "must be true or false")
    if raw is None:
        return None if parallel_tool_calls is None else ToolChoice(parallel=parallel_tool_calls)
    if raw in ("auto", "none", "required"):
        return ToolChoice(cast("Any", raw), parallel=parallel_tool_calls)
    choice = as_object(raw, field)
    if choice.get("type") != "function":
        raise ValidationError(f"{field}.type", "must be function (or auto, none, required)")
    function = as_object(choice.get("function"), f"{field}.function")
    name = required_str(function, "name", f"{field}.function")
    return ToolChoice("tool", name, parallel=parallel_tool_calls)


def response_format_from_openai(
    raw: object, field: str = "response_format"
) -> ResponseFormat | None:
    """A ``response_format``: text, json_object, or json_schema with its schema."""
    if raw is None:
        return None
    body = as_object(raw, field)
    kind = body.get("type")
    if kind in ("text", "json_object"):
        return ResponseFormat(kind)
    if kind != "json_schema":
        raise ValidationError(f"{field}.type", "must be text, json_object or json_schema")
    spec = as_object(body.get("json_schema"), f"{field}.json_schema")
    schema = as_object(spec.get("schema", {"type": "object"}), f"{field}.json_schema.schema")
    return ResponseFormat(
        "json_schema",
        schema,
        required_str(spec, "name", f"{field}.json_schema"),
        optional_str(spec, "description", f"{field}.json_schema"),
        optional_bool(spec, "strict", f"{field}.json_schema"),
    )


def stop_from_openai(raw: object, field: str = "stop") -> tuple[str, ...]:
    """``stop``: a string or an array of strings."""
    if raw is None:
        return ()
    if isinstance(raw, str):
        return (raw,)
    stops = as_list(raw, field)
    if not all(isinstance(s, str) for s in stops):
        raise ValidationError(field, "must be a string or an array of strings")
    return tuple(stops)


# -- writing ------------------------------------------------------------------------


def messages_to_openai(
    messages: Iterable[ChatMessage], system: str | None = None
) -> list[dict[str, Any]]:
    """
    The conversation as Chat Completions ``messages``: the system prompt first, then each turn.

    System turns among ``messages`` are left out (the system prompt travels apart).

    Error handling: content OpenAI cannot carry raises :class:`Untranslatable`.
    """
    written: list[dict[str, Any]] = []
    if system:
        written.append({"role": "system", "content": system})
    for i, message in enumerate(messages):
        if message.role != "system":
            written.extend(message_to_openai(message, f"messages[{i}]"))
    return written


def message_to_openai(message: ChatMessage, field: str = "message") -> list[dict[str, Any]]:
    """One turn as Chat Completions messages (a user turn with tool results is several)."""
    if not message.blocks:
        return [{"role": message.role, "content": message.content}]
    if message.role == "assistant":
        text = message.content
        out: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls := message.tool_calls:
            out["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in calls
            ]
        return [out]
    written: list[dict[str, Any]] = []
    rest: list[Text | Image | Verbatim] = []
    for j, block in enumerate(message.blocks):
        if isinstance(block, ToolResult):
            written.append(_tool_message(block, f"{field}.content[{j}]"))
        elif isinstance(block, Text | Image) or (
            isinstance(block, Verbatim) and block.family == OPENAI
        ):
            rest.append(block)
        elif isinstance(block, Verbatim):
            raise Untranslatable(
                f"{field}.content[{j}]",
                f"{block.family}'s {block.block.get('type')} block cannot go to OpenAI",
            )
    if rest:
        if all(isinstance(b, Text) for b in rest):
            written.append({"role": message.role, "content": "".join(_text(b) for b in rest)})
        else:
            written.append({"role": message.role, "content": [_part(b) for b in rest]})
    return written


def _text(block: Text | Image | Verbatim) -> str:
    return block.text if isinstance(block, Text) else ""


def _tool_message(result: ToolResult, field: str) -> dict[str, Any]:
    if any(isinstance(b, Image) for b in result.content):
        raise Untranslatable(field, "OpenAI tool messages carry text only, not images")
    text = result.text
    if result.is_error:
        text = ERROR_PREFIX + text
    return {"role": "tool", "tool_call_id": result.call_id, "content": text}


def _part(block: Text | Image | Verbatim) -> dict[str, Any]:
    if isinstance(block, Text):
        return {"type": "text", "text": block.text}
    if isinstance(block, Verbatim):
        return dict(block.block)
    image: dict[str, Any] = {"url": block.as_url()}
    if block.detail is not None:
        image["detail"] = block.detail
    return {"type": "image_url", "image_url": image}


def tools_to_openai(tools: Sequence[Tool]) -> list[dict[str, Any]]:
    """Tools as Chat Completions function tools."""
    written = []
    for tool in tools:
        function: dict[str, Any] = {"name": tool.name}
        if tool.description is not None:
            function["description"] = tool.description
        function["parameters"] = dict(tool.parameters)
        if tool.strict is not None:
            function["strict"] = tool.strict
        written.append({"type": "function", "function": function})
    return written


def tool_choice_to_openai(choice: ToolChoice) -> dict[str, Any]:
    """The body fields of a tool choice: ``tool_choice`` and ``parallel_tool_calls``, as set."""
    fields: dict[str, Any] = {}
    if choice.mode == "tool":
        fields["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
    elif choice.mode != "auto" or choice.parallel is None:
        fields["tool_choice"] = choice.mode
    if choice.parallel is not None:
        fields["parallel_tool_calls"] = choice.parallel
    return fields


def response_format_to_openai(fmt: ResponseFormat) -> dict[str, Any]:
    """A response format as Chat Completions' ``response_format``."""
    if fmt.type != "json_schema":
        return {"type": fmt.type}
    spec: dict[str, Any] = {"name": fmt.name}
    if fmt.description is not None:
        spec["description"] = fmt.description
    spec["schema"] = dict(fmt.schema or {})
    if fmt.strict is not None:
        spec["strict"] = fmt.strict
    return {"type": "json_schema", "json_schema": spec}
