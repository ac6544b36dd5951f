"""
OllamaBackend against the fake Ollama server over real loopback sockets.
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
    RateLimited,
    UpstreamConnectionError,
    UpstreamServerError,
    UpstreamTimeout,
)
from rhetor._types import ChatMessage, ProviderRequest, StreamEnd, TextDelta, Usage
from rhetor.providers._ollama import OllamaBackend
from tests.fakes import Cut, Fail, Garbled, Hang, Raw, Reply, Stall, StreamError
from tests.fakes.ollama import FakeOllama, fake_ollama


@pytest.fixture
async def fake() -> AsyncIterator[FakeOllama]:
    async with fake_ollama() as fake:
        yield fake


@pytest.fixture
async def backend(fake: FakeOllama) -> AsyncIterator[OllamaBackend]:
    backend = OllamaBackend(fake.base_url, models=("configured:1b",))
    yield backend
    await backend.aclose()


def ask(text: str = "Hi", **kwargs: object) -> ProviderRequest:
    fields: dict[str, object] = {"model": "llama3.2:latest", "timeout": 5.0} | kwargs
    return ProviderRequest(messages=(ChatMessage("user", text),), **fields)  # type: ignore[arg-type]


async def collect(
    backend: OllamaBackend,
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


async def test_complete_returns_text_and_usage(fake: FakeOllama, backend: OllamaBackend) -> None:
    """A whole reply carries the text, Ollama's token counts and the model."""
    fake.script(Reply("Hello there", input_tokens=7, output_tokens=3))
    reply = await backend.complete(ask())
    assert reply.text == "Hello there"
    assert reply.usage == Usage(7, 3)
    assert reply.model == "llama3.2:latest"
    assert reply.finish_reason == "stop"
    assert fake.requests[-1].json["stream"] is False


async def test_request_shape(fake: FakeOllama, backend: OllamaBackend) -> None:
    """System prompt leads as a system message; temperature and max_tokens become options."""
    history = (
        ChatMessage("user", "one"),
        ChatMessage("assistant", "two"),
        ChatMessage("user", "three"),
    )
    request = ProviderRequest(
        model="llama3.2:latest",
        messages=history,
        system="Be brief.",
        temperature=0.2,
        max_tokens=50,
    )
    await backend.complete(request)
    body = fake.requests[-1].json
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "two"},
        {"role": "user", "content": "three"},
    ]
    assert body["options"] == {"temperature": 0.2, "num_predict": 50}


async def test_stream_yields_deltas_then_end(fake: FakeOllama, backend: OllamaBackend) -> None:
    """A stream yields each NDJSON piece, then one StreamEnd with the final line's usage."""
    fake.script(Reply(chunks=("Hel", "lo", "!"), input_tokens=5, output_tokens=3))
    items = await collect(backend, ask())
    assert items == [
        TextDelta("Hel"),
        TextDelta("lo"),
        TextDelta("!"),
        StreamEnd(Usage(5, 3), "stop", "llama3.2:latest"),
    ]
    assert fake.requests[-1].json["stream"] is True


async def test_stream_without_counts_ends_with_usage_marked_invalid(
    fake: FakeOllama, backend: OllamaBackend
) -> None:
    """A final line without token counts ends the stream with no estimate, marked invalid."""
    fake.script(Reply(chunks=("a",), usage=False, finish_reason="length"))
    items = await collect(backend, ask())
    assert items[-1] == StreamEnd(Usage(0, 0), "length", "llama3.2:latest", usage_valid=False)


@pytest.mark.parametrize(
    ("behaviour", "error"),
    [
        (Fail.server_error(), UpstreamServerError),
        (Fail.overloaded(), Overloaded),
        (Fail.unauthorized(), AuthenticationFailed),
        (Fail.context_too_long(), ContextTooLong),
        (Fail.not_found(), BadRequest),
    ],
)
async def test_error_statuses(
    fake: FakeOllama, backend: OllamaBackend, behaviour: Fail, error: type[ProviderError]
) -> None:
    """Each upstream error status becomes its Rhetor error, whole or streamed."""
    fake.script(behaviour, behaviour)
    with pytest.raises(error) as whole:
        await backend.complete(ask())
    with pytest.raises(error):
        await collect(backend, ask())
    assert whole.value.provider == "ollama"
    assert whole.value.model == "llama3.2:latest"


