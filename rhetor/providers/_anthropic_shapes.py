"""
Anthropic Messages shapes <-> the internal model, both ways, with no I/O.

Anthropic's content blocks are the internal model's (:mod:`rhetor._content`) almost
one for one: ``text``, ``image`` (a ``base64`` or ``url`` source), ``tool_use``
(whose ``input`` object is a :class:`~rhetor._content.ToolCall`'s arguments, as
JSON text), ``tool_result`` (its ``content`` a string or text and image blocks), and
``thinking`` and ``redacted_thinking`` (a :class:`~rhetor._content.Thinking`, kept
exactly as it came so that it can go back with its signature). A user turn's
``document`` and ``search_result`` blocks are relayed as they came
(:class:`~rhetor._content.Verbatim`), to Anthropic models only.
Reading (a client's request at the edge, an upstream's reply here) and writing (a
request upstream, a reply to an Anthropic client) go through the functions below;
replies written for Anthropic clients are in :mod:`rhetor.providers._anthropic_replies`.

Two translations are not one for one (``docs/compat.md``):

- the history is reshaped as the Messages API wants it: user first, roles strictly
  alternating (consecutive turns of one role merged, their text with a blank line
  between plain-text turns), a user turn's tool results first;
- a JSON schema response format is ``output_config.format`` (structured outputs,
  which always hold to the schema), and a ``json_object`` format, which has no
  equivalent, is an instruction appended to the system prompt
  (:data:`JSON_OBJECT_INSTRUCTION`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rhetor._content import (
    CitedText,
    Image,
    Passthrough,
    ResponseFormat,
    Text,
    Thinking,
    Tool,
    ToolCall,
    ToolChoice,
    ToolResult,
    Verbatim,
)
from rhetor._errors import ValidationError
from rhetor._types import ChatMessage
from rhetor.providers._families import ANTHROPIC
from rhetor.providers._shapes import (
    Untranslatable,
    as_list,
    as_object,
    compact_json,
    optional_bool,
    optional_str,
    required_str,
    sampling_fields,
)

__all__ = [
    "JSON_OBJECT_INSTRUCTION",
    "TRANSLATED",
    "block_cache_control",
    "citations_of",
    "cited_from_anthropic",
    "content_from_anthropic",
    "fields_from_anthropic",
    "messages_from_anthropic",
    "messages_to_anthropic",
    "response_format_from_anthropic",
    "response_format_to_anthropic",
    "system_from_anthropic",
    "thinking_to_anthropic",
    "tool_choice_from_anthropic",
    "tool_choice_to_anthropic",
    "tools_from_anthropic",
    "tools_to_anthropic",
]

# What a json_object response format adds to the system prompt (Anthropic has no JSON mode).
JSON_OBJECT_INSTRUCTION = (
    "Reply with a single JSON object and nothing else: no prose, no code fences."
)

# The Messages API parameters Rhetor reads itself; any other is relayed (see fields_from_anthropic).
TRANSLATED = frozenset(
    {
        "model",
        "messages",
        "system",
        "max_tokens",
        "stream",
        "temperature",
        "tools",
        "tool_choice",
        "stop_sequences",
        "metadata",
        "output_config",
        "top_p",
    }
)


# -- reading ------------------------------------------------------------------------


def fields_from_anthropic(body: Mapping[str, Any]) -> dict[str, Any]:
    """
    A Messages API body's conversation and its fields beyond the edge's own, as
    keyword arguments of ``Runtime.request``: ``messages``, ``system_prompt``,
    ``tools``, ``tool_choice``, ``response_format`` (from ``output_config.format``),
    ``stop`` (``stop_sequences``), ``top_p``, ``user`` (``metadata.user_id``), and
    every parameter not in :data:`TRANSLATED` as an Anthropic ``passthrough``, with
    whatever ``output_config`` holds besides its format, and the request-level
    ``cache_control`` that stands for block-level ones (:func:`block_cache_control`).

    ``model``, ``max_tokens``, ``stream`` and ``temperature`` are left to the edge.

    Error handling: a :class:`ValidationError` naming the first bad field.
    """
    metadata = body.get("metadata")
    user = None
    if metadata is not None:
        user = optional_str(as_object(metadata, "metadata"), "user_id", "metadata")
    stops = body.get("stop_sequences")
    if stops is not None and not all(isinstance(s, str) for s in as_list(stops, "stop_sequences")):
        raise ValidationError("stop_sequences", "must be an array of strings")
    fields: dict[str, Any] = {
        "messages": messages_from_anthropic(body.get("messages")),
        "system_prompt": system_from_anthropic(body.get("system")),
        "tools": tools_from_anthropic(body.get("tools")),
        "tool_choice": tool_choice_from_anthropic(body.get("tool_choice")),
        "response_format": response_format_from_anthropic(body.get("output_config")),
        "stop": tuple(stops or ()),
        "user": user,
        **sampling_fields(body),
    }
    fields.pop("seed", None)
    extra = {k: v for k, v in body.items() if k not in TRANSLATED}
    if "cache_control" not in extra and (marked := block_cache_control(body)) is not None:
        extra["cache_control"] = marked
    config = body.get("output_config")
    if isinstance(config, Mapping) and (rest := {k: v for k, v in config.items() if k != "format"}):
        extra["output_config"] = rest
    if extra:
        fields["passthrough"] = Passthrough(ANTHROPIC, extra)
    return fields


def block_cache_control(body: Mapping[str, Any]) -> dict[str, str] | None:
    """
    The request-level ``cache_control`` that stands for a body's block-level ones; None without any.

    Blocks are not carried one by one (the internal model has no place for a
    breakpoint, and the system prompt is one text), so a ``cache_control`` on
    any system block, tool, message block or tool result's block becomes
    Anthropic's automatic caching: one breakpoint at the last cacheable block,
    which reads any prefix cached before. Its ``ttl`` is ``1h`` when any block
    asked for an hour, else the default five minutes.
    """
    marks = [_marked(item) for item in _as_items(body.get("system"))]
    marks += [_marked(item) for item in _as_items(body.get("tools"))]
    for message in _as_items(body.get("messages")):
        for block in _as_items(message.get("content")):
            marks.append(_marked(block))
            marks += [_marked(inner) for inner in _as_items(block.get("content"))]
    asked = [m for m in marks if m is not None]
    if not asked:
        return None
    if "1h" in asked:
        return {"type": "ephemeral", "ttl": "1h"}
    return {"type": "ephemeral"}


def _as_items(value: object) -> list[Mapping[str, Any]]:
    """The objects of a JSON array (anything else: none; the edge checks shapes elsewhere)."""
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, Mapping)]


def _marked(item: Mapping[str, Any]) -> str | None:
    """An object's ``cache_control`` TTL (``""`` for the default), or None when it has none."""
    control = item.get("cache_control")
    if not isinstance(control, Mapping) or control.get("type") != "ephemeral":
        return None
    ttl = control.get("ttl")
    return ttl if ttl == "1h" else ""


