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

import rhetor.runtime
from rhetor.routing._plan import TaskConfig
from tests.fakes import Call, Reply, StreamError
from tests.fakes.openai import fake_openai
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


# -- Server-Sent Events ------------------------------------------------------------------------

GPT_MINI = "gpt-4o-mini"
TASKS = {
    "tasks": {"default": {"primary": GPT_MINI, "fallbacks": []}},
    "models": {
        GPT_MINI: {"provider": "openai", "tier": "low", "capabilities": ["general", "tools"]}
    },
}
TOOL = {"name": "lookup", "description": "Look a word up.", "parameters": {"type": "object"}}
# Each streaming route, and a body asking it for a stream (the tool offered in its API's shape).
STREAMS: dict[str, dict[str, Any]] = {
    "/stream": {"message": "hello there", "model": GPT_MINI, "tools": [TOOL]},
    "/message": {"message": "hello there", "model": GPT_MINI, "streaming": True},
    "/v1/chat/completions": {
        "model": GPT_MINI,
        "messages": [{"role": "user", "content": "hello there"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "tools": [{"type": "function", "function": TOOL}],
    },
    "/v1/messages": {
        "model": GPT_MINI,
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "hello there"}],
        "stream": True,
        "tools": [{"name": "lookup", "input_schema": {"type": "object"}}],
    },
    "/v1/responses": {
        "model": GPT_MINI,
        "input": "hello there",
        "stream": True,
        "tools": [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}],
    },
}


def sse_events(text: str) -> list[dict[str, str]]:
    """A text/event-stream body as its events: each one's ``event`` (if named) and ``data``."""
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            name, _, value = line.partition(": ")
            fields[name] = value
        events.append(fields)
    return events


def published_kinds(document: dict[str, Any], path: str) -> list[dict[str, Any]]:
    """The kinds of event ``path``'s stream is documented to send."""
    content = document["paths"][path]["post"]["responses"]["200"]["content"]
    kinds: list[dict[str, Any]] = content["text/event-stream"]["schema"]["anyOf"]
    return kinds


def kinds_matching(
    document: dict[str, Any], kinds: list[dict[str, Any]], event: dict[str, str]
) -> list[str]:
    """The titles of the documented kinds ``event`` fits: its name, and its data by the schema."""
    matched = []
    for kind in kinds:
        properties = kind["properties"]
        if ("event" in properties) != ("event" in event):
            continue
        if "event" in event and event["event"] not in properties["event"]["enum"]:
            continue
        data = properties["data"]
        if "const" in data:
            fits = event["data"] == data["const"]
        else:
            try:
                value = json.loads(event["data"])
            except ValueError:
                continue
            fits = validator(document, data["contentSchema"]).is_valid(value)
        if fits:
            matched.append(kind["title"])
    return matched


async def test_every_event_of_every_stream_fits_the_schema_its_route_publishes(
    tmp_path: Path,
) -> None:
    """Text, tool-call and failing streams of each route: each event validates; each kind is sent."""
    config = tmp_path / "tasks.json"
    config.write_text(json.dumps(TASKS))
    async with fake_openai() as upstream:
        settings = settings_for(
            tmp_path,
            openai_api_key="sk-event-schemas-0123456789",
            openai_base_url=upstream.base_url,
            simulated="never",
            task_config=config,
        )
        factory = rhetor.runtime.default_backends(settings, TaskConfig.load(config))["openai"]
        async with (
            running_server(settings, backends={"openai": factory}) as server,
            httpx.AsyncClient(base_url=server.base_url, timeout=10) as client,
        ):
            document = (await client.get("/openapi.json")).json()
            streams: dict[str, list[dict[str, str]]] = {}
            for path, body in STREAMS.items():
                upstream.script(
                    Reply(text="Hello there, friend", chunks=("Hello ", "there, ", "friend")),
                    Reply(text="", tool_calls=(Call("lookup", {"word": "hello"}),)),
                    StreamError(after=1),
                )
                events = []
                for _ in range(3):
                    response = await client.post(path, json=body)
                    assert response.status_code == 200, response.text
                    assert response.headers["content-type"].startswith("text/event-stream")
                    events += sse_events(response.text)
                streams[path] = events
    for path, events in streams.items():
        kinds = published_kinds(document, path)
        sent: set[str] = set()
        for event in events:
            matched = kinds_matching(document, kinds, event)
            assert matched, f"{path}: {event} fits no published event"
            sent.update(matched)
        assert sent == {kind["title"] for kind in kinds}, path


async def test_an_event_that_breaks_its_schema_fits_no_published_kind(tmp_path: Path) -> None:
    """The check can fail: a chunk without text, an unknown event name, a misspelt [DONE]."""
    async with (
        running_server(settings_for(tmp_path)) as server,
        httpx.AsyncClient(base_url=server.base_url) as client,
    ):
        document = (await client.get("/openapi.json")).json()
    native = published_kinds(document, "/stream")
    openai = published_kinds(document, "/v1/chat/completions")
    anthropic = published_kinds(document, "/v1/messages")
    chunk = {"chunk": "hi", "context": None, "model": "m", "provider": "p", "done": False}
    assert kinds_matching(document, native, {"data": json.dumps(chunk)}) == ["StreamChunk"]
    broken = {**chunk, "chunk": None}
    assert kinds_matching(document, native, {"data": json.dumps(broken)}) == []
    assert kinds_matching(document, openai, {"data": "[DONE]"}) == ["[DONE]"]
    assert kinds_matching(document, openai, {"data": '"[done]"'}) == []
    stop = {"type": "message_stop"}
    assert kinds_matching(document, anthropic, {"event": "message_stop", "data": json.dumps(stop)})
    assert not kinds_matching(document, anthropic, {"event": "ping", "data": json.dumps(stop)})
    assert not kinds_matching(document, anthropic, {"data": json.dumps(stop)})
