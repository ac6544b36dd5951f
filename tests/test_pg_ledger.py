"""
What only the shared ledger does: owners with leases, a sweep that takes only the dead,
and the keeper's group commits pipelined two at a time.
"""

from __future__ import annotations

import functools
import random
import threading
from collections.abc import Callable

import msgspec
import pytest
import trio

import actors
from rhetor._errors import StorageUnavailable
from rhetor._types import Usage
from rhetor.budget._interfaces import LedgerEntry, ReservationRow
from rhetor.budget._keeper import BudgetKeeper, Settle
from rhetor.budget._keeper_ledger import SHARED_CHECKPOINT_EVERY, SHARED_COMMITS_IN_FLIGHT
from rhetor.budget._pg_ledger import (
    _SETTLE,
    _SWEEP,
    BUDGET_LOCK,
    OwnerLease,
    PostgresLedger,
)
from rhetor.budget._pg_ledger_sql import _SPEND, _spend_args
from rhetor.budget._rules import Claim
from rhetor.storage._pg import PgDatabase
from tests.fakes.tcp_proxy import cuttable_proxy, database_address, proxied_url


def reservation(rid: int, owner: str, amount: float = 0.5) -> ReservationRow:
    return ReservationRow(
        id=rid,
        key=f"k{rid}",
        owner=owner,
        request_id=f"req-{rid}",
        provider="openai",
        model="gpt-4o",
        input_tokens=100,
        output_tokens=1000,
        amount=amount,
        ts=500.0 + rid,
    )


def settled(rid: int, charge_id: str) -> LedgerEntry:
    """The one-cent charge that settles reservation ``rid`` at t=600 s."""
    return LedgerEntry(
        f"req-{rid}",
        "openai",
        "gpt-4o",
        1,
        1,
        0.01,
        charge_id=charge_id,
        reservation_id=rid,
        ts=600.0,
    )


@pytest.fixture
def ledger(pg: PgDatabase) -> PostgresLedger:
    return PostgresLedger(pg)


def test_the_sweep_takes_only_owners_without_a_lease(
    pg: PgDatabase, ledger: PostgresLedger
) -> None:
    """A live owner's reservations stay; a closed lease's and an unregistered owner's are billed."""
    alive, dead = OwnerLease(pg, "alive"), OwnerLease(pg, "dead")
    alive.hold()
    dead.hold()
    ledger.reserve_many(
        [reservation(1, "alive"), reservation(2, "dead", 0.25), reservation(3, "never-seen", 0.5)]
    )
    assert ledger.sweep("me") == (1, 0.5)  # only the unregistered owner is gone so far
    dead.close()  # its connection ends, and with it the lock: as a kill -9 would
    assert ledger.sweep("me") == (1, 0.25)
    assert [r.owner for r in ledger.reservations()] == ["alive"]
    billed = {e.reservation_id: (e.status, e.billed, e.cost) for e in ledger.entries()}
    assert billed == {2: ("interrupted", "worst_case", 0.25), 3: ("interrupted", "worst_case", 0.5)}
    with pg.connection() as conn:
        owners = [row[0] for row in conn.execute("SELECT owner FROM owners ORDER BY owner")]
    assert owners == ["alive"]  # the dead owner, with nothing left, is forgotten
    alive.close()


def test_a_lease_whose_connection_broke_is_taken_again(
    pg: PgDatabase, ledger: PostgresLedger
) -> None:
    """ensure() notices a lease cut off by the server and holds it again before anyone sweeps."""
    lease = OwnerLease(pg, "restarted")
    lease.hold()
    try:
        ledger.reserve_many([reservation(1, "restarted")])
        with pg.connection() as conn:
            # As a database restart would: the server ends the lease's session (waiting up to 5 s).
            conn.execute("SELECT pg_terminate_backend(%s, 5000)", (lease.backend_pid,))
        assert lease.ensure() is True
        assert lease.ensure() is False
        assert ledger.sweep("someone") == (0, 0.0)
    finally:
        lease.close()


