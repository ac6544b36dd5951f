"""The published API (rhetor/edge/_openapi.py): /openapi.json from the schemas, and the /docs page."""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import msgspec

from rhetor.edge import (
    _schemas_admin,
    _schemas_anthropic,
    _schemas_native,
    _schemas_openai,
    _schemas_ws,
)
from rhetor.edge._app import create_app
from rhetor.edge._openapi import DOCS_ASSETS, openapi_document
from rhetor.edge._schema import Body, operation_of
from rhetor.edge._schemas_ws import PAYLOADS
from rhetor.runtime import start
from tests.helpers import running_server, settings_for

SCHEMA_MODULES = [_schemas_native, _schemas_admin, _schemas_openai, _schemas_anthropic, _schemas_ws]
_METHODS = {"GET", "POST", "PUT", "DELETE", "PATCH"}


async def served_document(tmp_path: Path) -> tuple[dict[str, Any], Any]:
    """The document a real server serves, and the app it describes."""
    async with (
        running_server(settings_for(tmp_path)) as server,
        httpx.AsyncClient(base_url=server.base_url) as client,
    ):
        response = await client.get("/openapi.json")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        return response.json(), create_app(server.runtime)


def refs(value: Any) -> Iterator[str]:
    """Every ``$ref`` anywhere in ``value``."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "$ref":
                yield item
            else:
                yield from refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from refs(item)


def body_classes() -> set[type[Body]]:
    """Every body and payload class the schema modules declare (not the options LLM bodies share)."""
    found = set()
    for module in SCHEMA_MODULES:
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, Body) and cls.__module__ == module.__name__:
                found.add(cls)
    return found - {_schemas_native.LLMOptions}


async def test_every_route_is_in_the_document_with_each_of_its_methods(tmp_path: Path) -> None:
    """Each rule of the app, with every method but HEAD and OPTIONS, is one operation."""
    document, app = await served_document(tmp_path)
    expected = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        expected |= {(path, m.lower()) for m in rule.methods or () if m in _METHODS}
    listed = {(path, m) for path, ops in document["paths"].items() for m in ops}
    assert listed == expected
    for route in ("/message", "/v1/chat/completions", "/v1/messages", "/budget/limit", "/docs"):
        assert route in document["paths"]
    ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))


async def test_every_body_a_route_checks_is_the_schema_it_documents(tmp_path: Path) -> None:
    """A route's requestBody is a ref to the very class its view checks bodies with."""
    document, app = await served_document(tmp_path)
    checked = 0
    for rule in app.url_map.iter_rules():
        spec = operation_of(app.view_functions[rule.endpoint])
        if spec.body is None:
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in (rule.methods or set()) & _METHODS:
            body = document["paths"][path][method.lower()]["requestBody"]
            schema = body["content"]["application/json"]["schema"]
            assert schema == {"$ref": f"#/components/schemas/{spec.body.__name__}"}
            checked += 1
    assert checked >= 15


async def test_every_declared_body_and_frame_is_a_component_and_every_ref_resolves(
    tmp_path: Path,
) -> None:
    """No schema is left out of the document, and no reference in it dangles."""
    document, _ = await served_document(tmp_path)
    components = document["components"]["schemas"]
    missing = {cls.__name__ for cls in body_classes()} - set(components)
    assert missing == set()
    assert {"ClientFrame", "ServerFrame", "ErrorBody", "OpenAIErrorBody"} <= set(components)
    for ref in refs(document):
        assert ref.removeprefix("#/components/schemas/") in components, ref
    websocket = next(tag for tag in document["tags"] if tag["name"] == "websocket")
    for payload in PAYLOADS.values():
        assert f'schemaRef="#/components/schemas/{payload.__name__}"' in websocket["description"]


async def test_required_fields_and_query_parameters_come_from_the_schemas(tmp_path: Path) -> None:
    """The document's required fields are the ones the schema enforces; queries are parameters."""
    document, _ = await served_document(tmp_path)
    components = document["components"]["schemas"]
    for cls in (_schemas_native.MessageBody, _schemas_anthropic.MessagesBody):
        required = {f.encode_name for f in msgspec.structs.fields(cls) if f.required}
        assert set(components[cls.__name__]["required"]) == required
    assert components["TemplateBody"]["additionalProperties"] is False
    assert "additionalProperties" not in components["MessageBody"]
    parameters = document["paths"]["/contexts"]["get"]["parameters"]
    assert {(p["name"], p["in"], p["required"]) for p in parameters} == {
        ("limit", "query", False),
        ("offset", "query", False),
    }
    usage = document["paths"]["/budget/usage"]["get"]["parameters"]
    assert {p["name"]: p["schema"]["enum"] for p in usage}["period"] == [
        "daily",
        "monthly",
        "weekly",
    ]


