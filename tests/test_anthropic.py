"""
AnthropicBackend (the Messages API over Rhetor's own HTTP client) against the fake Messages API over loopback.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

import pytest
import trio
import trio.testing

from rhetor._errors import (
    AuthenticationFailed,
    BadRequest,
    ContextTooLong,
    Overloaded,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    UpstreamConnectionError,
    UpstreamServerError,
    UpstreamTimeout,
)
from rhetor._types import ChatMessage, ProviderRequest, StreamEnd, TextDelta, Usage
from rhetor.providers._anthropic import AnthropicBackend
from rhetor.providers._anthropic_wire import DEFAULT_MAX_TOKENS, anthropic_messages
from tests.fakes import Cut, Fail, Garbled, Hang, Raw, Reply, Stall, StreamError
from tests.fakes.anthropic import FakeAnthropic, fake_anthropic


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    async with fake_anthropic() as fake:
        yield fake


@pytest.fixture
async def backend(fake: FakeAnthropic) -> AsyncIterator[AnthropicBackend]:
    backend = AnthropicBackend("sk-ant-test", fake.base_url, models=("configured-model",))
    yield backend
    await backend.aclose()


def ask(text: str = "Hi", **kwargs: object) -> ProviderRequest:
    fields: dict[str, object] = {"model": "claude-sonnet-5-5", "timeout": 5.0} | kwargs
    return ProviderRequest(messages=(ChatMessage("user", text),), **fields)  # type: ignore[arg-type]


async def collect(
    backend: AnthropicBackend,
    request: ProviderRequest,
    into: list[TextDelta | StreamEnd] | None = None,
) -> list[TextDelta | StreamEnd]:
    """
    Every item of a stream, appended to ``into`` as they arrive (kept when it raises).
    """
    seen = [] if into is None else into
    async with aclosing(backend.stream(request)) as items:
        async for item in items:
            seen.append(item)
    return seen


def test_history_is_reshaped_for_the_messages_api() -> None:
    """System and empty turns go, leading assistant turns go, same-role runs merge."""
    history = [
        ChatMessage("assistant", "Welcome!"),
        ChatMessage("system", "ignored"),
        ChatMessage("user", "a"),
        ChatMessage("user", "b"),
        ChatMessage("assistant", ""),
        ChatMessage("assistant", "c"),
        ChatMessage("system", "ignored too"),
        ChatMessage("assistant", "d"),
        ChatMessage("user", "e"),
    ]
    assert anthropic_messages(history) == [
        {"role": "user", "content": "a\n\nb"},
        {"role": "assistant", "content": "c\n\nd"},
        {"role": "user", "content": "e"},
    ]


async def test_complete_returns_text_and_usage(
    fake: FakeAnthropic, backend: AnthropicBackend
) -> None:
    """A whole message carries the text, the usage, the model and a mapped stop reason."""
    fake.script(Reply("Hello there", input_tokens=7, output_tokens=3, finish_reason="length"))
    reply = await backend.complete(ask())
    assert reply.text == "Hello there"
    assert reply.usage == Usage(7, 3)
    assert reply.model == "claude-sonnet-5-5"
    assert reply.finish_reason == "length"
    request = fake.requests[-1]
    assert request.path == "/v1/messages"
    assert "sk-ant-test" in (
        request.headers.get("x-api-key", "") + request.headers.get("authorization", "")
    )


async def test_request_shape(fake: FakeAnthropic, backend: AnthropicBackend) -> None:
    """The system prompt goes in `system`; turns arrive merged; max_tokens defaults to 1024."""
    history = (
        ChatMessage("user", "one"),
        ChatMessage("user", "two"),
        ChatMessage("assistant", "three"),
        ChatMessage("user", "four"),
    )
    request = ProviderRequest(
        model="claude-sonnet-5-5", messages=history, system="Be brief.", temperature=0.2
    )
    await backend.complete(request)
    body = fake.requests[-1].json
    assert body["system"] == "Be brief."
    assert body["messages"] == [
        {"role": "user", "content": "one\n\ntwo"},
        {"role": "assistant", "content": "three"},
        {"role": "user", "content": "four"},
    ]
    assert body["max_tokens"] == DEFAULT_MAX_TOKENS
    # API version 2026-10-21 rejects sampling parameters; the fake would answer 400.
    assert "temperature" not in body


async def test_explicit_max_tokens_is_sent(fake: FakeAnthropic, backend: AnthropicBackend) -> None:
    """A request's max_tokens reaches the upstream unchanged."""
    await backend.complete(ask(max_tokens=77))
    assert fake.requests[-1].json["max_tokens"] == 77


