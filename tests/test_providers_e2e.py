"""
The whole runtime with the real provider backends, against fake upstreams over loopback.

Nothing here is mocked: ``rhetor.runtime.start()`` builds the default Anthropic,
OpenAI and Ollama provider actors from :class:`Settings`, and their backends speak
each wire format over Rhetor's HTTP client to the fakes in :mod:`tests.fakes`
through their base URLs. The routing table sends the default and chat tasks to Anthropic first, then
OpenAI, then Ollama.

Tests that wait on backoff, Retry-After or a hang use a patient autojump clock: the
runtime's stores work in worker threads, which a zero-threshold clock would jump past.
"""

from __future__ import annotations

import gc
import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

# Imported here, not on a test's first request.
import rhetor.providers._anthropic
import rhetor.providers._ollama
import rhetor.providers._openai
import rhetor.runtime
from actors import Subscription
from rhetor import (
    AllProvidersFailed,
    Settings,
    StreamBroken,
    UpstreamConnectionError,
    UpstreamTimeout,
)
from rhetor._types import ChatMessage, Chunk, ProviderRequest, Usage
from rhetor.budget._ledger import LedgerEntry, SQLiteLedger
from rhetor.budget._pricing import Pricer
from rhetor.providers._actor import Complete
from rhetor.runtime import Runtime
from tests.fakes import Cut, Fail, Hang, Reply, Stall
from tests.fakes.anthropic import FakeAnthropic, fake_anthropic
from tests.fakes.ollama import FakeOllama, fake_ollama
from tests.fakes.openai import FakeOpenAI, fake_openai

# Current model names (SDK 2.x warns about deprecated ones) that genai-prices knows.
HAIKU = "claude-haiku-4-5"
GPT_MINI = "gpt-4o-mini"
LLAMA = "llama3.2:latest"
# List prices in USD per million tokens (input, output).
PRICES = {HAIKU: (1.00, 5.00), GPT_MINI: (0.15, 0.60)}

MODEL_OF = {"anthropic": HAIKU, "openai": GPT_MINI, "ollama": LLAMA}

TASKS = {
    "tasks": {
        "default": {"primary": HAIKU, "fallbacks": [GPT_MINI, LLAMA], "temperature": 0.5},
        "chat": {"primary": HAIKU, "fallbacks": [GPT_MINI, LLAMA], "temperature": 0.7},
    },
    "models": {
        HAIKU: {"provider": "anthropic", "tier": "low"},
        GPT_MINI: {"provider": "openai", "tier": "low"},
        LLAMA: {"provider": "ollama", "tier": "local"},
    },
}


@attrs.frozen
class Upstreams:
    """
    The three fake upstreams one runtime talks to.
    """

    anthropic: FakeAnthropic
    openai: FakeOpenAI
    ollama: FakeOllama

    def of(self, provider: str) -> FakeAnthropic | FakeOpenAI | FakeOllama:
        fake: FakeAnthropic | FakeOpenAI | FakeOllama = getattr(self, provider)
        return fake


@pytest.fixture
async def upstreams() -> AsyncIterator[Upstreams]:
    async with fake_anthropic() as anthropic, fake_openai() as openai, fake_ollama() as ollama:
        yield Upstreams(anthropic, openai, ollama)


@pytest.fixture
def patient_autojump_clock() -> trio.testing.MockClock:
    """
    Simulated time that jumps once every task has been blocked for 50 ms of real time.
    """
    return trio.testing.MockClock(autojump_threshold=0.05)


def settings_for(tmp_path: Path, up: Upstreams, **overrides: Any) -> Settings:
    config = tmp_path / "tasks.json"
    config.write_text(json.dumps(TASKS))
    fields: dict[str, Any] = {
        "anthropic_api_key": "test",
        "anthropic_base_url": up.anthropic.base_url,
        "openai_api_key": "test",
        "openai_base_url": up.openai.base_url,
        "ollama_base_url": up.ollama.base_url,
        "simulated": "never",
        "data_dir": tmp_path / "data",
        "hermes_url": None,
        "task_config": config,
    } | overrides
    return Settings(**fields)


