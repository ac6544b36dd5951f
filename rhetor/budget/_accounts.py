"""
The budget's arithmetic: limits, spend per period and open reservations, in memory.

:class:`Accounts` is pure and synchronous: no I/O and no checkpoint, so the
BudgetKeeper that drives it checks a reservation against every limit and holds
it in one step that no other request can interleave with. It mirrors the
ledger: the keeper loads it from the ledger at start, and applies a charge to
it only once the charge is committed. The rules it applies (:func:`decide`, the
calendar of periods) are :mod:`rhetor.budget._rules`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING, TypedDict

import attrs

from rhetor._errors import ValidationError
from rhetor.budget._rules import (
    PERIODS,
    Claim,
    Decision,
    Over,
    Period,
    check_period,
    component_of,
    component_scope,
    decide,
    first_over,
    period_end,
    period_start,
    scopes,
)

if TYPE_CHECKING:
    from rhetor.budget._interfaces import LedgerEntry, ReservationRow

__all__ = ["Accounts", "PeriodStatus", "ProviderSpend"]


class ProviderSpend(TypedDict):
    """One provider's limit in a period, what it spent and what remains."""

    limit: float
    spent: float
    remaining: float


class PeriodStatus(TypedDict):
    """A period's spend, open reservations, limit and what remains, and its per-provider and per-component limits."""

    spent: float
    reserved: float
    limit: float
    remaining: float | None
    start: str
    providers: dict[str, ProviderSpend]
    components: dict[str, ProviderSpend]


