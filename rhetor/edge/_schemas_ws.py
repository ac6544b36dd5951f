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
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from rhetor.edge._schema import Body
from rhetor.edge._schemas_native import ChatBody, MessageBody

__all__ = [
    "PAYLOADS",
    "CancelPayload",
    "ChatRequestPayload",
    "ClientFrame",
    "EmptyPayload",
    "FrameId",
    "FrameType",
    "LLMRequestPayload",
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
