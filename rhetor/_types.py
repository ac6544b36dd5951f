"""
Value objects shared by Rhetor's actors.

Everything here is frozen: actors exchange these, never mutable state. The
request and reply types (:class:`LLMRequest`, :class:`Reply`, :class:`Chunk`,
:class:`RoutingParameters`) are what the public API takes and returns, and
are re-exported by ``rhetor``; this module imports nothing of the server
stack, so that importing them stays light. The content blocks, tools and
formats a request may carry are defined in :mod:`rhetor._content` and
re-exported here.
"""

from __future__ import annotations

import itertools
import math
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import attrs

from rhetor._content import (
    CitationDelta,
    CitedText,
    ContentBlock,
    Image,
    Passthrough,
    ResponseFormat,
    Text,
    Thinking,
    ThinkingDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolResult,
    Verbatim,
    normalised_blocks,
    text_of,
)
from rhetor._errors import ValidationError

__all__ = [
    "ChatMessage",
    "Chunk",
    "CitationDelta",
    "CitedText",
    "ContentBlock",
    "Image",
    "LLMRequest",
    "Passthrough",
    "ProviderReply",
    "ProviderRequest",
    "ProviderStatus",
    "Reply",
    "ResponseFormat",
    "Role",
    "RoutingParameters",
    "StreamEnd",
    "Text",
    "TextDelta",
    "Thinking",
    "ThinkingDelta",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolChoice",
    "ToolResult",
    "Usage",
    "Verbatim",
    "new_request_id",
]

Role = Literal["system", "user", "assistant"]
Complexity = Literal["low", "medium", "high"]

# Request ids: unique per process start (a random prefix) and cheap (a counter);
# uuid4 reads the OS entropy pool on every request.
_ID_PREFIX = uuid.uuid4().hex[:12]
_ID_COUNTER = itertools.count(1)


def new_request_id() -> str:
    """A request id unique to this process start: a random prefix and a counter."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):012x}"


# The last second formatted, and its text: most timestamps fall in the same second.
_second: list[Any] = [None, ""]


def utc_second(seconds: int) -> str:
    """``seconds`` since the epoch as ``2025-05-01T12:00:00`` (UTC), the last one remembered."""
    if _second[0] != seconds:
        _second[:] = [seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))]
    text: str = _second[1]
    return text


def _now_iso() -> str:
    """Now in UTC, ``2025-05-01T12:00:00.123456Z`` (microseconds always written)."""
    now = time.time()
    seconds = int(now)
    micros = min(int((now - seconds) * 1_000_000), 999_999)
    return f"{utc_second(seconds)}.{micros:06d}Z"


def _tool_tuple(tools: Iterable[Tool]) -> tuple[Tool, ...]:
    return tuple(tools)


def _str_tuple(values: Iterable[str]) -> tuple[str, ...]:
    return (values,) if isinstance(values, str) else tuple(values)


@attrs.frozen
class ChatMessage:
    """
    One turn of a conversation: plain text, or content blocks.

    ``content`` is always the turn's text. A turn with more than text (an image,
    a tool call, a tool result) also has ``blocks``, all of its content in order,
    and then ``content`` is the text of its text blocks. A turn made only of text
    blocks is plain text (``blocks`` empty), so ``ChatMessage("user", "hi")`` and
    ``ChatMessage("user", blocks=(Text("hi"),))`` are equal. Tool calls belong to
    assistant turns, tool results and images to user turns.

    Error handling: a block its role cannot hold is a :class:`ValidationError`.
    """

    role: Role
    content: str = ""
    # Any iterable of blocks is taken (made a tuple in __attrs_post_init__, off the plain path).
    blocks: tuple[ContentBlock, ...] = ()

    def __attrs_post_init__(self) -> None:
        if self.blocks:
            text = text_of(self.blocks)
            if self.content and self.content != text:
                raise ValidationError("content", "give the text as blocks or as content, not both")
            object.__setattr__(self, "content", text)
            object.__setattr__(self, "blocks", normalised_blocks(self.role, self.blocks))
        elif self.blocks != ():
            object.__setattr__(self, "blocks", ())

    @property
    def parts(self) -> tuple[ContentBlock, ...]:
        """All of the turn's content as blocks (a plain-text turn is one text block, or none)."""
        if self.blocks:
            return self.blocks
        return (Text(self.content),) if self.content else ()

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        """The tool calls this (assistant) turn makes."""
        return tuple(b for b in self.blocks if isinstance(b, ToolCall))

    @property
    def tool_results(self) -> tuple[ToolResult, ...]:
        """The tool results this (user) turn sends back."""
        return tuple(b for b in self.blocks if isinstance(b, ToolResult))

    @property
    def images(self) -> tuple[Image, ...]:
        """The images in this turn, tool results' included."""
        found: list[Image] = []
        for block in self.blocks:
            if isinstance(block, Image):
                found.append(block)
            elif isinstance(block, ToolResult):
                found.extend(b for b in block.content if isinstance(b, Image))
        return tuple(found)


