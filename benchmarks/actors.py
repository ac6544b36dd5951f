"""
Benchmarks for the actors runtime (a script, not a test).

Measures ask round trips per second against a bare trio memory-channel ping-pong, tell
throughput, and the memory one idle actor costs (10,000 actors, tracemalloc). Prints a
table, then as its last line one JSON object with the headline numbers.

The baseline is two tasks and two trio memory channels (buffer 1). Trio's ``send``
always yields once, while an ask puts its envelope with ``send_nowait`` and parks only
for the reply, so the runtime can beat the baseline. An actor kept busy by a stream of
quick messages also keeps its handler cancel scope while waiting (~600 bytes more),
see ``actors._serving``; the idle-actor figures are for actors that are really idle.

Run: ``python benchmarks/actors.py`` (about 10 s).
"""

from __future__ import annotations

import gc
import json
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import trio
import trio.testing

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# The repository root has to be on sys.path before this import.
import actors

ROUND_TRIPS = 50_000
TELLS = 200_000
IDLE_ACTORS = 10_000
REPEATS = 3


class Echo(actors.Actor):
    async def handle(self, message: Any) -> Any:
        return message


class Sink(actors.Actor):
    def __init__(self) -> None:
        self.count = 0

    async def handle(self, message: Any) -> Any:
        self.count += 1
        return self.count


async def raw_pingpong() -> float:
    """Round trips/s of two tasks bouncing a value over two trio memory channels."""
    request_send, request_receive = trio.open_memory_channel[int](1)
    reply_send, reply_receive = trio.open_memory_channel[int](1)

    async def server() -> None:
        async for value in request_receive:
            await reply_send.send(value)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server)
        start = time.perf_counter()
        for i in range(ROUND_TRIPS):
            await request_send.send(i)
            await reply_receive.receive()
        elapsed = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    return ROUND_TRIPS / elapsed


async def ask_round_trips() -> float:
    """Round trips/s of ``ref.ask`` to an echo actor."""
    async with actors.open_system() as system:
        ref = await system.spawn(Echo, name="echo")
        await ref.ask(0)
        start = time.perf_counter()
        for i in range(ROUND_TRIPS):
            await ref.ask(i)
        return ROUND_TRIPS / (time.perf_counter() - start)


async def tell_throughput() -> float:
    """Messages/s told to one actor, counted until it has handled them all."""
    async with actors.open_system() as system:
        ref = await system.spawn(Sink, name="sink")
        await ref.ask(None)
        start = time.perf_counter()
        for i in range(TELLS):
            await ref.tell(i)
        await ref.ask(None)  # waits until every tell before it was handled
        return TELLS / (time.perf_counter() - start)


async def bytes_per_idle_actor(messages: int) -> float:
    """
    Memory per idle actor: tracemalloc growth over spawning IDLE_ACTORS (each first
    answering ``messages`` asks), divided by IDLE_ACTORS.
    """
    async with actors.open_system() as system:
        warm_up = await system.spawn(Echo, name="warm-up")
        await warm_up.ask(None)
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        for i in range(IDLE_ACTORS):
            ref = await system.spawn(Echo, name=f"idle-{i}")
            for _ in range(messages):
                await ref.ask(None)
        await trio.testing.wait_all_tasks_blocked()
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
        return grown / IDLE_ACTORS


def best(function: Any) -> float:
    return max(trio.run(function) for _ in range(REPEATS))


def main() -> None:
    raw = best(raw_pingpong)
    ask = best(ask_round_trips)
    tell = best(tell_throughput)
    memory = trio.run(bytes_per_idle_actor, 0)
    memory_used = trio.run(bytes_per_idle_actor, 3)
    results = {
        "ask_per_s": round(ask),
        "raw_pingpong_per_s": round(raw),
        "ask_ratio": round(ask / raw, 3),
        "tell_per_s": round(tell),
        "bytes_per_idle_actor": round(memory),
    }
    rows = [
        ("ask round trips/s (runtime)", f"{ask:,.0f}", ""),
        ("ping-pong/s (bare trio channels)", f"{raw:,.0f}", ""),
        ("ask ratio", f"{ask / raw:.2f}", ">= 0.7"),
        ("tell throughput/s", f"{tell:,.0f}", ">= 100,000"),
        (f"bytes per idle actor ({IDLE_ACTORS:,})", f"{memory:,.0f}", "<= 6,000"),
        ("bytes per idle actor, after 3 asks each", f"{memory_used:,.0f}", ""),
    ]
    width = max(len(name) for name, _, _ in rows)
    print(f"{'measure':<{width}}  {'value':>12}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>12}  {target}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
