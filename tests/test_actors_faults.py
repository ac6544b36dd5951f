"""
Fault injection: crash, hang, slow, drop; deterministic and clearable.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

import actors


class Echo(actors.Actor):
    async def handle(self, message: Any) -> Any:
        return message


async def test_crash_next_crashes_once_with_the_given_exception() -> None:
    """crash_next makes the next message crash the actor once, with that exception."""
    async with actors.open_system() as system, system.events() as events:
        ref = await system.spawn(Echo, name="echo")
        system.faults.crash_next("echo", ConnectionError("injected"))
        assert await ref.ask("redelivered after the restart") == "redelivered after the restart"
        assert await ref.ask("normal") == "normal"
        kinds = [(await events.__anext__()) for _ in range(3)]
        assert [event.kind for event in kinds] == ["started", "crashed", "restarted"]
        assert isinstance(kinds[1].cause, ConnectionError)
        assert ref.stats().restarts == 1


async def test_default_injected_crash_is_typed() -> None:
    """Without an exception, crash_next raises InjectedCrash naming the actor."""
    async with actors.open_system() as system:
        ref = await system.spawn(Echo, name="echo", restart="temporary")
        system.faults.crash_next("echo")
        with pytest.raises(actors.ActorDied) as info:
            await ref.ask("x")
        assert isinstance(info.value.__cause__, actors.InjectedCrash)
        assert info.value.__cause__.name == "echo"


async def test_hang_makes_asks_time_out_until_cleared(autojump_clock: Any) -> None:
    """A hung actor answers nothing (asks hit their deadline) until the fault is cleared."""
    async with actors.open_system() as system:
        ref = await system.spawn(Echo, name="echo")
        system.faults.hang("echo")
        start = trio.current_time()
        with pytest.raises(actors.AskTimeout):
            await ref.ask("x", timeout=2)
        with pytest.raises(actors.AskTimeout):
            await ref.ask("y", timeout=2)
        assert trio.current_time() - start == pytest.approx(4.0)
        system.faults.clear("echo")
        assert await ref.ask("z") == "z"


async def test_slow_delays_every_answer(autojump_clock: Any) -> None:
    """slow(name, s) delays each message by s seconds of (mock) time."""
    async with actors.open_system() as system:
        ref = await system.spawn(Echo, name="echo")
        system.faults.slow("echo", 1.5)
        start = trio.current_time()
        assert await ref.ask("a") == "a"
        assert await ref.ask("b") == "b"
        assert trio.current_time() - start == pytest.approx(3.0)
        with pytest.raises(actors.AskTimeout):
            await ref.ask("c", timeout=1)


async def test_drop_swallows_the_next_messages(autojump_clock: Any) -> None:
    """drop(name, n) loses the next n messages; their asks time out, later ones work."""
    async with actors.open_system() as system:
        ref = await system.spawn(Echo, name="echo")
        system.faults.drop("echo", 2)
        for message in ("lost 1", "lost 2"):
            with pytest.raises(actors.AskTimeout):
                await ref.ask(message, timeout=1)
        assert await ref.ask("kept") == "kept"
        assert system.faults.for_name("echo") is None


async def test_faults_set_before_spawn_apply_to_the_new_actor(autojump_clock: Any) -> None:
    """Faults are keyed by name, so they can be armed before the actor exists."""
    async with actors.open_system() as system:
        system.faults.drop("later")
        ref = await system.spawn(Echo, name="later")
        with pytest.raises(actors.AskTimeout):
            await ref.ask("lost", timeout=1)
        assert await ref.ask("kept") == "kept"


async def test_faults_apply_to_concurrent_actors(autojump_clock: Any) -> None:
    """Faults act on actors with max_concurrency > 1 as well."""

    class Pool(actors.Actor):
        max_concurrency = 4

        async def handle(self, message: Any) -> Any:
            return message

    async with actors.open_system() as system:
        ref = await system.spawn(Pool, name="pool")
        system.faults.drop("pool")
        with pytest.raises(actors.AskTimeout):
            await ref.ask("lost", timeout=1)
        system.faults.slow("pool", 2)
        start = trio.current_time()
        assert await ref.ask("slow") == "slow"
        assert trio.current_time() - start == pytest.approx(2.0)
        system.faults.clear("pool")
        system.faults.crash_next("pool")
        assert await ref.ask("redelivered") == "redelivered"
        assert ref.stats().restarts == 1


async def test_bad_fault_arguments_raise_invalid_spec() -> None:
    """A negative slow-down or drop count is refused with InvalidSpec."""
    async with actors.open_system() as system:
        with pytest.raises(actors.InvalidSpec):
            system.faults.slow("x", -1)
        with pytest.raises(actors.InvalidSpec):
            system.faults.drop("x", 0)
