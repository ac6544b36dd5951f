"""Tests for the prompts blueprint (rhetor/edge/_prompts.py)."""

from __future__ import annotations

from pathlib import Path

from tests.edge_helpers import served


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
