"""
The content of Rhetor's own LLM requests beyond text: content blocks, tools, tool choice and formats.

A turn's ``content`` (and ``/message``'s ``message``) is a string or a list of
blocks tagged by ``type`` (``docs/api.md``, "Tools, images and content
blocks"): :class:`TextBlock`, :class:`ImageBlock`, :class:`ToolCallBlock` (an
assistant turn's call) and :class:`ToolResultBlock` (a user turn's answer to a
call). A request may offer :class:`ToolSpec` tools, name one
(:class:`NamedToolChoice`) and ask for JSON (:class:`FormatSpec`). Each class
turns itself into the internal model (:mod:`rhetor._content`), naming the
field at fault in its errors; :func:`tool_call_deltas` writes a streamed
chunk's pieces of calls for the SSE events and WebSocket frames.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any, Literal

from msgspec import Meta

from rhetor._content import ContentBlock, Image, ResponseFormat, Text, Tool, ToolCall, ToolResult
from rhetor._errors import ValidationError
from rhetor._types import ChatMessage
from rhetor.edge._schema import Body, NonEmpty

if TYPE_CHECKING:
    from rhetor._types import Chunk

__all__ = [
    "BlockBody",
    "FormatSpec",
    "ImageBlock",
    "NamedToolChoice",
    "TextBlock",
    "ToolCallBlock",
    "ToolResultBlock",
    "ToolSpec",
    "blocks_of",
    "renamed",
    "tool_call_deltas",
]


def renamed(error: ValidationError, field: str) -> ValidationError:
    """``error`` naming ``field`` instead (its path as the client sent it)."""
    return ValidationError(field, error.message.split(": ", 1)[-1])


class TextBlock(Body, tag_field="type", tag="text", frozen=True, kw_only=True):
    """
    A piece of text.
    """

    text: str

    def as_block(self, field: str) -> Text:
        return Text(self.text)


class ImageBlock(Body, tag_field="type", tag="image", frozen=True, kw_only=True):
    """
    An image (user turns): a ``url`` (a ``data:`` URL is read as base64 data), or base64 ``data`` with its ``media_type``.
    """

    url: str | None = None
    data: str | None = None
    media_type: (
        Annotated[str, Meta(description="image/jpeg, image/png, image/gif or image/webp.")] | None
    ) = None
    detail: Literal["low", "high", "auto"] | None = None

    def as_block(self, field: str) -> Image:
        try:
            if self.url is not None and self.data is None:
                return Image.from_url(self.url, self.detail)
            image = Image(self.url, self.data, self.media_type, self.detail)
            # The payload is base64, as a data URL's must be.
            Image.from_url(image.as_url())
            return image
        except ValidationError as exc:
            raise renamed(exc, field) from None


class ToolCallBlock(Body, tag_field="type", tag="tool_call", frozen=True, kw_only=True):
    """
    A tool call (assistant turns): the call's id, the tool's name, its arguments as JSON text or an object.
    """

    id: NonEmpty
    name: NonEmpty
    arguments: str | dict[str, Any] = "{}"

    def as_block(self, field: str) -> ToolCall:
        arguments = self.arguments
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, separators=(",", ":"), ensure_ascii=False)
        return ToolCall(self.id, self.name, arguments)


class ToolResultBlock(Body, tag_field="type", tag="tool_result", frozen=True, kw_only=True):
    """
    A tool's answer (user turns): the call's id, its content (text, or text and image blocks), whether it failed.
    """

    call_id: NonEmpty
    content: str | list[TextBlock | ImageBlock] = ""
    is_error: bool = False

    def as_block(self, field: str) -> ToolResult:
        content: str | tuple[Text | Image, ...] = (
            self.content
            if isinstance(self.content, str)
            else tuple(b.as_block(f"{field}.content[{j}]") for j, b in enumerate(self.content))
        )
        return ToolResult(self.call_id, content, self.is_error)


# Every kind of block a turn may hold.
BlockBody = TextBlock | ImageBlock | ToolCallBlock | ToolResultBlock


def blocks_of(role: str, content: list[BlockBody], field: str) -> ChatMessage:
    """A turn of ``role`` made of ``content``'s blocks; errors name ``field``'s items."""
    blocks: list[ContentBlock] = [b.as_block(f"{field}[{j}]") for j, b in enumerate(content)]
    try:
        return ChatMessage(role, blocks=tuple(blocks))  # type: ignore[arg-type]
    except ValidationError as exc:
        inner = (exc.field or "").removeprefix("content")
        raise renamed(exc, f"{field}{inner}") from None


class ToolSpec(Body, frozen=True, kw_only=True):
    """
    A tool the model may call: its name, what it does, and a JSON Schema of its arguments.
    """

    name: Annotated[str, Meta(pattern="^[A-Za-z0-9_-]{1,64}$", examples=["get_weather"])]
    description: str | None = None
    parameters: (
        Annotated[dict[str, Any], Meta(description="JSON Schema; default no arguments.")] | None
    ) = None
    strict: bool | None = None

    def as_tool(self) -> Tool:
        if self.parameters is None:
            return Tool(self.name, self.description, strict=self.strict)
        return Tool(self.name, self.description, self.parameters, self.strict)


class NamedToolChoice(Body, frozen=True, kw_only=True):
    """
    A call of this tool, and no other.
    """

    name: NonEmpty


class FormatSpec(Body, frozen=True, kw_only=True):
    """
    The reply's format: ``text``, any JSON object, or JSON matching ``schema`` (``json_schema``).
    """

    type: Literal["text", "json_object", "json_schema"]
    schema: (
        Annotated[dict[str, Any], Meta(description="The JSON Schema (json_schema only).")] | None
    ) = None
    name: Annotated[str, Meta(pattern="^[A-Za-z0-9_-]{1,64}$")] | None = None
    description: str | None = None
    strict: bool | None = None

    def as_format(self) -> ResponseFormat:
        if self.type == "json_schema" and self.schema is None:
            raise ValidationError("response_format.schema", "is required for json_schema")
        if self.type != "json_schema" and self.schema is not None:
            raise ValidationError("response_format.schema", f"a {self.type} format has none")
        return ResponseFormat(
            self.type, self.schema, self.name or "response", self.description, self.strict
        )


def tool_call_deltas(chunk: Chunk) -> list[dict[str, Any]]:
    """A chunk's pieces of tool calls: index, and the id and name (first piece) or argument text."""
    return [
        {"index": d.index, "id": d.id, "name": d.name, "arguments": d.arguments}
        for d in chunk.tool_calls
    ]
