"""
The budget ledger, on SQLite and on PostgreSQL: every store test runs on both backends.
"""

from __future__ import annotations

import random
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest

from rhetor._errors import ServiceUnavailable, ValidationError
from rhetor.budget._interfaces import BudgetLedger, LedgerEntry, ReservationRow, UsageRow
from rhetor.budget._ledger import SQLiteLedger
from rhetor.budget._rules import Claim
from tests.stores import ledger_opener


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
def open_ledger(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Callable[[], BudgetLedger]:
    """Opens the ledger afresh on the same storage (the backend's)."""
    return ledger_opener(backend, tmp_path, request)


@pytest.fixture
def ledger(open_ledger: Callable[[], BudgetLedger]) -> Iterator[BudgetLedger]:
    store = open_ledger()
    yield store
    store.close()


@pytest.fixture
def sqlite_ledger(tmp_path: Path) -> SQLiteLedger:
    return SQLiteLedger(tmp_path / "ledger.db")


def test_spent_sums_since_and_per_provider(ledger: BudgetLedger) -> None:
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
def test_usage_groups(ledger: BudgetLedger, group_by: str, expected: list[UsageRow]) -> None:
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


def test_usage_rejects_unknown_grouping(ledger: BudgetLedger) -> None:
    """An unknown group_by is a ValidationError, never spliced into SQL."""
    with pytest.raises(ValidationError) as info:
        ledger.usage(0.0, "provider; DROP TABLE entries")  # type: ignore[arg-type]
    assert info.value.field == "group_by"


def test_record_many_is_atomic(ledger: BudgetLedger) -> None:
    """A batch with one bad row stores nothing."""
    good = entry(cost=1.0)
    # Only the database CHECK constraint can catch a row that skipped the validator.
    with attrs.validators.disabled():
        bad = attrs.evolve(good, status="bogus")  # type: ignore[arg-type]
    with pytest.raises(
        ServiceUnavailable
    ) as info:  # the ledger's translation of its driver's error
        ledger.record_many([good, bad])
    assert isinstance(info.value.__cause__, sqlite3.IntegrityError | psycopg.errors.CheckViolation)
    assert ledger.spent(0.0) == 0.0
    ledger.record(good)
    assert ledger.spent(0.0) == 1.0


def test_record_many_round_trips_every_field_exactly(ledger: BudgetLedger) -> None:
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


def test_record_many_sends_a_batch_as_one_insert(sqlite_ledger: SQLiteLedger) -> None:
    """
    One statement per batch, not one per row, and no BEGIN or COMMIT around it.

    A row-by-row executemany releases and retakes the GIL per row; from a
    worker thread beside a busy event loop each retake waits for a forced
    switch, so batches crawled. See SQLiteLedger.record_many.
    """
    ledger = sqlite_ledger
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


def test_entries_newest_first(ledger: BudgetLedger) -> None:
    """entries() returns stored entries with ids, newest first."""
    ledger.record(entry(cost=1.0, ts=1.0))
    ledger.record(entry(cost=2.0, ts=2.0, status="partial"))
    got = ledger.entries()
    assert [e.cost for e in got] == [2.0, 1.0]
    assert got[0].status == "partial"
    assert all(e.id is not None for e in got)
    assert ledger.entries(1.5) == got[:1]
    assert len(ledger.entries(limit=1)) == 1


def test_limits_and_policy_persist(open_ledger: Callable[[], BudgetLedger]) -> None:
    """Limits, policy and entries survive closing and reopening the ledger."""
    ledger = open_ledger()
    try:
        assert ledger.get_limits() == {}
        assert ledger.get_policy() is None
        ledger.set_limit("daily", 5.0)
        ledger.set_limit("daily", 10)  # replaces
        ledger.set_limit("monthly", 100.0, provider="openai")
        ledger.set_policy("enforce")
        ledger.record(entry(cost=3.0))
    finally:
        ledger.close()
    ledger = open_ledger()
    try:
        assert ledger.get_limits() == {("daily", None): 10.0, ("monthly", "openai"): 100.0}
        assert ledger.get_policy() == "enforce"
        assert ledger.spent(0.0) == 3.0
        assert ledger.clear_limit("daily")
        assert not ledger.clear_limit("daily")
        assert ledger.get_limits() == {("monthly", "openai"): 100.0}
    finally:
        ledger.close()


@pytest.mark.parametrize(
    ("period", "amount", "field"),
    [("hourly", 1.0, "period"), ("daily", -1.0, "amount"), ("daily", True, "amount")],
)
def test_set_limit_validates(ledger: BudgetLedger, period: str, amount: float, field: str) -> None:
    """A limit needs a known period and a non-negative amount."""
    with pytest.raises(ValidationError) as info:
        ledger.set_limit(period, amount)  # type: ignore[arg-type]
    assert info.value.field == field


def test_set_policy_rejects_empty(ledger: BudgetLedger) -> None:
    """An empty policy name is refused."""
    with pytest.raises(ValidationError):
        ledger.set_policy(" ")


def test_usable_from_a_worker_thread(open_ledger: Callable[[], BudgetLedger]) -> None:
    """A ledger opened on one thread can be used from another, as to_thread.run_sync does."""
    ledger = open_ledger()
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


def test_a_charge_replaces_its_reservation_in_the_same_statement(ledger: BudgetLedger) -> None:
    """Recording a charge that names a reservation deletes that reservation; others stay."""
    ledger.reserve_many([reservation(1), reservation(2)])
    ledger.record_many([attrs.evolve(entry(cost=0.2), reservation_id=1, charge_id="c1")])
    assert [r.id for r in ledger.reservations()] == [2]
    assert ledger.entries()[0].reservation_id == 1


def test_a_charge_id_is_recorded_at_most_once(ledger: BudgetLedger) -> None:
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


def test_reservation_ids_are_never_reused(ledger: BudgetLedger) -> None:
    """The highest reservation id ever claimed or written is remembered after the rows are gone."""
    assert ledger.claim_reservation_ids(3) == range(1, 4)
    ledger.reserve_many([reservation(7)])
    ledger.release([7])
    assert ledger.reservations() == []
    assert ledger.claim_reservation_ids(2) == range(8, 10)


def test_claims_on_two_connections_never_overlap(open_ledger: Callable[[], BudgetLedger]) -> None:
    """Two owners claiming blocks from one ledger, in turn, never get the same id."""
    first, second = open_ledger(), open_ledger()
    claimed = [first.claim_reservation_ids(5), second.claim_reservation_ids(5)]
    claimed += [first.claim_reservation_ids(1), second.claim_reservation_ids(1)]
    first.close()
    second.close()
    ids = [i for block in claimed for i in block]
    assert ids == list(range(1, 13))


def test_concurrent_claims_from_many_threads_never_overlap(
    open_ledger: Callable[[], BudgetLedger],
) -> None:
    """Eight owners claiming blocks at once (each on its own connection) never share an id."""
    ledgers = [open_ledger() for _ in range(8)]
    claimed: list[range] = []

    def claim(ledger: BudgetLedger) -> None:
        for _ in range(10):
            block = ledger.claim_reservation_ids(3)
            claimed.append(block)

    threads = [threading.Thread(target=claim, args=(ledger,)) for ledger in ledgers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for ledger in ledgers:
        ledger.close()
    ids = [i for block in claimed for i in block]
    assert sorted(ids) == list(range(1, 241))


def test_a_claim_of_no_ids_is_refused(ledger: BudgetLedger) -> None:
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


def test_text_with_a_lone_surrogate_is_stored_readably(ledger: BudgetLedger) -> None:
    """A lone surrogate in a component is stored as U+FFFD, so later reads still work."""
    ledger.record(entry(component="a\ud800b", context_id="c\udfff"))
    assert ledger.usage(0.0, "component")[0].key == "a\ufffdb"
    assert ledger.entries()[0].context_id == "c\ufffd"


def test_the_active_model_round_trips(open_ledger: Callable[[], BudgetLedger]) -> None:
    """The active provider and model are stored beside the policy and read back after reopening."""
    ledger = open_ledger()
    assert ledger.get_active() is None
    ledger.set_active("openai", "gpt-4o-mini")
    ledger.close()
    ledger = open_ledger()
    assert ledger.get_active() == ("openai", "gpt-4o-mini")
    ledger.close()


def test_text_postgresql_cannot_hold_is_stored_readably(ledger: BudgetLedger) -> None:
    """A NUL character (which PostgreSQL's text refuses) in a charge's text is stored, readably."""
    ledger.record(entry(component="a\x00b"))
    assert ledger.usage(0.0, "component")[0].key in ("a\x00b", "a\ufffdb")


# -- checked reservations: the one atomic step --------------------------------------------

STARTS = {"daily": 1000.0, "weekly": 500.0, "monthly": 0.0}


def claim(amount: float, provider: str = "openai", **options: Any) -> Claim:
    return Claim(provider, amount, **options)


def test_a_checked_reservation_is_granted_only_while_every_limit_holds(
    ledger: BudgetLedger,
) -> None:
    """Claims in one batch count against each other; the one that would pass the limit is refused."""
    rows = [reservation(i, amount=0.4) for i in (1, 2, 3)]
    decisions = ledger.reserve_checked(
        [(row, claim(0.4)) for row in rows],
        policy="enforce",
        limits={("daily", None): 1.0},
        starts=STARTS,
    )
    assert [d.refused for d in decisions] == [False, False, True]
    assert decisions[2].over is not None and decisions[2].over.period == "daily"
    assert [r.id for r in ledger.reservations()] == [1, 2]


def test_spend_since_the_period_start_and_every_open_reservation_count(
    ledger: BudgetLedger,
) -> None:
    """Charges since the day began and reservations of any owner use the limit; older charges do not."""
    ledger.record_many([entry(cost=5.0, ts=999.0), entry("openai", cost=0.3, ts=1500.0)])
    ledger.reserve_many([reservation(1, "someone-else", amount=0.5)])
    decide = lambda amount: ledger.reserve_checked(  # noqa: E731
        [(reservation(9, amount=amount), claim(amount))],
        policy="enforce",
        limits={("daily", None): 1.0},
        starts=STARTS,
    )[0]
    assert decide(0.21).refused
    assert not decide(0.2).refused


def test_a_provider_limit_binds_only_that_provider(ledger: BudgetLedger) -> None:
    """A per-provider limit refuses that provider's claim and lets another provider's through."""
    limits = {("monthly", "openai"): 1.0}
    ledger.record_many([entry("openai", cost=0.9, ts=10.0)])
    openai, other = ledger.reserve_checked(
        [(reservation(1), claim(0.5, "openai")), (reservation(2), claim(0.5, "anthropic"))],
        policy="enforce",
        limits=limits,  # type: ignore[arg-type]
        starts=STARTS,
    )
    assert openai.refused and openai.over is not None and openai.over.provider == "openai"
    assert not other.refused


def test_a_stored_component_limit_binds_that_components_spend_and_reservations(
    ledger: BudgetLedger,
) -> None:
    """A component's limit counts its charges and open reservations only, across providers, and refuses it alone."""
    ledger.set_limit("daily", 1.0, component="ergon")
    ledger.set_limit("daily", 5.0, "openai")
    assert ledger.get_limits() == {("daily", "component:ergon"): 1.0, ("daily", "openai"): 5.0}
    ledger.record_many(
        [
            entry("anthropic", cost=0.5, ts=1500.0, component="ergon"),
            entry("openai", cost=0.5, ts=900.0, component="ergon"),  # yesterday
            entry("openai", cost=2.0, ts=1500.0, component="hermes"),
        ]
    )
    ledger.reserve_many([reservation(1, amount=0.3)])  # an ergon reservation
    fits, refused, other = ledger.reserve_checked(
        [
            (reservation(2), claim(0.2, "anthropic", component="ergon")),
            (reservation(3), claim(0.01, "openai", component="ergon")),
            (reservation(4), claim(2.0, "openai", component="hermes")),
        ],
        policy="enforce",
        limits={},
        starts=STARTS,
    )
    assert not fits.refused
    assert refused.refused and refused.over is not None
    assert refused.over.provider == "component:ergon"
    assert "component ergon daily budget" in refused.over.describe()
    assert not other.refused
    assert ledger.clear_limit("daily", component="ergon") is True
    assert ledger.clear_limit("daily", component="ergon") is False
    assert ledger.get_limits() == {("daily", "openai"): 5.0}
    with pytest.raises(ValidationError):
        ledger.set_limit("daily", 1.0, "openai", component="ergon")


def test_stored_limits_and_policy_replace_the_defaults(ledger: BudgetLedger) -> None:
    """A limit or policy set through the API wins over the environment's; a stored 0 removes a limit."""
    ledger.set_policy("enforce")
    ledger.set_limit("daily", 0.0)  # removes the default daily limit
    ledger.set_limit("weekly", 0.3)
    (decision,) = ledger.reserve_checked(
        [(reservation(1), claim(0.5))],
        policy="ignore",
        limits={("daily", None): 0.1},
        starts=STARTS,
    )
    assert decision.refused and decision.over is not None and decision.over.period == "weekly"


def test_under_warn_a_claim_over_the_limit_is_granted_with_a_warning(ledger: BudgetLedger) -> None:
    """The warn policy grants and records the claim, and names the limit it passes."""
    (decision,) = ledger.reserve_checked(
        [(reservation(1), claim(2.0))], policy="warn", limits={("daily", None): 1.0}, starts=STARTS
    )
    assert not decision.refused and decision.warning is not None
    assert "daily budget $1.00 would be exceeded" in decision.warning
    assert [r.amount for r in ledger.reservations()] == [2.0]  # stored at what it claimed


def test_under_enforce_a_claim_is_clamped_to_the_headroom_left(ledger: BudgetLedger) -> None:
    """A claim that does not fit is granted fewer output tokens, stored as granted; below the floor, refused."""
    ledger.record_many([entry(cost=0.9, ts=1500.0)])
    # $0.05 of input and 1,000 output tokens at $0.0004: $0.45 asked, $0.10 left.
    asked = claim(0.45, output_tokens=1000, output_price=0.0004, min_output_tokens=64)
    clamped, refused = ledger.reserve_checked(
        [(reservation(1, amount=0.45), asked), (reservation(2, amount=0.45), asked)],
        policy="enforce",
        limits={("daily", None): 1.0},
        starts=STARTS,
    )
    assert not clamped.refused
    assert clamped.output_tokens == 125 and clamped.amount == pytest.approx(0.1)
    assert refused.refused
    (stored,) = ledger.reservations()
    assert stored.output_tokens == clamped.output_tokens and stored.amount == clamped.amount
    assert stored.amount <= 0.1 + 1e-12


def test_checked_reservations_from_many_connections_never_pass_a_limit(
    open_ledger: Callable[[], BudgetLedger],
) -> None:
    """Eight owners reserving at once, each on its own connection, are granted exactly the limit."""
    ledgers = [open_ledger() for _ in range(8)]
    granted: list[float] = []
    ids = iter(range(1, 10_000))
    lock = threading.Lock()

    def reserve(ledger: BudgetLedger, owner: int) -> None:
        for _ in range(10):
            with lock:
                batch = [reservation(next(ids), f"owner-{owner}", 0.01) for _ in range(3)]
            decisions = ledger.reserve_checked(
                [(row, claim(0.01)) for row in batch],
                policy="enforce",
                limits={("daily", None): 1.0},
                starts=STARTS,
            )
            with lock:
                granted.extend(
                    row.amount for row, d in zip(batch, decisions, strict=True) if not d.refused
                )

    threads = [
        threading.Thread(target=reserve, args=(ledger, n)) for n, ledger in enumerate(ledgers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    held = ledgers[0].reservations()
    for ledger in ledgers:
        ledger.close()
    assert len(granted) == 100 == len(held)
    assert round(sum(r.amount for r in held), 9) == 1.0


@pytest.mark.parametrize("settle_first", [True, False])
def test_a_settle_and_a_sweep_of_one_reservation_bill_it_exactly_once(
    ledger: BudgetLedger, settle_first: bool
) -> None:
    """Whichever of a late settle and a sweep comes first, the reservation has one charge: the real one."""
    ledger.reserve_many([reservation(1, "cut-off", 0.5)])
    actual = attrs.evolve(entry(cost=0.01), reservation_id=1, charge_id="c1")
    if settle_first:
        ledger.record_many([actual])
        assert ledger.sweep("me") == (0, 0.0)
    else:
        assert ledger.sweep("me") == (1, 0.5)
        ledger.record_many([actual])
    [charge] = ledger.entries()
    assert (charge.charge_id, charge.cost, charge.status, charge.reservation_id) == (
        "c1",
        0.01,
        "ok",
        1,
    )
    # A retry of the same charge and a stray second charge for the reservation are both skipped.
    ledger.record_many([actual, attrs.evolve(actual, charge_id="c2", cost=3.0)])
    assert ledger.spent(0.0) == 0.01
    assert ledger.reservations() == []
    assert ledger.sweep("me") == (0, 0.0)


def test_the_sweep_bills_a_streams_recorded_progress_never_above_the_worst_case(
    ledger: BudgetLedger,
) -> None:
    """Progress on a reservation is billed as usage (capped at the worst case); without it, the worst case."""
    ledger.reserve_many(
        [reservation(1, "dead", 0.5), reservation(2, "dead", 0.5), reservation(3, "dead", 0.5)]
    )
    ledger.record_progress({1: (40, 0.02), 2: (900, 0.9), 99: (5, 0.01)})  # 99: nobody's
    ledger.record_progress({1: (10, 0.005)})  # an older note never lowers the count
    assert ledger.sweep("alive") == (3, pytest.approx(0.02 + 0.5 + 0.5))
    swept = {e.reservation_id: e for e in ledger.entries()}
    assert [(swept[i].status, swept[i].billed) for i in (1, 2, 3)] == [
        ("interrupted", "usage"),
        ("interrupted", "capped"),
        ("interrupted", "worst_case"),
    ]
    assert [(swept[i].input_tokens, swept[i].output_tokens, swept[i].cost) for i in (1, 2, 3)] == [
        (100, 40, 0.02),
        (100, 900, 0.5),
        (100, 1000, 0.5),
    ]
