"""
The schemas of the Anthropic-compatible API: ``POST /v1/messages``, its replies and errors.

``model``, ``messages`` and ``max_tokens`` are required, as in Anthropic's
API, and a missing one is named as Anthropic names it ("Field required").
Every parameter Rhetor translates is declared (``tools``, ``tool_choice``,
``stop_sequences``, ``top_p``, ``metadata``, ``output_config``); any other
is not refused by the schema: it is relayed untouched to an Anthropic
upstream, and refused with a 400 naming it (unless harmless) when the
request can only go to another API family (``docs/compat.md``). The schema
checks the shapes; the translation
(``rhetor.providers._anthropic_shapes.fields_from_anthropic``) reads the
values. Content is a string or an array of blocks, each a class tagged by
its ``type`` (:class:`AnthropicTextBlock`, :class:`AnthropicImageBlock`,
:class:`AnthropicToolUseBlock`, :class:`AnthropicToolResultBlock`); a new
kind of block is one more class in :data:`AnthropicBlock`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import Meta

from rhetor.edge._schema import Body, PositiveInt

__all__ = [
    "AnthropicBase64Source",
    "AnthropicBlock",
    "AnthropicErrorBody",
    "AnthropicErrorDetail",
    "AnthropicImageBlock",
    "AnthropicMessage",
    "AnthropicMetadata",
    "AnthropicModel",
    "AnthropicModelList",
    "AnthropicOutputConfig",
    "AnthropicOutputFormat",
    "AnthropicReplyBlock",
    "AnthropicReplyText",
    "AnthropicReplyToolUse",
    "AnthropicTextBlock",
    "AnthropicTool",
    "AnthropicToolChoice",
    "AnthropicToolResultBlock",
    "AnthropicToolUseBlock",
    "AnthropicURLSource",
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


class AnthropicBase64Source(Body, tag_field="type", tag="base64", frozen=True, kw_only=True):
    """
    An image's bytes, base64, with their media type.
    """

    required_message: ClassVar[str] = "Field required"

    media_type: Annotated[str, Meta(examples=["image/png"])]
    data: Annotated[str, Meta(examples=["iVBORw0KGgo="])]


class AnthropicURLSource(Body, tag_field="type", tag="url", frozen=True, kw_only=True):
    """
    An image the provider fetches from a URL.
    """

    required_message: ClassVar[str] = "Field required"

    url: str


class AnthropicImageBlock(Body, tag_field="type", tag="image", frozen=True, kw_only=True):
    """
    An image (a vision model is needed).
    """

    required_message: ClassVar[str] = "Field required"

    source: AnthropicBase64Source | AnthropicURLSource


class AnthropicToolUseBlock(Body, tag_field="type", tag="tool_use", frozen=True, kw_only=True):
    """
    A tool call an assistant turn made (sent back in the history).
    """

    required_message: ClassVar[str] = "Field required"

    id: str
    name: str
    input: dict[str, Any]


class AnthropicToolResultBlock(
    Body, tag_field="type", tag="tool_result", frozen=True, kw_only=True
):
    """
    A tool call's result, in a user turn; ``is_error`` says the call failed.
    """

    required_message: ClassVar[str] = "Field required"

    tool_use_id: str
    content: str | list[AnthropicTextBlock | AnthropicImageBlock] = ""
    is_error: bool | None = None


class AnthropicThinkingBlock(Body, tag_field="type", tag="thinking", frozen=True, kw_only=True):
    """
    Extended thinking an assistant turn began with, sent back exactly as it came.
    """

    required_message: ClassVar[str] = "Field required"

    thinking: str
    signature: str


class AnthropicRedactedThinkingBlock(
    Body, tag_field="type", tag="redacted_thinking", frozen=True, kw_only=True
):
    """
    Extended thinking the safety systems encrypted, sent back exactly as it came.
    """

    required_message: ClassVar[str] = "Field required"

    data: str


class AnthropicDocumentBlock(Body, tag_field="type", tag="document", frozen=True, kw_only=True):
    """
    A document (a PDF as base64 or URL, plain text, or content blocks), relayed to
    Anthropic models as sent.
    """

    required_message: ClassVar[str] = "Field required"

    source: Annotated[
        dict[str, Any],
        Meta(examples=[{"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}]),
    ]
    title: str | None = None
    context: str | None = None
    citations: dict[str, Any] | None = None


class AnthropicSearchResultBlock(
    Body, tag_field="type", tag="search_result", frozen=True, kw_only=True
):
    """
    A search result with its source and title, relayed to Anthropic models as sent.
    """

    required_message: ClassVar[str] = "Field required"

    source: str
    title: str
    content: list[AnthropicTextBlock]
    citations: dict[str, Any] | None = None


# Every kind of content block Rhetor reads; others are a 400.
AnthropicBlock = (
    AnthropicTextBlock
    | AnthropicImageBlock
    | AnthropicToolUseBlock
    | AnthropicToolResultBlock
    | AnthropicThinkingBlock
    | AnthropicRedactedThinkingBlock
    | AnthropicDocumentBlock
    | AnthropicSearchResultBlock
)


def _text(content: str | Sequence[AnthropicBlock]) -> str:
    if isinstance(content, str):
        return content
    return "".join(block.text for block in content if isinstance(block, AnthropicTextBlock))


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


class AnthropicTool(Body, frozen=True, kw_only=True):
    """
    A client tool the model may call: name, description, JSON Schema of its input.
    """

    required_message: ClassVar[str] = "Field required"

    name: Annotated[str, Meta(min_length=1, max_length=64, pattern="^[a-zA-Z0-9_-]+$")]
    description: str | None = None
    input_schema: dict[str, Any]
    type: Literal["custom"] | None = None
    strict: bool | None = None


class AnthropicToolChoice(Body, frozen=True, kw_only=True):
    """
    How the model uses the tools: ``auto``, ``any`` (some tool), ``tool`` (the one named) or ``none``.
    """

    required_message: ClassVar[str] = "Field required"

    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class AnthropicMetadata(Body, frozen=True, kw_only=True):
    """
    About the request: ``user_id`` is the end user (Rhetor's ``user``).
    """

    user_id: str | None = None


class AnthropicOutputFormat(Body, frozen=True, kw_only=True):
    """
    Structured output: the reply is JSON holding to ``schema``.
    """

    required_message: ClassVar[str] = "Field required"

    type: Literal["json_schema"]
    schema: dict[str, Any]


class AnthropicOutputConfig(Body, frozen=True, kw_only=True):
    """
    The reply's configuration; ``format`` asks for structured output.
    """

    format: AnthropicOutputFormat | None = None


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
    system: str | list[AnthropicTextBlock] | None = None
    temperature: Annotated[float, Meta(ge=0, le=1)] | None = None
    stream: bool | None = None
    tools: list[AnthropicTool] | None = None
    tool_choice: AnthropicToolChoice | None = None
    stop_sequences: list[str] | None = None
    top_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    metadata: AnthropicMetadata | None = None
    output_config: AnthropicOutputConfig | None = None
    thinking: Annotated[
        dict[str, Any] | None,
        Meta(
            description=(
                "Extended thinking, relayed to Anthropic as given (e.g. "
                '{"type": "enabled", "budget_tokens": 2048}); such a request goes to '
                "Anthropic models only."
            ),
            examples=[{"type": "enabled", "budget_tokens": 2048}],
        ),
    ] = None

    def system_text(self) -> str | None:
        """The system prompt as one text (None when absent or empty)."""
        return None if self.system is None else _text(self.system) or None


class CountTokensBody(Body, frozen=True, kw_only=True):
    """
    What ``POST /v1/messages/count_tokens`` counts: a Messages request without ``max_tokens``.
    """

    required_message: ClassVar[str] = "Field required"

    model: Annotated[str, Meta(min_length=1, examples=["rhetor/chat"])]
    messages: Annotated[
        list[AnthropicMessage],
        Meta(min_length=1, examples=[[{"role": "user", "content": "Hello"}]]),
    ]
    system: str | list[AnthropicTextBlock] | None = None
    tools: list[AnthropicTool] | None = None
    tool_choice: AnthropicToolChoice | None = None
    output_config: AnthropicOutputConfig | None = None
    thinking: dict[str, Any] | None = None


class CountTokensReply(msgspec.Struct, frozen=True, kw_only=True):
    """
    The input tokens the request would take (the header ``X-Rhetor-Counted-By`` says who counted).
    """

    input_tokens: int


# -- replies and errors -----------------------------------------------------------------


class AnthropicReplyText(msgspec.Struct, tag_field="type", tag="text", frozen=True, kw_only=True):
    """
    A text block of a reply; ``citations`` when it cites a document (as Anthropic sent them).
    """

    text: str
    citations: list[dict[str, Any]] | None = None


class AnthropicReplyToolUse(
    msgspec.Struct, tag_field="type", tag="tool_use", frozen=True, kw_only=True
):
    """
    A tool call of a reply: its id, the tool's name and the input object.
    """

    id: str
    name: str
    input: dict[str, Any]


class AnthropicReplyThinking(
    msgspec.Struct, tag_field="type", tag="thinking", frozen=True, kw_only=True
):
    """
    The model's extended thinking (when the request asked for it) and its signature.
    """

    thinking: str
    signature: str


class AnthropicReplyRedactedThinking(
    msgspec.Struct, tag_field="type", tag="redacted_thinking", frozen=True, kw_only=True
):
    """
    Extended thinking the safety systems encrypted.
    """

    data: str


AnthropicReplyBlock = (
    AnthropicReplyText
    | AnthropicReplyToolUse
    | AnthropicReplyThinking
    | AnthropicReplyRedactedThinking
)


class AnthropicUsage(msgspec.Struct, frozen=True, kw_only=True):
    """
    The tokens a message took: fresh input, input read from the cache, output.
    """

    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int | None = None


class MessagesReply(msgspec.Struct, frozen=True, kw_only=True):
    """
    A ``message``: the reply, whole.
    """

    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[AnthropicReplyBlock]
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
    An error under ``/v1`` for the Anthropic API: ``{"type": "error", "error": {type, message}, "request_id"}``.
    """

    type: Literal["error"]
    error: AnthropicErrorDetail
    request_id: (
        Annotated[str, Meta(description="The request's id, as in its X-Request-ID header.")] | None
    ) = None


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
