"""
OpenAI Responses API shapes <-> the internal model, both ways, with no I/O.

Reading (a client's ``POST /v1/responses`` at the edge): input items as turns
(:func:`input_items`: messages, ``function_call`` items as an assistant turn's
tool calls, ``function_call_output`` items as a user turn's tool results),
function tools, the tool choice, and ``text.format``. Writing: a reply as a
``response`` object (:func:`whole_response`) or as the ``response.*`` events of
a stream (:class:`ResponsesEvents`), each event a JSON object whose ``type`` is
its SSE event name, as the openai SDK's types define them.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from typing import Any, cast

import attrs

from rhetor._content import (
    Image,
    ResponseFormat,
    Text,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolResult,
)
from rhetor._errors import ValidationError
from rhetor._types import ChatMessage, Chunk, Reply, Usage
from rhetor.providers._shapes import as_list, as_object, optional_bool, optional_str, required_str

__all__ = [
    "ResponsesEvents",
    "format_echo",
    "format_from_responses",
    "input_items",
    "response_object",
    "tool_choice_from_responses",
    "tool_echo",
    "tools_from_responses",
    "whole_response",
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


def _message(item: Mapping[str, Any], where: str) -> tuple[str, list[Text | Image]]:
    role = item.get("role")
    if not isinstance(role, str) or role not in ("system", "developer", "user", "assistant"):
        raise ValidationError(f"{where}.role", "must be system, developer, user or assistant")
    content = item.get("content")
    if isinstance(content, str):
        blocks: list[Text | Image] = [Text(content)]
    else:
        blocks = [
            _part(part, f"{where}.content[{j}]", role)
            for j, part in enumerate(as_list(content, f"{where}.content"))
        ]
    return ("system" if role in _SYSTEM_ROLES else role), blocks


def _part(value: object, where: str, role: str) -> Text | Image:
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
    allowed = "input_text, output_text, refusal" + (" and input_image" if role == "user" else "")
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


def format_echo(fmt: ResponseFormat | None) -> dict[str, Any]:
    if fmt is None or fmt.type != "json_schema":
        return {"type": "text" if fmt is None else fmt.type}
    echoed: dict[str, Any] = {
        "type": "json_schema",
        "name": fmt.name,
        "schema": dict(fmt.schema or {}),
    }
    if fmt.description is not None:
        echoed["description"] = fmt.description
    echoed["strict"] = fmt.strict
    return echoed


def tool_echo(tool: Tool) -> dict[str, Any]:
    return {
        "type": "function",
        "name": tool.name,
        "description": tool.description,
        "parameters": dict(tool.parameters),
        "strict": tool.strict,
    }


# -- replies ----------------------------------------------------------------------


def _usage(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cached_input_tokens,
            "cache_write_tokens": 0,
        },
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def _message_item(ident: str, text: str, status: str) -> dict[str, Any]:
    content = [_text_part(text)] if text or status != "in_progress" else []
    return {
        "type": "message",
        "id": ident,
        "role": "assistant",
        "status": status,
        "content": content,
    }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _call_item(ident: str, call: ToolCall, status: str) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": ident,
        "call_id": call.id,
        "name": call.name,
        "arguments": call.arguments,
        "status": status,
    }


def _status(finish_reason: str) -> tuple[str, dict[str, Any] | None]:
    if finish_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish_reason == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def response_object(
    ident: str,
    created: int,
    echo: Mapping[str, Any],
    *,
    model: str,
    output: list[dict[str, Any]],
    status: str,
    incomplete: dict[str, Any] | None = None,
    usage: Usage | None = None,
) -> dict[str, Any]:
    """A ``response`` object: the reply's items and usage, with what the request set echoed."""
    return {
        "id": ident,
        "object": "response",
        "created_at": created,
        "status": status,
        "error": None,
        "incomplete_details": incomplete,
        "model": model,
        "output": output,
        "previous_response_id": None,
        "store": False,
        "truncation": "disabled",
        "usage": None if usage is None else _usage(usage),
        **echo,
    }


def whole_response(reply: Reply, echo: Mapping[str, Any], created: int) -> dict[str, Any]:
    """A whole reply as a ``response`` object."""
    rid = reply.request_id
    status, incomplete = _status(reply.finish_reason)
    item_status = "completed" if status == "completed" else "incomplete"
    output = []
    if reply.message or not reply.tool_calls:
        output.append(_message_item(f"msg_{rid}", reply.message, item_status))
    output += [
        _call_item(f"fc_{rid}_{i}", call, "completed") for i, call in enumerate(reply.tool_calls)
    ]
    return response_object(
        f"resp_{rid}",
        created,
        echo,
        model=reply.model,
        output=output,
        status=status,
        incomplete=incomplete,
        usage=reply.usage,
    )


