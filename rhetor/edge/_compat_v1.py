"""
The ``/v1`` blueprint: the OpenAI and Anthropic APIs under the prefix their SDKs use.

It mounts the two halves (``rhetor.edge._compat_openai``, ``/chat/completions``;
``rhetor.edge._compat_anthropic``, ``/messages``) and OpenAI's Responses API
(``rhetor.edge._compat_responses``, ``/responses``), serves the model list both
SDKs read (``GET /v1/models`` and ``GET /v1/models/{id}``: every routable
model plus the ``rhetor/<task>`` aliases), and answers every error under it.

A request speaks Anthropic's API when it is for ``/v1/messages`` or carries
``anthropic-version`` (the Anthropic SDK's requests always do); any other
speaks OpenAI's. Its model list and its errors, including the app guard's
auth and size refusals, are then in that API's format.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import Blueprint, Response, request

from rhetor._errors import NotFound
from rhetor.edge._compat import error_reply_response, routable_models
from rhetor.edge._compat_anthropic import anthropic_blueprint, anthropic_error, anthropic_model
from rhetor.edge._compat_openai import openai_blueprint
from rhetor.edge._compat_responses import responses_blueprint
from rhetor.edge._http import json_response, rhetor_error
from rhetor.edge._openai_wire import openai_error, openai_model
from rhetor.edge._schema import operation
from rhetor.edge._schemas_anthropic import AnthropicModel, AnthropicModelList
from rhetor.edge._schemas_openai import OpenAIModel, OpenAIModelList

if TYPE_CHECKING:
    from rhetor.runtime import Runtime

__all__ = ["compat_blueprint", "wants_anthropic"]


def wants_anthropic() -> bool:
    """Whether the current request speaks Anthropic's API rather than OpenAI's."""
    return request.path.startswith("/v1/messages") or "anthropic-version" in request.headers


def compat_blueprint(runtime: Runtime) -> Blueprint:
    """
    The ``/v1`` blueprint: OpenAI Chat Completions, Anthropic Messages, and the models.

    Error handling: every error, including auth and size refusals from the
    app's guard, answers in the format of the API the request speaks.
    """
    bp = Blueprint("v1", __name__, url_prefix="/v1")
    bp.register_blueprint(openai_blueprint(runtime))
    bp.register_blueprint(anthropic_blueprint(runtime))
    bp.register_blueprint(responses_blueprint(runtime))

    @bp.errorhandler(Exception)
    async def on_error(exc: Exception) -> Response:
        error = rhetor_error(exc)
        reply = anthropic_error(error) if wants_anthropic() else openai_error(error)
        return error_reply_response(reply)

    @bp.get("/models")
    @operation(reply=OpenAIModelList | AnthropicModelList)
    async def models() -> Response:
        """
        Every routable model, then the ``rhetor/<task>`` aliases: OpenAI's list, or Anthropic's with ``anthropic-version``.
        """
        listed = await routable_models(runtime)
        if wants_anthropic():
            data = [anthropic_model(m) for m, _ in listed]
            return json_response(
                {
                    "data": data,
                    "has_more": False,
                    "first_id": data[0]["id"] if data else None,
                    "last_id": data[-1]["id"] if data else None,
                }
            )
        return json_response({"object": "list", "data": [openai_model(m, o) for m, o in listed]})

    @bp.get("/models/<path:model_id>")
    @operation(reply=OpenAIModel | AnthropicModel)
    async def model(model_id: str) -> Response:
        """
        One routable model or alias: OpenAI's format, or Anthropic's with ``anthropic-version``.
        """
        owner = dict(await routable_models(runtime)).get(model_id)
        if owner is None:
            raise NotFound("model", model_id, field="model")
        if wants_anthropic():
            return json_response(anthropic_model(model_id))
        return json_response(openai_model(model_id, owner))

    return bp
