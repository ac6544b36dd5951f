"""
The Anthropic half of ``/v1``: Messages, whole or streamed, in Anthropic's wire format.

``POST /v1/messages`` reads a Messages body (its schema is
``rhetor.edge._schemas_anthropic.MessagesBody``, turned into a request by
:func:`anthropic_request`) and
answers a ``message`` object, or with ``stream`` the ``message_start`` ...
``message_stop`` events; ``POST /v1/messages/count_tokens`` answers a
request's ``input_tokens``. :func:`anthropic_error` is the one place a
:class:`RhetorError` becomes Anthropic's error body; :func:`anthropic_model`
is a model in Anthropic's list format, for ``/v1/models`` when the request
carries ``anthropic-version`` (``rhetor.edge._compat_v1``).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from quart import Blueprint, Response, request

from rhetor import observe
from rhetor._errors import BadRequest, RhetorError
from rhetor.edge._compat import (
    CompatRequest,
    ErrorReply,
    compat_operation,
    reply_headers,
    rhetor_headers,
    route_model,
    status_and_headers,
)
from rhetor.edge._http import json_response
from rhetor.edge._schemas_anthropic import (
    CountTokensBody,
    CountTokensReply,
    MessagesBody,
    MessagesReply,
)
from rhetor.edge._schemas_events import ANTHROPIC_EVENTS
from rhetor.edge._sse import EventsOf, event, sse_response
from rhetor.providers._anthropic_replies import AnthropicEvents, message_to_anthropic
from rhetor.providers._anthropic_shapes import fields_from_anthropic

if TYPE_CHECKING:
    from rhetor._types import Chunk, Reply
    from rhetor.runtime import Runtime

__all__ = [
    "anthropic_blueprint",
    "anthropic_error",
    "anthropic_error_event",
    "anthropic_events",
    "anthropic_message",
    "anthropic_model",
    "anthropic_request",
]

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


# -- requests ---------------------------------------------------------------------


def anthropic_request(
    body: MessagesBody,
    raw: Mapping[str, Any],
    *,
    context_id: str | None = None,
    component: str | None = None,
) -> CompatRequest:
    """
    A checked Messages body as ``Runtime.request`` arguments; context and component come from headers.

    ``raw`` is the body as sent: its conversation, system prompt, tools, tool
    choice, ``output_config.format``, stop sequences, ``top_p`` and
    ``metadata.user_id`` are translated by ``fields_from_anthropic``, and every
    parameter Rhetor does not translate is kept as an Anthropic passthrough.

    Error handling: :class:`NotFound` for an unknown ``rhetor/`` alias;
    :class:`ValidationError` naming a field the translation cannot read.
    """
    kwargs = {
        "context_id": context_id,
        "component": component,
        **route_model(body.model),
        **fields_from_anthropic(raw),
        "temperature": body.temperature,
        "max_tokens": int(body.max_tokens),
    }
    return CompatRequest(kwargs, bool(body.stream))


# -- errors -----------------------------------------------------------------------


def anthropic_error(error: RhetorError) -> ErrorReply:
    """
    ``error`` as Anthropic's ``{"type": "error", "error": {type, message}, "request_id"}``.

    A budget refusal keeps Rhetor's 402, Anthropic's ``billing_error``, which
    the SDK raises as ``PaymentRequiredError`` and does not retry.
    """
    status, headers = status_and_headers(error)
    if status == 422 or isinstance(error, BadRequest):
        status = 400
    kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    body: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": error.message}}
    request_id = observe.request_id()
    if request_id is not None:
        # Where Anthropic's own error bodies carry theirs.
        body["request_id"] = request_id
    return ErrorReply(status, body, headers)


def anthropic_error_event(error: RhetorError) -> bytes:
    """The in-stream error event: Anthropic's error body as an ``error`` event."""
    return event("error", anthropic_error(error).body)


# -- replies ----------------------------------------------------------------------


def anthropic_message(reply: Reply) -> dict[str, Any]:
    """A whole reply as an Anthropic ``message``: text, then a ``tool_use`` block per call."""
    return message_to_anthropic(reply)


