"""BudgetKeeper: reservations, policies, limits and the ledger."""

from __future__ import annotations

import math
import random
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

import actors
import rhetor.budget._keeper
from rhetor._errors import BudgetExceeded, ServiceUnavailable, ValidationError
from rhetor._types import Usage
from rhetor.budget._interfaces import BudgetLedger
from rhetor.budget._keeper import (
    BudgetKeeper,
    CheckBudget,
    GetActiveModel,
    GetBudget,
    GetBudgetMode,
    GetEntries,
    GetUsage,
    Progress,
    Reserve,
    SetLimit,
    SetPolicy,
    Settle,
    StoreActiveModel,
)
from rhetor.budget._ledger import SQLiteLedger
from rhetor.budget._pg_ledger import PostgresLedger
from tests.stores import ledger_opener

Opener = Callable[[], BudgetLedger]


@pytest.fixture
def path(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Opener:
    """Where the keeper's ledger is: opens it afresh on the backend's storage (SQLite or PostgreSQL)."""
    return ledger_opener(backend, tmp_path, request, autocheckpoint=False)


def keeper(
    path: Opener | Path,
    policy: str = "enforce",
    daily: float = 0.0,
    owner: str = "runtime-1",
    **options: Any,
) -> BudgetKeeper:
    opener = path if callable(path) else (lambda: SQLiteLedger(path, autocheckpoint=False))
    return BudgetKeeper(
        opener,
        policy=policy,  # type: ignore[arg-type]
        limits={"daily": daily, "weekly": 0.0, "monthly": 0.0},
        owner=owner,
        **options,
    )


def settle(reservation_id: int, cost: float, provider: str = "openai") -> Settle:
    return Settle(reservation_id, "r", provider, "gpt-4o", "test", None, Usage(10, 10), cost)


async def test_enforce_refuses_a_reservation_over_the_limit(path: Opener) -> None:
    """Under enforce, a worst case that would pass the daily limit is refused with its numbers."""
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: keeper(path, daily=1.0), name="budget")
        granted = await ref.ask(Reserve("a", "openai", "gpt-4o", 0.6))
        with pytest.raises(BudgetExceeded) as info:
            await ref.ask(Reserve("b", "openai", "gpt-4o", 0.6))
        assert info.value.period == "daily" and info.value.limit == 1.0
        await ref.ask(settle(granted.id, 0.1))
        # Settling at the real cost frees the rest of the reservation.
        assert await ref.ask(Reserve("c", "openai", "gpt-4o", 0.6))


async def test_warn_grants_but_carries_a_warning(path: Opener) -> None:
    """Under warn, an over-limit reservation is granted with a warning."""
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: keeper(path, "warn", 0.5), name="budget")
        reservation = await ref.ask(Reserve("a", "openai", "gpt-4o", 0.6))
        assert reservation.warning and "daily budget" in reservation.warning


async def test_ignore_grants_silently(path: Opener) -> None:
    """Under ignore, limits neither refuse nor warn."""
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: keeper(path, "ignore", 0.5), name="budget")
        reservation = await ref.ask(Reserve("a", "openai", "gpt-4o", 5.0))
        assert reservation.warning is None


async def test_concurrent_reservations_never_overspend(path: Opener) -> None:
    """200 concurrent requests against a small limit: granted worst cases and spend stay within it."""
    limit = 0.05
    granted: list[float] = []
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: keeper(path, daily=limit), name="budget")

        async def one(i: int) -> None:
            amount = 0.001 + (i % 7) * 0.0005
            try:
                reservation = await ref.ask(Reserve(str(i), "openai", "gpt-4o", amount))
            except BudgetExceeded:
                return
            granted.append(amount)
            await trio.sleep(random.random() / 100)
            await ref.ask(settle(reservation.id, amount * random.uniform(0.3, 1.0)))

        async with trio.open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(one, i)
        status = await ref.ask(GetBudget())
    assert 0 < len(granted) < 200
    assert status["periods"]["daily"]["spent"] <= limit
    ledger = path()
    try:
        assert ledger.spent(0.0) <= limit
    finally:
        ledger.close()


async def test_provider_limit_applies_to_that_provider_only(path: Opener) -> None:
    """A per-provider limit refuses that provider while others go on."""
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: keeper(path), name="budget")
        await ref.ask(SetLimit("daily", 0.1, "openai"))
        with pytest.raises(BudgetExceeded) as info:
            await ref.ask(Reserve("a", "openai", "gpt-4o", 0.2))
        assert info.value.provider == "openai"
        assert await ref.ask(Reserve("b", "anthropic", "claude", 0.2))


