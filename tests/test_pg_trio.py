"""
The PostgreSQL ledger's hot group commits on trio: the same decisions as the thread path,
a connection closed when a batch is cancelled or fails, and the keeper using it.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
import trio

import actors
from rhetor._errors import StorageUnavailable
from rhetor._types import Usage
from rhetor.budget._interfaces import LedgerEntry, ReservationRow
from rhetor.budget._keeper import BudgetKeeper, GetBudget, Reserve, Settle
from rhetor.budget._pg_ledger import BUDGET_LOCK, PostgresLedger
from rhetor.budget._pg_ledger_trio import TrioBatches
from rhetor.budget._rules import Claim
from rhetor.storage._pg import PgDatabase
from rhetor.storage._pg_trio import TrioSession, text_rows
from tests.test_pg_ledger import reservation

STARTS = {"daily": 0.0, "weekly": 0.0, "monthly": 0.0}


@pytest.fixture
def batches(pg: PgDatabase) -> Iterator[TrioBatches]:
    writer = TrioBatches(pg)
    yield writer
    writer.close()


def _sessions(pg: PgDatabase) -> int:
    """Rhetor's connections to the database now (the pool's and the writer's)."""
    with pg.connection() as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = 'rhetor'"
        ).fetchone()
    return int(row[0]) if row else 0


def _keeper(pg: PgDatabase, owner: str, ledgers: list[PostgresLedger]) -> BudgetKeeper:
    """A keeper under enforce on ``pg``; each ledger it opens is appended to ``ledgers``."""

    def open_ledger() -> PostgresLedger:
        ledgers.append(PostgresLedger(pg))
        return ledgers[-1]

    return BudgetKeeper(
        open_ledger,
        policy="enforce",
        limits={"daily": 100.0, "weekly": 0.0, "monthly": 0.0},
        owner=owner,
    )


async def test_a_session_reads_every_result_of_a_simple_query_as_text(pg: PgDatabase) -> None:
    session = TrioSession(await trio.to_thread.run_sync(pg.connect))
    try:
        results = await session.query(
            "BEGIN; SELECT 1, NULL::text, 'é'; SELECT 2.5::numeric; COMMIT"
        )
        assert [text_rows(r) for r in results[1:3]] == [[("1", None, "é")], [("2.5",)]]
        with pytest.raises(psycopg.errors.DivisionByZero):
            await session.query("BEGIN; SELECT 1 / 0; SELECT 3")
        # Refused, rolled back, and still usable.
        assert text_rows((await session.query("SELECT 4"))[0]) == [("4",)]
    finally:
        session.close()


async def test_a_cancelled_query_closes_its_connection_at_once(pg: PgDatabase) -> None:
    session = TrioSession(await trio.to_thread.run_sync(pg.connect))
    with trio.move_on_after(0.2) as scope:
        await session.query("SELECT pg_sleep(30)")
    assert scope.cancelled_caught
    assert session.closed
    with pytest.raises(psycopg.OperationalError):
        await session.query("SELECT 1")


async def test_claims_and_charges_on_trio_are_decided_as_on_the_thread_path(
    pg: PgDatabase, batches: TrioBatches
) -> None:
    """The same transaction as settle_and_reserve's: charges count, replaced reservations do not."""
    ledger = PostgresLedger(pg)
    await trio.to_thread.run_sync(ledger.reserve_many, [reservation(1, "me", 0.5)])
    actual = LedgerEntry(
        "req-1", "openai", "gpt-4o", 10, 20, 0.125, charge_id="c1", reservation_id=1, ts=600.0
    )
    decisions = await batches.settle_and_reserve(
        [actual],
        [
            (reservation(2, "me", 0.75), Claim("openai", 0.75)),  # 0.125 + 0.75 fits 1.0
            (reservation(3, "me", 0.25), Claim("openai", 0.25)),  # with the one before, it does not
        ],
        policy="enforce",
        limits={("daily", None): 1.0},
        starts=STARTS,
    )
    assert [d.refused for d in decisions] == [False, True]
    assert [r.id for r in ledger.reservations()] == [2]
    assert [(e.reservation_id, e.cost) for e in ledger.entries()] == [(1, 0.125)]
    # A charges-only batch: one statement, no claims.
    loose = LedgerEntry("req-9", "openai", "gpt-4o", 1, 1, 0.25, charge_id="c9", ts=601.0)
    assert (
        await batches.settle_and_reserve([loose], [], policy="enforce", limits={}, starts=STARTS)
        == []
    )
    assert ledger.spent(0.0) == 0.375
    assert (batches.written, batches.connected) == (2, 1)  # one connection, kept between batches


async def test_a_stored_component_limit_is_read_in_the_same_transaction(
    pg: PgDatabase, batches: TrioBatches
) -> None:
    """A component's limit in force takes one more round trip (in a worker thread) and holds."""
    ledger = PostgresLedger(pg)
    await trio.to_thread.run_sync(lambda: ledger.set_limit("daily", 0.5, component="ergon"))

    def claim(rid: int, amount: float) -> tuple[ReservationRow, Claim]:
        row = reservation(rid, "me", amount)
        return (row, Claim("openai", amount, component="ergon"))

    decisions = await batches.settle_and_reserve(
        [],
        [claim(1, 0.375), claim(2, 0.25)],
        policy="enforce",
        limits={},
        starts=STARTS,
    )
    assert [d.refused for d in decisions] == [False, True]
    assert [r.id for r in ledger.reservations()] == [1]


