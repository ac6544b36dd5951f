"""
Containment: a handler's failure on one message fails that message alone.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any, ClassVar

import pytest
import trio
import trio.testing

import actors


async def collect(stream: AbstractAsyncContextManager[AsyncIterator[Any]], got: list[Any]) -> None:
    """Read a whole stream into ``got``."""
    async with stream as items:
        async for item in items:
            got.append(item)


class Tally(actors.Actor):
    """Adds numbers to a running total; "bug" raises ValueError, other kinds as named."""

    contained: ClassVar[tuple[type[Exception], ...]] = (ValueError,)

    def __init__(self) -> None:
        self.total = 0

    async def handle(self, message: Any) -> Any:
        if message == "bug":
            raise ValueError("a bug met while handling this message")
        if message == "keyerror":
            raise KeyError("not contained")
        if message == "invariant":
            raise actors.InvariantBroken("the total is wrong", name=self.name)
        if message == "assert":
            raise AssertionError("the total is wrong")
        if message == "group":
            raise ExceptionGroup("two bugs", [ValueError("one"), ValueError("two")])
        if message == "group with invariant":
            raise ExceptionGroup("mixed", [ValueError("one"), actors.InvariantBroken("two")])
        if message == "total?":
            return self.total
        self.total += message
        return self.total


class ContainsEverything(actors.Actor):
    """Contains every Exception; used to show what is never contained."""

    contained: ClassVar[tuple[type[Exception], ...]] = (Exception,)

    async def handle(self, message: Any) -> Any:
        if isinstance(message, BaseException):
            raise message
        return message


async def test_a_contained_failure_answers_handler_failed_and_the_actor_keeps_its_state() -> None:
    """The asker gets HandlerFailed (cause and type kept); the actor keeps running with its state."""
    async with actors.open_system() as system:
        ref = await system.spawn(Tally, name="tally")
        assert await ref.ask(5) == 5
        with pytest.raises(actors.HandlerFailed) as info:
            await ref.ask("bug")
        assert info.value.name == "tally"
        assert info.value.boxed_type is ValueError
        assert isinstance(info.value.__cause__, ValueError)
        assert info.value.__cause__.__traceback__ is not None
        assert "ValueError" in str(info.value)
        assert await ref.ask(2) == 7
        stats = ref.stats()
        assert (stats.restarts, stats.failed, stats.handled) == (0, 1, 3)


async def test_a_contained_failure_is_logged_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The failure is logged on the "actors" logger, naming the actor and message type, with the traceback."""
    caplog.set_level(logging.ERROR, logger="actors")
    async with actors.open_system() as system:
        ref = await system.spawn(Tally, name="tally")
        with pytest.raises(actors.HandlerFailed):
            await ref.ask("bug")
    [record] = [r for r in caplog.records if r.name == "actors"]
    assert record.levelno == logging.ERROR
    assert "tally" in record.getMessage() and "str" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[0] is ValueError
    assert "a bug met while handling" in caplog.text  # the traceback's last line


