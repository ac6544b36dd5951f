"""
The OpenAI Responses API: ``POST /v1/responses``, whole or streamed, in OpenAI's wire format.

The API the current openai SDK (``client.responses.create``) and the agent
frameworks built on it default to. Like ``/v1/chat/completions`` it only
translates: a Responses body becomes one :class:`~rhetor.LLMRequest` (routing,
budget, ledger and context as for every endpoint), and the reply becomes a
``response`` object, or with ``stream`` the ``response.*`` events.

Reading (:func:`responses_request`):

- ``input`` is a string (one user turn) or input items: messages (roles
  ``system``/``developer``, ``user``, ``assistant``), ``function_call`` items
  (tool calls of an assistant turn) and ``function_call_output`` items (tool
  results of a user turn); ``instructions`` is a system turn before them;
- ``tools`` are function tools, ``tool_choice`` and ``parallel_tool_calls`` how
  they may be used, ``text.format`` the reply's format; ``max_output_tokens``,
  ``temperature``, ``top_p``, ``metadata`` and ``user`` map one to one;
- nothing is stored for later retrieval: ``previous_response_id``,
  ``conversation``, ``background`` and ``prompt`` are refused by name (a
  context, ``X-Rhetor-Context``, keeps the history instead), as are built-in
  tools, ``reasoning`` and ``include``; :data:`HARMLESS` ones are accepted and
  ignored;
- any other parameter is an OpenAI passthrough, as for Chat Completions:
  relayed untouched to an OpenAI-compatible upstream, and keeping the request
  from other families' models (a 400 naming it when none is left).

Writing: a ``message`` item with one ``output_text`` part (when the reply has
text, or no tool call), then one ``function_call`` item per tool call. A reply
cut at its token limit or by a content filter is ``incomplete``, with the
reason in ``incomplete_details``. Streamed, the events are those the SDK's types
name: ``response.created``, ``response.in_progress``, per item
``response.output_item.added``, its content part or argument deltas, the
matching ``.done`` events and ``response.output_item.done``, then
``response.completed`` (or ``response.incomplete``); a failure after the first
event is an ``error`` event, the stream's last.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import attrs
from quart import Blueprint, Response, request

from rhetor._content import Passthrough
from rhetor._errors import RhetorError, ValidationError
from rhetor._types import ChatMessage
from rhetor.edge._compat import reply_headers, rhetor_headers, route_model
from rhetor.edge._http import json_response, read_body
from rhetor.edge._schema import OPERATION_ATTRIBUTE, Operation, convert
from rhetor.edge._schemas_events import RESPONSES_EVENTS
from rhetor.edge._schemas_responses import ResponsesBody, ResponsesReply
from rhetor.edge._sse import event, sse_response
from rhetor.providers._families import OPENAI
from rhetor.providers._responses_replies import (
    ResponsesEvents,
    format_echo,
    tool_echo,
    whole_response,
)
from rhetor.providers._responses_shapes import (
    format_from_responses,
    input_items,
    tool_choice_from_responses,
    tools_from_responses,
)

if TYPE_CHECKING:
    from rhetor._types import Chunk
    from rhetor.runtime import Runtime

__all__ = [
    "HARMLESS",
    "REFUSED",
    "ResponsesRequest",
    "ResponsesStream",
    "responses_blueprint",
    "responses_request",
]

# The fields ResponsesBody declares and responses_request reads.
_READ = frozenset(
    {
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "max_output_tokens",
        "temperature",
        "top_p",
        "text",
        "stream",
        "metadata",
        "user",
    }
)
# Accepted and ignored: they change nothing in the reply's content.
HARMLESS = frozenset(
    {
        "store",
        "service_tier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "safety_identifier",
        "stream_options",
        "truncation",
    }
)
# Refused by name whatever their value (null and the defaults aside): Rhetor cannot honour them.
REFUSED: Mapping[str, str] = {
    "previous_response_id": "responses are not stored; name a context (X-Rhetor-Context) instead",
    "conversation": "conversations are not stored; name a context (X-Rhetor-Context) instead",
    "background": "background responses are not supported",
    "prompt": "stored prompts are not supported; send instructions and input",
    "reasoning": "reasoning options are not supported",
    "include": "extra output data is not supported",
    "max_tool_calls": "is not supported",
    "top_logprobs": "log probabilities are not supported",
}
# A refused field's value that asks for nothing (the SDK's and frameworks' defaults).
_DEFAULTS: Mapping[str, tuple[Any, ...]] = {
    "background": (False,),
    "include": ([],),
    "top_logprobs": (0,),
}


# -- requests ---------------------------------------------------------------------


@attrs.frozen
class ResponsesRequest:
    """
    A Responses body, read: the ``Runtime.request`` arguments, whether to stream, and what the reply echoes.
    """

    kwargs: dict[str, Any]
    stream: bool
    echo: dict[str, Any]


def responses_request(
    raw: Mapping[str, Any],
    body: ResponsesBody,
    *,
    context_id: str | None = None,
    component: str | None = None,
) -> ResponsesRequest:
    """
    A checked Responses body (``raw`` as sent, ``body`` typed) as ``Runtime.request`` arguments.

    Error handling: a :class:`ValidationError` naming the first field Rhetor
    cannot read or honour; :class:`NotFound` for an unknown ``rhetor/`` alias.
    """
    extra = _passthrough(raw)
    messages: list[ChatMessage] = []
    if body.instructions:
        messages.append(ChatMessage("system", body.instructions))
    if isinstance(body.input, str):
        messages.append(ChatMessage("user", body.input))
    else:
        messages.extend(input_items(body.input))
    if not messages:
        raise ValidationError("input", "must hold at least one message")
    tools = tools_from_responses(body.tools)
    choice = tool_choice_from_responses(body.tool_choice, body.parallel_tool_calls)
    fmt = format_from_responses(body.text)
    kwargs: dict[str, Any] = {
        "context_id": context_id,
        "component": component,
        **route_model(body.model),
        "messages": tuple(messages),
        "temperature": body.temperature,
        "max_tokens": None if body.max_output_tokens is None else int(body.max_output_tokens),
        "top_p": body.top_p,
        "tools": tools,
        "tool_choice": choice,
        "response_format": fmt,
        "user": body.user,
        "metadata": body.metadata,
    }
    if extra:
        kwargs["passthrough"] = Passthrough(OPENAI, extra)
    echo = {
        "instructions": body.instructions,
        "max_output_tokens": kwargs["max_tokens"],
        "metadata": dict(body.metadata or {}),
        "parallel_tool_calls": body.parallel_tool_calls is not False,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "text": {"format": format_echo(fmt)},
        "tool_choice": body.tool_choice if body.tool_choice is not None else "auto",
        "tools": [tool_echo(t) for t in tools],
        "user": body.user,
    }
    return ResponsesRequest(kwargs, bool(body.stream), echo)


def _passthrough(raw: Mapping[str, Any]) -> dict[str, Any]:
    """
    The body's parameters Rhetor does not read, to relay to an OpenAI-family upstream.

    Error handling: a :class:`ValidationError` naming the first of :data:`REFUSED`
    asking for something (not null, not its default).
    """
    extra: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _READ or key in HARMLESS or value is None:
            continue
        if key in REFUSED:
            if value in _DEFAULTS.get(key, ()):
                continue
            raise ValidationError(key, REFUSED[key])
        extra[key] = value
    return extra


@attrs.frozen
class ResponsesStream:
    """
    One stream's Server-Sent Events: :class:`ResponsesEvents`' objects, each named by its ``type``.
    """

    events: ResponsesEvents

    async def of(self, first: Chunk, rest: AsyncIterator[Chunk]) -> AsyncGenerator[bytes, None]:
        """The stream's events (``sse_response``'s ``events_of``)."""
        async for body in self.events.events(first, rest):
            yield event(body["type"], body)

    def error(self, error: RhetorError) -> bytes:
        """The ``error`` event, numbered after the events sent."""
        body = self.events.error(error.message, error.field, error.code)
        return event("error", body)


# -- the blueprint ----------------------------------------------------------------


def responses_blueprint(runtime: Runtime) -> Blueprint:
    """
    The ``/responses`` route over ``runtime``, mounted under ``/v1``.

    Its errors are answered by the ``/v1`` blueprint (``rhetor.edge._compat_v1``) in OpenAI's shape.
    """
    bp = Blueprint("responses", __name__)
    rt = runtime

    @bp.post("/responses")
    async def responses() -> Response:
        """
        OpenAI Responses: a ``response`` object, or with ``stream`` its ``response.*`` events.

        ``model`` is a model's name or an alias ``rhetor/<task>``; the headers
        ``X-Rhetor-Context`` and ``X-Rhetor-Component`` name the context and
        component. Nothing is stored for ``previous_response_id``; the
        parameters Rhetor cannot honour are a 400 naming them. Rhetor's
        headers on a whole reply: ``X-Rhetor-Provider``,
        ``X-Rhetor-Request-Id``, ``X-Rhetor-Cost`` and, when there is one,
        ``X-Rhetor-Budget-Warning``.
        """
        raw = await read_body()
        body = convert(raw, ResponsesBody)
        parsed = responses_request(raw, body, **rhetor_headers(request.headers))
        llm_request = rt.request(**parsed.kwargs)
        if parsed.stream:
            stream = ResponsesStream(ResponsesEvents(llm_request.request_id, parsed.echo))
            return await sse_response(
                rt.send_stream(llm_request),
                stream.of,
                stream.error,
                name=llm_request.request_id,
            )
        reply = await rt.send(llm_request)
        return json_response(
            whole_response(reply, parsed.echo, int(time.time())), headers=reply_headers(reply)
        )

    setattr(
        responses,
        OPERATION_ATTRIBUTE,
        Operation(body=ResponsesBody, reply=ResponsesReply, streams=True, events=RESPONSES_EVENTS),
    )
    return bp
