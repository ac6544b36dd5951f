"""The simulated provider: deterministic, useful replies with real token counts."""

from __future__ import annotations

import pytest

from rhetor._errors import BadRequest
from rhetor._types import ChatMessage, ProviderRequest, StreamEnd, TextDelta
from rhetor.providers._simulated import SimulatedBackend


def request(*contents: str, model: str = "simulated-echo", **kw: object) -> ProviderRequest:
    roles = ["user", "assistant"]
    msgs = tuple(ChatMessage(roles[i % 2], c) for i, c in enumerate(contents))  # type: ignore[arg-type]
    return ProviderRequest(model=model, messages=msgs, **kw)  # type: ignore[arg-type]


async def test_echo_reply_is_deterministic_and_counts_tokens() -> None:
    """The same prompt gives the same reply, with non-zero input and output token counts."""
    backend = SimulatedBackend()
    first = await backend.complete(request("Write a haiku"))
    second = await backend.complete(request("Write a haiku"))
    assert first == second
    assert "Write a haiku" in first.text
    assert first.usage.input_tokens > 0 and first.usage.output_tokens > 0


async def test_reply_says_how_much_history_it_saw() -> None:
    """Earlier turns are visible to the model, which makes context handling testable."""
    reply = await SimulatedBackend().complete(request("a", "b", "c"))
    assert "2 earlier messages" in reply.text


async def test_summary_model_summarises() -> None:
    """The summary model condenses the conversation."""
    reply = await SimulatedBackend().complete(
        request("One. Two. Three. Four. Five.", model="simulated-summary")
    )
    assert reply.text.startswith("Summary (5 sentences")


async def test_stream_yields_deltas_then_one_end_matching_complete() -> None:
    """Streamed deltas join to the plain reply, and exactly one StreamEnd closes the stream."""
    backend = SimulatedBackend()
    items = [item async for item in backend.stream(request("stream me please"))]
    assert isinstance(items[-1], StreamEnd)
    text = "".join(i.text for i in items if isinstance(i, TextDelta))
    plain = await backend.complete(request("stream me please"))
    assert text == plain.text and items[-1].usage == plain.usage


async def test_max_tokens_truncates_the_reply() -> None:
    """max_tokens bounds the output token count."""
    reply = await SimulatedBackend().complete(request("word " * 50, max_tokens=5))
    assert 0 < reply.usage.output_tokens <= 5


async def test_chunk_delay_spaces_chunks_in_time(autojump_clock: object) -> None:
    """The per-chunk delay applies to every chunk (on the mock clock)."""
    import trio

    backend = SimulatedBackend(chunk_delay=0.5)
    start = trio.current_time()
    items = [i async for i in backend.stream(request("one two three"))]
    count = sum(1 for i in items if isinstance(i, TextDelta))
    assert trio.current_time() - start == pytest.approx(0.5 * count)


async def test_unknown_model_is_a_bad_request() -> None:
    """Asking the simulator for a model it does not serve is a typed BadRequest."""
    with pytest.raises(BadRequest):
        await SimulatedBackend().complete(request("hi", model="gpt-4"))
