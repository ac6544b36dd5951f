"""
The Router's planning against real provider actors and fake upstreams: the simulated
provider stays out while a real one can answer, explicit models are never swapped,
budget downgrades say so, and a context's history is sent and stored once.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

import rhetor.runtime
from rhetor.budget._pricing import Pricer
from rhetor.client import RhetorClient
from rhetor.routing._plan import TaskConfig
from tests.fakes import Fail, Reply
from tests.fakes.anthropic import FakeAnthropic, fake_anthropic
from tests.fakes.ollama import FakeOllama, fake_ollama
from tests.fakes.openai import FakeOpenAI, fake_openai
from tests.helpers import ServerInfo, running_server, settings_for

CONFIG_PATH = Path(__file__).resolve().parent.parent / "config" / "tasks.json"
CONFIG = TaskConfig.load(CONFIG_PATH)

# Seed 002's generate_with_routing: every task type (and one it does not map) at
# every complexity, with its capabilities and cost limit.
SEED_CAPABILITIES = {
    "creative": ["creative_writing", "storytelling"],
    "analytical": ["reasoning", "analysis"],
    "coding": ["code_generation", "debugging"],
    "educational": ["explanation", "teaching"],
    "other": ["general"],
}
SEED_BASE_LIMITS = {"creative": 0.05, "analytical": 0.08, "coding": 0.10, "educational": 0.06}
SEED_MULTIPLIERS = {"low": 0.5, "medium": 1.0, "high": 2.0}
SEED_COMBINATIONS = [
    {
        "task_type": task,
        "complexity": complexity,
        "required_capabilities": SEED_CAPABILITIES[task],
        "max_cost": SEED_BASE_LIMITS.get(task, 0.05) * SEED_MULTIPLIERS[complexity],
    }
    for task, complexity in itertools.product(SEED_CAPABILITIES, SEED_MULTIPLIERS)
]


@attrs.frozen
class Real:
    """A running server and the fake upstreams behind its real providers."""

    server: ServerInfo
    anthropic: FakeAnthropic
    openai: FakeOpenAI
    ollama: FakeOllama

    @property
    def completions(self) -> int:
        """How many completion requests reached any upstream."""
        return sum(len(f.completions) for f in (self.anthropic, self.openai, self.ollama))


@asynccontextmanager
async def real_server(
    tmp_path: Path, openai_models: tuple[str, ...] = ("gpt-4o-mini", "gpt-4o"), **overrides: Any
) -> AsyncIterator[Real]:
    """The real server on the shipped tasks.json, Anthropic, OpenAI and Ollama up (fakes), simulated auto."""
    async with (
        fake_anthropic() as anthropic,
        fake_openai(models=openai_models) as openai,
        fake_ollama() as ollama,
    ):
        fields: dict[str, Any] = {
            "anthropic_api_key": "test",
            "anthropic_base_url": anthropic.base_url,
            "openai_api_key": "test",
            "openai_base_url": openai.base_url,
            "ollama_base_url": ollama.base_url,
            "task_config": CONFIG_PATH,
            "simulated": "auto",
        } | overrides
        settings = settings_for(tmp_path, **fields)
        backends = rhetor.runtime.default_backends(settings, CONFIG)
        async with running_server(settings, backends=backends, health_interval=0) as server:
            yield Real(server, anthropic, openai, ollama)


@pytest.mark.slow  # the real server with three SDK-backed providers
async def test_seed_routing_parameters_never_pick_the_simulated_echo_while_real_providers_are_up(
    tmp_path: Path,
) -> None:
    """Each of the seed's routing combinations is answered by a real model that fits it, or refused naming the parameter."""
    pricer = Pricer()
    answered = refused = 0
    async with real_server(tmp_path) as real:
        async with httpx.AsyncClient(base_url=real.server.base_url, timeout=10) as client:
            for params in SEED_COMBINATIONS:
                body = {
                    "message": "Tell me about routing",
                    "task_type": params["task_type"],
                    "routing_parameters": params,
                }
                response = await client.post("/message", json=body)
                reply = response.json()
                if response.status_code == 200:
                    answered += 1
                    assert reply["provider"] != "simulated", (params, reply)
                    info = CONFIG.models[reply["model"]]
                    assert set(params["required_capabilities"]) <= info.capabilities, (
                        params,
                        reply,
                    )
                    worst = pricer.worst_case(
                        info.provider, reply["model"], reply["usage"]["input_tokens"], 1024
                    )
                    assert worst <= params["max_cost"], (params, reply)
                else:
                    refused += 1
                    assert response.status_code == 422, (params, reply)
                    error = reply["error"]
                    assert error["type"] == "validation_error"
                    assert error["field"] in (
                        "routing_parameters.max_cost",
                        "routing_parameters.required_capabilities",
                    ), (params, error)
                    assert "claude-3-opus-20240229" in error["message"], error
        assert real.completions == answered
    assert answered >= 10 and refused >= 1


