"""
The Anthropic-compatible endpoints (rhetor/edge/_compat_anthropic.py), driven by the official ``anthropic`` SDK.

Rhetor runs as a real server on an ephemeral port; its own Anthropic provider
talks to the fake Anthropic upstream. Models are the fake's current-style
names (or ``rhetor/chat``, whose primary is not deprecated), since the SDK
warns about deprecated ones.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

import rhetor.runtime
from rhetor._settings import Settings
from rhetor.routing._plan import TaskConfig
from tests.fakes import Cut, Reply
from tests.fakes.anthropic import FakeAnthropic, fake_anthropic
from tests.helpers import ServerInfo, running_server, settings_for

MODEL = "claude-haiku-5-5"
USER: list[Any] = [{"role": "user", "content": "Hello?"}]


def backends(settings: Settings, *names: str) -> dict[str, rhetor.runtime.BackendFactory]:
    every = rhetor.runtime.default_backends(settings, TaskConfig.load(settings.task_config))
    return {name: every[name] for name in names}


def sdk_client(base_url: str, key: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=base_url,
        api_key=key,
        max_retries=0,
        timeout=5,
        # Plain HTTP: skip loading CA certificates (40 ms a client).
        http_client=anthropic.DefaultAsyncHttpxClient(verify=False),
    )


@asynccontextmanager
async def served(
    tmp_path: Path, *, client_key: str = "any", **overrides: Any
) -> AsyncIterator[tuple[FakeAnthropic, ServerInfo, anthropic.AsyncAnthropic]]:
    """A fake Anthropic upstream, Rhetor relaying to it, and an SDK client pointed at Rhetor."""
    async with fake_anthropic() as fake:
        fields: dict[str, Any] = {
            "anthropic_api_key": "sk-ant-upstream",
            "anthropic_base_url": fake.base_url,
            "simulated": "never",
        }
        settings = settings_for(tmp_path, **(fields | overrides))
        async with (
            running_server(
                settings, backends=backends(settings, "anthropic", "simulated")
            ) as server,
            sdk_client(server.base_url, client_key) as client,
        ):
            yield fake, server, client


def sent(fake: FakeAnthropic) -> tuple[Any, list[dict[str, Any]]]:
    body = fake.requests[-1].json
    return body.get("system"), [
        {"role": m["role"], "content": m["content"]} for m in body["messages"]
    ]


def text_of(content: Any) -> str:
    return content if isinstance(content, str) else "".join(b["text"] for b in content)


# -- replies ---------------------------------------------------------------------


async def test_message_has_anthropic_fields(tmp_path: Path) -> None:
    """A whole message carries Anthropic's id, type, role, text block, stop reason and usage."""
    async with served(tmp_path) as (fake, _, client):
        fake.script(Reply("Hi there", input_tokens=7, output_tokens=2))
        message = await client.messages.create(
            model=MODEL,
            max_tokens=100,
            system="Be brief.",
            messages=[{"role": "user", "content": [{"type": "text", "text": "Hello?"}]}],
        )
    assert message.id.startswith("msg_")
    assert (message.type, message.role, message.model) == ("message", "assistant", MODEL)
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == "Hi there"  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (7, 2)
    system, messages = sent(fake)
    assert text_of(system) == "Be brief."
    assert [(m["role"], text_of(m["content"])) for m in messages] == [("user", "Hello?")]
    assert fake.requests[-1].json["max_tokens"] == 100


async def test_max_tokens_stop_reason(tmp_path: Path) -> None:
    """A reply cut at the token limit says ``max_tokens``."""
    async with served(tmp_path) as (fake, _, client):
        fake.script(Reply("Hi", finish_reason="length"))
        message = await client.messages.create(model=MODEL, max_tokens=2, messages=USER)
    assert message.stop_reason == "max_tokens"


async def test_stream_sends_anthropic_event_sequence(tmp_path: Path) -> None:
    """A raw stream is message_start, block start, deltas, block stop, message_delta, message_stop."""
    async with served(tmp_path) as (fake, server, _client):
        fake.script(Reply(chunks=("Hel", "lo"), input_tokens=5, output_tokens=2))
        async with (
            httpx.AsyncClient(base_url=server.base_url, verify=False) as raw,
            raw.stream(
                "POST",
                "/v1/messages",
                json={"model": MODEL, "max_tokens": 50, "messages": USER, "stream": True},
            ) as response,
        ):
            text = (await response.aread()).decode()
    blocks = [b for b in text.split("\n\n") if b.strip()]
    kinds = [b.split("\n")[0].removeprefix("event: ") for b in blocks]
    bodies = [json.loads(b.split("\n")[1].removeprefix("data: ")) for b in blocks]
    assert kinds == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert [b["type"] for b in bodies] == kinds
    assert [b["delta"] for b in bodies[2:4]] == [
        {"type": "text_delta", "text": "Hel"},
        {"type": "text_delta", "text": "lo"},
    ]
    assert bodies[5]["delta"]["stop_reason"] == "end_turn"
    assert bodies[5]["usage"] == {
        "input_tokens": 5,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 2,
    }


