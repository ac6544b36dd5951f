"""
The schemas of the OpenAI-compatible API: ``POST /v1/chat/completions``, its replies and errors.

Only what Rhetor reads is declared; every other Chat Completions parameter
(``user``, ``seed``, ``top_p``, ``response_format``, ...) is accepted and
ignored, as tools built for OpenAI send many. A message's content is a
string or an array of parts, each a class tagged by its ``type``
(:class:`OpenAITextPart`, :class:`OpenAIRefusalPart`); a new kind of part is
one more class in :data:`OpenAIPart`.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from rhetor.edge._schema import Body, PositiveInt
from rhetor.edge._schemas_native import Temperature

__all__ = [
    "ChatCompletionBody",
    "ChatCompletionReply",
    "OpenAIChoice",
    "OpenAIErrorBody",
    "OpenAIErrorDetail",
    "OpenAIMessage",
    "OpenAIModel",
    "OpenAIModelList",
    "OpenAIPart",
    "OpenAIRefusalPart",
    "OpenAIReplyMessage",
    "OpenAIStreamOptions",
    "OpenAITextPart",
    "OpenAIUsage",
]


class OpenAITextPart(Body, tag_field="type", tag="text", frozen=True, kw_only=True):
    """
    A text part of a message's content.
    """

    text: str


class OpenAIRefusalPart(Body, tag_field="type", tag="refusal", frozen=True, kw_only=True):
    """
    An assistant's refusal, as a part of its content (read as text).
    """

    refusal: str


# Every kind of content part Rhetor reads; others (images, audio, files) are a 400 naming the part.
OpenAIPart = OpenAITextPart | OpenAIRefusalPart


class OpenAIMessage(Body, frozen=True, kw_only=True):
    """
    One message; ``developer`` is read as ``system``.
    """

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[OpenAIPart]

    def text(self) -> str:
        """The content as one text."""
        if isinstance(self.content, str):
            return self.content
        return "".join(
            part.text if isinstance(part, OpenAITextPart) else part.refusal for part in self.content
        )


class OpenAIStreamOptions(Body, frozen=True, kw_only=True):
    """
    Options of a streamed completion.
    """

    include_usage: (
        Annotated[bool, Meta(description="End the stream with a chunk carrying the usage.")] | None
    ) = None


class ChatCompletionBody(Body, frozen=True, kw_only=True):
    """
    A Chat Completions request. ``model`` is a model's name or an alias ``rhetor/<task>``.

    The headers ``X-Rhetor-Context`` and ``X-Rhetor-Component`` name the
    context and component.
    """

    model: Annotated[str, Meta(min_length=1, examples=["rhetor/chat"])]
    messages: Annotated[
        list[OpenAIMessage],
        Meta(min_length=1, examples=[[{"role": "user", "content": "Hello"}]]),
    ]
    n: Annotated[int, Meta(ge=1, le=1, description="Only one choice is supported.")] | None = None
    max_completion_tokens: PositiveInt | None = None
    max_tokens: (
        Annotated[PositiveInt, Meta(description="Read when max_completion_tokens is absent.")]
        | None
    ) = None
    temperature: Temperature | None = None
    stream: bool | None = None
    stream_options: OpenAIStreamOptions | None = None


# -- replies and errors -----------------------------------------------------------------


class OpenAIReplyMessage(msgspec.Struct, frozen=True, kw_only=True):
    """
    The assistant's message in a completion.
    """

    role: Literal["assistant"]
    content: str | None
    refusal: str | None


class OpenAIChoice(msgspec.Struct, frozen=True, kw_only=True):
    """
    The one choice of a completion.
    """

    index: int
    message: OpenAIReplyMessage
    logprobs: None
    finish_reason: str


class OpenAIUsage(msgspec.Struct, frozen=True, kw_only=True):
    """
    The tokens a completion took.
    """

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletionReply(msgspec.Struct, frozen=True, kw_only=True):
    """
    A ``chat.completion``: the reply, whole.
    """

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[OpenAIChoice]
    usage: OpenAIUsage
    system_fingerprint: str | None


class OpenAIErrorDetail(msgspec.Struct, frozen=True, kw_only=True):
    """
    What went wrong, as OpenAI says it; ``param`` names the field at fault.
    """

    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    """
    An error under ``/v1`` for the OpenAI API: ``{"error": {message, type, param, code}}``.
    """

    error: OpenAIErrorDetail


class OpenAIModel(msgspec.Struct, frozen=True, kw_only=True):
    """
    A model, in OpenAI's list format.
    """

    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class OpenAIModelList(msgspec.Struct, frozen=True, kw_only=True):
    """
    Every routable model, then the ``rhetor/<task>`` aliases.
    """

    object: Literal["list"]
    data: list[OpenAIModel]
