"""Tests for the HTTP edge (rhetor/edge/_app.py): every endpoint, SSE, errors, auth, CORS."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

from rhetor._errors import ProviderUnavailable, UpstreamConnectionError
from rhetor._types import ProviderReply, ProviderRequest, ProviderStatus, StreamEnd, TextDelta
from tests.helpers import ServerInfo, running_server, settings_for

JSON = {"Content-Type": "application/json"}


@asynccontextmanager
async def served(
    tmp_path: Path, runtime_kwargs: dict[str, Any] | None = None, **overrides: Any
) -> AsyncIterator[tuple[ServerInfo, httpx.AsyncClient]]:
    async with (
        running_server(settings_for(tmp_path, **overrides), **(runtime_kwargs or {})) as server,
        # verify=False: plain HTTP, and it skips loading CA certificates (20 ms a client).
        httpx.AsyncClient(base_url=server.base_url, timeout=5, verify=False) as client,
    ):
        yield server, client


def events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


@attrs.define
class BrokenBackend:
    """A provider that fails: before anything (``mid_stream=False``) or after one chunk."""

    name: str = "simulated"
    mid_stream: bool = False
    models: tuple[str, ...] = ("simulated-echo", "simulated-summary")

    async def check(self) -> ProviderStatus:
        return ProviderStatus(self.name, True, self.models, "")

    async def complete(self, request: ProviderRequest) -> ProviderReply:
        raise ProviderUnavailable("down for the test", provider=self.name, model=request.model)

    async def stream(self, request: ProviderRequest) -> AsyncIterator[TextDelta | StreamEnd]:
        if self.mid_stream:
            yield TextDelta("partial ")
            raise UpstreamConnectionError("dropped", provider=self.name, model=request.model)
        raise ProviderUnavailable("down for the test", provider=self.name, model=request.model)

    async def aclose(self) -> None:
        return None


# -- info endpoints ---------------------------------------------------------------


async def test_root_lists_name_version_and_endpoints(tmp_path: Path) -> None:
    """GET / answers the name, version, description and every route."""
    async with served(tmp_path) as (_, client):
        body = (await client.get("/")).json()
    assert body["name"] == "Rhetor"
    assert body["version"] == "0.1.0"
    assert "POST /message" in body["endpoints"]
    assert "WS /ws" in body["endpoints"] or any("/ws" in e for e in body["endpoints"])


async def test_health_reports_status_providers_uptime_and_version(tmp_path: Path) -> None:
    """GET /health answers healthy with each provider's availability."""
    async with served(tmp_path) as (_, client):
        body = (await client.get("/health")).json()
    assert body["status"] == "healthy"
    assert body["providers"] == {"simulated": True}
    assert body["uptime"] >= 0
    assert body["version"] == "0.1.0"


async def test_providers_lists_models_and_active_model(tmp_path: Path) -> None:
    """GET /providers answers providers, their models, and the active pair."""
    async with served(tmp_path) as (_, client):
        body = (await client.get("/providers")).json()
    assert "simulated-echo" in body["providers"]["simulated"]["models"]
    assert body["active_provider"] == "simulated"


async def test_set_provider_changes_the_active_model(tmp_path: Path) -> None:
    """POST /provider sets the active provider and model."""
    async with served(tmp_path) as (_, client):
        response = await client.post(
            "/provider", json={"provider": "simulated", "model": "simulated-summary"}
        )
        assert response.status_code == 200
        assert (await client.get("/providers")).json()["active_model"] == "simulated-summary"


async def test_set_provider_unknown_is_404_naming_the_field(tmp_path: Path) -> None:
    """POST /provider with an unknown provider is a 404 naming ``provider``."""
    async with served(tmp_path) as (_, client):
        response = await client.post("/provider", json={"provider": "nope"})
    assert response.status_code == 404
    assert response.json()["error"]["field"] == "provider"


# -- LLM requests -----------------------------------------------------------------


async def test_message_answers_every_reply_field(tmp_path: Path) -> None:
    """POST /message answers message, model, provider, context, usage, cost, routing."""
    async with served(tmp_path) as (_, client):
        response = await client.post("/message", json={"message": "hi", "context_id": "c1"})
    body = response.json()
    assert response.status_code == 200
    assert body["message"] == "[simulated] You said: hi"
    assert body["provider"] == "simulated"
    assert body["context"] == "c1"
    assert body["finished"] is True
    assert body["timestamp"].endswith("Z")
    assert body["usage"]["input_tokens"] > 0
    assert body["cost"] == 0.0
    assert body["routing"]


