"""
What the OpenAI- and Anthropic-compatible APIs share: models, headers, text, errors.

The ``/v1`` routes let the official SDKs work against Rhetor
(``rhetor.edge._compat_v1`` mounts them): OpenAI Chat Completions
(``rhetor.edge._compat_openai``), Anthropic Messages
(``rhetor.edge._compat_anthropic``) and the model list both read. Like the
rest of the edge they only translate: a wire-format body becomes one
:class:`~rhetor.LLMRequest`, and the
:class:`~rhetor.Reply` or its
:class:`~rhetor.Chunk` stream becomes the wire format again.
Auth, body limits and CORS are the app's (``create_app``'s ``guard``), so they
apply here unchanged; the Anthropic SDK's ``x-api-key`` header is the app's
``X-API-Key``.

``model`` is either an exact model name (routed to the provider serving it)
or an alias ``rhetor/code|chat|planning|reasoning|default`` (routed by task,
with fallbacks). ``X-Rhetor-Component`` and ``X-Rhetor-Context`` name the
component and context; with a context, the stored history is prepended and
the client's turns that repeat it are dropped by the Router (the rule of
``POST /chat``, in ``docs/api.md``), and without one the request is stateless.

Errors leave in each API's own shape, with a status its SDK maps to the
fitting exception class: :func:`status_and_headers` is the part both share,
and ``openai_error`` and ``anthropic_error`` are the one place each API's
mapping lives (the table is in ``docs/compat.md``).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

import attrs
from quart import Response

from rhetor._errors import (
    BudgetExceeded,
    NotFound,
    RateLimited,
    RhetorError,
    StorageUnavailable,
    ValidationError,
)
from rhetor.edge._http import STORAGE_RETRY_AFTER, json_response, read_body
from rhetor.edge._schema import OPERATION_ATTRIBUTE, Body, Operation, StreamEvent, convert
from rhetor.routing._plan import TASK_TYPES

if TYPE_CHECKING:
    from rhetor._types import Reply
    from rhetor.runtime import Runtime

__all__ = [
    "ALIASES",
    "ALIAS_PREFIX",
    "COMPONENT_HEADER",
    "CONTEXT_HEADER",
    "CompatRequest",
    "ErrorReply",
    "Role",
    "compat_operation",
    "error_reply_response",
    "present",
    "reply_headers",
    "rhetor_headers",
    "routable_models",
    "route_model",
    "status_and_headers",
]

ALIAS_PREFIX = "rhetor/"
# Alias -> task type; every task the router knows has one.
ALIASES: Mapping[str, str] = {f"{ALIAS_PREFIX}{task}": task for task in TASK_TYPES}
CONTEXT_HEADER = "X-Rhetor-Context"
COMPONENT_HEADER = "X-Rhetor-Component"

Role = Literal["system", "user", "assistant"]


# -- requests: wire format -> Runtime.request keyword arguments -----------------


@attrs.frozen
class CompatRequest:
    """
    A compatible request, read: the ``Runtime.request`` arguments and how to answer.
    """

    kwargs: dict[str, Any]
    stream: bool
    include_usage: bool = False


def compat_operation(
    *,
    body: type[Body],
    reply: Any,
    events: tuple[StreamEvent, ...] = (),
    streams: bool = True,
) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
    """
    ``rhetor.edge._schema.operation`` for a compatible route: the view gets the checked
    ``body=`` and also ``raw=``, the JSON object as sent (its null fields left out, see
    :func:`present`).

    The translation reads the conversation and every field from ``raw``, so that
    parameters the schema does not declare reach the passthrough (or its refusal)
    instead of being dropped. The route streams as well (``events``: what its stream
    sends; ``streams=False`` for a route that never streams); the OpenAPI document
    reads the same :class:`Operation`.

    Error handling: a body that does not fit its schema is a :class:`ValidationError`
    raised before the view runs (``InvalidJSON`` when it is not JSON).
    """
    spec = Operation(body=body, reply=reply, streams=streams, events=events)

    def decorate(view: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(view)
        async def checked(**kwargs: Any) -> Any:
            raw = await read_body()
            kwargs["body"] = convert(raw, body)
            kwargs["raw"] = present(raw)
            return await view(**kwargs)

        setattr(checked, OPERATION_ATTRIBUTE, spec)
        return checked

    return decorate


def present(raw: Mapping[str, Any]) -> dict[str, Any]:
    """
    A body's top-level fields that are not null: a null parameter means the client left it
    out (clients built on the SDKs send many), so it is neither relayed nor refused.
    """
    return {key: value for key, value in raw.items() if value is not None}


def route_model(model: str) -> dict[str, Any]:
    """
    The routing arguments for ``model``: an alias routes by task, anything else is exact.

    Error handling: :class:`NotFound` for an alias no task has.
    """
    task = ALIASES.get(model)
    if task is not None:
        return {"task_type": task, "model": None}
    if model.startswith(ALIAS_PREFIX):
        raise NotFound("model", model, field="model")
    return {"task_type": "default", "model": model}


def rhetor_headers(headers: Any) -> dict[str, str | None]:
    """The context and component a request names in Rhetor's headers (absent: None)."""
    return {
        "context_id": headers.get(CONTEXT_HEADER) or None,
        "component": headers.get(COMPONENT_HEADER) or None,
    }


# -- errors: RhetorError -> each API's status and body ---------------------------


@attrs.frozen
class ErrorReply:
    """
    An error in one API's wire format: status, JSON body and extra headers.
    """

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = attrs.field(factory=dict)


def status_and_headers(error: RhetorError) -> tuple[int, dict[str, str]]:
    """The status and headers both APIs give ``error`` before their own adjustments."""
    headers: dict[str, str] = {}
    # Both APIs answer a bad field with 400, which their SDKs raise as BadRequestError.
    status = 400 if isinstance(error, ValidationError) else error.status
    if error.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="rhetor"'
    if isinstance(error, BudgetExceeded):
        # Retrying cannot help before the budget period rolls over.
        headers["x-should-retry"] = "false"
    if isinstance(error, RateLimited) and error.retry_after is not None:
        headers["retry-after"] = f"{error.retry_after:g}"
    if isinstance(error, StorageUnavailable):
        # Transient: the SDKs retry a 503, after this long.
        headers["retry-after"] = STORAGE_RETRY_AFTER
    return status, headers


def error_reply_response(reply: ErrorReply) -> Response:
    """An :class:`ErrorReply` as the HTTP response."""
    return json_response(reply.body, reply.status, reply.headers)


# -- replies ----------------------------------------------------------------------


def reply_headers(reply: Reply) -> dict[str, str]:
    """What Rhetor adds to a whole reply in either API: provider, request id, cost, warning."""
    headers = {
        "X-Rhetor-Provider": reply.provider,
        "X-Rhetor-Request-Id": reply.request_id,
        "X-Rhetor-Cost": f"{reply.cost:.8f}",
    }
    if reply.budget_warning:
        headers["X-Rhetor-Budget-Warning"] = reply.budget_warning.replace("\n", " ")
    return headers


async def routable_models(runtime: Runtime) -> list[tuple[str, str]]:
    """(model, owner) for every model of an available provider, then the aliases."""
    info = await runtime.providers()
    found: dict[str, str] = {}
    for provider, status in info["providers"].items():
        if status["available"]:
            for model in status["models"]:
                found.setdefault(model, provider)
    return [*found.items(), *((alias, "rhetor") for alias in ALIASES)]
