"""
The published API: ``/openapi.json`` made from the schemas, and the ``/docs`` page that shows it.

:func:`openapi_document` walks the app's routes once they are all mounted:
each route's :class:`~rhetor.edge._schema.Operation` (its body, query,
reply and status, declared with ``operation``) and its view's docstring
(summary and description) become one OpenAPI 3.1 operation, and every
schema becomes a component through msgspec's JSON Schema generation. The
validation and the document therefore come from the same classes. Errors
are documented in the shape of the route's API family: Rhetor's
``{"error": {type, message, field?, request_id}}``, OpenAI's under
``/v1/chat/completions``, Anthropic's under ``/v1/messages`` (either under
``/v1/models``, by the ``anthropic-version`` header). The WebSocket frames,
which OpenAPI cannot describe as operations, are components shown on the
page under "WebSocket".

``/docs`` is Redoc's standalone page, served from the package
(``rhetor/edge/docs``) with a ``Content-Security-Policy`` that lets it load
from this origin alone: nothing comes from a CDN. Both paths, and the page's
asset, are open even with an API key set
(``rhetor.edge._checks.OPEN_PATHS``): they describe the API, hold no data,
and the page must load the document before it could ask for a key.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import re
import types
from importlib import resources
from typing import Any, get_args

import msgspec
from quart import Blueprint, Response, current_app, request
from werkzeug.routing import Rule

from rhetor._errors import NotFound
from rhetor.edge._http import json_response
from rhetor.edge._schema import (
    Body,
    Operation,
    StreamEvent,
    operation,
    operation_of,
    schema_hook,
)
from rhetor.edge._schemas_anthropic import AnthropicErrorBody
from rhetor.edge._schemas_native import ErrorBody
from rhetor.edge._schemas_openai import OpenAIErrorBody
from rhetor.edge._schemas_ws import LEGACY_FRAMES, PAYLOADS, ClientFrame, ServerFrame
from rhetor.runtime import VERSION

__all__ = [
    "DOCS_ASSETS",
    "DOCS_PATH",
    "DOCS_SECURITY_HEADERS",
    "OPENAPI_PATH",
    "docs_blueprint",
    "docs_page",
    "openapi_document",
]

OPENAPI_PATH = "/openapi.json"
DOCS_PATH = "/docs"
# The page's own files, served under /docs/ from rhetor/edge/docs.
DOCS_ASSETS = ("redoc.standalone.js",)
DOCS_SECURITY_HEADERS = {
    # Redoc styles its elements inline and runs its search in a worker made from a blob.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline';"
        " img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:;"
        " connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none';"
        " frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

_REF = "#/components/schemas/{name}"
_CONVERTER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
_METHODS = ("get", "put", "post", "delete", "patch")

_INFO_DESCRIPTION = """\
Rhetor is the LLM gateway of the Tekton system: it routes each request to a
model (by task, component, capabilities and cost), keeps conversation
contexts, prompts and templates, and holds spending to a budget. It speaks its
own API, OpenAI's Chat Completions and Anthropic's Messages (under `/v1`), and
a WebSocket protocol (`/ws`, see "WebSocket" below).