@asynccontextmanager
async def running(tmp_path: Path, up: Upstreams, **overrides: Any) -> AsyncIterator[Runtime]:
    """
    The runtime with its default backends, pointed at the fakes; no periodic health probes.
    """
    async with rhetor.runtime.start(
        settings_for(tmp_path, up, **overrides), health_interval=0
    ) as rt:
        yield rt


@pytest.fixture
async def rt(tmp_path: Path, upstreams: Upstreams) -> AsyncIterator[Runtime]:
    async with running(tmp_path, upstreams) as runtime:
        yield runtime


def ledger_entries(tmp_path: Path) -> list[LedgerEntry]:
    """
    Every ledger row, oldest first (read after the runtime stopped and flushed).
    """
    ledger = SQLiteLedger(tmp_path / "data" / "ledger.db")
    try:
        return list(reversed(ledger.entries()))
    finally:
        ledger.close()


def list_price(model: str, input_tokens: int, output_tokens: int) -> float:
    per_input, per_output = PRICES[model]
    return (input_tokens * per_input + output_tokens * per_output) / 1_000_000


async def read_all(
    chunks: AsyncGenerator[Chunk, None], into: list[Chunk] | None = None
) -> list[Chunk]:
    """
    Every chunk of a stream, appended to ``into`` as it arrives (kept when it raises).
    """
    seen = [] if into is None else into
    async with aclosing(chunks) as items:
        async for chunk in items:
            seen.append(chunk)
    return seen


PROVIDERS = pytest.mark.parametrize("provider", ["anthropic", "openai", "ollama"])


# -- replies ---------------------------------------------------------------


@PROVIDERS
async def test_plain_reply_from_each_provider(
    rt: Runtime, upstreams: Upstreams, provider: str
) -> None:
    """A whole reply from each provider carries its text, model and reported usage."""
    upstreams.of(provider).script(Reply("Hello from upstream", input_tokens=9, output_tokens=4))
    reply = await rt.message("Hi", provider=provider, timeout=5)
    assert (reply.provider, reply.model) == (provider, MODEL_OF[provider])
    assert reply.message == "Hello from upstream"
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (9, 4)
    assert reply.finish_reason == "stop"
    assert len(upstreams.of(provider).completions) == 1


@PROVIDERS
async def test_streamed_reply_from_each_provider(
    rt: Runtime, upstreams: Upstreams, provider: str
) -> None:
    """A streamed reply from each provider arrives chunk by chunk, then a done chunk with usage."""
    upstreams.of(provider).script(Reply(chunks=("Hel", "lo", "!"), input_tokens=7, output_tokens=3))
    chunks = await read_all(rt.stream("Hi", provider=provider, timeout=5))
    assert [c.text for c in chunks[:-1]] == ["Hel", "lo", "!"]
    assert {c.provider for c in chunks} == {provider}
    done = chunks[-1]
    assert done.done and done.reply is not None
    assert done.reply.message == "Hello!"
    assert (done.reply.usage.input_tokens, done.reply.usage.output_tokens) == (7, 3)


async def test_models_merge_config_with_what_each_provider_reports(rt: Runtime) -> None:
    """providers() lists each provider's configured models plus those its upstream reports."""
    info = (await rt.providers())["providers"]
    assert info["anthropic"]["available"] and info["openai"]["available"]
    assert info["ollama"]["available"]
    assert not info["simulated"]["available"]
    assert info["anthropic"]["models"][0] == HAIKU
    assert {"claude-sonnet-5-5", "claude-haiku-5-5"} <= set(info["anthropic"]["models"])
    assert {GPT_MINI, "gpt-4o"} <= set(info["openai"]["models"])
    assert {LLAMA, "qwen2.5:7b"} <= set(info["ollama"]["models"])


# -- accounting ------------------------------------------------------------


