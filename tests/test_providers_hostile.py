"""
Hostile upstreams, end to end: malformed usage and bodies, and upstreams that echo keys.

The whole runtime runs with its real backends against the fakes of
:mod:`tests.fakes` over loopback, as in :mod:`tests.test_providers_e2e`; here the
fakes answer 200 with what a broken or careless upstream sends. One request's bad
reply must stay that request's problem: the provider actor keeps serving every other
request in flight, and no key an upstream echoes reaches a reply or a log line.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import rhetor.runtime
from rhetor import AllProvidersFailed, RhetorError, StreamBroken
from rhetor._types import Chunk
from rhetor.runtime import Runtime
from tests.fakes import Fail, Garbled, Raw, Reply, StreamError
from tests.fakes.anthropic import fake_anthropic
from tests.fakes.ollama import fake_ollama
from tests.fakes.openai import fake_openai
from tests.test_providers_e2e import Upstreams, read_all, settings_for

PROVIDERS = pytest.mark.parametrize("provider", ["anthropic", "openai", "ollama"])

# Keys shaped like the real ones, so that the pattern redaction has work to do too.
ANTHROPIC_KEY = "sk-ant-api03-hostileAnthropicKey0123456789abcdef"
OPENAI_KEY = "sk-proj-hostileOpenAIKey0123456789abcdefghij"
RHETOR_KEY = "rhetor-local-key-5f3a9c2e7b"

# A malformed usage for each provider, whole and streamed: each a way the issue met.
MALFORMED_USAGE: dict[str, Any] = {
    "openai": {"prompt_tokens": "abc", "completion_tokens": 3, "total_tokens": 3},
    "anthropic": {},
    "ollama": {"prompt_eval_count": Raw("1e400"), "eval_count": 2},
}

CONCURRENT = 30


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


def start(tmp_path: Path, up: Upstreams, **overrides: Any) -> Any:
    return rhetor.runtime.start(settings_for(tmp_path, up, **overrides), health_interval=0)


async def ask(rt: Runtime, provider: str, *, streamed: bool) -> str:
    """
    One request's text, whole or streamed.
    """
    if not streamed:
        return (await rt.message("Hi", provider=provider, timeout=30)).message
    chunks: list[Chunk] = await read_all(rt.stream("Hi", provider=provider, timeout=30))
    done = chunks[-1].reply
    assert done is not None
    return done.message


# -- malformed usage -------------------------------------------------------------------


@pytest.mark.slow
@PROVIDERS
@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_malformed_usage_fails_no_request_and_never_restarts_the_provider(
    tmp_path: Path,
    upstreams: Upstreams,
    provider: str,
    streamed: bool,
    patient_autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Thirty requests in flight on one provider all succeed while one reply's usage is malformed."""
    fake = upstreams.of(provider)
    # The first arrivals wait; the last gets the malformed usage while they are in flight.
    fake.script(*[Reply("fine", delay=1.0)] * (CONCURRENT - 1))
    fake.script(Reply("odd usage", raw_usage=MALFORMED_USAGE[provider]))
    texts: list[str] = []
    async with start(tmp_path, upstreams) as rt:

        async def one() -> None:
            texts.append(await ask(rt, provider, streamed=streamed))

        async with trio.open_nursery() as nursery:
            for _ in range(CONCURRENT):
                nursery.start_soon(one)
        restarts = rt.providers_refs[provider].stats().restarts
    assert sorted(texts) == ["fine"] * (CONCURRENT - 1) + ["odd usage"]
    assert restarts == 0
    assert len(fake.completions) == CONCURRENT
    assert any("unusable usage" in r.getMessage() for r in caplog.records)


