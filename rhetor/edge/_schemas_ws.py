"""
The schemas of the WebSocket frames (``/ws``): the envelope both ways and each client payload.

Every frame is :class:`ClientFrame` (client to server) or :class:`ServerFrame`
(server to client). A client frame's ``payload`` is checked against its
type's schema (:data:`PAYLOADS`) once the envelope is read, so that an
error can echo the frame's ``id``. An LLM payload is a ``POST /message`` or
``/chat`` body, except that its context is ``context`` (``context_id`` is
accepted too) and it streams by default; its errors name its fields as the
HTTP body's do (``message``, ``routing_parameters.max_cost``). The protocol
is ``rhetor.edge._session``; see ``docs/websocket.md``.

The first Rhetor's socket (``/ws/rhetor/streaming``) has its own frames:
:class:`LegacyRequest` from the client, and :class:`LegacyChunk`,
:class:`LegacyComplete` and :class:`LegacyError` back (:data:`LEGACY_FRAMES`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from rhetor.edge._schema import Body, PositiveInt
from rhetor.edge._schemas_content import BlockBody
from rhetor.edge._schemas_native import ChatBody, MessageBody, ReplyBody, Temperature

__all__ = [
    "LEGACY_FRAMES",
    "PAYLOADS",
    "CancelPayload",
    "ChatRequestPayload",
    "ClientFrame",
    "EmptyPayload",
    "FrameId",
    "FrameType",
    "LLMRequestPayload",
    "LegacyChunk",
    "LegacyComplete",
    "LegacyError",
    "LegacyRequest",
    "ServerFrame",
]

FrameType = Literal["REGISTER", "LLM_REQUEST", "CHAT_REQUEST", "STATUS", "CANCEL"]
FrameId = Annotated[
    str | int, Meta(description="Names a request; every answer about it echoes it.")
]


class ClientFrame(Body, frozen=True, kw_only=True):
    """
    A frame from the client; the ``payload`` depends on ``type`` (see the payload schemas).
    """

    type: FrameType
    id: FrameId | None = None
    source: (
        Annotated[str, Meta(description="The client's name: the target of its answers.")] | None
    ) = None
    target: str | None = None
    timestamp: str | None = None
    payload: dict[str, Any] | None = None


class EmptyPayload(Body, frozen=True, kw_only=True):
    """
    The payload of ``REGISTER`` and ``STATUS``: nothing is read from it.
    """


class LLMRequestPayload(MessageBody, frozen=True, kw_only=True):
    """
    ``LLM_REQUEST``: one message; ``streaming`` defaults to true.
    """


class ChatRequestPayload(ChatBody, frozen=True, kw_only=True):
    """
    ``CHAT_REQUEST``: a conversation; ``streaming`` defaults to true.
    """


class CancelPayload(Body, frozen=True, kw_only=True):
    """
    ``CANCEL``: stop an earlier request on this socket.
    """

    id: Annotated[str | int, Meta(description="The id of the request to cancel.")]


# The schema of each client frame type's payload.
PAYLOADS: Mapping[str, type[Body]] = {
    "REGISTER": EmptyPayload,
    "LLM_REQUEST": LLMRequestPayload,
    "CHAT_REQUEST": ChatRequestPayload,
    "STATUS": EmptyPayload,
    "CANCEL": CancelPayload,
}


class ServerFrame(msgspec.Struct, frozen=True, kw_only=True):
    """
    A frame from the server about one request: ``UPDATE`` (typing, chunks), ``RESPONSE`` or ``ERROR``.

    ``RESPONSE`` carries the reply (the body ``POST /message`` answers), or
    ``REGISTER``'s, ``STATUS``' or ``CANCEL``'s answer; ``ERROR`` carries
    ``{type, message, field?, request_id?}``. A frame about a request (an LLM
    request, ``STATUS``, a refused frame) carries that request's ``request_id``.
    """

    type: Literal["UPDATE", "RESPONSE", "ERROR"]
    id: FrameId | None
    source: Literal["rhetor"]
    target: str | None
    timestamp: str
    payload: dict[str, Any]
    request_id: (
        Annotated[str, Meta(description="The id of the request this frame is about.")] | None
    ) = None


# -- the first Rhetor's streaming socket (/ws/rhetor/streaming) ------------------------------


class LegacyRequest(Body, frozen=True, kw_only=True):
    """
    A request on ``/ws/rhetor/streaming``: one prompt, streamed unless ``stream`` is false.

    A frame with a ``type`` is a ``/ws`` frame (:class:`ClientFrame`) instead.
    """

    prompt: Annotated[
        Annotated[str, Meta(min_length=1)] | list[BlockBody],
        Meta(description="Text, or blocks of one user turn (as POST /message's message)."),
    ]
    stream: bool = True
    model: str | None = None
    provider: str | None = None
    temperature: Temperature | None = None
    max_tokens: PositiveInt | None = None
    task_type: str | None = None
    context: str | None = None
    component: str | None = None
    system_prompt: str | None = None


class LegacyChunk(msgspec.Struct, frozen=True, kw_only=True):
    """
    ``content_chunk``: the next piece of the reply's text.
    """

    type: Literal["content_chunk"]
    text: str
    request_id: (
        Annotated[str, Meta(description="The id of the request this frame is about.")] | None
    ) = None


class LegacyComplete(ReplyBody, frozen=True, kw_only=True):
    """
    ``content_complete``: the whole reply (``text`` is its ``message``), as ``POST /message`` answers.
    """

    type: Literal["content_complete"]
    text: str


class LegacyError(msgspec.Struct, frozen=True, kw_only=True):
    """
    ``error``: the request failed or was refused; ``error_type`` is the error's ``type``.
    """

    type: Literal["error"]
    error: Annotated[str, Meta(description="The message.")]
    error_type: str | None
    field: Annotated[str, Meta(description="The field at fault.")] | None = None
    request_id: (
        Annotated[str, Meta(description="The id of the request this frame is about.")] | None
    ) = None


# The legacy socket's frames: the client's request, then what the server sends back.
LEGACY_FRAMES: tuple[type[msgspec.Struct], ...] = (
    LegacyRequest,
    LegacyChunk,
    LegacyComplete,
    LegacyError,
)
