"""
What client calls return: a :class:`Reply` and the session's events.

All are frozen values built from the server's JSON; ``Reply.raw`` keeps that
JSON whole, so a field the server adds later is never lost.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs

__all__ = [
    "Chunk",
    "Completed",
    "Message",
    "Reply",
    "SessionEvent",
    "TokenUsage",
    "ToolCall",
    "TypingStarted",
    "TypingStopped",
]


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


@attrs.frozen
class TokenUsage:
    """
    Tokens one request consumed, as the provider reported them.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def from_dict(cls, raw: Any) -> TokenUsage:
        if not isinstance(raw, Mapping):
            return cls()
        inp, out = _int(raw.get("input_tokens")), _int(raw.get("output_tokens"))
        return cls(inp, out, _int(raw.get("total_tokens")) or inp + out)


@attrs.frozen
class ToolCall:
    """
    A tool call the model made: its id (a ``tool_result`` block names it), the tool, the arguments as JSON text.
    """

    id: str
    name: str
    arguments: str = "{}"

    def input(self) -> Any:
        """The arguments read as JSON (``{}`` when empty)."""
        return json.loads(self.arguments) if self.arguments.strip() else {}

    @classmethod
    def from_dict(cls, raw: Any) -> ToolCall | None:
        if not isinstance(raw, Mapping):
            return None
        return cls(_str(raw.get("id")), _str(raw.get("name")), _str(raw.get("arguments")) or "{}")


def _tool_calls(raw: Any) -> tuple[ToolCall, ...]:
    if not isinstance(raw, list):
        return ()
    return tuple(c for c in map(ToolCall.from_dict, raw) if c is not None)


@attrs.frozen
class Message:
    """
    One conversation turn; a reply's is ``Message("assistant", text)``.
    """

    role: str
    content: str


@attrs.frozen
class Reply:
    """
    A finished LLM reply: the text, who wrote it, what it cost and why that model.

    ``tool_calls`` are the calls the model made (then ``finish_reason`` is
    ``tool_calls``); ``finish_reason`` is stop, length, tool_calls or content_filter.
    """

    text: str
    model: str
    provider: str
    context: str | None
    usage: TokenUsage
    cost: float
    routing_explanation: str
    request_id: str
    timestamp: str
    finished: bool = True
    budget_warning: str | None = None
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False)
    finish_reason: str = "stop"
    tool_calls: tuple[ToolCall, ...] = ()

    @property
    def message(self) -> Message:
        """The reply as a chat turn; ``reply.message.content`` is the text."""
        return Message("assistant", self.text)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Reply:
        """
        Build a reply from the server's reply JSON (``/message``, ``/chat``, ``RESPONSE``).
        """
        cost = raw.get("cost")
        context = raw.get("context")
        warning = raw.get("budget_warning")
        return cls(
            text=_str(raw.get("message")),
            model=_str(raw.get("model")),
            provider=_str(raw.get("provider")),
            context=context if isinstance(context, str) else None,
            usage=TokenUsage.from_dict(raw.get("usage")),
            cost=float(cost) if isinstance(cost, int | float) else 0.0,
            routing_explanation=_str(raw.get("routing")),
            request_id=_str(raw.get("request_id")),
            timestamp=_str(raw.get("timestamp")),
            finished=bool(raw.get("finished", True)),
            budget_warning=warning if isinstance(warning, str) and warning else None,
            raw=dict(raw),
            finish_reason=_str(raw.get("finish_reason")) or "stop",
            tool_calls=_tool_calls(raw.get("tool_calls")),
        )


@attrs.frozen
class TypingStarted:
    """
    The model is working on request ``request_id``; comes before its first chunk.
    """

    request_id: str
    context: str | None = None


@attrs.frozen
class Chunk:
    """
    One piece of request ``request_id``'s reply, in order: text, and pieces of tool calls.

    ``tool_calls`` are ``{index, id, name, arguments}`` pieces: a call's first
    has its id and name, later ones fragments of its arguments (the whole calls
    are on the completed reply).
    """

    request_id: str
    text: str
    context: str | None = None
    tool_calls: tuple[Mapping[str, Any], ...] = ()


@attrs.frozen
class TypingStopped:
    """
    The model has finished writing request ``request_id``'s reply.
    """

    request_id: str
    context: str | None = None


@attrs.frozen
class Completed:
    """
    Request ``request_id`` is done; ``reply`` is the whole reply. Always the last event.
    """

    request_id: str
    reply: Reply


SessionEvent = TypingStarted | Chunk | TypingStopped | Completed
