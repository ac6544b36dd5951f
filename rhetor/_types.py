"""
Value objects shared by Rhetor's actors.

Everything here is frozen: actors exchange these, never mutable state. The
request and reply types (:class:`LLMRequest`, :class:`Reply`, :class:`Chunk`,
:class:`RoutingParameters`) are what the public API takes and returns, and
are re-exported by ``rhetor``; this module imports nothing of the server
stack, so that importing them stays light.
"""

from __future__ import annotations

import itertools
import math
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import attrs

from rhetor._errors import ValidationError

__all__ = [
    "ChatMessage",
    "Chunk",
    "LLMRequest",
    "ProviderReply",
    "ProviderRequest",
    "ProviderStatus",
    "Reply",
    "Role",
    "RoutingParameters",
    "StreamEnd",
    "TextDelta",
    "Usage",
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


def _now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@attrs.frozen
class ChatMessage:
    """
    One turn of a conversation.
    """

    role: Role
    content: str


@attrs.frozen
class Usage:
    """
    Tokens consumed by one call.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    # Of input_tokens, those the provider read from its prompt cache (when it says).
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cached_tokens + other.cached_tokens,
        )


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

    def __attrs_post_init__(self) -> None:
        if self.message is None and not self.messages:
            raise ValidationError("message", "a message or messages is required")
        if self.temperature is not None and not 0 <= self.temperature <= 2:
            raise ValidationError("temperature", "must be from 0 to 2")
        if self.max_tokens is not None and self.max_tokens <= 0:
            raise ValidationError("max_tokens", "must be a positive whole number")
        if self.timeout is not None and self.timeout <= 0:
            raise ValidationError("timeout", "must be positive")


@attrs.frozen
class Reply:
    """
    A finished reply, as every edge reports it.
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

    def to_dict(self) -> dict[str, Any]:
        """The reply as JSON: the body of ``POST /message``, the last SSE event, a WebSocket RESPONSE."""
        body: dict[str, Any] = {
            "message": self.message,
            "model": self.model,
            "provider": self.provider,
            "context": self.context,
            "finished": self.finished,
            "timestamp": self.timestamp,
            "usage": {
                "input_tokens": self.usage.input_tokens,
                "output_tokens": self.usage.output_tokens,
                "total_tokens": self.usage.total_tokens,
            },
            "cost": self.cost,
            "routing": self.routing,
            "request_id": self.request_id,
            "task_type": self.task_type,
            "finish_reason": self.finish_reason,
        }
        if self.budget_warning:
            body["budget_warning"] = self.budget_warning
        return body


@attrs.frozen
class Chunk:
    """
    One streamed piece; the last one has ``done`` set and carries the :class:`Reply`.
    """

    text: str
    model: str
    provider: str
    context: str | None
    done: bool = False
    reply: Reply | None = None