async def test_usage_and_cost_reach_the_ledger(tmp_path: Path, upstreams: Upstreams) -> None:
    """Reported usage is priced per token and recorded per provider, whole or streamed."""
    assert Pricer().known("anthropic", HAIKU) and Pricer().known("openai", GPT_MINI)
    upstreams.anthropic.script(Reply("whole", input_tokens=1000, output_tokens=200))
    upstreams.openai.script(Reply(chunks=("a", "b"), input_tokens=2000, output_tokens=400))
    async with running(tmp_path, upstreams) as rt:
        whole = await rt.message("Hi", timeout=5)
        streamed = (await read_all(rt.stream("Hi", provider="openai", timeout=5)))[-1].reply
        assert streamed is not None
        usage = {row["key"]: row for row in await rt.budget_usage("daily", "provider")}
        status = await rt.budget()
    assert whole.cost == pytest.approx(list_price(HAIKU, 1000, 200)) and whole.cost > 0
    assert streamed.cost == pytest.approx(list_price(GPT_MINI, 2000, 400)) and streamed.cost > 0
    assert (usage["anthropic"]["input_tokens"], usage["anthropic"]["output_tokens"]) == (1000, 200)
    assert usage["anthropic"]["cost"] == pytest.approx(whole.cost)
    assert (usage["openai"]["input_tokens"], usage["openai"]["output_tokens"]) == (2000, 400)
    assert usage["openai"]["cost"] == pytest.approx(streamed.cost)
    assert status["periods"]["daily"]["spent"] == pytest.approx(whole.cost + streamed.cost)
    assert [(e.provider, e.status) for e in ledger_entries(tmp_path)] == [
        ("anthropic", "ok"),
        ("openai", "ok"),
    ]


async def test_negative_usage_from_an_upstream_is_never_credited(
    tmp_path: Path, upstreams: Upstreams
) -> None:
    """An upstream that reports negative tokens (whole or streamed) cannot lower what was spent."""
    upstreams.openai.script(
        Reply("paid", input_tokens=1000, output_tokens=200),
        Reply("bogus", input_tokens=-1_000_000, output_tokens=-5),
        Reply(chunks=("x", "y"), input_tokens=-7, output_tokens=-9_000_000),
        Reply("bogus again", input_tokens=-3, output_tokens=4),
    )
    async with running(tmp_path, upstreams) as rt:
        paid = await rt.message("Hi", provider="openai", timeout=5)
        bogus = await rt.message("Hi", provider="openai", timeout=5)
        streamed = (await read_all(rt.stream("Hi", provider="openai", timeout=5)))[-1].reply
        status = await rt.budget()
        # What the provider actor answers the router: zero for the negative count,
        # and the usage marked invalid, so that the router bills the reservation.
        direct = await rt.providers_refs["openai"].ask(
            Complete(ProviderRequest(GPT_MINI, (ChatMessage("user", "Hi"),), timeout=5)),
            timeout=5,
        )
    assert streamed is not None
    assert paid.cost > 0
    assert bogus.cost >= 0 and streamed.cost >= 0
    assert status["periods"]["daily"]["spent"] >= paid.cost
    assert all(e.cost >= 0 for e in ledger_entries(tmp_path))
    assert (direct.usage, direct.usage_valid) == (Usage(0, 4), False)


# -- request shape ---------------------------------------------------------


async def test_history_and_system_prompt_reach_anthropic_in_its_shape(
    rt: Runtime, upstreams: Upstreams
) -> None:
    """Two stored turns precede the new one; the system prompt goes in `system`, no temperature."""
    first = await rt.message("first", context_id="shape:1", timeout=5)
    await rt.message("second", context_id="shape:1", system_prompt="Be brief.", timeout=5)
    body = upstreams.anthropic.completions[-1].json
    assert body["model"] == HAIKU
    assert body["system"] == "Be brief."
    assert body["messages"] == [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": first.message},
        {"role": "user", "content": "second"},
    ]
    # SDK 2.x speaks an API version without sampling parameters.
    assert "temperature" not in body


async def test_history_and_system_prompt_reach_openai_as_messages(
    rt: Runtime, upstreams: Upstreams
) -> None:
    """For OpenAI the system prompt is the first message, then the stored turns, then the new one."""
    first = await rt.message("first", context_id="shape:2", provider="openai", timeout=5)
    await rt.message(
        "second", context_id="shape:2", provider="openai", system_prompt="Be brief.", timeout=5
    )
    body = upstreams.openai.completions[-1].json
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": first.message},
        {"role": "user", "content": "second"},
    ]
    assert body["temperature"] == 0.5


async def test_chat_messages_reach_ollama_with_a_system_message(
    rt: Runtime, upstreams: Upstreams
) -> None:
    """chat() turns reach Ollama's /api/chat in order, the system message first."""
    await rt.chat(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "How are you?"},
        ],
        provider="ollama",
        timeout=5,
    )
    body = upstreams.ollama.completions[-1].json
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "How are you?"},
    ]
    assert body["stream"] is False


