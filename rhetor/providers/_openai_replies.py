"""
A reply written for an OpenAI client: a ``chat.completion`` (:func:`completion_to_openai`),
or its stream's ``chat.completion.chunk`` objects (:class:`OpenAIChunks`), with the tool
calls, the normalised finish reason and the usage details; no I/O.

The edge's ``/v1/chat/completions`` answers with these, whatever provider answered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from rhetor._content import ToolCall, ToolCallDelta
from rhetor._types import Chunk, Reply, Usage

__all__ = ["OpenAIChunks", "completion_to_openai", "usage_to_openai"]


def usage_to_openai(usage: Usage) -> dict[str, Any]:
    """Usage as a ``usage`` object, with the cached and reasoning token details."""
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def _calls_to_openai(calls: Sequence[ToolCall]) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in calls
    ]


def completion_to_openai(reply: Reply, created: int, ident: str | None = None) -> dict[str, Any]:
    """A whole reply as a ``chat.completion``; ``content`` is null when the reply only calls tools."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": reply.message if reply.message or not reply.tool_calls else None,
        "refusal": None,
    }
    if reply.tool_calls:
        message["tool_calls"] = _calls_to_openai(reply.tool_calls)
    return {
        "id": ident or f"chatcmpl-{reply.request_id}",
        "object": "chat.completion",
        "created": created,
        "model": reply.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": reply.finish_reason,
            }
        ],
        "usage": usage_to_openai(reply.usage),
        "system_fingerprint": None,
    }


@attrs.define
class OpenAIChunks:
    """
    One stream's ``chat.completion.chunk`` objects, made from its :class:`Chunk` items.

    :meth:`first` opens the stream (the assistant role), :meth:`of` writes each
    chunk's text or tool-call deltas, :meth:`last` the finish reason and, when asked,
    the usage chunk; the caller sends ``[DONE]`` after.
    """

    ident: str
    created: int

    def _chunk(
        self, model: str, delta: dict[str, Any] | None, finish: str | None = None
    ) -> dict[str, Any]:
        choices = (
            []
            if delta is None
            else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        )
        return {
            "id": self.ident,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": model,
            "system_fingerprint": None,
            "choices": choices,
        }

    def first(self, model: str) -> dict[str, Any]:
        """The opening chunk: the assistant's role and empty content."""
        return self._chunk(model, {"role": "assistant", "content": ""})

    def of(self, chunk: Chunk) -> list[dict[str, Any]]:
        """The chunks one streamed piece makes: its text, then its tool-call deltas."""
        out = []
        if chunk.text:
            out.append(self._chunk(chunk.model, {"content": chunk.text}))
        if chunk.tool_calls:
            out.append(
                self._chunk(chunk.model, {"tool_calls": [_delta(d) for d in chunk.tool_calls]})
            )
        return out

    def last(self, reply: Reply, include_usage: bool) -> list[dict[str, Any]]:
        """The closing chunks: the finish reason, then the usage when asked for."""
        out = [self._chunk(reply.model, {}, reply.finish_reason)]
        if include_usage:
            out.append({**self._chunk(reply.model, None), "usage": usage_to_openai(reply.usage)})
        return out


def _delta(delta: ToolCallDelta) -> dict[str, Any]:
    written: dict[str, Any] = {"index": delta.index}
    function: dict[str, Any] = {"arguments": delta.arguments}
    if delta.id is not None:
        written["id"] = delta.id
        written["type"] = "function"
    if delta.name is not None:
        function["name"] = delta.name
    written["function"] = function
    return written