@pytest.mark.slow  # the real server with three SDK-backed providers
async def test_required_capabilities_no_model_has_are_refused_naming_the_parameter(
    tmp_path: Path,
) -> None:
    """A capability no real model has is a 422 on required_capabilities listing the models, not the echo."""
    async with (
        real_server(tmp_path) as real,
        httpx.AsyncClient(base_url=real.server.base_url, timeout=10) as client,
    ):
        body = {"message": "hi", "routing_parameters": {"required_capabilities": ["teleportation"]}}
        response = await client.post("/message", json=body)
        assert real.completions == 0
    error = response.json()["error"]
    assert response.status_code == 422
    assert error["field"] == "routing_parameters.required_capabilities"
    assert "teleportation" in error["message"] and "gpt-4o" in error["message"]
    assert "simulated" not in error["message"]


@pytest.mark.slow  # the real server with three SDK-backed providers
async def test_capable_models_whose_provider_is_down_fail_naming_them(tmp_path: Path) -> None:
    """With Anthropic down, a need only Claude meets is a 503 naming the skipped model, not the echo."""
    async with (
        real_server(tmp_path, anthropic_api_key=None) as real,
        httpx.AsyncClient(base_url=real.server.base_url, timeout=10) as client,
    ):
        params = {"required_capabilities": ["storytelling", "creative_writing"]}
        response = await client.post(
            "/message", json={"message": "hi", "routing_parameters": params}
        )
        assert real.completions == 0
    error = response.json()["error"]
    assert response.status_code == 503 and error["type"] == "all_providers_failed"
    assert error["attempts"] == [
        {
            "provider": "anthropic",
            "model": "claude-3-opus-20240229",
            "type": "provider_unavailable",
            "message": "anthropic is not available",
        }
    ]


OPUS_LIMIT = 0.05  # over gpt-4-turbo's worst case for a short prompt, under claude-3-opus's


@pytest.mark.slow  # the real server with three SDK-backed providers
async def test_an_explicit_model_over_the_budget_is_refused_naming_it_never_swapped(
    tmp_path: Path,
) -> None:
    """Under enforce, naming claude-3-opus that does not fit (not even clamped) is a 402 naming it; no other model answers."""
    async with (
        # Under what 64 output tokens of claude-3-opus cost ($75/Mtok): no clamp fits either.
        real_server(tmp_path, budget_policy="enforce", daily_limit=0.004) as real,
        httpx.AsyncClient(base_url=real.server.base_url, timeout=10) as client,
    ):
        body = {"message": "hi", "model": "claude-3-opus-20240229"}
        response = await client.post("/message", json=body)
        streamed = await client.post("/stream", json=body)
        assert real.completions == 0
    for answer in (response, streamed):
        assert answer.status_code == 402
        error = answer.json()["error"]
        assert error["type"] == "budget_exceeded"
        assert "anthropic/claude-3-opus-20240229" in error["message"]


@pytest.mark.slow  # the real server with three SDK-backed providers
async def test_an_explicit_model_that_fails_is_an_error_not_a_swap(tmp_path: Path) -> None:
    """A named model whose upstream fails is an error listing that model alone; no other provider is called."""
    async with (
        real_server(tmp_path) as real,
        httpx.AsyncClient(base_url=real.server.base_url, timeout=10) as client,
    ):
        real.anthropic.script(*[Fail.unauthorized()] * 3)
        response = await client.post(
            "/message", json={"message": "hi", "model": "claude-3-opus-20240229"}
        )
        assert len(real.openai.completions) == len(real.ollama.completions) == 0
    error = response.json()["error"]
    assert response.status_code == 503
    assert [(a["provider"], a["model"]) for a in error["attempts"]] == [
        ("anthropic", "claude-3-opus-20240229")
    ]


@pytest.mark.slow  # the real server with three SDK-backed providers
async def test_an_explicit_provider_over_the_budget_falls_back_within_that_provider(
    tmp_path: Path,
) -> None:
    """Naming only anthropic under enforce downgrades to a cheaper Claude, never to another provider, and says so."""
    async with (
        real_server(tmp_path, budget_policy="enforce", daily_limit=OPUS_LIMIT) as real,
        httpx.AsyncClient(base_url=real.server.base_url, timeout=10) as client,
    ):
        response = await client.post("/message", json={"message": "hi", "provider": "anthropic"})
        assert len(real.openai.completions) == len(real.ollama.completions) == 0
    reply = response.json()
    assert response.status_code == 200, reply
    assert reply["provider"] == "anthropic" and reply["model"] != "claude-3-opus-20240229"
    assert "claude-3-opus-20240229 was chosen first" in reply["budget_warning"]


