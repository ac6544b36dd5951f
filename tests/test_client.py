"""
RhetorClient over HTTP and SSE, against a real server, under asyncio and trio.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import trio

import rhetor.client
from rhetor.client import (
    BudgetExceeded,
    ConnectionRefused,
    NotFound,
    ProviderUnavailable,
    Reply,
    RhetorClient,
    RhetorClientError,
    ServerError,
    StorageUnavailable,
    Timeout,
    Unauthorized,
    ValidationError,
    get_rhetor_prompt_client,
)
from rhetor.client._errors import error_from_body
from tests.helpers import ServerInfo, settings_for
from tests.server_thread import ServerThread

T = TypeVar("T")
Run = Callable[[Callable[[], Awaitable[T]]], T]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerInfo]:
    """One plain server (simulated provider, no key, warn policy) for the module."""
    with ServerThread(settings_for(tmp_path_factory.mktemp("client"))) as info:
        yield info


@pytest.fixture(params=["asyncio", "trio"])
def run(request: pytest.FixtureRequest) -> Run[Any]:
    """Run an async function to completion under asyncio, then under trio."""
    if request.param == "asyncio":
        return lambda fn: asyncio.run(fn())  # type: ignore[arg-type]
    return lambda fn: trio.run(fn)


def _client(server: ServerInfo, **kwargs: Any) -> RhetorClient:
    return RhetorClient("127.0.0.1", server.port, **kwargs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# -- the public surface -----------------------------------------------------------


def test_public_names_are_exactly_the_documented_ones() -> None:
    """rhetor.client exports its documented names and nothing else."""
    assert set(rhetor.client.__all__) == {
        "BudgetExceeded",
        "Chunk",
        "Completed",
        "ConnectionRefused",
        "Message",
        "NotFound",
        "PromptClient",
        "ProviderUnavailable",
        "Reply",
        "ReplyStream",
        "RequestCancelled",
        "RhetorClient",
        "RhetorClientError",
        "ServerError",
        "Session",
        "SessionEvent",
        "SessionRequest",
        "StorageUnavailable",
        "Timeout",
        "TokenUsage",
        "ToolCall",
        "TypingStarted",
        "TypingStopped",
        "Unauthorized",
        "ValidationError",
        "get_rhetor_prompt_client",
    }
    for name in rhetor.client.__all__:
        assert getattr(rhetor.client, name) is not None


def test_importing_the_client_does_not_import_the_server_stack() -> None:
    """Importing rhetor.client loads no Quart, Hypercorn, actor runtime or provider SDK."""
    code = (
        "import sys, rhetor.client\n"
        "heavy = ('quart', 'quart_trio', 'hypercorn', 'actors', 'trio_websocket',"
        " 'anthropic', 'openai', 'rhetor.runtime', 'rhetor.edge._app')\n"
        "print([m for m in sys.modules if m.split('.')[0] in heavy or m in heavy])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert out.stdout.strip() == "[]"


def test_every_client_error_is_a_rhetor_client_error() -> None:
    """The whole tree hangs off RhetorClientError, so one except catches every failure."""
    for cls in (
        BudgetExceeded,
        ConnectionRefused,
        NotFound,
        ProviderUnavailable,
        ServerError,
        Timeout,
        Unauthorized,
        ValidationError,
        rhetor.client.RequestCancelled,
    ):
        assert issubclass(cls, RhetorClientError)


def test_client_defaults_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """RHETOR_HOST, RHETOR_PORT and RHETOR_API_KEY are the defaults; the key never shows in repr."""
    monkeypatch.setenv("RHETOR_HOST", "rhetor.example")
    monkeypatch.setenv("RHETOR_PORT", "9123")
    monkeypatch.setenv("RHETOR_API_KEY", "sekrit")
    client = RhetorClient()
    assert client.base_url == "http://rhetor.example:9123"
    assert client.api_key == "sekrit"
    assert "sekrit" not in repr(client)
    monkeypatch.delenv("RHETOR_HOST")
    monkeypatch.delenv("RHETOR_PORT")
    monkeypatch.delenv("RHETOR_API_KEY")
    plain = RhetorClient(api_key="")
    assert plain.base_url == "http://localhost:8300"
    assert plain.api_key is None


# -- the one translation point -----------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "expected"),
    [
        (
            {"error": {"type": "validation_error", "message": "m", "field": "f"}},
            422,
            ValidationError,
        ),
        ({"error": {"type": "invalid_json", "message": "m"}}, 400, ValidationError),
        ({"error": {"type": "payload_too_large", "message": "m"}}, 413, ValidationError),
        ({"error": {"type": "not_found", "message": "m"}}, 404, NotFound),
        ({"error": {"type": "unauthorized", "message": "m"}}, 401, Unauthorized),
        ({"error": {"type": "forbidden", "message": "m"}}, 403, Unauthorized),
        ({"error": {"type": "unsupported_media_type", "message": "m"}}, 415, ValidationError),
        (None, 415, ValidationError),
        ({"error": {"type": "budget_exceeded", "message": "m"}}, 402, BudgetExceeded),
        ({"error": {"type": "provider_unavailable", "message": "m"}}, 503, ProviderUnavailable),
        ({"error": {"type": "all_providers_failed", "message": "m"}}, 503, ProviderUnavailable),
        ({"error": {"type": "service_unavailable", "message": "m"}}, 503, ServerError),
        (
            {"error": {"type": "storage_unavailable", "message": "m"}},
            503,
            StorageUnavailable,
        ),
        ({"error": {"type": "internal_error", "message": "m"}}, 500, ServerError),
        (None, 401, Unauthorized),
        ("not json at all", 502, ServerError),
        ({"type": "budget_exceeded", "message": "frame"}, None, BudgetExceeded),
    ],
)
def test_error_bodies_map_to_one_client_class_each(
    body: Any, status: int | None, expected: type[RhetorClientError]
) -> None:
    """Each server error type (or bare status) becomes its client class, keeping the type."""
    error = error_from_body(body, status)
    assert type(error) is expected
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        assert error.type == body["error"]["type"]
        assert error.field == body["error"].get("field")


def test_budget_and_provider_errors_expose_their_details() -> None:
    """BudgetExceeded carries period, limit and spent; ProviderUnavailable the attempts."""
    budget = error_from_body(
        {
            "error": {
                "type": "budget_exceeded",
                "message": "m",
                "period": "daily",
                "limit": 1,
                "spent": 2,
            }
        },
        402,
    )
    assert isinstance(budget, BudgetExceeded)
    assert (budget.period, budget.limit, budget.spent) == ("daily", 1.0, 2.0)
    attempt = {"provider": "a", "model": "b", "type": "rate_limited", "message": "slow down"}
    down = error_from_body(
        {"error": {"type": "all_providers_failed", "message": "m", "attempts": [attempt]}}, 503
    )
    assert isinstance(down, ProviderUnavailable)
    assert down.attempts == [attempt]


def _sse_transport(*events: dict[str, Any], status: int = 200) -> httpx.MockTransport:
    body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body, headers={"content-type": "text/event-stream"})

    return httpx.MockTransport(handler)


def test_an_error_event_mid_stream_raises_its_typed_error(run: Run[None]) -> None:
    """A final SSE event with an error raises that error's class after the chunks before it."""
    transport = _sse_transport(
        {"chunk": "Hel", "done": False},
        {"chunk": "", "done": True, "error": {"type": "stream_broken", "message": "cut"}},
    )
    seen: list[str] = []

    async def read_all(client: RhetorClient) -> None:
        async for chunk in client.generate_stream("hi"):
            seen.append(chunk)

    async def main() -> None:
        async with RhetorClient("x", 1, transport=transport) as client:
            with pytest.raises(ServerError, match="cut") as caught:
                await read_all(client)
            assert caught.value.type == "stream_broken"

    run(main)
    assert seen == ["Hel"]


