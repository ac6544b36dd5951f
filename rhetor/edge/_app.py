"""
The HTTP edge: the Quart-Trio app over a :class:`Runtime`, and the ASGI app Hypercorn serves.

:func:`create_app` assembles one blueprint per API family; each handler only
translates, taking its body already checked against its typed schema
(``rhetor.edge._schema.operation``), making one ``Runtime`` call and turning
the result into JSON or Server-Sent Events:

- ``_core``: ``/``, ``/health``, ``/providers``, ``/provider``;
- ``_messages``: ``/message``, ``/stream``, ``/chat``;
- ``_templates``, ``_prompts``, ``_contexts``, ``_budget``: the routes under
  their names; ``_evaluate``: ``/evaluate``;
- ``_compat_v1``: ``/v1``, the OpenAI and Anthropic APIs.

They share ``rhetor.edge._http`` (body, JSON replies, errors) and
``rhetor.edge._sse`` (every stream). Routing, budget and context logic live in
the actors; the WebSockets are ``rhetor.edge._sockets``, served ahead of the app.

What applies to every request is here, once, app-wide: the guard (below),
the error handler, and CORS when origins are configured. No blueprint adds a
hook of its own, so a request pays for these and nothing per family.
Anything else every request needs belongs here too: one app-wide hook, or
a step in :func:`asgi_app`. The request id, ``X-Request-ID`` and
``Server-Timing`` headers, access-log line, metrics and span are such a step
(``rhetor.edge._observing``); the guard notes the route's rule for them.

Every error leaves as ``{"error": {"type", "message", "field"?, "request_id"}}`` with the
status of the :class:`RhetorError` it came from (the ``/v1`` blueprint gives
its errors its APIs' shapes); ``rhetor.edge._http.rhetor_error`` is the one
place where other exceptions are translated. Nothing answers with a traceback.

Before any handler runs, every request passes ``rhetor.edge._checks`` (Host
allow-list, size, API key, Origin, content type); bodies are then parsed by
:func:`rhetor.edge._fields.parse_json`, which refuses what no field may hold,
and checked against their schema (``rhetor.edge._schema``).
See "Security defaults" in ``docs/architecture.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import MethodNotAllowed

from rhetor import observe
from rhetor._errors import RhetorError
from rhetor._settings import Settings
from rhetor.edge._budget import budget_blueprint
from rhetor.edge._checks import UnreadBody, has_body, origin_allowed, refusal
from rhetor.edge._compat_v1 import compat_blueprint
from rhetor.edge._contexts import contexts_blueprint
from rhetor.edge._core import core_blueprint
from rhetor.edge._direct import direct_routes
from rhetor.edge._evaluate import evaluate_blueprint
from rhetor.edge._http import error_response, rhetor_error
from rhetor.edge._messages import messages_blueprint
from rhetor.edge._observing import UNMATCHED
from rhetor.edge._openapi import docs_blueprint
from rhetor.edge._prompts import prompts_blueprint
from rhetor.edge._sockets import LEGACY_WS_PATH, WS_PATH, EdgeState, serve_websocket
from rhetor.edge._templates import templates_blueprint
from rhetor.edge._ui import console_blueprint

if TYPE_CHECKING:
    from rhetor.runtime import Runtime

__all__ = ["EdgeState", "asgi_app", "create_app", "edge_state"]

# The scope key where asgi_app leaves its verdict on a request, for the guard.
_REFUSAL = "rhetor.refusal"
_UNCHECKED: Any = object()


def edge_state(app: QuartTrio) -> EdgeState:
    """The :class:`EdgeState` of an app made by :func:`create_app`."""
    state: EdgeState = app.extensions["rhetor"]
    return state


def create_app(runtime: Runtime, settings: Settings | None = None) -> QuartTrio:
    """
    The Quart-Trio app serving Rhetor's HTTP API, SSE streams and ``/v1``.

    Error handling: every error, including unknown routes and bugs, answers
    ``{"error": {...}}`` JSON; unexpected exceptions are logged, never shown.
    """
    settings = runtime.settings if settings is None else settings
    app = QuartTrio("rhetor")
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        RESPONSE_TIMEOUT=None,
        PROPAGATE_EXCEPTIONS=False,
        JSON_SORT_KEYS=False,
    )
    state = EdgeState(runtime, settings)
    app.extensions["rhetor"] = state

    guard = _Guard(settings, state.allowed_hosts)
    app.register_error_handler(Exception, _on_error)
    app.before_request(guard.check)
    if settings.cors_origins:
        # Same-origin only (the default) needs no response hook at all.
        app.after_request(guard.cors)

    app.register_blueprint(core_blueprint(state))
    app.register_blueprint(messages_blueprint(runtime))
    app.register_blueprint(templates_blueprint(runtime))
    app.register_blueprint(prompts_blueprint(runtime))
    app.register_blueprint(contexts_blueprint(runtime))
    app.register_blueprint(budget_blueprint(runtime))
    app.register_blueprint(evaluate_blueprint(runtime))
    app.register_blueprint(compat_blueprint(runtime))  # /v1: OpenAI and Anthropic APIs
    app.register_blueprint(console_blueprint())  # /ui: the web console (rhetor.edge._ui)
    app.register_blueprint(docs_blueprint())  # /openapi.json and /docs (rhetor.edge._openapi)

    state.endpoints = (*_endpoints(app), f"WS {WS_PATH}", f"WS {LEGACY_WS_PATH}")
    return app


def _endpoints(app: QuartTrio) -> list[str]:
    """Every HTTP route as ``"METHODS /rule"``, for GET /."""
    listed = []
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint == "static":
            continue
        methods = sorted(m for m in (rule.methods or ()) if m not in ("HEAD", "OPTIONS"))
        listed.append(f"{' '.join(methods) or 'WS'} {rule.rule}")
    return listed


# -- what every request passes: the guard, errors, CORS ------------------------


async def _on_error(exc: Exception) -> Response:
    """Any error outside ``/v1`` in Rhetor's shape (with ``Allow`` on a 405)."""
    response = error_response(rhetor_error(exc))
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        response.headers["Allow"] = ", ".join(exc.valid_methods)
    return response


