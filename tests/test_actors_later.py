"""
Answering later: ``actors.Later`` and the ``immediate`` messages that ``handle_now`` answers.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

import actors


class Deferring(actors.Actor):
    """
    Answers ints later (handle_now), strings at once (handle); ``release`` resolves them all.

    ``"crash"`` crashes it from handle_now, ``"refuse"`` raises one of its errors, and
    ``"stop"`` asks for an orderly stop.
    """

    max_concurrency = 2
    immediate = (int, tuple)
    errors = (LookupError,)

    def __init__(self, log: dict[str, Any]) -> None:
        self.log = log
        self.waiting: list[tuple[int, actors.Later]] = []
        log["instance"] = self
        log.setdefault("now_tasks", [])
        log.setdefault("handle_tasks", [])

    def handle_now(self, message: Any) -> Any:
        self.log["now_tasks"].append(trio.lowlevel.current_task())
        if isinstance(message, tuple):  # (what, value)
            what, value = message
            if what == "crash":
                raise RuntimeError("boom")
            if what == "refuse":
                raise LookupError(value)
            if what == "early":  # resolved before the handler returns
                later = actors.Later()
                later.resolve(value)
                return later
            return value
        later = actors.Later()
        self.waiting.append((message, later))
        return later

    async def handle(self, message: Any) -> Any:
        self.log["handle_tasks"].append(trio.lowlevel.current_task())
        if message == "stop":
            self.request_stop()
            return "stopping"
        if isinstance(message, int):  # while a fault is injected
            return self.handle_now(message)
        return message

    def release(self) -> None:
        batch, self.waiting = self.waiting, []
        for number, later in batch:
            later.resolve(number * 2)

    async def stopping(self) -> None:
        self.log["stopped_with_waiting"] = len(self.waiting)


async def test_an_immediate_message_is_answered_later_in_the_serving_loop_without_a_task() -> None:
    """handle_now runs in the serving loop's own task; the ask ends when its Later is resolved."""
    log: dict[str, Any] = {}
    async with actors.open_system() as system:
        ref = await system.spawn(Deferring, name="d", args=(log,))
        answers: list[int] = []

        async def ask(n: int) -> None:
            answers.append(await ref.ask(n))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, 1)
            nursery.start_soon(ask, 2)
            await trio.testing.wait_all_tasks_blocked()
            assert answers == []
            assert ref.stats().handled == 0
            log["instance"].release()
        assert sorted(answers) == [2, 4]
        assert ref.stats().handled == 2
        assert await ref.ask(("value", 7)) == 7
        assert await ref.ask(("early", 8)) == 8
        assert await ref.ask("text") == "text"
    # Every immediate message ran in one task (the loop's); handle ran in another.
    assert len(set(log["now_tasks"])) == 1
    assert log["handle_tasks"][0] not in log["now_tasks"]


async def test_a_pending_later_counts_against_max_concurrency(autojump_clock: Any) -> None:
    """With two Laters pending (max_concurrency 2), a third message waits until one is resolved."""
    log: dict[str, Any] = {}
    async with actors.open_system() as system:
        ref = await system.spawn(Deferring, name="d", args=(log,))
        answers: dict[int, int] = {}

        async def ask(n: int) -> None:
            answers[n] = await ref.ask(n, timeout=60)

        async with trio.open_nursery() as nursery:
            for n in (1, 2, 3):
                nursery.start_soon(ask, n)
                await trio.testing.wait_all_tasks_blocked()
            instance = log["instance"]
            assert [n for n, _ in instance.waiting] == [1, 2]
            instance.release()
            await trio.testing.wait_all_tasks_blocked()
            assert [n for n, _ in instance.waiting] == [3]
            instance.release()
        assert answers == {1: 2, 2: 4, 3: 6}