def test_a_stream_without_its_final_event_raises_server_error(run: Run[None]) -> None:
    """A stream that stops before ``done`` is an error, not a silently short reply."""
    transport = _sse_transport({"chunk": "Hel", "done": False})

    async def main() -> None:
        async with RhetorClient("x", 1, transport=transport) as client:
            with pytest.raises(ServerError, match="final event"):
                async for _ in client.generate_stream("hi"):
                    pass

    run(main)


def test_a_reply_that_is_not_json_raises_server_error(run: Run[None]) -> None:
    """A 200 answer that is not JSON raises ServerError instead of returning junk."""
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=b"<html>"))

    async def main() -> None:
        async with RhetorClient("x", 1, transport=transport) as client:
            with pytest.raises(ServerError, match="not JSON"):
                await client.health()

    run(main)


# -- LLM calls ------------------------------------------------------------------------


def test_generate_returns_a_reply_with_text_model_provider_routing_usage_and_cost(
    server: ServerInfo, run: Run[Reply]
) -> None:
    """generate() answers a Reply with every field the seeds read."""

    async def main() -> Reply:
        async with _client(server) as client:
            return await client.generate("Write a haiku", temperature=0.7, max_tokens=500)

    reply = run(main)
    assert reply.text == "[simulated] You said: Write a haiku"
    assert reply.message.content == reply.text
    assert (reply.provider, reply.model) == ("simulated", "simulated-echo")
    assert "simulated" in reply.routing_explanation
    assert reply.usage.total_tokens == reply.usage.input_tokens + reply.usage.output_tokens > 0
    assert reply.cost == 0.0
    assert reply.budget_warning is None
    assert reply.raw["finished"] is True


