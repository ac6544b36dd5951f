"""
The content of a conversation beyond plain text: content blocks, tools, tool choice,
structured output, and parameters relayed to an upstream of the caller's own API family.

One internal model for every API family (see ``docs/providers.md``, "Content blocks"):

- a message (:class:`rhetor.ChatMessage`) is plain text, or a sequence of blocks:
  :class:`Text`, :class:`Image` (a URL, or base64 data with its media type),
  :class:`ToolCall` (in an assistant turn: id, name, arguments as JSON text),
  :class:`ToolResult` (in a user turn: the call's id, its content, whether it failed)
  :class:`Thinking` (in an assistant turn: Anthropic's extended thinking, with the
  signature that must travel back with it, or its redacted form) and :class:`Verbatim`
  (a block of one API family that Rhetor relays as it came, such as Anthropic's
  ``document``: only a provider of that family may be sent it);
- a request may offer :class:`Tool` definitions, say how they may be used
  (:class:`ToolChoice`), ask for JSON output (:class:`ResponseFormat`), and carry the
  parameters Rhetor does not translate (:class:`Passthrough`);
- a streamed reply carries :class:`ToolCallDelta` pieces, which
  :class:`ToolCallAssembly` puts together, and :class:`ThinkingDelta` pieces, which
  :class:`ThinkingAssembly` puts together.

Tool results live in user turns, as in Anthropic's Messages API; OpenAI's ``role:
"tool"`` messages and Ollama's are translated to and from them by the providers'
shape modules. Everything here is a frozen value; JSON Schemas are kept as the
mappings they arrived as and must not be changed afterwards.
"""

from __future__ import annotations

import binascii
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import attrs

from rhetor._errors import ValidationError

__all__ = [
    "FINISH_REASONS",
    "IMAGE_MEDIA_TYPES",
    "CitationDelta",
    "CitedText",
    "ContentBlock",
    "FinishReason",
    "Image",
    "Passthrough",
    "ResponseFormat",
    "Text",
    "Thinking",
    "ThinkingAssembly",
    "ThinkingDelta",
    "Tool",
    "ToolCall",
    "ToolCallAssembly",
    "ToolCallDelta",
    "ToolChoice",
    "ToolResult",
    "Verbatim",
    "finish_reason",
    "text_of",
]

FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]
# Why a reply ended, in the words every API family's reply is normalised to.
FINISH_REASONS: tuple[FinishReason, ...] = ("stop", "length", "tool_calls", "content_filter")

# What each upstream calls the four reasons (OpenAI's, Anthropic's and Ollama's).
_FINISH_SYNONYMS: dict[str, FinishReason] = {
    "stop": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "eos": "stop",
    "length": "length",
    "max_tokens": "length",
    "model_length": "length",
    "model_context_window_exceeded": "length",
    "tool_calls": "tool_calls",
    "tool_use": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
    "refusal": "content_filter",
    "safety": "content_filter",
}

# The image types every vision API takes as base64 data.
IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})

# Tool and schema names all three APIs accept.
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_DATA_URL = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)", re.DOTALL)


def finish_reason(raw: object, *, tool_calls: bool = False) -> FinishReason:
    """
    An upstream's reason for ending, normalised: stop, length, tool_calls or content_filter.

    Unknown or missing reasons are ``stop``; a reply that carries tool calls ended
    for them whatever its upstream said (Ollama says ``stop``).
    """
    reason = _FINISH_SYNONYMS.get(raw, "stop") if isinstance(raw, str) else "stop"
    if tool_calls and reason == "stop":
        return "tool_calls"
    return reason