def test_a_settle_after_a_sweep_replaces_the_interrupted_charge(
    pg: PgDatabase, ledger: PostgresLedger
) -> None:
    """A process only cut off, not dead, settles later: its real charge replaces the worst case."""
    ledger.reserve_many([reservation(1, "cut-off", 0.5)])
    assert ledger.sweep("me") == (1, 0.5)
    actual = LedgerEntry(
        "req-1", "openai", "gpt-4o", 10, 20, 0.01, charge_id="c1", reservation_id=1, ts=600.0
    )
    ledger.record_many([actual])
    (charge,) = ledger.entries()
    assert (charge.charge_id, charge.cost, charge.status) == ("c1", 0.01, "ok")
    assert ledger.spent(0.0) == 0.01


def _wait_until_someone_waits_for_a_lock(pg: PgDatabase) -> None:
    """Polls (at most 10 s) until a session of the database waits for a row or lock."""
    for _ in range(1000):
        with pg.connection() as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND pid IN"
                " (SELECT pid FROM pg_stat_activity WHERE datname = current_database())"
            ).fetchone()
        if row and row[0]:
            return
        threading.Event().wait(0.01)
    raise AssertionError("nobody waited for the lock")


def _in_thread(call: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    out: list[object] = []

    def run() -> None:
        try:
            out.append(call())
        except BaseException as exc:  # handed to the test
            out.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


@pytest.mark.parametrize("sweep_holds", [True, False])
def test_a_sweep_and_a_settle_racing_on_two_connections_bill_once(
    pg: PgDatabase, ledger: PostgresLedger, sweep_holds: bool
) -> None:
    """One connection's uncommitted sweep (or settle) makes the other wait; exactly one charge results."""
    ledger.reserve_many([reservation(1, "cut-off", 0.5)])
    actual = LedgerEntry(
        "req-1", "openai", "gpt-4o", 10, 20, 0.01, charge_id="c1", reservation_id=1, ts=600.0
    )
    conn = pg.connect()
    try:
        with conn.transaction():
            if sweep_holds:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (BUDGET_LOCK,))
                conn.execute(_SWEEP, {"owner": "me"})
                thread, out = _in_thread(lambda: ledger.record_many([actual]))
            else:
                conn.execute(_SETTLE, {"charges": msgspec.json.encode([actual]).decode()})
                thread, out = _in_thread(lambda: ledger.sweep("me"))
            _wait_until_someone_waits_for_a_lock(pg)
        thread.join(10)
    finally:
        conn.close()
    assert not thread.is_alive()
    assert out == [None] if sweep_holds else out == [(0, 0.0)]
    [charge] = ledger.entries()
    assert (charge.charge_id, charge.cost, charge.status) == ("c1", 0.01, "ok")
    assert ledger.reservations() == []


def test_many_settles_and_sweeps_at_once_bill_each_reservation_once(
    pg: PgDatabase, ledger: PostgresLedger
) -> None:
    """Settle batches and sweeps from six connections at once: one charge per reservation, no deadlock."""
    ids = list(range(1, 121))
    ledger.reserve_many([reservation(rid, "cut-off") for rid in ids])
    rng = random.Random(13)
    batches = [rng.sample(ids, 30) for _ in range(4)]

    def settle(batch: list[int]) -> None:
        ledger.record_many([settled(rid, f"c{rid}") for rid in batch])

    calls: list[Callable[[], object]] = [functools.partial(settle, b) for b in batches]
    calls += [functools.partial(ledger.sweep, "me") for _ in range(2)]
    started = [_in_thread(call) for call in calls]
    for thread, _ in started:
        thread.join(30)
    for thread, out in started:
        assert not thread.is_alive()
        assert not any(isinstance(o, BaseException) for o in out), out
    charges = ledger.entries()
    assert sorted(e.reservation_id or 0 for e in charges) == ids
    paid = {rid for batch in batches for rid in batch}
    for charge in charges:
        # A settled request's real charge always wins over the sweeper's worst case.
        assert charge.status == ("ok" if charge.reservation_id in paid else "interrupted")
    assert ledger.reservations() == []


