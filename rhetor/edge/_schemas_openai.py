"""
The schemas of the OpenAI-compatible API: ``POST /v1/chat/completions``, its replies and errors.

Every parameter Rhetor translates is declared here (messages with tool calls,
tool results and images; ``tools``, ``tool_choice``, ``response_format``,
``stop``, ``top_p``, ``seed``, ``user``, ``metadata``,
``parallel_tool_calls``). Any other parameter is not refused by the schema:
it is relayed untouched to an OpenAI-compatible upstream, and refused with a
400 naming it (unless harmless) when the request can only go to another API
family (``docs/compat.md``). The schema checks the shapes; the translation
(``rhetor.providers._openai_shapes.fields_from_openai``) reads the values.
A message's content is a string or an array of parts, each a class tagged
by its ``type`` (:class:`OpenAITextPart`, :class:`OpenAIRefusalPart`,
:class:`OpenAIImagePart`, :class:`OpenAIFilePart`, :class:`OpenAIAudioPart`); a new kind of part is one more class in
:data:`OpenAIPart`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from rhetor.edge._schema import Body, PositiveInt
from rhetor.edge._schemas_native import Temperature

__all__ = [
    "ChatCompletionBody",
    "ChatCompletionReply",
    "OpenAIAudioPart",
    "OpenAIChoice",
    "OpenAICompletionDetails",
    "OpenAIErrorBody",
    "OpenAIErrorDetail",
    "OpenAIFile",
    "OpenAIFilePart",
    "OpenAIFunction",
    "OpenAIFunctionCall",
    "OpenAIImagePart",
    "OpenAIImageURL",
    "OpenAIInputAudio",
    "OpenAIJSONSchema",
    "OpenAIMessage",
    "OpenAIModel",
    "OpenAIModelList",
    "OpenAINamedFunction",
    "OpenAIPart",
    "OpenAIPromptDetails",
    "OpenAIRefusalPart",
    "OpenAIReplyMessage",
    "OpenAIResponseFormat",
    "OpenAIStreamOptions",
    "OpenAITextPart",
    "OpenAITool",
    "OpenAIToolCall",
    "OpenAIToolChoice",
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


class OpenAIImageURL(Body, frozen=True, kw_only=True):
    """
    An image: an ``https:`` URL or a ``data:<media type>;base64,...`` URL.
    """

    url: Annotated[str, Meta(min_length=1, examples=["data:image/png;base64,iVBORw0KGgo="])]
    detail: Literal["low", "high", "auto"] | None = None


class OpenAIImagePart(Body, tag_field="type", tag="image_url", frozen=True, kw_only=True):
    """
    An image in a user message (a vision model is needed).
    """

    image_url: OpenAIImageURL


class OpenAIFile(Body, frozen=True, kw_only=True):
    """
    A file: its data as a ``data:`` URL (``file_data``) or an uploaded file's id.
    """

    file_data: str | None = None
    file_id: str | None = None
    filename: str | None = None


class OpenAIFilePart(Body, tag_field="type", tag="file", frozen=True, kw_only=True):
    """
    A file (a PDF) in a user message, relayed to OpenAI-compatible models as sent.
    """

    file: OpenAIFile


class OpenAIInputAudio(Body, frozen=True, kw_only=True):
    """
    Audio as base64 data, and its format (``wav``, ``mp3``).
    """

    data: str
    format: str


class OpenAIAudioPart(Body, tag_field="type", tag="input_audio", frozen=True, kw_only=True):
    """
    Audio in a user message, relayed to OpenAI-compatible models as sent.
    """

    input_audio: OpenAIInputAudio


# Every kind of content part Rhetor reads; others are a 400 naming the part.
OpenAIPart = OpenAITextPart | OpenAIRefusalPart | OpenAIImagePart | OpenAIFilePart | OpenAIAudioPart


class OpenAIFunctionCall(Body, frozen=True, kw_only=True):
    """
    The function a tool call calls: its name and its arguments as JSON text.
    """

    name: str
    arguments: str | None = None


class OpenAIToolCall(Body, frozen=True, kw_only=True):
    """
    A tool call an assistant message made (sent back in the history).
    """

    id: str
    type: Literal["function"] | None = None
    function: OpenAIFunctionCall


class OpenAIMessage(Body, frozen=True, kw_only=True):
    """
    One message; ``developer`` is read as ``system``. An assistant message may
    carry ``tool_calls`` (its content then may be null); a ``tool`` message is
    a call's result, naming it by ``tool_call_id``.
    """

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[OpenAIPart] | None = None
    tool_calls: list[OpenAIToolCall] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        """The content's text, as one string (images left out)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(
            part.text
            if isinstance(part, OpenAITextPart)
            else part.refusal
            if isinstance(part, OpenAIRefusalPart)
            else ""
            for part in self.content
        )