async def test_a_component_limit_refuses_that_component_while_another_proceeds(
    path: Opener,
) -> None:
    """A per-component limit refuses that component's requests under enforce; others go on; it survives a restart."""
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: keeper(path), name="budget")
        status = await ref.ask(SetLimit("daily", 0.3, component="ui"))
        assert status["periods"]["daily"]["components"]["ui"]["limit"] == 0.3
        held = await ref.ask(Reserve("a", "openai", "gpt-4o", 0.2, component="ui"))
        with pytest.raises(BudgetExceeded) as info:
            await ref.ask(Reserve("b", "anthropic", "claude", 0.2, component="ui"))
        assert "component ui daily budget" in info.value.message
        assert (info.value.component, info.value.provider) == ("ui", None)
        assert await ref.ask(Reserve("c", "openai", "gpt-4o", 0.2, component="ergon"))
        assert await ref.ask(Reserve("d", "openai", "gpt-4o", 0.2))  # no component: no such limit
        await ref.ask(Settle(held.id, "a", "openai", "gpt-4o", "ui", None, Usage(10, 10), 0.25))
        with pytest.raises(ValidationError):
            await ref.ask(SetLimit("daily", 1.0, "openai", component="ui"))
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: keeper(path), name="budget")
        status = await ref.ask(GetBudget())
        assert status["periods"]["daily"]["components"]["ui"] == {
            "limit": 0.3,
            "spent": 0.25,
            "remaining": 0.05,
        }
        with pytest.raises(BudgetExceeded):
            await ref.ask(Reserve("e", "openai", "gpt-4o", 0.1, component="ui"))
        assert await ref.ask(Reserve("f", "openai", "gpt-4o", 0.05, component="ui"))


async def test_negative_limit_and_unknown_policy_are_rejected(path: Opener) -> None:
    """Bad limits and policies are typed errors naming the field, and the keeper keeps serving."""
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: keeper(path), name="budget")
        with pytest.raises(ValidationError) as info:
            await ref.ask(SetLimit("daily", -1.0))
        assert info.value.field == "limit"
        with pytest.raises(ValidationError) as info:
            await ref.ask(SetPolicy("panic"))  # type: ignore[arg-type]
        assert info.value.field == "policy"
        assert (await ref.ask(GetBudget()))["policy"] == "enforce"


async def test_limits_policy_and_spend_survive_a_restart(path: Opener) -> None:
    """Limits and policy set at run time, and recorded spend, are there after a restart."""
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: keeper(path, "warn"), name="budget")
        await ref.ask(SetLimit("weekly", 3.0))
        await ref.ask(SetPolicy("enforce"))
        reservation = await ref.ask(Reserve("a", "openai", "gpt-4o", 0.5))
        await ref.ask(settle(reservation.id, 0.25))
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: keeper(path, "warn"), name="budget")
        status = await ref.ask(GetBudget())
        usage = await ref.ask(GetUsage("daily", "provider"))
    assert status["policy"] == "enforce"
    assert status["periods"]["weekly"]["limit"] == 3.0
    assert status["periods"]["daily"]["spent"] == pytest.approx(0.25)
    assert usage[0]["key"] == "openai" and usage[0]["cost"] == pytest.approx(0.25)


async def test_check_budget_answers_without_reserving(path: Opener) -> None:
    """An estimate check says whether an amount fits and reserves nothing."""
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: keeper(path, daily=1.0), name="budget")
        assert (await ref.ask(CheckBudget("openai", 0.9)))[0] is True
        assert (await ref.ask(CheckBudget("openai", 0.9)))[0] is True
        under, warning = await ref.ask(CheckBudget("openai", 1.5))
        assert under is False and "daily" in warning


async def test_charge_without_component_reaches_the_ledger(path: Opener) -> None:
    """A settled charge with no component or context is written to the ledger and reported."""
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: keeper(path), name="budget")
        reservation = await ref.ask(Reserve("a", "alpha", "alpha-1", 0.0))
        await ref.ask(
            Settle(
                reservation.id, "a", "alpha", "alpha-1", None, None, Usage(10, 6), 0.0, "partial"
            )
        )
        rows = await ref.ask(GetUsage("daily", "provider"))
        assert ref.stats().restarts == 0
    assert rows[0]["key"] == "alpha" and rows[0]["output_tokens"] == 6


