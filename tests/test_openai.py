"""
OpenAIBackend (Chat Completions over Rhetor's own HTTP client) against the fake OpenAI server over loopback.
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
from rhetor.providers._openai import OpenAIBackend
from tests.fakes import Cut, Fail, Garbled, Hang, Raw, Reply, Stall, StreamError
from tests.fakes.openai import FakeOpenAI, fake_openai


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with fake_openai() as fake:
        yield fake


@pytest.fixture
async def backend(fake: FakeOpenAI) -> AsyncIterator[OpenAIBackend]:
    backend = OpenAIBackend("sk-test", fake.base_url, models=("configured-model",))
    yield backend
    await backend.aclose()


def ask(text: str = "Hi", **kwargs: object) -> ProviderRequest:
    fields: dict[str, object] = {"model": "gpt-4o-mini", "timeout": 5.0} | kwargs
    return ProviderRequest(messages=(ChatMessage("user", text),), **fields)  # type: ignore[arg-type]


async def collect(
    backend: OpenAIBackend,
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


async def test_complete_returns_text_and_usage(fake: FakeOpenAI, backend: OpenAIBackend) -> None:
    """A whole reply carries the text, the usage and the model."""
    fake.script(Reply("Hello there", input_tokens=7, output_tokens=3))
    reply = await backend.complete(ask())
    assert reply.text == "Hello there"
    assert reply.usage == Usage(7, 3)
    assert reply.model == "gpt-4o-mini"
    assert reply.finish_reason == "stop"
    request = fake.requests[-1]
    assert request.headers["authorization"] == "Bearer sk-test"
    assert not request.json.get("stream")


async def test_request_shape(fake: FakeOpenAI, backend: OpenAIBackend) -> None:
    """The system prompt is the first message; history keeps its order; limits are sent."""
    history = (
        ChatMessage("user", "one"),
        ChatMessage("assistant", "two"),
        ChatMessage("user", "three"),
    )
    request = ProviderRequest(
        model="gpt-4o", messages=history, system="Be brief.", temperature=0.2, max_tokens=50
    )
    await backend.complete(request)
    body = fake.requests[-1].json
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "two"},
        {"role": "user", "content": "three"},
    ]
    assert body["temperature"] == 0.2
    assert body["max_completion_tokens"] == 50
    assert "max_tokens" not in body


async def test_max_tokens_field_is_configurable(fake: FakeOpenAI) -> None:
    """A backend for an older compatible server sends max_tokens instead."""
    backend = OpenAIBackend("k", fake.base_url, max_tokens_field="max_tokens")
    try:
        await backend.complete(ask(max_tokens=9))
    finally:
        await backend.aclose()
    assert fake.requests[-1].json["max_tokens"] == 9


async def test_stream_yields_deltas_then_end(fake: FakeOpenAI, backend: OpenAIBackend) -> None:
    """A stream asks for usage, yields each delta, then one StreamEnd with the usage chunk."""
    fake.script(Reply(chunks=("Hel", "lo", "!"), input_tokens=5, output_tokens=3))
    items = await collect(backend, ask())
    assert items == [
        TextDelta("Hel"),
        TextDelta("lo"),
        TextDelta("!"),
        StreamEnd(Usage(5, 3), "stop", "gpt-4o-mini"),
    ]
    body = fake.requests[-1].json
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


async def test_stream_without_usage_ends_with_usage_marked_invalid(
    fake: FakeOpenAI, backend: OpenAIBackend
) -> None:
    """An upstream that sends no usage chunk ends the stream with no estimate, marked invalid."""
    fake.script(Reply(chunks=("a",), usage=False, finish_reason="length"))
    items = await collect(backend, ask())
    assert items == [
        TextDelta("a"),
        StreamEnd(Usage(0, 0), "length", "gpt-4o-mini", usage_valid=False),
    ]


@pytest.mark.parametrize(
    ("behaviour", "error"),
    [
        (Fail.server_error(), UpstreamServerError),
        (Fail.server_error(502), UpstreamServerError),
        (Fail.overloaded(), Overloaded),
        (Fail(529, "overloaded_529"), Overloaded),
        (Fail.unauthorized(), AuthenticationFailed),
        (Fail.forbidden(), AuthenticationFailed),
        (Fail.context_too_long(), ContextTooLong),
        (Fail.bad_request(), BadRequest),
        (Fail(422, "bad_request"), BadRequest),
        (Fail.not_found(), BadRequest),
    ],
)
async def test_error_statuses(
    fake: FakeOpenAI, backend: OpenAIBackend, behaviour: Fail, error: type[ProviderError]
) -> None:
    """Each upstream error status becomes its Rhetor error, whole or streamed."""
    fake.script(behaviour, behaviour)
    with pytest.raises(error) as whole:
        await backend.complete(ask())
    with pytest.raises(error):
        await collect(backend, ask())
    assert whole.value.provider == "openai"
    assert whole.value.model == "gpt-4o-mini"
    assert isinstance(whole.value.__cause__, Exception)


async def test_rate_limited_keeps_retry_after(fake: FakeOpenAI, backend: OpenAIBackend) -> None:
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


async def test_hang_times_out(
    fake: FakeOpenAI, backend: OpenAIBackend, autojump_clock: trio.testing.MockClock
) -> None:
    """An upstream that never answers raises UpstreamTimeout after request.timeout."""
    fake.script(Hang(), Hang())
    with pytest.raises(UpstreamTimeout):
        await backend.complete(ask(timeout=0.5))
    with pytest.raises(UpstreamTimeout):
        await collect(backend, ask(timeout=0.5))


async def test_stall_mid_stream_times_out(
    fake: FakeOpenAI, backend: OpenAIBackend, autojump_clock: trio.testing.MockClock
) -> None:
    """A stream that stalls after its first delta times out on the whole-call deadline."""
    fake.script(Stall(after=1))
    seen: list[TextDelta | StreamEnd] = []
    with pytest.raises(UpstreamTimeout):
        await collect(backend, ask(timeout=0.5), seen)
    assert seen == [TextDelta("partial ")]
    await fake.disconnected.wait()


async def test_cut_stream_raises_after_deltas(fake: FakeOpenAI, backend: OpenAIBackend) -> None:
    """A connection dropped mid-stream raises UpstreamConnectionError after the received deltas."""
    fake.script(Cut(after=2))
    seen: list[TextDelta | StreamEnd] = []
    with pytest.raises(UpstreamConnectionError):
        await collect(backend, ask(), seen)
    assert seen == [TextDelta("partial "), TextDelta("reply ")]


async def test_cut_whole_reply_raises(fake: FakeOpenAI, backend: OpenAIBackend) -> None:
    """A whole reply cut half-way raises UpstreamConnectionError."""
    fake.script(Cut())
    with pytest.raises(UpstreamConnectionError):
        await backend.complete(ask())


async def test_error_event_mid_stream(fake: FakeOpenAI, backend: OpenAIBackend) -> None:
    """An error object inside a stream raises a typed error after the deltas before it."""
    fake.script(StreamError(after=1, kind="server_error"))
    seen: list[TextDelta | StreamEnd] = []
    with pytest.raises(UpstreamServerError):
        await collect(backend, ask(), seen)
    assert seen == [TextDelta("partial ")]


async def test_closing_early_closes_upstream(fake: FakeOpenAI, backend: OpenAIBackend) -> None:
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


async def test_calls_keep_one_connection_alive(fake: FakeOpenAI, backend: OpenAIBackend) -> None:
    """Whole and streamed calls that end well reuse one pooled connection."""
    await backend.complete(ask())
    await collect(backend, ask())
    await collect(backend, ask())
    await backend.complete(ask())
    assert (len(fake.completions), fake.connections) == (4, 1)


async def test_cancelling_closes_upstream(
    fake: FakeOpenAI, backend: OpenAIBackend, autojump_clock: trio.testing.MockClock
) -> None:
    """Cancelling a consumer that waits on a stalled stream closes the upstream connection."""
    fake.script(Stall(after=1))
    with trio.move_on_after(0.1) as scope:
        await collect(backend, ask())
    assert scope.cancelled_caught
    with trio.fail_after(1):
        await fake.disconnected.wait()


async def test_check_merges_listed_with_configured(backend: OpenAIBackend) -> None:
    """check() lists the configured models, then the models endpoint's."""
    status = await backend.check()
    assert status.available
    assert status.models == ("configured-model", "gpt-4o-mini", "gpt-4o")