async def test_message_with_streaming_true_answers_as_sse(tmp_path: Path) -> None:
    """POST /message with streaming true answers Server-Sent Events."""
    async with served(tmp_path) as (_, client):
        response = await client.post("/message", json={"message": "a b", "streaming": True})
    assert response.headers["content-type"].startswith("text/event-stream")
    assert events(response.text)[-1]["done"] is True


async def test_stream_sends_chunks_then_a_done_event_with_usage(tmp_path: Path) -> None:
    """POST /stream sends one event per chunk, then a done event with usage and cost."""
    async with served(tmp_path) as (_, client):
        response = await client.post("/stream", json={"message": "one two", "context_id": "s"})
    sent = events(response.text)
    chunks, last = sent[:-1], sent[-1]
    assert all(e["done"] is False and e["context"] == "s" for e in chunks)
    assert {"chunk", "model", "provider"} <= chunks[0].keys()
    assert "".join(e["chunk"] for e in chunks) == last["message"]
    assert last["chunk"] == "" and last["done"] is True
    assert last["usage"]["output_tokens"] > 0 and "cost" in last


async def test_stream_error_mid_stream_is_a_final_error_event(tmp_path: Path) -> None:
    """A provider failing after the first chunk ends the SSE with an error event."""
    backends = {"simulated": lambda: BrokenBackend(mid_stream=True)}
    async with served(tmp_path, {"backends": backends}) as (_, client):
        response = await client.post("/stream", json={"message": "x"})
        assert (await client.get("/health")).status_code == 200
    sent = events(response.text)
    assert sent[0]["chunk"] == "partial "
    assert sent[-1]["done"] is True
    assert sent[-1]["error"]["type"] == "stream_broken"


async def test_all_providers_down_is_503_listing_attempts(tmp_path: Path) -> None:
    """When every candidate fails, /message is a 503 listing each attempt."""
    async with served(tmp_path, {"backends": {"simulated": BrokenBackend}}) as (_, client):
        response = await client.post("/message", json={"message": "x"})
        streamed = await client.post("/stream", json={"message": "x"})
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["type"] == "all_providers_failed"
    assert error["attempts"][0]["provider"] == "simulated"
    assert streamed.status_code == 503


async def test_budget_refusal_is_402_budget_exceeded(tmp_path: Path) -> None:
    """Under the enforce policy a request over the limit is refused with budget_exceeded."""
    prices = tmp_path / "prices.json"
    price = {"input_per_mtok": 1000.0, "output_per_mtok": 1000.0}
    prices.write_text(json.dumps({"simulated-echo": price, "simulated-summary": price}))
    async with served(
        tmp_path, budget_policy="enforce", daily_limit=0.0001, price_overrides=prices
    ) as (_, client):
        response = await client.post("/message", json={"message": "x"})
        streamed = await client.post("/stream", json={"message": "x"})
    assert response.status_code == 402
    assert response.json()["error"]["type"] == "budget_exceeded"
    assert streamed.status_code == 402


async def test_chat_answers_a_list_of_messages(tmp_path: Path) -> None:
    """POST /chat answers the last user message of ``messages``."""
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "yo"}]
    async with served(tmp_path) as (_, client):
        body = (await client.post("/chat", json={"messages": messages})).json()
        streamed = await client.post("/chat", json={"messages": messages, "streaming": True})
    assert body["message"].startswith("[simulated] You said: yo")
    assert events(streamed.text)[-1]["message"] == body["message"]


async def test_chat_with_a_bad_role_is_422_naming_the_item(tmp_path: Path) -> None:
    """A message with an unknown role is a 422 naming ``messages[0].role``."""
    async with served(tmp_path) as (_, client):
        response = await client.post("/chat", json={"messages": [{"role": "x", "content": ""}]})
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "messages[0].role"


# -- templates and prompts --------------------------------------------------------------


async def test_templates_create_get_update_render_versions_delete(tmp_path: Path) -> None:
    """The /templates endpoints keep versions and render the current one."""
    async with served(tmp_path) as (_, client):
        created = await client.post(
            "/templates", json={"name": "greet", "content": "Hello {name}", "category": "demo"}
        )
        assert created.status_code == 201
        tid = created.json()["id"]
        assert (await client.get("/templates")).json()["templates"][0]["name"] == "greet"
        assert (await client.get(f"/templates/{tid}")).json()["version"] == 1
        updated = await client.put(f"/templates/{tid}", json={"content": "Hi {name}!"})
        assert updated.json()["current_version"] == 2
        rendered = await client.post(f"/templates/{tid}/render", json={"variables": {"name": "A"}})
        assert rendered.json()["rendered"] == "Hi A!"
        versions = (await client.get(f"/templates/{tid}/versions")).json()["versions"]
        assert [v["version"] for v in versions] == [1, 2]
        assert (await client.get(f"/templates/{tid}?version=1")).json()["content"] == "Hello {name}"
        assert (await client.delete(f"/templates/{tid}")).json()["deleted"] is True
        assert (await client.get(f"/templates/{tid}")).status_code == 404


