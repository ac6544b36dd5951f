"""
What every HTTP blueprint shares: the body, JSON replies, and errors in Rhetor's shape.

A handler's body is read with :func:`read_body` (then checked against its
schema by ``rhetor.edge._schema.operation``); it answers with
:func:`json_response`, and raises a :class:`RhetorError` for anything wrong.
:func:`rhetor_error` is the one place where any other exception becomes
Rhetor's: other libraries' errors (Werkzeug's HTTP errors, actor errors,
single-error groups) are translated, and anything else is a bug, logged with
its traceback and answered ``internal_error`` without detail.
:func:`error_response` is Rhetor's own error shape,
``{"error": {"type", "message", "field"?, "request_id"}}``; the ``/v1`` blueprints give the
same errors their APIs' shapes (``rhetor.edge._compat``).

This module imports no blueprint, so ``_app`` and every blueprint may import it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import attrs
from quart import Response, request
from werkzeug.exceptions import HTTPException

import actors
from rhetor import observe
from rhetor._errors import PayloadTooLarge, RhetorError, ServiceUnavailable, StorageUnavailable
from rhetor.edge._fields import parse_json
from rhetor.edge._json import encode

__all__ = [
    "JSON_TYPE",
    "STORAGE_RETRY_AFTER",
    "as_rhetor_error",
    "error_body",
    "error_parts",
    "error_response",
    "json_response",
    "plain",
    "read_body",
    "rhetor_error",
]

log = logging.getLogger("rhetor.edge")

JSON_TYPE = "application/json"
# Seconds a client is told to wait before retrying a storage_unavailable:
# about the breaker's probing interval (rhetor.storage._pg_breaker).
STORAGE_RETRY_AFTER = "1"
_HTTP_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


class _HTTPError(RhetorError):
    """A Werkzeug HTTP error (404, 405, ...) in Rhetor's error shape."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status  # type: ignore[misc]  # per instance: mirrors the HTTP error
        self.code = code  # type: ignore[misc]


# -- errors ------------------------------------------------------------------------


def as_rhetor_error(exc: BaseException) -> RhetorError | None:
    """The one translation point from other libraries' errors to Rhetor's (None: a bug)."""
    if isinstance(exc, RhetorError):
        return exc
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return as_rhetor_error(exc.exceptions[0])
    if isinstance(exc, HTTPException):
        status = exc.code or 500
        if status == 413:
            return PayloadTooLarge("request body is over the size limit")
        message = exc.description or exc.name
        return _HTTPError(status, _HTTP_TYPES.get(status, "http_error"), message)
    if isinstance(exc, actors.ActorError):
        return ServiceUnavailable(f"an internal actor is unavailable: {exc}")
    return None


def rhetor_error(exc: BaseException, where: str | None = None) -> RhetorError:
    """
    ``exc`` as the :class:`RhetorError` to answer; a bug is logged and answered without detail.

    ``where`` names the request in the log line; by default the current
    request's method and path (pass it where no request context is active,
    as while a streamed body is sent).
    """
    error = as_rhetor_error(exc)
    if error is None:
        if where is None:
            where = f"{request.method} {request.path}"
        log.error("unexpected %s on %s", type(exc).__name__, where, exc_info=exc)
        error = RhetorError("internal error; see the server log")
    # The request's access-log line and metrics say why it failed.
    observe.current().failed(error)
    return error


# -- replies -----------------------------------------------------------------------


def json_response(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """``body`` as a JSON reply (``ValueError`` if it holds NaN or Infinity, a bug)."""
    return Response(
        encode(body),
        status=status,
        content_type=JSON_TYPE,
        headers=None if headers is None else dict(headers),
    )


def error_response(error: RhetorError) -> Response:
    """``error`` in Rhetor's shape, with the headers its status calls for."""
    status, headers, body = error_parts(error)
    return json_response(body, status, headers or None)


def error_parts(error: RhetorError) -> tuple[int, dict[str, str], dict[str, Any]]:
    """:func:`error_response`'s status, headers and body (for replies made without Quart)."""
    headers: dict[str, str] = {}
    if error.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="rhetor"'
    if error.status in (401, 413):
        # Refused before the body was read: the unread body would desynchronise
        # a kept-alive connection, so close it after this response.
        headers["Connection"] = "close"
    if isinstance(error, StorageUnavailable):
        headers["Retry-After"] = STORAGE_RETRY_AFTER
    return error.status, headers, {"error": error_body(error)}


def error_body(error: RhetorError) -> dict[str, Any]:
    """
    ``error``'s ``{type, message, field?}`` and the id of the request it answers.

    The id is the request's ``X-Request-ID``: the one to find its log lines by.
    """
    body = error.to_dict()
    request_id = observe.request_id()
    if request_id is not None:
        body["request_id"] = request_id
    return body


def plain(value: Any) -> Any:
    """A runtime result (attrs objects, tuples, mappings) as plain JSON values."""
    if attrs.has(type(value)):
        return plain(attrs.asdict(value, recurse=True))
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    return value


# -- requests ----------------------------------------------------------------------


async def read_body() -> Any:
    """
    The request's JSON body (``{}`` when empty), checked by ``parse_json``.

    Its shape (an object, and its fields) is its schema's to check
    (``rhetor.edge._schema.operation``).

    Error handling: ``InvalidJSON`` (400) or ``ValidationError`` (422).
    """
    raw = await request.get_data(cache=False)
    if not raw or not raw.strip():
        return {}
    return parse_json(raw)
