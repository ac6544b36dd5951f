from __future__ import annotations

import random
import sqlite3
import threading
from pathlib import Path
from typing import Any

import attrs
import pytest

from rhetor._errors import ServiceUnavailable, ValidationError
from rhetor.budget._interfaces import LedgerEntry, ReservationRow, UsageRow
from rhetor.budget._ledger import SQLiteLedger


def entry(
    provider: str = "anthropic",
    model: str = "claude",
    cost: float = 1.0,
    *,
    ts: float = 1000.0,
    component: str = "ergon",
    context_id: str | None = None,
    status: str = "ok",
) -> LedgerEntry:
    return LedgerEntry(
        request_id=f"r-{ts}",
        provider=provider,
        model=model,
        input_tokens=10,
        output_tokens=5,
        cost=cost,
        status=status,  # type: ignore[arg-type]
        component=component,
        context_id=context_id,
        ts=ts,
    )


def reservation(rid: int, owner: str = "alive", amount: float = 0.5) -> ReservationRow:
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
        component="ergon",
        ts=500.0 + rid,
    )


@pytest.fixture
def ledger(tmp_path: Path) -> SQLiteLedger:
    return SQLiteLedger(tmp_path / "ledger.db")


def test_spent_sums_since_and_per_provider(ledger: SQLiteLedger) -> None:
    """spent() sums costs at or after `since`, overall or for one provider."""
    ledger.record_many(
        [
            entry("anthropic", cost=1.0, ts=100.0),
            entry("anthropic", cost=2.0, ts=200.0),
            entry("openai", cost=4.0, ts=200.0),
            entry("openai", cost=8.0, ts=300.0),
        ]
    )
    assert ledger.spent(0.0) == 15.0
    assert ledger.spent(200.0) == 14.0
    assert ledger.spent(200.0, "anthropic") == 2.0
    assert ledger.spent(0.0, "nobody") == 0.0
    assert ledger.spent(1e12) == 0.0


@pytest.mark.parametrize(
    ("group_by", "expected"),
    [
        ("provider", [UsageRow("openai", 1, 10, 5, 4.0), UsageRow("anthropic", 2, 20, 10, 3.0)]),
        ("model", [UsageRow("gpt", 1, 10, 5, 4.0), UsageRow("claude", 2, 20, 10, 3.0)]),
        ("component", [UsageRow("ergon", 2, 20, 10, 5.0), UsageRow("hermes", 1, 10, 5, 2.0)]),
        ("context", [UsageRow(None, 2, 20, 10, 6.0), UsageRow("c1", 1, 10, 5, 1.0)]),
    ],
)
def test_usage_groups(ledger: SQLiteLedger, group_by: str, expected: list[UsageRow]) -> None:
    """usage() sums requests, tokens and cost per group, costliest first."""
    ledger.record_many(
        [
            entry("anthropic", "claude", 1.0, ts=10.0, context_id="c1"),
            entry("anthropic", "claude", 2.0, ts=20.0, component="hermes"),
            entry("openai", "gpt", 4.0, ts=30.0),
            entry("openai", "gpt", 100.0, ts=1.0),  # before `since`
        ]
    )
    assert ledger.usage(5.0, group_by) == expected  # type: ignore[arg-type]


def test_usage_rejects_unknown_grouping(ledger: SQLiteLedger) -> None:
    """An unknown group_by is a ValidationError, never spliced into SQL."""
    with pytest.raises(ValidationError) as info:
        ledger.usage(0.0, "provider; DROP TABLE entries")  # type: ignore[arg-type]
    assert info.value.field == "group_by"