def messages_from_anthropic(raw: object, field: str = "messages") -> tuple[ChatMessage, ...]:
    """
    A Messages API ``messages`` array as turns.

    Error handling: a :class:`ValidationError` naming the first bad field.
    """
    turns = []
    for i, item in enumerate(as_list(raw, field)):
        where = f"{field}[{i}]"
        message = as_object(item, where)
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise ValidationError(f"{where}.role", "must be user or assistant")
        blocks = _blocks(message.get("content"), f"{where}.content", role)
        turns.append(ChatMessage(role, blocks=blocks))
    return tuple(turns)


# Blocks relayed as they came, to Anthropic models only (see Verbatim).
VERBATIM = ("document", "search_result")
_ROLE_BLOCKS = {
    "user": ("text", "image", "tool_result", *VERBATIM),
    "assistant": ("text", "tool_use", "thinking", "redacted_thinking"),
}
Block = Text | Image | ToolCall | ToolResult | Thinking | Verbatim


def _blocks(content: object, field: str, role: str) -> tuple[Block, ...]:
    if isinstance(content, str):
        return (Text(content),)
    blocks: list[Block] = []
    for j, item in enumerate(as_list(content, field)):
        where = f"{field}[{j}]"
        block = as_object(item, where)
        kind = block.get("type")
        if kind not in _ROLE_BLOCKS[role]:
            raise ValidationError(
                f"{where}.type",
                f"content block type {kind!r} is not supported in a {role} message; "
                f"only {', '.join(_ROLE_BLOCKS[role])}",
            )
        if kind == "text":
            blocks.append(Text(required_str(block, "text", where)))
        elif kind == "image":
            blocks.append(_image(block, where))
        elif kind == "tool_use":
            blocks.append(_tool_use(block, where))
        elif kind in ("thinking", "redacted_thinking"):
            blocks.append(_thinking(block, where))
        elif kind in VERBATIM:
            if kind == "document":
                _check_document_source(block.get("source"), f"{where}.source")
            blocks.append(Verbatim(ANTHROPIC, dict(block)))
        else:
            blocks.append(_tool_result(block, where))
    return tuple(blocks)


