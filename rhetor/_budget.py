"""
BudgetKeeper: the actor that keeps spending inside its limits.

Enforcement is by reservation. Before a request is sent, the router reserves
its worst-case cost (all of ``max_tokens`` produced); the keeper grants it only
if spent + reserved + this request stays within every limit. After the call
the router settles the reservation with the actual cost. Because the keeper
handles one message at a time, concurrent requests can never jointly overspend.

The ledger (SQLite, WAL) is written in batches by a background task and
flushed on stop; spend totals are kept in memory and rebuilt from the ledger
when a period rolls over or the actor restarts.
"""

from __future__ import annotations

import itertools
import logging
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import anyio
import attrs

import actors
from rhetor._errors import BudgetExceeded, RhetorError, ValidationError
from rhetor._ledger import GroupBy, Ledger, LedgerEntry, Period, period_end, period_start
from rhetor._settings import POLICIES, BudgetPolicy
from rhetor._types import Usage

__all__ = [
    "PERIODS",
    "BudgetKeeper",
    "CheckBudget",
    "GetBudget",
    "GetBudgetMode",
    "GetUsage",
    "Reservation",
    "Reserve",
    "SetLimit",
    "SetPolicy",
    "Settle",
]

log = logging.getLogger("rhetor.budget")

PERIODS: tuple[Period, ...] = get_args(Period)


@attrs.frozen
class Reserve:
    """Reserve ``amount`` USD for one request; answers a :class:`Reservation`."""

    request_id: str
    provider: str
    model: str
    amount: float


@attrs.frozen
class Reservation:
    """A granted reservation, and the warning to pass on under the ``warn`` policy."""

    id: int
    provider: str
    amount: float
    warning: str | None = None


@attrs.frozen
class Settle:
    """Replace a reservation with what the request actually cost; answers None once recorded."""

    reservation_id: int
    request_id: str
    provider: str
    model: str
    component: str | None
    context_id: str | None
    usage: Usage
    cost: float
    status: Literal["ok", "partial", "failed"] = "ok"


@attrs.frozen
class CheckBudget:
    """Would ``amount`` on ``provider`` fit? Answers ``(under_budget, warning)``."""

    provider: str
    amount: float


@attrs.frozen
class GetBudget:
    """Answers the status of every period (spent, reserved, limit, remaining, policy)."""


@attrs.frozen
class GetUsage:
    """Answers usage rows for a period, grouped by provider, model, component or context."""

    period: Period
    group_by: GroupBy


@attrs.frozen
class SetLimit:
    """Set a period's limit, globally or for one provider; 0 removes it."""

    period: Period
    amount: float
    provider: str | None = None


@attrs.frozen
class SetPolicy:
    """Set the policy: ignore, warn or enforce."""

    policy: BudgetPolicy


@attrs.frozen
class GetBudgetMode:
    """
    Answers whether reservations are needed: only when a limit exists and the
    policy is not ``ignore`` can a reservation be refused or carry a warning.
    """


def _utcnow() -> datetime:
    return datetime.now(UTC)