def _rolled_up(
    pg: PgDatabase, table: str = "spend_hours", unit: int = 3600
) -> tuple[dict[tuple[float, str, str], float], ...]:
    """A rollup (spend_hours, spend_days), and the charges summed per its bucket, provider and component (non-zero sums)."""
    with pg.connection() as conn:
        kept, summed = (
            {
                (float(h), p, c): round(float(cost), 9)
                for h, p, c, cost in conn.execute(query).fetchall()
                if round(float(cost), 9)
            }
            for query in (
                f"SELECT * FROM (SELECT {'hour' if unit == 3600 else 'day'}, provider, component,"
                f" cost FROM {table}) AS rollup",
                f"SELECT floor(ts / {unit}) * {unit}, provider, component, sum(cost) FROM entries"
                " GROUP BY 1, 2, 3",
            )
        )
    return kept, summed


def test_spend_hours_and_days_always_equal_the_charges_summed_per_hour_and_day(
    pg: PgDatabase, ledger: PostgresLedger
) -> None:
    """Settles with and without reservations, a sweep and a late settle replacing its charge keep the hourly and daily totals exact."""
    ledger.reserve_many([reservation(rid, "cut-off", 0.5) for rid in (1, 2, 3)])

    def charge(rid: int | None, cost: float, ts: float, component: str = "ergon") -> LedgerEntry:
        return LedgerEntry(
            f"req-{rid}",
            "openai",
            "gpt-4o",
            1,
            1,
            cost,
            component=component,
            charge_id=f"c{rid}-{ts}",
            reservation_id=rid,
            ts=ts,
        )

    ledger.record_many(
        [charge(1, 0.25, 3600.0), charge(None, 0.125, 3599.0, "ui"), charge(None, 0.0, 7300.0)]
    )
    assert ledger.sweep("me") == (2, 1.0)  # reservations 2 and 3, at ts 502 and 503
    ledger.record_many([charge(2, 0.0625, 9000.0)])  # replaces the interrupted charge of 2
    kept, summed = _rolled_up(pg)
    assert kept == summed
    days, summed_days = _rolled_up(pg, "spend_days", 86400)
    assert (
        days
        == summed_days
        == {
            (0.0, "openai", ""): 0.5,
            (0.0, "openai", "ui"): 0.125,
            (0.0, "openai", "ergon"): 0.3125,
        }
    )
    assert kept == {
        (0.0, "openai", ""): 0.5,  # the sweep's interrupted charge of 3 (no component)
        (0.0, "openai", "ui"): 0.125,
        (3600.0, "openai", "ergon"): 0.25,
        (7200.0, "openai", "ergon"): 0.0625,
    }


def test_the_check_reads_whole_hours_from_spend_hours_and_a_partial_first_hour_from_charges(
    pg: PgDatabase, ledger: PostgresLedger
) -> None:
    """A day starting at half past counts its first half hour's charges alone, then whole hours from the rollup."""
    start = 36000.0 + 1800.0  # a budget time zone at a half-hour offset
    ledger.record_many(
        [
            LedgerEntry("before", "openai", "gpt-4o", 1, 1, 0.5, ts=36000.0 + 900.0),
            LedgerEntry("after", "openai", "gpt-4o", 1, 1, 0.25, ts=36000.0 + 2700.0),
            LedgerEntry("later", "openai", "gpt-4o", 1, 1, 0.125, ts=36000.0 + 7200.0),
        ]
    )
    with pg.connection("written") as conn:
        # A whole hour known to the rollup only: proof that the check reads it.
        conn.execute(
            "INSERT INTO spend_hours VALUES (%s, 'openai', '', 0.0625)", (36000.0 + 3 * 3600,)
        )

    def decide(amount: float, rid: int) -> bool:
        (decision,) = ledger.reserve_checked(
            [(reservation(rid, "me", amount), Claim("openai", amount))],
            policy="enforce",
            limits={("daily", None): 1.0},
            starts={"daily": start, "weekly": start, "monthly": start},
        )
        return not decision.refused

    assert not decide(0.5626, 1)  # spent 0.25 + 0.125 + 0.0625 = 0.4375
    assert decide(0.5625, 2)


