"""
The ``/v1`` blueprint (rhetor/edge/_compat_v1.py): which API's shape a request gets.

A request for ``/v1/messages``, or one carrying ``anthropic-version``, speaks
Anthropic's API; any other under ``/v1`` speaks OpenAI's. Plain httpx against
the real server (simulated provider), so each wire shape is checked as sent.
"""

from __future__ import annotations

from pathlib import Path

from tests.edge_helpers import served

ANTHROPIC = {"anthropic-version": "2023-06-01"}


async def test_an_unknown_model_is_a_404_in_the_api_the_request_speaks(tmp_path: Path) -> None:
    """GET /v1/models/{id} of no model: OpenAI's model_not_found, or with anthropic-version Anthropic's."""
    async with served(tmp_path) as (_, client):
        openai = await client.get("/v1/models/no-such-model")
        anthropic = await client.get("/v1/models/no-such-model", headers=ANTHROPIC)
    assert openai.status_code == anthropic.status_code == 404
    assert openai.json()["error"]["code"] == "model_not_found"
    assert openai.json()["error"]["param"] == "model"
    assert anthropic.json() == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "no model 'no-such-model'"},
        "request_id": anthropic.headers["X-Request-ID"],
    }


async def test_the_model_list_is_in_the_api_the_request_speaks(tmp_path: Path) -> None:
    """GET /v1/models is OpenAI's list, or with anthropic-version Anthropic's page."""
    async with served(tmp_path) as (_, client):
        openai = (await client.get("/v1/models")).json()
        anthropic = (await client.get("/v1/models", headers=ANTHROPIC)).json()
    assert openai["object"] == "list"
    assert {"id": "rhetor/code", "object": "model", "created": 0, "owned_by": "rhetor"} in openai[
        "data"
    ]
    assert anthropic["has_more"] is False
    assert anthropic["first_id"] == anthropic["data"][0]["id"] == openai["data"][0]["id"]
    assert all(m["type"] == "model" for m in anthropic["data"])


async def test_a_bad_body_on_each_route_is_a_400_in_its_api(tmp_path: Path) -> None:
    """A body without messages: OpenAI's invalid_request_error naming it, Anthropic's without a param."""
    async with served(tmp_path) as (_, client):
        openai = await client.post("/v1/chat/completions", json={"model": "rhetor/chat"})
        anthropic = await client.post(
            "/v1/messages", json={"model": "rhetor/chat", "max_tokens": 5}
        )
    assert openai.status_code == anthropic.status_code == 400
    assert openai.json()["error"]["type"] == "invalid_request_error"
    assert openai.json()["error"]["param"] == "messages"
    assert anthropic.json()["type"] == "error"
    assert anthropic.json()["error"]["type"] == "invalid_request_error"


async def test_a_path_no_v1_route_has_answers_in_rhetors_own_shape(tmp_path: Path) -> None:
    """No /v1 route matched, so no API is known: the 404 is Rhetor's own error shape."""
    async with served(tmp_path) as (_, client):
        response = await client.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found"
