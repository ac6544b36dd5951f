"""Tests for the core blueprint (rhetor/edge/_core.py): /, /health, /providers, /provider."""

from __future__ import annotations

from pathlib import Path

from tests.edge_helpers import served


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