# -- retries and fallbacks -------------------------------------------------


async def test_rate_limit_is_retried_on_the_same_provider_after_retry_after(
    rt: Runtime, upstreams: Upstreams, patient_autojump_clock: trio.testing.MockClock
) -> None:
    """A 429 is retried on the same provider, no sooner than its Retry-After, before any fallback."""
    upstreams.anthropic.script(Fail.rate_limited(retry_after=2))
    start = trio.current_time()
    reply = await rt.message("Hi", timeout=6)
    assert reply.provider == "anthropic"
    assert trio.current_time() - start >= 2.0
    assert len(upstreams.anthropic.completions) == 2
    assert upstreams.openai.completions == []


async def test_server_error_is_retried_then_succeeds(
    rt: Runtime, upstreams: Upstreams, patient_autojump_clock: trio.testing.MockClock
) -> None:
    """A 500 is retried with backoff on the same provider, which then answers."""
    upstreams.anthropic.script(Fail.server_error())
    reply = await rt.message("Hi", timeout=6)
    assert reply.provider == "anthropic"
    assert len(upstreams.anthropic.completions) == 2
    assert upstreams.openai.completions == []


@pytest.mark.slow
async def test_persistent_overload_is_retried_then_falls_back(
    rt: Runtime, upstreams: Upstreams, patient_autojump_clock: trio.testing.MockClock
) -> None:
    """A 529 that persists through the retries falls back to OpenAI, and the reply says why."""
    upstreams.anthropic.default = Fail.overloaded()
    reply = await rt.message("Hi", timeout=6)
    assert reply.provider == "openai"
    assert f"anthropic/{HAIKU} failed (overloaded)" in reply.routing
    assert len(upstreams.anthropic.completions) == 3  # the first try and two retries
    assert len(upstreams.openai.completions) == 1


@pytest.mark.slow
async def test_hang_times_out_then_falls_back(
    rt: Runtime, upstreams: Upstreams, patient_autojump_clock: trio.testing.MockClock
) -> None:
    """A hanging primary times out (closing each connection) and the fallback answers in time."""
    upstreams.anthropic.default = Hang()
    start = trio.current_time()
    reply = await rt.message("Hi", timeout=6)
    assert trio.current_time() - start < 6
    assert reply.provider == "openai"
    assert f"anthropic/{HAIKU} failed (upstream_timeout)" in reply.routing
    # A timeout is not retried on the same model: the fallback gets the time left.
    assert len(upstreams.anthropic.completions) == 1
    assert upstreams.anthropic.disconnects == 1


@pytest.mark.slow
async def test_everything_hanging_ends_with_a_timeout_at_the_deadline(
    rt: Runtime, upstreams: Upstreams, patient_autojump_clock: trio.testing.MockClock
) -> None:
    """When every provider hangs, the request ends with UpstreamTimeout at its deadline."""
    for provider in ("anthropic", "openai", "ollama"):
        upstreams.of(provider).default = Hang()
    start = trio.current_time()
    with pytest.raises(UpstreamTimeout) as caught:
        await rt.message("Hi", timeout=6)
    assert 6 <= trio.current_time() - start < 6.5
    assert caught.value.provider == "rhetor"
    # Every abandoned attempt closed its connection.
    assert upstreams.anthropic.disconnects == len(upstreams.anthropic.completions) > 0


async def test_rejected_key_is_not_retried_and_falls_back_at_once(
    rt: Runtime, upstreams: Upstreams
) -> None:
    """A 401 is never retried: the next provider in the chain answers straight away."""
    upstreams.anthropic.default = Fail.unauthorized()
    reply = await rt.message("Hi", timeout=5)
    assert reply.provider == "openai"
    assert f"anthropic/{HAIKU} failed (upstream_authentication_failed)" in reply.routing
    assert len(upstreams.anthropic.completions) == 1