async def test_the_status_counts_group_commits_and_the_writes_they_carried(path: Opener) -> None:
    """Twenty settles at once go in fewer commits than twenty; the status counts every write."""
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: keeper(path, policy="warn"), name="budget")
        before = (await ref.ask(GetBudget()))["ledger_commits"]
        await ref.ask(settle(0, 0.01))
        one = (await ref.ask(GetBudget()))["ledger_commits"]
        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(ref.ask, settle(0, 0.01))
        after = (await ref.ask(GetBudget()))["ledger_commits"]
    assert (one["commits"] - before["commits"], one["writes"] - before["writes"]) == (1, 1)
    assert one["seconds"] > before["seconds"]
    assert after["writes"] - one["writes"] == 20
    assert 1 <= after["commits"] - one["commits"] < 20
    assert after["seconds"] > one["seconds"]


# -- durability: restarts, retries, bad numbers, failing rows ------------------------------


async def test_reservations_survive_a_keeper_restart(path: Opener) -> None:
    """Open reservations are rebuilt from the ledger by a restarted keeper, so its headroom stays spent."""
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: keeper(path, daily=1.0), name="budget")
        held = await ref.ask(Reserve("a", "openai", "gpt-4o", 0.6, 100, 1000, key="k-a"))
        system.faults.crash_next("budget")
        status = await ref.ask(GetBudget())  # crashes it; answered by the next incarnation
        assert ref.stats().restarts == 1
        assert status["periods"]["daily"]["reserved"] == 0.6
        with pytest.raises(BudgetExceeded):
            await ref.ask(Reserve("b", "openai", "gpt-4o", 0.6))
        # The reservation is still the request's: settling it frees the rest.
        assert await ref.ask(settle(held.id, 0.1)) == 0.1
        assert await ref.ask(Reserve("c", "openai", "gpt-4o", 0.6))


async def test_a_retried_reserve_answers_the_reservation_of_its_first_attempt(
    path: Opener,
) -> None:
    """A reserve repeated with the same key after a restart gets the same reservation, counted once."""
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: keeper(path, daily=1.0), name="budget")
        first = await ref.ask(Reserve("a", "openai", "gpt-4o", 0.4, key="k-1"))
        system.faults.crash_next("budget")
        await ref.ask(GetBudget())
        again = await ref.ask(Reserve("a", "openai", "gpt-4o", 0.4, key="k-1"))
        status = await ref.ask(GetBudget())
    assert (again.id, again.amount) == (first.id, 0.4)
    assert status["periods"]["daily"]["reserved"] == 0.4


async def test_a_dead_runtimes_reservations_are_settled_as_interrupted(path: Opener) -> None:
    """A keeper of a new runtime bills the reservations an old runtime left open at their worst case."""
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: keeper(path, daily=1.0, owner="run-1"), name="budget")
        await ref.ask(Reserve("lost", "openai", "gpt-4o", 0.4, 100, 1000, "ergon"))
        settled = await ref.ask(Reserve("kept", "openai", "gpt-4o", 0.3))
        await ref.ask(settle(settled.id, 0.05))
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: keeper(path, daily=1.0, owner="run-2"), name="budget")
        status = await ref.ask(GetBudget())
        with pytest.raises(BudgetExceeded):
            await ref.ask(Reserve("next", "openai", "gpt-4o", 0.6))
    assert status["periods"]["daily"]["spent"] == pytest.approx(0.45)
    assert status["periods"]["daily"]["reserved"] == 0.0
    ledger = path()
    rows = {e.request_id: e for e in ledger.entries()}
    assert ledger.reservations() == []
    ledger.close()
    assert (rows["lost"].status, rows["lost"].billed, rows["lost"].cost) == (
        "interrupted",
        "worst_case",
        0.4,
    )
    assert (rows["lost"].input_tokens, rows["lost"].output_tokens) == (100, 1000)
    assert rows["r"].status == "ok"  # the settled one


async def test_a_streams_noted_progress_is_what_the_sweeper_bills_after_a_crash(
    path: Opener,
) -> None:
    """Progress told to the keeper is durable with its next commit; a new runtime bills it, not the worst case."""
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: keeper(path, daily=1.0, owner="run-1"), name="budget")
        streaming = await ref.ask(Reserve("streaming", "openai", "gpt-4o", 0.4, 100, 1000))
        await ref.tell(Progress(streaming.id, 12, 0.01))
        await ref.tell(Progress(streaming.id, 30, 0.02))
        await ref.tell(Progress(streaming.id, -1, 0.5))  # bad numbers: dropped
        # An ask behind the tells: once it is answered, their commit is done.
        other = await ref.ask(Reserve("other", "openai", "gpt-4o", 0.1))
        await ref.ask(settle(other.id, 0.05))
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: keeper(path, daily=1.0, owner="run-2"), name="budget")
        status = await ref.ask(GetBudget())
    assert status["periods"]["daily"]["spent"] == pytest.approx(0.07)
    ledger = path()
    rows = {e.request_id: e for e in ledger.entries()}
    ledger.close()
    lost = rows["streaming"]
    assert (lost.status, lost.billed, lost.cost) == ("interrupted", "usage", 0.02)
    assert (lost.input_tokens, lost.output_tokens) == (100, 30)


