"""Tests for the budget blueprint (rhetor/edge/_budget.py): status, limits, policy, usage, estimates."""

from __future__ import annotations

from pathlib import Path

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
