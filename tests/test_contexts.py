"""
The ContextStore actor (rhetor/storage/_contexts.py): its messages, and a window cache that is always the database's answer.
"""

from __future__ import annotations

import random
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import actors
import rhetor.storage._contexts
from rhetor._errors import NotFound, ValidationError
from rhetor._tokens import count_message_tokens
from rhetor._types import ChatMessage
from rhetor.storage._actor import StoreActor
from rhetor.storage._contexts import (
    Appended,
    AppendTurns,
    ContextStore,
    DeleteContext,
    GetContextInfo,
    GetHistory,
    GetWindow,
    ListContexts,
    NeedsSummary,
    ReadContext,
    SearchContexts,
    SetSummary,
)
from rhetor.storage._history import SQLiteHistory
from rhetor.storage._interfaces import ContextHistory, ContextWindow
from tests.stores import history_opener

Opener = Callable[[], ContextHistory]

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


def pair(window: ContextWindow) -> tuple[str | None, list[ChatMessage]]:
    """A window as ``(summary, messages)``, the shape the store's windows were first compared in."""
    return window.summary, list(window.messages)


@pytest.fixture
def path(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Opener:
    """Opens the history on the backend's storage (SQLite or PostgreSQL)."""
    return history_opener(backend, tmp_path, request, autocheckpoint=False)


def context_store(path: Opener | Path, **options: Any) -> ContextStore:
    if callable(path):
        return ContextStore(path, **options)
    return ContextStore(lambda: SQLiteHistory(path, autocheckpoint=False), **options)


def random_message(rng: random.Random) -> ChatMessage:
    role = rng.choice(["user", "assistant"])
    return ChatMessage(role, " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 30))))


@pytest.mark.parametrize("cached", [2, 0])
async def test_cached_windows_always_match_the_database(path: Opener, cached: int) -> None:
    """
    Through appends, summaries, deletes and LRU eviction (or with no cache), every
    window and summary check the actor answers equals what the database itself answers.
    """
    rng = random.Random(1234)
    thresholds = random.Random(99)  # apart, so rng draws what it always drew
    contexts = ["a", "b", "c", "d"]
    async with actors.open_system() as system:
        ref = await system.spawn(
            lambda: context_store(path, window_tokens=120, cached_contexts=cached), name="contexts"
        )
        db = path()
        try:
            for step in range(600):
                cid = rng.choice(contexts)
                op = rng.random()
                if op < 0.45:
                    turns = [random_message(rng) for _ in range(rng.randint(1, 3))]
                    threshold = thresholds.choice([-1, 0, 50, 200, 1000])
                    appended = await ref.ask(AppendTurns(cid, tuple(turns), {"n": step}, threshold))
                    assert appended.count == len(db.history(cid))
                    assert appended.needs_summary == db.needs_summary(cid, threshold)
                elif op < 0.52:
                    last = len(db.history(cid)) if db.get(cid) else 0
                    if last:
                        upto = rng.randint(0, last)
                        await ref.ask(SetSummary(cid, f"summary {step}", upto))
                elif op < 0.55:
                    await ref.ask(DeleteContext(cid))
                budget = rng.choice([0, 5, 40, 119, 120, 121, 300, 10_000])
                threshold = rng.choice([-1, 0, 50, 200, 1000])
                assert await ref.ask(GetWindow(cid, budget)) == db.window(cid, budget)
                assert await ref.ask(NeedsSummary(cid, threshold)) == db.needs_summary(
                    cid, threshold
                )
        finally:
            db.close()


async def test_a_cached_window_is_answered_without_reading_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the first read, windows and summary checks of a context need no database reads."""
    reads: list[str] = []
    for name in ("window", "window_state", "needs_summary"):
        original = getattr(SQLiteHistory, name)

        def counted(self: SQLiteHistory, *args: Any, _name: str = name, _f: Any = original) -> Any:
            reads.append(_name)
            return _f(self, *args)

        monkeypatch.setattr(SQLiteHistory, name, counted)
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: context_store(tmp_path / "c.db"), name="contexts")
        assert pair(await ref.ask(GetWindow("c", 8000))) == (None, [])
        assert reads == ["window_state"]
        hello = [ChatMessage("user", "hello"), ChatMessage("assistant", "hi there")]
        assert await ref.ask(AppendTurns("c", tuple(hello), None, 8000)) == Appended(2, False)
        assert pair(await ref.ask(GetWindow("c", 8000))) == (None, hello)
        assert not await ref.ask(NeedsSummary("c", 8000))
        assert await ref.ask(NeedsSummary("c", 1))
        assert (await ref.ask(AppendTurns("c", (hello[0],), None, 1))).needs_summary
        assert reads == ["window_state"]


async def test_an_uncached_append_answers_its_summary_check_in_the_same_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An append to a context the cache does not hold checks the summary in the same store call, on the loop."""
    calls: list[str] = []
    run, run_inline = StoreActor.run, StoreActor.run_inline

    async def counted(self: Any, operation: Any, what: str) -> Any:
        calls.append(f"thread:{what}")
        return await run(self, operation, what)

    def counted_inline(self: Any, operation: Any, what: str) -> Any:
        calls.append(f"loop:{what}")
        return run_inline(self, operation, what)

    monkeypatch.setattr(StoreActor, "run", counted)
    monkeypatch.setattr(StoreActor, "run_inline", counted_inline)
    turns = (ChatMessage("user", "word " * 50),)
    async with actors.open_system() as system:
        ref = await system.spawn(
            lambda: context_store(tmp_path / "c.db", cached_contexts=0), name="contexts"
        )
        assert await ref.ask(AppendTurns("c", turns, None, 10)) == Appended(1, True)
        assert await ref.ask(AppendTurns("c", turns, None, 10_000)) == Appended(2, False)
        assert await ref.ask(AppendTurns("c", turns)) == Appended(3, False)
    assert calls == ["loop:AppendTurns"] * 3


async def test_the_log_is_checkpointed_off_the_loop_every_so_many_appends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With SQLite's own checkpoints off, the actor checkpoints every CHECKPOINT_EVERY appends, in a worker thread."""
    monkeypatch.setattr(rhetor.storage._contexts, "CHECKPOINT_EVERY", 10)
    threads: list[str] = []
    original = SQLiteHistory.checkpoint

    def checkpoint(self: SQLiteHistory) -> None:
        threads.append(threading.current_thread().name)
        original(self)

    monkeypatch.setattr(SQLiteHistory, "checkpoint", checkpoint)
    turn = (ChatMessage("user", "hello " * 100),)
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: context_store(tmp_path / "c.db"), name="contexts")
        for _ in range(35):
            await ref.ask(AppendTurns("c", turn))
        assert await ref.ask(GetHistory("c", limit=1))  # behind the last checkpoint
    assert len(threads) == 3
    assert threading.main_thread().name not in threads
    with sqlite3.connect(tmp_path / "c.db") as conn:
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000  # per connection


async def test_a_window_carries_the_token_cost_the_request_would_count(path: Opener) -> None:
    """The window's tokens equal a recount of its messages, from the cache and from the store alike."""
    turns = tuple(ChatMessage("user", f"turn number {i} " * (i + 1)) for i in range(30))
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: context_store(path, window_tokens=100), name="contexts")
        await ref.ask(AppendTurns("c", turns))
        for budget in (0, 50, 100, 10_000):  # the last is past the cache: read from the store
            window = await ref.ask(GetWindow("c", budget))
            assert window.tokens == count_message_tokens(window.messages) <= budget
            assert window.summary_tokens == 0
    db = path()
    assert db.window("c", 10_000).messages == turns
    db.close()