@pytest.mark.slow  # the real server with three SDK-backed providers
async def test_a_budget_downgrade_keeps_to_the_routing_parameters(tmp_path: Path) -> None:
    """Under enforce, a stand-in for a refused model must still have the required capabilities."""
    async with (
        real_server(tmp_path, budget_policy="enforce", daily_limit=0.005) as real,
        httpx.AsyncClient(base_url=real.server.base_url, timeout=10) as client,
    ):
        params = {"required_capabilities": ["code_generation"]}
        body = {"message": "hi", "task_type": "code", "routing_parameters": params}
        response = await client.post("/message", json=body)
        assert real.completions == 0
    # gpt-3.5-turbo and llama3 fit the budget but cannot generate code.
    assert response.status_code == 402, response.json()
    assert "claude-3-opus-20240229" in response.json()["error"]["message"]


@pytest.mark.slow  # the real server with three SDK-backed providers
async def test_a_model_with_no_known_price_never_stands_in_for_a_refused_one(
    tmp_path: Path,
) -> None:
    """A model an upstream lists but no price table knows would cost $0: it is no budget downgrade."""
    async with (
        real_server(
            tmp_path,
            openai_models=("gpt-9-mystery",),
            ollama_base_url="http://127.0.0.1:9",  # Ollama is down: no free local model
            budget_policy="enforce",
            # Below what even a clamped reply of the cheapest priced model would cost.
            daily_limit=0.00005,
        ) as real,
        httpx.AsyncClient(base_url=real.server.base_url, timeout=10) as client,
    ):
        response = await client.post("/message", json={"message": "hi", "task_type": "chat"})
        assert real.completions == 0
    assert response.status_code == 402, response.json()


def _assert_downgrade_named(reply: dict[str, Any]) -> None:
    assert (reply["provider"], reply["model"]) == ("openai", "gpt-4-turbo"), reply
    warning = reply["budget_warning"]
    assert "anthropic/claude-3-opus-20240229 was chosen first" in warning
    assert "daily budget $0.05 would be exceeded" in warning
    assert "answered by openai/gpt-4-turbo" in warning
    routing = reply["routing"]
    assert "chose anthropic/claude-3-opus-20240229" in routing
    assert "answered by openai/gpt-4-turbo (a budget downgrade)" in routing
    assert "the budget refused anthropic/claude-3-opus-20240229" in routing


@pytest.mark.slow  # the real server with three SDK-backed providers
async def test_a_budget_downgrade_is_named_over_http_sse_websocket_and_the_client(
    tmp_path: Path,
) -> None:
    """When the budget refuses the planned model, every edge's reply names it and the refusal."""
    body = {"message": "write code", "task_type": "code"}
    async with real_server(tmp_path, budget_policy="enforce", daily_limit=OPUS_LIMIT) as real:
        server = real.server
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
            whole = (await client.post("/message", json=body)).json()
            async with client.stream("POST", "/stream", json=body) as response:
                events = [json.loads(line[6:]) async for line in response.aiter_lines() if line]
        async with open_websocket_url(server.ws_url) as ws:
            frame = {"type": "LLM_REQUEST", "id": "q1", "payload": body}
            await ws.send_message(json.dumps(frame))
            with trio.fail_after(5):
                while (answer := json.loads(await ws.get_message()))["type"] != "RESPONSE":
                    assert answer["type"] == "UPDATE", answer
        async with RhetorClient("127.0.0.1", server.port) as rhetor:
            typed = await rhetor.generate("write code", task_type="code")
        assert len(real.anthropic.completions) == 0
    _assert_downgrade_named(whole)
    _assert_downgrade_named(events[-1])
    _assert_downgrade_named(answer["payload"])
    _assert_downgrade_named(typed.raw)
    assert typed.budget_warning == typed.raw["budget_warning"]


# -- a context and the client's full history (seed 002's ChatSession) ----------


def _turns(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in body["messages"]]


async def _stored(client: httpx.AsyncClient, context_id: str) -> list[tuple[str, str]]:
    context = (await client.get(f"/contexts/{context_id}")).json()
    return [(m["role"], m["content"]) for m in context["messages"]]


