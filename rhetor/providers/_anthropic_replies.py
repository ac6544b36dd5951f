"""
A reply written for an Anthropic client: a Messages API ``message``
(:func:`message_to_anthropic`), or its stream's server-sent events
(:class:`AnthropicEvents`), with ``thinking`` and ``tool_use`` blocks, the stop reason
in Anthropic's words and the usage with cache reads apart; no I/O.

The edge's ``/v1/messages`` answers with these, whatever provider answered.
"""

from __future__ import annotations

from typing import Any

import attrs

from rhetor._content import ThinkingDelta, ToolCall
from rhetor._types import Chunk, Reply, Usage
from rhetor.providers._anthropic_shapes import thinking_to_anthropic

__all__ = ["STOP_REASONS", "AnthropicEvents", "message_to_anthropic", "usage_to_anthropic"]

# Rhetor's finish reasons in Anthropic's words.
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}


def _input(call: ToolCall) -> dict[str, Any]:
    """A call's arguments as ``input``; arguments that are not an object are kept under ``arguments``."""
    try:
        return call.input()
    except ValueError:
        return {"arguments": call.arguments}


def usage_to_anthropic(usage: Usage) -> dict[str, Any]:
    """
    Usage as a Messages API ``usage``: fresh input apart from what was written to and read from the cache.
    """
    cached = min(usage.cached_input_tokens, usage.input_tokens)
    written = min(usage.cache_write_tokens, usage.input_tokens - cached)
    return {
        "input_tokens": usage.input_tokens - cached - written,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": cached,
        "output_tokens": usage.output_tokens,
    }


def message_to_anthropic(reply: Reply, ident: str | None = None) -> dict[str, Any]:
    """
    A whole reply as a Messages API ``message``: its thinking blocks, its text (its text
    blocks with their citations, when it has citations), then one ``tool_use`` block per call.
    """
    content: list[dict[str, Any]] = [thinking_to_anthropic(t) for t in reply.thinking]
    for block in reply.cited:
        text: dict[str, Any] = {"type": "text", "text": block.text}
        if block.citations:
            text["citations"] = [dict(c) for c in block.citations]
        content.append(text)
    if not reply.cited and (reply.message or not reply.tool_calls):
        content.append({"type": "text", "text": reply.message})
    for call in reply.tool_calls:
        content.append(
            {"type": "tool_use", "id": call.id, "name": call.name, "input": _input(call)}
        )
    return {
        "id": ident or f"msg_{reply.request_id}",
        "type": "message",
        "role": "assistant",
        "model": reply.model,
        "content": content,
        "stop_reason": STOP_REASONS.get(reply.finish_reason, "end_turn"),
        "stop_sequence": None,
        "usage": usage_to_anthropic(reply.usage),
    }


@attrs.define
class AnthropicEvents:
    """
    One stream's server-sent events in the Messages API's order, made from its :class:`Chunk` items.

    :meth:`first` is ``message_start``; :meth:`of` opens and closes content blocks
    as a chunk's text, thinking or tool-call deltas need them (a ``thinking`` block
    per thinking block, its text as ``thinking_delta`` and its signature as
    ``signature_delta``, or a whole ``redacted_thinking`` block; a ``text`` block, its
    citations as ``citations_delta`` events; one
    ``tool_use`` block per call, its arguments as ``input_json_delta``); :meth:`last`
    closes the open block and sends ``message_delta`` and ``message_stop``. Each
    event is ``(type, data)``.
    """

    ident: str
    # Invariant: the index of the content block open now and what it holds; None before the first.
    _open: tuple[int, str] | None = attrs.field(init=False, default=None)
    _next: int = attrs.field(init=False, default=0)

    def first(self, model: str, input_tokens: int = 0) -> list[tuple[str, dict[str, Any]]]:
        """``message_start``, with the message's id and model and no content yet."""
        message: dict[str, Any] = {
            "id": self.ident,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 0},
        }
        return [("message_start", {"type": "message_start", "message": message})]

    def _switch(self, key: str, block: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        events = self._close()
        index = self._next
        self._next += 1
        self._open = (index, key)
        start = {"type": "content_block_start", "index": index, "content_block": block}
        events.append(("content_block_start", start))
        return events

    def _close(self) -> list[tuple[str, dict[str, Any]]]:
        if self._open is None:
            return []
        index, _ = self._open
        self._open = None
        return [("content_block_stop", {"type": "content_block_stop", "index": index})]

    def _delta(self, delta: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        assert self._open is not None
        data = {"type": "content_block_delta", "index": self._open[0], "delta": delta}
        return ("content_block_delta", data)

    def of(self, chunk: Chunk) -> list[tuple[str, dict[str, Any]]]:
        """The events one streamed piece makes."""
        events: list[tuple[str, dict[str, Any]]] = []
        for thought in chunk.thinking:
            events += self._thinking(thought)
        for citation in chunk.citations:
            if self._open is None or self._open[1] != "text":
                events += self._switch("text", {"type": "text", "text": ""})
            events.append(self._delta({"type": "citations_delta", "citation": dict(citation)}))
        if chunk.text:
            if self._open is None or self._open[1] != "text":
                events += self._switch("text", {"type": "text", "text": ""})
            events.append(self._delta({"type": "text_delta", "text": chunk.text}))
        for delta in chunk.tool_calls:
            key = f"tool:{delta.index}"
            if self._open is None or self._open[1] != key:
                block = {
                    "type": "tool_use",
                    "id": delta.id or f"toolu_{delta.index}",
                    "name": delta.name or "",
                    "input": {},
                }
                events += self._switch(key, block)
            if delta.arguments:
                partial = {"type": "input_json_delta", "partial_json": delta.arguments}
                events.append(self._delta(partial))
        return events

    def _thinking(self, delta: ThinkingDelta) -> list[tuple[str, dict[str, Any]]]:
        key = f"thinking:{delta.index}"
        if delta.redacted is not None:
            block = {"type": "redacted_thinking", "data": delta.redacted}
            return self._switch(key, block) + self._close()
        events: list[tuple[str, dict[str, Any]]] = []
        if self._open is None or self._open[1] != key:
            events += self._switch(key, {"type": "thinking", "thinking": "", "signature": ""})
        if delta.text:
            events.append(self._delta({"type": "thinking_delta", "thinking": delta.text}))
        if delta.signature:
            events.append(self._delta({"type": "signature_delta", "signature": delta.signature}))
        return events

    def last(self, reply: Reply) -> list[tuple[str, dict[str, Any]]]:
        """Close the open block; ``message_delta`` with the stop reason and usage; ``message_stop``."""
        events = self._close()
        if self._next == 0:
            events += self._switch("text", {"type": "text", "text": ""})
            events += self._close()
        delta = {
            "type": "message_delta",
            "delta": {
                "stop_reason": STOP_REASONS.get(reply.finish_reason, "end_turn"),
                "stop_sequence": None,
            },
            "usage": usage_to_anthropic(reply.usage),
        }
        events.append(("message_delta", delta))
        events.append(("message_stop", {"type": "message_stop"}))
        return events
