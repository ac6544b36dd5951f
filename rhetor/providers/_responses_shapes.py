"""
OpenAI Responses API requests read into the internal model, with no I/O.

Reading a client's ``POST /v1/responses`` at the edge: input items as turns
(:func:`input_items`: messages, ``function_call`` items as an assistant turn's
tool calls, ``function_call_output`` items as a user turn's tool results),
function tools, the tool choice, and ``text.format``. Writing the reply is
:mod:`rhetor.providers._responses_replies`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from rhetor._content import (
    Image,
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
from rhetor.providers._shapes import as_list, as_object, optional_bool, optional_str, required_str

__all__ = [
    "format_from_responses",
    "input_items",
    "tool_choice_from_responses",
    "tools_from_responses",
]

_SYSTEM_ROLES = frozenset({"system", "developer"})


def _renamed(error: ValidationError, field: str) -> ValidationError:
    """``error`` naming ``field`` instead (the field as the client sent it)."""
    return ValidationError(field, error.message.split(": ", 1)[-1])


def input_items(items: Sequence[Any], field: str = "input") -> list[ChatMessage]:
    """
    Input items as turns: messages, ``function_call`` and ``function_call_output`` items.

    Function calls join the assistant turn before them (or start one); outputs
    gather into one user turn, which a user message right after them joins.

    Error handling: a :class:`ValidationError` naming the first bad item or field.
    """
    turns: list[tuple[str, list[Any]]] = []

    def add(role: str, blocks: Sequence[Any]) -> None:
        if turns and role != "system" and turns[-1][0] == role:
            turns[-1][1].extend(blocks)
        else:
            turns.append((role, list(blocks)))

    for i, value in enumerate(items):
        where = f"{field}[{i}]"
        item = as_object(value, where)
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            role, blocks = _message(item, where)
            add(role, blocks)
        elif kind == "function_call":
            call = ToolCall(
                required_str(item, "call_id", where),
                required_str(item, "name", where),
                optional_str(item, "arguments", where) or "{}",
            )
            add("assistant", [call])
        elif kind == "function_call_output":
            call_id = required_str(item, "call_id", where)
            output = _output(item.get("output"), f"{where}.output")
            add("user", [ToolResult(call_id, output)])
        else:
            raise ValidationError(
                f"{where}.type",
                f"input item type {kind!r} is not supported; only message, function_call "
                "and function_call_output",
            )
    return [_turn(role, blocks, f"{field}") for role, blocks in turns]


def _turn(role: str, blocks: list[Any], field: str) -> ChatMessage:
    # Tool results first in a user turn, as every family writes them.
    if role == "user":
        blocks = [b for b in blocks if isinstance(b, ToolResult)] + [
            b for b in blocks if not isinstance(b, ToolResult)
        ]
    try:
        return ChatMessage(cast("Any", role), blocks=tuple(blocks))
    except ValidationError as exc:
        raise _renamed(exc, field) from None


def _message(item: Mapping[str, Any], where: str) -> tuple[str, list[Text | Image | Verbatim]]:
    role = item.get("role")
    if not isinstance(role, str) or role not in ("system", "developer", "user", "assistant"):
        raise ValidationError(f"{where}.role", "must be system, developer, user or assistant")
    content = item.get("content")
    if isinstance(content, str):
        blocks: list[Text | Image | Verbatim] = [Text(content)]
    else:
        blocks = []
        for j, part in enumerate(as_list(content, f"{where}.content")):
            at = f"{where}.content[{j}]"
            is_file = isinstance(part, Mapping) and part.get("type") == "input_file"
            if is_file and role == "user":
                blocks.append(_file(part, at))
            else:
                blocks.append(_part(part, at, role, files=True))
    return ("system" if role in _SYSTEM_ROLES else role), blocks


def _file(part: Mapping[str, Any], where: str) -> Verbatim:
    """
    An ``input_file`` part as the Chat Completions ``file`` part it is relayed as (to
    OpenAI-compatible models only): its ``file_data`` and ``filename``.
    """
    if part.get("file_url") is not None:
        raise ValidationError(f"{where}.file_url", "is not supported; send file_data or file_id")
    file = {name: optional_str(part, name, where) for name in ("file_data", "file_id", "filename")}
    if file["file_data"] is None:
        raise ValidationError(
            f"{where}.file_data",
            "is required: a file's cost is reserved before it is sent, which needs its size "
            "(a file id has none here)",
        )
    kept = {name: value for name, value in file.items() if value is not None}
    return Verbatim(OPENAI, {"type": "file", "file": kept})


def _part(value: object, where: str, role: str, *, files: bool = False) -> Text | Image:
    part = as_object(value, where)
    kind = part.get("type")
    if kind in ("input_text", "output_text"):
        return Text(required_str(part, "text", where))
    if kind == "refusal":
        return Text(required_str(part, "refusal", where))
    if kind == "input_image" and role == "user":
        url = optional_str(part, "image_url", where)
        if url is None:
            raise ValidationError(f"{where}.image_url", "is required (file ids are not supported)")
        detail = optional_str(part, "detail", where)
        if detail not in (None, "low", "high", "auto"):
            raise ValidationError(f"{where}.detail", "must be low, high or auto")
        try:
            return Image.from_url(url, cast("Any", detail))
        except ValidationError as exc:
            raise _renamed(exc, f"{where}.image_url") from None
    allowed = "input_text, output_text, refusal" + (
        (", input_image and input_file" if files else " and input_image") if role == "user" else ""
    )
    raise ValidationError(
        f"{where}.type", f"content part type {kind!r} is not supported here; only {allowed}"
    )


def _output(value: object, where: str) -> tuple[Text | Image, ...]:
    if isinstance(value, str):
        return (Text(value),)
    return tuple(
        _part(part, f"{where}[{j}]", "user") for j, part in enumerate(as_list(value, where))
    )


def tools_from_responses(raw: Sequence[Any] | None, field: str = "tools") -> tuple[Tool, ...]:
    """Function tools (flat: ``{type: function, name, description, parameters, strict}``)."""
    tools = []
    for i, value in enumerate(raw or ()):
        where = f"{field}[{i}]"
        tool = as_object(value, where)
        kind = tool.get("type")
        if kind != "function":
            raise ValidationError(
                f"{where}.type",
                f"tool type {kind!r} is not supported; only function tools "
                "(built-in tools such as web_search are not)",
            )
        parameters = as_object(
            tool.get("parameters") or {"type": "object", "properties": {}}, f"{where}.parameters"
        )
        try:
            tools.append(
                Tool(
                    required_str(tool, "name", where),
                    optional_str(tool, "description", where),
                    parameters,
                    optional_bool(tool, "strict", where),
                )
            )
        except ValidationError as exc:
            if (exc.field or "").startswith(where):
                raise
            raise _renamed(exc, f"{where}.name") from None
    return tuple(tools)


def tool_choice_from_responses(
    raw: str | Mapping[str, Any] | None, parallel: bool | None, field: str = "tool_choice"
) -> ToolChoice | None:
    """``tool_choice`` (and ``parallel_tool_calls``): auto, none, required, or ``{type: function, name}``."""
    if raw is None:
        return None if parallel is None else ToolChoice(parallel=parallel)
    if isinstance(raw, str):
        if raw not in ("auto", "none", "required"):
            raise ValidationError(field, "must be auto, none, required or {type: function, name}")
        return ToolChoice(cast("Any", raw), parallel=parallel)
    if raw.get("type") != "function":
        raise ValidationError(f"{field}.type", "only function (or auto, none, required)")
    return ToolChoice("tool", required_str(raw, "name", field), parallel=parallel)


def format_from_responses(
    raw: Mapping[str, Any] | None, field: str = "text"
) -> ResponseFormat | None:
    """``text.format``: ``text``, ``json_object``, or ``json_schema`` (flat: name, schema, strict)."""
    if raw is None or raw.get("format") is None:
        return None
    where = f"{field}.format"
    spec = as_object(raw["format"], where)
    kind = spec.get("type")
    if kind in ("text", "json_object"):
        return ResponseFormat(kind)
    if kind != "json_schema":
        raise ValidationError(f"{where}.type", "must be text, json_object or json_schema")
    schema = as_object(spec.get("schema", {"type": "object"}), f"{where}.schema")
    try:
        return ResponseFormat(
            "json_schema",
            schema,
            required_str(spec, "name", where),
            optional_str(spec, "description", where),
            optional_bool(spec, "strict", where),
        )
    except ValidationError as exc:
        if (exc.field or "").startswith(where):
            raise
        raise _renamed(exc, f"{where}.name") from None