def test_settle_and_reserve_checks_claims_against_the_charges_it_writes(
    ledger: PostgresLedger,
) -> None:
    """The charges of the same transaction count, and the reservations they replace no longer do."""
    ledger.reserve_many([reservation(1, "me", 0.5)])
    actual = LedgerEntry(
        "req-1", "openai", "gpt-4o", 10, 20, 0.125, charge_id="c1", reservation_id=1, ts=600.0
    )
    decisions = ledger.settle_and_reserve(
        [actual],
        [
            (reservation(2, "me", 0.75), Claim("openai", 0.75)),  # 0.125 + 0.75 fits 1.0
            (reservation(3, "me", 0.25), Claim("openai", 0.25)),  # with the one before, it does not
        ],
        policy="enforce",
        limits={("daily", None): 1.0},
        starts={"daily": 0.0, "weekly": 0.0, "monthly": 0.0},
    )
    assert [d.refused for d in decisions] == [False, True]
    assert [r.id for r in ledger.reservations()] == [2]
    assert [(e.reservation_id, e.cost) for e in ledger.entries()] == [(1, 0.125)]
    assert ledger.spent(0.0) == 0.125


def test_a_batch_whose_prepared_statements_were_deallocated_prepares_them_again(
    pg: PgDatabase,
) -> None:
    """After a rollback psycopg deallocates every prepared statement: the next batch still works."""
    one = PgDatabase(pg.url, max_size=1).open()
    try:
        ledger = PostgresLedger(one)
        starts = {"daily": 0.0, "weekly": 0.0, "monthly": 0.0}

        def reserve(rid: int) -> list[bool]:
            decisions = ledger.settle_and_reserve(
                [],
                [(reservation(rid, "me", 0.25), Claim("openai", 0.25))],
                policy="enforce",
                limits={("daily", None): 1.0},
                starts=starts,
            )
            return [d.refused for d in decisions]

        assert reserve(1) == [False]
        with one.connection("written") as conn:
            conn.execute("DEALLOCATE ALL")
        assert reserve(2) == [False]
        with pytest.raises(StorageUnavailable), one.transaction("written") as conn:
            conn.execute("SELECT 1 / 0")  # rolled back: psycopg deallocates
        assert reserve(3) == [False]
        assert [r.id for r in ledger.reservations()] == [1, 2, 3]
    finally:
        one.close()


async def spawn_keeper(system: actors.System, pg: PgDatabase, owner: str) -> actors.Ref:
    """A BudgetKeeper on the shared ledger, under warn with no limits."""
    return await system.spawn(
        lambda: BudgetKeeper(
            lambda: PostgresLedger(pg),
            policy="warn",
            limits={"daily": 0.0, "weekly": 0.0, "monthly": 0.0},
            owner=owner,
        ),
        name="budget",
    )


def unreserved_charge(request_id: str) -> Settle:
    """A one-cent charge with no reservation (reservation 0: nothing to check)."""
    return Settle(0, request_id, "openai", "gpt-4o", "test", None, Usage(1, 1), 0.01)


def _waiting_for_locks(pg: PgDatabase) -> int:
    """How many sessions of the database wait for a lock now."""
    with pg.connection() as conn:
        row = conn.execute(
            "SELECT count(DISTINCT pid) FROM pg_locks WHERE NOT granted AND pid IN"
            " (SELECT pid FROM pg_stat_activity WHERE datname = current_database())"
        ).fetchone()
    return int(row[0]) if row else 0


