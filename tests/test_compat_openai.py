"""
The OpenAI-compatible endpoints (rhetor/edge/_compat_openai.py), driven by the official ``openai`` SDK.

Rhetor runs as a real server on an ephemeral port; its own OpenAI provider
talks to the fake OpenAI upstream, so every test crosses both wire formats.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import trio

import rhetor.runtime
from rhetor._settings import Settings
from rhetor.routing._plan import TaskConfig
from tests.fakes import Cut, Fail, Hang, Reply
from tests.fakes.openai import FakeOpenAI, fake_openai
from tests.helpers import ServerInfo, running_server, settings_for

USER = [{"role": "user", "content": "Hello?"}]

# The SDK's AsyncStream stops reading at ``[DONE]`` (or at an error event) without
# closing its inner async generators (``_iter_events``, ``SSEDecoder.aiter_bytes``
# and the httpx2/httpcore2 byte iterators under them), even when the stream itself
# is closed; trio warns when they are garbage collected. Only those generators are
# ignored, and only in the tests that read streams through the SDK (the same
# streams read with plain httpx raise no warning, so Rhetor's side is clean).
_SDK_GENERATORS = (
    r"ignore:Async generator 'openai\._streaming\.:ResourceWarning",
    r"ignore:Async generator 'httpx2\._models\.Response\.aiter_bytes':ResourceWarning",
    r"ignore:Async generator 'httpcore2\._async\.connection_pool\.PoolByteStream\.__aiter__':ResourceWarning",
)


def reads_sdk_stream(test: Any) -> Any:
    """Mark a test that reads a stream through the SDK (see ``_SDK_GENERATORS``)."""
    for rule in _SDK_GENERATORS:
        test = pytest.mark.filterwarnings(rule)(test)
    return test


def backends(settings: Settings, *names: str) -> dict[str, rhetor.runtime.BackendFactory]:
    every = rhetor.runtime.default_backends(settings, TaskConfig.load(settings.task_config))
    return {name: every[name] for name in names}


@asynccontextmanager
async def served(
    tmp_path: Path, *, client_key: str = "any", **overrides: Any
) -> AsyncIterator[tuple[FakeOpenAI, ServerInfo, openai.AsyncOpenAI]]:
    """A fake OpenAI upstream, Rhetor relaying to it, and an SDK client pointed at Rhetor."""
    async with fake_openai() as fake:
        fields: dict[str, Any] = {
            "openai_api_key": "sk-upstream",
            "openai_base_url": fake.base_url,
            "simulated": "never",
        }
        settings = settings_for(tmp_path, **(fields | overrides))
        async with (
            running_server(settings, backends=backends(settings, "openai", "simulated")) as server,
            openai.AsyncOpenAI(
                base_url=f"{server.base_url}/v1",
                api_key=client_key,
                max_retries=0,
                timeout=5,
                # Plain HTTP: skip loading CA certificates (50 ms a client).
                http_client=openai.DefaultAsyncHttpxClient(verify=False),
            ) as client,
        ):
            yield fake, server, client


def sent_messages(fake: FakeOpenAI, index: int = -1) -> list[dict[str, Any]]:
    body = fake.requests[index].json
    return [{"role": m["role"], "content": m["content"]} for m in body["messages"]]


# -- replies ---------------------------------------------------------------------


async def test_completion_has_openai_fields(tmp_path: Path) -> None:
    """A whole completion carries OpenAI's id, object, model, choice, finish reason and usage."""
    async with served(tmp_path) as (fake, _, client):
        fake.script(Reply("Hi there", input_tokens=7, output_tokens=2))
        completion = await client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert completion.id.startswith("chatcmpl-")
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o-mini"
    assert completion.choices[0].message.content == "Hi there"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (7, 2)
    assert completion.usage.total_tokens == 9
    assert fake.requests[-1].json["model"] == "gpt-4o-mini"


async def test_length_finish_reason_and_max_tokens_pass_through(tmp_path: Path) -> None:
    """``max_completion_tokens`` reaches the upstream and a cut-off reply says ``length``."""
    async with served(tmp_path) as (fake, _, client):
        fake.script(Reply("Hi", finish_reason="length"))
        completion = await client.chat.completions.create(
            model="gpt-4o-mini", messages=USER, max_completion_tokens=5, temperature=0.1
        )
    assert completion.choices[0].finish_reason == "length"
    body = fake.requests[-1].json
    assert 5 in (body.get("max_tokens"), body.get("max_completion_tokens"))
    assert body["temperature"] == pytest.approx(0.1)