# A document's source types, and the fields each needs (Anthropic checks the rest).
# Not a URL or an uploaded file's id: a document's cost is reserved before it is sent,
# which needs its size (rhetor._documents).
_DOCUMENT_SOURCES = {"base64": ("media_type", "data"), "text": ("data",)}


def _check_document_source(raw: object, where: str) -> None:
    """A ``document`` block's ``source``: a known type with the fields that type needs."""
    source = as_object(raw, where)
    kind = source.get("type")
    if kind == "content":
        as_list(source.get("content"), f"{where}.content")
        return
    if not isinstance(kind, str) or kind not in _DOCUMENT_SOURCES:
        raise ValidationError(
            f"{where}.type",
            "must be base64, text or content: a document's cost is reserved before it is "
            "sent, which needs its size (a URL or a file id has none here)",
        )
    for name in _DOCUMENT_SOURCES[kind]:
        required_str(source, name, where)


def _thinking(block: Mapping[str, Any], where: str) -> Thinking:
    """A ``thinking`` block (its text and signature) or a ``redacted_thinking`` one (its data)."""
    if block.get("type") == "redacted_thinking":
        return Thinking(redacted=required_str(block, "data", where))
    return Thinking(required_str(block, "thinking", where), required_str(block, "signature", where))


def _image(block: Mapping[str, Any], where: str) -> Image:
    source = as_object(block.get("source"), f"{where}.source")
    kind = source.get("type")
    try:
        if kind == "base64":
            return Image(
                data=required_str(source, "data", f"{where}.source"),
                media_type=required_str(source, "media_type", f"{where}.source"),
            )
        if kind == "url":
            return Image(url=required_str(source, "url", f"{where}.source"))
    except ValidationError as exc:
        if exc.field is not None and exc.field.startswith(where):
            raise
        raise ValidationError(f"{where}.source", exc.message) from None
    raise ValidationError(f"{where}.source.type", "must be base64 or url")


def _tool_use(block: Mapping[str, Any], where: str) -> ToolCall:
    arguments = block.get("input", {})
    if not isinstance(arguments, Mapping):
        raise ValidationError(f"{where}.input", "must be an object")
    return ToolCall(
        required_str(block, "id", where),
        required_str(block, "name", where),
        compact_json(arguments),
    )


def _tool_result(block: Mapping[str, Any], where: str) -> ToolResult:
    content = block.get("content", "")
    parts: list[Text | Image] = []
    if isinstance(content, str):
        parts.append(Text(content))
    else:
        for k, item in enumerate(as_list(content, f"{where}.content")):
            inner = f"{where}.content[{k}]"
            part = as_object(item, inner)
            if part.get("type") == "text":
                parts.append(Text(required_str(part, "text", inner)))
            elif part.get("type") == "image":
                parts.append(_image(part, inner))
            else:
                raise ValidationError(f"{inner}.type", "a tool result holds text and images only")
    return ToolResult(
        required_str(block, "tool_use_id", where),
        parts,
        bool(optional_bool(block, "is_error", where)),
    )


def system_from_anthropic(raw: object, field: str = "system") -> str | None:
    """``system``: a string or an array of text blocks, as one text; None when absent."""
    if raw is None or isinstance(raw, str):
        return raw
    texts = []
    for i, item in enumerate(as_list(raw, field)):
        block = as_object(item, f"{field}[{i}]")
        if block.get("type") != "text":
            raise ValidationError(f"{field}[{i}].type", "must be text")
        texts.append(required_str(block, "text", f"{field}[{i}]"))
    return "".join(texts)