Every body is JSON sent with `Content-Type: application/json`. Whatever the
endpoint, a body may not hold a string that is not valid Unicode, a number
that is not finite or a whole number outside 64 bits, or nesting deeper than
64 (422 naming the field's path). Whole-number fields take at most
2^53 - 1. With `RHETOR_API_KEY` set, every route except `/`, `/health`,
`/ready`, `/openapi.json`, `/docs` and the console (`/ui`) needs `X-API-Key` or
`Authorization: Bearer` (`/metrics` too, unless `RHETOR_METRICS_PUBLIC=1`).

Errors outside `/v1` are `{"error": {"type", "message", "field"?, "request_id"}}`;
under `/v1` they take the shape of the API the request speaks, so that each SDK
raises its own exception classes. Every error carries the request's id
(`request_id`), which is also its `X-Request-ID` header: send your own to choose it.
"""

_TAGS: dict[str, str] = {
    "core": "What the server is, its health and readiness, its metrics, and which provider answers by default.",
    "messages": "Rhetor's own LLM requests, whole or streamed as Server-Sent Events.",
    "templates": "Versioned prompt templates with `{name}` variables.",
    "prompts": "System prompts, one default per component.",
    "contexts": "Stored conversations. Turns are stored by LLM requests that name a context.",
    "budget": "Spend, limits, the budget policy and estimates.",
    "evaluate": "Scoring a response to a prompt.",
    "openai": "OpenAI Chat Completions, for the official OpenAI SDKs.",
    "anthropic": "Anthropic Messages, for the official Anthropic SDKs.",
    "responses": "OpenAI Responses, for the official OpenAI SDKs and agent frameworks.",
    "v1": "The model list both SDKs read.",
    "docs": "This document and its page.",
    "console": "The web console's static files.",
}
_WEBSOCKET = """\
`/ws` (and the first Rhetor's `/ws/rhetor/streaming`) carries JSON frames both
ways; see docs/websocket.md. The handshake passes the same checks as an HTTP
request (an API key may be given as `?api_key=`). Each client frame is a
ClientFrame whose `payload` is the schema of its `type`; the server answers
with ServerFrames echoing the frame's `id`. A frame that does not fit is
answered `ERROR` with `{type, message, field}`; the socket stays open.

The first Rhetor's socket, `/ws/rhetor/streaming`, also takes its own
LegacyRequest (a prompt) and answers LegacyChunk frames, then LegacyComplete
or LegacyError, each with the request's `request_id`.
"""


def openapi_document(app: Any) -> dict[str, Any]:
    """
    The OpenAPI 3.1 document of ``app``'s routes, from their declared schemas.

    Call it once every blueprint is mounted (``/openapi.json`` does, at its
    first request, and keeps the answer).
    """
    builder = _Builder()
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: (r.rule, r.endpoint)):
        if rule.endpoint == "static":
            continue
        builder.add(rule, app.view_functions[rule.endpoint])
    return builder.document()


class _Builder:
    """Collects the operations, then makes the components of every schema they name."""

    def __init__(self) -> None:
        self._paths: dict[str, dict[str, Any]] = {}
        # Every schema type, in first-use order, and where each one's ref goes.
        self._types: list[Any] = []
        self._holes: list[tuple[dict[str, Any], Any]] = []
        self._tags: list[str] = []

    def _schema(self, kind: Any) -> dict[str, Any]:
        """A placeholder for ``kind``'s schema, filled in by :meth:`document`."""
        slot: dict[str, Any] = {}
        if kind not in self._types:
            self._types.append(kind)
        self._holes.append((slot, kind))
        return slot

    def add(self, rule: Rule, view: Any) -> None:
        spec = operation_of(view)
        path = _CONVERTER.sub(r"{\1}", rule.rule)
        tag = _tag(rule.endpoint)
        if tag not in self._tags:
            self._tags.append(tag)
        summary, description = _docs(view)
        for method in sorted(m.lower() for m in rule.methods or () if m.lower() in _METHODS):
            op: dict[str, Any] = {
                "operationId": rule.endpoint.replace(".", "_"),
                "tags": [tag],
                "summary": summary,
            }
            if description:
                op["description"] = description
            parameters = [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in _CONVERTER.findall(rule.rule)
            ]
            if spec.query is not None:
                parameters.extend(_query_parameters(spec.query))
            if parameters:
                op["parameters"] = parameters
            if spec.body is not None:
                op["requestBody"] = {
                    "required": _has_required(spec.body),
                    "content": {"application/json": {"schema": self._schema(spec.body)}},
                }
            op["responses"] = self._responses(path, spec)
            self._paths.setdefault(path, {})[method] = op

    def _responses(self, path: str, spec: Operation) -> dict[str, Any]:
        content: dict[str, Any] = {}
        if spec.content_type == "application/json":
            schema = self._reply_schema(spec.reply)
            content["application/json"] = {"schema": schema}
        elif spec.content_type == "text/event-stream":
            content[spec.content_type] = {"schema": self._events_schema(spec.events)}
        elif spec.content_type:
            content[spec.content_type] = {"schema": {"type": "string"}}
        if spec.streams and "text/event-stream" not in content:
            content["text/event-stream"] = {"schema": self._events_schema(spec.events)}
        success: dict[str, Any] = {"description": _STATUS_TEXT.get(spec.status, "Success")}
        if content:
            success["content"] = content
        error = self._error_schema(path)
        responses: dict[str, Any] = {str(spec.status): success}
        if spec.also is not None:
            responses[str(spec.also)] = {**success, "description": _STATUS_TEXT.get(spec.also, "")}
        if path.startswith("/v1/") and "{" in path:
            # An id no route can take (a newline, a leading slash) matches no /v1 route,
            # and a path no /v1 route serves gets Rhetor's own 404 (docs/compat.md).
            responses["404"] = {
                "description": "Not found; an id that matches no route gets Rhetor's own 404",
                "content": {
                    "application/json": {"schema": {"anyOf": [error, self._schema(ErrorBody)]}}
                },
            }
        return {
            **responses,
            "4XX": {
                "description": "The request cannot be answered as sent",
                "content": {"application/json": {"schema": error}},
            },
            "5XX": {
                "description": "Rhetor or the providers behind it failed",
                "content": {"application/json": {"schema": error}},
            },
        }

    def _events_schema(self, events: tuple[StreamEvent, ...]) -> dict[str, Any]:
        """
        One Server-Sent Event of a stream, as OpenAPI 3.1 tools read a text/event-stream
        schema: any of the stream's kinds, each its ``event:`` name (where the API names
        its events) and its ``data``: JSON of the kind's schema, or a literal.
        """
        if not events:
            return _EVENT
        kinds = []
        for kind in events:
            data: dict[str, Any] = {"type": "string"}
            if kind.schema is None:
                data["const"] = kind.literal
                title = kind.literal or "data"
            else:
                data["contentMediaType"] = "application/json"
                data["contentSchema"] = self._schema(kind.schema)
                title = kind.schema.__name__
            properties: dict[str, Any] = {"data": data}
            required = ["data"]
            names = kind.names()
            if names:
                properties["event"] = {"enum": list(names)}
                required.append("event")
            kinds.append(
                {"title": title, "type": "object", "properties": properties, "required": required}
            )
        return {"anyOf": kinds}

    def _reply_schema(self, reply: Any) -> dict[str, Any]:
        if reply is None:
            return {"type": "object"}
        if isinstance(reply, types.UnionType):  # either API's format: untagged, so one by one
            return {"anyOf": [self._schema(member) for member in get_args(reply)]}
        return self._schema(reply)

    def _error_schema(self, path: str) -> dict[str, Any]:
        if path.startswith("/v1/messages"):
            return self._schema(AnthropicErrorBody)
        if path.startswith(("/v1/chat/", "/v1/responses")):
            return self._schema(OpenAIErrorBody)
        if path.startswith("/v1/"):
            return {"anyOf": [self._schema(OpenAIErrorBody), self._schema(AnthropicErrorBody)]}
        return self._schema(ErrorBody)

    def document(self) -> dict[str, Any]:
        frames: list[Any] = [
            ClientFrame,
            ServerFrame,
            *dict.fromkeys(PAYLOADS.values()),
            *LEGACY_FRAMES,
        ]
        for frame in frames:
            self._schema(frame)
        schemas, components = msgspec.json.schema_components(
            self._types, schema_hook=schema_hook, ref_template=_REF
        )
        resolved = dict(zip(self._types, schemas, strict=True))
        for slot, kind in self._holes:
            slot.update(resolved[kind])
        for name, schema in components.items():
            _describe_payload(name, schema)
        order = list(_TAGS)
        named = sorted(self._tags, key=lambda t: order.index(t) if t in order else len(order))
        tags = [{"name": name, "description": _TAGS.get(name, "")} for name in named]
        shown = "\n\n".join(
            f"### {cls.__name__}\n\n"
            f'<SchemaDefinition schemaRef="#/components/schemas/{cls.__name__}" />'
            for cls in frames
        )
        websocket = f"{_WEBSOCKET}\n{shown}\n"
        tags.append({"name": "websocket", "x-displayName": "WebSocket", "description": websocket})
        return {
            "openapi": "3.1.0",
            "info": {"title": "Rhetor", "version": VERSION, "description": _INFO_DESCRIPTION},
            "tags": tags,
            "paths": self._paths,
            "components": {
                "schemas": dict(sorted(components.items())),
                "securitySchemes": {
                    "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                    "Bearer": {"type": "http", "scheme": "bearer"},
                },
            },
            # The key is needed only when RHETOR_API_KEY is set: {} says none may do.
            "security": [{}, {"ApiKey": []}, {"Bearer": []}],
        }


_STATUS_TEXT = {200: "Success", 201: "Created", 308: "Moved", 503: "Unavailable"}
# One Server-Sent Event of a route that declares no events: what its data holds is the
# route's (see its description).
_EVENT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "event": {"type": "string"},
        "data": {"type": "string", "contentMediaType": "application/json"},
        "id": {"type": "string"},
        "retry": {"type": "integer"},
    },
    "required": ["data"],
}