async def test_entries_list_the_newest_charges_first_with_their_status_and_no_ids(
    tmp_path: Path,
) -> None:
    """GetEntries answers charges newest first, bounded by limit and since, interrupted ones too, without ledger ids."""
    path = tmp_path / "l.db"
    # Whole seconds from a minute ahead, so the three charges come after the sweep's.
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=1)
    clock = (start + timedelta(seconds=tick) for tick in range(1000))
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: keeper(path, daily=5.0, owner="run-1"), name="budget")
        await ref.ask(Reserve("lost", "openai", "gpt-4o", 0.4, 100, 1000, "ergon"))
    async with actors.open_system() as system:

        def ticking() -> BudgetKeeper:
            return attrs.evolve(keeper(path, daily=5.0, owner="run-2"), now=lambda: next(clock))

        ref = await system.spawn(ticking, name="budget")
        for name in ("first", "second", "third"):
            held = await ref.ask(Reserve(name, "openai", "gpt-4o", 0.3))
            await ref.ask(
                Settle(held.id, name, "openai", "gpt-4o", "hermes", "c-1", Usage(7, 3), 0.01)
            )
        every = await ref.ask(GetEntries())
        newest = await ref.ask(GetEntries(limit=2))
        later = await ref.ask(GetEntries(since=every[1]["ts"]))
        with pytest.raises(ValidationError) as too_many:
            await ref.ask(GetEntries(limit=501))
        with pytest.raises(ValidationError) as no_time:
            await ref.ask(GetEntries(since=float("nan")))
        assert ref.stats().restarts == 0
    assert [e["request_id"] for e in every] == ["third", "second", "first", "lost"]
    assert [e["request_id"] for e in newest] == ["third", "second"]
    assert [e["request_id"] for e in later] == ["third", "second"]
    third = datetime.fromtimestamp(every[0]["ts"], UTC)
    assert third > start and third.microsecond == 0
    assert every[0] == {
        "time": third.isoformat().replace("+00:00", "Z"),
        "ts": third.timestamp(),
        "request_id": "third",
        "component": "hermes",
        "context_id": "c-1",
        "provider": "openai",
        "model": "gpt-4o",
        "input_tokens": 7,
        "output_tokens": 3,
        "total_tokens": 10,
        "cost": 0.01,
        "status": "ok",
        "billed": "usage",
    }
    assert (every[3]["status"], every[3]["billed"], every[3]["component"]) == (
        "interrupted",
        "worst_case",
        "ergon",
    )
    assert too_many.value.field == "limit" and no_time.value.field == "since"


async def test_a_retried_settle_is_recorded_once(path: Opener) -> None:
    """A settle sent again with the same charge id (after a keeper death) is not billed twice."""
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: keeper(path, daily=1.0), name="budget")
        held = await ref.ask(Reserve("a", "openai", "gpt-4o", 0.5))
        message = attrs.evolve(settle(held.id, 0.2), charge_id="c-1")
        await ref.ask(message)
        system.faults.crash_next("budget")
        await ref.ask(GetBudget())
        assert await ref.ask(attrs.evolve(message, retry=True)) == 0.2
        status = await ref.ask(GetBudget())
        rows = await ref.ask(GetUsage("daily", "provider"))
    assert status["periods"]["daily"]["spent"] == 0.2
    assert rows[0]["requests"] == 1


@pytest.mark.parametrize(
    ("cost", "usage"),
    [
        (1e400, Usage(10, 10)),
        (float("nan"), Usage(10, 10)),
        (-5.0, Usage(10, 10)),
        (0.01, Usage(-3, 10)),
        (0.01, Usage(10, float("inf"))),  # type: ignore[arg-type]
    ],
)
async def test_a_non_finite_or_negative_charge_is_billed_at_the_worst_case_and_later_ones_land(
    path: Opener, cost: float, usage: Usage
) -> None:
    """An Infinity, NaN or negative never reaches SQL: it is billed at the worst case, counted, and later charges are written."""
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: keeper(path, daily=10.0), name="budget")
        held = await ref.ask(Reserve("bad", "openai", "gpt-4o", 0.3))
        bad = Settle(held.id, "bad", "openai", "gpt-4o", None, None, usage, cost, worst_case=0.3)
        assert await ref.ask(bad) == 0.3
        good = await ref.ask(Reserve("good", "openai", "gpt-4o", 0.3))
        assert await ref.ask(settle(good.id, 0.1)) == 0.1
        status = await ref.ask(GetBudget())
        assert ref.stats().restarts == 0
    assert status["ledger_errors"]["invalid_charges"] == 1
    assert status["periods"]["daily"]["spent"] == pytest.approx(0.4)
    ledger = path()
    rows = {e.request_id: e for e in ledger.entries()}
    ledger.close()
    assert (rows["bad"].cost, rows["bad"].billed) == (0.3, "worst_case")
    assert rows["bad"].input_tokens >= 0 and rows["bad"].output_tokens >= 0
    assert rows["r"].billed == "usage"


