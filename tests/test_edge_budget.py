"""Tests for the budget blueprint (rhetor/edge/_budget.py): status, limits, policy, usage, estimates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.edge_helpers import served


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


async def test_budget_entries_list_requests_newest_first_without_secrets(tmp_path: Path) -> None:
    """GET /budget/entries answers each request's time, component, model, tokens, cost and status, newest first."""
    async with served(tmp_path, api_key="sekrit-key") as (_, client):
        client.headers["X-API-Key"] = "sekrit-key"
        for component in ("hermes", "ergon", "engram"):
            reply = await client.post("/message", json={"message": "hi", "component": component})
            assert reply.status_code == 200
        response = await client.get("/budget/entries")
        two = (await client.get("/budget/entries?limit=2")).json()
        since = response.json()["entries"][1]["ts"]
        later = (await client.get(f"/budget/entries?since={since}")).json()
        future = (await client.get("/budget/entries?since=4102444800")).json()
    body = response.json()
    assert (body["limit"], body["since"]) == (50, 0.0)
    assert [e["component"] for e in body["entries"]] == ["engram", "ergon", "hermes"]
    newest = body["entries"][0]
    assert (newest["provider"], newest["model"], newest["status"]) == (
        "simulated",
        "simulated-echo",
        "ok",
    )
    assert newest["total_tokens"] == newest["input_tokens"] + newest["output_tokens"] > 0
    assert newest["time"].endswith("Z") and newest["cost"] == 0.0
    assert [e["component"] for e in two["entries"]] == ["engram", "ergon"]
    assert [e["component"] for e in later["entries"]] == ["engram", "ergon"]
    assert future["entries"] == []
    assert "sekrit" not in response.text and "charge_id" not in response.text


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("limit=2.5", "limit"),
        ("since=yesterday", "since"),
        ("since=-1", "since"),
        ("since=nan", "since"),
        ("since=1e400", "since"),
    ],
)
async def test_budget_entries_with_a_bad_bound_is_422_naming_it(
    tmp_path: Path, query: str, field: str
) -> None:
    """GET /budget/entries refuses a limit outside 1..500 or a since that is not a finite timestamp."""
    async with served(tmp_path) as (_, client):
        response = await client.get(f"/budget/entries?{query}")
        healthy = await client.get("/budget/entries?limit=500&since=1.5")
    assert response.status_code == 422
    assert response.json()["error"]["field"] == field
    assert healthy.status_code == 200


async def test_a_component_limit_refuses_that_component_while_another_proceeds(
    tmp_path: Path,
) -> None:
    """POST /budget/limit with a component: under enforce that component is refused (402), another is served, GET /budget shows it."""
    prices = tmp_path / "prices.json"
    price = {"input_per_mtok": 1000.0, "output_per_mtok": 1000.0}
    prices.write_text(json.dumps({"simulated-echo": price, "simulated-summary": price}))
    async with served(tmp_path, price_overrides=prices, budget_policy="enforce") as (_, client):
        limited = await client.post(
            "/budget/limit", json={"period": "daily", "limit": 0.0001, "component": "ui"}
        )
        assert limited.status_code == 200, limited.text
        daily = limited.json()["periods"]["daily"]
        assert daily["components"] == {"ui": {"limit": 0.0001, "spent": 0.0, "remaining": 0.0001}}
        assert daily["limit"] == 0 and daily["providers"] == {}
        refused = await client.post(
            "/message", json={"message": "hi", "component": "ui", "max_tokens": 500}
        )
        assert refused.status_code == 402, refused.text
        assert "component ui daily budget" in refused.json()["error"]["message"]
        assert refused.json()["error"]["component"] == "ui"
        other = await client.post(
            "/message", json={"message": "hi", "component": "ergon", "max_tokens": 500}
        )
        assert other.status_code == 200, other.text
        both = await client.post(
            "/budget/limit",
            json={"period": "daily", "limit": 1, "component": "ui", "provider": "simulated"},
        )
        empty = await client.post(
            "/budget/limit", json={"period": "daily", "limit": 1, "component": ""}
        )
        removed = await client.post(
            "/budget/limit", json={"period": "daily", "limit": 0, "component": "ui"}
        )
    assert both.status_code == 422 and both.json()["error"]["field"] == "component"
    assert empty.status_code == 422 and empty.json()["error"]["field"] == "component"
    assert removed.json()["periods"]["daily"]["components"] == {}