async def test_no_key_is_unavailable() -> None:
    """Without a key check() says unavailable and calls raise ProviderUnavailable."""
    backend = OpenAIBackend(None)
    status = await backend.check()
    assert not status.available
    assert status.reason == "OPENAI_API_KEY not set"
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
    backend = OpenAIBackend("k", f"http://127.0.0.1:{port}/v1")
    try:
        status = await backend.check()
        with pytest.raises(UpstreamConnectionError):
            await backend.complete(ask())
    finally:
        await backend.aclose()
    assert not status.available
    assert status.reason


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("bad_request", BadRequest),
        ("rate_limited", RateLimited),
        ("context_too_long", ContextTooLong),
    ],
)
async def test_error_object_mid_stream_is_typed_by_its_inner_type(
    fake: FakeOpenAI, backend: OpenAIBackend, kind: str, error: type[ProviderError]
) -> None:
    """An in-stream error object is classified by its error's type and code, not retried blindly."""
    fake.script(StreamError(after=0, kind=kind))
    with pytest.raises(error):
        await collect(backend, ask())


@pytest.mark.parametrize(
    "usage",
    [{"prompt_tokens": "abc", "completion_tokens": 2}, {}, None, Raw("1e400"), [3]],
    ids=["string", "empty", "null", "1e400", "list"],
)
async def test_malformed_usage_still_replies_with_usage_marked_invalid(
    fake: FakeOpenAI, backend: OpenAIBackend, usage: object
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


async def test_fractional_usage_is_rounded(fake: FakeOpenAI, backend: OpenAIBackend) -> None:
    """Token counts sent as floats are rounded to integers, never passed through."""
    fake.script(Reply("ok", raw_usage={"prompt_tokens": 12.7, "completion_tokens": 3.0}))
    reply = await backend.complete(ask())
    assert reply.usage == Usage(13, 3) and reply.usage_valid
    assert type(reply.usage.input_tokens) is int


@pytest.mark.parametrize(
    ("body", "event"),
    [
        (Raw("not json"), Raw("not json")),
        (
            {"choices": [{"message": {"content": {"x": 1}}}]},
            {"choices": [{"index": 0, "delta": {"content": {"x": 1}}}]},
        ),
        ({"object": "list"}, {"choices": 5}),
        ({"choices": [{"message": "hi"}]}, {"choices": [{"delta": "hi"}]}),
    ],
    ids=["not-json", "content-object", "no-choices", "not-objects"],
)
async def test_malformed_body_is_an_upstream_server_error(
    fake: FakeOpenAI, backend: OpenAIBackend, body: object, event: object
) -> None:
    """A 200 body or chunk that is not the chat completion format is UpstreamServerError."""
    fake.script(Garbled(body=body), Garbled(event=event, after=0))
    with pytest.raises(UpstreamServerError, match="malformed reply from openai"):
        await backend.complete(ask())
    with pytest.raises(UpstreamServerError, match="malformed reply from openai"):
        await collect(backend, ask())


@pytest.mark.parametrize(
    ("listing", "models"),
    [
        (Raw("not json"), ("configured-model",)),
        (Raw("[" * 100_000), ("configured-model",)),
        ([1, 2], ("configured-model",)),
        ({"data": "none"}, ("configured-model",)),
        (
            {"data": [{"id": {"a": 1}}, {"id": 5}, "x", {"id": "real"}]},
            ("configured-model", "real"),
        ),
    ],
    ids=["not-json", "deep", "list", "data-string", "odd-entries"],
)
async def test_check_survives_a_malformed_models_listing(
    fake: FakeOpenAI, backend: OpenAIBackend, listing: object, models: tuple[str, ...]
) -> None:
    """A models listing that is not one leaves the provider available with the names it could read."""
    fake.models_body = listing
    status = await backend.check()
    assert status.available
    assert status.models == models