async def test_a_row_the_database_refuses_fails_alone(tmp_path: Path) -> None:
    """One row SQLite rejects fails only its own settle; the rest of its batch and later rows are written."""
    path = tmp_path / "l.db"
    SQLiteLedger(path).close()
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON entries WHEN NEW.request_id = 'poison'"
        " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
    )
    conn.commit()
    conn.close()
    outcomes: dict[str, object] = {}
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: keeper(path), name="budget")

        async def one(request_id: str) -> None:
            message = Settle(0, request_id, "openai", "gpt-4o", None, None, Usage(1, 1), 0.01)
            try:
                outcomes[request_id] = await ref.ask(message)
            except ServiceUnavailable as exc:
                outcomes[request_id] = exc

        # Sent together, so they share one group commit.
        async with trio.open_nursery() as nursery:
            for request_id in ("good-1", "poison", "good-2", "good-3"):
                nursery.start_soon(one, request_id)
        await one("later")
        status = await ref.ask(GetBudget())
        assert ref.stats().restarts == 0
    assert isinstance(outcomes.pop("poison"), ServiceUnavailable)
    assert outcomes == {name: 0.01 for name in ("good-1", "good-2", "good-3", "later")}
    assert status["ledger_errors"]["failed_writes"] == 1
    assert status["periods"]["daily"]["spent"] == pytest.approx(0.04)
    with SQLiteLedger(path) as ledger:
        assert sorted(e.request_id for e in ledger.entries()) == [
            "good-1",
            "good-2",
            "good-3",
            "later",
        ]


async def test_a_nan_or_infinite_limit_is_refused(path: Opener) -> None:
    """A NaN limit would let every reservation pass; it is a ValidationError and nothing changes."""
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: keeper(path, daily=1.0), name="budget")
        for amount in (float("nan"), float("inf")):
            with pytest.raises(ValidationError):
                await ref.ask(SetLimit("daily", amount))
        status = await ref.ask(GetBudget())
    assert status["periods"]["daily"]["limit"] == 1.0


async def test_the_active_model_is_stored_beside_limits_and_policy(path: Opener) -> None:
    """The active provider and model a keeper stores are answered by the next keeper on the file."""
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: keeper(path), name="budget")
        assert await ref.ask(GetActiveModel()) is None
        await ref.ask(StoreActiveModel("openai", "gpt-4o-mini"))
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: keeper(path, owner="runtime-2"), name="budget")
        assert await ref.ask(GetActiveModel()) == ("openai", "gpt-4o-mini")


async def test_budget_messages_name_small_limits_with_their_own_precision(path: Opener) -> None:
    """A refusal against a $0.000123 limit prints $0.000123, not $0.0001."""
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: keeper(path, daily=0.000123), name="budget")
        with pytest.raises(BudgetExceeded) as info:
            await ref.ask(Reserve("a", "openai", "gpt-4o", 0.0002))
    assert "daily budget $0.000123 would be exceeded (spent and reserved $0.00)" in str(info.value)


@pytest.mark.slow
async def test_the_write_ahead_log_is_checkpointed_so_it_stops_growing(tmp_path: Path) -> None:
    """Commits never checkpoint on the loop, so the keeper does it in a thread: 2,000 commits leave a bounded log."""
    path = tmp_path / "l.db"
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: keeper(path), name="budget")
        sizes = []
        for i in range(2000):
            await ref.ask(Settle(0, f"r{i}", "openai", "gpt-4o", None, None, Usage(1, 1), 0.01))
            if i % 500 == 499:
                await trio.testing.wait_all_tasks_blocked()
                sizes.append((tmp_path / "l.db-wal").stat().st_size)
    # Reused from its start after each checkpoint, the log stops growing
    # (without checkpoints it grows by about 17 KB a commit).
    assert sizes[-1] < 1.5 * sizes[0], sizes


