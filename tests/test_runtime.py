"""The in-process runtime: rhetor.runtime.start() and the whole actor tree behind it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

import rhetor.runtime
from rhetor import (
    AllProvidersFailed,
    BudgetExceeded,
    NotFound,
    RhetorError,
    Settings,
    StreamBroken,
    UpstreamServerError,
    ValidationError,
)
from rhetor._content import Tool, ToolChoice, ToolResult
from rhetor._types import (
    ChatMessage,
    ProviderReply,
    ProviderRequest,
    ProviderStatus,
    StreamEnd,
    TextDelta,
)
from rhetor.providers._simulated import SimulatedBackend

TASKS = {
    "tasks": {
        "default": {"primary": "alpha-1", "fallbacks": ["beta-1"], "temperature": 0.5},
        "chat": {"primary": "alpha-1", "fallbacks": ["beta-1"], "temperature": 0.7},
    },
    "models": {
        "alpha-1": {"provider": "alpha", "tier": "high", "capabilities": ["general"]},
        "beta-1": {"provider": "beta", "tier": "low", "capabilities": ["general"]},
        "simulated-echo": {"provider": "simulated", "tier": "local"},
        "simulated-summary": {"provider": "simulated", "tier": "local"},
    },
}


@attrs.define(eq=False)
class ScriptedBackend:
    """A simulated backend that fails its next calls as scripted (a test upstream, not a mock)."""

    name: str
    models: tuple[str, ...]
    failures: list[BaseException] = attrs.Factory(list)
    fail_after_chunks: int | None = None
    chunk_delay: float = 0.0
    calls: int = 0

    def _inner(self) -> SimulatedBackend:
        return SimulatedBackend(name=self.name, models=self.models, chunk_delay=self.chunk_delay)

    async def check(self) -> ProviderStatus:
        return ProviderStatus(self.name, True, self.models)

    async def complete(self, request: ProviderRequest) -> ProviderReply:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return await self._inner().complete(request)

    async def stream(self, request: ProviderRequest) -> AsyncIterator[TextDelta | StreamEnd]:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        sent = 0
        async with aclosing(self._inner().stream(request)) as items:
            async for item in items:
                if self.fail_after_chunks is not None and sent >= self.fail_after_chunks:
                    raise UpstreamServerError(
                        "cut mid-stream", provider=self.name, model=request.model
                    )
                sent += 1
                yield item

    async def aclose(self) -> None:
        return None


def two_providers(
    tmp_path: Path, alpha: ScriptedBackend, beta: ScriptedBackend, **overrides: Any
) -> tuple[Settings, dict[str, Callable[[], Any]]]:
    config = tmp_path / "tasks.json"
    config.write_text(json.dumps(TASKS))
    settings = Settings(
        data_dir=tmp_path / "data", task_config=config, hermes_url=None, **overrides
    )
    backends: dict[str, Callable[[], Any]] = {
        "alpha": lambda: alpha,
        "beta": lambda: beta,
        "simulated": lambda: SimulatedBackend(),
    }
    return settings, backends


def plain(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(data_dir=tmp_path / "data", hermes_url=None, **overrides)


def simulated_only() -> dict[str, Callable[[], Any]]:
    return {"simulated": lambda: SimulatedBackend()}


async def test_embedding_example_runs_with_no_setup(tmp_path: Path) -> None:
    """The README's embedding example: a message and a stream on the simulated default."""
    async with rhetor.runtime.start(plain(tmp_path), backends=simulated_only()) as rt:
        reply = await rt.message("Write a haiku", context_id="demo:1", task_type="chat")
        assert (reply.provider, reply.model) == ("simulated", "simulated-echo")
        assert "Write a haiku" in reply.message
        assert reply.usage.input_tokens > 0 and reply.cost == 0.0
        assert "simulated provider answers" in reply.routing
        chunks = [
            chunk async for chunk in rt.stream("And another", context_id="demo:1", task_type="chat")
        ]
        assert chunks[-1].done and chunks[-1].reply is not None
        text = "".join(c.text for c in chunks)
        assert text == chunks[-1].reply.message
        assert "2 earlier messages" in text


