"""
ProviderActor with backends that misbehave: it answers each request's error and never crashes.

The built-in backends check their upstream's replies themselves; these backends are
the kind ``runtime.start(backends=...)`` accepts from outside, scripted to hand the
actor what no built-in one would.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest

import actors
from rhetor._errors import UpstreamServerError
from rhetor._types import (
    ChatMessage,
    ProviderReply,
    ProviderRequest,
    ProviderStatus,
    StreamEnd,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from rhetor.providers._actor import (
    CheckHealth,
    Complete,
    GetStatus,
    ProviderActor,
    StreamCompletion,
)

REQUEST = ProviderRequest("m", (ChatMessage("user", "Hi"),))


@attrs.define(eq=False)
class Misbehaving:
    """
    A backend whose check, reply and stream end are whatever the test sets.
    """

    name: str = "odd"
    status: Any = attrs.Factory(lambda: ProviderStatus("odd", True, ("m",)))
    check_raises: BaseException | None = None
    reply: Any = attrs.Factory(lambda: ProviderReply("fine", "m", Usage(1, 2)))
    items: list[Any] = attrs.Factory(lambda: [TextDelta("fi"), StreamEnd(Usage(1, 2))])

    async def check(self) -> ProviderStatus:
        if self.check_raises is not None:
            raise self.check_raises
        status: ProviderStatus = self.status
        return status

    async def complete(self, request: ProviderRequest) -> ProviderReply:
        reply: ProviderReply = self.reply
        return reply

    async def stream(self, request: ProviderRequest) -> AsyncIterator[TextDelta | StreamEnd]:
        for item in self.items:
            yield item

    async def aclose(self) -> None:
        return None


async def spawned(system: actors.System, backend: Misbehaving) -> actors.Ref:
    return await system.spawn(lambda: ProviderActor(lambda: backend, health_interval=0), name="p")


async def streamed(ref: actors.Ref) -> list[Any]:
    async with ref.stream(StreamCompletion(REQUEST)) as items:
        return [item async for item in items]


@pytest.mark.parametrize(
    ("usage", "billed"),
    [
        (Usage(-1_000_000, 5), Usage(0, 5)),
        (Usage("abc", 3), Usage(0, 3)),  # type: ignore[arg-type]
        (Usage(True, 3), Usage(0, 3)),  # type: ignore[arg-type]
        (None, Usage(0, 0)),
    ],
    ids=["negative", "string", "bool", "none"],
)
async def test_usage_that_is_not_counts_is_billed_as_unknown(usage: Any, billed: Usage) -> None:
    """A reply or stream end whose counts are not non-negative ints is marked invalid, never credited."""
    backend = Misbehaving(
        reply=ProviderReply("text", "m", usage), items=[TextDelta("t"), StreamEnd(usage)]
    )
    async with actors.open_system() as system:
        ref = await spawned(system, backend)
        reply = await ref.ask(Complete(REQUEST))
        items = await streamed(ref)
        assert ref.stats().restarts == 0
    assert (reply.text, reply.usage, reply.usage_valid) == ("text", billed, False)
    assert items == [TextDelta("t"), StreamEnd(billed, usage_valid=False)]


async def test_fractional_counts_are_rounded_and_stay_valid() -> None:
    """12.7 tokens bill as 13, never as a fractional count and never as unknown usage."""
    backend = Misbehaving(
        reply=ProviderReply("text", "m", Usage(12.7, 3)),  # type: ignore[arg-type]
        items=[TextDelta("t"), StreamEnd(Usage(12.7, 3))],  # type: ignore[arg-type]
    )
    async with actors.open_system() as system:
        ref = await spawned(system, backend)
        reply = await ref.ask(Complete(REQUEST))
        items = await streamed(ref)
    assert (reply.usage, reply.usage_valid) == (Usage(13, 3), True)
    assert type(reply.usage.input_tokens) is int
    assert items[-1] == StreamEnd(Usage(13, 3))


async def test_a_rebuilt_usage_keeps_its_cache_writes_within_the_input() -> None:
    """Rounding a count keeps the cache writes (billed at their own rates), never above the input."""
    odd = Usage(12.7, 3, cache_write_tokens=40, cache_write_1h_tokens=50)  # type: ignore[arg-type]
    backend = Misbehaving(
        reply=ProviderReply("text", "m", odd), items=[TextDelta("t"), StreamEnd(odd)]
    )
    async with actors.open_system() as system:
        ref = await spawned(system, backend)
        reply = await ref.ask(Complete(REQUEST))
    assert (reply.usage, reply.usage_valid) == (
        Usage(13, 3, cache_write_tokens=13, cache_write_1h_tokens=13),
        True,
    )


async def test_valid_usage_passes_untouched() -> None:
    """Well-formed counts reach the router as they came, marked valid."""
    async with actors.open_system() as system:
        ref = await spawned(system, Misbehaving())
        reply = await ref.ask(Complete(REQUEST))
        items = await streamed(ref)
    assert reply == ProviderReply("fine", "m", Usage(1, 2))
    assert items == [TextDelta("fi"), StreamEnd(Usage(1, 2))]


async def test_lone_surrogates_in_reply_text_become_replacement_characters() -> None:
    """Text an upstream escaped into a lone surrogate reaches the router as U+FFFD, storable and sendable."""
    backend = Misbehaving(
        reply=ProviderReply("a\ud800b \U0001f600", "m", Usage(1, 2)),
        items=[TextDelta("x\udfffy"), TextDelta("ok"), StreamEnd(Usage(1, 2))],
    )
    async with actors.open_system() as system:
        ref = await spawned(system, backend)
        reply = await ref.ask(Complete(REQUEST))
        items = await streamed(ref)
    assert reply.text == "a\ufffdb \U0001f600"
    assert items[:2] == [TextDelta("x\ufffdy"), TextDelta("ok")]
    reply.text.encode("utf-8")


@pytest.mark.parametrize(
    "answer",
    [
        None,
        "text",
        ProviderReply(b"bytes", "m", Usage(1, 1)),  # type: ignore[arg-type]
        ProviderReply("text", None, Usage(1, 1)),  # type: ignore[arg-type]
    ],
    ids=["none", "string", "bytes-text", "no-model"],
)
async def test_a_reply_of_the_wrong_shape_is_that_requests_error(answer: Any) -> None:
    """A backend answer that is no reply fails that request with UpstreamServerError; the actor serves on."""
    backend = Misbehaving(reply=answer, items=[TextDelta("ok"), answer])
    async with actors.open_system() as system:
        ref = await spawned(system, backend)
        with pytest.raises(UpstreamServerError, match="malformed reply from odd"):
            await ref.ask(Complete(REQUEST))
        with pytest.raises(UpstreamServerError, match="malformed reply from odd"):
            await streamed(ref)
        backend.reply = ProviderReply("again", "m", Usage(1, 1))
        assert (await ref.ask(Complete(REQUEST))).text == "again"
        assert ref.stats().restarts == 0


@pytest.mark.parametrize(
    ("reply", "delta"),
    [
        (ProviderReply("t", "m", Usage(1, 1), tool_calls=[ToolCall("a", "f")]), ToolCallDelta(-1)),  # type: ignore[arg-type]
        (ProviderReply("t", "m", Usage(1, 1), tool_calls=("call",)), ToolCallDelta(True)),  # type: ignore[arg-type]
        (
            ProviderReply("t", "m", Usage(1, 1), tool_calls=(ToolCall("a", "f", None),)),  # type: ignore[arg-type]
            ToolCallDelta(0, 5),  # type: ignore[arg-type]
        ),
    ],
    ids=["calls-not-a-tuple", "call-not-a-call", "arguments-none"],
)
async def test_tool_calls_of_the_wrong_shape_are_that_requests_error(
    reply: Any, delta: Any
) -> None:
    """A backend's malformed tool calls or deltas fail that request with UpstreamServerError."""
    backend = Misbehaving(reply=reply, items=[delta, StreamEnd(Usage(1, 1))])
    async with actors.open_system() as system:
        ref = await spawned(system, backend)
        with pytest.raises(UpstreamServerError, match="malformed reply from odd"):
            await ref.ask(Complete(REQUEST))
        with pytest.raises(UpstreamServerError, match="malformed reply from odd"):
            await streamed(ref)
        assert ref.stats().restarts == 0


