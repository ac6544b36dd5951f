"""
The schemas of the Anthropic-compatible API: ``POST /v1/messages``, its replies and errors.

``model``, ``messages`` and ``max_tokens`` are required, as in Anthropic's
API, and a missing one is named as Anthropic names it ("Field required").
Only what Rhetor reads is declared; ``metadata``, ``top_k``,
``stop_sequences`` and the like are accepted and ignored. Content is a
string or an array of blocks, each a class tagged by its ``type``
(:class:`AnthropicTextBlock`); a new kind of block is one more class in
:data:`AnthropicBlock`.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import msgspec
from msgspec import Meta

from rhetor.edge._schema import Body, PositiveInt

__all__ = [
    "AnthropicBlock",
    "AnthropicErrorBody",
    "AnthropicErrorDetail",
    "AnthropicMessage",
    "AnthropicModel",
    "AnthropicModelList",
    "AnthropicReplyText",
    "AnthropicTextBlock",
    "AnthropicUsage",
    "MessagesBody",
    "MessagesReply",
]


class AnthropicTextBlock(Body, tag_field="type", tag="text", frozen=True, kw_only=True):
    """
    A text block.
    """

    required_message: ClassVar[str] = "Field required"

    text: str


# Every kind of content block Rhetor reads; others (images, documents) are a 400.
AnthropicBlock = AnthropicTextBlock


def _text(content: str | list[AnthropicBlock]) -> str:
    return content if isinstance(content, str) else "".join(block.text for block in content)


class AnthropicMessage(Body, frozen=True, kw_only=True):
    """
    One turn of the conversation.
    """

    required_message: ClassVar[str] = "Field required"

    role: Literal["user", "assistant"]
    content: str | list[AnthropicBlock]

    def text(self) -> str:
        """The content as one text."""
        return _text(self.content)


class MessagesBody(Body, frozen=True, kw_only=True):
    """
    A Messages request. ``model`` is a model's name or an alias ``rhetor/<task>``.

    The headers ``X-Rhetor-Context`` and ``X-Rhetor-Component`` name the
    context and component.
    """

    required_message: ClassVar[str] = "Field required"

    model: Annotated[str, Meta(min_length=1, examples=["rhetor/chat"])]
    max_tokens: Annotated[PositiveInt, Meta(examples=[256])]
    messages: Annotated[
        list[AnthropicMessage],
        Meta(min_length=1, examples=[[{"role": "user", "content": "Hello"}]]),
    ]
    system: str | list[AnthropicBlock] | None = None
    temperature: Annotated[float, Meta(ge=0, le=1)] | None = None
    stream: bool | None = None

    def system_text(self) -> str | None:
        """The system prompt as one text (None when absent or empty)."""
        return None if self.system is None else _text(self.system) or None


# -- replies and errors -----------------------------------------------------------------


class AnthropicReplyText(msgspec.Struct, frozen=True, kw_only=True):
    """
    A text block of a reply.
    """

    type: Literal["text"]
    text: str


class AnthropicUsage(msgspec.Struct, frozen=True, kw_only=True):
    """
    The tokens a message took.
    """

    input_tokens: int
    output_tokens: int


class MessagesReply(msgspec.Struct, frozen=True, kw_only=True):
    """
    A ``message``: the reply, whole.
    """

    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[AnthropicReplyText]
    stop_reason: str | None
    stop_sequence: str | None
    usage: AnthropicUsage


class AnthropicErrorDetail(msgspec.Struct, frozen=True, kw_only=True):
    """
    What went wrong, as Anthropic says it.
    """

    type: str
    message: str


class AnthropicErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    """
    An error under ``/v1`` for the Anthropic API: ``{"type": "error", "error": {type, message}}``.
    """

    type: Literal["error"]
    error: AnthropicErrorDetail


class AnthropicModel(msgspec.Struct, frozen=True, kw_only=True):
    """
    A model, in Anthropic's list format.
    """

    type: Literal["model"]
    id: str
    display_name: str
    created_at: str


class AnthropicModelList(msgspec.Struct, frozen=True, kw_only=True):
    """
    Every routable model, then the ``rhetor/<task>`` aliases.
    """

    data: list[AnthropicModel]
    has_more: bool
    first_id: str | None
    last_id: str | None
