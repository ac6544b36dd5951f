"""Tests for the assembled app (rhetor/edge/_app.py): the guard (size, API key), CORS, app-wide hooks."""

from __future__ import annotations

from pathlib import Path

import trio

import rhetor.runtime
from rhetor.edge._app import create_app
from tests.edge_helpers import served
from tests.helpers import settings_for, simulated_backends


async def test_body_over_the_limit_is_413(tmp_path: Path) -> None:
    """A body larger than max_body_bytes is a 413 JSON error, and the server keeps serving."""
    async with served(tmp_path, max_body_bytes=1000) as (_, client):
        response = await client.post("/message", json={"message": "x" * 2000})
        assert (await client.get("/health")).status_code == 200
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "payload_too_large"


async def test_with_an_api_key_only_root_and_health_are_open(tmp_path: Path) -> None:
    """With api_key set, / and /health answer without a key; the rest need one."""
    async with served(tmp_path, api_key="s3cret") as (_, client):
        assert (await client.get("/")).status_code == 200
        assert (await client.get("/health")).status_code == 200
        missing = await client.get("/providers")
        wrong = await client.get("/providers", headers={"X-API-Key": "nope"})
        by_header = await client.get("/providers", headers={"X-API-Key": "s3cret"})
        by_bearer = await client.get("/providers", headers={"Authorization": "Bearer s3cret"})
    assert missing.status_code == 401 and wrong.status_code == 401
    assert missing.json()["error"]["type"] == "unauthorized"
    assert "s3cret" not in wrong.text
    assert by_header.status_code == 200 and by_bearer.status_code == 200


async def test_a_refused_post_does_not_stall_the_next_request_on_the_connection(
    tmp_path: Path,
) -> None:
    """A POST refused with 401 before its body is read leaves the client able to go on at once."""
    async with served(tmp_path, api_key="s3cret") as (_, client):
        refused = await client.post("/message", json={"message": "hi " * 2000})
        with trio.fail_after(2):
            after = await client.post(
                "/message", json={"message": "hi"}, headers={"X-API-Key": "s3cret"}
            )
    assert refused.status_code == 401 and refused.headers["connection"] == "close"
    assert after.status_code == 200


async def test_without_an_api_key_everything_is_open(tmp_path: Path) -> None:
    """With no api_key configured, no endpoint asks for one."""
    async with served(tmp_path) as (_, client):
        assert (await client.get("/providers")).status_code == 200


async def test_cors_is_same_origin_only_by_default(tmp_path: Path) -> None:
    """By default no Access-Control-Allow-Origin header is sent to another origin."""
    async with served(tmp_path) as (_, client):
        response = await client.get("/health", headers={"Origin": "http://evil.example"})
        preflight = await client.options(
            "/message",
            headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
        )
    assert "access-control-allow-origin" not in response.headers
    assert "access-control-allow-origin" not in preflight.headers


async def test_cors_allows_a_configured_origin_and_answers_preflight(tmp_path: Path) -> None:
    """A configured origin gets CORS headers, and its preflight skips auth."""
    origin = "http://ui.example"
    async with served(tmp_path, cors_origins=(origin,), api_key="k") as (_, client):
        response = await client.get("/health", headers={"Origin": origin})
        preflight = await client.options(
            "/message",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,x-api-key",
            },
        )
    assert response.headers["access-control-allow-origin"] == origin
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == origin
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert preflight.headers["access-control-allow-headers"] == "content-type,x-api-key"


async def test_every_request_passes_one_app_wide_hook_and_no_blueprint_adds_one(
    tmp_path: Path,
) -> None:
    """
    The app runs the guard before every request, CORS after it only when
    origins are configured, and no blueprint registers a hook of its own.
    """
    settings = settings_for(tmp_path)
    async with rhetor.runtime.start(settings, backends=simulated_backends(settings)) as rt:
        plain = create_app(rt)
        with_cors = create_app(rt, settings_for(tmp_path, cors_origins=("http://ui.example",)))
    for app, after in ((plain, 0), (with_cors, 1)):
        assert {k: len(v) for k, v in app.before_request_funcs.items() if v} == {None: 1}
        assert {k: len(v) for k, v in app.after_request_funcs.items() if v} == (
            {None: after} if after else {}
        )
        assert not any(app.url_value_preprocessors.values())
        assert not any(app.teardown_request_funcs.values())
    blueprints = set(plain.blueprints)
    assert {
        "core",
        "messages",
        "templates",
        "prompts",
        "contexts",
        "budget",
        "evaluate",
    } <= blueprints
    assert {"v1", "v1.openai", "v1.anthropic"} <= blueprints
