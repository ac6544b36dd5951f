"""
The simulated provider: Rhetor's embedded default when no real provider is set.

It answers deterministically, so the whole request path (routing, budget,
context, streaming, tool calls, structured output) runs end to end with no keys
and no network. Its token counts are real counts of what it read and wrote; its
price is zero unless a price override says otherwise.

With tools it calls one, by a fixed rule (:func:`planned_calls`): the named tool
for a named tool choice, the first tool for ``required``, and for ``auto`` a tool
whose name the last user turn mentions, unless that turn sends tool results back
(then it answers in text, quoting them). The arguments are an instance of the
tool's parameter schema (:func:`sample`), strings taken from the user's words. A
``json_schema`` response format gets an instance of its schema, a ``json_object``
format an object holding the echo.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import anyio
import attrs

from rhetor._content import CitationDelta, ThinkingDelta, ToolCall, ToolCallDelta
from rhetor._errors import BadRequest, ProviderUnavailable
from rhetor._tokens import count_message_tokens, count_request_tokens, count_tokens
from rhetor._types import (
    ChatMessage,
    ProviderReply,
    ProviderRequest,
    ProviderStatus,
    StreamEnd,
    TextDelta,
    Usage,
)
from rhetor.providers._families import SIMULATED

__all__ = ["SimulatedBackend", "compose_reply", "planned_calls", "sample"]

_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_CHUNK = re.compile(r"\S+\s*")
# How deep sample() follows nested schemas before answering null.
_MAX_DEPTH = 8


def _summarise(text: str, max_sentences: int = 3) -> str:
    sentences = [s.strip() for s in _SENTENCE.split(text.strip()) if s.strip()]
    if not sentences:
        return "Nothing to summarise."
    head = " ".join(sentences[:max_sentences])
    return f"Summary ({len(sentences)} sentences, {count_tokens(text)} tokens): {head}"


def _last_user(messages: Sequence[ChatMessage]) -> ChatMessage | None:
    return next((m for m in reversed(messages) if m.role == "user"), None)


def compose_reply(model: str, messages: Sequence[ChatMessage], system: str | None) -> str:
    """
    The simulated model's deterministic answer to a conversation.

    ``*-summary`` models summarise the whole conversation; the others echo the
    last user turn (or the tool results it sends back) and say how much history
    and which system prompt they saw, which makes context and prompt handling
    visible in tests and demos.
    """
    last = _last_user(messages)
    if model.endswith("summary"):
        return _summarise("\n".join(m.content for m in messages))
    earlier = len(messages) - 1
    results = last.tool_results if last is not None else ()
    if results:
        quoted = "; ".join(f"{r.call_id}: {r.text}" for r in results)
        parts = [f"[simulated] The tools answered: {quoted}"]
    else:
        parts = [f"[simulated] You said: {last.content if last is not None else ''}"]
    if earlier > 0:
        parts.append(f"(I can see {earlier} earlier message{'s' if earlier != 1 else ''}.)")
    if system:
        parts.append(f"(System prompt: {system[:80]})")
    return " ".join(parts)


def sample(schema: object, text: str, depth: int = 0) -> Any:
    """
    A deterministic instance of a JSON Schema: ``const`` or the first ``enum`` value,
    the first ``anyOf``/``oneOf`` branch, every property of an object (the required
    ones when it lists them), one item of an array, ``text`` for a string (its first
    80 characters), 1 for a number within its bounds, true for a boolean.
    """
    if not isinstance(schema, Mapping) or depth > _MAX_DEPTH:
        return None
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for key in ("anyOf", "oneOf", "allOf"):
        branches = schema.get(key)
        if isinstance(branches, list) and branches:
            return sample(branches[0], text, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        properties = schema.get("properties")
        properties = properties if isinstance(properties, Mapping) else {}
        required = schema.get("required")
        keep = set(required) if isinstance(required, list) else set(properties)
        return {k: sample(v, text, depth + 1) for k, v in properties.items() if k in keep}
    if kind == "array":
        return [sample(schema.get("items", {"type": "string"}), text, depth + 1)]
    if kind in ("integer", "number"):
        value: float = 1
        if isinstance(low := schema.get("minimum"), int | float) and value < low:
            value = low
        if isinstance(high := schema.get("maximum"), int | float) and value > high:
            value = high
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return text[:80] or "simulated"


def planned_calls(request: ProviderRequest) -> tuple[ToolCall, ...]:
    """The tool calls the simulated model makes for ``request`` (see the module docstring)."""
    choice = request.tool_choice
    if not request.tools or (choice is not None and choice.mode == "none"):
        return ()
    last = _last_user(request.messages)
    said = last.content if last is not None else ""
    tool = None
    if choice is not None and choice.mode == "tool":
        tool = next((t for t in request.tools if t.name == choice.name), None)
    elif choice is not None and choice.mode == "required":
        tool = request.tools[0]
    elif last is not None and not last.tool_results:
        lowered = said.lower()
        tool = next((t for t in request.tools if t.name.lower() in lowered), None)
    if tool is None:
        return ()
    arguments = json.dumps(sample(tool.parameters, said), separators=(",", ":"))
    digest = hashlib.sha256(
        f"{tool.name}\0{arguments}\0{len(request.messages)}".encode()
    ).hexdigest()
    return (ToolCall(f"call_sim_{digest[:16]}", tool.name, arguments),)


@attrs.define(eq=False)
class SimulatedBackend:
    """
    A :class:`rhetor._types.ProviderBackend` that needs nothing outside the process.
    """

    name: str = "simulated"
    models: tuple[str, ...] = ("simulated-echo", "simulated-summary")
    chunk_delay: float = 0.0
    available: bool = True

    async def check(self) -> ProviderStatus:
        return ProviderStatus(
            self.name,
            self.available,
            self.models,
            "" if self.available else "disabled",
            family=SIMULATED,
        )

    def _validate(self, request: ProviderRequest) -> None:
        if not self.available:
            raise ProviderUnavailable("simulated provider is disabled", provider=self.name)
        if request.model not in self.models:
            raise BadRequest(
                f"unknown model {request.model!r}", provider=self.name, model=request.model
            )

    def _reply(self, request: ProviderRequest) -> tuple[str, tuple[ToolCall, ...], Usage]:
        calls = planned_calls(request)
        text = "" if calls else compose_reply(request.model, request.messages, request.system)
        fmt = request.response_format
        if not calls and fmt is not None and fmt.type == "json_schema":
            last = _last_user(request.messages)
            text = json.dumps(sample(fmt.schema, last.content if last else ""))
        elif not calls and fmt is not None and fmt.type == "json_object":
            text = json.dumps({"reply": text})
        output = count_tokens(text) + sum(count_tokens(c.arguments) for c in calls)
        if request.max_tokens is not None and output > request.max_tokens and not calls:
            kept: list[str] = []
            output = 0
            for word in _CHUNK.findall(text):
                cost = count_tokens(word)
                if output + cost > request.max_tokens:
                    break
                kept.append(word)
                output += cost
            text = "".join(kept)
        prompt = count_message_tokens(request.messages, request.system) + count_request_tokens(
            request.tools, request.response_format
        )
        return text, calls, Usage(prompt, output)

    async def complete(self, request: ProviderRequest) -> ProviderReply:
        self._validate(request)
        text, calls, usage = self._reply(request)
        if self.chunk_delay > 0:
            await anyio.sleep(self.chunk_delay)
        reason = "tool_calls" if calls else "stop"
        return ProviderReply(
            text=text, model=request.model, usage=usage, finish_reason=reason, tool_calls=calls
        )

    async def stream(
        self, request: ProviderRequest
    ) -> AsyncIterator[TextDelta | ToolCallDelta | ThinkingDelta | CitationDelta | StreamEnd]:
        self._validate(request)
        text, calls, usage = self._reply(request)
        for piece in _CHUNK.findall(text):
            if self.chunk_delay > 0:
                await anyio.sleep(self.chunk_delay)
            yield TextDelta(piece)
        for index, call in enumerate(calls):
            yield ToolCallDelta(index, call.id, call.name)
            third = max(1, len(call.arguments) // 3)
            for start in range(0, len(call.arguments), third):
                if self.chunk_delay > 0:
                    await anyio.sleep(self.chunk_delay)
                yield ToolCallDelta(index, arguments=call.arguments[start : start + third])
        reason = "tool_calls" if calls else "stop"
        yield StreamEnd(usage=usage, model=request.model, finish_reason=reason)

    async def aclose(self) -> None:
        return None
