"""
Supervision: start and stop order, strategies, restart types, escalation, shutdown
timeouts, dynamic children and bad specs.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pytest
import trio
import trio.testing

import actors
from actors import ChildSpec, SupervisorSpec


class Tracked(actors.Actor):
    """Counts its births in a shared Counter; "exit" ends it normally."""

    def __init__(self, births: Counter[str], log: list[str] | None = None) -> None:
        self.births = births
        self.log = log

    async def started(self) -> None:
        self.births[self.name] += 1
        if self.log is not None:
            self.log.append(f"start {self.name}")

    async def stopping(self) -> None:
        if self.log is not None:
            self.log.append(f"stop {self.name}")

    async def handle(self, message: Any) -> Any:
        if message == "exit":
            self.request_stop()
        return message


def three(births: Counter[str], restart: str, log: list[str] | None = None) -> list[ChildSpec]:
    return [
        ChildSpec(name, Tracked, restart=restart, args=(births, log))  # type: ignore[arg-type]
        for name in "abc"
    ]


async def settle() -> None:
    """Let every restart run to completion."""
    await trio.testing.wait_all_tasks_blocked()


async def test_children_start_in_order_and_stop_in_reverse() -> None:
    """A supervisor starts its children in order and stops them in reverse."""
    births: Counter[str] = Counter()
    log: list[str] = []
    async with actors.open_system() as system:
        sup = await system.start_supervisor(
            SupervisorSpec(three(births, "permanent", log)), name="sup"
        )
        assert sup.children() == ["a", "b", "c"]
        assert log == ["start a", "start b", "start c"]
    assert log[3:] == ["stop c", "stop b", "stop a"]


RESTARTED_ON_CRASH = {
    "one_for_one": {"a": 1, "b": 2, "c": 1},
    "one_for_all": {"a": 2, "b": 2, "c": 2},
    "rest_for_one": {"a": 1, "b": 2, "c": 2},
}


@pytest.mark.parametrize("strategy", ["one_for_one", "one_for_all", "rest_for_one"])
@pytest.mark.parametrize("restart", ["permanent", "transient", "temporary"])
async def test_crash_is_handled_by_strategy_and_restart_type(strategy: str, restart: str) -> None:
    """A crashing child is restarted (with its siblings per strategy) unless temporary."""
    births: Counter[str] = Counter()
    async with actors.open_system() as system:
        sup = await system.start_supervisor(
            SupervisorSpec(three(births, restart), strategy=strategy),  # type: ignore[arg-type]
            name="sup",
        )
        b = system.ref("b")
        system.faults.crash_next("b")
        await b.tell("boom")
        await settle()
        if restart == "temporary":
            assert dict(births) == {"a": 1, "b": 1, "c": 1}
            assert sup.children() == ["a", "c"]
            assert not b.alive
            with pytest.raises(actors.NoSuchActor):
                system.ref("b")
        else:
            assert dict(births) == RESTARTED_ON_CRASH[strategy]
            assert sup.children() == ["a", "b", "c"]
            assert await b.ask("same ref") == "same ref"


@pytest.mark.parametrize("strategy", ["one_for_one", "one_for_all", "rest_for_one"])
@pytest.mark.parametrize("restart", ["permanent", "transient", "temporary"])
async def test_normal_exit_restarts_only_permanent_children(strategy: str, restart: str) -> None:
    """A child that stops itself is restarted only if permanent."""
    births: Counter[str] = Counter()
    async with actors.open_system() as system:
        sup = await system.start_supervisor(
            SupervisorSpec(three(births, restart), strategy=strategy),  # type: ignore[arg-type]
            name="sup",
        )
        await system.ref("b").ask("exit")
        await settle()
        if restart == "permanent":
            assert dict(births) == RESTARTED_ON_CRASH[strategy]
            assert sup.children() == ["a", "b", "c"]
        else:
            assert dict(births) == {"a": 1, "b": 1, "c": 1}
            assert sup.children() == ["a", "c"]


async def test_exceeding_intensity_escalates_to_the_parent() -> None:
    """More than `intensity` restarts in `period` makes the supervisor give up."""
    births: Counter[str] = Counter()
    async with actors.open_system() as system, system.events() as events:
        sup = await system.start_supervisor(
            SupervisorSpec(three(births, "permanent"), intensity=2, period=5), name="sup"
        )
        b = system.ref("b")
        for _ in range(3):
            system.faults.crash_next("b")
            await b.tell("boom")
            await settle()
        kinds = []
        async for event in events:
            kinds.append((event.kind, event.name))
            if event.kind == "escalated":
                assert isinstance(event.cause, actors.EscalationError)
                assert isinstance(event.cause.__cause__, actors.InjectedCrash)
                break
        assert kinds.count(("crashed", "b")) == 3
        assert kinds.count(("restarted", "b")) == 2
        # The root restarted the whole subtree: everything is fresh, the refs still work.
        await settle()
        assert sup.alive
        assert dict(births) == {"a": 2, "b": 4, "c": 2}
        assert await b.ask("back") == "back"


async def test_escalation_stops_children_in_reverse_order() -> None:
    """When a supervisor gives up, it stops its children last-first."""
    births: Counter[str] = Counter()
    log: list[str] = []
    async with actors.open_system() as system:
        await system.start_supervisor(
            SupervisorSpec(three(births, "permanent", log), intensity=0),
            name="sup",
            restart="temporary",
        )
        system.faults.crash_next("a")
        await system.ref("a").tell("boom")
        await settle()
        assert log == ["start a", "start b", "start c", "stop c", "stop b"]
        with pytest.raises(actors.NoSuchActor):
            system.supervisor("sup")


async def test_restarts_spread_over_the_period_do_not_escalate(autojump_clock: Any) -> None:
    """Restarts further apart than `period` never add up to an escalation."""
    births: Counter[str] = Counter()
    async with actors.open_system() as system:
        sup = await system.start_supervisor(
            SupervisorSpec(three(births, "permanent"), intensity=1, period=5), name="sup"
        )
        b = system.ref("b")
        for _ in range(4):
            system.faults.crash_next("b")
            await b.tell("boom")
            await trio.sleep(6)
        assert births["b"] == 5
        assert births["a"] == 1
        assert sup.alive


async def test_root_escalation_fails_the_whole_system() -> None:
    """If the root supervisor gives up, open_system raises EscalationError."""
    births: Counter[str] = Counter()

    async def run() -> None:
        async with actors.open_system(intensity=1) as system:
            ref = await system.spawn(Tracked, name="t", args=(births,))
            for _ in range(3):
                system.faults.crash_next("t")
                await ref.tell("boom")
                await settle()
            await trio.sleep_forever()  # cancelled by the escalation

    with pytest.raises(actors.EscalationError) as info:
        await run()
    assert isinstance(info.value.__cause__, actors.InjectedCrash)


async def test_restart_that_fails_to_start_counts_as_a_crash() -> None:
    """A restart whose started() raises is retried until the intensity runs out."""
    attempts: list[int] = []

    class FailsAfterFirst(actors.Actor):
        async def started(self) -> None:
            attempts.append(1)
            if len(attempts) > 1:
                raise OSError("cannot reconnect")

        async def handle(self, message: Any) -> Any:
            return message

    async with actors.open_system() as system, system.events() as events:
        await system.start_supervisor(
            SupervisorSpec([ChildSpec("f", FailsAfterFirst)], intensity=3),
            name="sup",
            restart="temporary",
        )
        system.faults.crash_next("f")
        await system.ref("f").tell("boom")
        async for event in events:
            if event.kind == "escalated":
                break
        assert len(attempts) == 4


async def test_shutdown_timeout_expires_then_the_child_is_cancelled(
    autojump_clock: Any,
) -> None:
    """A child still busy after its shutdown timeout is cancelled; its asker is failed."""
    cancelled = trio.Event()

    class Busy(actors.Actor):
        async def handle(self, message: Any) -> Any:
            try:
                await trio.sleep_forever()
            finally:
                cancelled.set()

    async with actors.open_system() as system:
        ref = await system.spawn(Busy, name="busy", shutdown_timeout=2)
        result: list[Any] = []

        async def ask() -> None:
            with pytest.raises(actors.ActorStopped):
                await ref.ask("work", timeout=100)
            result.append("failed")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask)
            await trio.testing.wait_all_tasks_blocked()
            start = trio.current_time()
            await system.supervisor("system").stop_child("busy")
            assert trio.current_time() - start == pytest.approx(2.0)
        assert cancelled.is_set()
        assert result == ["failed"]


async def test_stopping_hook_is_cut_off_by_the_shutdown_timeout(autojump_clock: Any) -> None:
    """A stopping() that overruns the shutdown timeout is cancelled at the deadline."""
    reached: list[str] = []

    class SlowStop(actors.Actor):
        async def stopping(self) -> None:
            reached.append("stopping")
            await trio.sleep(100)
            reached.append("never")

    async with actors.open_system() as system:
        await system.spawn(SlowStop, name="slow", shutdown_timeout=3)
        start = trio.current_time()
        await system.supervisor("system").stop_child("slow")
        assert trio.current_time() - start == pytest.approx(3.0)
    assert reached == ["stopping"]


async def test_dynamic_children_come_and_go() -> None:
    """A supervisor with no static children adds sessions at run time and drops them."""

    class Session(actors.Actor):
        async def handle(self, message: Any) -> Any:
            if message == "bye":
                self.request_stop()
            if message == "crash":
                raise RuntimeError("socket closed")
            return message

    async with actors.open_system() as system:
        sessions = await system.start_supervisor(SupervisorSpec(()), name="sessions")
        refs = [
            await sessions.start_child(ChildSpec(f"s{i}", Session, restart="temporary"))
            for i in range(3)
        ]
        assert sessions.children() == ["s0", "s1", "s2"]
        assert await refs[1].ask("bye") == "bye"
        with pytest.raises(actors.ActorDied):
            await refs[2].ask("crash")
        await settle()
        assert sessions.children() == ["s0"]
        await sessions.stop_child("s0")
        assert sessions.children() == []
        with pytest.raises(actors.NoSuchActor):
            await sessions.stop_child("s0")
        # Names are free again once their sessions ended.
        await sessions.start_child(ChildSpec("s1", Session, restart="temporary"))


async def test_events_report_the_lifecycle() -> None:
    """Subscribers see started, crashed (with cause), restarted and stopped events."""
    async with actors.open_system() as system, system.events() as events:
        ref = await system.spawn(Tracked, name="t", args=(Counter(),))
        system.faults.crash_next("t", ValueError("bad"))
        await ref.tell("x")
        await settle()
        await system.supervisor("system").stop_child("t")
        seen = []
        for _ in range(4):
            event = await events.__anext__()
            seen.append((event.kind, event.name, type(event.cause)))
        assert seen == [
            ("started", "t", type(None)),
            ("crashed", "t", ValueError),
            ("restarted", "t", type(None)),
            ("stopped", "t", type(None)),
        ]


async def test_slow_event_subscriber_loses_oldest_events_never_blocks() -> None:
    """A subscriber's buffer is bounded: the oldest events are dropped and counted."""
    async with actors.open_system() as system, system.events(buffer=2) as events:
        for i in range(5):
            await system.spawn(Tracked, name=f"t{i}", args=(Counter(),))
        assert events.dropped == 3
        assert [(await events.__anext__()).name for _ in range(2)] == ["t3", "t4"]