def test_record_many_is_atomic(ledger: SQLiteLedger) -> None:
    """A batch with one bad row stores nothing."""
    good = entry(cost=1.0)
    # Only the database CHECK constraint can catch a row that skipped the validator.
    with attrs.validators.disabled():
        bad = attrs.evolve(good, status="bogus")  # type: ignore[arg-type]
    with pytest.raises(ServiceUnavailable) as info:  # the ledger's translation of SQLite's error
        ledger.record_many([good, bad])
    assert isinstance(info.value.__cause__, sqlite3.IntegrityError)
    assert ledger.spent(0.0) == 0.0
    ledger.record(good)
    assert ledger.spent(0.0) == 1.0


def test_record_many_round_trips_every_field_exactly(ledger: SQLiteLedger) -> None:
    """Floats, big integers, NULL and awkward text come back exactly as they went in."""
    rng = random.Random(7)
    batch = [
        LedgerEntry(
            request_id=f"r{i}",
            provider="openai",
            model="gpt-4o",
            input_tokens=rng.randrange(10**12),
            output_tokens=rng.randrange(10**6),
            cost=rng.random() * rng.choice([1e-9, 1e-3, 1.0, 1e6]),
            status=rng.choice(["ok", "partial", "failed"]),  # type: ignore[arg-type]
            component=rng.choice(["", "ergon", 'it\'s \\ "quoted" \u00fc \U0001f600']),
            context_id=rng.choice([None, "ctx-1"]),
            ts=1_700_000_000 + rng.random() * 1e6,
        )
        for i in range(500)
    ]
    ledger.record_many(batch)
    stored = sorted(ledger.entries(), key=lambda e: e.id or 0)
    assert [attrs.evolve(e, id=None) for e in stored] == batch