@attrs.frozen
class Usage:
    """
    Tokens consumed by one call.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    # Of the input, how many tokens the upstream read from its prompt cache (where reported).
    cached_input_tokens: int = 0
    # Of the output, how many tokens the model spent reasoning (where reported).
    reasoning_tokens: int = 0
    # Of the input, how many tokens the upstream wrote to its prompt cache
    # (Anthropic's cache_creation_input_tokens), and of those, how many for an
    # hour (its dearer TTL); billed at the cache-write rates.
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cached_input_tokens + other.cached_input_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.cache_write_1h_tokens + other.cache_write_1h_tokens,
        )

    def to_dict(self) -> dict[str, int]:
        """The usage as JSON: the counts, their total, and the cached and reasoning parts."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "reasoning_tokens": self.reasoning_tokens,
        }


@attrs.frozen
class ProviderRequest:
    """
    What a provider backend is asked to complete.

    ``messages`` holds only user and assistant turns, oldest first, ending with
    the new user turn; the system prompt travels apart in ``system``.
    """

    model: str
    messages: tuple[ChatMessage, ...]
    system: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    request_id: str = ""
    # Seconds the upstream call may take in all (connect, first byte, whole reply).
    timeout: float = 60.0
    # What LLMRequest carries of the same names (see there).
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    response_format: ResponseFormat | None = None
    stop: tuple[str, ...] = ()
    top_p: float | None = None
    seed: int | None = None
    user: str | None = None
    metadata: Mapping[str, str] | None = None
    passthrough: Passthrough | None = None


@attrs.frozen
class ProviderReply:
    """
    A whole (non-streamed) completion.
    """

    text: str
    model: str
    usage: Usage
    finish_reason: str = "stop"
    # False when the upstream's usage was missing or malformed: the router
    # then bills the reservation's worst case instead of ``usage``.
    usage_valid: bool = True
    tool_calls: tuple[ToolCall, ...] = ()
    # Anthropic's extended thinking, in the order it came (before the text).
    thinking: tuple[Thinking, ...] = ()
    # The text blocks, each with its citations, when any block had citations
    # (Anthropic's, for documents with citations enabled); their texts join to ``text``.
    cited: tuple[CitedText, ...] = ()


@attrs.frozen
class TextDelta:
    """
    One streamed piece of text.
    """

    text: str


@attrs.frozen
class StreamEnd:
    """
    The last item of a stream: the usage the upstream reported, and why it stopped.

    A stream's tool calls arrive before it as :class:`ToolCallDelta` items, its
    thinking (Anthropic's extended thinking) as :class:`ThinkingDelta` items.
    """

    usage: Usage
    finish_reason: str = "stop"
    model: str = ""
    # False when the upstream's usage was missing or malformed: the router
    # then bills the reservation's worst case instead of ``usage``.
    usage_valid: bool = True


@attrs.frozen
class ProviderStatus:
    """
    A provider's availability and the models it serves, as last checked.
    """

    name: str
    available: bool
    models: tuple[str, ...] = ()
    reason: str = ""
    # The API family the provider speaks ("openai", "anthropic", "ollama"; "" when unknown).
    family: str = ""