async def test_the_keeper_has_two_group_commits_in_flight_on_a_shared_ledger_and_no_more(
    pg: PgDatabase,
) -> None:
    """
    While another session holds the charges' table, the keeper's settles wait in two
    transactions at once, never three; released, every settle is answered and written once.
    """
    assert SHARED_COMMITS_IN_FLIGHT == 2
    blocker = pg.connect()
    answered: list[int] = []
    try:
        async with actors.open_system() as system:
            ref = await spawn_keeper(system, pg, "pipelined")
            # Taken once the keeper has started (its start sweeps into this table).
            blocker.execute("BEGIN")
            blocker.execute("LOCK TABLE entries IN EXCLUSIVE MODE")

            async def one(i: int) -> None:
                await ref.ask(unreserved_charge(f"r{i}"), timeout=30)
                answered.append(i)

            try:
                with trio.fail_after(20):
                    async with trio.open_nursery() as nursery:
                        for i in range(12):
                            nursery.start_soon(one, i)
                            await trio.sleep(0.01)  # one batch each, while slots are free
                        while await trio.to_thread.run_sync(_waiting_for_locks, pg) < 2:
                            await trio.sleep(0.02)
                        await trio.sleep(0.3)  # a third commit would have started by now
                        assert await trio.to_thread.run_sync(_waiting_for_locks, pg) == 2
                        assert answered == []
                        await trio.to_thread.run_sync(blocker.rollback)
            finally:
                # Also when an assertion failed: the keeper's stop must not wait on the lock.
                await trio.to_thread.run_sync(blocker.rollback)
    finally:
        blocker.close()
    assert sorted(answered) == list(range(12))
    entries = PostgresLedger(pg).entries()
    assert sorted(e.request_id for e in entries) == sorted(f"r{i}" for i in range(12))


def test_settles_replacing_the_same_interrupted_charges_in_opposite_orders_never_deadlock(
    pg: PgDatabase, ledger: PostgresLedger
) -> None:
    """
    Two settles at once for the same swept reservations, their charges in opposite
    orders: each real charge replaces the interrupted one once, and neither fails.
    """
    for round_ in range(8):
        ids = list(range(1 + 100 * round_, 61 + 100 * round_))
        ledger.reserve_many([reservation(rid, "cut-off") for rid in ids])
        assert ledger.sweep("me")[0] == len(ids)  # every one is now an interrupted charge

        def settle(order: list[int], copy: int) -> None:
            ledger.record_many([settled(rid, f"c{rid}-{copy}") for rid in order])

        started = [
            _in_thread(functools.partial(settle, ids, 1)),
            _in_thread(functools.partial(settle, ids[::-1], 2)),
        ]
        for thread, _ in started:
            thread.join(30)
        for thread, out in started:
            assert not thread.is_alive()
            assert not any(isinstance(o, BaseException) for o in out), out
    charges = ledger.entries()
    assert all(e.status == "ok" for e in charges)
    assert len({e.reservation_id for e in charges}) == len(charges) == 8 * 60


def _reservations_pages(pg: PgDatabase) -> int:
    with pg.connection() as conn:
        row = conn.execute(
            "SELECT pg_relation_size('reservations') / current_setting('block_size')::int"
        ).fetchone()
    return int(row[0]) if row else 0


def _churn(ledger: PostgresLedger, first: int, count: int = 2000) -> None:
    """``count`` reservations held, then settled: every one a dead row until a vacuum."""
    ids = range(first, first + count)
    ledger.reserve_many([reservation(rid, "churn") for rid in ids])
    ledger.record_many([settled(rid, f"c{rid}") for rid in ids])


def test_a_checkpoint_vacuums_the_reservations_so_their_pages_are_reused(
    pg: PgDatabase, ledger: PostgresLedger
) -> None:
    """
    Settled reservations leave dead rows that every checked batch would read; after a
    checkpoint the next reservations reuse their pages, and without one the table grows.
    The settle after the vacuum (which leaves the planner thinking the table empty) takes
    its 2,000 reservations in milliseconds (it once planned a lock per row per row: 15 s).
    """
    with pg.connection() as conn:  # this database's own table: no autovacuum races the test
        conn.execute("ALTER TABLE reservations SET (autovacuum_enabled = false)")
    _churn(ledger, 1)
    churned = _reservations_pages(pg)
    assert churned > 10
    ledger.checkpoint()
    _churn(ledger, 10_001)
    reused = _reservations_pages(pg)
    assert reused <= churned * 1.2  # the vacuumed pages, reused (less a few line pointers)
    _churn(ledger, 20_001)  # no checkpoint before it
    assert _reservations_pages(pg) >= reused + churned * 0.8
    assert len(ledger.entries()) == 6000 and ledger.reservations() == []