class CountingConnection:
    """A sqlite3 connection that counts the statements Python hands it."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.statements: list[str] = []

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        self.statements.append(sql)
        return self.conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


def test_record_many_sends_a_batch_as_one_insert(ledger: SQLiteLedger) -> None:
    """
    One statement per batch, not one per row, and no BEGIN or COMMIT around it.

    A row-by-row executemany releases and retakes the GIL per row; from a
    worker thread beside a busy event loop each retake waits for a forced
    switch, so batches crawled. See SQLiteLedger.record_many.
    """
    counting = CountingConnection(ledger._conn)
    ledger._conn = counting  # type: ignore[assignment]
    ledger.record_many([entry(ts=float(i)) for i in range(50)])
    ledger.record_many([])
    ledger.reserve_many([reservation(i) for i in range(1, 51)])
    ledger._conn = counting.conn
    assert [s.split()[:3] for s in counting.statements] == [
        ["INSERT", "INTO", "entries"],
        ["INSERT", "INTO", "reservations"],
    ]
    assert len(ledger.entries()) == 50
    assert len(ledger.reservations()) == 50


def test_entry_status_validated() -> None:
    """A ledger entry accepts only ok, partial or failed."""
    with pytest.raises(ValidationError):
        entry(status="great")


def test_entries_newest_first(ledger: SQLiteLedger) -> None:
    """entries() returns stored entries with ids, newest first."""
    ledger.record(entry(cost=1.0, ts=1.0))
    ledger.record(entry(cost=2.0, ts=2.0, status="partial"))
    got = ledger.entries()
    assert [e.cost for e in got] == [2.0, 1.0]
    assert got[0].status == "partial"
    assert all(e.id is not None for e in got)
    assert ledger.entries(1.5) == got[:1]
    assert len(ledger.entries(limit=1)) == 1


def test_limits_and_policy_persist(tmp_path: Path) -> None:
    """Limits, policy and entries survive closing and reopening the ledger."""
    with SQLiteLedger(tmp_path / "l.db") as ledger:
        assert ledger.get_limits() == {}
        assert ledger.get_policy() is None
        ledger.set_limit("daily", 5.0)
        ledger.set_limit("daily", 10)  # replaces
        ledger.set_limit("monthly", 100.0, provider="openai")
        ledger.set_policy("enforce")
        ledger.record(entry(cost=3.0))
    with SQLiteLedger(tmp_path / "l.db") as ledger:
        assert ledger.get_limits() == {("daily", None): 10.0, ("monthly", "openai"): 100.0}
        assert ledger.get_policy() == "enforce"
        assert ledger.spent(0.0) == 3.0
        assert ledger.clear_limit("daily")
        assert not ledger.clear_limit("daily")
        assert ledger.get_limits() == {("monthly", "openai"): 100.0}


@pytest.mark.parametrize(
    ("period", "amount", "field"),
    [("hourly", 1.0, "period"), ("daily", -1.0, "amount"), ("daily", True, "amount")],
)
def test_set_limit_validates(ledger: SQLiteLedger, period: str, amount: float, field: str) -> None:
    """A limit needs a known period and a non-negative amount."""
    with pytest.raises(ValidationError) as info:
        ledger.set_limit(period, amount)  # type: ignore[arg-type]
    assert info.value.field == field


def test_set_policy_rejects_empty(ledger: SQLiteLedger) -> None:
    """An empty policy name is refused."""
    with pytest.raises(ValidationError):
        ledger.set_policy(" ")


def test_usable_from_a_worker_thread(tmp_path: Path) -> None:
    """A ledger opened on one thread can be used from another, as to_thread.run_sync does."""
    ledger = SQLiteLedger(tmp_path / "l.db")
    errors: list[BaseException] = []

    def work() -> None:
        try:
            ledger.record(entry(cost=2.5))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    assert errors == []
    assert ledger.spent(0.0) == 2.5
    ledger.close()
    ledger.close()  # closing twice is harmless


def test_a_charge_replaces_its_reservation_in_the_same_statement(ledger: SQLiteLedger) -> None:
    """Recording a charge that names a reservation deletes that reservation; others stay."""
    ledger.reserve_many([reservation(1), reservation(2)])
    ledger.record_many([attrs.evolve(entry(cost=0.2), reservation_id=1, charge_id="c1")])
    assert [r.id for r in ledger.reservations()] == [2]
    assert ledger.entries()[0].reservation_id == 1


def test_a_charge_id_is_recorded_at_most_once(ledger: SQLiteLedger) -> None:
    """A second charge with the same charge_id is skipped, even within one batch."""
    first = attrs.evolve(entry(cost=1.0), charge_id="c1")
    ledger.record_many([first, attrs.evolve(first, cost=5.0)])
    ledger.record_many([first])
    assert ledger.spent(0.0) == 1.0
    assert ledger.recorded_charges(["c1", "c2"]) == {"c1"}
    # Entries without a charge id are never treated as duplicates of each other.
    ledger.record_many([entry(cost=2.0), entry(cost=2.0)])
    assert ledger.spent(0.0) == 5.0


def test_sweep_bills_other_owners_reservations_as_interrupted_at_their_worst_case(
    ledger: SQLiteLedger,
) -> None:
    """Reservations of a dead owner become interrupted charges at the worst case; the live owner's stay."""
    ledger.reserve_many(
        [reservation(1, "dead", 0.5), reservation(2, "alive"), reservation(3, "dead", 0.25)]
    )
    assert ledger.sweep("alive") == (2, 0.75)
    assert [r.id for r in ledger.reservations()] == [2]
    swept = sorted(ledger.entries(), key=lambda e: e.reservation_id or 0)
    assert [(e.request_id, e.cost, e.status, e.billed) for e in swept] == [
        ("req-1", 0.5, "interrupted", "worst_case"),
        ("req-3", 0.25, "interrupted", "worst_case"),
    ]
    assert (swept[0].input_tokens, swept[0].output_tokens, swept[0].ts) == (100, 1000, 501.0)
    assert swept[0].component == "ergon"
    assert ledger.sweep("alive") == (0, 0.0)
    assert ledger.spent(0.0) == 0.75


