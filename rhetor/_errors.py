"""
Rhetor's one exception hierarchy.

Every error a caller can see is a :class:`RhetorError`. Each class carries a
stable ``code`` (the ``type`` field of the JSON error body), an HTTP ``status``
and whether it is ``transient`` (worth retrying against the same provider).

    RhetorError
    ├── InvalidJSON              a body or frame is not JSON (400)
    ├── ValidationError          a request field is missing or wrong (422; names .field)
    ├── NotFound                 an id that names nothing (404)
    ├── Unauthorized             missing or wrong API key (401)
    ├── Forbidden                a foreign Host or Origin (403; names the header in .field)
    ├── UnsupportedMediaType     a body that is not declared application/json (415)
    ├── PayloadTooLarge          body or frame over the size limit (413)
    ├── BudgetExceeded           the budget policy refused the request (402)
    ├── ServiceUnavailable       an internal actor is down or the runtime stops (503)
    │   └── StorageUnavailable       the database cannot be reached or answer in time (503)
    ├── InternalError            a bug met while handling this one request (500; logged with its traceback)
    ├── AllProvidersFailed       every candidate in the routing chain failed (503; .attempts)
    └── ProviderError            one upstream call failed (.provider, .model)
        ├── ProviderUnavailable      not configured, no key, or not answering (503)
        ├── AuthenticationFailed     upstream rejected the key (502, never retried)
        ├── RateLimited              upstream 429 (429, transient; .retry_after)
        ├── Overloaded               upstream 529 / overloaded (503, transient)
        ├── UpstreamTimeout          upstream did not answer in time (504, transient)
        ├── UpstreamConnectionError  could not connect / connection dropped (502, transient)
        ├── UpstreamServerError      upstream 5xx (502, transient)
        ├── BadRequest               upstream 400 (400, never retried)
        ├── ContextTooLong           prompt over the model's window (400, never retried)
        └── StreamBroken             a stream failed after its first chunk (502)

Errors raised inside an actor reach the caller with their original type.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

__all__ = [
    "AllProvidersFailed",
    "AllProvidersRefused",
    "AuthenticationFailed",
    "BadRequest",
    "BudgetExceeded",
    "ContextTooLong",
    "Forbidden",
    "InternalError",
    "InvalidJSON",
    "NotFound",
    "Overloaded",
    "PayloadTooLarge",
    "ProviderError",
    "ProviderUnavailable",
    "RateLimited",
    "RhetorError",
    "ServiceUnavailable",
    "StorageUnavailable",
    "StreamBroken",
    "Unauthorized",
    "UnsupportedMediaType",
    "UpstreamConnectionError",
    "UpstreamServerError",
    "UpstreamTimeout",
    "ValidationError",
]


class RhetorError(Exception):
    """
    Base of every error Rhetor reports.
    """

    code: ClassVar[str] = "internal_error"
    status: ClassVar[int] = 500
    transient: ClassVar[bool] = False

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_dict(self) -> dict[str, Any]:
        """
        The JSON error body's ``error`` object: type, message and, where known, field.
        """
        body: dict[str, Any] = {"type": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        return body


class InvalidJSON(RhetorError):
    """
    Raised when a request body or WebSocket frame is not JSON (or not UTF-8 text).
    """

    code = "invalid_json"
    status = 400


class ValidationError(RhetorError):
    """
    Raised when a request field is missing, of the wrong type or out of range.
    """

    code = "validation_error"
    status = 422

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", field=field)


class NotFound(RhetorError):
    """
    Raised when an id (template, prompt, context, provider, model) names nothing.
    """

    code = "not_found"
    status = 404

    def __init__(self, kind: str, ident: str, *, field: str | None = None) -> None:
        super().__init__(f"no {kind} {ident!r}", field=field)
        self.kind = kind
        self.ident = ident


class Unauthorized(RhetorError):
    """
    Raised when an API key is required and missing or wrong.
    """

    code = "unauthorized"
    status = 401


class Forbidden(RhetorError):
    """
    Raised when a request names a host not allowed, or comes from a foreign origin.

    ``field`` names the header (``Host`` or ``Origin``), as a validation error names a field.
    """

    code = "forbidden"
    status = 403


class UnsupportedMediaType(RhetorError):
    """
    Raised when a request carries a body that is not declared ``application/json``.
    """

    code = "unsupported_media_type"
    status = 415


class PayloadTooLarge(RhetorError):
    """
    Raised when a body or WebSocket frame is over the configured size limit.
    """

    code = "payload_too_large"
    status = 413


class BudgetExceeded(RhetorError):
    """
    Raised when the budget policy refuses a request that would go over a limit.
    """

    code = "budget_exceeded"
    status = 402

    def __init__(
        self,
        message: str,
        *,
        period: str,
        limit: float,
        spent: float,
        provider: str | None = None,
        component: str | None = None,
    ) -> None:
        super().__init__(message)
        self.period = period
        self.limit = limit
        self.spent = spent
        self.provider = provider
        # The component whose own limit refused (None: an overall or provider limit).
        self.component = component

    def to_dict(self) -> dict[str, Any]:
        body = super().to_dict()
        body.update(period=self.period, limit=self.limit, spent=self.spent)
        if self.provider is not None:
            body["provider"] = self.provider
        if self.component is not None:
            body["component"] = self.component
        return body


class ServiceUnavailable(RhetorError):
    """
    Raised when an internal part of Rhetor is down or the runtime is stopping.
    """

    code = "service_unavailable"
    status = 503
    transient = True


class StorageUnavailable(ServiceUnavailable):
    """
    Raised when the database (PostgreSQL, or a SQLite file) cannot be reached or answer in time.
    """

    code = "storage_unavailable"


class InternalError(RhetorError):
    """
    Raised when handling one request met an unexpected exception (a bug).

    The actor that met it logs the traceback and keeps serving; only this
    request fails. The message never carries the traceback.
    """

    code = "internal_error"
    status = 500


class ProviderError(RhetorError):
    """
    Base of errors from one upstream provider call.
    """

    code = "provider_error"
    status = 502

    def __init__(self, message: str, *, provider: str, model: str | None = None) -> None:
        super().__init__(message)
        self.provider = provider
        self.model = model

    def to_dict(self) -> dict[str, Any]:
        body = super().to_dict()
        body["provider"] = self.provider
        if self.model is not None:
            body["model"] = self.model
        return body


class ProviderUnavailable(ProviderError):
    """
    Raised when a provider is not configured, has no key, or does not answer.
    """

    code = "provider_unavailable"
    status = 503


class AuthenticationFailed(ProviderError):
    """
    Raised when the upstream rejects Rhetor's credentials; never retried.
    """

    code = "upstream_authentication_failed"
    status = 502


class RateLimited(ProviderError):
    """
    Raised on an upstream 429; keeps the upstream's Retry-After in seconds.
    """

    code = "rate_limited"
    status = 429
    transient = True

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        model: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, provider=provider, model=model)
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, Any]:
        body = super().to_dict()
        if self.retry_after is not None:
            body["retry_after"] = self.retry_after
        return body


class Overloaded(ProviderError):
    """
    Raised when the upstream says it is overloaded (Anthropic's 529).
    """

    code = "overloaded"
    status = 503
    transient = True


class UpstreamTimeout(ProviderError):
    """
    Raised when the upstream does not answer within the request's deadline.
    """

    code = "upstream_timeout"
    status = 504
    transient = True


class UpstreamConnectionError(ProviderError):
    """
    Raised when Rhetor cannot connect to the upstream, or the connection drops.
    """

    code = "upstream_connection_error"
    status = 502
    transient = True


class UpstreamServerError(ProviderError):
    """
    Raised on an upstream 5xx other than overload.
    """

    code = "upstream_server_error"
    status = 502
    transient = True


class BadRequest(ProviderError):
    """
    Raised when the upstream rejects the request as malformed; never retried.
    """

    code = "upstream_bad_request"
    status = 400


class ContextTooLong(ProviderError):
    """
    Raised when the prompt is over the model's context window; never retried.
    """

    code = "context_too_long"
    status = 400


class StreamBroken(ProviderError):
    """
    Raised when a stream fails after its first chunk reached the caller.
    """

    code = "stream_broken"
    status = 502


class AllProvidersFailed(RhetorError):
    """
    Raised when every candidate in the routing chain failed; lists each attempt.

    A 503: retrying may find a provider back. When every attempt was an upstream
    refusing the request itself, it is :class:`AllProvidersRefused` (a 400).
    """

    code = "all_providers_failed"
    status = 503

    def __init__(self, attempts: Sequence[tuple[str, str, RhetorError]]) -> None:
        tried = "; ".join(f"{p}/{m}: {e.code}: {e.message}" for p, m, e in attempts)
        super().__init__(f"all providers failed ({tried or 'no candidates'})")
        self.attempts = list(attempts)

    @staticmethod
    def of(attempts: Sequence[tuple[str, str, RhetorError]]) -> AllProvidersFailed:
        """The error for ``attempts``: :class:`AllProvidersRefused` when each refused the request."""
        refused = all(isinstance(e, BadRequest | ContextTooLong) for _, _, e in attempts)
        if attempts and refused:
            return AllProvidersRefused(attempts)
        return AllProvidersFailed(attempts)

    def to_dict(self) -> dict[str, Any]:
        body = super().to_dict()
        body["attempts"] = [
            {"provider": p, "model": m, "type": e.code, "message": e.message}
            for p, m, e in self.attempts
        ]
        return body


class AllProvidersRefused(AllProvidersFailed):
    """
    Every candidate's upstream refused the request itself (a bad request, a prompt
    over its context window): a 400, which no client retries, since the same request
    would be refused again. Its code and body are :class:`AllProvidersFailed`'s.
    """

    status = 400
