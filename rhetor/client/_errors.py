"""
The client's one exception hierarchy, and the one place that builds it.

Every failure a client call can see is a :class:`RhetorClientError`; a call
never returns an error string as if it were a reply. Errors the server reports
(``{"error": {"type", "message", "field"?}}``) keep the server's ``type`` in
``.type``, so the original kind stays visible even where several server types
share one client class.

    RhetorClientError            base: .type, .status, .field, .body
    ├── ConnectionRefused        nothing answers at host:port (server down, wrong port)
    ├── Timeout                  no answer within the client's timeout
    ├── Unauthorized             the API key is missing or wrong (401)
    ├── BudgetExceeded           the budget policy refused the request (.period, .limit, .spent)
    ├── ProviderUnavailable      no provider could serve the request (.provider, .attempts)
    ├── ValidationError          a request field is missing or wrong (.field)
    ├── NotFound                 an id names nothing (template, context, model, provider)
    ├── RequestCancelled         a session request was cancelled before it completed
    └── ServerError              anything else the server reported, or a connection lost mid-answer
        └── StorageUnavailable   the server's database cannot be reached now (503; worth retrying)

Translation happens in exactly two functions: :func:`error_from_body` for what
the server says, and :func:`transport_errors` for what httpx and httpx-ws raise.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpcore
import httpx
import httpx_ws
import wsproto.utilities

__all__ = [
    "BudgetExceeded",
    "ConnectionRefused",
    "NotFound",
    "ProviderUnavailable",
    "RequestCancelled",
    "RhetorClientError",
    "ServerError",
    "StorageUnavailable",
    "Timeout",
    "Unauthorized",
    "ValidationError",
    "error_from_body",
    "transport_errors",
]


class RhetorClientError(Exception):
    """
    Base of every error a Rhetor client call raises.
    """

    def __init__(
        self,
        message: str,
        *,
        type: str | None = None,
        status: int | None = None,
        field: str | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        #: The server's error type (``validation_error``, ``all_providers_failed``, ...).
        self.type = type
        #: The HTTP status, when the error came over HTTP.
        self.status = status
        #: The request field the server named, if any.
        self.field = field
        #: The server's whole ``error`` object, for details this class has no attribute for.
        self.body: dict[str, Any] = dict(body or {})


class ConnectionRefused(RhetorClientError):
    """
    Raised when nothing answers at the client's host and port.
    """


class Timeout(RhetorClientError):
    """
    Raised when the server does not answer within the client's timeout.
    """


class Unauthorized(RhetorClientError):
    """
    Raised when the server wants an API key and the client's is missing or wrong.
    """


class BudgetExceeded(RhetorClientError):
    """
    Raised when the server's budget policy refuses a request.
    """

    @property
    def period(self) -> str | None:
        """The budget period that would be exceeded (``daily``, ``weekly``, ``monthly``)."""
        value = self.body.get("period")
        return value if isinstance(value, str) else None

    @property
    def limit(self) -> float | None:
        """That period's limit in USD."""
        value = self.body.get("limit")
        return float(value) if isinstance(value, int | float) else None

    @property
    def spent(self) -> float | None:
        """What that period has spent so far, in USD."""
        value = self.body.get("spent")
        return float(value) if isinstance(value, int | float) else None


class ProviderUnavailable(RhetorClientError):
    """
    Raised when no provider could serve a request (one down, or all that were tried).
    """

    @property
    def provider(self) -> str | None:
        """The provider that failed, when one is named."""
        value = self.body.get("provider")
        return value if isinstance(value, str) else None

    @property
    def attempts(self) -> list[dict[str, Any]]:
        """Each provider and model tried, with its error type and message."""
        value = self.body.get("attempts")
        return [a for a in value if isinstance(a, dict)] if isinstance(value, list) else []


class ValidationError(RhetorClientError):
    """
    Raised when a request field is missing or wrong; ``.field`` names it.
    """


class NotFound(RhetorClientError):
    """
    Raised when an id (template, prompt, context, model, provider) names nothing.
    """


class RequestCancelled(RhetorClientError):
    """
    Raised by a session request that was cancelled before it completed.
    """


class ServerError(RhetorClientError):
    """
    Raised when the server reports any other failure, or the connection drops mid-answer.
    """