async def test_every_provider_failing_lists_each_attempt(rt: Runtime, upstreams: Upstreams) -> None:
    """When the whole chain fails, AllProvidersFailed names each provider's own error."""
    upstreams.anthropic.default = Fail.unauthorized()
    upstreams.openai.default = Fail.bad_request()
    upstreams.ollama.default = Fail.context_too_long()
    with pytest.raises(AllProvidersFailed) as caught:
        await rt.message("Hi", timeout=5)
    assert [(p, e.code) for p, _, e in caught.value.attempts] == [
        ("anthropic", "upstream_authentication_failed"),
        ("openai", "upstream_bad_request"),
        ("ollama", "context_too_long"),
    ]


# -- streaming failures ------------------------------------------------------


@PROVIDERS
async def test_stream_cut_midway_is_stream_broken_and_billed_partial(
    tmp_path: Path, upstreams: Upstreams, provider: str
) -> None:
    """A connection dropped after two chunks ends the stream with StreamBroken; partial usage is billed."""
    upstreams.of(provider).script(Cut(after=2))
    seen: list[Chunk] = []
    async with running(tmp_path, upstreams) as rt:
        with pytest.raises(StreamBroken) as caught:
            await read_all(rt.stream("Hi", provider=provider, timeout=5), seen)
    assert [c.text for c in seen] == ["partial ", "reply "]
    assert caught.value.provider == provider
    assert isinstance(caught.value.__cause__, UpstreamConnectionError)
    assert len(upstreams.of(provider).completions) == 1  # never retried once text was sent
    [entry] = ledger_entries(tmp_path)
    assert (entry.provider, entry.status) == (provider, "partial")
    assert entry.input_tokens > 0 and entry.output_tokens > 0
    assert (entry.cost > 0) == (provider != "ollama")


async def test_stream_failing_before_its_first_chunk_falls_back(
    rt: Runtime, upstreams: Upstreams
) -> None:
    """A stream refused before any text moves to the fallback transparently."""
    upstreams.anthropic.script(Fail.unauthorized())
    upstreams.openai.script(Reply(chunks=("from ", "openai")))
    chunks = await read_all(rt.stream("Hi", timeout=5))
    assert [c.text for c in chunks] == ["from ", "openai", ""]
    assert {c.provider for c in chunks} == {"openai"}
    assert chunks[-1].reply is not None
    assert f"anthropic/{HAIKU} failed" in chunks[-1].reply.routing


async def test_stream_dropped_before_its_first_chunk_is_retried(
    rt: Runtime, upstreams: Upstreams, patient_autojump_clock: trio.testing.MockClock
) -> None:
    """A stream whose connection drops before any text is retried on the same provider."""
    upstreams.anthropic.script(Cut(after=0), Reply(chunks=("ok",)))
    chunks = await read_all(rt.stream("Hi", timeout=6))
    assert [c.text for c in chunks] == ["ok", ""]
    assert chunks[-1].provider == "anthropic"
    assert len(upstreams.anthropic.completions) == 2


# -- cancellation ------------------------------------------------------------


async def test_reader_leaving_a_stream_closes_the_upstream(
    tmp_path: Path, upstreams: Upstreams
) -> None:
    """Closing a stream after its first chunk closes the upstream connection at once, billed partial."""
    upstreams.anthropic.script(Stall(after=1))
    async with running(tmp_path, upstreams) as rt:
        async with aclosing(rt.stream("Hi", timeout=5)) as chunks:
            first = await anext(chunks)
            assert first.text == "partial "
        with trio.fail_after(1):
            await upstreams.anthropic.disconnected.wait()
        # The provider keeps serving after the abandoned stream.
        assert (await rt.message("again", timeout=5)).provider == "anthropic"
    assert [(e.provider, e.status) for e in ledger_entries(tmp_path)] == [
        ("anthropic", "partial"),
        ("anthropic", "ok"),
    ]


async def test_cancelling_a_request_closes_the_upstream(
    rt: Runtime, upstreams: Upstreams, patient_autojump_clock: trio.testing.MockClock
) -> None:
    """Cancelling a whole-reply request while the upstream is silent closes that connection."""
    upstreams.anthropic.script(Hang())
    with trio.move_on_after(1) as scope:
        await rt.message("Hi", timeout=5)
    assert scope.cancelled_caught
    with trio.fail_after(1):
        await upstreams.anthropic.disconnected.wait()
    assert upstreams.openai.completions == []


# -- supervision -------------------------------------------------------------


