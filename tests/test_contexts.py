"""
The ContextStore actor's window cache (rhetor/storage/_contexts.py): always the database's answer.
"""

from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import Any

import pytest
import trio

import actors
from rhetor._errors import ValidationError
from rhetor._types import ChatMessage
from rhetor.storage._actor import StoreCall
from rhetor.storage._contexts import ContextStore
from rhetor.storage._history import HistoryStore

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "seven",
    "wizards",
    "quietly",
    "hex",
]


def random_message(rng: random.Random) -> ChatMessage:
    role = rng.choice(["user", "assistant"])
    return ChatMessage(role, " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 30))))


async def test_cached_windows_always_match_the_database(tmp_path: Path) -> None:
    """
    Through appends, summaries, deletes and LRU eviction, every window and summary
    check the actor answers equals what the database itself answers.
    """
    rng = random.Random(1234)
    path = tmp_path / "contexts.db"
    contexts = ["a", "b", "c", "d"]
    async with actors.open_system() as system:
        ref = await system.spawn(
            ContextStore,
            name="contexts",
            args=(path,),
            kwargs={"window_tokens": 120, "cached_contexts": 2},
        )
        with HistoryStore(path) as db:
            for step in range(600):
                cid = rng.choice(contexts)
                op = rng.random()
                if op < 0.45:
                    turns = [random_message(rng) for _ in range(rng.randint(1, 3))]
                    await ref.ask(StoreCall("append", (cid, turns), {"metadata": {"n": step}}))
                elif op < 0.52:
                    last = len(db.history(cid)) if db.get(cid) else 0
                    if last:
                        upto = rng.randint(0, last)
                        await ref.ask(StoreCall("set_summary", (cid, f"summary {step}", upto)))
                elif op < 0.55:
                    await ref.ask(StoreCall("delete", (cid,)))
                budget = rng.choice([0, 5, 40, 119, 120, 121, 300, 10_000])
                threshold = rng.choice([-1, 0, 50, 200, 1000])
                assert await ref.ask(StoreCall("window", (cid, budget))) == db.window(cid, budget)
                assert await ref.ask(
                    StoreCall("needs_summary", (cid, threshold))
                ) == db.needs_summary(cid, threshold)


async def test_a_cached_window_is_answered_without_reading_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the first read, windows and summary checks of a context need no database reads."""
    reads: list[str] = []
    for name in ("window", "window_state", "needs_summary"):
        original = getattr(HistoryStore, name)

        def counted(self: HistoryStore, *args: Any, _name: str = name, _f: Any = original) -> Any:
            reads.append(_name)
            return _f(self, *args)

        monkeypatch.setattr(HistoryStore, name, counted)
    async with actors.open_system() as system:
        ref = await system.spawn(ContextStore, name="contexts", args=(tmp_path / "c.db",))
        assert await ref.ask(StoreCall("window", ("c", 8000))) == (None, [])
        assert reads == ["window_state"]
        hello = [ChatMessage("user", "hello"), ChatMessage("assistant", "hi there")]
        await ref.ask(StoreCall("append", ("c", hello)))
        assert await ref.ask(StoreCall("window", ("c", 8000))) == (None, hello)
        assert not await ref.ask(StoreCall("needs_summary", ("c", 8000)))
        assert await ref.ask(StoreCall("needs_summary", ("c", 1)))
        assert reads == ["window_state"]


async def test_an_append_cancelled_mid_write_leaves_no_stale_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    An append whose asker gives up while the worker thread is writing still commits;
    the actor then forgets its cached window, so the next window shows the turn.
    """
    entered, gate = threading.Event(), threading.Event()
    original = HistoryStore.append

    def slow_append(self: HistoryStore, *args: Any, **kwargs: Any) -> int:
        entered.set()
        gate.wait(10)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(HistoryStore, "append", slow_append)
    turn = ChatMessage("user", "written while nobody waited")
    async with actors.open_system() as system:
        ref = await system.spawn(ContextStore, name="contexts", args=(tmp_path / "c.db",))
        assert await ref.ask(StoreCall("window", ("c", 8000))) == (None, [])  # now cached
        with trio.move_on_after(10) as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ref.ask, StoreCall("append", ("c", [turn])))
                await trio.to_thread.run_sync(entered.wait, 10)
                nursery.cancel_scope.cancel()  # the asker leaves mid-write
            gate.set()
            assert await ref.ask(StoreCall("window", ("c", 8000))) == (None, [turn])
        assert not scope.cancelled_caught


async def test_a_bad_context_id_is_refused_by_the_cached_reads_too(tmp_path: Path) -> None:
    """window and needs_summary validate the id before looking in the cache."""
    async with actors.open_system() as system:
        ref = await system.spawn(ContextStore, name="contexts", args=(tmp_path / "c.db",))
        for call in (StoreCall("window", ("../x", 10)), StoreCall("needs_summary", ("", 10))):
            with pytest.raises(ValidationError) as info:
                await ref.ask(call)
            assert info.value.field == "context_id"
