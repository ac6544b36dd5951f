"""
Actors and refs: tell, ask, deadlines, streams, death, cancellation.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
import trio
import trio.testing

import actors


class Echo(actors.Actor):
    async def handle(self, message: Any) -> Any:
        return message


class Recorder(actors.Actor):
    """Remembers every told message; an ask returns the list."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    async def handle(self, message: Any) -> Any:
        if message == "seen?":
            return list(self.seen)
        self.seen.append(message)
        return None


class Crashy(actors.Actor):
    """Crashes on "crash" (and counts its incarnations in a shared list)."""

    def __init__(self, births: list[int] | None = None) -> None:
        if births is not None:
            births.append(1)

    async def handle(self, message: Any) -> Any:
        if message == "crash":
            raise RuntimeError("boom")
        return message


class Sleepy(actors.Actor):
    """Sleeps as long as asked; records whether the sleep was cancelled."""

    cancelled: list[str]

    def __init__(self, cancelled: list[str]) -> None:
        self.cancelled = cancelled

    async def handle(self, message: Any) -> Any:
        try:
            await trio.sleep(message)
        except trio.Cancelled:
            self.cancelled.append(f"slept {message}")
            raise
        return message


async def collect(stream: AbstractAsyncContextManager[AsyncIterator[Any]], got: list[Any]) -> None:
    """Read a whole stream into ``got``."""
    async with stream as items:
        async for item in items:
            got.append(item)