def anthropic_events(request_id: str) -> EventsOf:
    """
    The Messages stream: ``message_start``; a ``text`` block's start, its
    ``text_delta`` events and its stop; for each tool call a
    ``content_block_start`` of type ``tool_use`` (id, name) then its arguments
    as ``input_json_delta`` events; then ``message_delta`` (stop reason,
    usage) and ``message_stop``.

    Input tokens are known only at the end, so ``message_start`` says 0 and
    ``message_delta`` carries the final counts (the SDK takes them from there).
    """

    async def events(first: Chunk, rest: AsyncIterator[Chunk]) -> AsyncGenerator[bytes, None]:
        writer = AnthropicEvents(f"msg_{request_id}")
        for name, body in writer.first(first.model):
            yield event(name, body)
        current: Chunk | None = first
        while current is not None:
            for name, body in writer.of(current):
                yield event(name, body)
            if current.done and current.reply is not None:
                for name, body in writer.last(current.reply):
                    yield event(name, body)
                return
            current = await anext(rest, None)

    return events


def anthropic_model(model: str) -> dict[str, Any]:
    """A model in Anthropic's ``/v1/models`` format."""
    return {
        "type": "model",
        "id": model,
        "display_name": model,
        "created_at": "1970-01-01T00:00:00Z",
    }


# -- the blueprint ----------------------------------------------------------------


def anthropic_blueprint(runtime: Runtime) -> Blueprint:
    """
    The ``/messages`` route over ``runtime``, mounted under ``/v1``.

    Its errors are answered by the ``/v1`` blueprint (``rhetor.edge._compat_v1``).
    """
    bp = Blueprint("anthropic", __name__)
    rt = runtime

    @bp.post("/messages")
    @compat_operation(body=MessagesBody, reply=MessagesReply, events=ANTHROPIC_EVENTS)
    async def messages(body: MessagesBody, raw: Mapping[str, Any]) -> Response:
        """
        Anthropic Messages: a ``message``, or with ``stream`` its events from ``message_start`` to ``message_stop``.

        ``model`` is a model's name or an alias ``rhetor/<task>``; the headers
        ``X-Rhetor-Context`` and ``X-Rhetor-Component`` name the context and
        component. Rhetor's headers on the reply are those of
        ``/v1/chat/completions``.
        """
        parsed = anthropic_request(body, raw, **rhetor_headers(request.headers))
        llm_request = rt.request(**parsed.kwargs)
        if parsed.stream:
            return await sse_response(
                rt.send_stream(llm_request),
                anthropic_events(llm_request.request_id),
                anthropic_error_event,
                name=llm_request.request_id,
            )
        reply = await rt.send(llm_request)
        return json_response(anthropic_message(reply), headers=reply_headers(reply))

    @bp.post("/messages/count_tokens")
    @compat_operation(body=CountTokensBody, reply=CountTokensReply, streams=False)
    async def count_tokens(body: CountTokensBody, raw: Mapping[str, Any]) -> Response:
        """
        Anthropic's token count: ``{"input_tokens"}`` of the request as Rhetor would send it.

        The count covers what the first planned model would be sent: the
        context's window (``X-Rhetor-Context``), the component's system prompt,
        the tools. Anthropic's models are counted by Anthropic (free of
        charge); others, or Anthropic failing, by Rhetor's own estimate.
        ``X-Rhetor-Counted-By`` says which (a provider, or ``estimate``), with
        ``X-Rhetor-Provider`` and ``X-Rhetor-Model``. Nothing is reserved or billed.
        """
        kwargs = {
            **rhetor_headers(request.headers),
            **route_model(body.model),
            **fields_from_anthropic(raw),
        }
        counted = await rt.count_tokens(rt.request(**kwargs))
        headers = {
            "X-Rhetor-Counted-By": counted["counted_by"],
            "X-Rhetor-Provider": counted["provider"],
            "X-Rhetor-Model": counted["model"],
        }
        return json_response({"input_tokens": counted["input_tokens"]}, headers=headers)

    return bp