def test_reservation_ids_are_never_reused(ledger: SQLiteLedger) -> None:
    """The highest reservation id ever claimed or written is remembered after the rows are gone."""
    assert ledger.claim_reservation_ids(3) == range(1, 4)
    ledger.reserve_many([reservation(7)])
    ledger.release([7])
    assert ledger.reservations() == []
    assert ledger.claim_reservation_ids(2) == range(8, 10)


def test_claims_on_two_connections_never_overlap(tmp_path: Path) -> None:
    """Two owners claiming blocks from one file, in turn, never get the same id."""
    path = tmp_path / "l.db"
    with SQLiteLedger(path) as first, SQLiteLedger(path) as second:
        claimed = [first.claim_reservation_ids(5), second.claim_reservation_ids(5)]
        claimed += [first.claim_reservation_ids(1), second.claim_reservation_ids(1)]
    ids = [i for block in claimed for i in block]
    assert ids == list(range(1, 13))


def test_a_claim_of_no_ids_is_refused(ledger: SQLiteLedger) -> None:
    """A claim must ask for at least one id."""
    with pytest.raises(ValidationError) as info:
        ledger.claim_reservation_ids(0)
    assert info.value.field == "count"


def test_sqlite_errors_become_service_unavailable_with_the_cause(tmp_path: Path) -> None:
    """A write the database refuses is ServiceUnavailable naming what failed, the SQLite error its cause."""
    path = tmp_path / "l.db"
    SQLiteLedger(path).close()
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON entries"
        " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
    )
    conn.commit()
    conn.close()
    with SQLiteLedger(path) as ledger:
        with pytest.raises(ServiceUnavailable) as info:
            ledger.record(entry())
        assert info.value.message == "the budget ledger cannot be written: refused by the test"
        assert isinstance(info.value.__cause__, sqlite3.IntegrityError)
        assert ledger.entries() == []
        assert ledger.broken() is None


def test_without_autocheckpoint_a_commit_never_checkpoints(tmp_path: Path) -> None:
    """autocheckpoint=False turns SQLite's own checkpoints off on that connection only."""
    with SQLiteLedger(tmp_path / "l.db", autocheckpoint=False) as quiet:
        assert quiet._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    with SQLiteLedger(tmp_path / "l.db") as default:
        assert default._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("cost", float("inf")),
        ("cost", float("nan")),
        ("cost", 1e400),
        ("cost", -0.01),
        ("cost", "1"),
        ("input_tokens", 12.7),
        ("input_tokens", -1),
        ("output_tokens", True),
        ("output_tokens", 2**64),
    ],
)
def test_non_finite_negative_or_fractional_numbers_never_reach_sql(
    field: str, value: object
) -> None:
    """A ledger row refuses an Infinity, a NaN, a negative or a fractional count when built."""
    fields: dict[str, Any] = {
        "request_id": "r",
        "provider": "p",
        "model": "m",
        "input_tokens": 1,
        "output_tokens": 1,
        "cost": 0.1,
        field: value,
    }
    with pytest.raises(ValidationError) as info:
        LedgerEntry(**fields)
    assert info.value.field == field


def test_text_with_a_lone_surrogate_is_stored_readably(ledger: SQLiteLedger) -> None:
    """A lone surrogate in a component is stored as U+FFFD, so later reads still work."""
    ledger.record(entry(component="a\ud800b", context_id="c\udfff"))
    assert ledger.usage(0.0, "component")[0].key == "a\ufffdb"
    assert ledger.entries()[0].context_id == "c\ufffd"


def test_the_active_model_round_trips(tmp_path: Path) -> None:
    """The active provider and model are stored beside the policy and read back after reopening."""
    with SQLiteLedger(tmp_path / "l.db") as ledger:
        assert ledger.get_active() is None
        ledger.set_active("openai", "gpt-4o-mini")
    with SQLiteLedger(tmp_path / "l.db") as ledger:
        assert ledger.get_active() == ("openai", "gpt-4o-mini")