def all_tasks() -> set[trio.lowlevel.Task]:
    """Every task in the run, found by walking from the root task."""
    found: set[trio.lowlevel.Task] = set()
    todo = [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        if task is None or task in found:
            continue
        found.add(task)
        for nursery in task.child_nurseries:
            todo.extend(nursery.child_tasks)
    return found


async def test_issue_example_runs_unchanged() -> None:
    """The example from the issue: spawn, ask, tell."""
    async with actors.open_system() as system:
        ref = await system.spawn(Echo, name="echo")
        assert await ref.ask("hi") == "hi"
        await ref.tell("fire and forget")


async def test_tells_are_handled_in_order() -> None:
    """Messages told one after another are handled in the order sent."""
    async with actors.open_system() as system:
        ref = await system.spawn(Recorder, name="rec")
        for i in range(100):
            await ref.tell(i)
        assert await ref.ask("seen?") == list(range(100))
        assert ref.stats().handled == 101


async def test_ref_can_be_looked_up_by_name() -> None:
    """system.ref finds a spawned actor; an unknown name raises NoSuchActor."""
    async with actors.open_system() as system:
        ref = await system.spawn(Echo, name="echo")
        assert system.ref("echo") is ref
        with pytest.raises(actors.NoSuchActor):
            system.ref("nobody")


async def test_spawning_a_duplicate_name_raises() -> None:
    """A second actor with a taken name raises DuplicateName."""
    async with actors.open_system() as system:
        await system.spawn(Echo, name="echo")
        with pytest.raises(actors.DuplicateName):
            await system.spawn(Echo, name="echo")


async def test_ask_times_out_after_five_seconds_by_default(autojump_clock: Any) -> None:
    """An unanswered ask raises AskTimeout (a TimeoutError) after its 5 s default."""
    async with actors.open_system() as system:
        ref = await system.spawn(Sleepy, name="sleepy", args=([],))
        start = trio.current_time()
        with pytest.raises(TimeoutError) as info:
            await ref.ask(60)
        assert isinstance(info.value, actors.AskTimeout)
        assert trio.current_time() - start == pytest.approx(5.0)


async def test_ask_deadline_cancels_the_handler(autojump_clock: Any) -> None:
    """When an ask's deadline passes, the handler working on it is cancelled."""
    cancelled: list[str] = []
    async with actors.open_system() as system:
        ref = await system.spawn(Sleepy, name="sleepy", args=(cancelled,))
        with pytest.raises(actors.AskTimeout):
            await ref.ask(10, timeout=1)
        await trio.testing.wait_all_tasks_blocked()
        assert cancelled == ["slept 10"]
        assert await ref.ask(0.5) == 0.5


async def test_late_reply_is_dropped_not_given_to_the_next_ask(autojump_clock: Any) -> None:
    """A reply after the deadline is discarded; the next ask gets its own answer."""

    class Stubborn(actors.Actor):
        async def handle(self, message: Any) -> Any:
            if message == "late":
                with trio.CancelScope(shield=True):
                    await trio.sleep(10)
            return message

    async with actors.open_system() as system:
        ref = await system.spawn(Stubborn, name="stubborn")
        with pytest.raises(actors.AskTimeout):
            await ref.ask("late", timeout=1)
        assert await ref.ask("next", timeout=20) == "next"


@pytest.mark.parametrize("timeout", [-1, -0.001, math.nan, "soon"])
async def test_ask_with_a_bad_deadline_raises_invalid_spec(timeout: Any) -> None:
    """A negative, NaN or non-numeric deadline raises InvalidSpec (a ValueError)."""
    async with actors.open_system() as system:
        ref = await system.spawn(Echo, name="echo")
        with pytest.raises(actors.InvalidSpec):
            await ref.ask("hi", timeout=timeout)
        with pytest.raises(ValueError, match="timeout"):
            ref.stream("hi", timeout=timeout)


async def test_listed_errors_are_answers_with_their_own_type() -> None:
    """An exception in Actor.errors reaches the asker as is; the actor lives on."""

    class Picky(actors.Actor):
        errors = (KeyError,)

        async def handle(self, message: Any) -> Any:
            raise KeyError(message)

    async with actors.open_system() as system:
        ref = await system.spawn(Picky, name="picky")
        with pytest.raises(KeyError, match="nope"):
            await ref.ask("nope")
        assert ref.alive
        assert ref.stats().restarts == 0


async def test_caller_fails_at_once_when_callee_dies_mid_ask(autojump_clock: Any) -> None:
    """A temporary actor crashing on an ask fails its asker at once with the cause."""
    async with actors.open_system() as system:
        ref = await system.spawn(Crashy, name="crashy", restart="temporary")
        start = trio.current_time()
        with pytest.raises(actors.ActorDied) as info:
            await ref.ask("crash", timeout=60)
        assert trio.current_time() == start
        assert isinstance(info.value.__cause__, RuntimeError)
        assert not ref.alive


async def test_asks_queued_behind_a_fatal_crash_are_failed(autojump_clock: Any) -> None:
    """Asks still in the mailbox when the actor dies for good get ActorDied at once."""
    results: list[Any] = []

    class SlowCrash(actors.Actor):
        async def handle(self, message: Any) -> Any:
            await trio.sleep(1)
            raise RuntimeError("boom")

    async with actors.open_system() as system:
        ref = await system.spawn(SlowCrash, name="crashy", restart="temporary")

        async def ask(message: str) -> None:
            try:
                results.append(await ref.ask(message, timeout=60))
            except actors.ActorDied as exc:
                results.append(type(exc.__cause__))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, "crash")
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(ask, "queued")
        assert trio.current_time() == 1
    assert results == [RuntimeError, RuntimeError]


async def test_sending_to_a_stopped_actor_raises_actor_stopped() -> None:
    """tell, try_tell and ask to an actor stopped for good raise ActorStopped."""
    async with actors.open_system() as system:
        ref = await system.spawn(Echo, name="echo")
        await system.supervisor("system").stop_child("echo")
        assert not ref.alive
        with pytest.raises(actors.ActorStopped):
            await ref.tell("hi")
        with pytest.raises(actors.ActorStopped):
            ref.try_tell("hi")
        with pytest.raises(actors.ActorStopped):
            await ref.ask("hi")
        with pytest.raises(actors.NoSuchActor):
            system.ref("echo")