def _describe_payload(name: str, schema: dict[str, Any]) -> None:
    """Say on ClientFrame's payload which schema each frame type's payload is."""
    if name != "ClientFrame":
        return
    kinds = ", ".join(f"{kind}: {cls.__name__}" for kind, cls in PAYLOADS.items())
    payload = schema["properties"]["payload"]
    payload["description"] = f"By type ({kinds}); default {{}}."


def _tag(endpoint: str) -> str:
    """The API family of a route: its blueprint (the innermost one under /v1)."""
    parts = endpoint.split(".")
    return parts[-2] if len(parts) > 1 else "core"


def _docs(view: Any) -> tuple[str, str]:
    """A view's docstring as the operation's summary (first line) and description (the rest)."""
    doc = inspect.getdoc(view) or ""
    summary, _, rest = doc.partition("\n")
    return summary.strip() or view.__name__.replace("_", " "), rest.strip()


def _has_required(body: type[Body]) -> bool:
    return bool(body.__struct_fields__) and any(
        field.required for field in msgspec.structs.fields(body)
    )


def _query_parameters(query: type[Any]) -> list[dict[str, Any]]:
    """A query schema's fields as OpenAPI parameters."""
    _, components = msgspec.json.schema_components(
        [query], schema_hook=schema_hook, ref_template=_REF
    )
    schema = components[query.__name__]
    required = set(schema.get("required", ()))
    parameters = []
    for name, prop in schema.get("properties", {}).items():
        parameter: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": name in required,
            "schema": prop,
            # An empty value counts as absent (rhetor.edge._schema.read_query).
            "allowEmptyValue": True,
        }
        if "description" in prop:
            parameter["description"] = prop["description"]
        parameters.append(parameter)
    return parameters