async def test_template_with_an_unknown_field_is_422(tmp_path: Path) -> None:
    """POST /templates rejects a field it does not know, naming it."""
    async with served(tmp_path) as (_, client):
        response = await client.post("/templates", json={"name": "a", "content": "b", "x": 1})
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "x"


async def test_prompts_create_list_get_update_delete(tmp_path: Path) -> None:
    """The /prompts endpoints manage per-component system prompts with is_default."""
    async with served(tmp_path) as (_, client):
        created = await client.post(
            "/prompts",
            json={
                "name": "p",
                "component": "ergon",
                "content": "You are Ergon.",
                "is_default": True,
            },
        )
        assert created.status_code == 201
        pid = created.json()["id"]
        listed = (await client.get("/prompts?component=ergon")).json()["prompts"]
        assert listed[0]["is_default"] is True
        assert (await client.get(f"/prompts/{pid}")).json()["content"] == "You are Ergon."
        updated = await client.put(f"/prompts/{pid}", json={"content": "You are Ergon 2."})
        assert updated.json()["content"] == "You are Ergon 2."
        reply = await client.post("/message", json={"message": "hi", "component": "ergon"})
        assert "You are Ergon 2." in reply.json()["message"]
        assert (await client.delete(f"/prompts/{pid}")).status_code == 200
        assert (await client.delete(f"/prompts/{pid}")).status_code == 404


async def test_prompts_generate_builds_a_prompt_for_the_task(tmp_path: Path) -> None:
    """POST /prompts/generate answers a prompt built from task, context and format."""
    async with served(tmp_path) as (_, client):
        body = (
            await client.post(
                "/prompts/generate",
                json={"task": "Sort a list", "context": {"language": "Python"}, "format": "chat"},
            )
        ).json()
    assert "Sort a list" in body["prompt"] and "Python" in body["prompt"]


# -- contexts ---------------------------------------------------------------------


async def test_contexts_list_get_search_summarize_delete(tmp_path: Path) -> None:
    """The /contexts endpoints see the turns /message stored."""
    async with served(tmp_path) as (_, client):
        await client.post("/message", json={"message": "The zebra sleeps.", "context_id": "zoo"})
        listed = (await client.get("/contexts")).json()["contexts"]
        assert [c["id"] for c in listed] == ["zoo"]
        got = (await client.get("/contexts/zoo")).json()
        assert [m["role"] for m in got["messages"]] == ["user", "assistant"]
        hits = (await client.get("/contexts/search", params={"q": "zebra"})).json()["results"]
        assert hits[0]["context_id"] == "zoo"
        summary = await client.post("/contexts/zoo/summarize")
        assert summary.status_code == 200 and summary.json()["summary"]
        assert (await client.delete("/contexts/zoo")).json()["deleted"] is True
        assert (await client.get("/contexts/zoo")).status_code == 404


async def test_context_search_without_a_query_is_422(tmp_path: Path) -> None:
    """GET /contexts/search with no ``q`` is a 422 naming ``q``."""
    async with served(tmp_path) as (_, client):
        response = await client.get("/contexts/search")
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "q"


# -- budget and evaluation ---------------------------------------------------------------


async def test_budget_status_limit_policy_and_usage(tmp_path: Path) -> None:
    """The /budget endpoints report, set limits and policy, and group usage."""
    async with served(tmp_path) as (_, client):
        await client.post("/message", json={"message": "hi", "component": "ui"})
        status = (await client.get("/budget")).json()
        assert set(status["periods"]) == {"daily", "weekly", "monthly"}
        limited = await client.post("/budget/limit", json={"period": "daily", "limit": 5})
        assert limited.json()["periods"]["daily"]["limit"] == 5
        policy = await client.post("/budget/policy", json={"policy": "enforce"})
        assert policy.json()["policy"] == "enforce"
        usage = (await client.get("/budget/usage?period=daily&group_by=component")).json()
        assert usage["usage"][0]["key"] == "ui" and usage["usage"][0]["requests"] == 1


async def test_budget_limit_with_a_string_amount_is_422(tmp_path: Path) -> None:
    """POST /budget/limit with a non-number limit is a 422 naming ``limit``."""
    async with served(tmp_path) as (_, client):
        response = await client.post("/budget/limit", json={"period": "daily", "limit": "5"})
        bad_period = await client.post("/budget/limit", json={"period": "hourly", "limit": 5})
    assert response.status_code == 422 and response.json()["error"]["field"] == "limit"
    assert bad_period.status_code == 422 and bad_period.json()["error"]["field"] == "period"