async def test_restart_keeps_the_ref_and_starts_fresh_state() -> None:
    """After a crash the same Ref reaches a new instance with fresh state."""
    async with actors.open_system() as system:
        ref = await system.spawn(Recorder, name="rec")
        await ref.tell("before")
        assert await ref.ask("seen?") == ["before"]
        system.faults.crash_next("rec")
        await ref.tell("kills it")
        await ref.tell("after")
        # The message it crashed on is redelivered once; "before" died with the old state.
        assert await ref.ask("seen?") == ["kills it", "after"]
        assert ref.stats().restarts == 1
        assert system.ref("rec") is ref


async def test_messages_queued_behind_a_crash_reach_the_next_incarnation() -> None:
    """A crash loses no queued message: the next incarnation answers them."""
    births: list[int] = []
    async with actors.open_system() as system:
        ref = await system.spawn(Crashy, name="crashy", args=(births,))
        async with trio.open_nursery() as nursery:
            system.faults.crash_next("crashy")
            await ref.tell("crashes once, then is redelivered")
            for i in range(5):
                nursery.start_soon(ref.ask, i)
            assert [await ref.ask(i) for i in range(3)] == [0, 1, 2]
        assert len(births) == 2


async def test_message_crashing_twice_is_failed_as_poison() -> None:
    """A message that crashes two incarnations is dropped with PoisonMessage."""
    births: list[int] = []
    async with actors.open_system() as system:
        ref = await system.spawn(Crashy, name="crashy", args=(births,))
        with pytest.raises(actors.PoisonMessage) as info:
            await ref.ask("crash")
        assert isinstance(info.value.__cause__, RuntimeError)
        await trio.testing.wait_all_tasks_blocked()
        assert len(births) == 3
        assert ref.stats().restarts == 2
        assert await ref.ask("fine") == "fine"


async def test_poison_tell_is_dropped_and_noted_in_a_crashed_event() -> None:
    """A told poison message is dropped; a crashed event carries PoisonMessage."""
    async with actors.open_system() as system, system.events() as events:
        ref = await system.spawn(Crashy, name="crashy")
        await ref.tell("crash")
        assert await ref.ask("after") == "after"
        seen = []
        while len(seen) < 5:
            seen.append(await events.__anext__())
        crashes = [event.cause for event in seen if event.kind == "crashed"]
        assert isinstance(crashes[0], RuntimeError)
        assert isinstance(crashes[1], actors.PoisonMessage)
        assert isinstance(crashes[1].__cause__, RuntimeError)


async def test_started_hook_failure_makes_spawn_raise_start_failed() -> None:
    """If started() raises, spawn raises StartFailed with it as the cause."""

    class Broken(actors.Actor):
        async def started(self) -> None:
            raise OSError("no socket")

    async with actors.open_system() as system:
        with pytest.raises(actors.StartFailed) as info:
            await system.spawn(Broken, name="broken")
        assert isinstance(info.value.__cause__, OSError)
        with pytest.raises(actors.NoSuchActor):
            system.ref("broken")
        await system.spawn(Echo, name="broken")


async def test_started_runs_before_any_message_with_runtime_fields_set() -> None:
    """started() sees ref, name, system and task_group before the first message."""

    class Ready(actors.Actor):
        async def started(self) -> None:
            self.ready = (self.name, self.ref.name, self.system.ref(self.name) is self.ref)
            self.task_group.start_soon(trio.sleep_forever)

        async def handle(self, message: Any) -> Any:
            return self.ready

    async with actors.open_system() as system:
        ref = await system.spawn(Ready, name="ready")
        assert await ref.ask(None) == ("ready", "ready", True)


async def test_crash_in_a_background_task_crashes_the_actor() -> None:
    """A task in the actor's task_group that raises crashes (and restarts) the actor."""
    started = trio.Event()

    class Worker(actors.Actor):
        async def handle(self, message: Any) -> Any:
            if message == "spawn":
                self.task_group.start_soon(self.fail)
            return message

        async def fail(self) -> None:
            raise ValueError("background")

    async with actors.open_system() as system, system.events() as events:
        ref = await system.spawn(Worker, name="worker")
        await ref.ask("spawn")
        async for event in events:
            if event.kind == "crashed":
                assert isinstance(event.cause, ValueError)
                started.set()
            if event.kind == "restarted":
                break
        assert started.is_set()
        assert ref.stats().restarts == 1


