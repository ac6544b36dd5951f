"""
The HTTP and WebSocket edge: a Quart-Trio app over a :class:`Runtime`.

The edge only translates. A handler reads the JSON body field by field, makes
one ``Runtime`` call, and turns the result into JSON, Server-Sent Events or
WebSocket frames. Routing, budget and context logic live in the actors.

Every error leaves as ``{"error": {"type", "message", "field"?}}`` with the
status of the :class:`RhetorError` it came from; :func:`_as_rhetor_error` is
the one place where other exceptions (Werkzeug's HTTP errors, actor errors)
are translated. Nothing answers with a traceback.
"""

from __future__ import annotations

import contextlib
import hmac
import itertools
import json
import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

import attrs
import trio
from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable, Scope
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.datastructures import Headers, MultiDict
from werkzeug.exceptions import HTTPException, MethodNotAllowed

import actors
from rhetor._errors import (
    PayloadTooLarge,
    RhetorError,
    ServiceUnavailable,
    Unauthorized,
    ValidationError,
)
from rhetor._fields import (
    read_bool,
    read_int,
    read_list,
    read_llm_request,
    read_number,
    read_object,
    read_str,
    read_str_list,
)
from rhetor._session import Frame, Inbound, Oversized, Session
from rhetor._settings import Settings

if TYPE_CHECKING:
    from rhetor._router import Chunk, LLMRequest
    from rhetor.runtime import Runtime

__all__ = ["EdgeState", "create_app", "edge_state"]

log = logging.getLogger("rhetor.edge")

DESCRIPTION = "LLM Management System for Tekton"
# Paths anyone may read, even with an API key set: discovery and health checks.
_OPEN_PATHS = frozenset({"/", "/health"})
_WS_PATH = "/ws"
# The first Rhetor's streaming socket, kept for the clients written against it.
_LEGACY_WS_PATH = "/ws/rhetor/streaming"
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
# Frames waiting for a slow client before the session's requests pause.
_OUTBOX_FRAMES = 64
# Seconds a new socket waits for its Session actor to start.
_SESSION_START_TIMEOUT = 5.0
_JSON = "application/json"


class InvalidJSON(RhetorError):
    """Raised when a request body is not valid JSON (400)."""

    code = "invalid_json"
    status = 400


