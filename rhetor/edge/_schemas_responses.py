"""
The schemas of the OpenAI Responses API: ``POST /v1/responses``, its reply and its output items.

The body declares the fields Rhetor reads. ``input`` (a string, or an array
of input items), ``tools``, ``tool_choice`` and ``text`` are read item by item
by ``rhetor.edge._compat_responses``, which names the field at fault in its
400 (a built-in tool such as ``web_search``, an ``input_file`` part, a
``reasoning`` item); the parameters Rhetor cannot honour
(``previous_response_id``, ``conversation``, ``background``, ...) are refused
there too, by name, and those on its list of harmless ones are accepted and
ignored (``docs/compat.md``, "The Responses API").
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from rhetor.edge._schema import Body, PositiveInt
from rhetor.edge._schemas_native import Temperature

__all__ = [
    "ResponsesBody",
    "ResponsesFunctionCall",
    "ResponsesInputTokens",
    "ResponsesMessage",
    "ResponsesOutputItem",
    "ResponsesOutputText",
    "ResponsesOutputTokens",
    "ResponsesReply",
    "ResponsesUsage",
]

TopP = Annotated[float, Meta(ge=0, le=1, description="Nucleus sampling, 0 to 1.")]


class ResponsesBody(Body, frozen=True, kw_only=True):
    """
    A Responses API request. ``model`` is a model's name or an alias ``rhetor/<task>``.

    ``input`` is a string (one user message) or input items: messages
    (``{role, content}``, ``type`` ``message`` optional; content a string or
    ``input_text``, ``input_image``, ``output_text`` and ``refusal`` parts),
    ``function_call`` and ``function_call_output``. ``tools`` are function
    tools; ``text.format`` is ``text``, ``json_object`` or ``json_schema``.
    The headers ``X-Rhetor-Context`` and ``X-Rhetor-Component`` name the
    context and component.
    """

    model: Annotated[str, Meta(min_length=1, examples=["rhetor/chat"])]
    input: Annotated[
        str | list[dict[str, Any]],
        Meta(examples=["Hello", [{"role": "user", "content": "Hello"}]]),
    ]
    instructions: (
        Annotated[str, Meta(description="A system message put before the input.")] | None
    ) = None
    tools: (
        Annotated[
            list[dict[str, Any]],
            Meta(description="Function tools: {type: function, name, description, parameters}."),
        ]
        | None
    ) = None
    tool_choice: (
        Annotated[
            str | dict[str, Any],
            Meta(description="auto, none, required, or {type: function, name}."),
        ]
        | None
    ) = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: PositiveInt | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    text: (
        Annotated[
            dict[str, Any],
            Meta(description="{format: {type: text|json_object|json_schema, ...}}."),
        ]
        | None
    ) = None
    stream: bool | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None


# -- the reply ------------------------------------------------------------------------


class ResponsesOutputText(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="output_text"
):
    """
    The text of an assistant message.
    """

    text: str
    annotations: list[Any]
    logprobs: list[Any]


class ResponsesMessage(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="message"):
    """
    An output item: the assistant's message.
    """

    id: str
    role: Literal["assistant"]
    status: Literal["in_progress", "completed", "incomplete"]
    content: list[ResponsesOutputText]


class ResponsesFunctionCall(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="function_call"
):
    """
    An output item: a call of a function tool, its arguments as JSON text.
    """

    id: str
    call_id: str
    name: str
    arguments: str
    status: Literal["in_progress", "completed", "incomplete"]


ResponsesOutputItem = ResponsesMessage | ResponsesFunctionCall


class ResponsesInputTokens(msgspec.Struct, frozen=True, kw_only=True):
    """
    Of the input, the tokens read from the upstream's prompt cache.
    """

    cached_tokens: int
    cache_write_tokens: int


class ResponsesOutputTokens(msgspec.Struct, frozen=True, kw_only=True):
    """
    Of the output, the tokens spent reasoning.
    """

    reasoning_tokens: int


class ResponsesUsage(msgspec.Struct, frozen=True, kw_only=True):
    """
    The tokens a response took.
    """

    input_tokens: int
    input_tokens_details: ResponsesInputTokens
    output_tokens: int
    output_tokens_details: ResponsesOutputTokens
    total_tokens: int


class ResponsesReply(msgspec.Struct, frozen=True, kw_only=True):
    """
    A ``response`` object: the reply, whole (also in the stream's ``response.*`` events).
    """

    id: str
    object: Literal["response"]
    created_at: int
    status: Literal["in_progress", "completed", "incomplete", "failed"]
    error: dict[str, Any] | None
    incomplete_details: dict[str, Any] | None
    instructions: str | None
    max_output_tokens: int | None
    metadata: dict[str, str]
    model: str
    output: list[ResponsesOutputItem]
    parallel_tool_calls: bool
    previous_response_id: None
    store: bool
    temperature: float | None
    top_p: float | None
    text: dict[str, Any]
    tool_choice: str | dict[str, Any]
    tools: list[dict[str, Any]]
    truncation: Literal["disabled"]
    usage: ResponsesUsage | None
    user: str | None