@attrs.frozen
class _Guard:
    """
    The app-wide request hooks: the checks before any handler, CORS after it.
    """

    _settings: Settings
    _allowed_hosts: frozenset[str] | None

    async def check(self) -> Response | None:
        """
        Refuse what ``rhetor.edge._checks.refusal`` refuses, before the handler runs.

        ``asgi_app`` has already checked the request (its verdict is in the
        scope), so that a refused request reaches this app only to get its
        error in the right shape; an app served some other way checks here.
        A CORS preflight is answered here.
        """
        scope: Any = request.scope
        rule = request.url_rule
        observe.current().routed(rule.rule if rule is not None else UNMATCHED)
        error: RhetorError | None = scope.get(_REFUSAL, _UNCHECKED)
        if error is _UNCHECKED:
            error = refusal(self._settings, self._allowed_hosts, scope)
        if error is not None:
            raise error
        if request.method == "OPTIONS":
            headers = request.headers
            origin = headers.get("Origin")
            if origin and "Access-Control-Request-Method" in headers:
                return self._preflight(origin)
        return None

    def _preflight(self, origin: str) -> Response:
        response = Response("", status=204)
        if origin_allowed(self._settings, origin, None):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, DELETE, OPTIONS"
            asked = request.headers.get("Access-Control-Request-Headers")
            response.headers["Access-Control-Allow-Headers"] = (
                asked or "Content-Type, Authorization, X-API-Key"
            )
            response.headers["Access-Control-Max-Age"] = "600"
            response.headers["Vary"] = "Origin"
        return response

    async def cors(self, response: Response) -> Response:
        """Let an allowed origin's page read ``response``."""
        origin = request.headers.get("Origin")
        if origin and origin_allowed(self._settings, origin, None):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
        return response


def asgi_app(app: QuartTrio) -> ASGIFramework:
    """
    The ASGI app Hypercorn serves: ``/ws`` handled directly, everything else by Quart.

    The WebSocket path skips Quart's per-connection machinery (its request
    context, tasks and channels cost about 15 KB a socket); the checks, the
    Session actor and the frame protocol are the same. Every HTTP request is
    checked here (``rhetor.edge._checks.refusal``), and one with a body is watched
    by :class:`rhetor.edge._checks.UnreadBody`, so that a reply sent before its
    body was read closes the connection instead of stalling it.
    """
    state = edge_state(app)
    direct = direct_routes(state.runtime, state.settings)

    async def serve_http(scope: Any, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        # Checked once here, on the raw headers; the app's guard raises the
        # verdict so that its error handlers give it the route's shape.
        refused = refusal(state.settings, state.allowed_hosts, scope)
        scope = {**scope, _REFUSAL: refused}
        route = direct.get(scope["path"]) if scope["method"] == "POST" else None
        if route is not None and (refused is not None or route.declines(scope["headers"])):
            route = None
        if route is not None:
            await route.serve(app, scope, receive, send)
            return
        if has_body(scope["headers"]):
            # A drain, when one is needed, runs in the app's own background
            # nursery (opened by the lifespan): one per request would cost every POST.
            watch = UnreadBody(receive, send, app.nursery)
            await app(scope, watch.receive, watch.send)
            return
        await app(scope, receive, send)

    async def serve_asgi(scope: Any, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        kind = scope["type"]
        if kind == "websocket" and scope["path"] in (WS_PATH, LEGACY_WS_PATH):
            await serve_websocket(state, scope, receive, send)
            return
        if kind == "http":
            # Observed: its request id, Server-Timing, access-log line, metrics and span.
            await state.observer.serve_http(serve_http, scope, receive, send)
            return
        await app(scope, receive, send)

    return serve_asgi
