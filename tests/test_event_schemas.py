"""
What a stream or a socket sends is what /openapi.json declares: every event and frame, read live.

Each test reads frames off a real server over real sockets and validates each
one with the JSON Schema the served document publishes for it (jsonschema-rs,
resolving the document's own ``$ref``\\ s), so the document and the behaviour
cannot drift apart unnoticed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from tests.helpers import running_server, settings_for

LEGACY = "/rhetor/streaming"


def validator(document: dict[str, Any], schema: dict[str, Any]) -> Any:
    """A validator for ``schema``, whose refs point into ``document``'s components."""
    return jsonschema_rs.validator_for({**schema, "components": document["components"]})


def component(document: dict[str, Any], name: str) -> Any:
    """A validator for the component schema called ``name``."""
    assert name in document["components"]["schemas"], name
    return validator(document, {"$ref": f"#/components/schemas/{name}"})


async def legacy_until_done(ws: WebSocketConnection, request: Any) -> list[dict[str, Any]]:
    """Send one legacy request; its frames up to the last (content_complete or error)."""
    await ws.send_message(request if isinstance(request, str) else json.dumps(request))
    frames: list[dict[str, Any]] = []
    with trio.fail_after(5):
        while not frames or frames[-1]["type"] == "content_chunk":
            frames.append(json.loads(await ws.get_message()))
    return frames


async def test_the_legacy_sockets_frames_are_published_and_every_frame_sent_fits_them(
    tmp_path: Path,
) -> None:
    """/ws/rhetor/streaming: chunks, the complete reply and each error validate; all carry the id."""
    async with (
        running_server(settings_for(tmp_path)) as server,
        httpx.AsyncClient(base_url=server.base_url) as client,
    ):
        document = (await client.get("/openapi.json")).json()
        async with open_websocket_url(server.ws_url + LEGACY) as ws:
            streamed = await legacy_until_done(ws, {"prompt": "hello there", "stream": True})
            refused = await legacy_until_done(ws, {"prompt": 5, "temperature": 0.5})
            too_hot = await legacy_until_done(ws, {"prompt": "hi", "temperature": 9})
            not_json = await legacy_until_done(ws, "{nope")
    kinds = {
        "content_chunk": component(document, "LegacyChunk"),
        "content_complete": component(document, "LegacyComplete"),
        "error": component(document, "LegacyError"),
    }
    frames = [*streamed, *refused, *too_hot, *not_json]
    for frame in frames:
        kinds[frame["type"]].validate(frame)
    assert [f["type"] for f in streamed][-1] == "content_complete" and len(streamed) > 2
    assert {f["request_id"] for f in streamed} == {streamed[-1]["request_id"]}
    assert component(document, "LegacyRequest").is_valid({"prompt": "hi", "stream": False})
    assert not component(document, "LegacyRequest").is_valid({"prompt": 5})
    websocket = next(tag for tag in document["tags"] if tag["name"] == "websocket")
    assert 'schemaRef="#/components/schemas/LegacyRequest"' in websocket["description"]


async def test_a_legacy_request_is_checked_by_its_schema_and_its_error_names_the_field(
    tmp_path: Path,
) -> None:
    """A bad prompt or option is a typed error naming the legacy field, with a request id; the socket lives."""
    async with (
        running_server(settings_for(tmp_path)) as server,
        open_websocket_url(server.ws_url + LEGACY) as ws,
    ):
        [number] = await legacy_until_done(ws, {"prompt": 5})
        [missing] = await legacy_until_done(ws, {"stream": False})
        [hot] = await legacy_until_done(ws, {"prompt": "hi", "temperature": 9})
        [streams] = await legacy_until_done(ws, {"prompt": "hi", "stream": "yes"})
        after = await legacy_until_done(ws, {"prompt": "still here", "stream": False})
    assert number["error_type"] == "validation_error" and number["field"] == "prompt"
    assert number["error"].startswith("prompt: must be a string or an array")
    assert missing["field"] == "prompt" and "is required" in missing["error"]
    assert hot["field"] == "temperature" and streams["field"] == "stream"
    ids = {number["request_id"], missing["request_id"], hot["request_id"], streams["request_id"]}
    assert len(ids) == 4 and None not in ids
    assert after[-1]["type"] == "content_complete" and "still here" in after[-1]["text"]