async def test_the_read_messages_answer_what_the_store_holds(path: Opener) -> None:
    """History, record, description, list and search answer the store's values; an unknown context is NotFound."""
    turns = (ChatMessage("user", "find the fox"), ChatMessage("assistant", "here it is"))
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: context_store(path), name="contexts")
        await ref.ask(AppendTurns("c", turns, {"k": "v"}))
        history = await ref.ask(GetHistory("c"))
        record = await ref.ask(ReadContext("c", limit=1))
        info = await ref.ask(GetContextInfo("c"))
        listed = await ref.ask(ListContexts())
        hits = await ref.ask(SearchContexts("fox"))
        assert await ref.ask(GetContextInfo("nope")) is None
        with pytest.raises(NotFound):
            await ref.ask(ReadContext("nope"))
        assert await ref.ask(DeleteContext("c"))
        assert not await ref.ask(DeleteContext("c"))
    assert [m.message for m in history] == list(turns)
    assert record.info == info and record.messages == history[-1:]
    assert info is not None and info.metadata == {"k": "v"} and listed == [info]
    assert [(h.context_id, h.seq) for h in hits] == [("c", 1)]


async def test_an_append_whose_asker_leaves_leaves_no_stale_window(path: Opener) -> None:
    """
    An append whose asker gives up once it is sent is still written (in one step
    on the loop for SQLite), and the window shows the turn, as the database does.
    """
    turn = ChatMessage("user", "written while nobody waited")
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: context_store(path), name="contexts")
        assert pair(await ref.ask(GetWindow("c", 8000))) == (None, [])  # now cached
        with trio.move_on_after(10) as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ref.ask, AppendTurns("c", (turn,)))
                await trio.testing.wait_all_tasks_blocked()
                nursery.cancel_scope.cancel()  # the asker leaves
            assert pair(await ref.ask(GetWindow("c", 8000))) == (None, [turn])
        assert not scope.cancelled_caught
    db = path()
    assert pair(db.window("c", 8000)) == (None, [turn])
    db.close()