async def test_system_and_content_parts_and_unknown_params(tmp_path: Path) -> None:
    """System and developer messages, text-part arrays and unknown params are accepted."""
    async with served(tmp_path) as (fake, _, client):
        completion = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hello"}]},
            ],
            user="someone",
            seed=3,
            extra_body={"not_an_openai_param": True},
        )
    assert completion.choices[0].message.content == "Hello from the fake."
    assert sent_messages(fake) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello"},
    ]


@reads_sdk_stream
async def test_stream_sends_chunks_then_usage_then_done(tmp_path: Path) -> None:
    """A stream yields ``chat.completion.chunk`` deltas, a finish reason and, asked for, usage."""
    async with served(tmp_path) as (fake, _, client):
        fake.script(Reply(chunks=("Hel", "lo", "!"), input_tokens=4, output_tokens=3))
        stream = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=USER,
            stream=True,
            stream_options={"include_usage": True},
        )
        async with stream:
            chunks = [chunk async for chunk in stream]
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello!"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (4, 3)


async def test_stream_without_include_usage_has_no_usage_chunk(tmp_path: Path) -> None:
    """Without ``stream_options.include_usage`` every chunk has a choice and no usage."""
    async with (
        served(tmp_path) as (_, server, _client),
        httpx.AsyncClient(base_url=server.base_url, verify=False) as raw,
    ):
        response = await raw.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": USER, "stream": True},
        )
    lines = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert response.headers["content-type"].startswith("text/event-stream")
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(line) for line in lines[:-1]]
    assert all(c["choices"] and "usage" not in c for c in chunks)


@reads_sdk_stream
async def test_stream_broken_upstream_raises_api_error(tmp_path: Path) -> None:
    """An upstream that breaks mid-stream ends the SDK's stream with an ``APIError``."""
    async with served(tmp_path) as (fake, _, client):
        fake.script(Cut(after=1))
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=USER, stream=True
        )
        seen: list[str] = []

        async def read() -> None:
            async with stream:
                async for chunk in stream:
                    seen.extend(c.delta.content or "" for c in chunk.choices)

        with pytest.raises(openai.APIError, match="broke"):
            await read()
    assert "".join(seen)


# -- models and aliases ----------------------------------------------------------


async def test_models_lists_routable_models_and_aliases(tmp_path: Path) -> None:
    """``models.list()`` names the upstream's and configured models and every alias."""
    async with served(tmp_path) as (_, _server, client):
        page = await client.models.list()
        one = await client.models.retrieve("rhetor/code")
        with pytest.raises(openai.NotFoundError):
            await client.models.retrieve("no-such-model")
    ids = {m.id for m in page.data}
    assert {"gpt-4o-mini", "gpt-4o", "gpt-3.5-turbo"} <= ids
    assert {f"rhetor/{t}" for t in ("code", "chat", "planning", "reasoning", "default")} <= ids
    assert "simulated-echo" not in ids  # the simulated provider is off ("never")
    assert all(m.object == "model" for m in page.data)
    assert one.owned_by == "rhetor"


async def test_aliases_route_by_task_with_fallbacks(tmp_path: Path) -> None:
    """Each alias follows its task's chain; with no Anthropic, the OpenAI fallback answers."""
    expected = {
        "rhetor/code": "gpt-4-turbo",
        "rhetor/planning": "gpt-4o",
        "rhetor/reasoning": "gpt-4o",
        "rhetor/chat": "gpt-3.5-turbo",
        "rhetor/default": "gpt-4o",
    }
    async with served(tmp_path) as (fake, _, client):
        answered = {}
        for alias in expected:
            completion = await client.chat.completions.create(model=alias, messages=USER)
            answered[alias] = (completion.model, fake.requests[-1].json["model"])
    assert answered == {alias: (model, model) for alias, model in expected.items()}


async def test_unknown_model_and_alias_are_not_found(tmp_path: Path) -> None:
    """An unknown model or ``rhetor/`` alias is the SDK's ``NotFoundError``, code model_not_found."""
    async with served(tmp_path) as (fake, _, client):
        for model in ("no-such-model", "rhetor/nope"):
            with pytest.raises(openai.NotFoundError) as caught:
                await client.chat.completions.create(model=model, messages=USER)
            assert caught.value.code == "model_not_found"
    assert not [r for r in fake.requests if r.path.endswith("/chat/completions")]