class _HTTPError(RhetorError):
    """A Werkzeug HTTP error (404, 405, ...) in Rhetor's error shape."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status  # type: ignore[misc]  # per instance: mirrors the HTTP error
        self.code = code  # type: ignore[misc]


@attrs.define(eq=False)
class EdgeState:
    """
    What the server needs to reach inside the app: open WebSockets, for shutdown.
    """

    runtime: Runtime
    settings: Settings
    # Invariant: one scope per WebSocket handler between accept and close.
    _sockets: set[trio.CancelScope] = attrs.field(factory=set)
    closing: bool = False

    def close_websockets(self) -> None:
        """Close every open WebSocket (going away); new ones are refused from now on."""
        self.closing = True
        for scope in list(self._sockets):
            scope.cancel()


def edge_state(app: QuartTrio) -> EdgeState:
    """The :class:`EdgeState` of an app made by :func:`create_app`."""
    state: EdgeState = app.extensions["rhetor"]
    return state


# -- translation ----------------------------------------------------------


def _as_rhetor_error(exc: BaseException) -> RhetorError | None:
    """The one translation point from other libraries' errors to Rhetor's."""
    if isinstance(exc, RhetorError):
        return exc
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return _as_rhetor_error(exc.exceptions[0])
    if isinstance(exc, HTTPException):
        status = exc.code or 500
        if status == 413:
            return PayloadTooLarge("request body is over the size limit")
        message = exc.description or exc.name
        return _HTTPError(status, _HTTP_TYPES.get(status, "http_error"), message)
    if isinstance(exc, actors.ActorError):
        return ServiceUnavailable(f"an internal actor is unavailable: {exc}")
    return None


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, content_type=_JSON, headers=headers)


def _error_response(error: RhetorError) -> Response:
    headers: dict[str, str] = {}
    if error.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="rhetor"'
    if error.status in (401, 413):
        # Refused before the body was read: the unread body would desynchronise
        # a kept-alive connection, so close it after this response.
        headers["Connection"] = "close"
    return _json({"error": error.to_dict()}, error.status, headers or None)


def _sse(body: Mapping[str, Any]) -> bytes:
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def _plain(value: Any) -> Any:
    """A storage result (attrs objects, tuples, mappings) as plain JSON values."""
    if attrs.has(type(value)):
        return _plain(attrs.asdict(value, recurse=True))
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


# -- auth and CORS ----------------------------------------------------------


def _presented_key(headers: Any, query: Any) -> str | None:
    key: str | None = headers.get("X-API-Key")
    if key is None:
        auth = headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            key = auth[7:].strip()
    if key is None and query is not None:
        key = query.get("api_key")
    return key


def _authorized(expected: str | None, presented: str | None) -> bool:
    if expected is None:
        return True
    if presented is None:
        return False
    # Constant time, so the comparison leaks nothing about how much of a key matched.
    return hmac.compare_digest(presented.encode(), expected.encode())


def _origin_allowed(settings: Settings, origin: str, host: str | None) -> bool:
    if "*" in settings.cors_origins or origin in settings.cors_origins:
        return True
    return host is not None and urlsplit(origin).netloc == host


# -- bodies -------------------------------------------------------------------


async def _body() -> dict[str, Any]:
    raw = await request.get_data(cache=False)
    if not raw or not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidJSON(f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object")
    return body


def _query_int(name: str, default: int | None, minimum: int = 0) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError(name, "must be a whole number") from None
    if value < minimum:
        raise ValidationError(name, f"must be at least {minimum}")
    return value


def _only(body: Mapping[str, Any], allowed: frozenset[str]) -> dict[str, Any]:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ValidationError(unknown[0], "unknown field")
    return dict(body)


# -- streaming ----------------------------------------------------------------


async def _sse_response(runtime: Runtime, llm_request: LLMRequest) -> Response:
    """
    Stream a request as Server-Sent Events.

    The first chunk is awaited before answering, so a request refused up front
    (budget, validation, no provider) gets its proper status and JSON error.

    Cancellation: when the client goes away, Quart cancels the response and
    closes the body generator, whose ``aclosing`` closes ``send_stream`` and
    with it the provider call.
    """
    chunks = runtime.send_stream(llm_request)
    try:
        first = await chunks.__anext__()
    except BaseException:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await chunks.aclose()
        raise

    async def events() -> AsyncIterator[bytes]:
        context = llm_request.context_id
        async with aclosing(chunks):
            try:
                yield _chunk_event(first, context)
                if first.done:
                    return
                async for chunk in chunks:
                    yield _chunk_event(chunk, context)
            except Exception as exc:
                error = _as_rhetor_error(exc)
                if error is None:
                    log.exception("stream %s failed", llm_request.request_id)
                    body = {"type": "internal_error", "message": "internal error"}
                else:
                    body = error.to_dict()
                yield _sse({"chunk": "", "context": context, "done": True, "error": body})

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    response = Response(events(), content_type="text/event-stream", headers=headers)
    response.timeout = None  # the router enforces the request's deadline
    return response


def _chunk_event(chunk: Chunk, context: str | None) -> bytes:
    if chunk.done and chunk.reply is not None:
        return _sse({**chunk.reply.to_dict(), "chunk": "", "done": True})
    body = {
        "chunk": chunk.text,
        "context": context,
        "model": chunk.model,
        "provider": chunk.provider,
        "done": False,
    }
    return _sse(body)


# -- the app --------------------------------------------------------------------


def create_app(runtime: Runtime, settings: Settings | None = None) -> QuartTrio:
    """
    The Quart-Trio app serving Rhetor's HTTP API, SSE streams and ``/ws``.

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
    rt = runtime
    route_list: list[str] = []

    # -- cross-cutting: errors, auth, limits, CORS -----------------------------

    @app.errorhandler(Exception)
    async def on_error(exc: Exception) -> Response:
        error = _as_rhetor_error(exc)
        if error is None:
            log.error(
                "unexpected %s on %s %s",
                type(exc).__name__,
                request.method,
                request.path,
                exc_info=exc,
            )
            error = RhetorError("internal error; see the server log")
        response = _error_response(error)
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    async def guard() -> Response | None:
        # Runs on every request: each check costs only when its feature is in use.
        if request.method == "OPTIONS":
            origin = request.headers.get("Origin")
            if origin and "Access-Control-Request-Method" in request.headers:
                return _preflight(origin)
        length = request.content_length
        if length is not None and length > settings.max_body_bytes:
            raise PayloadTooLarge(
                f"body of {length} bytes is over the {settings.max_body_bytes} byte limit"
            )
        if settings.api_key is not None and request.path not in _OPEN_PATHS:
            presented = _presented_key(request.headers, None)
            if not _authorized(settings.api_key, presented):
                raise Unauthorized(
                    "a valid API key is required (X-API-Key or Authorization: Bearer)"
                )
        return None

    if settings.api_key is not None or settings.cors_origins:
        # With neither, Quart's MAX_CONTENT_LENGTH already refuses big bodies
        # (413, before reading them) and there is nothing else to check.
        app.before_request(guard)

    def _preflight(origin: str) -> Response:
        response = Response("", status=204)
        if _origin_allowed(settings, origin, None):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, DELETE, OPTIONS"
            asked = request.headers.get("Access-Control-Request-Headers")
            response.headers["Access-Control-Allow-Headers"] = (
                asked or "Content-Type, Authorization, X-API-Key"
            )
            response.headers["Access-Control-Max-Age"] = "600"
            response.headers["Vary"] = "Origin"
        return response

    async def cors(response: Response) -> Response:
        origin = request.headers.get("Origin")
        if origin and _origin_allowed(settings, origin, None):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
        return response

    if settings.cors_origins:
        # Same-origin only (the default) needs no response hook at all.
        app.after_request(cors)

    # -- info -------------------------------------------------------------------

    @app.get("/")
    async def root() -> Response:
        from rhetor.runtime import VERSION

        return _json(
            {
                "name": "Rhetor",
                "version": VERSION,
                "description": DESCRIPTION,
                "endpoints": route_list,
            }
        )

    @app.get("/health")
    async def health() -> Response:
        return _json(await rt.health())

    @app.get("/providers")
    async def providers() -> Response:
        return _json(await rt.providers())

    @app.post("/provider")
    async def set_provider() -> Response:
        body = await _body()
        provider = read_str(body, "provider", required=True)
        return _json(await rt.set_provider(provider, read_str(body, "model")))

    # -- LLM requests ------------------------------------------------------------

    async def answer(body: Mapping[str, Any], *, chat: bool, stream: bool | None) -> Response:
        options = read_llm_request(body, chat=chat)
        llm_request = rt.request(**options.kwargs)
        if options.streaming if stream is None else stream:
            return await _sse_response(rt, llm_request)
        reply = await rt.send(llm_request)
        return _json(reply.to_dict())

    @app.post("/message")
    async def message() -> Response:
        return await answer(await _body(), chat=False, stream=None)

    @app.post("/stream")
    async def stream() -> Response:
        return await answer(await _body(), chat=False, stream=True)

    @app.post("/chat")
    async def chat() -> Response:
        return await answer(await _body(), chat=True, stream=None)

    # -- templates ---------------------------------------------------------------

    template_fields = frozenset(
        {
            "name",
            "content",
            "description",
            "category",
            "required",
            "optional",
            "defaults",
            "metadata",
        }
    )

    def template_body(body: Mapping[str, Any], *, creating: bool) -> dict[str, Any]:
        fields = _only(body, template_fields)
        for name in ("name", "content", "description", "category"):
            read_str(fields, name, required=creating and name in ("name", "content"))
        for name in ("required", "optional"):
            read_str_list(fields, name)
        for name in ("defaults", "metadata"):
            read_object(fields, name)
        return {k: v for k, v in fields.items() if v is not None}

    @app.get("/templates")
    async def list_templates() -> Response:
        category = request.args.get("category") or None
        return _json({"templates": _plain(await rt.list_templates(category))})

    @app.post("/templates")
    async def create_template() -> Response:
        fields = template_body(await _body(), creating=True)
        name, content = fields.pop("name"), fields.pop("content")
        return _json(_plain(await rt.create_template(name, content, **fields)), 201)

    @app.get("/templates/<template_id>")
    async def get_template(template_id: str) -> Response:
        version = _query_int("version", None, minimum=1)
        return _json(_plain(await rt.get_template(template_id, version)))

    @app.put("/templates/<template_id>")
    async def update_template(template_id: str) -> Response:
        fields = template_body(await _body(), creating=False)
        return _json(_plain(await rt.update_template(template_id, **fields)))

    @app.delete("/templates/<template_id>")
    async def delete_template(template_id: str) -> Response:
        await rt.delete_template(template_id)
        return _json({"deleted": True, "id": template_id})

    @app.post("/templates/<template_id>/render")
    async def render_template(template_id: str) -> Response:
        variables = read_object(await _body(), "variables") or {}
        rendered = await rt.render_template(template_id, variables)
        return _json({"template": template_id, "rendered": rendered})

    @app.get("/templates/<template_id>/versions")
    async def template_versions(template_id: str) -> Response:
        versions = await rt.template_versions(template_id)
        return _json({"template": template_id, "versions": _plain(versions)})

    # -- system prompts ------------------------------------------------------------

    prompt_fields = frozenset({"name", "component", "content", "description", "tags", "is_default"})

    def prompt_body(body: Mapping[str, Any], *, creating: bool) -> dict[str, Any]:
        fields = _only(body, prompt_fields)
        for name in ("name", "component", "content"):
            read_str(fields, name, required=creating)
        read_str(fields, "description")
        read_str_list(fields, "tags")
        if "is_default" in fields:
            read_bool(fields, "is_default", False)
        return {k: v for k, v in fields.items() if v is not None}

    @app.get("/prompts")
    async def list_prompts() -> Response:
        component = request.args.get("component") or None
        return _json({"prompts": _plain(await rt.list_prompts(component))})

    @app.post("/prompts")
    async def create_prompt() -> Response:
        fields = prompt_body(await _body(), creating=True)
        name, component, content = (
            fields.pop("name"),
            fields.pop("component"),
            fields.pop("content"),
        )
        return _json(_plain(await rt.create_prompt(name, component, content, **fields)), 201)

    @app.post("/prompts/generate")
    async def generate_prompt() -> Response:
        body = await _body()
        task = read_str(body, "task", required=True)
        context = body.get("context")
        if context is not None and not isinstance(context, str | dict):
            raise ValidationError("context", "must be an object, a string or null")
        fmt = read_str(body, "format", default="instruction")
        prompt = await rt.generate_prompt(task, context, fmt)
        return _json({"prompt": prompt, "task": task, "format": fmt})

    @app.get("/prompts/<prompt_id>")
    async def get_prompt(prompt_id: str) -> Response:
        return _json(_plain(await rt.get_prompt(prompt_id)))

    @app.put("/prompts/<prompt_id>")
    async def update_prompt(prompt_id: str) -> Response:
        fields = prompt_body(await _body(), creating=False)
        return _json(_plain(await rt.update_prompt(prompt_id, **fields)))

    @app.delete("/prompts/<prompt_id>")
    async def delete_prompt(prompt_id: str) -> Response:
        await rt.delete_prompt(prompt_id)
        return _json({"deleted": True, "id": prompt_id})

    # -- contexts ----------------------------------------------------------------

    @app.get("/contexts")
    async def list_contexts() -> Response:
        limit = _query_int("limit", 100, minimum=1)
        offset = _query_int("offset", 0)
        contexts = await rt.list_contexts(limit or 100, offset or 0)
        return _json({"contexts": _plain(contexts)})

    @app.get("/contexts/search")
    async def search_contexts() -> Response:
        query = request.args.get("q", "")
        limit = _query_int("limit", 20, minimum=1) or 20
        hits = await rt.search_contexts(query, limit)
        return _json({"query": query, "results": _plain(hits)})

    @app.get("/contexts/<context_id>")
    async def get_context(context_id: str) -> Response:
        limit = _query_int("limit", None, minimum=1)
        return _json(_plain(await rt.get_context(context_id, limit)))

    @app.delete("/contexts/<context_id>")
    async def delete_context(context_id: str) -> Response:
        await rt.delete_context(context_id)
        return _json({"deleted": True, "id": context_id})

    @app.post("/contexts/<context_id>/summarize")
    async def summarize_context(context_id: str) -> Response:
        return _json(await rt.summarize_context(context_id))

    # -- budget ------------------------------------------------------------------

    @app.get("/budget")
    async def budget() -> Response:
        return _json(await rt.budget())

    @app.get("/budget/usage")
    async def budget_usage() -> Response:
        period = request.args.get("period") or "daily"
        group_by = request.args.get("group_by") or "provider"
        rows = await rt.budget_usage(period, group_by)
        return _json({"period": period, "group_by": group_by, "usage": _plain(rows)})

    @app.post("/budget/limit")
    async def budget_limit() -> Response:
        body = await _body()
        period = read_str(body, "period", required=True)
        amount = read_number(body, "limit", required=True)
        assert amount is not None
        if amount < 0:
            raise ValidationError("limit", "must not be negative")
        return _json(await rt.set_limit(period, amount, read_str(body, "provider")))

    @app.post("/budget/policy")
    async def budget_policy() -> Response:
        body = await _body()
        return _json(await rt.set_policy(read_str(body, "policy", required=True)))

    @app.post("/budget/estimate")
    async def budget_estimate() -> Response:
        body = await _body()
        result = await rt.estimate(
            read_str(body, "prompt"),
            messages=read_list(body, "messages"),
            model=read_str(body, "model"),
            task_type=read_str(body, "task_type", default=None)
            or read_str(body, "task", default="default"),
            max_tokens=read_int(body, "max_tokens", minimum=1),
        )
        return _json(result)

    @app.post("/evaluate")
    async def evaluate() -> Response:
        body = await _body()
        prompt = read_str(body, "prompt", required=True)
        response = read_str(body, "response", required=True)
        criteria = read_str_list(body, "criteria")
        return _json(await rt.evaluate(prompt, response, criteria))

    # -- WebSocket -----------------------------------------------------------------

    from rhetor._compat import compat_blueprint  # here: _compat imports this module

    app.register_blueprint(compat_blueprint(runtime, settings))  # /v1: OpenAI and Anthropic APIs

    # Every route, for GET / (computed once, after all routes exist).
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint == "static":
            continue
        methods = sorted(m for m in (rule.methods or ()) if m not in ("HEAD", "OPTIONS"))
        route_list.append(f"{' '.join(methods) or 'WS'} {rule.rule}")
    route_list.append(f"WS {_WS_PATH}")
    route_list.append(f"WS {_LEGACY_WS_PATH}")
    return app


