"""
The HTTP edge: a Quart-Trio app over a :class:`Runtime`, and the ASGI app Hypercorn serves.

The edge only translates. A handler reads the JSON body field by field, makes
one ``Runtime`` call, and turns the result into JSON or Server-Sent Events.
Routing, budget and context logic live in the actors; the WebSockets are
``rhetor.edge._sockets``.

Every error leaves as ``{"error": {"type", "message", "field"?}}`` with the
status of the :class:`RhetorError` it came from; :func:`_as_rhetor_error` is
the one place where other exceptions (Werkzeug's HTTP errors, actor errors)
are translated. Nothing answers with a traceback.

Before any handler runs, every request passes ``rhetor.edge._checks`` (Host
allow-list, size, API key, Origin, content type); bodies are then parsed by
:func:`rhetor.edge._fields.parse_json`, which refuses what no field may hold. See
"Security defaults" in ``docs/architecture.md``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import attrs
import trio
from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, MethodNotAllowed

import actors
from rhetor._errors import (
    InvalidJSON,
    PayloadTooLarge,
    RhetorError,
    ServiceUnavailable,
    ValidationError,
)
from rhetor._settings import Settings
from rhetor.edge._checks import UnreadBody, dumps, has_body, origin_allowed, refusal
from rhetor.edge._fields import (
    parse_json,
    query_int,
    read_bool,
    read_int,
    read_list,
    read_llm_request,
    read_number,
    read_object,
    read_str,
    read_str_list,
)
from rhetor.edge._sockets import LEGACY_WS_PATH, WS_PATH, EdgeState, serve_websocket
from rhetor.edge._ui import console_blueprint

if TYPE_CHECKING:
    from rhetor.routing._router import Chunk, LLMRequest
    from rhetor.runtime import Runtime

__all__ = ["EdgeState", "InvalidJSON", "asgi_app", "create_app", "dumps", "edge_state"]

log = logging.getLogger("rhetor.edge")

DESCRIPTION = "LLM Management System for Tekton"
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
_JSON = "application/json"
# The scope key where asgi_app leaves its verdict on a request, for the guard.
_REFUSAL = "rhetor.refusal"
_UNCHECKED: Any = object()


class _HTTPError(RhetorError):
    """A Werkzeug HTTP error (404, 405, ...) in Rhetor's error shape."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status  # type: ignore[misc]  # per instance: mirrors the HTTP error
        self.code = code  # type: ignore[misc]


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
    return Response(dumps(body), status=status, content_type=_JSON, headers=headers)


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
    return b"data: " + dumps(body).encode() + b"\n\n"


def _plain(value: Any) -> Any:
    """A storage result (attrs objects, tuples, mappings) as plain JSON values."""
    if attrs.has(type(value)):
        return _plain(attrs.asdict(value, recurse=True))
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


# -- bodies -------------------------------------------------------------------


async def _body() -> dict[str, Any]:
    """
    The request's JSON object body (``{}`` when empty), checked by ``parse_json``.

    Error handling: ``InvalidJSON`` (400) or ``ValidationError`` (422).
    """
    raw = await request.get_data(cache=False)
    if not raw or not raw.strip():
        return {}
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object")
    return body


def _query_int(name: str, default: int | None, minimum: int = 0) -> int | None:
    return query_int(request.args.get(name), name, default, minimum=minimum)


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

    @app.before_request
    async def guard() -> Response | None:
        """
        Refuse what ``rhetor.edge._checks.refusal`` refuses, before the handler runs.

        ``asgi_app`` has already checked the request (its verdict is in the
        scope), so that a refused request reaches this app only to get its
        error in the right shape; an app served some other way checks here.
        A CORS preflight is answered here.
        """
        scope: Any = request.scope
        error: RhetorError | None = scope.get(_REFUSAL, _UNCHECKED)
        if error is _UNCHECKED:
            error = refusal(settings, state.allowed_hosts, scope)
        if error is not None:
            raise error
        if request.method == "OPTIONS":
            headers = request.headers
            origin = headers.get("Origin")
            if origin and "Access-Control-Request-Method" in headers:
                return _preflight(origin)
        return None

    def _preflight(origin: str) -> Response:
        response = Response("", status=204)
        if origin_allowed(settings, origin, None):
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
        if origin and origin_allowed(settings, origin, None):
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

    from rhetor.edge._compat import compat_blueprint  # here: _compat imports this module

    app.register_blueprint(compat_blueprint(runtime, settings))  # /v1: OpenAI and Anthropic APIs
    app.register_blueprint(console_blueprint())  # /ui: the web console (rhetor.edge._ui)

    # Every route, for GET / (computed once, after all routes exist).
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint == "static":
            continue
        methods = sorted(m for m in (rule.methods or ()) if m not in ("HEAD", "OPTIONS"))
        route_list.append(f"{' '.join(methods) or 'WS'} {rule.rule}")
    route_list.append(f"WS {WS_PATH}")
    route_list.append(f"WS {LEGACY_WS_PATH}")
    return app


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

    async def serve_asgi(scope: Any, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        kind = scope["type"]
        if kind == "websocket" and scope["path"] in (WS_PATH, LEGACY_WS_PATH):
            await serve_websocket(state, scope, receive, send)
            return
        if kind == "http":
            # Checked once here, on the raw headers; the app's guard raises the
            # verdict so that its error handlers give it the route's shape.
            scope = {**scope, _REFUSAL: refusal(state.settings, state.allowed_hosts, scope)}
            if has_body(scope["headers"]):
                # A drain, when one is needed, runs in the app's own background
                # nursery (opened by the lifespan): one per request would cost every POST.
                watch = UnreadBody(receive, send, app.nursery)
                await app(scope, watch.receive, watch.send)
                return
        await app(scope, receive, send)

    return serve_asgi