@attrs.define
class ResponsesEvents:
    """
    One stream's ``response.*`` events, made from its :class:`Chunk` items.

    Text opens a ``message`` item (and its ``output_text`` part); each tool
    call's first delta opens a ``function_call`` item; every item is closed with
    its ``.done`` events before ``response.completed``. ``sequence_number``
    counts every event, the error event included.
    """

    request_id: str
    echo: Mapping[str, Any]
    created: int = attrs.field(factory=lambda: int(time.time()))
    _sequence: int = 0
    # Output items in order: [kind, item id, text or call parts, open]
    _items: list[dict[str, Any]] = attrs.field(factory=list)
    _message: int | None = None
    _calls: dict[int, int] = attrs.field(factory=dict)

    @property
    def ident(self) -> str:
        return f"resp_{self.request_id}"

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        body = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return body

    def _response(
        self,
        model: str,
        status: str,
        incomplete: dict[str, Any] | None = None,
        usage: Usage | None = None,
    ) -> dict[str, Any]:
        done = status != "in_progress"
        return response_object(
            self.ident,
            self.created,
            self.echo,
            model=model,
            output=[self._item(i, done, status) for i in range(len(self._items))],
            status=status,
            incomplete=incomplete,
            usage=usage,
        )

    def _item(self, index: int, done: bool, status: str) -> dict[str, Any]:
        item = self._items[index]
        state = ("completed" if status == "completed" else "incomplete") if done else "in_progress"
        if item["kind"] == "message":
            return _message_item(item["id"], "".join(item["text"]), state)
        call = ToolCall(item["call_id"], item["name"], "".join(item["text"]) or "{}")
        return _call_item(item["id"], call, state)

    def error(self, message: str, param: str | None, code: str | None) -> dict[str, Any]:
        """The ``error`` event, the stream's last: OpenAI's error fields."""
        return self._event("error", code=code, message=message, param=param)

    def opening(self, model: str) -> list[dict[str, Any]]:
        """``response.created`` and ``response.in_progress``."""
        return [
            self._event("response.created", response=self._response(model, "in_progress")),
            self._event("response.in_progress", response=self._response(model, "in_progress")),
        ]

    def of(self, chunk: Chunk) -> list[dict[str, Any]]:
        """The events one streamed piece makes: its text delta, then its tool-call deltas."""
        out: list[dict[str, Any]] = []
        if chunk.text:
            if self._message is None:
                out += self._open_message()
            assert self._message is not None
            item = self._items[self._message]
            item["text"].append(chunk.text)
            out.append(
                self._event(
                    "response.output_text.delta",
                    item_id=item["id"],
                    output_index=self._message,
                    content_index=0,
                    delta=chunk.text,
                    logprobs=[],
                )
            )
        for delta in chunk.tool_calls:
            out += self._call_delta(delta)
        return out

    def _open_message(self) -> list[dict[str, Any]]:
        index = len(self._items)
        ident = f"msg_{self.request_id}"
        self._items.append({"kind": "message", "id": ident, "text": [], "open": True})
        self._message = index
        return [
            self._event(
                "response.output_item.added",
                output_index=index,
                item=_message_item(ident, "", "in_progress"),
            ),
            self._event(
                "response.content_part.added",
                item_id=ident,
                output_index=index,
                content_index=0,
                part=_text_part(""),
            ),
        ]

    def _call_delta(self, delta: ToolCallDelta) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        index = self._calls.get(delta.index)
        if index is None:
            index = len(self._items)
            ident = f"fc_{self.request_id}_{len(self._calls)}"
            call_id = delta.id or f"call_{self.request_id}_{delta.index}"
            item: dict[str, Any] = {
                "kind": "function_call",
                "id": ident,
                "call_id": call_id,
                "name": delta.name or "",
                "text": [],
                "open": True,
            }
            self._items.append(item)
            self._calls[delta.index] = index
            call = ToolCall(call_id, item["name"], "")
            out.append(
                self._event(
                    "response.output_item.added",
                    output_index=index,
                    item=_call_item(ident, call, "in_progress"),
                )
            )
        item = self._items[index]
        if delta.name and not item["name"]:
            item["name"] = delta.name
        if delta.arguments:
            item["text"].append(delta.arguments)
            out.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=index,
                    delta=delta.arguments,
                )
            )
        return out

    def closing(self, reply: Reply) -> list[dict[str, Any]]:
        """Every open item's ``.done`` events, then ``response.completed`` (or ``.incomplete``)."""
        status, incomplete = _status(reply.finish_reason)
        out: list[dict[str, Any]] = []
        for index, item in enumerate(self._items):
            written = self._item(index, True, status)
            if item["kind"] == "message":
                text = "".join(item["text"])
                if item["open"]:
                    out.append(
                        self._event(
                            "response.output_text.done",
                            item_id=item["id"],
                            output_index=index,
                            content_index=0,
                            text=text,
                            logprobs=[],
                        )
                    )
                    out.append(
                        self._event(
                            "response.content_part.done",
                            item_id=item["id"],
                            output_index=index,
                            content_index=0,
                            part=_text_part(text),
                        )
                    )
            else:
                out.append(
                    self._event(
                        "response.function_call_arguments.done",
                        item_id=item["id"],
                        output_index=index,
                        name=item["name"],
                        arguments=written["arguments"],
                    )
                )
            out.append(self._event("response.output_item.done", output_index=index, item=written))
            item["open"] = False
        kind = "response.completed" if status == "completed" else "response.incomplete"
        out.append(
            self._event(kind, response=self._response(reply.model, status, incomplete, reply.usage))
        )
        return out

    async def events(
        self, first: Chunk, rest: AsyncIterator[Chunk]
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Every event of the stream, from its chunks."""
        for item in self.opening(first.model):
            yield item
        current: Chunk | None = first
        while current is not None:
            if current.done and current.reply is not None:
                if not self._items:
                    for item in self._open_message():
                        yield item
                for item in self.closing(current.reply):
                    yield item
                return
            for item in self.of(current):
                yield item
            current = await anext(rest, None)
