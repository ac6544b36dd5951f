"""Tests for the messages blueprint (rhetor/edge/_messages.py): /message, /stream, /chat, whole and as SSE."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.edge_helpers import BrokenBackend, events, served


async def test_message_answers_every_reply_field(tmp_path: Path) -> None:
    """POST /message answers message, model, provider, context, usage, cost, routing."""
    async with served(tmp_path) as (_, client):
        response = await client.post("/message", json={"message": "hi", "context_id": "c1"})
    body = response.json()
    assert response.status_code == 200
    assert body["message"] == "[simulated] You said: hi"
    assert body["provider"] == "simulated"
    assert body["context"] == "c1"
    assert body["finished"] is True
    assert body["timestamp"].endswith("Z")
    assert body["usage"]["input_tokens"] > 0
    assert body["cost"] == 0.0
    assert body["routing"]


async def test_message_with_streaming_true_answers_as_sse(tmp_path: Path) -> None:
    """POST /message with streaming true answers Server-Sent Events."""
    async with served(tmp_path) as (_, client):
        response = await client.post("/message", json={"message": "a b", "streaming": True})
    assert response.headers["content-type"].startswith("text/event-stream")
    assert events(response.text)[-1]["done"] is True


async def test_stream_sends_chunks_then_a_done_event_with_usage(tmp_path: Path) -> None:
    """POST /stream sends one event per chunk, then a done event with usage and cost."""
    async with served(tmp_path) as (_, client):
        response = await client.post("/stream", json={"message": "one two", "context_id": "s"})
    sent = events(response.text)
    chunks, last = sent[:-1], sent[-1]
    assert all(e["done"] is False and e["context"] == "s" for e in chunks)
    assert {"chunk", "model", "provider"} <= chunks[0].keys()
    assert "".join(e["chunk"] for e in chunks) == last["message"]
    assert last["chunk"] == "" and last["done"] is True
    assert last["usage"]["output_tokens"] > 0 and "cost" in last


async def test_stream_error_mid_stream_is_a_final_error_event(tmp_path: Path) -> None:
    """A provider failing after the first chunk ends the SSE with an error event."""
    backends = {"simulated": lambda: BrokenBackend(mid_stream=True)}
    async with served(tmp_path, {"backends": backends}) as (_, client):
        response = await client.post("/stream", json={"message": "x"})
        assert (await client.get("/health")).status_code == 200
    sent = events(response.text)
    assert sent[0]["chunk"] == "partial "
    assert sent[-1]["done"] is True
    assert sent[-1]["error"]["type"] == "stream_broken"


async def test_all_providers_down_is_503_listing_attempts(tmp_path: Path) -> None:
    """When every candidate fails, /message is a 503 listing each attempt."""
    async with served(tmp_path, {"backends": {"simulated": BrokenBackend}}) as (_, client):
        response = await client.post("/message", json={"message": "x"})
        streamed = await client.post("/stream", json={"message": "x"})
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["type"] == "all_providers_failed"
    assert error["attempts"][0]["provider"] == "simulated"
    assert streamed.status_code == 503


async def test_budget_refusal_is_402_budget_exceeded(tmp_path: Path) -> None:
    """Under the enforce policy a request over the limit is refused with budget_exceeded."""
    prices = tmp_path / "prices.json"
    price = {"input_per_mtok": 1000.0, "output_per_mtok": 1000.0}
    prices.write_text(json.dumps({"simulated-echo": price, "simulated-summary": price}))
    async with served(
        tmp_path, budget_policy="enforce", daily_limit=0.0001, price_overrides=prices
    ) as (_, client):
        response = await client.post("/message", json={"message": "x"})
        streamed = await client.post("/stream", json={"message": "x"})
    assert response.status_code == 402
    assert response.json()["error"]["type"] == "budget_exceeded"
    assert streamed.status_code == 402


async def test_chat_answers_a_list_of_messages(tmp_path: Path) -> None:
    """POST /chat answers the last user message of ``messages``."""
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "yo"}]
    async with served(tmp_path) as (_, client):
        body = (await client.post("/chat", json={"messages": messages})).json()
        streamed = await client.post("/chat", json={"messages": messages, "streaming": True})
    assert body["message"].startswith("[simulated] You said: yo")
    assert events(streamed.text)[-1]["message"] == body["message"]


async def test_chat_with_a_bad_role_is_422_naming_the_item(tmp_path: Path) -> None:
    """A message with an unknown role is a 422 naming ``messages[0].role``."""
    async with served(tmp_path) as (_, client):
        response = await client.post("/chat", json={"messages": [{"role": "x", "content": ""}]})
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "messages[0].role"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "message"),
        ({"message": 5}, "message"),
        ({"message": "x", "temperature": "hot"}, "temperature"),
        ({"message": "x", "temperature": 9}, "temperature"),
        ({"message": "x", "max_tokens": 1.5}, "max_tokens"),
        ({"message": "x", "max_tokens": True}, "max_tokens"),
        ({"message": "x", "streaming": "yes"}, "streaming"),
        ({"message": "x", "context_id": 3}, "context_id"),
        ({"message": "x", "routing_parameters": []}, "routing_parameters"),
    ],
)
async def test_wrong_or_missing_field_is_422_naming_it(
    tmp_path: Path, body: dict[str, Any], field: str
) -> None:
    """A missing or mistyped field is a 422 whose error names that field."""
    async with served(tmp_path) as (_, client):
        response = await client.post("/message", json=body)
    assert response.status_code == 422
    assert response.json()["error"] == {
        "type": "validation_error",
        "message": response.json()["error"]["message"],
        "field": field,
        "request_id": response.headers["X-Request-ID"],
    }