def test_generate_takes_task_type_inside_routing_parameters_or_beside_them(
    server: ServerInfo, run: Run[tuple[Reply, Reply]]
) -> None:
    """The seeds' routing_parameters={"task_type": ...} routes like task_type=... does."""

    async def main() -> tuple[Reply, Reply]:
        async with _client(server) as client:
            inside = await client.generate(
                "sort a list",
                routing_parameters={
                    "task_type": "code",
                    "complexity": "high",
                    "required_capabilities": ["code_generation"],
                    "max_cost": 0.2,
                },
            )
            beside = await client.generate("plan it", task_type="planning")
            return inside, beside

    inside, beside = run(main)
    assert inside.raw["task_type"] == "code"
    assert beside.raw["task_type"] == "planning"


def test_generate_with_a_context_id_keeps_the_conversation(
    server: ServerInfo, run: Run[Reply]
) -> None:
    """A second generate() in the same context sees the first exchange."""

    async def main() -> Reply:
        async with _client(server) as client:
            context = f"test:{uuid.uuid4().hex}"
            await client.generate("first", context_id=context, component="tests")
            return await client.generate("second", context_id=context, component="tests")

    reply = run(main)
    assert "I can see 2 earlier messages" in reply.text


def _in_trio() -> bool:
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True


def test_generate_stream_yields_chunks_then_holds_the_whole_reply(
    server: ServerInfo, run: Run[tuple[list[str], Reply | None]]
) -> None:
    """generate_stream() yields the text in pieces; .reply has model, provider and usage."""

    async def main() -> tuple[list[str], Reply | None]:
        async with _client(server) as client:
            stream = client.generate_stream("stream this reply please", max_tokens=1000)
            chunks = [chunk async for chunk in stream]
            return chunks, stream.reply

    chunks, reply = run(main)
    assert len(chunks) > 1
    assert "".join(chunks) == "[simulated] You said: stream this reply please"
    assert reply is not None
    assert reply.text == "".join(chunks)
    assert reply.provider == "simulated"
    assert reply.usage.output_tokens > 0


def test_chat_returns_the_reply_as_message_content(server: ServerInfo, run: Run[Reply]) -> None:
    """chat() sends the whole conversation; reply.message.content is the answer."""

    async def main() -> Reply:
        async with _client(server) as client:
            return await client.chat(
                [
                    {"role": "system", "content": "You are terse."},
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello."},
                    {"role": "user", "content": "Again"},
                ],
                temperature=0.7,
            )

    reply = run(main)
    assert reply.message.role == "assistant"
    assert reply.message.content.startswith("[simulated] You said: Again")
    assert "System prompt: You are terse." in reply.message.content


def test_chat_stream_yields_the_reply_in_chunks(server: ServerInfo, run: Run[list[str]]) -> None:
    """chat_stream() streams a conversation's reply."""

    async def main() -> list[str]:
        async with _client(server) as client:
            return [c async for c in client.chat_stream([{"role": "user", "content": "Hi there"}])]

    chunks = run(main)
    assert "".join(chunks) == "[simulated] You said: Hi there"


