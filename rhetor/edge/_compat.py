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

from collections.abc import Mapping
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
from rhetor.edge._http import STORAGE_RETRY_AFTER, json_response
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
    "error_reply_response",
    "reply_headers",
    "rhetor_headers",
    "routable_models",
    "route_model",
    "status_and_headers",
    "text_of",
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


def text_of(content: Any, field: str, *, allowed: frozenset[str]) -> str:
    """
    A message's content as text: a string, or an array of text parts.

    Error handling: :class:`ValidationError` naming ``field`` or the bad part.
    """
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ValidationError(field, "must be a string or an array of content parts")
    texts = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(kind, str) or kind not in allowed:
            raise ValidationError(
                f"{field}[{i}]", f"content part type {kind!r} is not supported; only text is"
            )
        text = part.get("text", part.get("refusal"))
        if not isinstance(text, str):
            raise ValidationError(f"{field}[{i}].text", "must be a string")
        texts.append(text)
    return "".join(texts)


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
