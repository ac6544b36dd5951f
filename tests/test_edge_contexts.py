"""Tests for the contexts blueprint (rhetor/edge/_contexts.py)."""

from __future__ import annotations

from pathlib import Path

from tests.edge_helpers import served


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