def test_an_unknown_model_raises_not_found_naming_the_model(
    server: ServerInfo, run: Run[None]
) -> None:
    """Asking for a model no provider serves raises NotFound with field "model"."""

    async def main() -> None:
        async with _client(server) as client:
            with pytest.raises(NotFound) as caught:
                await client.estimate_cost("hi", model="no-such-model")
            assert caught.value.field == "model"

    run(main)


# -- templates and prompts -------------------------------------------------------------


def _requests_seen(client: RhetorClient) -> list[str]:
    seen: list[str] = []

    async def record(request: httpx.Request) -> None:
        seen.append(f"{request.method} {request.url.path}")

    client.http.event_hooks["request"].append(record)
    return seen


def test_create_template_maps_seed_metadata_and_generate_from_template_fills_it(
    server: ServerInfo, run: Run[tuple[str, Reply, dict[str, Any]]]
) -> None:
    """Seed metadata becomes the template's fields; generate_from_template renders, then asks."""

    async def main() -> tuple[str, Reply, dict[str, Any]]:
        async with _client(server) as client:
            name = f"bug_report_{'trio' if _in_trio() else 'asyncio'}"
            template_id = await client.create_template(
                name=name,
                content="Bug: {bug_description}\nEnv: {environment}",
                metadata={
                    "description": "Template for bug reports",
                    "required_parameters": ["bug_description"],
                    "optional_parameters": ["environment"],
                    "owner": "tests",
                },
            )
            reply = await client.generate_from_template(
                template_name=name, parameters={"bug_description": "it crashes"}, temperature=0.3
            )
            stored = await client.request("GET", f"/templates/{template_id}")
            return template_id, reply, stored

    template_id, reply, stored = run(main)
    assert template_id == stored["id"]
    assert stored["description"] == "Template for bug reports"
    assert list(stored["required"]) == ["bug_description"]
    assert list(stored["optional"]) == ["environment"]
    assert stored["metadata"] == {"owner": "tests"}
    assert reply.text == "[simulated] You said: Bug: it crashes\nEnv: "


def test_a_missing_template_parameter_raises_validation_error_before_any_llm_call(
    server: ServerInfo, run: Run[list[str]]
) -> None:
    """generate_from_template without a required parameter names it; only the render is sent."""

    async def main() -> list[str]:
        async with _client(server) as client:
            name = f"needs_two_{uuid.uuid4().hex}"
            await client.create_template(name, "{a} and {b}")
            seen = _requests_seen(client)
            with pytest.raises(ValidationError, match="missing") as caught:
                await client.generate_from_template(name, {"a": "x"})
            assert caught.value.field == "parameters.b"
            return seen

    seen = run(main)
    assert len(seen) == 1
    assert seen[0].endswith("/render")


def test_prompt_client_generates_renders_and_stores_prompts(
    server: ServerInfo, run: Run[dict[str, Any]]
) -> None:
    """get_rhetor_prompt_client() gives the seeds' prompt calls, each answering what they read."""

    async def main() -> dict[str, Any]:
        suffix = "trio" if _in_trio() else "asyncio"
        client = await get_rhetor_prompt_client("127.0.0.1", server.port)
        try:
            template = await client.create_prompt_template(
                name=f"Component Documentation {suffix}",
                template="Write documentation for {component} in the Tekton ecosystem.",
                variables=["component"],
                description="Template for component documentation",
            )
            rendered = await client.render_prompt(
                template_id=template["template_id"], variables={"component": "MyComponent"}
            )
            generated = await client.generate_prompt(
                task="Explain MyComponent's integration with Rhetor",
                context={"audience": "developers"},
                format="instruction",
            )
            prompt = await client.create_prompt(
                name=f"my-component System Prompt {suffix}",
                component=f"my-component-{suffix}",
                content="You are my-component.",
                description="System prompt for my-component",
                tags=["system", "my-component"],
                is_default=True,
            )
            return {"rendered": rendered, "generated": generated, "prompt": prompt}
        finally:
            await client.close()

    result = run(main)
    assert result["rendered"] == "Write documentation for MyComponent in the Tekton ecosystem."
    assert "Explain MyComponent's integration with Rhetor" in result["generated"]["prompt"]
    assert "developers" in result["generated"]["prompt"]
    assert result["prompt"]["is_default"] is True
    assert result["prompt"]["prompt_id"] == result["prompt"]["id"]


# -- budget, evaluation, providers, contexts, health ---------------------------------------