def _name(value: object, field: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValidationError(field, "must be 1 to 64 letters, digits, underscores or dashes")
    return value


def _json_object(value: object, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValidationError(field, "must be a JSON Schema object")
    return value


@attrs.frozen
class Text:
    """
    A piece of text.
    """

    text: str


@attrs.frozen
class Image:
    """
    An image: a URL the upstream fetches, or base64 ``data`` with its ``media_type``.

    ``detail`` is OpenAI's resolution hint (``low``, ``high`` or ``auto``), which the
    token estimate also reads; other providers ignore it.
    """

    url: str | None = None
    data: str | None = None
    media_type: str | None = None
    detail: Literal["low", "high", "auto"] | None = None

    def __attrs_post_init__(self) -> None:
        if (self.url is None) == (self.data is None):
            raise ValidationError("image", "needs exactly one of a URL or base64 data")
        if self.data is not None and self.media_type not in IMAGE_MEDIA_TYPES:
            raise ValidationError(
                "image.media_type", f"must be one of {', '.join(sorted(IMAGE_MEDIA_TYPES))}"
            )
        if self.detail not in (None, "low", "high", "auto"):
            raise ValidationError("image.detail", "must be low, high or auto")

    @classmethod
    def from_url(cls, url: str, detail: Literal["low", "high", "auto"] | None = None) -> Image:
        """
        An image from a URL; a ``data:<type>;base64,...`` URL becomes base64 data.

        Error handling: a data URL whose payload is not base64, or whose type is not an
        image type every API takes, is a :class:`ValidationError` on ``image``.
        """
        match = _DATA_URL.fullmatch(url) if url.startswith("data:") else None
        if url.startswith("data:") and match is None:
            raise ValidationError("image", "a data URL must be data:<media type>;base64,<data>")
        if match is None:
            return cls(url=url, detail=detail)
        data = match["data"]
        try:
            binascii.a2b_base64(data.encode("ascii"), strict_mode=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raise ValidationError("image", "the data URL's payload is not base64") from None
        return cls(data=data, media_type=match["type"], detail=detail)

    def as_url(self) -> str:
        """The image as a URL: its own, or a ``data:`` URL of its base64 data."""
        if self.url is not None:
            return self.url
        return f"data:{self.media_type};base64,{self.data}"


@attrs.frozen
class ToolCall:
    """
    A model's call of a tool: the call's id, the tool's name, and its arguments as JSON text.

    The arguments stay the text the model wrote (OpenAI's models may write invalid
    JSON); :meth:`input` reads them.
    """

    id: str
    name: str
    arguments: str = "{}"

    def input(self) -> dict[str, Any]:
        """
        The arguments as a JSON object (``{}`` when they are empty).

        Error handling: arguments that are not a JSON object raise :class:`ValueError`.
        """
        if not self.arguments.strip():
            return {}
        value = json.loads(self.arguments)
        if not isinstance(value, dict):
            raise ValueError(f"tool call {self.id} has arguments that are not a JSON object")
        return value


def _result_content(value: str | Iterable[Text | Image]) -> tuple[Text | Image, ...]:
    blocks = (Text(value),) if isinstance(value, str) else tuple(value)
    return _merged_text(blocks)


@attrs.frozen
class ToolResult:
    """
    What a tool call answered, sent back in a user turn: the call's id, its content, whether it failed.

    ``content`` is text and images; a string is one text block, and text blocks side by
    side are one.
    """

    call_id: str
    content: tuple[Text | Image, ...] = attrs.field(default=(), converter=_result_content)
    is_error: bool = False

    @property
    def text(self) -> str:
        """The content's text (images left out)."""
        return "".join(b.text for b in self.content if isinstance(b, Text))


@attrs.frozen
class Thinking:
    """
    A model's extended thinking (Anthropic's ``thinking`` block): its text and its ``signature``.

    ``redacted`` holds the encrypted data of a ``redacted_thinking`` block instead
    (then ``text`` and ``signature`` are empty). Both are relayed back to Anthropic
    exactly as they came, which a conversation with thinking and tool calls needs;
    other API families cannot take them, and their shapes leave them out.
    """

    text: str = ""
    signature: str = ""
    redacted: str | None = None


@attrs.frozen
class Verbatim:
    """
    A content block of one API family that Rhetor does not translate, relayed as it came.

    Anthropic's ``document`` (a PDF, plain text or content blocks, with its
    title, context and citations setting) and ``search_result`` blocks are
    carried so: an upstream of ``family`` gets ``block`` unchanged, and a
    request holding one needs a provider of that family (the Router skips the
    others). ``block`` is the JSON object as sent; it must not be changed.
    """

    family: str
    block: Mapping[str, Any]


ContentBlock = Text | Image | ToolCall | ToolResult | Thinking | Verbatim


def _merged_text(blocks: tuple[Text | Image, ...]) -> tuple[Text | Image, ...]:
    """Blocks with each run of text blocks as one, and empty text left out."""
    if all(isinstance(b, Image) for b in blocks):
        return blocks
    merged: list[Text | Image] = []
    for block in blocks:
        if isinstance(block, Text) and merged and isinstance(merged[-1], Text):
            merged[-1] = Text(merged[-1].text + block.text)
        else:
            merged.append(block)
    return tuple(b for b in merged if not (isinstance(b, Text) and not b.text))


def text_of(blocks: Iterable[ContentBlock]) -> str:
    """The text of some blocks, their text blocks joined (images, calls and results left out)."""
    return "".join(b.text for b in blocks if isinstance(b, Text))


# The blocks each role may hold.
ALLOWED_BLOCKS: dict[str, tuple[type, ...]] = {
    "system": (Text,),
    "user": (Text, Image, ToolResult, Verbatim),
    "assistant": (Text, ToolCall, Thinking),
}


def normalised_blocks(role: str, blocks: Sequence[ContentBlock]) -> tuple[ContentBlock, ...]:
    """
    A message's blocks checked for its role, text runs merged, empty text dropped;
    ``()`` when only text is left (the message is then plain text).

    Error handling: a block its role cannot hold (an image from the assistant, a tool
    call from the user) is a :class:`ValidationError` on ``content``.
    """
    allowed = ALLOWED_BLOCKS.get(role, (Text,))
    merged: list[ContentBlock] = []
    for i, block in enumerate(blocks):
        if not isinstance(block, allowed):
            raise ValidationError(
                f"content[{i}]", f"a {role} turn cannot hold a {type(block).__name__} block"
            )
        if isinstance(block, Text) and merged and isinstance(merged[-1], Text):
            merged[-1] = Text(merged[-1].text + block.text)
        else:
            merged.append(block)
    kept = tuple(b for b in merged if not (isinstance(b, Text) and not b.text))
    return () if all(isinstance(b, Text) for b in kept) else kept


@attrs.frozen
class ToolCallDelta:
    """
    One streamed piece of a tool call: its index among the reply's calls, and what it adds.

    The first piece of a call carries its ``id`` and ``name``; later ones carry
    fragments of the ``arguments`` text, to be appended in order.
    """

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@attrs.define
class ToolCallAssembly:
    """
    The tool calls of one streamed reply, put together from their deltas as they arrive.

    Calls are ordered by index. A call whose arguments never came has ``{}``.
    """

    # Invariant: index -> [id, name, argument fragments], in arrival order.
    _calls: dict[int, tuple[list[str], list[str], list[str]]] = attrs.field(factory=dict)

    def add(self, delta: ToolCallDelta) -> None:
        """Take one delta."""
        ident, name, fragments = self._calls.setdefault(delta.index, ([], [], []))
        if delta.id:
            ident[:] = [delta.id]
        if delta.name:
            name[:] = [delta.name]
        if delta.arguments:
            fragments.append(delta.arguments)

    def __bool__(self) -> bool:
        return bool(self._calls)

    def calls(self) -> tuple[ToolCall, ...]:
        """The calls so far, in index order."""
        return tuple(
            ToolCall(
                ident[0] if ident else f"call_{index}",
                name[0] if name else "",
                "".join(fragments) or "{}",
            )
            for index, (ident, name, fragments) in sorted(self._calls.items())
        )

    def produced(self) -> str:
        """Everything the calls' deltas carried, as text (what a partial bill counts)."""
        return "".join(
            "".join(name) + "".join(fragments)
            for _, (_, name, fragments) in sorted(self._calls.items())
        )


@attrs.frozen
class CitedText:
    """
    A text block of a reply with the citations Anthropic attached to it (each relayed
    as it came: the cited text and where in which document it stands).
    """

    text: str
    citations: tuple[Mapping[str, Any], ...] = ()


@attrs.frozen
class CitationDelta:
    """One streamed citation of the text block being streamed, relayed as it came."""

    citation: Mapping[str, Any]


@attrs.frozen
class ThinkingDelta:
    """
    One streamed piece of a thinking block: the block's index among the reply's thinking
    blocks, and what it adds (text, signature, or a redacted block's data, whole).
    """

    index: int
    text: str = ""
    signature: str = ""
    redacted: str | None = None


@attrs.define
class ThinkingAssembly:
    """
    The thinking blocks of one streamed reply, put together from their deltas as they arrive.
    """

    # Invariant: index -> [text fragments, signature fragments, redacted data or None].
    _blocks: dict[int, tuple[list[str], list[str], list[str]]] = attrs.field(factory=dict)

    def add(self, delta: ThinkingDelta) -> None:
        """Take one delta."""
        text, signature, redacted = self._blocks.setdefault(delta.index, ([], [], []))
        if delta.text:
            text.append(delta.text)
        if delta.signature:
            signature.append(delta.signature)
        if delta.redacted is not None:
            redacted.append(delta.redacted)

    def __bool__(self) -> bool:
        return bool(self._blocks)

    def blocks(self) -> tuple[Thinking, ...]:
        """The thinking blocks so far, in index order."""
        return tuple(
            Thinking(redacted="".join(redacted))
            if redacted
            else Thinking("".join(text), "".join(signature))
            for _, (text, signature, redacted) in sorted(self._blocks.items())
        )

    def produced(self) -> str:
        """The thinking text the deltas carried (what a partial bill counts as output)."""
        return "".join("".join(text) for _, (text, _, _) in sorted(self._blocks.items()))


@attrs.frozen
class Tool:
    """
    A tool the model may call: its name, what it does, and a JSON Schema of its arguments.

    ``strict`` asks OpenAI to hold the arguments to the schema exactly (other
    providers ignore it).
    """

    name: str = attrs.field(validator=lambda _, __, v: _name(v, "tools.name"))
    description: str | None = None
    parameters: Mapping[str, Any] = attrs.field(
        factory=lambda: {"type": "object", "properties": {}},
        validator=lambda _, __, v: _json_object(v, "tools.parameters"),
    )
    strict: bool | None = None


ToolChoiceMode = Literal["auto", "none", "required", "tool"]


@attrs.frozen
class ToolChoice:
    """
    How the model may use the tools: ``auto`` (it decides), ``none``, ``required`` (at
    least one call), or ``tool`` (a call of the tool ``name``).

    ``parallel`` False asks for at most one call (OpenAI's ``parallel_tool_calls``,
    Anthropic's ``disable_parallel_tool_use``); None leaves the provider's default.
    """

    mode: ToolChoiceMode = "auto"
    name: str | None = None
    parallel: bool | None = None

    def __attrs_post_init__(self) -> None:
        if self.mode not in ("auto", "none", "required", "tool"):
            raise ValidationError("tool_choice", "must be auto, none, required or a named tool")
        if (self.mode == "tool") != (self.name is not None):
            raise ValidationError("tool_choice", "a named tool choice names exactly one tool")

    @property
    def forces(self) -> bool:
        """Whether the model must call a tool (``required`` or a named tool)."""
        return self.mode in ("required", "tool")


@attrs.frozen
class ResponseFormat:
    """
    The reply's format: ``text``, any JSON object (``json_object``), or JSON that
    matches ``schema`` (``json_schema``; ``strict`` asks OpenAI to enforce it exactly).

    ``name`` and ``description`` are OpenAI's labels for the schema.
    """

    type: Literal["text", "json_object", "json_schema"] = "text"
    schema: Mapping[str, Any] | None = None
    name: str = "response"
    description: str | None = None
    strict: bool | None = None

    def __attrs_post_init__(self) -> None:
        if self.type not in ("text", "json_object", "json_schema"):
            raise ValidationError(
                "response_format.type", "must be text, json_object or json_schema"
            )
        if self.type == "json_schema":
            _json_object(self.schema, "response_format.json_schema.schema")
        elif self.schema is not None:
            raise ValidationError("response_format.json_schema", f"a {self.type} format has none")
        _name(self.name, "response_format.json_schema.name")


@attrs.frozen
class Passthrough:
    """
    The parameters of a request that Rhetor does not translate, and the API family they are words of.

    Relayed untouched to an upstream of the same family (an OpenAI client to an
    OpenAI-compatible upstream); across families only the family's harmless ones
    may be left behind (``rhetor.providers._families``), anything else keeps the
    request from models of other families.
    """

    family: str
    params: Mapping[str, Any] = attrs.field(factory=dict)