async def test_a_bad_context_id_is_refused_by_the_cached_reads_too(path: Opener) -> None:
    """GetWindow, NeedsSummary and AppendTurns validate the id before looking in the cache."""
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: context_store(path), name="contexts")
        calls = (
            GetWindow("../x", 10),
            NeedsSummary("", 10),
            AppendTurns("a/b", (ChatMessage("user", "x"),), None, 10),
        )
        for call in calls:
            with pytest.raises(ValidationError) as info:
                await ref.ask(call)
            assert info.value.field == "context_id"


async def test_a_store_on_a_network_is_appended_to_from_a_worker_thread(
    pg: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL's appends wait on a network: the actor runs them in a worker thread, never on the loop."""
    from rhetor.storage._pg_history import PostgresHistory

    calls: list[str] = []
    run, run_inline = StoreActor.run, StoreActor.run_inline

    async def counted(self: Any, operation: Any, what: str) -> Any:
        calls.append(f"thread:{what}")
        return await run(self, operation, what)

    def counted_inline(self: Any, operation: Any, what: str) -> Any:
        calls.append(f"loop:{what}")
        return run_inline(self, operation, what)

    monkeypatch.setattr(StoreActor, "run", counted)
    monkeypatch.setattr(StoreActor, "run_inline", counted_inline)
    turns = (ChatMessage("user", "word " * 50),)
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: context_store(lambda: PostgresHistory(pg)), name="c")
        assert await ref.ask(AppendTurns("c", turns, None, 10)) == Appended(1, True)
        assert pair(await ref.ask(GetWindow("c", 8000))) == (None, list(turns))
        assert await ref.ask(AppendTurns("c", turns, None, 10_000)) == Appended(2, False)
    assert [c for c in calls if "AppendTurns" in c] == ["thread:AppendTurns"] * 2


async def test_two_actors_on_one_shared_store_without_a_cache_see_each_others_writes(
    pg: Any,
) -> None:
    """Two runtimes' ContextStores on one PostgreSQL database (cached_contexts=0) answer each other's turns."""
    from rhetor.storage._pg_history import PostgresHistory

    hello = ChatMessage("user", "hello")
    async with actors.open_system() as system:
        one = await system.spawn(
            lambda: context_store(lambda: PostgresHistory(pg), cached_contexts=0), name="one"
        )
        two = await system.spawn(
            lambda: context_store(lambda: PostgresHistory(pg), cached_contexts=0), name="two"
        )
        assert pair(await two.ask(GetWindow("c", 8000))) == (None, [])
        await one.ask(AppendTurns("c", (hello,)))
        assert pair(await two.ask(GetWindow("c", 8000))) == (None, [hello])
        assert (await two.ask(AppendTurns("c", (hello,)))).count == 2