async def test_tell_waits_for_room_when_the_mailbox_is_full(autojump_clock: Any) -> None:
    """With a full mailbox, tell blocks until the actor takes a message."""
    async with actors.open_system() as system:
        ref = await system.spawn(Sleepy, name="sleepy", args=([],), mailbox_size=2)
        await ref.tell(1)  # taken at once, handled for 1 s
        await trio.testing.wait_all_tasks_blocked()
        await ref.tell(1)
        await ref.tell(1)
        assert ref.stats().mailbox_depth == 2
        start = trio.current_time()
        await ref.tell(1)
        assert trio.current_time() - start == pytest.approx(1.0)


async def test_try_tell_sends_without_waiting_and_answers_false_when_full(
    autojump_clock: Any,
) -> None:
    """try_tell puts a message in at once, or answers False on a full mailbox and sends nothing."""
    async with actors.open_system() as system:
        ref = await system.spawn(Recorder, name="rec", mailbox_size=2)
        blocker = await system.spawn(Sleepy, name="sleepy", args=([],), mailbox_size=1)
        assert blocker.try_tell(5)  # taken at once, handled for 5 s
        await trio.testing.wait_all_tasks_blocked()
        assert blocker.try_tell(1)
        assert not blocker.try_tell(1)
        assert blocker.stats().mailbox_depth == 1
        assert ref.try_tell("a") and ref.try_tell("b")
        assert await ref.ask("seen?") == ["a", "b"]


async def test_concurrent_actor_handles_at_most_max_concurrency_at_once(
    autojump_clock: Any,
) -> None:
    """max_concurrency=3 handles three messages at a time, each in its own task."""
    running: list[int] = []
    peak: list[int] = [0]

    class Pool(actors.Actor):
        max_concurrency = 3

        async def handle(self, message: Any) -> Any:
            running.append(message)
            peak[0] = max(peak[0], len(running))
            await trio.sleep(1)
            running.remove(message)
            return message * 2

    async with actors.open_system() as system:
        ref = await system.spawn(Pool, name="pool")
        results: list[int] = []

        async def ask(i: int) -> None:
            results.append(await ref.ask(i))

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for i in range(9):
                nursery.start_soon(ask, i)
        assert sorted(results) == [i * 2 for i in range(9)]
        assert peak[0] == 3
        assert trio.current_time() - start == pytest.approx(3.0)


async def test_concurrent_crash_fails_the_other_in_flight_asks(autojump_clock: Any) -> None:
    """In concurrent mode a crash interrupts siblings (ActorDied) and redelivers its own."""

    class Pool(actors.Actor):
        max_concurrency = 4

        async def handle(self, message: Any) -> Any:
            if message == "crash":
                await trio.sleep(1)
                raise RuntimeError("boom")
            await trio.sleep(10)
            return message

    outcomes: dict[str, Any] = {}
    async with actors.open_system() as system:
        ref = await system.spawn(Pool, name="pool")

        async def ask(message: str) -> None:
            try:
                outcomes[message] = await ref.ask(message, timeout=60)
            except actors.ActorError as exc:
                outcomes[message] = (type(exc), type(exc.__cause__))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, "a")
            nursery.start_soon(ask, "crash")
            nursery.start_soon(ask, "b")
    assert outcomes["a"] == (actors.ActorDied, RuntimeError)
    assert outcomes["b"] == (actors.ActorDied, RuntimeError)
    assert outcomes["crash"] == (actors.PoisonMessage, RuntimeError)