async def test_a_free_reservation_costs_no_ledger_write(path: Opener) -> None:
    """A $0 reservation (a free local model) holds no headroom, so it is not written; its settle still is."""
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: keeper(path, daily=1.0), name="budget")
        free = await ref.ask(Reserve("a", "ollama", "llama3", 0.0))
        paid = await ref.ask(Reserve("b", "openai", "gpt-4o", 0.1))
        ledger = path()
        assert [r.id for r in ledger.reservations()] == [paid.id]
        ledger.close()
        await ref.ask(Settle(free.id, "a", "ollama", "llama3", None, None, Usage(5, 5), 0.0))
        status = await ref.ask(GetBudget())
    assert status["periods"]["daily"]["reserved"] == 0.1
    ledger = path()
    assert [e.request_id for e in ledger.entries()] == ["a"]
    ledger.close()


_ANY_NUMBER = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.none(),
    st.booleans(),
)


@pytest.mark.slow
@settings(max_examples=40, deadline=None)
@given(cost=_ANY_NUMBER, input_tokens=_ANY_NUMBER, output_tokens=_ANY_NUMBER)
def test_any_numbers_in_a_settle_become_a_finite_charge_and_never_crash_the_keeper(
    tmp_path_factory: pytest.TempPathFactory, cost: Any, input_tokens: Any, output_tokens: Any
) -> None:
    """Whatever a settle carries (huge, negative, NaN, text), the keeper answers a finite charge and the ledger stays readable."""
    path = tmp_path_factory.mktemp("any") / "l.db"

    async def run() -> tuple[float, int]:
        async with actors.open_system() as system:
            ref = await system.spawn(lambda: keeper(path, daily=1.0), name="budget")
            held = await ref.ask(Reserve("a", "openai", "gpt-4o", 0.25))
            usage = Usage(input_tokens, output_tokens)
            message = Settle(
                held.id, "a", "openai", "gpt-4o", None, None, usage, cost, worst_case=0.25
            )
            billed = await ref.ask(message)
            return billed, ref.stats().restarts

    billed, restarts = trio.run(run)
    assert restarts == 0
    assert math.isfinite(billed) and billed >= 0
    with SQLiteLedger(path) as ledger:
        [row] = ledger.entries()
        assert ledger.reservations() == []
    assert row.cost == billed
    assert type(row.input_tokens) is int and type(row.output_tokens) is int


async def test_reservation_ids_come_in_claimed_blocks_never_given_twice(
    path: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ids come in blocks claimed from the ledger: distinct across blocks, two owners and a restart."""
    monkeypatch.setattr(rhetor.budget._keeper, "_ID_BLOCK", 2)
    ids: list[int] = []

    async def reserve(ref: actors.Ref, name: str) -> None:
        ids.append((await ref.ask(Reserve(name, "openai", "gpt-4o", 0.01))).id)

    async with actors.open_system() as system:
        first = await system.spawn(lambda: keeper(path, daily=10.0), name="budget")
        for name in ("a", "b", "c"):
            await reserve(first, name)
        second = await system.spawn(lambda: keeper(path, daily=10.0, owner="runtime-2"), name="b2")
        for ref, name in ((first, "d"), (second, "e"), (first, "f"), (second, "g")):
            await reserve(ref, name)
    async with actors.open_system() as system:
        again = await system.spawn(lambda: keeper(path, daily=10.0), name="budget")
        await reserve(again, "h")
    assert len(set(ids)) == len(ids) == 8
    assert ids[-1] > max(ids[:-1])


async def test_a_failed_id_claim_refuses_that_reserve_alone(
    backend: str, path: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the ledger cannot give out ids, the reserve that needed them is ServiceUnavailable and holds nothing."""
    monkeypatch.setattr(rhetor.budget._keeper, "_ID_BLOCK", 1)
    store: Any = SQLiteLedger if backend == "sqlite" else PostgresLedger
    original = store.claim_reservation_ids
    failing = False

    def claim(self: Any, count: int) -> range:
        if failing:
            raise ServiceUnavailable("the budget ledger cannot be written: disk I/O error")
        return original(self, count)

    monkeypatch.setattr(store, "claim_reservation_ids", claim)
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: keeper(path, "warn", 1.0), name="budget")
        granted = await ref.ask(Reserve("a", "openai", "gpt-4o", 0.25))
        failing = True
        with pytest.raises(ServiceUnavailable) as info:
            await ref.ask(Reserve("b", "openai", "gpt-4o", 0.25))
        status = await ref.ask(GetBudget())
        failing = False
        later = await ref.ask(Reserve("c", "openai", "gpt-4o", 0.25))
        assert ref.stats().restarts == 0
    assert info.value.message == "the budget ledger cannot be written: disk I/O error"
    assert status["periods"]["daily"]["reserved"] == pytest.approx(0.25)
    assert status["ledger_errors"]["failed_writes"] == 1
    assert later.id > granted.id


