"""Tests for the templates blueprint (rhetor/edge/_templates.py)."""

from __future__ import annotations

from pathlib import Path

from tests.edge_helpers import served


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