async def test_stream_yields_items_in_order() -> None:
    """ref.stream returns the handler's items one by one, then ends."""

    class Counter(actors.Actor):
        async def handle_stream(self, message: Any) -> AsyncIterator[Any]:
            for i in range(message):
                yield i

    async with actors.open_system() as system:
        ref = await system.spawn(Counter, name="counter")
        async with ref.stream(5) as items:
            assert [item async for item in items] == [0, 1, 2, 3, 4]
        async with ref.stream(2) as items:
            assert [item async for item in items] == [0, 1]


async def test_a_cancelled_stream_reader_raises_before_taking_a_ready_item() -> None:
    """
    With an item ready, a reader whose scope is cancelled raises Cancelled and leaves
    the item with the producer, as trio's own channels do; it is never taken and lost.
    """
    taken: list[int] = []

    class Counter(actors.Actor):
        async def handle_stream(self, message: Any) -> AsyncIterator[Any]:
            for i in range(message):
                yield i
                taken.append(i)

    async with actors.open_system() as system:
        ref = await system.spawn(Counter, name="counter")
        async with ref.stream(5) as items:
            assert await items.__anext__() == 0
            await trio.testing.wait_all_tasks_blocked()  # item 1 is now ready
            with trio.CancelScope() as scope:
                scope.cancel()
                await items.__anext__()
            assert scope.cancelled_caught
            assert taken == [0]  # item 1 was not handed over
            assert await items.__anext__() == 1


async def test_slow_stream_reader_slows_the_producer(autojump_clock: Any) -> None:
    """Backpressure: the producer is never more than one item ahead of the reader."""
    produced: list[int] = []

    class Firehose(actors.Actor):
        async def handle_stream(self, message: Any) -> AsyncIterator[Any]:
            for i in range(1000):
                produced.append(i)
                yield i

    async with actors.open_system() as system:
        ref = await system.spawn(Firehose, name="firehose")
        async with ref.stream(None) as items:
            read = 0
            async for item in items:
                assert item == read
                read += 1
                await trio.sleep(1)
                assert len(produced) <= read + 1
                if read == 10:
                    break
        assert len(produced) <= 11


async def test_leaving_a_stream_early_closes_the_producer(autojump_clock: Any) -> None:
    """Closing the reader stops the producer: its generator's finally runs."""
    closed = trio.Event()

    class Endless(actors.Actor):
        async def handle_stream(self, message: Any) -> AsyncIterator[Any]:
            try:
                i = 0
                while True:
                    yield i
                    i += 1
            finally:
                closed.set()

        async def handle(self, message: Any) -> Any:
            return message

    async with actors.open_system() as system:
        ref = await system.spawn(Endless, name="endless")
        async with ref.stream(None) as items:
            async for item in items:
                if item == 3:
                    break
        with trio.fail_after(1):
            await closed.wait()
        assert await ref.ask("still serving") == "still serving"


async def test_stream_crash_mid_stream_raises_actor_died_to_the_reader() -> None:
    """A producer crashing after some items makes the reader's iteration raise."""

    class Flaky(actors.Actor):
        async def handle_stream(self, message: Any) -> AsyncIterator[Any]:
            yield 1
            raise RuntimeError("mid-stream")

    async with actors.open_system() as system:
        ref = await system.spawn(Flaky, name="flaky")
        got: list[Any] = []
        with pytest.raises(actors.ActorDied) as info:
            await collect(ref.stream(None), got)
        assert got == [1]
        assert isinstance(info.value.__cause__, RuntimeError)


async def test_stream_item_deadline_raises_ask_timeout(autojump_clock: Any) -> None:
    """Each item has its own deadline; a stalled producer makes the reader time out."""

    class Stalls(actors.Actor):
        async def handle_stream(self, message: Any) -> AsyncIterator[Any]:
            yield 1
            await trio.sleep(3)
            yield 2
            await trio.sleep(30)
            yield 3

    async with actors.open_system() as system:
        ref = await system.spawn(Stalls, name="stalls")
        got: list[Any] = []
        with pytest.raises(actors.AskTimeout):
            await collect(ref.stream(None, timeout=5), got)
        assert got == [1, 2]