async def test_rate_limited_keeps_retry_after(fake: FakeOllama, backend: OllamaBackend) -> None:
    """A 429 becomes RateLimited with the upstream's Retry-After seconds."""
    fake.script(Fail.rate_limited(retry_after=3))
    with pytest.raises(RateLimited) as caught:
        await backend.complete(ask())
    assert caught.value.retry_after == 3.0


async def test_hang_times_out(
    fake: FakeOllama, backend: OllamaBackend, autojump_clock: trio.testing.MockClock
) -> None:
    """An upstream that never answers raises UpstreamTimeout after request.timeout."""
    fake.script(Hang(), Hang())
    with pytest.raises(UpstreamTimeout):
        await backend.complete(ask(timeout=0.2))
    with pytest.raises(UpstreamTimeout):
        await collect(backend, ask(timeout=0.2))


async def test_stall_mid_stream_times_out(
    fake: FakeOllama, backend: OllamaBackend, autojump_clock: trio.testing.MockClock
) -> None:
    """A stream that stalls after its first piece times out on the whole-call deadline."""
    fake.script(Stall(after=1))
    seen: list[TextDelta | StreamEnd] = []
    with pytest.raises(UpstreamTimeout):
        await collect(backend, ask(timeout=0.2), seen)
    assert seen == [TextDelta("partial ")]
    await fake.disconnected.wait()


async def test_cut_stream_raises_after_deltas(fake: FakeOllama, backend: OllamaBackend) -> None:
    """A connection dropped mid-stream raises UpstreamConnectionError after the received deltas."""
    fake.script(Cut(after=2))
    seen: list[TextDelta | StreamEnd] = []
    with pytest.raises(UpstreamConnectionError):
        await collect(backend, ask(), seen)
    assert seen == [TextDelta("partial "), TextDelta("reply ")]


async def test_cut_whole_reply_raises(fake: FakeOllama, backend: OllamaBackend) -> None:
    """A whole reply cut half-way raises UpstreamConnectionError."""
    fake.script(Cut())
    with pytest.raises(UpstreamConnectionError):
        await backend.complete(ask())


async def test_error_line_mid_stream(fake: FakeOllama, backend: OllamaBackend) -> None:
    """An in-stream error line raises a typed error after the deltas before it."""
    fake.script(StreamError(after=1, kind="server_error"))
    seen: list[TextDelta | StreamEnd] = []
    with pytest.raises(UpstreamServerError):
        await collect(backend, ask(), seen)
    assert seen == [TextDelta("partial ")]


async def test_closing_early_closes_upstream(fake: FakeOllama, backend: OllamaBackend) -> None:
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


async def test_calls_keep_one_connection_alive(fake: FakeOllama, backend: OllamaBackend) -> None:
    """Whole and streamed calls that end well reuse one pooled connection."""
    await backend.complete(ask())
    await collect(backend, ask())
    await collect(backend, ask())
    await backend.complete(ask())
    assert (len(fake.completions), fake.connections) == (4, 1)


async def test_cancelling_closes_upstream(
    fake: FakeOllama, backend: OllamaBackend, autojump_clock: trio.testing.MockClock
) -> None:
    """Cancelling a consumer that waits on a stalled stream closes the upstream connection."""
    fake.script(Stall(after=1))
    with trio.move_on_after(0.1) as scope:
        async with aclosing(backend.stream(ask())) as items:
            async for _ in items:
                pass
    assert scope.cancelled_caught
    with trio.fail_after(1):
        await fake.disconnected.wait()


async def test_check_merges_tags_with_configured(backend: OllamaBackend) -> None:
    """check() lists the pulled models, then the configured ones."""
    status = await backend.check()
    assert status.available
    assert status.models == ("llama3.2:latest", "qwen2.5:7b", "configured:1b")