async def test_the_simulated_default_answers_tool_calls_whole_and_streamed(tmp_path: Path) -> None:
    """With no upstream, a forced tool choice gets a deterministic call through the whole pipeline."""
    tool = Tool(
        "lookup", "Find a word.", {"type": "object", "properties": {"word": {"type": "string"}}}
    )
    options: dict[str, Any] = {"tools": [tool], "tool_choice": ToolChoice("required")}
    async with rhetor.runtime.start(plain(tmp_path), backends=simulated_only()) as rt:
        whole = await rt.message("serendipity", **options)
        chunks = [c async for c in rt.stream("serendipity", **options)]
        result = ChatMessage(
            "user", blocks=(ToolResult(whole.tool_calls[0].id, "a happy accident"),)
        )
        answer = await rt.chat(
            [
                ChatMessage("user", "serendipity"),
                ChatMessage("assistant", blocks=whole.tool_calls),
                result,
            ],
            tools=[tool],
        )
    [call] = whole.tool_calls
    assert (call.name, call.input(), whole.finish_reason) == (
        "lookup",
        {"word": "serendipity"},
        "tool_calls",
    )
    streamed = chunks[-1].reply
    assert streamed is not None and streamed.tool_calls == whole.tool_calls
    assert [d.name for c in chunks for d in c.tool_calls if d.name] == ["lookup"]
    assert answer.tool_calls == () and "a happy accident" in answer.message


async def test_default_start_reads_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """start() with no settings reads RHETOR_DATA_DIR and the other variables."""
    monkeypatch.setenv("RHETOR_DATA_DIR", str(tmp_path / "env-data"))
    monkeypatch.setenv("HERMES_API_URL", "")
    async with rhetor.runtime.start(backends=simulated_only()) as rt:
        await rt.message("hello", context_id="env:1")
    assert (tmp_path / "env-data" / "contexts.db").exists()


async def test_a_second_runtime_on_the_same_data_directory_is_refused(tmp_path: Path) -> None:
    """
    The stores keep in-memory state that assumes one owner of their files: a second
    runtime on a data directory in use fails with a ValidationError naming data_dir,
    and the directory is free again once the first runtime stops.
    """
    settings = plain(tmp_path)
    async with rhetor.runtime.start(settings, backends=simulated_only()) as rt:
        with pytest.raises(ValidationError) as info:
            async with rhetor.runtime.start(settings, backends=simulated_only()):
                pass  # pragma: no cover - must not start
        assert info.value.field == "data_dir"
        assert "in use by another Rhetor runtime" in str(info.value)
        assert "pid" in str(info.value)
        await rt.message("still serving", context_id="lock:1")
    async with rhetor.runtime.start(settings, backends=simulated_only()) as again:
        assert len((await again.get_context("lock:1"))["messages"]) == 2