@attrs.frozen
class RoutingParameters:
    """
    Hints a request may carry to steer the choice of model.
    """

    complexity: Complexity | None = None
    required_capabilities: frozenset[str] = frozenset()
    max_cost: float | None = None

    @classmethod
    def from_dict(cls, raw: Any, field: str = "routing_parameters") -> RoutingParameters:
        """Validate a JSON object; unknown keys (like the seeds' ``task_type``) are ignored."""
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise ValidationError(field, "must be an object")
        complexity = raw.get("complexity")
        if complexity is not None and complexity not in ("low", "medium", "high"):
            raise ValidationError(f"{field}.complexity", "must be low, medium or high")
        caps = raw.get("required_capabilities")
        if caps is None:
            caps = ()
        if not isinstance(caps, list | tuple | frozenset | set) or not all(
            isinstance(c, str) for c in caps
        ):
            raise ValidationError(f"{field}.required_capabilities", "must be a list of strings")
        max_cost = raw.get("max_cost")
        cost = None
        if max_cost is not None:
            if isinstance(max_cost, bool) or not isinstance(max_cost, int | float):
                raise ValidationError(f"{field}.max_cost", "must be a number")
            try:
                cost = float(max_cost)
            except OverflowError:  # a 400-digit integer
                cost = math.inf
            if not math.isfinite(cost):
                raise ValidationError(f"{field}.max_cost", "must be a finite number")
            if cost < 0:
                raise ValidationError(f"{field}.max_cost", "must not be negative")
        return cls(complexity, frozenset(caps), cost)


@attrs.frozen
class LLMRequest:
    """
    One request for a reply: a single message, or a list of chat messages.

    Beyond text: messages may hold content blocks (see :class:`ChatMessage`);
    ``tools`` are offered to the model as ``tool_choice`` allows;
    ``response_format`` asks for JSON; ``stop``, ``top_p``, ``seed``, ``user``
    and ``metadata`` are the sampling and tagging fields every family knows in
    some form; ``passthrough`` carries a client's untranslated parameters to an
    upstream of its own API family. What each provider makes of each field is
    in ``docs/compat.md``; a request needing what a model cannot do is routed
    elsewhere or refused, never silently cut down.
    """

    message: str | None = None
    messages: tuple[ChatMessage, ...] = ()
    context_id: str | None = None
    task_type: str = "default"
    component: str | None = None
    provider: str | None = None
    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    system_prompt: str | None = None
    routing: RoutingParameters = attrs.field(factory=RoutingParameters)
    request_id: str = attrs.field(factory=new_request_id)
    # Seconds the whole request may take; None uses the server's setting.
    timeout: float | None = None
    tools: tuple[Tool, ...] = attrs.field(default=(), converter=_tool_tuple)
    tool_choice: ToolChoice | None = None
    response_format: ResponseFormat | None = None
    stop: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    top_p: float | None = None
    seed: int | None = None
    user: str | None = None
    metadata: Mapping[str, str] | None = None
    passthrough: Passthrough | None = None

    def __attrs_post_init__(self) -> None:
        if self.message is None and not self.messages:
            raise ValidationError("message", "a message or messages is required")
        if self.temperature is not None and not 0 <= self.temperature <= 2:
            raise ValidationError("temperature", "must be from 0 to 2")
        if self.max_tokens is not None and self.max_tokens <= 0:
            raise ValidationError("max_tokens", "must be a positive whole number")
        if self.timeout is not None and self.timeout <= 0:
            raise ValidationError("timeout", "must be positive")
        if self.tools or self.tool_choice is not None or self.response_format is not None:
            _check_tools(self.tools, self.tool_choice)
        if self.stop or self.top_p is not None or self.seed is not None:
            _check_sampling(self.stop, self.top_p, self.seed)
        if self.user is not None or self.metadata is not None:
            _check_tags(self.user, self.metadata)

    @property
    def offers_tools(self) -> bool:
        """Whether the model is offered tools it may call (some, and a choice other than none)."""
        return bool(self.tools) and (self.tool_choice is None or self.tool_choice.mode != "none")


# Whole numbers an upstream's seed field takes (64-bit signed).
_SEED_RANGE = (-(2**63), 2**63 - 1)