async def test_a_contained_failure_emits_a_failed_event_and_no_crash(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A "failed" event carries the cause; nothing crashes or restarts."""
    seen: list[actors.LifecycleEvent] = []
    async with actors.open_system() as system, system.events() as events:
        ref = await system.spawn(Tally, name="tally")
        with pytest.raises(actors.HandlerFailed):
            await ref.ask("bug")
        assert await ref.ask(1) == 1
        with trio.move_on_after(1):
            async for event in events:
                seen.append(event)
    assert [(event.kind, event.name) for event in seen] == [
        ("started", "tally"),
        ("failed", "tally"),
    ]
    assert isinstance(seen[1].cause, ValueError)


async def test_a_type_not_contained_still_crashes_the_actor() -> None:
    """An exception outside ``contained`` crashes as before: redelivered once, then poison."""
    async with actors.open_system() as system:
        ref = await system.spawn(Tally, name="tally")
        with pytest.raises(actors.PoisonMessage) as info:
            await ref.ask("keyerror")
        assert isinstance(info.value.__cause__, KeyError)
        assert (ref.stats().restarts, ref.stats().failed) == (2, 0)


@pytest.mark.parametrize(
    "breach",
    [
        actors.InvariantBroken("the ledger total went negative"),
        AssertionError("the ledger total went negative"),
        actors.InjectedCrash("on purpose"),
    ],
    ids=["InvariantBroken", "AssertionError", "InjectedCrash"],
)
async def test_invariant_breaks_crash_even_an_actor_that_contains_everything(
    breach: Exception,
) -> None:
    """InvariantBroken, AssertionError and InjectedCrash are never contained: the actor restarts."""
    async with actors.open_system() as system:
        ref = await system.spawn(ContainsEverything, name="strict", restart="temporary")
        with pytest.raises(actors.ActorDied) as info:
            await ref.ask(breach)
        assert info.value.__cause__ is breach
        assert ref.stats().failed == 0


async def test_invariant_broken_in_an_actor_with_narrow_containment_crashes() -> None:
    """An actor raises InvariantBroken (or asserts) to say its state is broken: restart me."""
    async with actors.open_system() as system:
        ref = await system.spawn(Tally, name="tally")
        for breach in ("invariant", "assert"):
            with pytest.raises(actors.PoisonMessage):
                await ref.ask(breach)
        assert ref.stats().restarts == 4


async def test_crash_next_default_crashes_and_crash_next_with_a_contained_type_fails_one_message() -> (
    None
):
    """Fault injection: the default InjectedCrash restarts the actor; a contained exception fails one ask."""
    async with actors.open_system() as system:
        ref = await system.spawn(ContainsEverything, name="echo")
        system.faults.crash_next("echo")
        assert await ref.ask("redelivered") == "redelivered"
        assert ref.stats().restarts == 1
        system.faults.crash_next("echo", RuntimeError("injected bug"))
        with pytest.raises(actors.HandlerFailed) as info:
            await ref.ask("fails")
        assert info.value.boxed_type is RuntimeError
        assert await ref.ask("next") == "next"
        assert (ref.stats().restarts, ref.stats().failed) == (1, 1)


async def test_an_exception_group_is_contained_only_if_every_member_is() -> None:
    """A group of contained errors fails one message; a group holding an invariant break crashes."""
    async with actors.open_system() as system:
        ref = await system.spawn(Tally, name="tally", restart="temporary")
        with pytest.raises(actors.HandlerFailed) as info:
            await ref.ask("group")
        assert info.value.boxed_type is ExceptionGroup
        with pytest.raises(actors.ActorDied):
            await ref.ask("group with invariant")


async def test_errors_are_answered_as_they_are_before_containment() -> None:
    """A type in both ``errors`` and ``contained`` reaches the asker as itself."""

    class Both(actors.Actor):
        errors: ClassVar[tuple[type[BaseException], ...]] = (KeyError,)
        contained: ClassVar[tuple[type[Exception], ...]] = (Exception,)

        async def handle(self, message: Any) -> Any:
            raise KeyError(message)

    async with actors.open_system() as system:
        ref = await system.spawn(Both, name="both")
        with pytest.raises(KeyError):
            await ref.ask("k")
        assert ref.stats().failed == 0


async def test_a_contained_failure_of_a_tell_is_counted_and_the_actor_goes_on() -> None:
    """A told message that fails is logged and counted; nobody waits, the actor keeps its state."""
    async with actors.open_system() as system, system.events() as events:
        ref = await system.spawn(Tally, name="tally")
        await ref.tell(3)
        await ref.tell("bug")
        await ref.tell(4)
        assert await ref.ask("total?") == 7
        assert [(await events.__anext__()).kind for _ in range(2)] == ["started", "failed"]
        assert (ref.stats().failed, ref.stats().restarts) == (1, 0)


async def test_in_a_concurrent_actor_one_failure_leaves_the_others_in_flight(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With 20 asks in flight, the one that fails gets HandlerFailed and the other 20 their answers."""

    class Worker(actors.Actor):
        max_concurrency: ClassVar[int] = 64
        contained: ClassVar[tuple[type[Exception], ...]] = (Exception,)

        async def handle(self, message: Any) -> Any:
            await trio.sleep(1)
            if message == "bug":
                raise ZeroDivisionError("bug")
            return message * 2

    answers: dict[int, int] = {}
    async with actors.open_system() as system:
        ref = await system.spawn(Worker, name="worker")

        async def one(i: int) -> None:
            answers[i] = await ref.ask(i)

        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(one, i)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(actors.HandlerFailed) as info:
                await ref.ask("bug")
        assert info.value.boxed_type is ZeroDivisionError
        assert answers == {i: i * 2 for i in range(20)}
        stats = ref.stats()
        assert (stats.restarts, stats.failed, stats.handled) == (0, 1, 21)


async def test_a_stream_that_fails_raises_handler_failed_in_the_reader_after_its_items() -> None:
    """A stream's failure, before or after items, reaches only its reader; the actor streams on."""

    class Counter(actors.Actor):
        contained: ClassVar[tuple[type[Exception], ...]] = (Exception,)

        async def handle_stream(self, message: Any) -> AsyncIterator[int]:
            for i in range(message["upto"]):
                if i == message["fail_at"]:
                    raise LookupError(f"bug at {i}")
                yield i

    async with actors.open_system() as system:
        ref = await system.spawn(Counter, name="counter")
        for fail_at in (0, 2):
            got: list[int] = []
            with pytest.raises(actors.HandlerFailed) as info:
                await collect(ref.stream({"upto": 5, "fail_at": fail_at}), got)
            assert got == list(range(fail_at))
            assert info.value.boxed_type is LookupError
        async with ref.stream({"upto": 3, "fail_at": None}) as items:
            assert [item async for item in items] == [0, 1, 2]
        assert (ref.stats().failed, ref.stats().restarts) == (2, 0)


async def test_cancellation_is_never_contained(autojump_clock: trio.testing.MockClock) -> None:
    """An ask that times out cancels its handler; that is no failure, and no event says so."""

    class Sleeper(actors.Actor):
        contained: ClassVar[tuple[type[Exception], ...]] = (Exception,)

        async def handle(self, message: Any) -> Any:
            await trio.sleep(message)
            return message

    async with actors.open_system() as system:
        ref = await system.spawn(Sleeper, name="sleeper")
        with pytest.raises(actors.AskTimeout):
            await ref.ask(10, timeout=1)
        assert await ref.ask(0) == 0
        assert (ref.stats().failed, ref.stats().restarts) == (0, 0)


@pytest.mark.parametrize("kind", [BaseException, KeyboardInterrupt, trio.Cancelled])
async def test_containing_a_base_exception_is_refused(kind: type[BaseException]) -> None:
    """``contained`` takes only Exception subclasses: cancellation must always propagate."""

    class Reckless(actors.Actor):
        contained = (kind,)  # type: ignore[assignment]

    async with actors.open_system() as system:
        with pytest.raises(actors.StartFailed) as info:
            await system.spawn(Reckless, name="reckless")
        assert isinstance(info.value.__cause__, actors.InvalidSpec)


def test_containment_works_on_the_asyncio_backend() -> None:
    """Without trio's fast path (asyncio), inline and concurrent actors contain failures alike."""
    import anyio

    class Concurrent(Tally):
        max_concurrency: ClassVar[int] = 8

    async def main() -> None:
        async with actors.open_system() as system:
            for name, kind in (("inline", Tally), ("concurrent", Concurrent)):
                ref = await system.spawn(kind, name=name)
                assert await ref.ask(2) == 2
                with pytest.raises(actors.HandlerFailed):
                    await ref.ask("bug")
                assert await ref.ask(3) == 5
                assert (ref.stats().failed, ref.stats().restarts) == (1, 0)

    anyio.run(main, backend="asyncio")
