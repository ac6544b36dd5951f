"""
What every request passes before a handler runs, and how an early reply leaves.

HTTP requests (:func:`refusal`, called by ``rhetor.edge._app.asgi_app``) and
WebSocket handshakes (``rhetor.edge._sockets``) make the same checks: the Host
header is one this server answers to (against DNS rebinding), the API key is
right when one is set, a request from a browser page comes from an allowed
origin, and an HTTP body is declared ``application/json`` (a page on any site
may send a form or ``text/plain`` body without asking, never a JSON one).
Each refusal is a typed :class:`RhetorError`. :class:`UnreadBody` makes a
reply sent before its request's body was read close the connection cleanly.
No I/O but the ASGI messages :class:`UnreadBody` relays.
"""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import urlsplit

import trio
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable

from rhetor._errors import (
    Forbidden,
    PayloadTooLarge,
    RhetorError,
    Unauthorized,
    UnsupportedMediaType,
)
from rhetor._settings import Settings, host_name
from rhetor.edge._json import dumps  # re-exported: what the edge's replies are written with

__all__ = [
    "METRICS_PATH",
    "OPEN_PATHS",
    "OPEN_PREFIXES",
    "UnreadBody",
    "authorized",
    "check_host",
    "check_origin",
    "dumps",
    "has_body",
    "origin_allowed",
    "presented_key",
    "refusal",
]

# Paths anyone may read, even with an API key set: discovery, health checks, and the
# API's description (rhetor.edge._openapi), which holds no data.
OPEN_PATHS = frozenset({"/", "/health", "/ready", "/ui", "/openapi.json", "/docs"})
# The metrics: under the API key, unless RHETOR_METRICS_PUBLIC=1 (Settings.metrics_public).
METRICS_PATH = "/metrics"
# Likewise every path under these: the web console's static files (rhetor.edge._ui) and
# the /docs page's hold no data, and a page must load before it can ask for a key.
OPEN_PREFIXES = ("/ui/", "/docs/")
_JSON = "application/json"
# Methods that change state: a browser page on another site must not send them.
_STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Seconds the last send of a reply that closes its connection may take.
_CLOSE_TIMEOUT = 5.0


def presented_key(headers: Any, query: Any = None) -> str | None:
    """The API key a request presents (X-API-Key, Bearer, or ``?api_key=`` for sockets)."""
    key: str | None = headers.get("X-API-Key")
    if key is None:
        auth = headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            key = auth[7:].strip()
    if key is None and query is not None:
        key = query.get("api_key")
    return key


def authorized(expected: str | None, presented: str | None) -> bool:
    """Whether ``presented`` is the configured key (always, when none is configured)."""
    if expected is None:
        return True
    if presented is None:
        return False
    # Constant time, so the comparison leaks nothing about how much of a key matched.
    return hmac.compare_digest(presented.encode(), expected.encode())


def origin_allowed(settings: Settings, origin: str, host: str | None) -> bool:
    """Whether a browser page from ``origin`` may use this server (CORS list or same origin)."""
    if "*" in settings.cors_origins or origin in settings.cors_origins:
        return True
    # Same origin: the page was served by this very host and port. ("null", sent
    # by sandboxed frames and some redirects, has no netloc and never matches.)
    return host is not None and urlsplit(origin).netloc.lower() == host.lower()


def check_host(allowed: frozenset[str] | None, host: str | None) -> None:
    """
    Refuse a Host header this server does not answer to (403).

    A DNS-rebinding page talks to this server under the attacker's domain
    name, so its requests carry that name; only the names that mean this
    server are served. An absent Host (HTTP/1.0, no browser) is let through.
    """
    if allowed is None or not host or host_name(host) in allowed:
        return
    raise Forbidden(
        f"host {host!r} is not served here; add it to RHETOR_ALLOWED_HOSTS to allow it",
        field="Host",
    )


def check_origin(settings: Settings, origin: str | None, host: str | None) -> None:
    """Refuse a state-changing request a page on another site sent (403)."""
    if origin is not None and not origin_allowed(settings, origin, host):
        raise Forbidden(
            f"origin {origin!r} is not allowed here; list it in RHETOR_CORS_ORIGINS to allow it",
            field="Origin",
        )


def _is_json_type(content_type: str) -> bool:
    media = content_type.partition(";")[0].strip().lower()
    return media == _JSON or (media.startswith("application/") and media.endswith("+json"))