# -- clamping, time zones, and keepers of several processes on one ledger -----------------


async def test_under_enforce_max_tokens_is_clamped_to_the_headroom(path: Opener) -> None:
    """A worst case over the limit is granted with as many output tokens as still fit; below 64, refused."""
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: keeper(path, daily=1.0), name="budget")
        # $0.50 of input, then $0.0015 an output token: 1,000 tokens ask for $2.00.
        asked = Reserve("a", "openai", "gpt-4o", 2.0, 100, 1000, output_price=0.0015)
        clamped = await ref.ask(attrs.evolve(asked, min_output_tokens=64))
        assert clamped.output_tokens == 333
        assert clamped.amount == pytest.approx(0.5 + 333 * 0.0015)
        with pytest.raises(BudgetExceeded):
            await ref.ask(attrs.evolve(asked, request_id="b", min_output_tokens=64))
        with pytest.raises(BudgetExceeded):  # no floor given: never clamped
            await ref.ask(attrs.evolve(asked, request_id="c"))
        status = await ref.ask(GetBudget())
    assert status["periods"]["daily"]["reserved"] == pytest.approx(clamped.amount)
    ledger = path()
    (row,) = ledger.reservations()
    ledger.close()
    assert (row.output_tokens, row.amount) == (333, clamped.amount)


async def test_days_start_at_midnight_in_the_budget_time_zone(path: Opener) -> None:
    """With RHETOR_BUDGET_TIMEZONE=Pacific/Auckland, a charge at 11:30 UTC is already tomorrow's."""
    now = datetime(2024, 6, 3, 11, 30, tzinfo=UTC)  # 23:30 in Auckland (UTC+12 in June)
    clock = {"now": now}
    auckland = ZoneInfo("Pacific/Auckland")
    async with actors.open_system() as system:
        ref = await system.spawn(
            lambda: keeper(path, daily=1.0, tz=auckland, now=lambda: clock["now"]), name="budget"
        )
        held = await ref.ask(Reserve("a", "openai", "gpt-4o", 0.4))
        await ref.ask(settle(held.id, 0.4))
        clock["now"] = datetime(2024, 6, 3, 12, 30, tzinfo=UTC)  # 00:30 the next day there
        status = await ref.ask(GetBudget())
        usage = await ref.ask(GetUsage("daily", "provider"))
        weekly = await ref.ask(GetUsage("weekly", "provider"))
    assert status["periods"]["daily"]["spent"] == 0.0
    assert status["periods"]["daily"]["start"] == "2024-06-03T12:00:00+00:00"
    assert usage == []
    assert weekly[0]["cost"] == pytest.approx(0.4)  # Monday 3 June, still the same week


async def test_two_keepers_on_one_shared_ledger_never_overspend(pg: Any) -> None:
    """Two runtimes' keepers reserving at once against one PostgreSQL ledger stay within the limit together."""
    limit = 0.05
    granted: list[float] = []

    def opener() -> BudgetLedger:
        return PostgresLedger(pg)

    async with actors.open_system() as system:
        refs = [
            await system.spawn(
                lambda owner=owner: keeper(opener, daily=limit, owner=owner), name=owner
            )
            for owner in ("runtime-1", "runtime-2")
        ]

        async def one(i: int) -> None:
            ref = refs[i % 2]
            amount = 0.001 + (i % 7) * 0.0005
            try:
                reservation = await ref.ask(Reserve(str(i), "openai", "gpt-4o", amount))
            except BudgetExceeded:
                return
            granted.append(amount)
            await trio.sleep(random.random() / 100)
            await ref.ask(settle(reservation.id, amount * random.uniform(0.3, 1.0)))

        async with trio.open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(one, i)
    assert 0 < len(granted) < 200
    ledger = opener()
    assert ledger.spent(0.0) <= limit
    assert ledger.reservations() == []
    ledger.close()