class BudgetKeeper(actors.Actor):
    """
    Grants, settles and reports spending against daily, weekly and monthly limits.

    Cancellation: on stop, pending ledger entries are flushed under a shielded
    scope with a deadline.

    Error handling: a refused reservation is a :class:`BudgetExceeded` answer;
    a bad limit or policy is a :class:`ValidationError` answer.
    """

    errors: ClassVar[tuple[type[BaseException], ...]] = (RhetorError,)
    contained: ClassVar[tuple[type[Exception], ...]] = (Exception,)

    def __init__(
        self,
        path: Path,
        *,
        policy: BudgetPolicy,
        limits: dict[str, float],
        now: Callable[[], datetime] = _utcnow,
        flush_interval: float = 0.5,
    ) -> None:
        self._path = path
        self._now = now
        self._flush_interval = flush_interval
        self._policy: BudgetPolicy = policy
        # Invariant: (period, provider or None) -> limit in USD; absent or 0 means none.
        self._limits: dict[tuple[str, str | None], float] = {
            (p, None): v for p, v in limits.items() if v > 0
        }
        self._ledger: Ledger | None = None
        # Invariant: spent[(period, provider or None)] is the ledger's total since
        # _starts[period], including entries still waiting in _pending.
        self._spent: dict[tuple[str, str | None], float] = {}
        self._starts: dict[str, datetime] = {}
        # Invariant: the epoch second at which the earliest period ends.
        self._next_roll = 0.0
        # Invariant: the sum of open reservations, overall and per provider.
        self._open: dict[int, Reservation] = {}
        self._reserved_total = 0.0
        self._reserved_by: dict[str, float] = {}
        self._ids = itertools.count(1)
        self._pending: list[LedgerEntry] = []
        self._wake = anyio.Event()
        self._flush_lock = anyio.Lock()

    async def started(self) -> None:
        self._ledger = await anyio.to_thread.run_sync(Ledger, self._path)
        stored = await anyio.to_thread.run_sync(self._ledger.get_limits)
        for (period, provider), amount in stored.items():
            self._set_limit(period, amount, provider)
        stored_policy = await anyio.to_thread.run_sync(self._ledger.get_policy)
        for policy in POLICIES:
            if stored_policy == policy:
                self._policy = policy
        for period in PERIODS:
            await self._load_period(period)
        self.task_group.start_soon(self._flush_loop)

    async def stopping(self) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(5.0):
            await self._flush()
            if self._ledger is not None:
                await anyio.to_thread.run_sync(self._ledger.close)

    # -- spend bookkeeping -------------------------------------------------

    @property
    def ledger(self) -> Ledger:
        assert self._ledger is not None, "used before started()"
        return self._ledger

    async def _load_period(self, period: str) -> None:
        start = period_start(period, self._now())  # type: ignore[arg-type]
        await self._flush()
        since = start.timestamp()
        self._starts[period] = start
        for key in [k for k in self._spent if k[0] == period]:
            del self._spent[key]
        self._spent[(period, None)] = await anyio.to_thread.run_sync(self.ledger.spent, since)
        for row in await anyio.to_thread.run_sync(self.ledger.usage, since, "provider"):
            self._spent[(period, row.key)] = row.cost

    async def _roll_periods(self) -> None:
        now = self._now()
        # Fast path: nothing rolls over before the earliest period end.
        if now.timestamp() < self._next_roll:
            return
        for period in PERIODS:
            if now >= period_end(period, self._starts[period]):
                await self._load_period(period)
        self._next_roll = min(period_end(p, self._starts[p]) for p in PERIODS).timestamp()

    async def _flush(self) -> None:
        # The lock makes a flush wait for one already writing, so a reader that
        # flushes first always sees every settled charge.
        async with self._flush_lock:
            if not self._pending or self._ledger is None:
                return
            batch, self._pending = self._pending, []
            try:
                await anyio.to_thread.run_sync(self._ledger.record_many, batch)
            except sqlite3.Error:
                # A disk or lock problem: keep the entries for the next flush
                # rather than crash and lose acknowledged charges.
                self._pending[:0] = batch
                log.exception("could not write %d ledger entries; will retry", len(batch))
            except BaseException:
                self._pending[:0] = batch
                raise

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            await anyio.sleep(self._flush_interval)
            await self._flush()

    def _headroom(self, period: str, provider: str | None) -> float | None:
        limit = self._limits.get((period, provider))
        if not limit:
            return None
        spent = self._spent.get((period, provider), 0.0)
        reserved = (
            self._reserved_total if provider is None else self._reserved_by.get(provider, 0.0)
        )
        return limit - spent - reserved

    def _over(self, provider: str, amount: float) -> tuple[str, float, float, str | None] | None:
        """The first limit this amount would break: (period, limit, spent, provider)."""
        for period in PERIODS:
            for scope in (None, provider):
                room = self._headroom(period, scope)
                if room is not None and amount > room + 1e-12:
                    limit = self._limits[(period, scope)]
                    return period, limit, limit - room, scope
        return None

    def _set_limit(self, period: str, amount: float, provider: str | None) -> None:
        if period not in PERIODS:
            raise ValidationError("period", f"must be one of {', '.join(PERIODS)}")
        if isinstance(amount, bool) or not isinstance(amount, int | float):
            raise ValidationError("limit", "must be a number")
        if amount < 0:
            raise ValidationError("limit", f"must not be negative, got {amount}")
        if amount == 0:
            self._limits.pop((period, provider), None)
        else:
            self._limits[(period, provider)] = float(amount)

    # -- messages ----------------------------------------------------------

    async def handle(self, message: Any) -> Any:
        if isinstance(message, Reserve):
            return await self._reserve(message)
        if isinstance(message, Settle):
            return await self._settle(message)
        if isinstance(message, CheckBudget):
            await self._roll_periods()
            over = self._over(message.provider, message.amount)
            return over is None, None if over is None else self._describe(over)
        if isinstance(message, GetBudget):
            await self._roll_periods()
            return self._status()
        if isinstance(message, GetUsage):
            await self._flush()
            start = period_start(message.period, self._now())
            rows = await anyio.to_thread.run_sync(
                self.ledger.usage, start.timestamp(), message.group_by
            )
            return [attrs.asdict(r) for r in rows]
        if isinstance(message, SetLimit):
            self._set_limit(message.period, message.amount, message.provider)
            await anyio.to_thread.run_sync(
                self.ledger.set_limit, message.period, float(message.amount), message.provider
            )
            return self._status()
        if isinstance(message, GetBudgetMode):
            return self._reservations_required()
        if isinstance(message, SetPolicy):
            if message.policy not in POLICIES:
                raise ValidationError("policy", f"must be one of {', '.join(POLICIES)}")
            self._policy = message.policy
            await anyio.to_thread.run_sync(self.ledger.set_policy, message.policy)
            return self._status()
        raise TypeError(f"BudgetKeeper cannot handle {type(message).__name__}")

    def _reservations_required(self) -> bool:
        return self._policy != "ignore" and bool(self._limits)

    def _describe(self, over: tuple[str, float, float, str | None]) -> str:
        period, limit, spent, provider = over
        scope = f"{provider} " if provider else ""
        return f"{scope}{period} budget ${limit:.4f} would be exceeded (spent and reserved ${spent:.4f})"

    async def _reserve(self, message: Reserve) -> Reservation:
        if message.amount < 0:
            raise ValidationError("amount", "must not be negative")
        await self._roll_periods()
        warning = None
        if self._policy != "ignore":
            over = self._over(message.provider, message.amount)
            if over is not None:
                text = self._describe(over)
                if self._policy == "enforce":
                    period, limit, spent, provider = over
                    raise BudgetExceeded(
                        f"{text}: request for {message.provider}/{message.model} refused",
                        period=period,
                        limit=limit,
                        spent=spent,
                        provider=provider,
                    )
                warning = text
        reservation = Reservation(next(self._ids), message.provider, message.amount, warning)
        self._open[reservation.id] = reservation
        self._reserved_total += message.amount
        self._reserved_by[message.provider] = (
            self._reserved_by.get(message.provider, 0.0) + message.amount
        )
        return reservation

    async def _settle(self, message: Settle) -> None:
        reservation = self._open.pop(message.reservation_id, None)
        if reservation is not None:
            self._reserved_total = max(0.0, self._reserved_total - reservation.amount)
            left = self._reserved_by.get(reservation.provider, 0.0) - reservation.amount
            self._reserved_by[reservation.provider] = max(0.0, left)
        await self._roll_periods()
        for period in PERIODS:
            for scope in (None, message.provider):
                key = (period, scope)
                self._spent[key] = self._spent.get(key, 0.0) + message.cost
        self._pending.append(
            LedgerEntry(
                ts=self._now().timestamp(),
                request_id=message.request_id,
                provider=message.provider,
                model=message.model,
                component=message.component or "",
                context_id=message.context_id,
                input_tokens=message.usage.input_tokens,
                output_tokens=message.usage.output_tokens,
                cost=message.cost,
                status=message.status,
            )
        )
        self._wake.set()

    def _status(self) -> dict[str, Any]:
        periods: dict[str, Any] = {}
        for period in PERIODS:
            limit = self._limits.get((period, None), 0.0)
            spent = self._spent.get((period, None), 0.0)
            providers = {
                prov: {
                    "limit": amount,
                    "spent": self._spent.get((period, prov), 0.0),
                    "remaining": max(0.0, amount - self._spent.get((period, prov), 0.0)),
                }
                for (p, prov), amount in self._limits.items()
                if p == period and prov is not None
            }
            periods[period] = {
                "spent": round(spent, 10),
                "reserved": round(self._reserved_total, 10),
                "limit": limit,
                "remaining": None if not limit else max(0.0, round(limit - spent, 10)),
                "start": self._starts[period].isoformat(),
                "providers": providers,
            }
        return {
            "policy": self._policy,
            "periods": periods,
            "reservations_required": self._reservations_required(),
        }