async def test_budget_usage_with_a_bad_group_is_422(tmp_path: Path) -> None:
    """GET /budget/usage with an unknown group_by is a 422 naming it."""
    async with served(tmp_path) as (_, client):
        response = await client.get("/budget/usage?group_by=planet")
    assert response.json()["error"]["field"] == "group_by"


async def test_budget_estimate_answers_tokens_cost_and_under_budget(tmp_path: Path) -> None:
    """POST /budget/estimate answers estimated tokens, cost and under_budget."""
    async with served(tmp_path) as (_, client):
        body = (
            await client.post("/budget/estimate", json={"prompt": "hello", "max_tokens": 10})
        ).json()
    assert body["estimated_tokens"]["output_tokens"] == 10
    assert body["estimated_cost"] >= 0.0
    assert body["under_budget"] is True


async def test_evaluate_answers_an_overall_score_and_feedback(tmp_path: Path) -> None:
    """POST /evaluate answers overall_score from 0 to 10, scores and feedback."""
    async with served(tmp_path) as (_, client):
        body = (
            await client.post(
                "/evaluate",
                json={"prompt": "Name a colour.", "response": "Blue.", "criteria": ["relevance"]},
            )
        ).json()
    assert 0 <= body["evaluation"]["overall_score"] <= 10
    assert set(body["evaluation"]["scores"]) == {"relevance"}
    assert body["evaluation"]["feedback"]


# -- errors -----------------------------------------------------------------------


async def test_malformed_json_is_400_invalid_json(tmp_path: Path) -> None:
    """A body that is not JSON is a 400 of type invalid_json."""
    async with served(tmp_path) as (_, client):
        response = await client.post("/message", content=b"{nope", headers=JSON)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_json"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "message"),
        ({"message": 5}, "message"),
        ({"message": "x", "temperature": "hot"}, "temperature"),
        ({"message": "x", "temperature": 9}, "temperature"),
        ({"message": "x", "max_tokens": 1.5}, "max_tokens"),
        ({"message": "x", "max_tokens": True}, "max_tokens"),
        ({"message": "x", "streaming": "yes"}, "streaming"),
        ({"message": "x", "context_id": 3}, "context_id"),
        ({"message": "x", "routing_parameters": []}, "routing_parameters"),
    ],
)
async def test_wrong_or_missing_field_is_422_naming_it(
    tmp_path: Path, body: dict[str, Any], field: str
) -> None:
    """A missing or mistyped field is a 422 whose error names that field."""
    async with served(tmp_path) as (_, client):
        response = await client.post("/message", json=body)
    assert response.status_code == 422
    assert response.json()["error"] == {
        "type": "validation_error",
        "message": response.json()["error"]["message"],
        "field": field,
    }


async def test_body_that_is_not_an_object_is_422(tmp_path: Path) -> None:
    """A JSON array body is a 422 naming ``body``."""
    async with served(tmp_path) as (_, client):
        response = await client.post("/message", json=["hi"])
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "body"


async def test_body_over_the_limit_is_413(tmp_path: Path) -> None:
    """A body larger than max_body_bytes is a 413 JSON error, and the server keeps serving."""
    async with served(tmp_path, max_body_bytes=1000) as (_, client):
        response = await client.post("/message", json={"message": "x" * 2000})
        assert (await client.get("/health")).status_code == 200
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "payload_too_large"


async def test_unknown_route_is_404_json(tmp_path: Path) -> None:
    """An unknown path is a 404 with the JSON error shape."""
    async with served(tmp_path) as (_, client):
        response = await client.get("/nowhere")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found"


async def test_wrong_method_is_405_json(tmp_path: Path) -> None:
    """GET on a POST-only route is a 405 with the JSON error shape."""
    async with served(tmp_path) as (_, client):
        response = await client.get("/message")
    assert response.status_code == 405
    assert response.json()["error"]["type"] == "method_not_allowed"
    assert "POST" in response.headers["allow"]


async def test_unexpected_exception_is_500_json_without_traceback(tmp_path: Path) -> None:
    """A bug in a handler answers internal_error JSON, with no traceback or detail."""
    from rhetor.edge._app import create_app

    async with running_server(settings_for(tmp_path)) as server:
        app = create_app(server.runtime)

        @app.get("/boom")
        async def boom() -> str:
            raise RuntimeError("secret detail")

        response = await app.test_client().get("/boom")
        text = (await response.get_data()).decode()
    assert response.status_code == 500
    assert json.loads(text) == {
        "error": {"type": "internal_error", "message": "internal error; see the server log"}
    }
    assert "Traceback" not in text and "secret" not in text


# -- auth ---------------------------------------------------------------------------


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


# -- CORS -------------------------------------------------------------------------


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