async def test_a_crash_fails_the_pending_laters_and_their_late_answers_are_ignored() -> None:
    """Laters pending when the actor crashes: their asks raise ActorDied; resolving them later does nothing."""
    log: dict[str, Any] = {}
    async with actors.open_system() as system:
        ref = await system.spawn(Deferring, name="d", args=(log,))
        outcomes: dict[Any, Any] = {}

        async def ask(message: Any) -> None:
            try:
                outcomes[message] = await ref.ask(message)
            except actors.ActorError as exc:
                outcomes[message] = (type(exc), type(exc.__cause__))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, 1)
            await trio.testing.wait_all_tasks_blocked()
            old = log["instance"]
            nursery.start_soon(ask, ("crash", None))
        assert outcomes[1] == (actors.ActorDied, RuntimeError)
        assert outcomes[("crash", None)] == (actors.PoisonMessage, RuntimeError)
        handled = ref.stats().handled
        old.release()  # the old incarnation's Later: ignored
        assert ref.stats().handled == handled
        assert log["instance"] is not old
        assert await ref.ask(("value", 5)) == 5


async def test_an_orderly_stop_waits_for_pending_laters_before_stopping(
    autojump_clock: Any,
) -> None:
    """A stop asked for while a Later is pending answers it first, then runs stopping()."""
    log: dict[str, Any] = {}
    async with actors.open_system() as system:
        ref = await system.spawn(Deferring, name="d", args=(log,), restart="temporary")
        answers: list[int] = []

        async def ask(n: int) -> None:
            answers.append(await ref.ask(n, timeout=60))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, 1)
            await trio.testing.wait_all_tasks_blocked()
            assert await ref.ask("stop") == "stopping"
            await trio.sleep(10)
            assert ref.alive  # still waiting for its Later
            assert "stopped_with_waiting" not in log
            log["instance"].release()
        await trio.testing.wait_all_tasks_blocked()
        assert answers == [2]
        assert log["stopped_with_waiting"] == 0
        assert not ref.alive


async def test_handle_now_errors_are_answers_and_other_exceptions_crash() -> None:
    """A listed error from handle_now answers its ask; another crashes, and the message is redelivered."""
    log: dict[str, Any] = {}
    async with actors.open_system() as system:
        ref = await system.spawn(Deferring, name="d", args=(log,))
        with pytest.raises(LookupError, match="no such thing"):
            await ref.ask(("refuse", "no such thing"))
        assert ref.stats().restarts == 0
        with pytest.raises(actors.PoisonMessage):
            await ref.ask(("crash", None))
        assert ref.stats().restarts == 2
        assert await ref.ask(("value", 1)) == 1


async def test_under_an_injected_fault_immediate_messages_go_to_handle(
    autojump_clock: Any,
) -> None:
    """While a fault is injected, handle gets the immediate messages, and its Later still answers."""
    log: dict[str, Any] = {}
    async with actors.open_system() as system:
        ref = await system.spawn(Deferring, name="d", args=(log,))
        system.faults.slow("d", 1.0)
        answers: list[int] = []

        async def ask(n: int) -> None:
            answers.append(await ref.ask(n, timeout=60))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, 21)
            await trio.sleep(2)
            assert len(log["handle_tasks"]) == 1
            log["instance"].release()
        assert answers == [42]
        assert ref.stats().handled == 1


async def test_a_later_from_an_inline_actor_crashes_it() -> None:
    """A Later needs max_concurrency > 1: an inline actor returning one breaks its invariant."""

    class Inline(actors.Actor):
        async def handle(self, message: Any) -> Any:
            return actors.Later()

    async with actors.open_system() as system:
        ref = await system.spawn(Inline, name="inline")
        with pytest.raises(actors.PoisonMessage) as info:
            await ref.ask("x")
        assert isinstance(info.value.__cause__, actors.InvariantBroken)


def test_a_later_answers_once_and_one_message_only() -> None:
    """Only the first of resolve and fail counts; settled says whether either was called."""
    later = actors.Later()
    assert not later.settled
    later.resolve(1)
    later.fail(RuntimeError("too late"))
    later.resolve(2)
    assert later.settled