async def test_nested_supervisor_is_stopped_with_its_parent() -> None:
    """A supervisor inside a supervisor stops its children before its parent goes."""
    births: Counter[str] = Counter()
    log: list[str] = []
    inner = SupervisorSpec(three(births, "permanent", log))
    outer = SupervisorSpec([ChildSpec("inner", inner), ChildSpec("d", Tracked, args=(births, log))])
    async with actors.open_system() as system:
        await system.start_supervisor(outer, name="outer")
        assert system.supervisor("inner").children() == ["a", "b", "c"]
    starts = ["start a", "start b", "start c", "start d"]
    assert log == [*starts, "stop d", "stop c", "stop b", "stop a"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": ""},
        {"name": 3},
        {"factory": 42},
        {"restart": "sometimes"},
        {"shutdown_timeout": -1},
        {"shutdown_timeout": math.nan},
        {"mailbox_size": 0},
        {"mailbox_size": 1.5},
        {"args": [1]},
        {"kwargs": [("a", 1)]},
    ],
)
def test_child_spec_that_makes_no_sense_raises_invalid_spec(kwargs: dict[str, Any]) -> None:
    """Each nonsensical ChildSpec field raises InvalidSpec when the spec is built."""
    fields: dict[str, Any] = {"name": "x", "factory": Tracked, **kwargs}
    with pytest.raises(actors.InvalidSpec):
        ChildSpec(**fields)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"strategy": "all_for_none"},
        {"intensity": -1},
        {"intensity": 1.5},
        {"period": 0},
        {"period": -5},
        {"children": [ChildSpec("a", Tracked), ChildSpec("a", Tracked)]},
        {"children": ["a"]},
        {"children": "abc"},
    ],
)
def test_supervisor_spec_that_makes_no_sense_raises_invalid_spec(kwargs: dict[str, Any]) -> None:
    """Each nonsensical SupervisorSpec field raises InvalidSpec when built."""
    with pytest.raises(actors.InvalidSpec):
        SupervisorSpec(**kwargs)


async def test_bad_arguments_to_the_system_raise_typed_errors() -> None:
    """Bad spawn and start_supervisor arguments raise InvalidSpec or StartFailed."""

    def not_an_actor() -> object:
        return object()

    async with actors.open_system() as system:
        with pytest.raises(actors.InvalidSpec):
            await system.spawn(Tracked, name="t", shutdown_timeout=-1)
        with pytest.raises(actors.InvalidSpec):
            await system.start_supervisor(ChildSpec("x", Tracked), name="x")  # type: ignore[arg-type]
        with pytest.raises(actors.StartFailed) as info:
            await system.spawn(not_an_actor, name="bad")  # type: ignore[arg-type]
        assert isinstance(info.value.__cause__, actors.InvalidSpec)
        with pytest.raises(actors.InvalidSpec):
            async with system.events(buffer=0):
                pass
    with pytest.raises(actors.InvalidSpec):
        async with actors.open_system(mailbox_size=0):
            pass


async def test_spawning_after_the_system_stopped_raises_actor_stopped() -> None:
    """Once the system is stopped, spawn raises ActorStopped."""
    async with actors.open_system() as system:
        pass
    with pytest.raises(actors.ActorStopped):
        await system.spawn(Tracked, name="late", args=(Counter(),))