# -- contexts and components -------------------------------------------------------


async def test_context_header_carries_history_across_calls(tmp_path: Path) -> None:
    """With ``X-Rhetor-Context`` the stored turns are prepended once, not duplicated."""
    async with served(tmp_path) as (fake, server, client):
        headers = {"X-Rhetor-Context": "ctx-1", "X-Rhetor-Component": "ergon"}
        fake.script(Reply("Nice to meet you, Ada."), Reply("You are Ada."))
        first = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "I am Ada."}],
            extra_headers=headers,
        )
        # The SDK's usual pattern: resend the whole history plus the new question.
        history = [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "I am Ada."},
            {"role": "assistant", "content": first.choices[0].message.content},
            {"role": "user", "content": "Who am I?"},
        ]
        await client.chat.completions.create(
            model="gpt-4o-mini", messages=history, extra_headers=headers
        )
        stored = await server.runtime.get_context("ctx-1")
    assert sent_messages(fake) == history
    assert [m.content for m in stored["messages"]] == [
        "I am Ada.",
        "Nice to meet you, Ada.",
        "Who am I?",
        "You are Ada.",
    ]


async def test_without_context_header_requests_are_stateless(tmp_path: Path) -> None:
    """Without a context, each call sends exactly the client's messages and stores nothing."""
    async with served(tmp_path) as (fake, server, client):
        await client.chat.completions.create(model="gpt-4o-mini", messages=USER)
        await client.chat.completions.create(model="gpt-4o-mini", messages=USER)
        contexts = await server.runtime.list_contexts()
    assert sent_messages(fake) == USER
    assert list(contexts) == []


# -- errors ------------------------------------------------------------------------


async def test_budget_refusal_is_rate_limit_error_with_insufficient_quota(tmp_path: Path) -> None:
    """An enforced budget refusal is the SDK's ``RateLimitError``, type insufficient_quota."""
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"gpt-4o-mini": {"input_per_mtok": 100, "output_per_mtok": 100}}))
    async with served(
        tmp_path, budget_policy="enforce", daily_limit=0.0001, price_overrides=prices
    ) as (fake, _, client):
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    error = caught.value
    assert error.code == "budget_exceeded"
    assert error.type == "insufficient_quota"
    assert error.response.headers["x-should-retry"] == "false"
    assert not [r for r in fake.requests if r.path.endswith("/chat/completions")]


async def test_wrong_key_is_authentication_error(tmp_path: Path) -> None:
    """With ``RHETOR_API_KEY`` set, a wrong bearer key is the SDK's ``AuthenticationError``."""
    async with served(tmp_path, client_key="wrong", api_key="right") as (_, server, client):
        with pytest.raises(openai.AuthenticationError) as caught:
            await client.chat.completions.create(model="gpt-4o-mini", messages=USER)
        async with openai.AsyncOpenAI(
            base_url=f"{server.base_url}/v1",
            api_key="right",
            max_retries=0,
            http_client=openai.DefaultAsyncHttpxClient(verify=False),
        ) as good:
            completion = await good.chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert caught.value.code == "invalid_api_key"
    assert completion.choices[0].message.content


async def test_malformed_bodies_are_bad_request_errors(tmp_path: Path) -> None:
    """Empty messages, a bad role, a part of no known type, a bad image or a tool message without its call id is the SDK's ``BadRequestError``, naming the param."""
    bad: list[tuple[list[Any], str]] = [
        ([], "messages"),
        ([{"role": "function", "content": "x", "name": "f"}], "messages[0].role"),
        ([{"role": "tool", "content": "x"}], "messages[0].tool_call_id"),
        (
            [{"role": "user", "content": [{"type": "video_url", "video_url": {}}]}],
            "messages[0].content[0]",
        ),
        (
            [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "data:image/png;x"}}],
                }
            ],
            "messages[0].content[0].image_url.url",
        ),
        ([{"role": "assistant", "content": "no user turn"}], "messages"),
    ]
    async with served(tmp_path) as (_, _server, client):
        for messages, param in bad:
            with pytest.raises(openai.BadRequestError) as caught:
                await client.chat.completions.create(model="gpt-4o-mini", messages=messages)
            assert caught.value.param == param
            assert caught.value.type == "invalid_request_error"


