"""Tests for what every blueprint shares (rhetor/edge/_http.py): bodies and errors in Rhetor's shape."""

from __future__ import annotations

import json
from pathlib import Path

from tests.edge_helpers import JSON, served
from tests.helpers import running_server, settings_for


async def test_malformed_json_is_400_invalid_json(tmp_path: Path) -> None:
    """A body that is not JSON is a 400 of type invalid_json."""
    async with served(tmp_path) as (_, client):
        response = await client.post("/message", content=b"{nope", headers=JSON)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_json"


async def test_body_that_is_not_an_object_is_422(tmp_path: Path) -> None:
    """A JSON array body is a 422 naming ``body``."""
    async with served(tmp_path) as (_, client):
        response = await client.post("/message", json=["hi"])
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "body"


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