class OpenAIFunction(Body, frozen=True, kw_only=True):
    """
    A function tool: its name, what it does, and the JSON Schema of its parameters.
    """

    name: Annotated[str, Meta(min_length=1, max_length=64, pattern="^[a-zA-Z0-9_-]+$")]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class OpenAITool(Body, frozen=True, kw_only=True):
    """
    A tool the model may call (function tools only).
    """

    type: Literal["function"]
    function: OpenAIFunction


class OpenAINamedFunction(Body, frozen=True, kw_only=True):
    """
    The function a forced tool choice names.
    """

    name: str


class OpenAIToolChoice(Body, frozen=True, kw_only=True):
    """
    A tool choice naming the one function the model must call.
    """

    type: Literal["function"]
    function: OpenAINamedFunction


class OpenAIJSONSchema(Body, frozen=True, kw_only=True):
    """
    A JSON schema the reply must hold to; ``strict`` asks the model to hold to it exactly.
    """

    name: str
    description: str | None = None
    schema: dict[str, Any] | None = None
    strict: bool | None = None


class OpenAIResponseFormat(Body, frozen=True, kw_only=True):
    """
    The reply's format: ``text``, ``json_object``, or ``json_schema`` with its ``json_schema``.
    """

    type: Literal["text", "json_object", "json_schema"]
    json_schema: OpenAIJSONSchema | None = None


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
    tools: list[OpenAITool] | None = None
    tool_choice: Literal["auto", "none", "required"] | OpenAIToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: OpenAIResponseFormat | None = None
    stop: str | list[str] | None = None
    top_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    seed: Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)] | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None


# -- replies and errors -----------------------------------------------------------------


class OpenAIReplyMessage(msgspec.Struct, frozen=True, kw_only=True):
    """
    The assistant's message in a completion: ``content`` is null when it only calls tools.
    """

    role: Literal["assistant"]
    content: str | None
    refusal: str | None
    tool_calls: list[OpenAIToolCall] | None = None


class OpenAIChoice(msgspec.Struct, frozen=True, kw_only=True):
    """
    The one choice of a completion.
    """

    index: int
    message: OpenAIReplyMessage
    logprobs: None
    finish_reason: str


class OpenAIPromptDetails(msgspec.Struct, frozen=True, kw_only=True):
    """
    Of the prompt tokens, those read from the provider's cache (0 when it does not say).
    """

    cached_tokens: int


class OpenAICompletionDetails(msgspec.Struct, frozen=True, kw_only=True):
    """
    Of the completion tokens, those spent reasoning (0 when the provider does not say).
    """

    reasoning_tokens: int


class OpenAIUsage(msgspec.Struct, frozen=True, kw_only=True):
    """
    The tokens a completion took.
    """

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: OpenAIPromptDetails | None = None
    completion_tokens_details: OpenAICompletionDetails | None = None


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
    request_id: (
        Annotated[str, Meta(description="The request's id, as in its X-Request-ID header.")] | None
    ) = None


class OpenAIErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    """
    An error under ``/v1`` for the OpenAI API: ``{"error": {message, type, param, code, request_id}}``.
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