@pytest.mark.slow  # the real server with three SDK-backed providers
@pytest.mark.parametrize("streaming", [False, True])
async def test_chat_with_a_context_and_the_full_history_sends_and_stores_each_turn_once(
    tmp_path: Path, streaming: bool
) -> None:
    """The ChatSession pattern on POST /chat: each turn reaches the upstream once and is stored once."""
    async with (
        real_server(tmp_path) as real,
        httpx.AsyncClient(base_url=real.server.base_url, timeout=10) as client,
    ):
        messages: list[dict[str, str]] = [{"role": "system", "content": "Be helpful."}]
        for i, text in enumerate(("first", "second", "third")):
            real.anthropic.script(Reply(f"answer {i}"))
            messages.append({"role": "user", "content": text})
            body = {
                "messages": messages,
                "context_id": "sess-1",
                "task_type": "chat",
                "streaming": streaming,
            }
            response = await client.post("/chat", json=body)
            assert response.status_code == 200, response.text
            messages.append({"role": "assistant", "content": f"answer {i}"})
        stored = await _stored(client, "sess-1")
    sent = real.anthropic.completions[-1].json
    expected = [(m["role"], m["content"]) for m in messages[1:]]
    assert _turns(sent) == expected[:-1]
    assert sent["system"] == "Be helpful."
    assert stored == expected


@pytest.mark.slow  # the real server with three SDK-backed providers
async def test_websocket_chat_and_compat_with_a_context_store_each_turn_once(
    tmp_path: Path,
) -> None:
    """CHAT_REQUEST over /ws and /v1/chat/completions with X-Rhetor-Context follow the same rule."""
    async with (
        real_server(tmp_path) as real,
        httpx.AsyncClient(base_url=real.server.base_url, timeout=10) as client,
    ):
        history: list[dict[str, str]] = []
        async with open_websocket_url(real.server.ws_url) as ws:
            for i, text in enumerate(("one", "two")):
                real.anthropic.script(Reply(f"ws {i}"))
                history.append({"role": "user", "content": text})
                frame = {
                    "type": "CHAT_REQUEST",
                    "id": f"c{i}",
                    "payload": {"messages": history, "context": "ws-1", "task_type": "chat"},
                }
                await ws.send_message(json.dumps(frame))
                with trio.fail_after(5):
                    while (answer := json.loads(await ws.get_message()))["type"] == "UPDATE":
                        pass
                assert answer["type"] == "RESPONSE", answer
                history.append({"role": "assistant", "content": f"ws {i}"})
        ws_sent = _turns(real.anthropic.completions[-1].json)
        ws_stored = await _stored(client, "ws-1")
        compat: list[dict[str, str]] = []
        for i, text in enumerate(("alpha", "beta")):
            real.openai.script(Reply(f"v1 {i}"))
            compat.append({"role": "user", "content": text})
            response = await client.post(
                "/v1/chat/completions",
                json={"model": "gpt-4o", "messages": compat},
                headers={"X-Rhetor-Context": "v1-1"},
            )
            assert response.status_code == 200, response.text
            compat.append({"role": "assistant", "content": f"v1 {i}"})
        v1_sent = _turns(real.openai.completions[-1].json)
        v1_stored = await _stored(client, "v1-1")
    expected = [(m["role"], m["content"]) for m in history]
    assert ws_sent == expected[:-1] and ws_stored == expected
    expected = [(m["role"], m["content"]) for m in compat]
    assert v1_sent == expected[:-1] and v1_stored == expected


@pytest.mark.slow  # the real server with three SDK-backed providers
async def test_chat_and_compat_apply_the_same_rule_to_a_history_that_differs_from_the_store(
    tmp_path: Path,
) -> None:
    """An edited history is all new on /chat and on /v1 alike: one rule, in the Router."""
    script = [
        [("user", "u1")],
        [("user", "u1"), ("assistant", "a1"), ("user", "u2")],
        [("user", "u1"), ("assistant", "a1, edited"), ("user", "u3")],
    ]
    async with (
        real_server(tmp_path) as real,
        httpx.AsyncClient(base_url=real.server.base_url, timeout=10) as client,
    ):
        for i, turns in enumerate(script):
            messages = [{"role": r, "content": c} for r, c in turns]
            real.openai.script(Reply(f"a{i + 1}"), Reply(f"a{i + 1}"))
            chat = {"messages": messages, "context_id": "same-chat", "model": "gpt-4o"}
            assert (await client.post("/chat", json=chat)).status_code == 200
            v1 = {"model": "gpt-4o", "messages": messages}
            headers = {"X-Rhetor-Context": "same-v1"}
            response = await client.post("/v1/chat/completions", json=v1, headers=headers)
            assert response.status_code == 200
        via_chat = await _stored(client, "same-chat")
        via_v1 = await _stored(client, "same-v1")
    assert via_chat == via_v1
    assert via_chat == [
        ("user", "u1"),
        ("assistant", "a1"),
        ("user", "u2"),
        ("assistant", "a2"),
        ("user", "u1"),
        ("assistant", "a1, edited"),
        ("user", "u3"),
        ("assistant", "a3"),
    ]