async def test_sdk_stream_accumulates_text_and_usage(tmp_path: Path) -> None:
    """The SDK's ``messages.stream`` helper yields the text and a final message with usage."""
    async with served(tmp_path) as (fake, _, client):
        fake.script(Reply(chunks=("Hel", "lo", "!"), input_tokens=5, output_tokens=3))
        async with client.messages.stream(model=MODEL, max_tokens=50, messages=USER) as stream:
            pieces = [text async for text in stream.text_stream]
            final = await stream.get_final_message()
    assert "".join(pieces) == "Hello!"
    assert final.content[0].text == "Hello!"  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (5, 3)


# When an ``error`` event makes the SDK's AsyncStream raise, it leaves its inner
# async generators (``_iter_events``, ``SSEDecoder``'s and the httpx2/httpcore2 byte
# iterators under them) unfinished, and trio warns when they are collected. Only
# those generators are ignored, only here; the clean-stream tests need no filter.
@pytest.mark.filterwarnings(r"ignore:Async generator 'anthropic\._streaming\.:ResourceWarning")
@pytest.mark.filterwarnings(
    r"ignore:Async generator 'httpx2\._models\.Response\.aiter_bytes':ResourceWarning"
)
@pytest.mark.filterwarnings(
    r"ignore:Async generator 'httpcore2\._async\.connection_pool\.PoolByteStream\.__aiter__':ResourceWarning"
)
async def test_stream_broken_upstream_raises_in_the_sdk(tmp_path: Path) -> None:
    """An upstream that breaks mid-stream ends the SDK's stream with an ``error`` event."""
    async with served(tmp_path) as (fake, _, client):
        fake.script(Cut(after=1))

        async def read() -> list[str]:
            async with client.messages.stream(model=MODEL, max_tokens=50, messages=USER) as s:
                return [text async for text in s.text_stream]

        with pytest.raises(anthropic.APIStatusError, match="broke"):
            await read()


# -- models, aliases, contexts -------------------------------------------------------


async def test_models_list_in_anthropic_format(tmp_path: Path) -> None:
    """``models.list()`` through the SDK sees the upstream's models and the aliases."""
    async with served(tmp_path) as (_, _server, client):
        page = await client.models.list()
    ids = [m.id for m in page.data]
    assert MODEL in ids
    assert "rhetor/chat" in ids
    assert all(m.type == "model" for m in page.data)


async def test_alias_routes_by_task(tmp_path: Path) -> None:
    """``rhetor/chat`` goes through task routing to the chat task's primary model."""
    async with served(tmp_path) as (fake, _, client):
        message = await client.messages.create(model="rhetor/chat", max_tokens=50, messages=USER)
    assert message.model == "claude-3-haiku-20240307"
    assert fake.requests[-1].json["model"] == "claude-3-haiku-20240307"


async def test_context_header_carries_history_across_calls(tmp_path: Path) -> None:
    """With ``X-Rhetor-Context`` the second call sees the first turn once, from the store."""
    async with served(tmp_path) as (fake, server, client):
        headers = {"X-Rhetor-Context": "ctx-a"}
        fake.script(Reply("Hello Ada."), Reply("You are Ada."))
        await client.messages.create(
            model=MODEL,
            max_tokens=50,
            messages=[{"role": "user", "content": "I am Ada."}],
            extra_headers=headers,
        )
        # This client keeps no history: Rhetor's context supplies it.
        await client.messages.create(
            model=MODEL,
            max_tokens=50,
            messages=[{"role": "user", "content": "Who am I?"}],
            extra_headers=headers,
        )
        stored = await server.runtime.get_context("ctx-a")
    _, messages = sent(fake)
    assert [(m["role"], text_of(m["content"])) for m in messages] == [
        ("user", "I am Ada."),
        ("assistant", "Hello Ada."),
        ("user", "Who am I?"),
    ]
    assert len(stored["messages"]) == 4


async def test_simulated_provider_answers_through_the_sdk(tmp_path: Path) -> None:
    """With only the simulated provider, an alias answers through the SDK."""
    settings = settings_for(tmp_path)
    async with (
        running_server(settings) as server,
        sdk_client(server.base_url, "any") as client,
    ):
        message = await client.messages.create(model="rhetor/default", max_tokens=50, messages=USER)
    assert message.content[0].text == "[simulated] You said: Hello?"  # type: ignore[union-attr]


