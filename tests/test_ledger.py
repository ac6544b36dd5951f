from __future__ import annotations

import random
import sqlite3
import threading
from pathlib import Path
from typing import Any

import attrs
import pytest

from rhetor._errors import ValidationError
from rhetor.budget._ledger import Ledger, LedgerEntry, ReservationRow, UsageRow


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
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "ledger.db")


def test_opens_in_wal_mode_with_schema_version(tmp_path: Path) -> None:
    """The ledger file is in WAL mode and records its schema version."""
    Ledger(tmp_path / "l.db").close()
    conn = sqlite3.connect(tmp_path / "l.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    conn.close()


def test_spent_sums_since_and_per_provider(ledger: Ledger) -> None:
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
def test_usage_groups(ledger: Ledger, group_by: str, expected: list[UsageRow]) -> None:
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


def test_usage_rejects_unknown_grouping(ledger: Ledger) -> None:
    """An unknown group_by is a ValidationError, never spliced into SQL."""
    with pytest.raises(ValidationError) as info:
        ledger.usage(0.0, "provider; DROP TABLE entries")  # type: ignore[arg-type]
    assert info.value.field == "group_by"


def test_record_many_is_atomic(ledger: Ledger) -> None:
    """A batch with one bad row stores nothing."""
    good = entry(cost=1.0)
    # Only the database CHECK constraint can catch a row that skipped the validator.
    with attrs.validators.disabled():
        bad = attrs.evolve(good, status="bogus")  # type: ignore[arg-type]
    with pytest.raises(sqlite3.IntegrityError):
        ledger.record_many([good, bad])
    assert ledger.spent(0.0) == 0.0
    ledger.record(good)
    assert ledger.spent(0.0) == 1.0


def test_record_many_round_trips_every_field_exactly(ledger: Ledger) -> None:
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


def test_record_many_sends_a_batch_as_one_insert(ledger: Ledger) -> None:
    """
    One statement per batch, not one per row, and no BEGIN or COMMIT around it.

    A row-by-row executemany releases and retakes the GIL per row; from a
    worker thread beside a busy event loop each retake waits for a forced
    switch, so batches crawled. See Ledger.record_many.
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


def test_entries_newest_first(ledger: Ledger) -> None:
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
    with Ledger(tmp_path / "l.db") as ledger:
        assert ledger.get_limits() == {}
        assert ledger.get_policy() is None
        ledger.set_limit("daily", 5.0)
        ledger.set_limit("daily", 10)  # replaces
        ledger.set_limit("monthly", 100.0, provider="openai")
        ledger.set_policy("enforce")
        ledger.record(entry(cost=3.0))
    with Ledger(tmp_path / "l.db") as ledger:
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
def test_set_limit_validates(ledger: Ledger, period: str, amount: float, field: str) -> None:
    """A limit needs a known period and a non-negative amount."""
    with pytest.raises(ValidationError) as info:
        ledger.set_limit(period, amount)  # type: ignore[arg-type]
    assert info.value.field == field


def test_set_policy_rejects_empty(ledger: Ledger) -> None:
    """An empty policy name is refused."""
    with pytest.raises(ValidationError):
        ledger.set_policy(" ")


def test_usable_from_a_worker_thread(tmp_path: Path) -> None:
    """A ledger opened on one thread can be used from another, as to_thread.run_sync does."""
    ledger = Ledger(tmp_path / "l.db")
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


def test_a_charge_replaces_its_reservation_in_the_same_statement(ledger: Ledger) -> None:
    """Recording a charge that names a reservation deletes that reservation; others stay."""
    ledger.reserve_many([reservation(1), reservation(2)])
    ledger.record_many([attrs.evolve(entry(cost=0.2), reservation_id=1, charge_id="c1")])
    assert [r.id for r in ledger.reservations()] == [2]
    assert ledger.entries()[0].reservation_id == 1


def test_a_charge_id_is_recorded_at_most_once(ledger: Ledger) -> None:
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
    ledger: Ledger,
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


def test_reservation_ids_are_never_reused(ledger: Ledger) -> None:
    """The highest reservation id ever written is remembered after the rows are gone."""
    assert ledger.last_reservation_id() == 0
    ledger.reserve_many([reservation(7)])
    ledger.release([7])
    assert ledger.reservations() == []
    assert ledger.last_reservation_id() == 7


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


def test_text_with_a_lone_surrogate_is_stored_readably(ledger: Ledger) -> None:
    """A lone surrogate in a component is stored as U+FFFD, so later reads still work."""
    ledger.record(entry(component="a\ud800b", context_id="c\udfff"))
    assert ledger.usage(0.0, "component")[0].key == "a\ufffdb"
    assert ledger.entries()[0].context_id == "c\ufffd"


def test_a_version_1_ledger_is_upgraded_in_place(tmp_path: Path) -> None:
    """A ledger written before reservations keeps its rows and limits and gains the new columns."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE entries (
            id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, request_id TEXT NOT NULL,
            provider TEXT NOT NULL, model TEXT NOT NULL, component TEXT NOT NULL DEFAULT '',
            context_id TEXT, input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,
            cost REAL NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('ok', 'partial', 'failed')));
        CREATE INDEX entries_ts ON entries (ts);
        CREATE INDEX entries_provider_ts ON entries (provider, ts);
        CREATE TABLE limits (period TEXT NOT NULL, provider TEXT NOT NULL DEFAULT '',
            amount REAL NOT NULL, PRIMARY KEY (period, provider));
        CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO entries VALUES (1, 10.0, 'r1', 'openai', 'gpt-4o', 'ergon', NULL, 5, 6, 0.5, 'ok');
        INSERT INTO limits VALUES ('daily', '', 3.0);
        INSERT INTO settings VALUES ('policy', 'enforce');
        PRAGMA user_version = 1;
        """
    )
    conn.close()
    with Ledger(path) as ledger:
        [old] = ledger.entries()
        assert (old.id, old.request_id, old.cost, old.billed, old.charge_id) == (
            1,
            "r1",
            0.5,
            "usage",
            None,
        )
        assert ledger.get_limits() == {("daily", None): 3.0}
        assert ledger.get_policy() == "enforce"
        ledger.reserve_many([reservation(1, "dead")])
        ledger.sweep("alive")
        assert [e.status for e in ledger.entries()] == ["interrupted", "ok"]  # newest first
    with Ledger(path) as ledger:  # and opening it again changes nothing
        assert len(ledger.entries()) == 2


def test_the_active_model_round_trips(tmp_path: Path) -> None:
    """The active provider and model are stored beside the policy and read back after reopening."""
    with Ledger(tmp_path / "l.db") as ledger:
        assert ledger.get_active() is None
        ledger.set_active("openai", "gpt-4o-mini")
    with Ledger(tmp_path / "l.db") as ledger:
        assert ledger.get_active() == ("openai", "gpt-4o-mini")
