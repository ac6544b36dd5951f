"""
The budget's arithmetic: limits, spend per period and open reservations, in memory.

:class:`Accounts` is pure and synchronous: no I/O and no checkpoint, so the
BudgetKeeper that drives it checks a reservation against every limit and holds
it in one step that no other request can interleave with. It mirrors the
ledger: the keeper loads it from the ledger at start, and applies a charge to
it only once the charge is committed.

:func:`decide` is the one budget rule (grant, warn, clamp or refuse), used
by :class:`Accounts` in memory and by a shared ledger inside its database
transaction. :func:`period_start` and :func:`period_end` are the calendar
arithmetic of budget periods, in the budget's time zone; :func:`usd` prints
an amount for people.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import TYPE_CHECKING, Literal, TypedDict, get_args

import attrs

from rhetor._errors import ValidationError

if TYPE_CHECKING:
    from rhetor.budget._interfaces import LedgerEntry, ReservationRow

__all__ = [
    "PERIODS",
    "Accounts",
    "Claim",
    "Decision",
    "Over",
    "Period",
    "PeriodStatus",
    "ProviderSpend",
    "check_period",
    "decide",
    "decide_batch",
    "effective_limits",
    "first_over",
    "headroom",
    "period_end",
    "period_start",
    "usd",
]

Period = Literal["daily", "weekly", "monthly"]
PERIODS: tuple[Period, ...] = get_args(Period)
# Float noise an amount may exceed a limit by and still fit.
_SLACK = 1e-12


def usd(amount: float) -> str:
    """
    ``amount`` in dollars with the digits that matter: ``$0.000123``, ``$0.50``, ``$12.3457``.

    Six significant digits and at least two decimals, never an exponent, so a
    small limit is not printed as ``$0.0001`` or ``$0.0000``.
    """
    if not math.isfinite(amount):
        return f"${amount}"
    text = f"{amount:.6g}"
    if "e" in text:
        text = f"{amount:.12f}".rstrip("0")
    whole, _, decimals = text.partition(".")
    return f"${whole}.{decimals.ljust(2, '0')}"


class ProviderSpend(TypedDict):
    """One provider's limit in a period, what it spent and what remains."""

    limit: float
    spent: float
    remaining: float


class PeriodStatus(TypedDict):
    """A period's spend, open reservations, limit and what remains, and its per-provider limits."""

    spent: float
    reserved: float
    limit: float
    remaining: float | None
    start: str
    providers: dict[str, ProviderSpend]


@attrs.frozen
class Over:
    """The first limit an amount would break, and what is spent and reserved against it."""

    period: Period
    limit: float
    spent: float
    provider: str | None

    def describe(self) -> str:
        """One line for a refusal or a warning."""
        scope = f"{self.provider} " if self.provider else ""
        return (
            f"{scope}{self.period} budget {usd(self.limit)} would be exceeded"
            f" (spent and reserved {usd(self.spent)})"
        )


def check_period(period: str) -> None:
    """Error handling: ValidationError on ``period`` unless it is daily, weekly or monthly."""
    if period not in PERIODS:
        raise ValidationError("period", f"must be one of {', '.join(PERIODS)}")


def _local(now: datetime, tz: tzinfo) -> datetime:
    # A naive datetime is taken to be UTC; an aware one is converted to ``tz``.
    return (now.replace(tzinfo=UTC) if now.tzinfo is None else now).astimezone(tz)


def _midnight(day: date, tz: tzinfo) -> datetime:
    """The first instant of ``day`` in ``tz``, in UTC (a day need not start at 00:00 on a DST change)."""
    local = datetime.combine(day, time(), tzinfo=tz)
    # A midnight that does not exist (clocks jump 00:00 -> 01:00) is normalised
    # by the round trip through UTC; the fold=0 reading of an ambiguous one is the earlier.
    return local.astimezone(UTC)