async def test_check_unreachable_is_unavailable() -> None:
    """check() on a port nobody listens on reports unavailable with a reason, never raises."""
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = OllamaBackend(f"http://127.0.0.1:{port}", models=("m",))
    try:
        status = await backend.check()
    finally:
        await backend.aclose()
    assert not status.available
    assert status.reason
    assert status.models == ("m",)


async def test_complete_unreachable_raises_connection_error() -> None:
    """complete() against a closed port raises UpstreamConnectionError."""
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = OllamaBackend(f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(UpstreamConnectionError):
            await backend.complete(ask())
    finally:
        await backend.aclose()


@pytest.mark.parametrize(
    "counts",
    [
        {"prompt_eval_count": "abc"},
        {"prompt_eval_count": Raw("1e400")},
        {"eval_count": -3},
        {"eval_count": {"n": 1}},
        {"prompt_eval_count": None},
    ],
    ids=["string", "1e400", "negative", "object", "null"],
)
async def test_malformed_counts_still_reply_with_usage_marked_invalid(
    fake: FakeOllama, backend: OllamaBackend, counts: object
) -> None:
    """A 200 reply whose counts are malformed still replies, whole or streamed, its usage marked invalid."""
    fake.script(Reply("ok", raw_usage=counts), Reply(chunks=("o", "k"), raw_usage=counts))
    reply = await backend.complete(ask())
    items = await collect(backend, ask())
    assert (reply.text, reply.usage_valid) == ("ok", False)
    assert items[:2] == [TextDelta("o"), TextDelta("k")]
    end = items[-1]
    assert isinstance(end, StreamEnd) and end.usage_valid is False
    assert end.usage.input_tokens >= 0 and end.usage.output_tokens >= 0


@pytest.mark.parametrize(
    ("body", "event"),
    [
        (Raw("not json"), Raw("not json")),
        ({"message": {"content": 5}, "done": True}, {"message": {"content": 5}}),
        ([1], [1]),
        ({"message": "hi", "done": True}, {"message": "hi"}),
    ],
    ids=["not-json", "content-number", "list", "message-string"],
)
async def test_malformed_body_is_an_upstream_server_error(
    fake: FakeOllama, backend: OllamaBackend, body: object, event: object
) -> None:
    """A 200 body or NDJSON line that is not Ollama's is UpstreamServerError."""
    fake.script(Garbled(body=body), Garbled(event=event, after=0))
    with pytest.raises(UpstreamServerError, match="malformed reply from ollama"):
        await backend.complete(ask())
    with pytest.raises(UpstreamServerError, match="malformed reply from ollama"):
        await collect(backend, ask())


async def test_a_unicode_line_break_inside_a_line_is_text(
    fake: FakeOllama, backend: OllamaBackend
) -> None:
    """U+0085 and U+2028 inside streamed text stay text: only a newline ends an NDJSON line."""
    fake.script(Reply(chunks=("a\x85b", "c\u2028d")))
    items = await collect(backend, ask())
    assert items[:2] == [TextDelta("a\x85b"), TextDelta("c\u2028d")]


@pytest.mark.parametrize(
    ("listing", "available", "models"),
    [
        (Raw("not json"), False, ("configured:1b",)),
        ([1, 2], False, ("configured:1b",)),
        (
            {"models": [{"name": {"x": 1}}, 7, {"model": "only:model"}]},
            True,
            ("only:model", "configured:1b"),
        ),
    ],
    ids=["not-json", "list", "odd-entries"],
)
async def test_check_survives_a_malformed_tags_listing(
    fake: FakeOllama,
    backend: OllamaBackend,
    listing: object,
    available: bool,
    models: tuple[str, ...],
) -> None:
    """A tags listing that is not one is a failed check, never an exception; odd entries are skipped."""
    fake.models_body = listing
    status = await backend.check()
    assert status.available is available
    assert status.models == models