async def test_errors_are_documented_in_each_api_familys_shape(tmp_path: Path) -> None:
    """Rhetor's shape outside /v1, OpenAI's on chat completions, Anthropic's on messages."""
    document, _ = await served_document(tmp_path)

    def error_schema(path: str) -> Any:
        return document["paths"][path]["post"]["responses"]["4XX"]["content"]["application/json"]

    assert error_schema("/message")["schema"]["$ref"].endswith("/ErrorBody")
    assert error_schema("/v1/chat/completions")["schema"]["$ref"].endswith("/OpenAIErrorBody")
    assert error_schema("/v1/messages")["schema"]["$ref"].endswith("/AnthropicErrorBody")
    streamed = document["paths"]["/stream"]["post"]["responses"]["200"]["content"]
    assert list(streamed) == ["text/event-stream"]


async def test_the_document_needs_no_running_server_to_be_made(tmp_path: Path) -> None:
    """The app of a runtime started without HTTP describes the same routes."""
    async with start(settings_for(tmp_path)) as runtime:
        document = openapi_document(create_app(runtime))
    assert document["openapi"] == "3.1.0"
    assert "/message" in document["paths"]


class _Links(HTMLParser):
    """Every URL a page's tags load or link to."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href", "spec-url", "action") and value is not None:
                self.urls.append(value)


async def test_the_docs_page_loads_nothing_from_another_site(tmp_path: Path) -> None:
    """/docs names only same-origin URLs, forbids others by CSP, and its script is served."""
    async with (
        running_server(settings_for(tmp_path)) as server,
        httpx.AsyncClient(base_url=server.base_url) as client,
    ):
        page = await client.get("/docs")
        links = _Links()
        links.feed(page.text)
        fetched = {url: await client.get(f"/{url}") for url in links.urls if url != "data:,"}
        asset = await client.get(f"/docs/{DOCS_ASSETS[0]}")
        again = await client.get(
            f"/docs/{DOCS_ASSETS[0]}", headers={"If-None-Match": asset.headers["ETag"]}
        )
        other = await client.get("/docs/secrets.txt")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert links.urls and not [u for u in links.urls if re.match(r"^(?:[a-z]+:)?//", u)]
    assert {url: r.status_code for url, r in fetched.items()} == dict.fromkeys(fetched, 200)
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "script-src 'self';" in policy
    assert "cdn." not in page.text
    assert asset.status_code == 200 and asset.headers["content-type"].startswith("text/javascript")
    assert b"cdn.redoc.ly" not in asset.content
    assert asset.content.rstrip().endswith(b"}()});")  # no map file to look for after it
    assert again.status_code == 304
    assert other.status_code == 404 and other.json()["error"]["type"] == "not_found"


async def test_the_document_and_the_page_are_open_while_the_api_needs_a_key(
    tmp_path: Path,
) -> None:
    """With an API key set, /openapi.json and /docs answer without it; /providers does not."""
    async with (
        running_server(settings_for(tmp_path, api_key="k")) as server,
        httpx.AsyncClient(base_url=server.base_url) as client,
    ):
        statuses = {
            path: (await client.get(path)).status_code
            for path in ("/openapi.json", "/docs", f"/docs/{DOCS_ASSETS[0]}", "/providers")
        }
    assert statuses == {
        "/openapi.json": 200,
        "/docs": 200,
        f"/docs/{DOCS_ASSETS[0]}": 200,
        "/providers": 401,
    }


async def test_a_v1_id_no_route_can_take_is_documented_as_rhetors_404(tmp_path: Path) -> None:
    """A model id with a newline matches no /v1 route: Rhetor's 404, as the document says (the fuzz found it)."""
    document, _ = await served_document(tmp_path)
    async with (
        running_server(settings_for(tmp_path / "server")) as server,
        httpx.AsyncClient(base_url=server.base_url) as client,
    ):
        response = await client.get("/v1/models/a%0Ab")
    documented = document["paths"]["/v1/models/{model_id}"]["get"]["responses"]["404"]
    schemas = documented["content"]["application/json"]["schema"]["anyOf"]
    assert {"$ref": "#/components/schemas/ErrorBody"} in schemas
    assert response.status_code == 404 and response.json()["error"]["type"] == "not_found"


async def test_readiness_and_metrics_are_documented_with_what_they_answer(tmp_path: Path) -> None:
    """/ready answers ReadyReply with 200 or 503; /metrics answers text; errors carry request_id."""
    document, _ = await served_document(tmp_path)
    ready = document["paths"]["/ready"]["get"]["responses"]
    for status in ("200", "503"):
        schema = ready[status]["content"]["application/json"]["schema"]
        assert schema["$ref"].endswith("/ReadyReply")
    metrics = document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert set(metrics) == {"text/plain"}
    components = document["components"]["schemas"]
    assert "request_id" in components["ErrorDetail"]["properties"]
    assert "request_id" in components["OpenAIErrorDetail"]["properties"]
    assert "request_id" in components["AnthropicErrorBody"]["properties"]