async def test_no_user_message_is_bad_request(backend: AnthropicBackend) -> None:
    """A history with no user turn fails locally with BadRequest."""
    request = ProviderRequest(model="m", messages=(ChatMessage("assistant", "hello"),))
    with pytest.raises(BadRequest):
        await backend.complete(request)


async def test_stream_yields_deltas_then_end(
    fake: FakeAnthropic, backend: AnthropicBackend
) -> None:
    """A stream yields each text delta, then one StreamEnd with input and output usage."""
    fake.script(Reply(chunks=("Hel", "lo", "!"), input_tokens=5, output_tokens=3))
    items = await collect(backend, ask())
    assert items == [
        TextDelta("Hel"),
        TextDelta("lo"),
        TextDelta("!"),
        StreamEnd(Usage(5, 3), "stop", "claude-sonnet-5-5"),
    ]
    assert fake.requests[-1].json["stream"] is True


async def test_stream_without_output_usage_keeps_what_is_known(
    fake: FakeAnthropic, backend: AnthropicBackend
) -> None:
    """A message_delta without usage leaves the message_start counts, nothing estimated."""
    fake.script(Reply(chunks=("a",), input_tokens=4, usage=False))
    items = await collect(backend, ask())
    assert items[-1] == StreamEnd(Usage(4, 1), "stop", "claude-sonnet-5-5")


@pytest.mark.parametrize(
    ("behaviour", "error"),
    [
        (Fail.server_error(), UpstreamServerError),
        (Fail.server_error(503), UpstreamServerError),
        (Fail.overloaded(), Overloaded),
        (Fail.unauthorized(), AuthenticationFailed),
        (Fail.forbidden(), AuthenticationFailed),
        (Fail.context_too_long(), ContextTooLong),
        (Fail.bad_request(), BadRequest),
        (Fail.not_found(), BadRequest),
    ],
)
async def test_error_statuses(
    fake: FakeAnthropic,
    backend: AnthropicBackend,
    behaviour: Fail,
    error: type[ProviderError],
) -> None:
    """Each upstream error status becomes its Rhetor error, whole or streamed."""
    fake.script(behaviour, behaviour)
    with pytest.raises(error) as whole:
        await backend.complete(ask())
    with pytest.raises(error):
        await collect(backend, ask())
    assert whole.value.provider == "anthropic"
    assert whole.value.model == "claude-sonnet-5-5"
    assert isinstance(whole.value.__cause__, Exception)


async def test_rate_limited_keeps_retry_after(
    fake: FakeAnthropic, backend: AnthropicBackend
) -> None:
    """A 429 becomes RateLimited with the Retry-After seconds; retry-after-ms wins."""
    fake.script(Fail.rate_limited(retry_after=3), Fail.rate_limited(2, retry_after_ms=1500))
    with pytest.raises(RateLimited) as caught:
        await backend.complete(ask())
    assert caught.value.retry_after == 3.0
    with pytest.raises(RateLimited) as caught:
        await collect(backend, ask())
    assert caught.value.retry_after == 1.5
    # Nothing is retried here: the router owns retries.
    assert len(fake.completions) == 2