def _first_day(period: Period, day: date) -> date:
    if period == "daily":
        return day
    if period == "weekly":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def _next_first_day(period: Period, first: date) -> date:
    if period == "daily":
        return first + timedelta(days=1)
    if period == "weekly":
        return first + timedelta(weeks=1)
    if first.month == 12:
        return first.replace(year=first.year + 1, month=1)
    return first.replace(month=first.month + 1)


def period_start(period: Period, now: datetime, tz: tzinfo = UTC) -> datetime:
    """
    The start of the period holding ``now``, in UTC: midnight, Monday midnight or the 1st, in ``tz``.

    ``tz`` is the budget's time zone (``RHETOR_BUDGET_TIMEZONE``, UTC by default).
    """
    check_period(period)
    return _midnight(_first_day(period, _local(now, tz).date()), tz)


def period_end(period: Period, now: datetime, tz: tzinfo = UTC) -> datetime:
    """
    The end (exclusive) of the period holding ``now``, in UTC: the next period's start.
    """
    check_period(period)
    first = _first_day(period, _local(now, tz).date())
    return _midnight(_next_first_day(period, first), tz)


def first_over(
    limits: Mapping[tuple[str, str | None], float],
    used: Callable[[str, str | None], float],
    provider: str,
    amount: float,
) -> Over | None:
    """
    The first limit ``amount`` more on ``provider`` would break, or None.

    ``limits`` maps (period, provider or None) to USD; ``used(period, scope)``
    is what is spent and reserved against that limit. Periods are checked
    daily first, and in each the overall limit before the provider's.
    """
    for period in PERIODS:
        for scope in (None, provider):
            limit = limits.get((period, scope))
            if not limit:
                continue
            spent = used(period, scope)
            if amount > limit - spent + _SLACK:
                return Over(period, limit, spent, scope)
    return None


def headroom(
    limits: Mapping[tuple[str, str | None], float],
    used: Callable[[str, str | None], float],
    provider: str,
) -> float:
    """The least that remains under any limit that applies to ``provider`` (infinite without one)."""
    room = math.inf
    for period in PERIODS:
        for scope in (None, provider):
            limit = limits.get((period, scope))
            if limit:
                room = min(room, limit - used(period, scope))
    return room


@attrs.frozen
class Claim:
    """
    What a reservation asks for: ``amount`` USD, the worst case of ``output_tokens``.

    ``output_price`` is the USD one output token adds to it (so ``amount`` less
    ``output_tokens * output_price`` is the input's share); with it, under
    ``enforce``, a claim that does not fit may be granted fewer output tokens,
    down to ``min_output_tokens``, instead of being refused.
    """

    provider: str
    amount: float
    output_tokens: int = 0
    output_price: float = 0.0
    min_output_tokens: int | None = None

    @property
    def clampable(self) -> bool:
        """Whether fewer output tokens could be granted than asked for."""
        return (
            self.output_price > 0
            and self.min_output_tokens is not None
            and self.min_output_tokens < self.output_tokens
        )


@attrs.frozen
class Decision:
    """
    What the budget says to a :class:`Claim`.

    Refused (``refused``, with ``over`` the limit it breaks), granted as
    asked (``over`` set under ``warn``: the warning), or granted with fewer
    output tokens (``output_tokens`` and ``amount`` below the claim's).
    """

    refused: bool
    output_tokens: int
    amount: float
    over: Over | None = None

    @property
    def warning(self) -> str | None:
        """The line a granted reply carries when it goes over a limit (the ``warn`` policy)."""
        return None if self.refused or self.over is None else self.over.describe()