# -- serving ------------------------------------------------------------------------------

_PAGE = """\
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Rhetor API</title>
<link rel="icon" href="data:,">
</head>
<body>
<redoc spec-url="openapi.json"></redoc>
<script src="docs/redoc.standalone.js"></script>
</body>
</html>
"""


@functools.cache
def _asset(name: str) -> tuple[bytes, str]:
    """One of the page's files and its ETag (read once per process)."""
    body = resources.files("rhetor.edge").joinpath("docs", name).read_bytes()
    return body, '"' + hashlib.sha256(body).hexdigest()[:20] + '"'


def docs_page() -> str:
    """The ``/docs`` page: Redoc showing ``/openapi.json``, with every URL on this origin."""
    return _PAGE


def docs_blueprint() -> Blueprint:
    """
    ``GET /openapi.json``, ``GET /docs`` and the page's asset.

    Error handling: an asset that is not the page's is the app's ``not_found``.
    """
    bp = Blueprint("docs", __name__)
    cached: list[dict[str, Any]] = []

    @bp.get(OPENAPI_PATH)
    @operation(reply=None)
    async def openapi() -> Response:
        """
        This document: OpenAPI 3.1, made from the schemas that check every request.
        """
        if not cached:
            cached.append(openapi_document(current_app))
        return json_response(cached[0])

    @bp.get(DOCS_PATH)
    @operation(content_type="text/html")
    async def docs() -> Response:
        """
        This document as a page to browse (Redoc, served from the package).
        """
        return Response(
            docs_page(), content_type="text/html; charset=utf-8", headers=DOCS_SECURITY_HEADERS
        )

    @bp.get(f"{DOCS_PATH}/<name>")
    @operation(content_type="text/javascript")
    async def docs_asset(name: str) -> Response:
        """
        One of the page's own files.
        """
        if name not in DOCS_ASSETS:
            raise NotFound("docs file", name)
        body, etag = _asset(name)
        headers = {**DOCS_SECURITY_HEADERS, "ETag": etag, "Cache-Control": "no-cache"}
        if etag in request.headers.get("If-None-Match", ""):
            return Response(b"", status=304, headers=headers)
        return Response(body, content_type="text/javascript; charset=utf-8", headers=headers)

    return bp