def content_from_anthropic(
    content: object, field: str = "content"
) -> tuple[str, tuple[ToolCall, ...], tuple[Thinking, ...]]:
    """
    A reply's content blocks: its text (text blocks joined), its tool calls, its thinking.

    Blocks of other types (server tool results) are read past.
    """
    texts: list[str] = []
    calls: list[ToolCall] = []
    thinking: list[Thinking] = []
    for j, item in enumerate(as_list(content, field)):
        block = as_object(item, f"{field}[{j}]")
        kind = block.get("type")
        if kind == "text":
            texts.append(required_str(block, "text", f"{field}[{j}]"))
        elif kind == "tool_use":
            calls.append(_tool_use(block, f"{field}[{j}]"))
        elif kind in ("thinking", "redacted_thinking"):
            thinking.append(_thinking(block, f"{field}[{j}]"))
    return "".join(texts), tuple(calls), tuple(thinking)


def cited_from_anthropic(content: object, field: str = "content") -> tuple[CitedText, ...]:
    """
    A reply's text blocks with their ``citations``, when any text block has some; else ``()``.

    Error handling: citations that are not a list of objects are a :class:`ValidationError`.
    """
    blocks: list[CitedText] = []
    for j, item in enumerate(as_list(content, field)):
        block = as_object(item, f"{field}[{j}]")
        if block.get("type") != "text":
            continue
        cites = block.get("citations")
        found = () if cites is None else citations_of(cites, f"{field}[{j}].citations")
        blocks.append(CitedText(required_str(block, "text", f"{field}[{j}]"), found))
    return tuple(blocks) if any(b.citations for b in blocks) else ()


def citations_of(raw: object, field: str) -> tuple[Mapping[str, Any], ...]:
    """A ``citations`` list: each an object, kept as it came."""
    return tuple(
        dict(as_object(item, f"{field}[{k}]")) for k, item in enumerate(as_list(raw, field))
    )


def tools_from_anthropic(raw: object, field: str = "tools") -> tuple[Tool, ...]:
    """A ``tools`` array of client (custom) tools."""
    if raw is None:
        return ()
    tools = []
    for i, item in enumerate(as_list(raw, field)):
        where = f"{field}[{i}]"
        tool = as_object(item, where)
        if tool.get("type", "custom") not in ("custom", None):
            raise ValidationError(f"{where}.type", "only client (custom) tools are supported")
        name = required_str(tool, "name", where)
        description = optional_str(tool, "description", where)
        schema = as_object(tool.get("input_schema"), f"{where}.input_schema")
        strict = optional_bool(tool, "strict", where)
        try:
            tools.append(Tool(name, description, schema, strict))
        except ValidationError as exc:
            raise ValidationError(f"{where}.name", exc.message) from None
    return tuple(tools)


def tool_choice_from_anthropic(raw: object, field: str = "tool_choice") -> ToolChoice | None:
    """A ``tool_choice`` object (auto, any, tool with its name, none)."""
    if raw is None:
        return None
    choice = as_object(raw, field)
    disable = optional_bool(choice, "disable_parallel_tool_use", field)
    parallel = None if disable is None else not disable
    kind = choice.get("type")
    if kind == "auto":
        return ToolChoice("auto", parallel=parallel)
    if kind == "any":
        return ToolChoice("required", parallel=parallel)
    if kind == "none":
        return ToolChoice("none")
    if kind == "tool":
        return ToolChoice("tool", required_str(choice, "name", field), parallel=parallel)
    raise ValidationError(f"{field}.type", "must be auto, any, tool or none")


def response_format_from_anthropic(
    output_config: object, field: str = "output_config"
) -> ResponseFormat | None:
    """``output_config.format`` as a JSON schema response format; None without one."""
    if output_config is None:
        return None
    config = as_object(output_config, field)
    fmt = config.get("format")
    if fmt is None:
        return None
    body = as_object(fmt, f"{field}.format")
    if body.get("type") != "json_schema":
        raise ValidationError(f"{field}.format.type", "must be json_schema")
    schema = as_object(body.get("schema"), f"{field}.format.schema")
    return ResponseFormat("json_schema", schema, strict=True)


# -- writing ------------------------------------------------------------------------