async def test_hostile_fields_are_openai_shaped_400s_naming_the_param(tmp_path: Path) -> None:
    """
    A role that is not a string, a content part whose type is a list or a 400-digit
    temperature is the SDK's ``BadRequestError`` naming the param, never a 500.
    """
    bad: list[tuple[dict[str, Any], str]] = [
        ({"messages": [{"role": ["user"], "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": {"r": 1}, "content": "x"}]}, "messages[0].role"),
        (
            {"messages": [{"role": "user", "content": [{"type": ["text"]}]}]},
            "messages[0].content[0]",
        ),
        ({"messages": USER, "temperature": 10**400}, "temperature"),
        ({"messages": USER, "max_tokens": 10**30}, "max_tokens"),
    ]
    async with served(tmp_path) as (fake, server, client):
        for body, param in bad:
            with pytest.raises(openai.BadRequestError) as caught:
                await client.chat.completions.create(model="gpt-4o-mini", **body)
            assert caught.value.param == param
            assert caught.value.type == "invalid_request_error"
        assert [r for r in fake.requests if r.method == "POST"] == []
        assert server.runtime.router.stats().restarts == 0


async def test_a_413_leaves_the_sdk_client_able_to_go_on(tmp_path: Path) -> None:
    """After a 413 for a large body the same SDK client's next request succeeds (it used to time out)."""
    async with served(tmp_path, max_body_bytes=10_000) as (_, _server, client):
        for _ in range(3):
            with pytest.raises(openai.APIStatusError) as caught:
                await client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "x" * 5_000_000}]
                )
            assert caught.value.status_code == 413
            with trio.fail_after(4):
                completion = await client.chat.completions.create(
                    model="gpt-4o-mini", messages=USER
                )
            assert completion.choices[0].message.content


async def test_a_foreign_host_or_origin_is_a_permission_error(tmp_path: Path) -> None:
    """The Host allow-list and the Origin check answer 403 in OpenAI's shape."""
    async with (
        served(tmp_path) as (fake, server, _client),
        httpx.AsyncClient(base_url=server.base_url, verify=False) as raw,
    ):
        body = {"model": "gpt-4o-mini", "messages": USER}
        host = await raw.post("/v1/chat/completions", json=body, headers={"Host": "evil.example"})
        origin = await raw.post(
            "/v1/chat/completions", json=body, headers={"Origin": "http://evil.example"}
        )
        plain = await raw.post(
            "/v1/chat/completions",
            content=json.dumps(body).encode(),
            headers={"Content-Type": "text/plain"},
        )
    assert host.status_code == origin.status_code == 403
    assert host.json()["error"]["type"] == "permission_error"
    assert host.json()["error"]["param"] == "Host" and origin.json()["error"]["param"] == "Origin"
    assert plain.status_code == 415
    assert set(plain.json()["error"]) == {"message", "type", "param", "code", "request_id"}
    assert [r for r in fake.requests if r.method == "POST"] == []


async def test_invalid_json_is_openai_shaped_400(tmp_path: Path) -> None:
    """A body that is not JSON answers 400 in OpenAI's error shape."""
    async with (
        served(tmp_path) as (_, server, _client),
        httpx.AsyncClient(base_url=server.base_url, verify=False) as raw,
    ):
        response = await raw.post(
            "/v1/chat/completions",
            content=b"{not json",
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "param", "code", "request_id"}


async def test_all_providers_failing_is_internal_server_error(tmp_path: Path) -> None:
    """When every candidate fails, the SDK raises ``InternalServerError`` (503)."""
    async with served(tmp_path) as (fake, _, client):
        fake.script(Fail.unauthorized())
        with pytest.raises(openai.InternalServerError) as caught:
            await client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert caught.value.status_code == 503
    assert caught.value.code == "all_providers_failed"


async def test_client_disconnect_cancels_the_upstream_call(tmp_path: Path) -> None:
    """A client that gives up mid-request closes Rhetor's upstream request too."""
    async with served(tmp_path) as (fake, _, client):
        fake.script(Hang())
        with pytest.raises(openai.APITimeoutError):
            await client.chat.completions.create(model="gpt-4o-mini", messages=USER, timeout=0.2)
        with trio.fail_after(2):
            await fake.disconnected.wait()