async def test_the_keeper_vacuums_a_shared_ledger_every_so_many_commits_beside_them(
    pg: PgDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    Every SHARED_CHECKPOINT_EVERY commits the keeper runs the ledger's checkpoint (a vacuum)
    in a worker thread, one at a time, and commits go on while it runs.
    """
    release = threading.Event()
    calls: list[int] = []
    original = PostgresLedger.checkpoint

    def checkpoint(self: PostgresLedger) -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            assert release.wait(20)  # the first one holds until the commits went on
        original(self)

    monkeypatch.setattr(PostgresLedger, "checkpoint", checkpoint)
    async with actors.open_system() as system:
        ref = await spawn_keeper(system, pg, "tidy")

        async def settle(i: int) -> None:
            await ref.ask(unreserved_charge(f"r{i}"), timeout=30)

        with trio.fail_after(60):
            for i in range(SHARED_CHECKPOINT_EVERY + 2):
                await settle(i)
            while not calls:
                await trio.sleep(0.01)
            # The first vacuum is held: the commits go on, and no second one starts.
            for i in range(SHARED_CHECKPOINT_EVERY + 2, 2 * SHARED_CHECKPOINT_EVERY + 4):
                await settle(i)
            assert calls == [0]
            release.set()
            for i in range(2 * SHARED_CHECKPOINT_EVERY + 4, 3 * SHARED_CHECKPOINT_EVERY + 4):
                await settle(i)
            while len(calls) < 2:
                await trio.sleep(0.01)
    assert len(PostgresLedger(pg).entries()) == 3 * SHARED_CHECKPOINT_EVERY + 4


async def test_commits_that_the_database_refused_never_start_its_vacuum(
    pg: PgDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    While the database is cut off every commit fails at once, and so would a vacuum: those
    commits are not counted toward it, so an outage does not log a failed vacuum every
    hundred requests; once the database answers, the count goes on.
    """
    calls: list[int] = []
    monkeypatch.setattr(PostgresLedger, "checkpoint", lambda self: calls.append(1))
    async with cuttable_proxy(*database_address(pg.url)) as proxy:
        # Opened and closed in a thread: the proxy runs on this loop.
        db = await trio.to_thread.run_sync(PgDatabase(proxied_url(pg.url, proxy)).open)
        try:
            async with actors.open_system() as system:
                ref = await spawn_keeper(system, db, "cut")
                proxy.cut()
                with trio.fail_after(60):
                    # Under warn the charges are kept, to be written once it answers.
                    for i in range(SHARED_CHECKPOINT_EVERY + 20):
                        await ref.ask(unreserved_charge(f"cut{i}"), timeout=30)
                    await trio.sleep(0.5)
                    assert calls == []
                    proxy.restore()
                    i = 0
                    while not calls:
                        await ref.ask(unreserved_charge(f"back{i}"), timeout=30)
                        i += 1
                    assert i >= SHARED_CHECKPOINT_EVERY - 1
        finally:
            await trio.to_thread.run_sync(db.close)


def _scattered_charges(
    rng: random.Random,
    count: int,
    providers: tuple[str, ...],
    *,
    days: int,
    components: tuple[str, ...] = ("",),
) -> list[LedgerEntry]:
    """
    ``count`` charges over ``days`` UTC days, the providers in turn: some at a day's
    start, some at an hour's, the rest anywhere (the rollups' edges and insides).
    """
    charges = []
    for i in range(count):
        cost = round(rng.uniform(0, 0.01), 6)
        component = rng.choice(components) if len(components) > 1 else components[0]
        ts = rng.choice(
            [
                86400.0 * rng.randrange(days),
                3600.0 * rng.randrange(24 * days),
                rng.uniform(0, days * 86400.0),
            ]
        )
        charges.append(
            LedgerEntry(
                f"r{i}",
                providers[i % len(providers)],
                "m",
                1,
                1,
                cost,
                component=component,
                charge_id=f"c{i}",
                ts=ts,
            )
        )
    return charges


def test_spent_reads_whole_hours_from_spend_hours_and_equals_the_charges_summed(
    pg: PgDatabase, ledger: PostgresLedger
) -> None:
    """
    spent() (GET /budget's totals) sums spend_days' whole days, spend_hours' hours
    before them and the first partial hour's charges: for any start, on an hour,
    between, or on a charge itself, of all providers or one, it is the charges' sum;
    and a charge the sweep replaced counts once.
    """
    rng = random.Random(7)
    providers = ("openai", "anthropic", "ollama")
    charges = _scattered_charges(rng, 400, providers, days=4)
    ledger.record_many(charges)
    ledger.reserve_many([reservation(9001, "gone", 0.5)])
    assert ledger.sweep("me") == (1, 0.5)  # an interrupted charge at t=9501 s
    ledger.record_many([settled(9001, "late")])  # replaced by its real one at t=600 s
    every = ledger.entries()
    starts = [0.0, 1800.0, 3600.0, 3599.999, 600.0, 9501.0, 86_400.0, 90_000.0, 300_000.0]
    starts += [rng.uniform(0, 345_600) for _ in range(20)] + [c.ts for c in charges[:10]]
    for since in starts:
        for provider in (None, *providers):
            expected = sum(
                e.cost for e in every if e.ts >= since and provider in (None, e.provider)
            )
            assert ledger.spent(since, provider) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_the_check_reads_whole_days_from_spend_days_and_the_hours_before_them(
    pg: PgDatabase, ledger: PostgresLedger
) -> None:
    """A month starting at half past an hour: its partial hour from charges, its first day's hours, then whole days."""
    start = 36000.0 + 1800.0  # 10:30 UTC on day 0
    ledger.record_many(
        [
            LedgerEntry("before", "openai", "gpt-4o", 1, 1, 0.5, ts=36000.0 + 900.0),
            LedgerEntry("partial", "openai", "gpt-4o", 1, 1, 0.25, ts=36000.0 + 2700.0),
            LedgerEntry("hour", "openai", "gpt-4o", 1, 1, 0.125, ts=72000.0),
            LedgerEntry("day", "openai", "gpt-4o", 1, 1, 0.0625, ts=2 * 86400.0 + 5.0),
        ]
    )
    with pg.connection("written") as conn:
        # A whole day known to the daily rollup only: proof that the check reads it.
        conn.execute("INSERT INTO spend_days VALUES (%s, 'openai', '', 0.03125)", (86400.0,))

    def decide(amount: float, rid: int) -> bool:
        (decision,) = ledger.reserve_checked(
            [(reservation(rid, "me", amount), Claim("openai", amount))],
            policy="enforce",
            limits={("monthly", None): 1.0},
            starts={"daily": 3 * 86400.0, "weekly": 3 * 86400.0, "monthly": start},
        )
        return not decision.refused

    assert not decide(0.53126, 1)  # spent 0.25 + 0.125 + 0.03125 + 0.0625 = 0.46875
    assert decide(0.53125, 2)


def test_the_checks_sums_equal_the_charges_summed_for_any_start(
    pg: PgDatabase, ledger: PostgresLedger
) -> None:
    """
    Over charges spread across days, for starts on days, hours, half hours and charges,
    each period's sum in the check (days, hours, partial hour) is the charges' sum.
    """
    rng = random.Random(11)
    providers = ("openai", "anthropic")
    charges = _scattered_charges(rng, 500, providers, days=6, components=("", "ergon"))
    ledger.record_many(charges)
    candidates = [0.0, 1800.0, 86400.0, 86399.0, 90000.0, 3.5 * 86400, 6 * 86400.0]
    candidates += [rng.uniform(0, 6 * 86400) for _ in range(12)] + [c.ts for c in charges[:6]]
    for _ in range(12):
        starts = rng.sample(candidates, 3)
        args = _spend_args(starts)
        with pg.connection() as conn:
            rows = {r[0]: [float(x) for x in r[1:]] for r in conn.execute(_SPEND, args)}
        for provider in providers:
            expected = [
                sum(c.cost for c in charges if c.provider == provider and c.ts >= since)
                for since in starts
            ]
            assert rows.get(provider, [0.0, 0.0, 0.0]) == pytest.approx(expected, abs=1e-9)
