from __future__ import annotations

import random
import sqlite3
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import attrs
import pytest

from rhetor._errors import ValidationError
from rhetor._ledger import (
    Ledger,
    LedgerEntry,
    UsageRow,
    period_end,
    period_start,
)


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


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "ledger.db")


def test_opens_in_wal_mode_with_schema_version(tmp_path: Path) -> None:
    """The ledger file is in WAL mode and records its schema version."""
    Ledger(tmp_path / "l.db").close()
    conn = sqlite3.connect(tmp_path / "l.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
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


def test_record_many_sends_a_batch_as_one_insert(ledger: Ledger) -> None:
    """
    One INSERT per batch, not one per row.

    A row-by-row executemany releases and retakes the GIL per row; from a
    worker thread beside a busy event loop each retake waits for a forced
    switch, so batches crawled. See Ledger.record_many.
    """
    statements: list[str] = []
    ledger._conn.set_trace_callback(statements.append)
    ledger.record_many([entry(ts=float(i)) for i in range(50)])
    ledger.record_many([])
    ledger._conn.set_trace_callback(None)
    inserts = [s for s in statements if s.lstrip().upper().startswith("INSERT")]
    assert len(inserts) == 1
    assert len(ledger.entries()) == 50


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


# Wednesday 2024-02-14 15:30 UTC.
NOW = datetime(2024, 2, 14, 15, 30, 12, 345, tzinfo=UTC)


@pytest.mark.parametrize(
    ("period", "start", "end"),
    [
        ("daily", datetime(2024, 2, 14, tzinfo=UTC), datetime(2024, 2, 15, tzinfo=UTC)),
        ("weekly", datetime(2024, 2, 12, tzinfo=UTC), datetime(2024, 2, 19, tzinfo=UTC)),
        ("monthly", datetime(2024, 2, 1, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC)),
    ],
)
def test_period_bounds(period: str, start: datetime, end: datetime) -> None:
    """Days start at UTC midnight, weeks on Monday, months on the 1st."""
    assert period_start(period, NOW) == start  # type: ignore[arg-type]
    assert period_end(period, NOW) == end  # type: ignore[arg-type]
    assert start.weekday() == 0 or period != "weekly"


def test_week_starting_on_monday_and_sunday() -> None:
    """A Monday is its own week's start; a Sunday belongs to the week before."""
    monday = datetime(2024, 2, 12, 0, 0, tzinfo=UTC)
    sunday = datetime(2024, 2, 18, 23, 59, tzinfo=UTC)
    assert period_start("weekly", monday) == monday
    assert period_start("weekly", sunday) == monday
    assert period_end("weekly", sunday) == monday + timedelta(weeks=1)


def test_month_end_rolls_over_the_year() -> None:
    """December's period ends on January 1st of the next year."""
    assert period_end("monthly", datetime(2023, 12, 31, 23, tzinfo=UTC)) == datetime(
        2024, 1, 1, tzinfo=UTC
    )


def test_periods_are_computed_in_utc() -> None:
    """A non-UTC time is converted first; a naive time is taken as UTC."""
    tokyo = timezone(timedelta(hours=9))
    # 2024-03-01 05:00 in Tokyo is still February 29th in UTC.
    assert period_start("monthly", datetime(2024, 3, 1, 5, tzinfo=tokyo)) == datetime(
        2024, 2, 1, tzinfo=UTC
    )
    assert period_start("daily", datetime(2024, 3, 1, 5)) == datetime(2024, 3, 1, tzinfo=UTC)


def test_period_rejects_unknown() -> None:
    """An unknown period is a ValidationError on the period field."""
    with pytest.raises(ValidationError) as info:
        period_start("yearly", NOW)  # type: ignore[arg-type]
    assert info.value.field == "period"


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