@pytest.mark.slow
async def test_provider_crash_is_restarted_while_others_keep_serving(
    tmp_path: Path, upstreams: Upstreams
) -> None:
    """A crashed provider actor is restarted and answers the redelivered request; the others serve meanwhile."""
    replies: dict[str, str] = {}
    async with running(tmp_path, upstreams) as rt:
        rt.system.faults.crash_next("provider:anthropic")

        async def ask(provider: str | None) -> None:
            reply = await rt.message("Hi", provider=provider, timeout=5)
            replies[provider or "default"] = reply.provider

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, None)
            nursery.start_soon(ask, "openai")
            nursery.start_soon(ask, "ollama")
        restarts = {name: ref.stats().restarts for name, ref in rt.providers_refs.items()}
    assert replies == {"default": "anthropic", "openai": "openai", "ollama": "ollama"}
    assert restarts == {"simulated": 0, "anthropic": 1, "openai": 0, "ollama": 0}
    assert len(upstreams.anthropic.completions) == 1
    # The crashed incarnation's HTTP client was closed too: an unclosed pooled socket
    # would surface here as a ResourceWarning, an error under filterwarnings.
    gc.collect()


async def test_request_crashing_a_provider_twice_falls_back(
    rt: Runtime, upstreams: Upstreams
) -> None:
    """A request that crashes its provider actor twice is poison: the router falls back, the provider recovers."""
    back = trio.Event()

    async def crash_the_redelivery(events: Subscription) -> None:
        restarts = 0
        async for event in events:
            if event.name != "provider:anthropic":
                continue
            if event.kind == "crashed" and restarts == 0:
                # Before the restarted actor (still probing its upstream) takes the
                # redelivered message.
                rt.system.faults.crash_next("provider:anthropic")
            elif event.kind == "restarted":
                restarts += 1
                if restarts == 2:
                    back.set()
                    return

    async with rt.system.events() as events, trio.open_nursery() as nursery:
        nursery.start_soon(crash_the_redelivery, events)
        rt.system.faults.crash_next("provider:anthropic")
        reply = await rt.message("Hi", timeout=5)
        with trio.fail_after(2):
            await back.wait()
    assert reply.provider == "openai"
    assert f"anthropic/{HAIKU} failed (provider_unavailable)" in reply.routing
    assert rt.providers_refs["anthropic"].stats().restarts == 2
    assert upstreams.anthropic.completions == []
    again = await rt.message("Hi again", timeout=5)
    assert again.provider == "anthropic"


# -- availability ------------------------------------------------------------


async def test_provider_without_a_key_is_unavailable_and_skipped(
    tmp_path: Path, upstreams: Upstreams
) -> None:
    """Without OPENAI_API_KEY, OpenAI is reported unavailable and routing skips it, saying so."""
    upstreams.anthropic.default = Fail.unauthorized()
    async with running(tmp_path, upstreams, openai_api_key=None) as rt:
        info = (await rt.providers())["providers"]["openai"]
        reply = await rt.message("Hi", timeout=5)
        with pytest.raises(AllProvidersFailed) as caught:
            await rt.message("Hi", provider="openai", timeout=5)
    assert [(p, e.code) for p, _, e in caught.value.attempts] == [
        ("openai", "provider_unavailable")
    ]
    assert not info["available"]
    assert info["reason"] == "OPENAI_API_KEY not set"
    assert reply.provider == "ollama"
    assert f"skipped unavailable openai/{GPT_MINI}" in reply.routing
    assert upstreams.openai.requests == []


async def test_ollama_not_answering_is_unavailable_and_skipped(
    tmp_path: Path, upstreams: Upstreams
) -> None:
    """An Ollama nobody listens for is reported unavailable, not crashed, and never tried."""
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    upstreams.anthropic.default = Fail.unauthorized()
    upstreams.openai.default = Fail.unauthorized()
    async with running(tmp_path, upstreams, ollama_base_url=closed) as rt:
        info = (await rt.providers())["providers"]["ollama"]
        with pytest.raises(AllProvidersFailed) as caught:
            await rt.message("Hi", timeout=5)
        assert rt.providers_refs["ollama"].alive
    assert not info["available"] and info["reason"]
    assert [p for p, _, _ in caught.value.attempts] == ["anthropic", "openai"]
