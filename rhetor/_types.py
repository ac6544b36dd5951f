"""
Value objects shared by Rhetor's actors.

Everything here is frozen: actors exchange these, never mutable state.
"""

from __future__ import annotations

from typing import Literal

import attrs

__all__ = [
    "ChatMessage",
    "ProviderReply",
    "ProviderRequest",
    "ProviderStatus",
    "Role",
    "StreamEnd",
    "TextDelta",
    "Usage",
]

Role = Literal["system", "user", "assistant"]


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

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
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