async def test_tool_calls_and_usage_details_pass_checked_and_mended() -> None:
    """Well-formed calls pass; lone surrogates in them are mended; cached tokens over the input are clamped."""
    call = ToolCall("a", "f", '{"q":"\ud800"}')
    backend = Misbehaving(
        reply=ProviderReply("", "m", Usage(10, 5, 64, 2), tool_calls=(call,)),
        items=[ToolCallDelta(0, "a", "f", "\udfff"), StreamEnd(Usage(10, 5, 3, 9))],
    )
    async with actors.open_system() as system:
        ref = await spawned(system, backend)
        reply = await ref.ask(Complete(REQUEST))
        items = await streamed(ref)
    assert reply.tool_calls == (ToolCall("a", "f", '{"q":"\ufffd"}'),)
    assert (reply.usage, reply.usage_valid) == (Usage(10, 5, 10, 2), True)
    assert items == [ToolCallDelta(0, "a", "f", "\ufffd"), StreamEnd(Usage(10, 5, 3, 5))]


@pytest.mark.parametrize(
    ("backend", "reason"),
    [
        (Misbehaving(check_raises=KeyError("models")), "health check failed: KeyError"),
        (
            Misbehaving(check_raises=OSError("Authorization: Bearer abcdefgh")),
            "health check failed: OSError('Authorization: [redacted]')",
        ),
        (Misbehaving(status=["not", "a", "status"]), "health check answered no status"),
        (Misbehaving(status=ProviderStatus("odd", True, ({"id": 1},))), "answered no status"),  # type: ignore[arg-type]
    ],
    ids=["raises", "raises-with-key", "not-a-status", "models-not-names"],
)
async def test_a_failing_health_check_marks_the_provider_unavailable(
    backend: Misbehaving, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A check() that raises or answers nonsense is logged and reads as unavailable, at start and later."""
    async with actors.open_system() as system:
        ref = await spawned(system, backend)
        at_start = await ref.ask(GetStatus())
        probed = await ref.ask(CheckHealth())
        assert ref.alive and ref.stats().restarts == 0
    for status in (at_start, probed):
        assert (status.name, status.available) == ("odd", False)
        assert reason in status.reason
    assert any(r.levelno >= logging.ERROR for r in caplog.records)