async def test_a_limit_set_through_one_keeper_binds_the_other_at_once(pg: Any) -> None:
    """On a shared ledger the check is the database's: a limit one runtime sets refuses the other's next reserve."""

    def opener() -> BudgetLedger:
        return PostgresLedger(pg)

    async with actors.open_system() as system:
        first = await system.spawn(lambda: keeper(opener, owner="runtime-1"), name="one")
        second = await system.spawn(lambda: keeper(opener, owner="runtime-2"), name="two")
        assert await second.ask(GetBudgetMode()) is True  # always reserve: others may set limits
        await second.ask(Reserve("a", "openai", "gpt-4o", 0.5))
        await first.ask(SetLimit("daily", 0.6))
        with pytest.raises(BudgetExceeded) as info:
            await second.ask(Reserve("b", "openai", "gpt-4o", 0.2))
        status = await first.ask(GetBudget())
    assert info.value.limit == 0.6
    assert status["periods"]["daily"]["reserved"] == pytest.approx(0.5)  # the other's reservation


async def test_two_keepers_on_one_shared_ledger_never_overspend_a_component_limit(pg: Any) -> None:
    """Two runtimes reserving at once for one component stay within its limit together, while another component spends freely."""
    limit = 0.05
    granted: list[tuple[str, float]] = []

    def opener() -> BudgetLedger:
        return PostgresLedger(pg)

    async with actors.open_system() as system:
        refs = [
            await system.spawn(lambda owner=owner: keeper(opener, owner=owner), name=owner)
            for owner in ("runtime-1", "runtime-2")
        ]
        await refs[0].ask(SetLimit("daily", limit, component="ui"))

        async def one(i: int) -> None:
            ref, component = refs[i % 2], ("ui", "ergon")[i % 3 == 0]
            amount = 0.001 + (i % 7) * 0.0005
            try:
                reservation = await ref.ask(
                    Reserve(str(i), "openai", "gpt-4o", amount, component=component)
                )
            except BudgetExceeded:
                return
            granted.append((component, amount))
            await trio.sleep(random.random() / 100)
            cost = amount * random.uniform(0.3, 1.0)
            await ref.ask(
                Settle(
                    reservation.id, str(i), "openai", "gpt-4o", component, None, Usage(1, 1), cost
                )
            )

        async with trio.open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(one, i)
    ui = [a for c, a in granted if c == "ui"]
    assert 0 < len(ui) < len([i for i in range(200) if i % 3 != 0])
    assert len([c for c, _ in granted if c == "ergon"]) == len(
        [i for i in range(200) if i % 3 == 0]
    )
    ledger = opener()
    spent = {row.key: row.cost for row in ledger.usage(0.0, "component")}
    assert spent["ui"] <= limit
    assert ledger.reservations() == []
    ledger.close()


async def test_settles_and_progress_are_answered_with_no_task_of_their_own(path: Opener) -> None:
    """A settle waits for its commit in no handler task (actors.Later); progress needs none either."""
    spawned: list[str] = []

    class Spawns(trio.abc.Instrument):
        def task_spawned(self, task: trio.lowlevel.Task) -> None:
            spawned.append(task.name)

    async with actors.open_system() as system:
        ref = await system.spawn(lambda: keeper(path, policy="warn", daily=10.0), name="budget")
        reservation = await ref.ask(Reserve("a", "openai", "gpt-4o", 0.5))
        instrument = Spawns()
        trio.lowlevel.add_instrument(instrument)
        try:
            await ref.tell(Progress(reservation.id, 5, 0.01))
            assert await ref.ask(settle(reservation.id, 0.25)) == pytest.approx(0.25)
        finally:
            trio.lowlevel.remove_instrument(instrument)
        status = await ref.ask(GetBudget())
    assert not [name for name in spawned if "_handle_one" in name]
    assert status["periods"]["daily"]["spent"] == pytest.approx(0.25)


async def test_a_bug_answering_a_failed_settle_fails_that_settle_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failed-settle path runs outside any handler; a bug in it fails its settle, not the keeper."""
    path = tmp_path / "l.db"
    SQLiteLedger(path).close()
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON entries WHEN NEW.request_id = 'poison'"
        " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
    )
    conn.commit()
    conn.close()

    async def broken(*args: Any) -> None:
        raise RuntimeError("a bug in the failed-settle path")

    monkeypatch.setattr(BudgetKeeper, "_answer_failed_settle", broken)
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: keeper(path), name="budget")
        poison = Settle(0, "poison", "openai", "gpt-4o", None, None, Usage(1, 1), 0.01)
        with pytest.raises(ServiceUnavailable, match="RuntimeError") as info:
            await ref.ask(poison)
        assert isinstance(info.value.__cause__, RuntimeError)
        good = Settle(0, "good", "openai", "gpt-4o", None, None, Usage(1, 1), 0.01)
        assert await ref.ask(good) == pytest.approx(0.01)
        assert ref.stats().restarts == 0