def test_estimate_cost_answers_cost_tokens_and_whether_under_budget(
    server: ServerInfo, run: Run[dict[str, Any]]
) -> None:
    """estimate_cost() answers the keys the seeds read."""

    async def main() -> dict[str, Any]:
        async with _client(server) as client:
            return await client.estimate_cost(prompt="How much?", model=None, max_tokens=1000)

    estimate = run(main)
    assert estimate["estimated_cost"] >= 0
    assert estimate["estimated_tokens"]["total_tokens"] == (
        estimate["estimated_tokens"]["input_tokens"] + 1000
    )
    assert estimate["under_budget"] is True


def test_evaluate_answers_an_overall_score_and_feedback(
    server: ServerInfo, run: Run[dict[str, Any]]
) -> None:
    """evaluate() answers evaluation.overall_score (0-10), scores and feedback."""

    async def main() -> dict[str, Any]:
        async with _client(server) as client:
            return await client.evaluate(
                prompt="What is 2+2?", response="2+2 is 4.", criteria=["accuracy", "clarity"]
            )

    evaluation = run(main)["evaluation"]
    assert 0 <= evaluation["overall_score"] <= 10
    assert set(evaluation["scores"]) == {"accuracy", "clarity"}
    assert isinstance(evaluation["feedback"], str)


def test_providers_list_and_set_provider_changes_the_active_choice(
    server: ServerInfo, run: Run[tuple[dict[str, Any], dict[str, Any]]]
) -> None:
    """get_providers() lists the simulated provider; set_provider() makes a model active."""

    async def main() -> tuple[dict[str, Any], dict[str, Any]]:
        async with _client(server) as client:
            before = await client.get_providers()
            after = await client.set_provider("simulated", "simulated-summary")
            await client.set_provider("simulated", "simulated-echo")
            return before, after

    before, after = run(main)
    assert before["providers"]["simulated"]["available"] is True
    assert "simulated-echo" in before["providers"]["simulated"]["models"]
    assert (after["active_provider"], after["active_model"]) == ("simulated", "simulated-summary")


def test_set_provider_to_an_unknown_provider_raises_not_found(
    server: ServerInfo, run: Run[None]
) -> None:
    """set_provider() with a provider Rhetor does not run raises NotFound."""

    async def main() -> None:
        async with _client(server) as client:
            with pytest.raises(NotFound):
                await client.set_provider("nobody", "nothing")

    run(main)


def test_budget_reports_each_period(server: ServerInfo, run: Run[dict[str, Any]]) -> None:
    """get_budget() answers the policy and daily, weekly and monthly status."""

    async def main() -> dict[str, Any]:
        async with _client(server) as client:
            return await client.get_budget()

    status = run(main)
    assert status["policy"] == "warn"
    assert set(status["periods"]) == {"daily", "weekly", "monthly"}


def test_budget_entries_list_this_clients_requests_newest_first(
    server: ServerInfo, run: Run[tuple[str, list[dict[str, Any]], list[dict[str, Any]]]]
) -> None:
    """get_budget_entries() lists requests' charges, newest first, bounded by limit and since."""

    async def main() -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
        component = f"entries-{'trio' if _in_trio() else 'asyncio'}"
        async with _client(server) as client:
            await client.generate("first", component=component)
            await client.generate("second", component=f"{component}-2")
            newest = await client.get_budget_entries(limit=2)
            later = await client.get_budget_entries(since=newest[0]["ts"])
            return component, newest, later

    component, newest, later = run(main)
    assert [e["component"] for e in newest] == [f"{component}-2", component]
    assert newest[0]["status"] == "ok" and newest[0]["provider"] == "simulated"
    assert later and later[-1]["component"] == f"{component}-2"
    assert all(e["ts"] >= newest[0]["ts"] for e in later)


def test_contexts_are_listed_shown_and_deleted(
    server: ServerInfo, run: Run[tuple[list[str], dict[str, Any]]]
) -> None:
    """A context used by generate() is listed and shown; once deleted it is NotFound."""

    async def main() -> tuple[list[str], dict[str, Any]]:
        context = f"ctx-{'trio' if _in_trio() else 'asyncio'}"
        async with _client(server) as client:
            await client.generate("remember me", context_id=context)
            listed = [c["id"] for c in await client.get_contexts()]
            shown = await client.get_context(context)
            await client.delete_context(context)
            with pytest.raises(NotFound):
                await client.get_context(context)
            return listed, shown

    listed, shown = run(main)
    assert any(c.startswith("ctx-") for c in listed)
    assert [m["role"] for m in shown["messages"]] == ["user", "assistant"]


