"""
The OpenAI half of ``/v1``: Chat Completions, whole or streamed, in OpenAI's wire format.

``POST /v1/chat/completions`` reads a Chat Completions body (its schema is
``rhetor.edge._schemas_openai.ChatCompletionBody``, turned into a request by
``openai_request``) and answers a ``chat.completion`` object, or with
``stream`` the ``chat.completion.chunk`` events ending in ``data: [DONE]``.
The wire format itself (requests, replies, events, errors) is
``rhetor.edge._openai_wire``. A whole reply is usually made by the direct
route (``rhetor.edge._direct``), ahead of Quart; this view makes the rest.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from quart import Blueprint, Response, request

from rhetor.edge._compat import compat_operation, reply_headers, rhetor_headers
from rhetor.edge._http import json_response
from rhetor.edge._openai_wire import (
    openai_completion,
    openai_error_event,
    openai_events,
    openai_request,
)
from rhetor.edge._schemas_events import OPENAI_EVENTS
from rhetor.edge._schemas_openai import ChatCompletionBody, ChatCompletionReply
from rhetor.edge._sse import sse_response

if TYPE_CHECKING:
    from rhetor.runtime import Runtime

__all__ = ["openai_blueprint"]


# -- the blueprint ----------------------------------------------------------------


def openai_blueprint(runtime: Runtime) -> Blueprint:
    """
    The ``/chat/completions`` route over ``runtime``, mounted under ``/v1``.

    Its errors are answered by the ``/v1`` blueprint (``rhetor.edge._compat_v1``).
    """
    bp = Blueprint("openai", __name__)
    rt = runtime

    @bp.post("/chat/completions")
    @compat_operation(body=ChatCompletionBody, reply=ChatCompletionReply, events=OPENAI_EVENTS)
    async def chat_completions(body: ChatCompletionBody, raw: Mapping[str, Any]) -> Response:
        """
        OpenAI Chat Completions: a ``chat.completion``, or with ``stream`` its chunks ending in ``[DONE]``.

        ``model`` is a model's name or an alias ``rhetor/<task>``; the headers
        ``X-Rhetor-Context`` and ``X-Rhetor-Component`` name the context and
        component. Rhetor's headers on the reply: ``X-Rhetor-Provider``,
        ``X-Rhetor-Request-Id``, ``X-Rhetor-Cost`` and, when there is one,
        ``X-Rhetor-Budget-Warning``.
        """
        parsed = openai_request(body, raw, **rhetor_headers(request.headers))
        llm_request = rt.request(**parsed.kwargs)
        if parsed.stream:
            return await sse_response(
                rt.send_stream(llm_request),
                openai_events(llm_request.request_id, parsed.include_usage),
                openai_error_event,
                name=llm_request.request_id,
            )
        reply = await rt.send(llm_request)
        return json_response(
            openai_completion(reply, int(time.time())), headers=reply_headers(reply)
        )

    return bp
