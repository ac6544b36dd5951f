"""
The schemas of the Server-Sent Events each stream sends, one class per kind of event.

A streamed reply is ``text/event-stream``: Rhetor's own (``/stream``, and
``/message`` or ``/chat`` with ``streaming``) sends :data:`NATIVE_EVENTS`, the
OpenAI Chat Completions stream :data:`OPENAI_EVENTS`, the Anthropic Messages
stream :data:`ANTHROPIC_EVENTS` and the OpenAI Responses stream
:data:`RESPONSES_EVENTS`. Each route declares its tuple in its
:class:`~rhetor.edge._schema.Operation`, and ``/openapi.json`` publishes every
kind as the ``contentSchema`` of the event's ``data`` (with its ``event:``
name where the API names its events). The writers are
``rhetor.edge._messages.chunk_event`` and ``native_error_event``,
``rhetor.providers._openai_replies.OpenAIChunks``,
``rhetor.providers._anthropic_replies.AnthropicEvents`` and
``rhetor.providers._responses_replies.ResponsesEvents``;
tests/test_event_schemas.py validates what they send on a live stream against
the served document, so that the two cannot drift apart.

The event classes describe what the server writes; none is ever decoded.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from rhetor.edge._schema import StreamEvent
from rhetor.edge._schemas_anthropic import (
    AnthropicErrorBody,
    AnthropicReplyBlock,
    AnthropicUsage,
    MessagesReply,
)
from rhetor.edge._schemas_native import ErrorDetail, ReplyBody
from rhetor.edge._schemas_openai import OpenAIErrorBody, OpenAIUsage
from rhetor.edge._schemas_responses import ResponsesOutputItem, ResponsesOutputText, ResponsesReply

__all__ = [
    "ANTHROPIC_EVENTS",
    "NATIVE_EVENTS",
    "OPENAI_EVENTS",
    "RESPONSES_EVENTS",
    "AnthropicCitationsDelta",
    "AnthropicContentBlockDelta",
    "AnthropicContentBlockStart",
    "AnthropicContentBlockStop",
    "AnthropicInputJSONDelta",
    "AnthropicMessageDelta",
    "AnthropicMessageDeltaBody",
    "AnthropicMessageStart",
    "AnthropicMessageStop",
    "AnthropicSignatureDelta",
    "AnthropicTextDelta",
    "AnthropicThinkingDelta",
    "ChatCompletionChunk",
    "OpenAIChunkChoice",
    "OpenAIChunkDelta",
    "OpenAIChunkFunction",
    "OpenAIChunkToolCall",
    "ResponsesContentPartEvent",
    "ResponsesErrorEvent",
    "ResponsesFunctionArgumentsDelta",
    "ResponsesFunctionArgumentsDone",
    "ResponsesOutputItemEvent",
    "ResponsesStateEvent",
    "ResponsesTextDelta",
    "ResponsesTextDone",
    "StreamChunk",
    "StreamDone",
    "StreamError",
    "StreamToolCallDelta",
]

# -- Rhetor's own stream ---------------------------------------------------------------------


class StreamToolCallDelta(msgspec.Struct, frozen=True, kw_only=True):
    """
    A piece of a tool call: its index, with the id and name on the first piece, else argument text.
    """

    index: int
    id: str | None
    name: str | None
    arguments: str


class StreamChunk(msgspec.Struct, frozen=True, kw_only=True):
    """
    A ``/stream`` event while the reply is written: the next text (and pieces of tool calls).
    """

    chunk: str
    context: str | None
    model: str
    provider: str
    done: Literal[False]
    tool_calls: list[StreamToolCallDelta] = []


class StreamDone(ReplyBody, frozen=True, kw_only=True):
    """
    A ``/stream``'s last event: the whole reply, as ``POST /message`` answers it.
    """

    chunk: Literal[""]
    done: Literal[True]


class StreamError(msgspec.Struct, frozen=True, kw_only=True):
    """
    A ``/stream``'s last event when it failed after its first: the error, in Rhetor's shape.
    """

    chunk: Literal[""]
    context: str | None
    done: Literal[True]
    error: ErrorDetail


NATIVE_EVENTS: tuple[StreamEvent, ...] = (
    StreamEvent(StreamChunk),
    StreamEvent(StreamDone),
    StreamEvent(StreamError),
)


# -- OpenAI Chat Completions -----------------------------------------------------------------


class OpenAIChunkFunction(msgspec.Struct, frozen=True, kw_only=True):
    """
    The function of a tool-call delta: its name on the first piece, then argument text.
    """

    name: str | None = None
    arguments: str


class OpenAIChunkToolCall(msgspec.Struct, frozen=True, kw_only=True):
    """
    A tool-call delta: its index, with ``id`` and ``type`` on the first piece.
    """

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: OpenAIChunkFunction


class OpenAIChunkDelta(msgspec.Struct, frozen=True, kw_only=True):
    """
    What one chunk adds: the role (first chunk), text, or tool-call deltas; empty on the last.
    """

    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[OpenAIChunkToolCall] | None = None


class OpenAIChunkChoice(msgspec.Struct, frozen=True, kw_only=True):
    """
    The one choice of a chunk; ``finish_reason`` is set on the last.
    """

    index: int
    delta: OpenAIChunkDelta
    logprobs: None
    finish_reason: str | None


class ChatCompletionChunk(msgspec.Struct, frozen=True, kw_only=True):
    """
    A ``chat.completion.chunk``; with ``stream_options.include_usage``, the last has no choices and the usage.
    """

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    system_fingerprint: str | None
    choices: list[OpenAIChunkChoice]
    usage: OpenAIUsage | None = None


OPENAI_EVENTS: tuple[StreamEvent, ...] = (
    StreamEvent(ChatCompletionChunk),
    StreamEvent(OpenAIErrorBody),
    StreamEvent(None, literal="[DONE]"),
)


# -- Anthropic Messages ----------------------------------------------------------------------


class AnthropicMessageStart(
    msgspec.Struct, tag_field="type", tag="message_start", frozen=True, kw_only=True
):
    """
    ``message_start``: the message with no content yet.
    """

    message: MessagesReply


class AnthropicContentBlockStart(
    msgspec.Struct, tag_field="type", tag="content_block_start", frozen=True, kw_only=True
):
    """
    ``content_block_start``: a text block, or a ``tool_use`` block with its id and name.
    """

    index: int
    content_block: AnthropicReplyBlock


class AnthropicTextDelta(
    msgspec.Struct, tag_field="type", tag="text_delta", frozen=True, kw_only=True
):
    """
    The next text of a text block.
    """

    text: str


class AnthropicInputJSONDelta(
    msgspec.Struct, tag_field="type", tag="input_json_delta", frozen=True, kw_only=True
):
    """
    The next piece of a tool call's input, as JSON text.
    """

    partial_json: str


class AnthropicCitationsDelta(
    msgspec.Struct, tag_field="type", tag="citations_delta", frozen=True, kw_only=True
):
    """
    A citation of the text block being streamed (as Anthropic sent it).
    """

    citation: dict[str, Any]


class AnthropicThinkingDelta(
    msgspec.Struct, tag_field="type", tag="thinking_delta", frozen=True, kw_only=True
):
    """
    The next text of a thinking block.
    """

    thinking: str


class AnthropicSignatureDelta(
    msgspec.Struct, tag_field="type", tag="signature_delta", frozen=True, kw_only=True
):
    """
    A thinking block's signature, sent back with the block in later turns.
    """

    signature: str


class AnthropicContentBlockDelta(
    msgspec.Struct, tag_field="type", tag="content_block_delta", frozen=True, kw_only=True
):
    """
    ``content_block_delta``: the open block's next text, input, thinking or signature.
    """

    index: int
    delta: (
        AnthropicTextDelta
        | AnthropicInputJSONDelta
        | AnthropicThinkingDelta
        | AnthropicSignatureDelta
        | AnthropicCitationsDelta
    )


class AnthropicContentBlockStop(
    msgspec.Struct, tag_field="type", tag="content_block_stop", frozen=True, kw_only=True
):
    """
    ``content_block_stop``: the block at ``index`` is whole.
    """

    index: int


class AnthropicMessageDeltaBody(msgspec.Struct, frozen=True, kw_only=True):
    """
    Why the message stopped.
    """

    stop_reason: str | None
    stop_sequence: str | None


class AnthropicMessageDelta(
    msgspec.Struct, tag_field="type", tag="message_delta", frozen=True, kw_only=True
):
    """
    ``message_delta``: the stop reason and the final token counts.
    """

    delta: AnthropicMessageDeltaBody
    usage: AnthropicUsage


class AnthropicMessageStop(
    msgspec.Struct, tag_field="type", tag="message_stop", frozen=True, kw_only=True
):
    """
    ``message_stop``: the stream's last event.
    """


ANTHROPIC_EVENTS: tuple[StreamEvent, ...] = (
    StreamEvent(AnthropicMessageStart, named=True),
    StreamEvent(AnthropicContentBlockStart, named=True),
    StreamEvent(AnthropicContentBlockDelta, named=True),
    StreamEvent(AnthropicContentBlockStop, named=True),
    StreamEvent(AnthropicMessageDelta, named=True),
    StreamEvent(AnthropicMessageStop, named=True),
    StreamEvent(AnthropicErrorBody, named=True),
)


# -- OpenAI Responses ------------------------------------------------------------------------

_Sequence = Annotated[int, Meta(ge=0, description="Counts every event of the stream.")]


class ResponsesStateEvent(msgspec.Struct, frozen=True, kw_only=True):
    """
    The response as it stands: created and in progress first, completed (or incomplete) last.
    """

    type: Literal[
        "response.created", "response.in_progress", "response.completed", "response.incomplete"
    ]
    sequence_number: _Sequence
    response: ResponsesReply


class ResponsesOutputItemEvent(msgspec.Struct, frozen=True, kw_only=True):
    """
    An output item (message or function call) opened, or done.
    """

    type: Literal["response.output_item.added", "response.output_item.done"]
    sequence_number: _Sequence
    output_index: int
    item: ResponsesOutputItem


class ResponsesContentPartEvent(msgspec.Struct, frozen=True, kw_only=True):
    """
    A message's text part opened, or done.
    """

    type: Literal["response.content_part.added", "response.content_part.done"]
    sequence_number: _Sequence
    item_id: str
    output_index: int
    content_index: int
    part: ResponsesOutputText


class ResponsesTextDelta(msgspec.Struct, frozen=True, kw_only=True):
    """
    The next text of a message.
    """

    type: Literal["response.output_text.delta"]
    sequence_number: _Sequence
    item_id: str
    output_index: int
    content_index: int
    delta: str
    logprobs: list[Any]


class ResponsesTextDone(msgspec.Struct, frozen=True, kw_only=True):
    """
    A message's whole text.
    """

    type: Literal["response.output_text.done"]
    sequence_number: _Sequence
    item_id: str
    output_index: int
    content_index: int
    text: str
    logprobs: list[Any]


class ResponsesFunctionArgumentsDelta(msgspec.Struct, frozen=True, kw_only=True):
    """
    The next piece of a function call's arguments.
    """

    type: Literal["response.function_call_arguments.delta"]
    sequence_number: _Sequence
    item_id: str
    output_index: int
    delta: str


class ResponsesFunctionArgumentsDone(msgspec.Struct, frozen=True, kw_only=True):
    """
    A function call's whole arguments, as JSON text.
    """

    type: Literal["response.function_call_arguments.done"]
    sequence_number: _Sequence
    item_id: str
    output_index: int
    name: str
    arguments: str


class ResponsesErrorEvent(msgspec.Struct, frozen=True, kw_only=True):
    """
    ``error``: the stream failed after its first event; OpenAI's error fields.
    """

    type: Literal["error"]
    sequence_number: _Sequence
    code: str | None
    message: str
    param: str | None


RESPONSES_EVENTS: tuple[StreamEvent, ...] = (
    StreamEvent(ResponsesStateEvent, named=True),
    StreamEvent(ResponsesOutputItemEvent, named=True),
    StreamEvent(ResponsesContentPartEvent, named=True),
    StreamEvent(ResponsesTextDelta, named=True),
    StreamEvent(ResponsesTextDone, named=True),
    StreamEvent(ResponsesFunctionArgumentsDelta, named=True),
    StreamEvent(ResponsesFunctionArgumentsDone, named=True),
    StreamEvent(ResponsesErrorEvent, named=True),
)