# -- errors ------------------------------------------------------------------------


async def test_budget_refusal_is_payment_required_error(tmp_path: Path) -> None:
    """An enforced budget refusal is the SDK's ``PaymentRequiredError`` (402 billing_error)."""
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({MODEL: {"input_per_mtok": 100, "output_per_mtok": 100}}))
    async with served(
        tmp_path, budget_policy="enforce", daily_limit=0.0001, price_overrides=prices
    ) as (fake, _, client):
        with pytest.raises(anthropic.PaymentRequiredError) as caught:
            await client.messages.create(model=MODEL, max_tokens=100, messages=USER)
    assert caught.value.status_code == 402
    assert caught.value.body["error"]["type"] == "billing_error"  # type: ignore[index]
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert not [r for r in fake.requests if r.path == "/v1/messages"]


async def test_wrong_key_is_authentication_error(tmp_path: Path) -> None:
    """With ``RHETOR_API_KEY`` set, a wrong ``x-api-key`` is the SDK's ``AuthenticationError``."""
    async with served(tmp_path, client_key="wrong", api_key="right") as (_, server, client):
        with pytest.raises(anthropic.AuthenticationError) as caught:
            await client.messages.create(model=MODEL, max_tokens=50, messages=USER)
        async with sdk_client(server.base_url, "right") as good:
            message = await good.messages.create(model=MODEL, max_tokens=50, messages=USER)
    assert caught.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    assert message.content


async def test_malformed_bodies_are_bad_request_errors(tmp_path: Path) -> None:
    """A zero max_tokens, a bad role, a block of no known type or an image of no known source is the SDK's ``BadRequestError``."""
    bad: list[dict[str, Any]] = [
        {"max_tokens": 0, "messages": USER},
        {"max_tokens": 10, "messages": [{"role": "system", "content": "x"}]},
        {
            "max_tokens": 10,
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image", "source": {"type": "file", "file_id": "file_1"}}],
                }
            ],
        },
        {
            "max_tokens": 10,
            "messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}],
        },
    ]
    async with served(tmp_path) as (_, server, client):
        for body in bad:
            with pytest.raises(anthropic.BadRequestError) as caught:
                await client.messages.create(model=MODEL, **body)
            assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
        async with httpx.AsyncClient(base_url=server.base_url, verify=False) as raw:
            missing = await raw.post("/v1/messages", json={"model": MODEL, "messages": USER})
            garbled = await raw.post(
                "/v1/messages",
                content=b"{not json",
                headers={"Content-Type": "application/json"},
            )
    assert missing.status_code == garbled.status_code == 400
    assert missing.json()["error"]["message"] == "max_tokens: Field required"
    assert garbled.json()["type"] == "error"


async def test_hostile_fields_are_anthropic_shaped_400s(tmp_path: Path) -> None:
    """A role that is an object, a block type that is a list or a huge number is a 400, never a 500."""
    bad: list[dict[str, Any]] = [
        {"max_tokens": 10, "messages": [{"role": {"r": 1}, "content": "x"}]},
        {"max_tokens": 10, "messages": [{"role": "user", "content": [{"type": ["text"]}]}]},
        {"max_tokens": 10**400, "messages": USER},
        {"max_tokens": 10, "messages": USER, "temperature": 1e308 * 10},
        {"max_tokens": 10, "messages": USER, "system": [{"type": "text", "text": "\udfff"}]},
    ]
    async with (
        served(tmp_path) as (fake, server, _client),
        httpx.AsyncClient(base_url=server.base_url, verify=False) as raw,
    ):
        for body in bad:
            response = await raw.post(
                "/v1/messages",
                content=json.dumps({"model": MODEL, **body}).encode(),
                headers={"Content-Type": "application/json", "anthropic-version": "2023-06-01"},
            )
            assert response.status_code == 400, body
            assert response.json()["type"] == "error"
            assert response.json()["error"]["type"] == "invalid_request_error"
        assert [r for r in fake.requests if r.method == "POST"] == []
        assert server.runtime.router.stats().restarts == 0


async def test_unknown_model_is_not_found_error(tmp_path: Path) -> None:
    """An unknown model is the SDK's ``NotFoundError`` (not_found_error)."""
    async with served(tmp_path) as (_, _server, client):
        with pytest.raises(anthropic.NotFoundError):
            await client.messages.create(model="claude-nope-9", max_tokens=10, messages=USER)
