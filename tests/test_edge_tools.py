"""
Tools, content blocks and structured output through Rhetor's own endpoints: /message, /chat, /stream and /ws.

The real server runs with its OpenAI and Anthropic providers talking to the
fake upstreams over loopback (``tests.test_compat_responses.served``); the
tests send the native shape (``docs/api.md``, "Tools, images and content
blocks") with httpx and trio-websocket, and read what reached each upstream
and what came back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from trio_websocket import open_websocket_url

from rhetor.client import Chunk, Completed, RhetorClient
from tests.edge_helpers import events
from tests.fakes import Call, Reply
from tests.test_compat_responses import GPT, HAIKU, MODEL_OF, PROVIDERS, served
from tests.test_edge_ws import send, until_response

WEATHER: dict[str, Any] = {
    "name": "get_weather",
    "description": "The weather now in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
PARIS = {"city": "Paris"}
PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=="


def client(base_url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base_url, timeout=5, verify=False)


@PROVIDERS
async def test_message_with_tools_returns_the_call_and_finish_reason(
    tmp_path: Path, provider: str
) -> None:
    """/message offers tools to each upstream; the reply carries tool_calls and finish_reason tool_calls."""
    async with served(tmp_path) as s, client(s.server.base_url) as http:
        s.fake(provider).script(
            Reply("Let me look.", tool_calls=(Call("get_weather", PARIS, id="call_1"),))
        )
        answer = await http.post(
            "/message",
            json={
                "message": "Weather in Paris?",
                "model": MODEL_OF[provider],
                "tools": [WEATHER],
                "tool_choice": "required",
            },
        )
        sent = s.sent(provider)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["message"] == "Let me look."
    assert body["finish_reason"] == "tool_calls"
    [call] = body["tool_calls"]
    assert (call["id"], call["name"], json.loads(call["arguments"])) == (
        "call_1",
        "get_weather",
        PARIS,
    )
    assert len(sent["tools"]) == 1
    expected = "required" if provider == "openai" else {"type": "any"}
    assert sent["tool_choice"] == expected


async def test_stream_events_carry_tool_call_pieces_and_the_whole_calls_at_the_end(
    tmp_path: Path,
) -> None:
    """/stream's events carry the calls' pieces (index, id, name, arguments); the done event has them whole."""
    async with served(tmp_path) as s, client(s.server.base_url) as http:
        s.openai.script(Reply("Ok.", tool_calls=(Call("get_weather", PARIS, id="call_7"),)))
        answer = await http.post(
            "/stream", json={"message": "Weather?", "model": GPT, "tools": [WEATHER]}
        )
    sent = events(answer.text)
    pieces = [d for e in sent if not e["done"] for d in e.get("tool_calls", [])]
    assert pieces[0]["id"] == "call_7" and pieces[0]["name"] == "get_weather"
    assert json.loads("".join(p["arguments"] for p in pieces)) == PARIS
    last = sent[-1]
    assert last["done"] is True and last["finish_reason"] == "tool_calls"
    assert last["tool_calls"][0]["id"] == "call_7"


@PROVIDERS
async def test_chat_blocks_reach_each_upstream_as_its_call_and_result(
    tmp_path: Path, provider: str
) -> None:
    """/chat's tool_call and tool_result blocks reach each upstream in its own shape."""
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_call", "id": "call_1", "name": "get_weather", "arguments": PARIS}
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "call_id": "call_1", "content": "sunny"}],
        },
    ]
    async with served(tmp_path) as s, client(s.server.base_url) as http:
        s.fake(provider).script(Reply("Sunny in Paris."))
        answer = await http.post(
            "/chat", json={"messages": messages, "model": MODEL_OF[provider], "tools": [WEATHER]}
        )
        sent = s.sent(provider)
    assert answer.status_code == 200, answer.text
    assert answer.json()["message"] == "Sunny in Paris."
    if provider == "openai":
        assert sent["messages"][1]["tool_calls"][0]["id"] == "call_1"
        assert sent["messages"][2]["role"] == "tool"
        assert sent["messages"][2]["tool_call_id"] == "call_1"
    else:
        assert sent["messages"][1]["content"][0]["type"] == "tool_use"
        assert sent["messages"][2]["content"][0]["tool_use_id"] == "call_1"


async def test_an_image_block_reaches_anthropic_as_base64(tmp_path: Path) -> None:
    """An image block in /message reaches Anthropic as a base64 image source."""
    message = [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "data": PIXEL, "media_type": "image/png"},
    ]
    async with served(tmp_path) as s, client(s.server.base_url) as http:
        s.anthropic.script(Reply("A pixel."))
        answer = await http.post("/message", json={"message": message, "model": HAIKU})
        sent = s.sent("anthropic")
    assert answer.status_code == 200, answer.text
    blocks = sent["messages"][-1]["content"]
    image = next(b for b in blocks if b["type"] == "image")
    assert image["source"] == {"type": "base64", "media_type": "image/png", "data": PIXEL}


async def test_a_json_schema_format_reaches_openai(tmp_path: Path) -> None:
    """response_format json_schema reaches OpenAI as its response_format."""
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
    async with served(tmp_path) as s, client(s.server.base_url) as http:
        s.openai.script(Reply('{"ok":true}'))
        answer = await http.post(
            "/message",
            json={
                "message": "ok?",
                "model": GPT,
                "response_format": {"type": "json_schema", "name": "v", "schema": schema},
                "stop": ["END"],
                "top_p": 0.5,
                "seed": 7,
            },
        )
        sent = s.sent("openai")
    assert answer.status_code == 200, answer.text
    assert sent["response_format"]["json_schema"]["schema"] == schema
    assert sent["stop"] == ["END"] and sent["seed"] == 7