def messages_to_anthropic(history: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """
    The history in the shape the Messages API accepts.

    System turns are dropped (the system prompt travels apart), as are empty turns
    and assistant turns before the first user turn; consecutive turns of one role
    are merged, so roles strictly alternate starting with user. Merged plain-text
    turns are one text with a blank line between them; with blocks, the merged
    turn holds each turn's blocks in order, tool results first.

    Error handling: content Anthropic cannot carry raises :class:`Untranslatable`.
    """
    merged: list[tuple[str, list[tuple[int, ChatMessage]]]] = []
    for i, turn in enumerate(history):
        if turn.role == "system" or (not turn.blocks and not turn.content.strip()):
            continue
        if not merged and turn.role != "user":
            continue
        if merged and merged[-1][0] == turn.role:
            merged[-1][1].append((i, turn))
        else:
            merged.append((turn.role, [(i, turn)]))
    return [{"role": role, "content": _content(turns)} for role, turns in merged]


def _content(turns: Sequence[tuple[int, ChatMessage]]) -> str | list[dict[str, Any]]:
    if all(not turn.blocks for _, turn in turns):
        return "\n\n".join(turn.content for _, turn in turns)
    results: list[dict[str, Any]] = []
    rest: list[dict[str, Any]] = []
    for i, turn in turns:
        for j, block in enumerate(turn.parts):
            where = f"messages[{i}].content[{j}]"
            (results if isinstance(block, ToolResult) else rest).append(_block(block, where))
    return results + rest


def _block(block: Block, where: str) -> dict[str, Any]:
    if isinstance(block, Text):
        return {"type": "text", "text": block.text}
    if isinstance(block, Image):
        return {"type": "image", "source": _source(block)}
    if isinstance(block, ToolCall):
        try:
            arguments = block.input()
        except ValueError:
            raise Untranslatable(
                where, f"tool call {block.id}'s arguments are not a JSON object"
            ) from None
        return {"type": "tool_use", "id": block.id, "name": block.name, "input": arguments}
    if isinstance(block, Thinking):
        return thinking_to_anthropic(block)
    if isinstance(block, Verbatim):
        if block.family != ANTHROPIC:
            raise Untranslatable(where, f"a block of {block.family}'s cannot go to Anthropic")
        return dict(block.block)
    written: dict[str, Any] = {"type": "tool_result", "tool_use_id": block.call_id}
    if all(isinstance(b, Text) for b in block.content):
        written["content"] = block.text
    else:
        written["content"] = [_block(b, where) for b in block.content]
    if block.is_error:
        written["is_error"] = True
    return written


def thinking_to_anthropic(block: Thinking) -> dict[str, Any]:
    """A thinking block as Anthropic wrote it: ``thinking`` with its signature, or ``redacted_thinking``."""
    if block.redacted is not None:
        return {"type": "redacted_thinking", "data": block.redacted}
    return {"type": "thinking", "thinking": block.text, "signature": block.signature}


def _source(image: Image) -> dict[str, Any]:
    if image.url is not None:
        return {"type": "url", "url": image.url}
    return {"type": "base64", "media_type": image.media_type, "data": image.data}


def tools_to_anthropic(tools: Sequence[Tool]) -> list[dict[str, Any]]:
    """Tools as Messages API client tools (``strict`` is left out: structured outputs hold anyway)."""
    written = []
    for tool in tools:
        out: dict[str, Any] = {"name": tool.name}
        if tool.description is not None:
            out["description"] = tool.description
        out["input_schema"] = dict(tool.parameters)
        written.append(out)
    return written


def tool_choice_to_anthropic(choice: ToolChoice) -> dict[str, Any]:
    """A tool choice as the Messages API's ``tool_choice`` object."""
    kinds = {"auto": "auto", "required": "any", "tool": "tool", "none": "none"}
    written: dict[str, Any] = {"type": kinds[choice.mode]}
    if choice.name is not None:
        written["name"] = choice.name
    if choice.parallel is not None and choice.mode != "none":
        written["disable_parallel_tool_use"] = not choice.parallel
    return written


def response_format_to_anthropic(fmt: ResponseFormat) -> tuple[dict[str, Any], str | None]:
    """
    A response format as body fields and a system instruction (see the module docstring).

    ``json_schema`` is ``output_config.format`` with the schema as given;
    ``json_object`` is :data:`JSON_OBJECT_INSTRUCTION`; ``text`` is nothing.
    """
    if fmt.type == "json_schema":
        schema = dict(fmt.schema or {})
        return {"output_config": {"format": {"type": "json_schema", "schema": schema}}}, None
    if fmt.type == "json_object":
        return {}, JSON_OBJECT_INSTRUCTION
    return {}, None