async def test_streaming_an_actor_without_handle_stream_raises_not_streaming() -> None:
    """An actor that does not stream answers a stream with NotStreaming."""
    async with actors.open_system() as system:
        ref = await system.spawn(Echo, name="echo")
        with pytest.raises(actors.NotStreaming):
            await collect(ref.stream(None), [])
        assert await ref.ask("alive") == "alive"


async def test_cancelling_the_caller_cancels_the_handler(autojump_clock: Any) -> None:
    """A caller cancelled mid-ask cancels the handler working on its message."""
    cancelled: list[str] = []
    async with actors.open_system() as system:
        ref = await system.spawn(Sleepy, name="sleepy", args=(cancelled,))
        with trio.move_on_after(1):
            await ref.ask(100, timeout=1000)
        await trio.testing.wait_all_tasks_blocked()
        assert cancelled == ["slept 100"]
        assert await ref.ask(1) == 1


async def test_caller_cancelled_as_its_deadline_expires_fails_cleanly(autojump_clock: Any) -> None:
    """A caller cancelled in the same tick its ask's deadline expires is woken once, not twice."""
    async with actors.open_system() as system:
        ref = await system.spawn(Sleepy, name="sleepy", args=([],))
        for _ in range(50):
            with trio.move_on_after(1):
                await ref.ask(100, timeout=1)
        assert await ref.ask(1) == 1


async def test_caller_cancelled_as_the_reply_arrives_fails_cleanly(autojump_clock: Any) -> None:
    """A caller cancelled in the same tick its reply arrives is woken once, not twice."""

    class Timed(actors.Actor):
        async def handle(self, message: Any) -> Any:
            await trio.sleep_until(message)
            return message

    async with actors.open_system() as system:
        ref = await system.spawn(Timed, name="timed")
        for _ in range(50):
            due = trio.current_time() + 1
            with trio.CancelScope(deadline=due):
                await ref.ask(due, timeout=10)
        assert await ref.ask(trio.current_time()) is not None


async def test_cancelled_ask_still_queued_is_skipped(autojump_clock: Any) -> None:
    """An ask given up before the actor reached it is never handled."""
    handled: list[Any] = []

    class Slow(actors.Actor):
        async def handle(self, message: Any) -> Any:
            handled.append(message)
            await trio.sleep(5)
            return message

    async with actors.open_system() as system:
        ref = await system.spawn(Slow, name="slow")
        await ref.tell("busy")
        with trio.move_on_after(1):
            await ref.ask("given up")
        assert await ref.ask("wanted", timeout=20) == "wanted"
        assert handled == ["busy", "wanted"]


async def test_stopping_the_system_fails_a_pending_ask(autojump_clock: Any) -> None:
    """When the actor is cancelled at shutdown, its pending asker gets ActorStopped."""
    result: list[Any] = []
    async with trio.open_nursery() as nursery, actors.open_system() as system:
        ref = await system.spawn(Sleepy, name="sleepy", args=([],), shutdown_timeout=1)

        async def ask() -> None:
            try:
                await ref.ask(100, timeout=1000)
            except actors.ActorStopped as exc:
                result.append(exc)

        nursery.start_soon(ask)
        await trio.testing.wait_all_tasks_blocked()
    assert len(result) == 1
    assert trio.current_time() == pytest.approx(1.0)


async def test_no_task_is_left_behind_after_the_system_exits(autojump_clock: Any) -> None:
    """Leaving open_system ends every actor, supervisor and background task."""
    before = all_tasks()

    class Busy(actors.Actor):
        max_concurrency = 2

        async def started(self) -> None:
            self.task_group.start_soon(trio.sleep_forever)

        async def handle(self, message: Any) -> Any:
            await trio.sleep(message)

    async with actors.open_system() as system:
        for i in range(5):
            ref = await system.spawn(Busy, name=f"busy{i}", shutdown_timeout=0.5)
            await ref.tell(1000)
        sup = await system.start_supervisor(
            actors.SupervisorSpec([actors.ChildSpec("inner", Echo)]), name="sup"
        )
        assert sup.children() == ["inner"]
        assert len(all_tasks()) > len(before) + 10
    assert all_tasks() == before