async def test_websocket_frames_carry_tool_call_pieces_and_the_reply_the_calls(
    tmp_path: Path,
) -> None:
    """An LLM_REQUEST with tools gets UPDATE frames with the calls' pieces and a RESPONSE with the calls."""
    async with served(tmp_path) as s:
        s.openai.script(Reply("", tool_calls=(Call("get_weather", PARIS, id="call_3"),)))
        async with open_websocket_url(s.server.ws_url) as ws:
            frame = {
                "type": "LLM_REQUEST",
                "id": "w1",
                "payload": {"message": "Weather?", "model": GPT, "tools": [WEATHER]},
            }
            await send(ws, frame)
            frames = await until_response(ws, "w1")
    pieces = [
        d for f in frames if f["type"] == "UPDATE" for d in f["payload"].get("tool_calls", [])
    ]
    assert pieces[0]["id"] == "call_3"
    assert json.loads("".join(p["arguments"] for p in pieces)) == PARIS
    reply = frames[-1]
    assert reply["type"] == "RESPONSE" and reply["payload"]["finish_reason"] == "tool_calls"
    assert reply["payload"]["tool_calls"][0]["name"] == "get_weather"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            {
                "messages": [
                    {"role": "assistant", "content": [{"type": "image", "url": "http://x/y.png"}]}
                ]
            },
            "messages[0].content[0]",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "tool_call", "id": "a", "name": "f"}]}
                ]
            },
            "messages[0].content[0]",
        ),
        ({"message": [{"type": "image", "data": "!!", "media_type": "image/png"}]}, "message[0]"),
        ({"message": "hi", "tools": [WEATHER], "tool_choice": {"name": "nope"}}, "tool_choice"),
        ({"message": "hi", "tool_choice": "required"}, "tool_choice"),
        ({"message": "hi", "response_format": {"type": "json_schema"}}, "response_format.schema"),
        ({"message": "hi", "tools": [WEATHER, WEATHER]}, "tools[1].name"),
        ({"message": "hi", "tools": [{"name": "bad name!"}]}, "tools[0].name"),
        ({"message": []}, "message"),
    ],
)
async def test_bad_blocks_and_tools_are_422s_naming_the_field(
    tmp_path: Path, body: dict[str, Any], field: str
) -> None:
    """A block its role cannot hold, a bad image, a choice of an unknown tool: a 422 naming the field."""
    route = "/chat" if "messages" in body else "/message"
    async with served(tmp_path) as s, client(s.server.base_url) as http:
        answer = await http.post(route, json={"model": GPT, **body})
        calls = len(s.openai.completions)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["field"] == field
    assert calls == 0


# -- the Python client -----------------------------------------------------------------


async def test_the_client_sends_tools_and_reads_the_calls(tmp_path: Path) -> None:
    """RhetorClient.generate(tools=...) gets reply.tool_calls and finish_reason, and chat sends blocks."""
    async with served(tmp_path) as s, RhetorClient("127.0.0.1", s.server.port) as rc:
        s.openai.script(
            Reply("", tool_calls=(Call("get_weather", PARIS, id="call_5"),)),
            Reply("Sunny."),
        )
        reply = await rc.generate("Weather?", model=GPT, tools=[WEATHER], tool_choice="auto")
        [call] = reply.tool_calls
        answer = await rc.chat(
            [
                {"role": "user", "content": "Weather?"},
                {
                    "role": "assistant",
                    "content": [
                        {
                            "type": "tool_call",
                            "id": call.id,
                            "name": call.name,
                            "arguments": call.arguments,
                        }
                    ],
                },
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "call_id": call.id, "content": "sunny"}],
                },
            ],
            model=GPT,
            tools=[WEATHER],
        )
        sent = s.sent("openai")
    assert reply.finish_reason == "tool_calls"
    assert (call.id, call.name, call.input()) == ("call_5", "get_weather", PARIS)
    assert answer.text == "Sunny." and answer.finish_reason == "stop" and answer.tool_calls == ()
    assert sent["messages"][-1] == {"role": "tool", "tool_call_id": "call_5", "content": "sunny"}


async def test_the_client_streams_and_its_session_carry_tool_calls(tmp_path: Path) -> None:
    """generate_stream's final reply and a Session's chunks and completed reply carry the calls."""
    async with served(tmp_path) as s, RhetorClient("127.0.0.1", s.server.port) as rc:
        s.openai.script(
            Reply("Ok.", tool_calls=(Call("get_weather", PARIS, id="call_s"),)),
            Reply("", tool_calls=(Call("get_weather", PARIS, id="call_w"),)),
        )
        async with rc.generate_stream("Weather?", model=GPT, tools=[WEATHER]) as stream:
            text = "".join([piece async for piece in stream])
        streamed = stream.reply
        async with rc.session() as session:
            request = session.send_message("Weather?", model=GPT, tools=[WEATHER])
            seen = [event async for event in request]
    assert text == "Ok." and streamed is not None
    assert [c.id for c in streamed.tool_calls] == ["call_s"]
    pieces = [p for e in seen if isinstance(e, Chunk) for p in e.tool_calls]
    assert pieces[0]["id"] == "call_w"
    done = seen[-1]
    assert isinstance(done, Completed) and done.reply.tool_calls[0].input() == PARIS