def asgi_app(app: QuartTrio) -> ASGIFramework:
    """
    The ASGI app Hypercorn serves: ``/ws`` handled directly, everything else by Quart.

    The WebSocket path skips Quart's per-connection machinery (its request
    context, tasks and channels cost about 15 KB a socket); the checks, the
    Session actor and the frame protocol are the same.
    """
    state = edge_state(app)

    async def serve_asgi(
        scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "websocket" and scope["path"] in (_WS_PATH, _LEGACY_WS_PATH):
            await _websocket(state, scope, receive, send)
        else:
            await app(scope, receive, send)

    return serve_asgi


async def _deny(scope: Any, send: Any, error: RhetorError | None, body: Any = None) -> None:
    """Refuse a WebSocket handshake with a JSON HTTP answer where the server allows it."""
    if "websocket.http.response" in scope.get("extensions", {}):
        payload = body if body is not None else {"error": error.to_dict() if error else {}}
        status = 403 if error is None else error.status
        await send(
            {
                "type": "websocket.http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": json.dumps(payload).encode()})
    else:
        await send({"type": "websocket.close", "code": 1008})


async def _websocket(state: EdgeState, scope: Any, receive: Any, send: Any) -> None:
    """
    One WebSocket on ``/ws``: check it, then run it with a Session actor.

    Cancellation: a disconnect (or server shutdown) ends this; the session is
    then stopped, which cancels its requests down to the provider calls.
    """
    # The checks run in their own frame, so that the parsed headers and query
    # are not kept alive for the life of the socket (about 1.5 KB together).
    if not await _admit(state, scope, receive, send):
        return
    legacy = _Legacy() if scope["path"] == _LEGACY_WS_PATH else None
    await _serve_socket(state, receive, send, legacy)


async def _admit(state: EdgeState, scope: Any, receive: Any, send: Any) -> bool:
    """Take the handshake; True if the socket may open, else refuse it and answer False."""
    settings = state.settings
    headers = Headers([(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]])
    query = MultiDict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
    if (await receive())["type"] != "websocket.connect":
        return False
    origin = headers.get("Origin")
    if origin and not _origin_allowed(settings, origin, headers.get("Host")):
        body = {"error": {"type": "forbidden", "message": f"origin {origin!r} is not allowed"}}
        await _deny(scope, send, None, body)
        return False
    if not _authorized(settings.api_key, _presented_key(headers, query)):
        await _deny(scope, send, Unauthorized("a valid API key is required"))
        return False
    if state.closing:
        await _deny(scope, send, ServiceUnavailable("the server is shutting down"))
        return False
    return True


class _Legacy:
    """
    Translation for the first Rhetor's streaming socket (``/ws/rhetor/streaming``).

    Its clients send ``{"prompt", "temperature", "stream", "model"?}`` and read
    ``content_chunk`` / ``content_complete`` / ``error`` messages. Each request
    becomes an ``LLM_REQUEST`` frame for the same Session actor, and the
    Session's frames are translated back; nothing else differs.
    """

    _OPTIONS = (
        "model",
        "provider",
        "temperature",
        "max_tokens",
        "task_type",
        "context",
        "component",
        "system_prompt",
    )

    def __init__(self) -> None:
        self._ids = itertools.count(1)

    def inbound(self, data: str | bytes) -> str | bytes:
        try:
            body = json.loads(data)
        except ValueError:
            return data  # the Session answers a bad frame with an ERROR
        if not isinstance(body, dict) or "type" in body:
            return data
        payload: dict[str, Any] = {
            "message": body.get("prompt"),
            "streaming": body.get("stream", True),
        }
        payload.update((k, body[k]) for k in self._OPTIONS if k in body)
        frame = {
            "type": "LLM_REQUEST",
            "id": f"legacy-{next(self._ids)}",
            "source": "legacy",
            "payload": payload,
        }
        return json.dumps(frame)

    def outbound(self, frame: Frame) -> dict[str, Any] | None:
        payload = frame.get("payload") or {}
        if frame["type"] == "UPDATE":
            return (
                {"type": "content_chunk", "text": payload["chunk"]} if "chunk" in payload else None
            )
        if frame["type"] == "RESPONSE":
            return {"type": "content_complete", "text": payload.get("message", ""), **payload}
        if frame["type"] == "ERROR":
            return {
                "type": "error",
                "error": payload.get("message", ""),
                "error_type": payload.get("type"),
            }
        return None


async def _serve_socket(
    state: EdgeState, receive: Any, send: Any, legacy: _Legacy | None = None
) -> None:
    """
    Run one accepted WebSocket: a Session actor, an inbound pump and an outbox pump.
    """
    runtime, limit = state.runtime, state.settings.max_body_bytes
    # trio's channel: less memory per idle socket and half the cost per frame of anyio's.
    outbox, frames = trio.open_memory_channel[Frame](_OUTBOX_FRAMES)
    name = f"session:{uuid.uuid4().hex}"
    spec = actors.ChildSpec(
        name, partial(Session, runtime, outbox), restart="temporary", shutdown_timeout=5.0
    )
    try:
        with trio.fail_after(_SESSION_START_TIMEOUT):
            ref = await runtime.sessions.start_child(spec)
    except (actors.ActorError, TimeoutError) as exc:
        outbox.close()
        frames.close()
        log.error("could not start a session: %s", exc)
        await send({"type": "websocket.close", "code": 1011, "reason": "session unavailable"})
        return
    await send({"type": "websocket.accept"})
    scope = trio.CancelScope()
    state._sockets.add(scope)
    try:
        with scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_pump_out, frames, send, nursery.cancel_scope, legacy)
                await _pump_in(ref, receive, limit, legacy)
                nursery.cancel_scope.cancel()
        if scope.cancelled_caught:
            with (
                trio.CancelScope(shield=True),
                trio.move_on_after(2.0),
                contextlib.suppress(Exception),
            ):
                await send(
                    {"type": "websocket.close", "code": 1001, "reason": "server shutting down"}
                )
    finally:
        state._sockets.discard(scope)
        frames.close()
        # ActorError: already gone, it crashed or stopped itself.
        with (
            trio.CancelScope(shield=True),
            trio.move_on_after(6.0),
            contextlib.suppress(actors.ActorError),
        ):
            await runtime.sessions.stop_child(name)


async def _pump_in(ref: actors.Ref, receive: Any, limit: int, legacy: _Legacy | None) -> None:
    while True:
        event = await receive()
        if event["type"] != "websocket.receive":
            return  # websocket.disconnect
        data = event.get("text")
        if data is None:
            data = event.get("bytes") or b""
        if legacy is not None:
            data = legacy.inbound(data)
        size = len(data.encode()) if isinstance(data, str) else len(data)
        message: Inbound | Oversized = Oversized(size, limit) if size > limit else Inbound(data)
        try:
            await ref.tell(message)
        except actors.ActorError:
            return  # the session is gone; close the socket


async def _pump_out(frames: Any, send: Any, done: trio.CancelScope, legacy: _Legacy | None) -> None:
    with frames:
        async for frame in frames:
            if legacy is not None and (frame := legacy.outbound(frame)) is None:
                continue
            try:
                await send({"type": "websocket.send", "text": json.dumps(frame)})
            except Exception:
                break  # the client went away; the inbound side sees the disconnect
    # The session stopped and closed its outbox: close the socket.
    done.cancel()
