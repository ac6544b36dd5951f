"""
The budget's rules, pure and synchronous: scopes, the calendar of periods, and the one decision.

:func:`decide` is the one budget rule (grant, warn, clamp or refuse), used by
:class:`~rhetor.budget._accounts.Accounts` in memory and by a shared ledger inside
its database transaction; :func:`decide_batch` applies it to claims in order.
:func:`period_start` and :func:`period_end` are the calendar arithmetic of budget
periods, in the budget's time zone; :func:`usd` prints an amount for people.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Literal, get_args

import attrs

from rhetor._errors import ValidationError

__all__ = [
    "COMPONENT_SCOPE",
    "PERIODS",
    "Claim",
    "Decision",
    "Over",
    "Period",
    "check_period",
    "component_of",
    "component_scope",
    "decide",
    "decide_batch",
    "effective_limits",
    "first_over",
    "headroom",
    "period_end",
    "period_start",
    "scopes",
    "usd",
]

Period = Literal["daily", "weekly", "monthly"]
PERIODS: tuple[Period, ...] = get_args(Period)
# Float noise an amount may exceed a limit by and still fit.
_SLACK = 1e-12
# A limit's scope is None (everything), a provider's name, or this prefix and a
# component's name: limits, spend and reservations are keyed by (period, scope).
COMPONENT_SCOPE = "component:"


def component_scope(component: str | None) -> str | None:
    """The scope of a component's limit (None for no component)."""
    return f"{COMPONENT_SCOPE}{component}" if component else None


def component_of(scope: str | None) -> str | None:
    """The component a scope names, or None for the overall or a provider's scope."""
    if scope is not None and scope.startswith(COMPONENT_SCOPE):
        return scope[len(COMPONENT_SCOPE) :]
    return None


def scopes(provider: str, component: str | None) -> tuple[str | None, ...]:
    """Every scope a request on ``provider`` for ``component`` is counted in, overall first."""
    scope = component_scope(component)
    return (None, provider) if scope is None else (None, provider, scope)


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


@attrs.frozen
class Over:
    """The first limit an amount would break, and what is spent and reserved against it."""

    period: Period
    limit: float
    spent: float
    provider: str | None

    def describe(self) -> str:
        """One line for a refusal or a warning."""
        component = component_of(self.provider)
        if component is not None:
            scope = f"component {component} "
        else:
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
    component: str | None = None,
) -> Over | None:
    """
    The first limit ``amount`` more on ``provider`` (for ``component``) would break, or None.

    ``limits`` maps (period, scope) to USD; ``used(period, scope)`` is what is
    spent and reserved against that limit. Periods are checked daily first,
    and in each the overall limit, then the provider's, then the component's.
    """
    for period in PERIODS:
        for scope in scopes(provider, component):
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
    component: str | None = None,
) -> float:
    """The least that remains under any limit that applies (infinite without one)."""
    room = math.inf
    for period in PERIODS:
        for scope in scopes(provider, component):
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
    # The component the request is for: its limits apply too.
    component: str | None = None

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
    over = first_over(limits, used, claim.provider, claim.amount, claim.component)
    if over is None:
        return full
    if policy != "enforce":
        return attrs.evolve(full, over=over)
    if claim.clampable:
        input_cost = max(0.0, claim.amount - claim.output_tokens * claim.output_price)
        room = headroom(limits, used, claim.provider, claim.component)
        tokens = math.floor((room - input_cost + _SLACK) / claim.output_price)
        tokens = min(tokens, claim.output_tokens - 1)
        if tokens >= (claim.min_output_tokens or 0) and tokens >= 1:
            amount = input_cost + tokens * claim.output_price
            if first_over(limits, used, claim.provider, amount, claim.component) is None:
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

    ``used`` is what is spent and reserved per (period, provider), and per
    (period, component scope) where component limits apply; the overall
    totals are the sums of the providers'.
    """
    per: dict[tuple[str, str], float] = {key: amount for key, amount in used.items()}
    overall: dict[str, float] = {period: 0.0 for period in PERIODS}
    for (period, scope), amount in per.items():
        if component_of(scope) is None:
            overall[period] += amount

    def total(period: str, scope: str | None) -> float:
        return overall[period] if scope is None else per.get((period, scope), 0.0)

    decisions = []
    for claim in claims:
        decision = decide(policy, limits, total, claim)
        if not decision.refused:
            for period in PERIODS:
                for counted in scopes(claim.provider, claim.component)[1:]:
                    assert counted is not None
                    per[(period, counted)] = per.get((period, counted), 0.0) + decision.amount
                overall[period] += decision.amount
        decisions.append(decision)
    return decisions