def test_health_reports_status_providers_and_version(
    server: ServerInfo, run: Run[dict[str, Any]]
) -> None:
    """health() answers healthy, with the simulated provider available."""

    async def main() -> dict[str, Any]:
        async with _client(server) as client:
            return await client.health()

    health = run(main)
    assert health["status"] == "healthy"
    assert health["providers"]["simulated"] is True
    assert health["version"]


# -- failures -------------------------------------------------------------------------------


def test_a_server_that_is_down_raises_connection_refused(run: Run[None]) -> None:
    """Every kind of call to a port nobody listens on raises ConnectionRefused."""
    port = _free_port()

    async def main() -> None:
        async with RhetorClient("127.0.0.1", port) as client:
            with pytest.raises(ConnectionRefused, match=str(port)):
                await client.generate("hi")
            with pytest.raises(ConnectionRefused):
                async for _ in client.generate_stream("hi"):
                    pass
            with pytest.raises(ConnectionRefused):
                async with client.session():
                    pass
        with pytest.raises(ConnectionRefused):
            await get_rhetor_prompt_client("127.0.0.1", port)

    run(main)


def test_a_server_that_does_not_answer_in_time_raises_timeout(run: Run[None]) -> None:
    """A listener that never answers makes the call raise Timeout after the client's timeout."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        async def main() -> None:
            async with RhetorClient("127.0.0.1", port, timeout=0.2) as client:
                with pytest.raises(Timeout):
                    await client.health()

        run(main)


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerInfo]:
    """A server that wants the API key "right-key"."""
    settings = settings_for(tmp_path_factory.mktemp("keyed"), api_key="right-key")
    with ServerThread(settings) as info:
        yield info


def test_a_wrong_key_raises_unauthorized_and_the_right_one_works(
    keyed_server: ServerInfo, run: Run[None]
) -> None:
    """With an API key set on the server, a wrong or missing key raises Unauthorized."""

    async def main() -> None:
        # A fresh client after each refused POST: the server does not answer the
        # next request on a connection whose POST body it refused unread.
        for key in ("wrong-key", None):
            async with _client(keyed_server, api_key=key) as client:
                with pytest.raises(Unauthorized):
                    await client.generate("hi")
            async with _client(keyed_server, api_key=key) as client:
                with pytest.raises(Unauthorized):
                    async with client.session():
                        pass
                assert (await client.health())["status"] == "healthy"
        async with _client(keyed_server, api_key="right-key") as client:
            assert (await client.generate("hi")).text == "[simulated] You said: hi"
            async with client.session() as session:
                assert "providers" in await session.status()

    run(main)


@pytest.fixture(scope="module")
def costly_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerInfo]:
    """A server enforcing a $0.001 daily limit, where the simulated model costs $1 a token."""
    tmp = tmp_path_factory.mktemp("costly")
    prices = tmp / "prices.json"
    dear = {"input_per_mtok": 1_000_000.0, "output_per_mtok": 1_000_000.0}
    prices.write_text(json.dumps({"simulated-echo": dear, "simulated-summary": dear}))
    settings = settings_for(
        tmp, budget_policy="enforce", daily_limit=0.001, price_overrides=Path(prices)
    )
    with ServerThread(settings) as info:
        yield info


def test_a_budget_refusal_raises_budget_exceeded(costly_server: ServerInfo, run: Run[None]) -> None:
    """Under an enforced limit the request is refused with BudgetExceeded, over HTTP and SSE."""

    async def main() -> None:
        async with _client(costly_server) as client:
            estimate = await client.estimate_cost("hi", model="simulated-echo", max_tokens=10)
            assert estimate["under_budget"] is False
            with pytest.raises(BudgetExceeded) as caught:
                await client.generate("hi", max_tokens=10)
            assert caught.value.type == "budget_exceeded"
            assert caught.value.period == "daily"
            with pytest.raises(BudgetExceeded):
                async for _ in client.generate_stream("hi", max_tokens=10):
                    pass

    run(main)
