"""
A reply written for an OpenAI Responses API client, with no I/O.

A reply as a ``response`` object (:func:`whole_response`) or as the ``response.*``
events of a stream (:class:`ResponsesEvents`), each event a JSON object whose ``type``
is its SSE event name, as the openai SDK's types define them; the request's tools and
``text.format`` echoed as the API does. Reading the request is
:mod:`rhetor.providers._responses_shapes`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

import attrs

from rhetor._content import ResponseFormat, Tool, ToolCall, ToolCallDelta
from rhetor._types import Chunk, Reply, Usage

__all__ = [
    "ResponsesEvents",
    "format_echo",
    "response_object",
    "tool_echo",
    "whole_response",
]


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