async def test_overloaded_event_mid_stream(fake: FakeAnthropic, backend: AnthropicBackend) -> None:
    """An overloaded_error event inside a stream raises Overloaded after the deltas before it."""
    fake.script(StreamError(after=1, kind="overloaded"))
    seen: list[TextDelta | StreamEnd] = []
    with pytest.raises(Overloaded):
        await collect(backend, ask(), seen)
    assert seen == [TextDelta("partial ")]


async def test_hang_times_out(
    fake: FakeAnthropic,
    backend: AnthropicBackend,
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An upstream that never answers raises UpstreamTimeout after request.timeout."""
    fake.script(Hang(), Hang())
    with pytest.raises(UpstreamTimeout):
        await backend.complete(ask(timeout=0.5))
    with pytest.raises(UpstreamTimeout):
        await collect(backend, ask(timeout=0.5))


async def test_stall_mid_stream_times_out(
    fake: FakeAnthropic,
    backend: AnthropicBackend,
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A stream that stalls after its first delta times out on the whole-call deadline."""
    fake.script(Stall(after=1))
    seen: list[TextDelta | StreamEnd] = []
    with pytest.raises(UpstreamTimeout):
        await collect(backend, ask(timeout=0.5), seen)
    assert seen == [TextDelta("partial ")]
    await fake.disconnected.wait()


async def test_cut_stream_raises_after_deltas(
    fake: FakeAnthropic, backend: AnthropicBackend
) -> None:
    """A connection dropped mid-stream raises UpstreamConnectionError after the received deltas."""
    fake.script(Cut(after=2))
    seen: list[TextDelta | StreamEnd] = []
    with pytest.raises(UpstreamConnectionError):
        await collect(backend, ask(), seen)
    assert seen == [TextDelta("partial "), TextDelta("reply ")]


async def test_cut_whole_reply_raises(fake: FakeAnthropic, backend: AnthropicBackend) -> None:
    """A whole reply cut half-way raises UpstreamConnectionError."""
    fake.script(Cut())
    with pytest.raises(UpstreamConnectionError):
        await backend.complete(ask())


async def test_closing_early_closes_upstream(
    fake: FakeAnthropic, backend: AnthropicBackend
) -> None:
    """Closing the stream after one delta closes the upstream connection."""
    fake.script(Stall(after=1))
    async with aclosing(backend.stream(ask())) as items:
        assert await anext(items) == TextDelta("partial ")
    with trio.fail_after(1):
        await fake.disconnected.wait()
    # The client is still usable afterwards, on a new connection: the half-read one
    # was closed, never put back in the pool.
    assert (await backend.complete(ask())).text == Reply().joined
    assert fake.connections == 2


async def test_calls_keep_one_connection_alive(
    fake: FakeAnthropic, backend: AnthropicBackend
) -> None:
    """Whole and streamed calls that end well reuse one pooled connection."""
    await backend.complete(ask())
    await collect(backend, ask())
    await collect(backend, ask())
    await backend.complete(ask())
    assert (len(fake.completions), fake.connections) == (4, 1)


async def test_cancelling_closes_upstream(
    fake: FakeAnthropic,
    backend: AnthropicBackend,
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Cancelling a consumer that waits on a stalled stream closes the upstream connection."""
    fake.script(Stall(after=1))
    with trio.move_on_after(0.1) as scope:
        await collect(backend, ask())
    assert scope.cancelled_caught
    with trio.fail_after(1):
        await fake.disconnected.wait()


async def test_check_merges_listed_with_configured(backend: AnthropicBackend) -> None:
    """check() lists the configured models, then the models endpoint's."""
    status = await backend.check()
    assert status.available
    assert status.models == ("configured-model", "claude-sonnet-5-5", "claude-haiku-5-5")


async def test_check_with_rejected_key_is_unavailable(
    fake: FakeAnthropic, backend: AnthropicBackend
) -> None:
    """check() reports a key the models endpoint rejects as unavailable."""
    fake.models_failure = Fail.unauthorized()
    status = await backend.check()
    assert not status.available
    assert "401" in status.reason


async def test_no_key_is_unavailable() -> None:
    """Without a key check() says unavailable and calls raise ProviderUnavailable."""
    backend = AnthropicBackend(None)
    status = await backend.check()
    assert not status.available
    assert status.reason == "ANTHROPIC_API_KEY not set"
    with pytest.raises(ProviderUnavailable):
        await backend.complete(ask())
    with pytest.raises(ProviderUnavailable):
        await collect(backend, ask())
    await backend.aclose()


async def test_check_unreachable_is_unavailable() -> None:
    """check() against a port nobody listens on reports unavailable, never raises."""
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = AnthropicBackend("k", f"http://127.0.0.1:{port}")
    try:
        status = await backend.check()
        with pytest.raises(UpstreamConnectionError):
            await backend.complete(ask())
    finally:
        await backend.aclose()
    assert not status.available
    assert status.reason


@pytest.mark.parametrize(
    "usage",
    [
        {},
        {"input_tokens": "abc", "output_tokens": 2},
        {"input_tokens": 4, "output_tokens": Raw("1e400")},
        None,
        True,
    ],
    ids=["empty", "string", "1e400", "null", "bool"],
)
async def test_malformed_usage_still_replies_with_usage_marked_invalid(
    fake: FakeAnthropic, backend: AnthropicBackend, usage: object
) -> None:
    """A 200 reply whose usage is malformed still replies, whole or streamed, its usage marked invalid."""
    fake.script(Reply("ok", raw_usage=usage), Reply(chunks=("o", "k"), raw_usage=usage))
    reply = await backend.complete(ask())
    items = await collect(backend, ask())
    assert (reply.text, reply.usage_valid) == ("ok", False)
    assert items[:2] == [TextDelta("o"), TextDelta("k")]
    end = items[-1]
    assert isinstance(end, StreamEnd) and end.usage_valid is False
    assert end.usage.input_tokens >= 0 and end.usage.output_tokens >= 0


@pytest.mark.parametrize(
    ("body", "event_type", "event"),
    [
        (Raw("not json"), "content_block_delta", Raw("not json")),
        ({"content": "hi"}, "content_block_delta", {"delta": "hi"}),
        (
            {"content": [{"type": "text", "text": 5}]},
            "content_block_delta",
            {"delta": {"type": "text_delta", "text": 5}},
        ),
        ([1], "message_start", {"message": [1]}),
    ],
    ids=["not-json", "not-objects", "text-number", "list"],
)
async def test_malformed_body_is_an_upstream_server_error(
    fake: FakeAnthropic, backend: AnthropicBackend, body: object, event_type: str, event: object
) -> None:
    """A 200 body or event that is not the Messages API's is UpstreamServerError."""
    fake.script(Garbled(body=body), Garbled(event=event, event_type=event_type, after=0))
    with pytest.raises(UpstreamServerError, match="malformed reply from anthropic"):
        await backend.complete(ask())
    with pytest.raises(UpstreamServerError, match="malformed reply from anthropic"):
        await collect(backend, ask())


@pytest.mark.parametrize(
    ("listing", "models"),
    [
        (Raw("not json"), ("configured-model",)),
        ({"data": None}, ("configured-model",)),
        ({"data": [{"id": ["x"]}, None, {"id": "real"}]}, ("configured-model", "real")),
    ],
    ids=["not-json", "data-null", "odd-entries"],
)
async def test_check_survives_a_malformed_models_listing(
    fake: FakeAnthropic, backend: AnthropicBackend, listing: object, models: tuple[str, ...]
) -> None:
    """A models listing that is not one leaves the provider available with the names it could read."""
    fake.models_body = listing
    status = await backend.check()
    assert status.available
    assert status.models == models
