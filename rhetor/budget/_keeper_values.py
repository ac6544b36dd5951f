"""
The BudgetKeeper's pure helpers: checked numbers, report rows and the answers to a reserve.

Split from :mod:`rhetor.budget._keeper` (the actor); nothing here touches its state.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from rhetor._errors import BudgetExceeded, ServiceUnavailable
from rhetor.budget._interfaces import LedgerEntry, ReservationRow
from rhetor.budget._messages import Reservation, Reserve, SpendEntry
from rhetor.budget._rules import Decision, component_of

__all__ = [
    "again",
    "exceeded",
    "finite_amount",
    "granted",
    "spend_entry",
    "token_count",
    "utcnow",
]

_MAX_TOKENS = 2**63 - 1


def utcnow() -> datetime:
    return datetime.now(UTC)


def finite_amount(value: Any) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and math.isfinite(value)
        and value >= 0
    )


def spend_entry(entry: LedgerEntry) -> SpendEntry:
    """A ledger row as a report shows it (no charge, reservation or row ids)."""
    time = datetime.fromtimestamp(entry.ts, UTC).isoformat().replace("+00:00", "Z")
    return {
        "time": time,
        "ts": entry.ts,
        "request_id": entry.request_id,
        "component": entry.component,
        "context_id": entry.context_id,
        "provider": entry.provider,
        "model": entry.model,
        "input_tokens": entry.input_tokens,
        "output_tokens": entry.output_tokens,
        "total_tokens": entry.input_tokens + entry.output_tokens,
        "cost": entry.cost,
        "status": entry.status,
        "billed": entry.billed,
    }


def token_count(value: Any) -> int | None:
    """A usable token count: a whole number from 0 (a finite float is rounded), else None."""
    if type(value) is int:
        return value if 0 <= value <= _MAX_TOKENS else None
    if type(value) is float and math.isfinite(value) and 0 <= value <= _MAX_TOKENS:
        return round(value)
    return None


def again(error: ServiceUnavailable) -> ServiceUnavailable:
    """
    A fresh error of the same kind as ``error`` (StorageUnavailable stays itself) for one asker.

    One failed commit answers every write of its batch; each asker raises its own copy.
    """
    again = type(error)(error.message, field=error.field)
    again.__cause__ = error.__cause__
    return again


def granted(row: ReservationRow, message: Reserve, warning: str | None) -> Reservation:
    """The answer to a granted reserve; ``output_tokens`` set only when fewer were granted."""
    asked = token_count(message.output_tokens) or 0
    clamped = row.output_tokens if row.amount and row.output_tokens < asked else None
    return Reservation(row.id, row.provider, row.amount, warning, clamped)


def exceeded(decision: Decision, message: Reserve) -> BudgetExceeded:
    over = decision.over
    assert over is not None, "a refusal names the limit it breaks"
    return BudgetExceeded(
        f"{over.describe()}: request for {message.provider}/{message.model} refused",
        period=over.period,
        limit=over.limit,
        spent=over.spent,
        provider=over.provider if component_of(over.provider) is None else None,
        component=component_of(over.provider),
    )
