"""BudgetKeeper: reservations, policies, limits and the ledger."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trio

import actors
from rhetor._budget import (
    BudgetKeeper,
    CheckBudget,
    GetBudget,
    GetUsage,
    Reserve,
    SetLimit,
    SetPolicy,
    Settle,
)
from rhetor._errors import BudgetExceeded, ValidationError
from rhetor._ledger import Ledger
from rhetor._types import Usage


def keeper(path: Path, policy: str = "enforce", daily: float = 0.0) -> BudgetKeeper:
    return BudgetKeeper(
        path,
        policy=policy,  # type: ignore[arg-type]
        limits={"daily": daily, "weekly": 0.0, "monthly": 0.0},
    )


def settle(reservation_id: int, cost: float, provider: str = "openai") -> Settle:
    return Settle(reservation_id, "r", provider, "gpt-4o", "test", None, Usage(10, 10), cost)


async def test_enforce_refuses_a_reservation_over_the_limit(tmp_path: Path) -> None:
    """Under enforce, a worst case that would pass the daily limit is refused with its numbers."""
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: keeper(tmp_path / "l.db", daily=1.0), name="budget")
        granted = await ref.ask(Reserve("a", "openai", "gpt-4o", 0.6))
        with pytest.raises(BudgetExceeded) as info:
            await ref.ask(Reserve("b", "openai", "gpt-4o", 0.6))
        assert info.value.period == "daily" and info.value.limit == 1.0
        await ref.ask(settle(granted.id, 0.1))
        # Settling at the real cost frees the rest of the reservation.
        assert await ref.ask(Reserve("c", "openai", "gpt-4o", 0.6))


async def test_warn_grants_but_carries_a_warning(tmp_path: Path) -> None:
    """Under warn, an over-limit reservation is granted with a warning."""
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: keeper(tmp_path / "l.db", "warn", 0.5), name="budget")
        reservation = await ref.ask(Reserve("a", "openai", "gpt-4o", 0.6))
        assert reservation.warning and "daily budget" in reservation.warning


async def test_ignore_grants_silently(tmp_path: Path) -> None:
    """Under ignore, limits neither refuse nor warn."""
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: keeper(tmp_path / "l.db", "ignore", 0.5), name="budget")
        reservation = await ref.ask(Reserve("a", "openai", "gpt-4o", 5.0))
        assert reservation.warning is None


async def test_concurrent_reservations_never_overspend(tmp_path: Path) -> None:
    """200 concurrent requests against a small limit: granted worst cases and spend stay within it."""
    limit = 0.05
    granted: list[float] = []
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: keeper(tmp_path / "l.db", daily=limit), name="budget")

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
    ledger = Ledger(tmp_path / "l.db")
    try:
        assert ledger.spent(0.0) <= limit
    finally:
        ledger.close()


async def test_provider_limit_applies_to_that_provider_only(tmp_path: Path) -> None:
    """A per-provider limit refuses that provider while others go on."""
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: keeper(tmp_path / "l.db"), name="budget")
        await ref.ask(SetLimit("daily", 0.1, "openai"))
        with pytest.raises(BudgetExceeded) as info:
            await ref.ask(Reserve("a", "openai", "gpt-4o", 0.2))
        assert info.value.provider == "openai"
        assert await ref.ask(Reserve("b", "anthropic", "claude", 0.2))


async def test_negative_limit_and_unknown_policy_are_rejected(tmp_path: Path) -> None:
    """Bad limits and policies are typed errors naming the field, and the keeper keeps serving."""
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: keeper(tmp_path / "l.db"), name="budget")
        with pytest.raises(ValidationError) as info:
            await ref.ask(SetLimit("daily", -1.0))
        assert info.value.field == "limit"
        with pytest.raises(ValidationError) as info:
            await ref.ask(SetPolicy("panic"))  # type: ignore[arg-type]
        assert info.value.field == "policy"
        assert (await ref.ask(GetBudget()))["policy"] == "enforce"


async def test_limits_policy_and_spend_survive_a_restart(tmp_path: Path) -> None:
    """Limits and policy set at run time, and recorded spend, are there after a restart."""
    path = tmp_path / "l.db"
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


async def test_check_budget_answers_without_reserving(tmp_path: Path) -> None:
    """An estimate check says whether an amount fits and reserves nothing."""
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: keeper(tmp_path / "l.db", daily=1.0), name="budget")
        assert (await ref.ask(CheckBudget("openai", 0.9)))[0] is True
        assert (await ref.ask(CheckBudget("openai", 0.9)))[0] is True
        under, warning = await ref.ask(CheckBudget("openai", 1.5))
        assert under is False and "daily" in warning


async def test_charge_without_component_reaches_the_ledger(tmp_path: Path) -> None:
    """A settled charge with no component or context is written to the ledger and reported."""
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: keeper(tmp_path / "l.db"), name="budget")
        reservation = await ref.ask(Reserve("a", "alpha", "alpha-1", 0.0))
        await ref.ask(
            Settle(
                reservation.id, "a", "alpha", "alpha-1", None, None, Usage(10, 6), 0.0, "partial"
            )
        )
        rows = await ref.ask(GetUsage("daily", "provider"))
        assert ref.stats().restarts == 0
    assert rows[0]["key"] == "alpha" and rows[0]["output_tokens"] == 6
