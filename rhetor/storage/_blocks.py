"""
A rich turn's content blocks as stored: JSON in the native shape, both ways.

A stored message whose turn is plain text keeps no blocks (``blocks`` is
NULL); a turn with an image, a tool call or a tool result keeps all of its
blocks, in order, as a JSON array in the shape Rhetor's own API takes them
(``docs/api.md``, "Tools, images and content blocks"): ``{type: text, text}``,
``{type: image, url | data + media_type, detail?}``, ``{type: tool_call, id,
name, arguments}``, ``{type: tool_result, call_id, content, is_error}``, and
Anthropic's ``{type: thinking, thinking, signature}`` and ``{type:
redacted_thinking, data}``, and a block relayed as it came, ``{type: verbatim,
family, block}``.
The same JSON is what ``GET /contexts/{id}`` shows as a message's ``blocks``.
Rows written before blocks were stored have none, and read as plain text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from rhetor._content import ContentBlock, Image, Text, Thinking, ToolCall, ToolResult, Verbatim
from rhetor._tokens import MESSAGE_OVERHEAD, count_message_tokens
from rhetor._types import ChatMessage, Role

__all__ = ["blocks_json", "message_of", "read_blocks", "stored_tokens", "wire_blocks"]


def _wire(block: ContentBlock) -> dict[str, Any]:
    if isinstance(block, Text):
        return {"type": "text", "text": block.text}
    if isinstance(block, Image):
        image: dict[str, Any] = {"type": "image"}
        if block.url is not None:
            image["url"] = block.url
        else:
            image["data"] = block.data
            image["media_type"] = block.media_type
        if block.detail is not None:
            image["detail"] = block.detail
        return image
    if isinstance(block, ToolCall):
        return {
            "type": "tool_call",
            "id": block.id,
            "name": block.name,
            "arguments": block.arguments,
        }
    if isinstance(block, Verbatim):
        return {"type": "verbatim", "family": block.family, "block": dict(block.block)}
    if isinstance(block, Thinking):
        if block.redacted is not None:
            return {"type": "redacted_thinking", "data": block.redacted}
        return {"type": "thinking", "thinking": block.text, "signature": block.signature}
    return {
        "type": "tool_result",
        "call_id": block.call_id,
        "content": [_wire(b) for b in block.content],
        "is_error": block.is_error,
    }


def wire_blocks(blocks: Sequence[ContentBlock]) -> list[dict[str, Any]]:
    """Blocks as JSON values in the native shape."""
    return [_wire(b) for b in blocks]


def blocks_json(message: ChatMessage) -> str | None:
    """What a message's ``blocks`` column holds: None for plain text, else its blocks' JSON."""
    if not message.blocks:
        return None
    # ASCII: lone surrogates and NUL are escaped, so any text is storable.
    return json.dumps(wire_blocks(message.blocks), separators=(",", ":"))


def _block(raw: Mapping[str, Any]) -> ContentBlock:
    kind = raw.get("type")
    if kind == "text":
        return Text(raw["text"])
    if kind == "image":
        return Image(raw.get("url"), raw.get("data"), raw.get("media_type"), raw.get("detail"))
    if kind == "tool_call":
        return ToolCall(raw["id"], raw["name"], raw.get("arguments", "{}"))
    if kind == "tool_result":
        content = [_block(b) for b in raw.get("content", ())]
        return ToolResult(
            raw["call_id"],
            tuple(b for b in content if isinstance(b, Text | Image)),
            bool(raw.get("is_error", False)),
        )
    if kind == "verbatim":
        return Verbatim(raw["family"], raw["block"])
    if kind == "thinking":
        return Thinking(raw["thinking"], raw.get("signature", ""))
    if kind == "redacted_thinking":
        return Thinking(redacted=raw["data"])
    raise ValueError(f"a stored block has an unknown type {kind!r}")


def read_blocks(blocks: str | None) -> tuple[dict[str, Any], ...] | None:
    """A ``blocks`` column's JSON as values (None for a plain-text row)."""
    return None if not blocks else tuple(json.loads(blocks))


def message_of(
    role: Role, content: str, blocks: Sequence[Mapping[str, Any]] | str | None
) -> ChatMessage:
    """A stored row's turn: plain text, or its blocks (JSON text or values) when it has them."""
    if not blocks:
        return ChatMessage(role, content)
    values = json.loads(blocks) if isinstance(blocks, str) else blocks
    return ChatMessage(role, blocks=tuple(_block(b) for b in values))


def stored_tokens(message: ChatMessage) -> int:
    """
    A message's token estimate as stored: its text's, or its blocks' by the token rule
    (``rhetor._tokens``); the per-message overhead is added where messages are counted.
    """
    return count_message_tokens([message]) - MESSAGE_OVERHEAD