@attrs.define(eq=False)
class Accounts:
    """
    Limits, committed spend and open reservations; checks and grants reservations.
    """

    _now: Callable[[], datetime] = attrs.field(alias="now")
    _tz: tzinfo = attrs.field(default=UTC, alias="tz", kw_only=True)
    # Invariant: (period, provider or None) -> limit in USD; absent means none.
    _limits: dict[tuple[str, str | None], float] = attrs.field(init=False, factory=dict)
    # Invariant: spent[(period, provider or None)] is the total of committed
    # charges whose time is at or after starts[period].
    _spent: dict[tuple[str, str | None], float] = attrs.field(init=False, factory=dict)
    _starts: dict[Period, datetime] = attrs.field(init=False, factory=dict)
    # Invariant: the epoch second at which the earliest period ends.
    _next_roll: float = attrs.field(init=False, default=0.0)
    # Invariant: reservations held and not yet settled, with their sums overall
    # and per provider, and their keys.
    _open: dict[int, ReservationRow] = attrs.field(init=False, factory=dict)
    _warnings: dict[int, str | None] = attrs.field(init=False, factory=dict)
    _by_key: dict[str, int] = attrs.field(init=False, factory=dict)
    _reserved_total: float = attrs.field(init=False, default=0.0)
    _reserved_by: dict[str, float] = attrs.field(init=False, factory=dict)

    # -- periods and spend ---------------------------------------------------

    def period_starts(self) -> dict[Period, datetime]:
        """The start of the current daily, weekly and monthly period."""
        now = self._now()
        return {period: period_start(period, now, self._tz) for period in PERIODS}

    def load(
        self, starts: Mapping[Period, datetime], spent: Iterable[tuple[Period, str | None, float]]
    ) -> None:
        """Begin from the ledger's totals: ``(period, provider or None, total)`` since each start."""
        self._starts = dict(starts)
        self._spent = {(period, provider): total for period, provider, total in spent}
        self._next_roll = min(period_end(p, self._starts[p], self._tz) for p in PERIODS).timestamp()

    def roll(self) -> None:
        """Start a new period when one has ended; charges then count from its start."""
        now = self._now()
        # Fast path: nothing rolls over before the earliest period end.
        if now.timestamp() < self._next_roll:
            return
        for period in PERIODS:
            if now >= period_end(period, self._starts[period], self._tz):
                self._starts[period] = period_start(period, now, self._tz)
                for key in [k for k in self._spent if k[0] == period]:
                    del self._spent[key]
        self._next_roll = min(period_end(p, self._starts[p], self._tz) for p in PERIODS).timestamp()

    def apply_charge(self, entry: LedgerEntry) -> None:
        """Count a committed charge, releasing the reservation it replaced."""
        self.roll()
        if entry.reservation_id is not None:
            self.forget(entry.reservation_id)
        for period in PERIODS:
            if entry.ts >= self._starts[period].timestamp():
                for scope in scopes(entry.provider, entry.component):
                    key = (period, scope)
                    self._spent[key] = self._spent.get(key, 0.0) + entry.cost

    # -- limits ----------------------------------------------------------------

    def set_limit(
        self,
        period: str,
        amount: float,
        provider: str | None = None,
        *,
        component: str | None = None,
    ) -> None:
        """
        Set a limit, overall, for a provider or for a component; 0 removes it.

        Error handling: ValidationError for a bad period or amount.
        """
        check_period(period)
        if component:
            provider = component_scope(component)
        if isinstance(amount, bool) or not isinstance(amount, int | float):
            raise ValidationError("limit", "must be a number")
        if not math.isfinite(amount) or amount < 0:
            raise ValidationError("limit", f"must be finite and not negative, got {amount}")
        if amount == 0:
            self._limits.pop((period, provider), None)
        else:
            self._limits[(period, provider)] = float(amount)

    def replace_limits(self, limits: Mapping[tuple[str, str | None], float]) -> None:
        """Take ``limits`` (as :attr:`limits` gives them) instead of every limit set."""
        self._limits = {key: float(amount) for key, amount in limits.items() if amount}

    def limit(
        self, period: str, provider: str | None = None, *, component: str | None = None
    ) -> float:
        """The limit set for a period and scope; 0.0 when none."""
        scope = component_scope(component) if component else provider
        return self._limits.get((period, scope), 0.0)

    @property
    def limited(self) -> bool:
        """True when any limit is set."""
        return bool(self._limits)

    def over(self, provider: str, amount: float, component: str | None = None) -> Over | None:
        """The first limit ``amount`` more on ``provider`` would break, or None."""
        self.roll()
        return first_over(self._limits, self._used, provider, amount, component)

    def decide(self, policy: str, claim: Claim) -> Decision:
        """What :func:`decide` says to ``claim`` against these totals (see there)."""
        self.roll()
        return decide(policy, self._limits, self._used, claim)

    def _used(self, period: str, scope: str | None) -> float:
        reserved = self._reserved_total if scope is None else self._reserved_by.get(scope, 0.0)
        return self._spent.get((period, scope), 0.0) + reserved

    @property
    def limits(self) -> dict[tuple[str, str | None], float]:
        """Every limit set, by (period, provider or None)."""
        return dict(self._limits)

    # -- reservations ------------------------------------------------------------

    def hold(self, row: ReservationRow, warning: str | None = None) -> None:
        """Count a reservation against every limit until it is settled or forgotten."""
        self._open[row.id] = row
        self._warnings[row.id] = warning
        if row.key:
            self._by_key[row.key] = row.id
        self._reserved_total += row.amount
        for scope in scopes(row.provider, row.component)[1:]:
            assert scope is not None
            self._reserved_by[scope] = self._reserved_by.get(scope, 0.0) + row.amount

    def forget(self, reservation_id: int) -> None:
        """Stop counting a reservation (settled, or its request never ran); safe to repeat."""
        row = self._open.pop(reservation_id, None)
        if row is None:
            return
        self._warnings.pop(reservation_id, None)
        if self._by_key.get(row.key) == reservation_id:
            del self._by_key[row.key]
        if not self._open:
            # Exactly zero, not the float residue of many additions and subtractions.
            self._reserved_total = 0.0
            self._reserved_by.clear()
            return
        self._reserved_total = max(0.0, self._reserved_total - row.amount)
        for scope in scopes(row.provider, row.component)[1:]:
            assert scope is not None
            self._reserved_by[scope] = max(0.0, self._reserved_by.get(scope, 0.0) - row.amount)

    def held(self, reservation_id: int) -> ReservationRow | None:
        """The open reservation with this id, or None."""
        return self._open.get(reservation_id)

    def held_by_key(self, key: str) -> tuple[ReservationRow, str | None] | None:
        """The open reservation made under ``key``, and its warning, or None."""
        reservation_id = self._by_key.get(key) if key else None
        if reservation_id is None:
            return None
        return self._open[reservation_id], self._warnings.get(reservation_id)

    @property
    def open_count(self) -> int:
        """How many reservations are open."""
        return len(self._open)

    # -- reporting ---------------------------------------------------------------

    def status(self) -> dict[Period, PeriodStatus]:
        """Spent, reserved, limit and remaining per period, and per-provider limits."""
        self.roll()
        periods: dict[Period, PeriodStatus] = {}
        for period in PERIODS:
            limit = self._limits.get((period, None), 0.0)
            spent = self._spent.get((period, None), 0.0)
            providers: dict[str, ProviderSpend] = {}
            components: dict[str, ProviderSpend] = {}
            for (p, scope), amount in self._limits.items():
                if p == period and scope is not None:
                    used = self._spent.get((period, scope), 0.0)
                    component = component_of(scope)
                    into = providers if component is None else components
                    into[scope if component is None else component] = {
                        "limit": amount,
                        "spent": round(used, 10),
                        "remaining": max(0.0, round(amount - used, 10)),
                    }
            periods[period] = {
                "spent": round(spent, 10),
                "reserved": round(self._reserved_total, 10),
                "limit": limit,
                "remaining": None if not limit else max(0.0, round(limit - spent, 10)),
                "start": self._starts[period].isoformat(),
                "providers": providers,
                "components": components,
            }
        return periods