def refusal(
    settings: Settings, allowed_hosts: frozenset[str] | None, scope: Any
) -> RhetorError | None:
    """
    The error an HTTP request must get before its handler runs, or None to let it through.

    One pass over the ASGI scope's raw headers (this runs for every request),
    then the checks in order: Host, then (a CORS preflight goes no further)
    the size limit, the API key, and for a state-changing request its Origin
    and its body's content type.
    """
    host = origin = content_type = key = bearer = None
    length: int | None = None
    chunked = preflight = False
    for name, value in scope["headers"]:  # Hypercorn gives header names in lower case
        if name == b"host":
            host = value.decode("latin-1")
        elif name == b"origin":
            origin = value.decode("latin-1")
        elif name == b"content-type":
            content_type = value.decode("latin-1")
        elif name == b"content-length":
            length = int(value) if value.isdigit() else None
        elif name == b"transfer-encoding":
            chunked = True
        elif name == b"x-api-key":
            key = value.decode("latin-1")
        elif name == b"authorization":
            bearer = value.decode("latin-1")
        elif name == b"access-control-request-method":
            preflight = True
    method = scope["method"]
    try:
        check_host(allowed_hosts, host)
        if method == "OPTIONS" and origin and preflight:
            return None  # answered by the app: CORS headers only for allowed origins
        if length is not None and length > settings.max_body_bytes:
            return PayloadTooLarge(
                f"body of {length} bytes is over the {settings.max_body_bytes} byte limit"
            )
        expected = settings.api_key
        path = scope["path"]
        if (
            expected is not None
            and path not in OPEN_PATHS
            and not path.startswith(OPEN_PREFIXES)
            and not (path == METRICS_PATH and settings.metrics_public)
        ):
            if key is None and bearer is not None and bearer[:7].lower() == "bearer ":
                key = bearer[7:].strip()
            if not authorized(expected, key):
                return Unauthorized(
                    "a valid API key is required (X-API-Key or Authorization: Bearer)"
                )
        if method in _STATE_CHANGING:
            check_origin(settings, origin, host)
            if (length or chunked) and not _is_json_type(content_type or ""):
                return UnsupportedMediaType(
                    "a request body must be JSON, sent with Content-Type: application/json"
                )
    except Forbidden as exc:
        return exc
    return None


def has_body(headers: Any) -> bool:
    for name, value in headers:  # Hypercorn gives header names in lower case
        if name == b"content-length":
            return value.strip() not in (b"0", b"")
        if name == b"transfer-encoding":
            return True
    return False


class UnreadBody:
    """
    Closes the connection after a reply sent before the request's body was read.

    A request refused early (413, 401, 404, 405, 415) is answered before its
    body has arrived, and on a kept-alive HTTP/1.1 connection the unread rest
    would be taken for the next request. So a reply that starts before the
    body was read says ``Connection: close``. Hypercorn (0.18) then closes the
    connection from inside the reply's last send, and two things used to
    stall that close for good, leaving the client's next request on the
    connection hanging (the OpenAI SDK timed out after a 413):

    - Hypercorn hands the unread body, then ``http.disconnect``, to an app
      that no longer reads them, and blocks once its queue is full: from the
      reply's last byte on, the body is drained here;
    - Quart cancels the sending task when it reads that ``http.disconnect``,
      cancelling the close half-way: the last send of a closing reply is
      shielded (with a deadline).

    ``nursery`` runs the drain; it must outlive the request (the app's
    background nursery), and the drain ends within ``_CLOSE_TIMEOUT``.
    """

    __slots__ = ("_closing", "_nursery", "_receive", "_send", "read")

    def __init__(
        self, receive: ASGIReceiveCallable, send: ASGISendCallable, nursery: trio.Nursery
    ) -> None:
        self._receive = receive
        self._send = send
        self._nursery = nursery
        # Invariant: True once the body's last part (or the disconnect) was received.
        self.read = False
        # True once the reply says Connection: close.
        self._closing = False

    async def receive(self) -> Any:
        event = await self._receive()
        if event["type"] != "http.request" or not event.get("more_body", False):
            self.read = True
        return event

    async def send(self, event: Any) -> None:
        kind = event["type"]
        if kind == "http.response.start":
            headers = list(event.get("headers", ()))
            self._closing = any(
                k.lower() == b"connection" and b"close" in v.lower() for k, v in headers
            )
            if not self.read and not self._closing:
                self._closing = True
                event = {**event, "headers": [*headers, (b"connection", b"close")]}
        elif self._closing and kind == "http.response.body" and not event.get("more_body"):
            if not self.read:
                self._nursery.start_soon(self._drain)
            with trio.CancelScope(shield=True, deadline=trio.current_time() + _CLOSE_TIMEOUT):
                await self._send(event)
            return
        await self._send(event)

    async def _drain(self) -> None:
        # Ends with the body's last part or the disconnect; if the app took the
        # disconnect itself, nothing more will come, and the deadline ends it.
        with trio.move_on_after(_CLOSE_TIMEOUT):
            while not self.read:
                await self.receive()