def test_a_data_directory_in_use_by_another_process_is_refused(tmp_path: Path) -> None:
    """`rhetor serve` on a data directory another process holds exits 1 with a clear message."""
    data = tmp_path / "data"
    data.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT);"
            " fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'4242'); print('held', flush=True);"
            " sys.stdin.read()",
            str(data / "rhetor.lock"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        result = subprocess.run(
            [sys.executable, "-m", "rhetor", "serve", "--port", "0", "--data-dir", str(data)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "HERMES_API_URL": ""},
        )
    finally:
        holder.communicate(timeout=10)
    assert result.returncode == 1
    assert "in use by another Rhetor runtime (pid 4242)" in result.stderr


async def test_history_is_sent_to_the_model_and_survives_restart(tmp_path: Path) -> None:
    """Stored turns persist across a full stop and start, and are sent with the next message."""
    settings = plain(tmp_path)
    async with rhetor.runtime.start(settings, backends=simulated_only()) as rt:
        await rt.message("first", context_id="keep:1")
        await rt.message("second", context_id="keep:1")
    async with rhetor.runtime.start(settings, backends=simulated_only()) as rt:
        reply = await rt.message("third", context_id="keep:1")
        assert "4 earlier messages" in reply.message
        context = await rt.get_context("keep:1")
        assert [m.content for m in context["messages"]][:3] == [
            "first",
            context["messages"][1].content,
            "second",
        ]
        assert len(context["messages"]) == 6


async def test_chat_takes_messages_and_a_system_message(tmp_path: Path) -> None:
    """chat() sends role/content messages; a system message becomes the system prompt."""
    async with rhetor.runtime.start(plain(tmp_path), backends=simulated_only()) as rt:
        reply = await rt.chat(
            [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"},
                {"role": "user", "content": "How are you?"},
            ]
        )
        assert "How are you?" in reply.message and "System prompt: Be brief." in reply.message
        with pytest.raises(ValidationError) as info:
            await rt.chat([{"role": "robot", "content": "x"}])
        assert info.value.field == "messages[0].role"


async def test_component_default_system_prompt_is_applied(tmp_path: Path) -> None:
    """A component's default system prompt reaches the model on that component's requests."""
    async with rhetor.runtime.start(plain(tmp_path), backends=simulated_only()) as rt:
        await rt.create_prompt(
            "ergon-default", "ergon", "You are Ergon's planner.", is_default=True
        )
        reply = await rt.message("plan it", component="ergon")
        assert "You are Ergon's planner." in reply.message
        other = await rt.message("plan it", component="hermes")
        assert "System prompt" not in other.message


async def test_bad_input_gives_typed_errors_naming_the_field(tmp_path: Path) -> None:
    """Unknown provider or model, a malformed context id and a bad temperature name their field."""
    async with rhetor.runtime.start(plain(tmp_path), backends=simulated_only()) as rt:
        cases = [
            ({"provider": "nope"}, NotFound, "provider"),
            ({"model": "gpt-99"}, NotFound, "model"),
            ({"context_id": "../../etc/passwd"}, ValidationError, "context_id"),
            ({"temperature": 5.0}, ValidationError, "temperature"),
            ({"max_tokens": 0}, ValidationError, "max_tokens"),
            (
                {"routing_parameters": {"complexity": "huge"}},
                ValidationError,
                "routing_parameters.complexity",
            ),
        ]
        for options, error, field in cases:
            with pytest.raises(error) as info:
                await rt.message("hi", **options)
            assert info.value.field == field, options
        reply = await rt.message("still serving", task_type="no-such-task")
        assert reply.task_type == "default"


async def test_template_validation(tmp_path: Path) -> None:
    """Templates render with their parameters; a missing or wrongly typed one is a clear error."""
    async with rhetor.runtime.start(plain(tmp_path), backends=simulated_only()) as rt:
        template = await rt.create_template(
            "bug",
            "Bug: {description}\nEnv: {environment}",
            required=["description"],
            optional=["environment"],
        )
        text = await rt.render_template(template.id, {"description": "crash"})
        assert text == "Bug: crash\nEnv: "
        with pytest.raises(ValidationError) as info:
            await rt.render_template("bug", {})
        assert info.value.field == "parameters.description"
        with pytest.raises(ValidationError) as info:
            await rt.render_template("bug", {"description": ["a", "list"]})
        assert info.value.field == "parameters.description"
        await rt.update_template("bug", content="Bug v2: {description}")
        assert len(await rt.template_versions("bug")) == 2


async def test_unknown_fields_are_refused_naming_them(tmp_path: Path) -> None:
    """An unknown keyword to a create or update of a template or prompt is a ValidationError naming it."""
    async with rhetor.runtime.start(plain(tmp_path), backends=simulated_only()) as rt:
        t = await rt.create_template("t", "x")
        p = await rt.create_prompt("p", "c", "x")
        calls = [
            lambda: rt.create_template("u", "x", colour="red"),
            lambda: rt.update_template(t.id, colour="red"),
            lambda: rt.create_prompt("q", "c", "x", colour="red"),
            lambda: rt.update_prompt(p.id, colour="red"),
        ]
        for call in calls:
            with pytest.raises(ValidationError) as info:
                await call()
            assert info.value.field == "colour"
        assert [x.name for x in await rt.list_templates()] == ["t"]
        assert [x.name for x in await rt.list_prompts()] == ["p"]


async def test_provider_error_falls_back_along_the_chain(tmp_path: Path) -> None:
    """A failing primary (a bad request, not retried) falls back to the next model, and the reply says why."""
    from rhetor import BadRequest

    alpha = ScriptedBackend("alpha", ("alpha-1",), failures=[BadRequest("no", provider="alpha")])
    beta = ScriptedBackend("beta", ("beta-1",))
    settings, backends = two_providers(tmp_path, alpha, beta)
    async with rhetor.runtime.start(settings, backends=backends) as rt:
        reply = await rt.message("hello", task_type="chat")
    assert (reply.provider, reply.model) == ("beta", "beta-1")
    assert "alpha/alpha-1 failed (upstream_bad_request)" in reply.routing
    assert alpha.calls == 1


async def test_transient_error_is_retried_with_backoff(
    tmp_path: Path, autojump_clock: object
) -> None:
    """A transient upstream error is retried on the same model before any fallback."""
    alpha = ScriptedBackend(
        "alpha", ("alpha-1",), failures=[UpstreamServerError("500", provider="alpha")]
    )
    beta = ScriptedBackend("beta", ("beta-1",))
    settings, backends = two_providers(tmp_path, alpha, beta)
    async with rhetor.runtime.start(settings, backends=backends) as rt:
        reply = await rt.message("hello", task_type="chat")
    assert reply.provider == "alpha" and alpha.calls == 2 and beta.calls == 0


async def test_provider_crash_is_absorbed_by_a_restart(tmp_path: Path) -> None:
    """One crash of a provider actor: its supervisor restarts it and the request is redelivered to it."""
    alpha = ScriptedBackend("alpha", ("alpha-1",))
    beta = ScriptedBackend("beta", ("beta-1",))
    settings, backends = two_providers(tmp_path, alpha, beta)
    async with rhetor.runtime.start(settings, backends=backends) as rt:
        rt.system.faults.crash_next("provider:alpha")
        reply = await rt.message("hello", task_type="chat")
        assert reply.provider == "alpha"
        assert rt.providers_refs["alpha"].stats().restarts == 1


async def test_provider_bug_fails_that_call_only_and_falls_back(tmp_path: Path) -> None:
    """A bug in a provider actor's handler fails that call alone: the router falls back, nothing restarts."""
    alpha = ScriptedBackend("alpha", ("alpha-1",), failures=[RuntimeError("bug in the backend")])
    beta = ScriptedBackend("beta", ("beta-1",))
    settings, backends = two_providers(tmp_path, alpha, beta)
    async with rhetor.runtime.start(settings, backends=backends) as rt:
        reply = await rt.message("hello", task_type="chat")
        assert reply.provider == "beta"
        assert "alpha/alpha-1 failed (provider_error)" in reply.routing
        stats = rt.providers_refs["alpha"].stats()
        assert (stats.restarts, stats.failed, alpha.calls) == (0, 1, 1)
        again = await rt.message("hello again", task_type="chat")
        assert again.provider == "alpha"


async def test_hung_provider_times_out_and_falls_back(
    tmp_path: Path, autojump_clock: object
) -> None:
    """A provider that hangs past its deadline is abandoned for the fallback."""
    alpha = ScriptedBackend("alpha", ("alpha-1",))
    beta = ScriptedBackend("beta", ("beta-1",))
    settings, backends = two_providers(tmp_path, alpha, beta, request_timeout=30.0)
    async with rhetor.runtime.start(settings, backends=backends) as rt:
        rt.system.faults.hang("provider:alpha")
        start = trio.current_time()
        reply = await rt.message("hello", task_type="chat", timeout=30.0)
        assert reply.provider == "beta"
        assert "upstream_timeout" in reply.routing
        assert trio.current_time() - start < 31
        rt.system.faults.clear("provider:alpha")


async def test_all_providers_failing_lists_each_attempt(
    tmp_path: Path, autojump_clock: object
) -> None:
    """When every candidate fails, the error lists what was tried."""
    from rhetor import AuthenticationFailed

    alpha = ScriptedBackend(
        "alpha", ("alpha-1",), failures=[AuthenticationFailed("key", provider="alpha")]
    )
    beta = ScriptedBackend(
        "beta", ("beta-1",), failures=[AuthenticationFailed("key", provider="beta")]
    )
    settings, backends = two_providers(tmp_path, alpha, beta, simulated="never")
    async with rhetor.runtime.start(settings, backends=backends) as rt:
        with pytest.raises(AllProvidersFailed) as info:
            await rt.message("hello", task_type="chat")
    assert [(p, m) for p, m, _ in info.value.attempts] == [("alpha", "alpha-1"), ("beta", "beta-1")]
    assert alpha.calls == 1 and beta.calls == 1  # auth errors are never retried


async def test_stream_falls_back_before_the_first_chunk(
    tmp_path: Path, autojump_clock: object
) -> None:
    """A stream failing before its first chunk moves to the fallback transparently."""
    from rhetor import BadRequest

    alpha = ScriptedBackend("alpha", ("alpha-1",), failures=[BadRequest("no", provider="alpha")])
    beta = ScriptedBackend("beta", ("beta-1",))
    settings, backends = two_providers(tmp_path, alpha, beta)
    async with rhetor.runtime.start(settings, backends=backends) as rt:
        chunks = [c async for c in rt.stream("hello there", task_type="chat")]
    assert {c.provider for c in chunks} == {"beta"}
    assert chunks[-1].done


async def test_stream_broken_after_first_chunk_is_a_typed_error_and_billed(tmp_path: Path) -> None:
    """After the first chunk, a failure ends the stream with StreamBroken, and partial usage is billed."""
    alpha = ScriptedBackend("alpha", ("alpha-1",), fail_after_chunks=2)
    beta = ScriptedBackend("beta", ("beta-1",))
    settings, backends = two_providers(tmp_path, alpha, beta)
    received: list[str] = []
    async with rhetor.runtime.start(settings, backends=backends) as rt:
        stream = rt.stream("one two three four five", task_type="chat", context_id="cut:1")

        async def consume() -> None:
            async for chunk in stream:
                received.append(chunk.text)

        with pytest.raises(StreamBroken):
            await consume()
        assert len(received) == 2 and beta.calls == 0
        usage = await rt.budget_usage("daily", "provider")
        alpha_row = next(r for r in usage if r["key"] == "alpha")
        assert alpha_row["output_tokens"] > 0
        with pytest.raises(NotFound):
            await rt.get_context("cut:1")


async def test_budget_never_overspent_under_200_concurrent_requests(tmp_path: Path) -> None:
    """With enforce and a small limit, 200 concurrent priced requests never pass the limit."""
    prices = tmp_path / "prices.json"
    price = {"input_per_mtok": 1000.0, "output_per_mtok": 1000.0}
    # Both simulated models cost money; otherwise enforce would rightly downgrade to a free one.
    prices.write_text(json.dumps({"simulated-echo": price, "simulated-summary": price}))
    limit = 0.5
    settings = plain(tmp_path, budget_policy="enforce", daily_limit=limit, price_overrides=prices)
    outcomes: list[str] = []
    async with rhetor.runtime.start(settings, backends=simulated_only()) as rt:

        async def one(i: int) -> None:
            try:
                await rt.message(f"request number {i} " + "word " * (i % 5), max_tokens=50)
                outcomes.append("ok")
            except BudgetExceeded:
                outcomes.append("refused")

        async with trio.open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(one, i)
        status = await rt.budget()
    assert outcomes.count("ok") > 0 and outcomes.count("refused") > 0
    assert status["periods"]["daily"]["spent"] <= limit


async def test_warn_policy_reply_carries_budget_warning(tmp_path: Path) -> None:
    """Under warn, a request over the limit is answered with a budget warning."""
    prices = tmp_path / "prices.json"
    prices.write_text(
        json.dumps({"simulated-echo": {"input_per_mtok": 1000.0, "output_per_mtok": 1000.0}})
    )
    settings = plain(tmp_path, budget_policy="warn", daily_limit=0.0001, price_overrides=prices)
    async with rhetor.runtime.start(settings, backends=simulated_only()) as rt:
        reply = await rt.message("hello")
    assert reply.budget_warning and "daily budget" in reply.budget_warning
    assert reply.cost > 0


async def test_estimate_reports_tokens_cost_and_budget(tmp_path: Path) -> None:
    """A cost estimate gives tokens, cost and whether it fits, before any call."""
    async with rhetor.runtime.start(plain(tmp_path), backends=simulated_only()) as rt:
        estimate = await rt.estimate("Write a function", model="simulated-echo", max_tokens=100)
        assert (
            estimate["estimated_tokens"]["total_tokens"]
            == estimate["estimated_tokens"]["input_tokens"] + 100
        )
        assert estimate["under_budget"] is True and estimate["estimated_cost"] == 0.0
        with pytest.raises(NotFound):
            await rt.estimate("x", model="gpt-99")
        routed = await rt.estimate("Write a function", task_type="code", max_tokens=100)
        assert (routed["provider"], routed["estimated_cost"]) == ("simulated", 0.0)


async def test_context_store_crash_mid_load_loses_no_acknowledged_turn(tmp_path: Path) -> None:
    """Killing the ContextStore under load: each request succeeds or fails typed, and every acknowledged turn is stored."""
    acknowledged: list[str] = []
    failed: list[RhetorError] = []
    async with rhetor.runtime.start(plain(tmp_path), backends=simulated_only()) as rt:

        async def one(i: int) -> None:
            try:
                await rt.message(f"msg-{i}", context_id=f"load:{i % 5}")
                acknowledged.append(f"msg-{i}")
            except RhetorError as exc:
                failed.append(exc)

        async with trio.open_nursery() as nursery:
            for i in range(60):
                nursery.start_soon(one, i)
                if i in (10, 30):
                    rt.system.faults.crash_next("contexts")
        stored = set()
        for c in range(5):
            context = await rt.get_context(f"load:{c}")
            stored |= {m.content for m in context["messages"] if m.role == "user"}
        assert rt.contexts.stats().restarts >= 1
    assert set(acknowledged) <= stored
    assert len(acknowledged) + len(failed) == 60


async def test_evaluate_scores_through_the_router(tmp_path: Path) -> None:
    """Evaluation goes through the router and yields an overall score from 0 to 10 with feedback."""
    async with rhetor.runtime.start(plain(tmp_path), backends=simulated_only()) as rt:
        result = await rt.evaluate("What is 2+2?", "2+2 is 4.", ["accuracy", "clarity"])
    evaluation = result["evaluation"]
    assert 0 <= evaluation["overall_score"] <= 10
    assert set(evaluation["scores"]) == {"accuracy", "clarity"}
    assert evaluation["feedback"] and result["provider"] == "simulated"


async def test_summarize_stores_a_summary_that_is_then_sent(tmp_path: Path) -> None:
    """Summarising a context stores the summary, which then travels with later messages."""
    async with rhetor.runtime.start(plain(tmp_path), backends=simulated_only()) as rt:
        for text in ("We talked about trio.", "Then about actors.", "And budgets."):
            await rt.message(text, context_id="sum:1")
        result = await rt.summarize_context("sum:1")
        assert result["summary"].startswith("Summary")
        reply = await rt.message("what did we discuss?", context_id="sum:1")
        assert "Summary of the earlier conversation" in reply.message


async def test_set_active_provider_and_model(tmp_path: Path) -> None:
    """Setting the active provider and model is reflected in providers(); unknown ones are refused."""
    async with rhetor.runtime.start(plain(tmp_path), backends=simulated_only()) as rt:
        info = await rt.set_provider("simulated", "simulated-summary")
        assert (info["active_provider"], info["active_model"]) == ("simulated", "simulated-summary")
        reply = await rt.message("One. Two.")
        assert reply.model == "simulated-summary"
        with pytest.raises(NotFound):
            await rt.set_provider("nope")


async def test_long_context_is_summarised_automatically(tmp_path: Path) -> None:
    """A context that outgrows its token window gets a summary in the background, keeping recent turns."""
    settings = plain(tmp_path, context_token_budget=80)
    async with rhetor.runtime.start(settings, backends=simulated_only()) as rt:
        for i in range(6):
            await rt.message(
                f"Turn {i} talks about topic number {i} at some length.", context_id="long:1"
            )
        with trio.fail_after(5):
            while (await rt.get_context("long:1"))["info"].summary is None:
                await trio.sleep(0.01)
        reply = await rt.message("and now?", context_id="long:1")
        assert "Summary of the earlier conversation" in reply.message
        usage = await rt.budget_usage("daily", "component")
        assert any(row["key"] == "rhetor" for row in usage)


async def test_leaving_a_stream_early_cancels_the_provider_and_bills_what_was_produced(
    tmp_path: Path,
) -> None:
    """Closing a stream after two chunks stops the provider, bills the partial output, stores no turn."""
    alpha = ScriptedBackend("alpha", ("alpha-1",), chunk_delay=0.01)
    beta = ScriptedBackend("beta", ("beta-1",))
    settings, backends = two_providers(tmp_path, alpha, beta)
    async with rhetor.runtime.start(settings, backends=backends) as rt:
        stream = rt.stream(
            "one two three four five six seven", task_type="chat", context_id="early:1"
        )
        received = []
        async with aclosing(stream):
            async for chunk in stream:
                received.append(chunk.text)
                if len(received) == 2:
                    break
        # The producer bills in its own task as it unwinds, just after the reader left.
        with trio.fail_after(2):
            while not (rows := await rt.budget_usage("daily", "provider")):
                await trio.sleep(0.01)
        with pytest.raises(NotFound):
            await rt.get_context("early:1")
    alpha_row = next(r for r in rows if r["key"] == "alpha")
    assert alpha_row["requests"] == 1
    assert 0 < alpha_row["output_tokens"] < 12


async def test_model_of_a_provider_that_is_not_running_is_unavailable(tmp_path: Path) -> None:
    """Naming a configured model whose provider is not running fails typed, listing the attempt."""
    async with rhetor.runtime.start(plain(tmp_path), backends=simulated_only()) as rt:
        with pytest.raises(AllProvidersFailed) as info:
            await rt.message("hi", model="claude-3-opus-20240229")
        assert info.value.attempts[0][2].code == "provider_unavailable"
        chunks = rt.stream("hi", model="claude-3-opus-20240229")
        with pytest.raises(AllProvidersFailed):
            await chunks.__anext__()
        assert rt.router.stats().restarts == 0


async def test_limit_set_at_run_time_is_enforced_from_the_next_request(tmp_path: Path) -> None:
    """Without limits no reservation is made; a limit set at run time is enforced at once."""
    prices = tmp_path / "prices.json"
    price = {"input_per_mtok": 1000.0, "output_per_mtok": 1000.0}
    prices.write_text(json.dumps({"simulated-echo": price, "simulated-summary": price}))
    settings = plain(tmp_path, budget_policy="enforce", price_overrides=prices)
    async with rhetor.runtime.start(settings, backends=simulated_only()) as rt:
        assert (await rt.budget())["reservations_required"] is False
        first = await rt.message("free of limits", max_tokens=20)
        assert first.cost > 0
        status = await rt.set_limit("daily", first.cost * 1.5)
        assert status["reservations_required"] is True
        with pytest.raises(BudgetExceeded):
            await rt.message("this one would pass the limit", max_tokens=20)
        await rt.set_policy("ignore")
        assert (await rt.message("ignored", max_tokens=20)).budget_warning is None


async def test_provider_that_is_not_running_counts_as_down(tmp_path: Path) -> None:
    """A provider actor that is not running is skipped as unavailable, and reported so."""
    alpha = ScriptedBackend("alpha", ("alpha-1",))
    beta = ScriptedBackend("beta", ("beta-1",))
    settings, backends = two_providers(tmp_path, alpha, beta)
    async with rhetor.runtime.start(settings, backends=backends) as rt:
        await rt.system.supervisor("providers").stop_child("provider:alpha")
        reply = await rt.message("hello", task_type="chat")
        assert reply.provider == "beta"
        assert "skipped unavailable alpha/alpha-1" in reply.routing
        assert (await rt.providers())["providers"]["alpha"]["available"] is False
        assert alpha.calls == 0


async def test_every_acknowledged_charge_is_in_the_ledger_after_a_restart(tmp_path: Path) -> None:
    """Charges of requests answered just before shutdown are all recorded and survive a restart."""
    settings = plain(tmp_path)
    answered = 0
    async with rhetor.runtime.start(settings, backends=simulated_only()) as rt:

        async def one(i: int) -> None:
            nonlocal answered
            await rt.message(f"request {i}", component="ledger-test")
            answered += 1

        async with trio.open_nursery() as nursery:
            for i in range(100):
                nursery.start_soon(one, i)
    async with rhetor.runtime.start(settings, backends=simulated_only()) as rt:
        rows = await rt.budget_usage("daily", "component")
    recorded = next(r for r in rows if r["key"] == "ledger-test")
    assert recorded["requests"] == answered == 100


async def test_reply_timestamps_are_utc_iso_with_microseconds_and_move_forward(
    tmp_path: Path,
) -> None:
    import datetime

    async with rhetor.runtime.start(plain(tmp_path), backends=simulated_only()) as rt:
        first = (await rt.message("one")).timestamp
        await trio.sleep(0.002)
        second = (await rt.message("two")).timestamp
    assert first.endswith("Z") and len(first) == len("2026-01-01T00:00:00.000000Z")
    parsed = [datetime.datetime.fromisoformat(t.replace("Z", "+00:00")) for t in (first, second)]
    assert parsed[0] < parsed[1]
    now = datetime.datetime.now(datetime.UTC)
    assert abs((now - parsed[1]).total_seconds()) < 5