def _check_tools(tools: tuple[Tool, ...], choice: ToolChoice | None) -> None:
    names: set[str] = set()
    for i, tool in enumerate(tools):
        if not isinstance(tool, Tool):
            raise ValidationError(f"tools[{i}]", "must be a tool definition")
        if tool.name in names:
            raise ValidationError(f"tools[{i}].name", f"{tool.name!r} is defined twice")
        names.add(tool.name)
    if choice is None:
        return
    if not isinstance(choice, ToolChoice):
        raise ValidationError("tool_choice", "must be a tool choice")
    if choice.forces and not tools:
        raise ValidationError("tool_choice", f"{choice.mode} needs tools to choose from")
    if choice.name is not None and choice.name not in names:
        raise ValidationError("tool_choice", f"names {choice.name!r}, which is not in tools")


def _check_sampling(stop: tuple[str, ...], top_p: float | None, seed: int | None) -> None:
    if not all(isinstance(s, str) and s for s in stop):
        raise ValidationError("stop", "must be non-empty strings")
    if top_p is not None and (
        isinstance(top_p, bool) or not isinstance(top_p, int | float) or not 0 <= top_p <= 1
    ):
        raise ValidationError("top_p", "must be a number from 0 to 1")
    if seed is not None and (
        isinstance(seed, bool)
        or not isinstance(seed, int)
        or not _SEED_RANGE[0] <= seed <= _SEED_RANGE[1]
    ):
        raise ValidationError("seed", "must be a whole number within 64 bits")


def _check_tags(user: str | None, metadata: Mapping[str, str] | None) -> None:
    if user is not None and not isinstance(user, str):
        raise ValidationError("user", "must be a string")
    if metadata is None:
        return
    if not isinstance(metadata, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise ValidationError("metadata", "must be an object of strings")


@attrs.frozen
class Reply:
    """
    A finished reply, as every edge reports it.

    ``finish_reason`` is one of stop, length, tool_calls, content_filter;
    ``tool_calls`` are the calls the model made (then ``finish_reason`` is
    ``tool_calls`` and ``message`` may be empty).
    """

    message: str
    model: str
    provider: str
    context: str | None
    usage: Usage
    cost: float
    routing: str
    request_id: str
    task_type: str
    budget_warning: str | None = None
    finish_reason: str = "stop"
    finished: bool = True
    timestamp: str = attrs.field(factory=_now_iso)
    tool_calls: tuple[ToolCall, ...] = ()
    # Anthropic's extended thinking blocks, when the request asked for thinking;
    # only /v1/messages shows them (to_dict leaves them out).
    thinking: tuple[Thinking, ...] = ()
    # A whole reply's text blocks with their citations, when any had citations;
    # only /v1/messages shows them. A stream sends its citations as chunks instead.
    cited: tuple[CitedText, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The reply as JSON: the body of ``POST /message``, the last SSE event, a WebSocket RESPONSE."""
        body: dict[str, Any] = {
            "message": self.message,
            "model": self.model,
            "provider": self.provider,
            "context": self.context,
            "finished": self.finished,
            "timestamp": self.timestamp,
            "usage": self.usage.to_dict(),
            "cost": self.cost,
            "routing": self.routing,
            "request_id": self.request_id,
            "task_type": self.task_type,
            "finish_reason": self.finish_reason,
            "tool_calls": [
                {"id": c.id, "name": c.name, "arguments": c.arguments} for c in self.tool_calls
            ],
        }
        if self.budget_warning:
            body["budget_warning"] = self.budget_warning
        return body


@attrs.frozen
class Chunk:
    """
    One streamed piece; the last one has ``done`` set and carries the :class:`Reply`.

    A piece carries text, or pieces of tool calls (``tool_calls``: the first piece
    of each call has its id and name, later ones fragments of its arguments).
    """

    text: str
    model: str
    provider: str
    context: str | None
    done: bool = False
    reply: Reply | None = None
    tool_calls: tuple[ToolCallDelta, ...] = ()
    # A piece of a thinking block (then ``text`` is empty); only /v1/messages shows them.
    thinking: tuple[ThinkingDelta, ...] = ()
    # Citations of the text being streamed (then ``text`` is empty); only /v1/messages shows them.
    citations: tuple[Mapping[str, Any], ...] = ()