async def test_a_batch_that_waits_out_the_lock_timeout_is_storage_unavailable_and_writes_nothing(
    pg: PgDatabase,
) -> None:
    short = PgDatabase(pg.url, lock_timeout=0.2, max_size=2).open()
    writer = TrioBatches(short)
    blocker = pg.connect()
    try:
        blocker.execute("BEGIN")
        blocker.execute("SELECT pg_advisory_xact_lock(%s)", (BUDGET_LOCK,))
        with pytest.raises(StorageUnavailable, match="LockNotAvailable"):
            await writer.settle_and_reserve(
                [],
                [(reservation(1, "me", 0.25), Claim("openai", 0.25))],
                policy="enforce",
                limits={("daily", None): 1.0},
                starts=STARTS,
            )
        blocker.rollback()
        assert not short.breaker.down  # the database answered: not an outage
        assert PostgresLedger(pg).reservations() == []
        # The failed batch's connection was closed; the next opens another, and lands.
        decisions = await writer.settle_and_reserve(
            [],
            [(reservation(2, "me", 0.25), Claim("openai", 0.25))],
            policy="enforce",
            limits={("daily", None): 1.0},
            starts=STARTS,
        )
        assert [d.refused for d in decisions] == [False]
        assert (writer.written, writer.connected) == (1, 2)
    finally:
        blocker.close()
        writer.close()
        short.close()


async def test_a_cancelled_batch_closes_its_connection_and_commits_nothing(
    pg: PgDatabase, batches: TrioBatches
) -> None:
    blocker = pg.connect()
    try:
        before = _sessions(pg)
        blocker.execute("BEGIN")
        blocker.execute("SELECT pg_advisory_xact_lock(%s)", (BUDGET_LOCK,))
        with trio.move_on_after(0.5) as scope:
            await batches.settle_and_reserve(
                [],
                [(reservation(1, "me", 0.25), Claim("openai", 0.25))],
                policy="enforce",
                limits={("daily", None): 1.0},
                starts=STARTS,
            )
        assert scope.cancelled_caught
        blocker.rollback()
        with trio.fail_after(5):
            while _sessions(pg) > before:  # the server notices the closed socket
                await trio.sleep(0.02)
        assert PostgresLedger(pg).reservations() == []
        assert batches.written == 0
    finally:
        blocker.close()


async def test_the_keeper_writes_a_steady_load_on_trio(pg: PgDatabase) -> None:
    """Reserves and settles go through the trio writer; every charge lands once."""
    ledgers: list[PostgresLedger] = []
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: _keeper(pg, "steady", ledgers), name="budget")

        async def one(i: int) -> None:
            held = await ref.ask(Reserve(f"r{i}", "openai", "gpt-4o", 0.5), timeout=30)
            settle = Settle(held.id, f"r{i}", "openai", "gpt-4o", "test", None, Usage(1, 1), 0.25)
            await ref.ask(settle, timeout=30)

        async with trio.open_nursery() as nursery:
            for i in range(40):
                nursery.start_soon(one, i)
        writer = ledgers[0].trio_batches
        kept = list(writer._sessions)
    assert writer.written > 0
    assert kept and all(session.closed for session in kept)  # closed with the keeper
    entries = PostgresLedger(pg).entries()
    assert sorted(e.request_id for e in entries) == sorted(f"r{i}" for i in range(40))
    assert PostgresLedger(pg).reservations() == []
    assert writer._sessions == []


async def test_a_crashed_keeper_closes_the_writers_connections(pg: PgDatabase) -> None:
    """A crash never reaches stopping(); the commit loop's end closes what the writer kept."""
    ledgers: list[PostgresLedger] = []
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: _keeper(pg, "crashing", ledgers), name="budget")
        await ref.ask(Reserve("r1", "openai", "gpt-4o", 0.5), timeout=30)
        first = ledgers[0].trio_batches
        assert (first.written, len(first._sessions)) == (1, 1)
        kept = first._sessions[0]
        system.faults.crash_next("budget")
        await ref.ask(GetBudget())  # crashes that incarnation; a new one answers
        await ref.ask(Reserve("r2", "openai", "gpt-4o", 0.5), timeout=30)  # restarted
        assert kept.closed and first._sessions == []


async def test_connections_kept_from_before_an_outage_are_not_used_after_it(pg: PgDatabase) -> None:
    """A restarted server closed them; the first batch after the outage opens a new one."""
    own = PgDatabase(pg.url, max_size=1).open()
    writer = TrioBatches(own)
    claim = [(reservation(1, "me", 0.25), Claim("openai", 0.25))]
    try:
        await writer.settle_and_reserve([], claim, policy="ignore", limits={}, starts=STARTS)
        [kept] = writer._sessions
        own.breaker.failed(psycopg.OperationalError("server closed the connection"), probe=False)
        assert own.breaker.down and not writer.ready  # the keeper writes through the thread path
        own.breaker.succeeded(probe=True)  # that path's probe reached the database
        claim = [(reservation(2, "me", 0.25), Claim("openai", 0.25))]
        await writer.settle_and_reserve([], claim, policy="ignore", limits={}, starts=STARTS)
        assert kept.closed
        assert (writer.written, writer.connected) == (2, 2)
    finally:
        writer.close()
        own.close()