@PROVIDERS
@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_malformed_body_is_that_requests_typed_error(
    tmp_path: Path,
    upstreams: Upstreams,
    provider: str,
    streamed: bool,
    patient_autojump_clock: trio.testing.MockClock,
) -> None:
    """A 200 body that is not the provider's format fails that request alone, typed; the next succeeds."""
    fake = upstreams.of(provider)
    # Retried (an upstream server error is transient), so it must fail every try.
    fake.script(*[Garbled(after=0)] * 3)
    async with start(tmp_path, upstreams) as rt:
        with pytest.raises(AllProvidersFailed) as caught:
            await ask(rt, provider, streamed=streamed)
        assert await ask(rt, provider, streamed=streamed) == Reply().joined
        restarts = rt.providers_refs[provider].stats().restarts
    [(_, _, error)] = caught.value.attempts
    assert error.code == "upstream_server_error"
    assert f"malformed reply from {provider}" in error.message
    assert restarts == 0


@PROVIDERS
async def test_garbage_after_the_first_chunk_breaks_only_that_stream(
    tmp_path: Path, upstreams: Upstreams, provider: str
) -> None:
    """A stream event that is not JSON, after text was sent, is StreamBroken; the provider keeps serving."""
    upstreams.of(provider).script(Garbled(after=2))
    async with start(tmp_path, upstreams) as rt:
        with pytest.raises(StreamBroken) as caught:
            await ask(rt, provider, streamed=True)
        assert await ask(rt, provider, streamed=True) == Reply().joined
        restarts = rt.providers_refs[provider].stats().restarts
    assert "malformed reply" in caught.value.message
    assert restarts == 0


# -- secrets -----------------------------------------------------------------------------


def leaked(text: str) -> list[str]:
    """
    The configured keys that appear in ``text``.
    """
    return [key for key in (ANTHROPIC_KEY, OPENAI_KEY, RHETOR_KEY) if key in text]


@PROVIDERS
@pytest.mark.parametrize("where", ["status", "status-streamed", "in-stream"])
async def test_an_upstream_echoing_the_key_leaks_it_to_no_reply_and_no_log(
    tmp_path: Path,
    upstreams: Upstreams,
    provider: str,
    where: str,
    caplog: pytest.LogCaptureFixture,
    patient_autojump_clock: trio.testing.MockClock,
) -> None:
    """An upstream that puts the request's credentials in its error: the key is in no error and no log line."""
    caplog.set_level(logging.DEBUG)
    fake = upstreams.of(provider)
    # Ollama is sent no key; one behind a proxy could still know it, so it says it.
    extra = f" proxy saw Authorization: Bearer {OPENAI_KEY} and {RHETOR_KEY}"
    message = extra if provider == "ollama" else None
    behaviour: StreamError | Fail = Fail(400, "bad_request", message, echo_key=True)
    if where == "in-stream":
        behaviour = StreamError(after=0, kind="bad_request", message=message, echo_key=True)
    # Enough for every try, should the error be one the router retries.
    fake.script(behaviour, behaviour, behaviour)
    errors: list[RhetorError] = []
    async with start(
        tmp_path,
        upstreams,
        anthropic_api_key=ANTHROPIC_KEY,
        openai_api_key=OPENAI_KEY,
        api_key=RHETOR_KEY,
    ) as rt:
        try:
            await ask(rt, provider, streamed=where != "status")
        except RhetorError as exc:
            errors.append(exc)
        status = await rt.providers()
    [error] = errors
    echoed = fake.completions[-1].headers
    if provider != "ollama":
        # The fake did echo a key: otherwise this test could not fail.
        credentials = echoed.get("authorization", "") + echoed.get("x-api-key", "")
        assert leaked(credentials) != []
    assert "[redacted]" in str(error.to_dict())
    assert leaked(str(error.to_dict())) == []
    assert leaked(str(status)) == []
    assert leaked(caplog.text) == []
    for record in caplog.records:
        assert leaked(record.getMessage()) == []
    # The failure was logged with its cause chain, which held the upstream's words.
    [failure] = [r for r in caplog.records if r.getMessage().startswith(f"{provider} call failed")][
        :1
    ]
    if provider != "ollama" or where == "in-stream":
        assert "[redacted]" in (failure.exc_text or "")