async def test_body_exception_keeps_its_type_and_stops_everything() -> None:
    """An error raised in the system block comes out as itself, not as a group."""

    async def body() -> None:
        async with actors.open_system() as system:
            await system.spawn(Echo, name="echo")
            raise KeyError("body")

    with pytest.raises(KeyError):
        await body()


async def test_stats_report_depth_handled_restarts_and_liveness() -> None:
    """Ref.stats() is a frozen snapshot of the actor's counters."""
    async with actors.open_system() as system:
        ref = await system.spawn(Crashy, name="crashy")
        await ref.ask(1)
        system.faults.crash_next("crashy")
        await ref.ask(2)
        stats = ref.stats()
        assert stats == actors.ActorStats("crashy", 0, 2, 1, True)
        with pytest.raises(AttributeError):
            stats.handled = 5  # type: ignore[misc]


async def test_asks_with_different_deadlines_each_expire_on_time(autojump_clock: Any) -> None:
    """Asks with mixed timeouts, pending at once, each time out at their own deadline."""
    expired: dict[float, float] = {}
    async with actors.open_system() as system:
        ref = await system.spawn(Echo, name="echo")
        system.faults.hang("echo")

        async def ask(timeout: float) -> None:
            start = trio.current_time()
            with pytest.raises(actors.AskTimeout):
                await ref.ask(timeout, timeout=timeout)
            expired[timeout] = trio.current_time() - start

        async with trio.open_nursery() as nursery:
            for timeout in (5, 1, 3, 1, 0, 2.5):
                nursery.start_soon(ask, timeout)
    assert expired == pytest.approx({5: 5, 1: 1, 3: 3, 0: 0, 2.5: 2.5})


async def test_ask_without_a_deadline_waits_as_long_as_it_takes(autojump_clock: Any) -> None:
    """timeout=math.inf means no deadline at all."""
    async with actors.open_system() as system:
        ref = await system.spawn(Sleepy, name="sleepy", args=([],))
        assert await ref.ask(3600, timeout=math.inf) == 3600
        assert trio.current_time() == pytest.approx(3600)


async def test_deadline_counts_the_wait_for_mailbox_room(autojump_clock: Any) -> None:
    """An ask stuck behind a full mailbox times out at its deadline, not later."""
    async with actors.open_system() as system:
        ref = await system.spawn(Sleepy, name="sleepy", args=([],), mailbox_size=1)
        await ref.tell(100)
        await trio.testing.wait_all_tasks_blocked()
        await ref.tell(100)  # fills the mailbox
        start = trio.current_time()
        with pytest.raises(actors.AskTimeout):
            await ref.ask(1, timeout=2)
        assert trio.current_time() - start == pytest.approx(2.0)


def test_runtime_works_on_the_asyncio_backend() -> None:
    """Without trio's fast path (asyncio), asks, deadlines, restarts and streams work."""
    import anyio

    class Streamer(actors.Actor):
        async def handle(self, message: Any) -> Any:
            if message == "crash":
                raise RuntimeError("boom")
            if message == "slow":
                await anyio.sleep(10)
            return message

        async def handle_stream(self, message: Any) -> AsyncIterator[Any]:
            for i in range(message):
                yield i

    async def main() -> None:
        async with actors.open_system() as system:
            ref = await system.spawn(Streamer, name="s")
            assert await ref.ask("hi") == "hi"
            with pytest.raises(actors.AskTimeout):
                await ref.ask("slow", timeout=0.01)
            with pytest.raises(actors.PoisonMessage):
                await ref.ask("crash")
            async with ref.stream(3) as items:
                assert [item async for item in items] == [0, 1, 2]
            await ref.tell("told")
            assert ref.stats().restarts == 2

    anyio.run(main, backend="asyncio")