class StorageUnavailable(ServerError):
    """
    Raised when the server cannot reach its database (``storage_unavailable``, 503).

    Transient: the server recovers by itself when the database is back, so
    the request is worth sending again a little later. Under the ``enforce``
    budget policy a request that needs the ledger fails this way rather than
    spend unchecked.
    """


# Server error types whose meaning a client class already carries.
_BY_TYPE: Mapping[str, type[RhetorClientError]] = {
    "validation_error": ValidationError,
    "invalid_json": ValidationError,
    "malformed_json": ValidationError,
    "bad_request": ValidationError,
    "payload_too_large": ValidationError,
    "not_found": NotFound,
    "unauthorized": Unauthorized,
    # A foreign Host or Origin: access refused, as a wrong key is.
    "forbidden": Unauthorized,
    "unsupported_media_type": ValidationError,
    "budget_exceeded": BudgetExceeded,
    "provider_unavailable": ProviderUnavailable,
    "all_providers_failed": ProviderUnavailable,
    "cancelled": RequestCancelled,
    "storage_unavailable": StorageUnavailable,
}

# For a body without a type the client knows, the status still says what happened.
_BY_STATUS: Mapping[int, type[RhetorClientError]] = {
    400: ValidationError,
    401: Unauthorized,
    402: BudgetExceeded,
    403: Unauthorized,
    404: NotFound,
    413: ValidationError,
    415: ValidationError,
    422: ValidationError,
}


def error_from_body(body: Any, status: int | None = None) -> RhetorClientError:
    """
    The client error for a server error body, or for a bare status.

    ``body`` is the decoded JSON (``{"error": {...}}``, or the inner ``error``
    object as WebSocket ``ERROR`` frames and SSE error events carry it); anything
    else falls back on the status.
    """
    error: Any = body.get("error", body) if isinstance(body, Mapping) else None
    if isinstance(error, str):
        error = {"message": error}
    if not isinstance(error, Mapping):
        error = {}
    kind = error.get("type") if isinstance(error.get("type"), str) else None
    message = error.get("message")
    if not isinstance(message, str) or not message:
        message = f"Rhetor answered {status}" if status is not None else "Rhetor reported an error"
    field = error.get("field") if isinstance(error.get("field"), str) else None
    cls = _BY_TYPE.get(kind or "") or _BY_STATUS.get(status or 0) or ServerError
    return cls(message, type=kind, status=status, field=field, body=error)


@contextmanager
def transport_errors(url: str) -> Iterator[None]:
    """
    Translate httpx and httpx-ws failures talking to ``url`` into client errors.

    Error handling: the original exception stays reachable as ``__cause__``.
    Cancellation passes through untouched (it is not an ``Exception``).
    """
    try:
        yield
    except httpx.ConnectTimeout as exc:
        raise Timeout(f"connecting to Rhetor at {url} timed out") from exc
    except httpx.ConnectError as exc:
        raise ConnectionRefused(f"cannot connect to Rhetor at {url}: {exc}") from exc
    except httpx.TimeoutException as exc:
        raise Timeout(f"Rhetor at {url} did not answer in time ({type(exc).__name__})") from exc
    except httpx.TransportError as exc:
        raise ServerError(f"connection to Rhetor at {url} failed: {exc!r}") from exc
    except httpx_ws.WebSocketUpgradeError as exc:
        # The upgrade response's body is already closed; its status says enough.
        status = exc.response.status_code
        raise error_from_body(
            {"message": f"Rhetor refused the WebSocket at {url} ({status})"}, status
        ) from exc
    except httpx_ws.WebSocketDisconnect as exc:
        raise ServerError(
            f"Rhetor closed the WebSocket ({exc.code}{': ' + exc.reason if exc.reason else ''})"
        ) from exc
    except httpx_ws.WebSocketNetworkError as exc:
        raise ServerError(f"WebSocket connection to Rhetor at {url} was lost") from exc
    except (httpcore.NetworkError, httpcore.TimeoutException, OSError) as exc:
        # httpx-ws writes straight to httpcore's network stream, below httpx's own mapping.
        raise ServerError(f"connection to Rhetor at {url} failed: {exc!r}") from exc
    except wsproto.utilities.LocalProtocolError as exc:
        raise ServerError(f"the WebSocket to Rhetor at {url} is closed") from exc