def decide(
    policy: str,
    limits: Mapping[tuple[str, str | None], float],
    used: Callable[[str, str | None], float],
    claim: Claim,
) -> Decision:
    """
    The one budget rule, for a claim against ``used`` (spent plus every open reservation).

    ``ignore``: granted. ``warn``: granted, with the first limit it breaks as
    a warning. ``enforce``: granted if it fits every limit; else, if it is
    clampable, granted with as many output tokens as the least headroom pays
    for (at least ``min_output_tokens``); else refused, naming the first
    limit it breaks. Pure: the caller makes the check and the hold one step.
    """
    full = Decision(False, claim.output_tokens, claim.amount)
    if policy == "ignore":
        return full
    over = first_over(limits, used, claim.provider, claim.amount)
    if over is None:
        return full
    if policy != "enforce":
        return attrs.evolve(full, over=over)
    if claim.clampable:
        input_cost = max(0.0, claim.amount - claim.output_tokens * claim.output_price)
        room = headroom(limits, used, claim.provider)
        tokens = math.floor((room - input_cost + _SLACK) / claim.output_price)
        tokens = min(tokens, claim.output_tokens - 1)
        if tokens >= (claim.min_output_tokens or 0) and tokens >= 1:
            amount = input_cost + tokens * claim.output_price
            if first_over(limits, used, claim.provider, amount) is None:
                return Decision(False, tokens, amount)
    return Decision(True, claim.output_tokens, claim.amount, over)


def effective_limits(
    defaults: Mapping[tuple[Period, str | None], float],
    stored: Mapping[tuple[Period, str | None], float],
) -> dict[tuple[str, str | None], float]:
    """
    The limits in force: the defaults (the environment's), each replaced by a stored one.

    A stored 0 removes a limit, as setting it to 0 through the API does.
    """
    merged = {key: float(amount) for key, amount in defaults.items() if amount}
    for key, amount in stored.items():
        if amount:
            merged[key] = float(amount)
        else:
            merged.pop(key, None)
    return merged  # type: ignore[return-value]


def decide_batch(
    policy: str,
    limits: Mapping[tuple[str, str | None], float],
    used: Mapping[tuple[Period, str], float],
    claims: Iterable[Claim],
) -> list[Decision]:
    """
    :func:`decide` for each claim in order, each one's grant counted against the next.

    ``used`` is what is spent and reserved per (period, provider); the
    overall totals are their sums.
    """
    per: dict[tuple[str, str], float] = {key: amount for key, amount in used.items()}
    overall: dict[str, float] = {period: 0.0 for period in PERIODS}
    for (period, _), amount in per.items():
        overall[period] += amount

    def total(period: str, scope: str | None) -> float:
        return overall[period] if scope is None else per.get((period, scope), 0.0)

    decisions = []
    for claim in claims:
        decision = decide(policy, limits, total, claim)
        if not decision.refused:
            for period in PERIODS:
                per[(period, claim.provider)] = (
                    per.get((period, claim.provider), 0.0) + decision.amount
                )
                overall[period] += decision.amount
        decisions.append(decision)
    return decisions


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
                for scope in (None, entry.provider):
                    key = (period, scope)
                    self._spent[key] = self._spent.get(key, 0.0) + entry.cost

    # -- limits ----------------------------------------------------------------

    def set_limit(self, period: str, amount: float, provider: str | None = None) -> None:
        """Set a limit; 0 removes it. Error handling: ValidationError for a bad period or amount."""
        check_period(period)
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

    def limit(self, period: str, provider: str | None = None) -> float:
        """The limit set for a period and scope; 0.0 when none."""
        return self._limits.get((period, provider), 0.0)

    @property
    def limited(self) -> bool:
        """True when any limit is set."""
        return bool(self._limits)

    def over(self, provider: str, amount: float) -> Over | None:
        """The first limit ``amount`` more on ``provider`` would break, or None."""
        self.roll()
        return first_over(self._limits, self._used, provider, amount)

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
        self._reserved_by[row.provider] = self._reserved_by.get(row.provider, 0.0) + row.amount

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
        self._reserved_by[row.provider] = max(0.0, self._reserved_by[row.provider] - row.amount)

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
            for (p, provider), amount in self._limits.items():
                if p == period and provider is not None:
                    used = self._spent.get((period, provider), 0.0)
                    providers[provider] = {
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
            }
        return periods
