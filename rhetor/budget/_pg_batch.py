"""
A group commit's transaction on PostgreSQL, as queries and decisions, without I/O.

:meth:`~rhetor.budget._pg_ledger.PostgresLedger.settle_and_reserve` (psycopg
in a worker thread) and :class:`~rhetor.budget._pg_ledger_async.TrioBatches`
(libpq on trio) run the same transaction: these functions build its simple
queries and read what the first one answered, so both decide alike.

The transaction, in two round trips: :func:`rules_and_sums` (``BEGIN``, the
budget lock, the stored policy and limits, and the spend sums, after writing
the batch's charges if any), then, after :func:`decide`, :func:`reserve_and_commit`.
A charges-only batch is one statement of its own (:func:`settle_only`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs
from psycopg import pq

from rhetor._settings import POLICIES
from rhetor.budget._interfaces import ReservationRow, limit_scope
from rhetor.budget._ledger_schema import RESERVATION_FIELDS
from rhetor.budget._pg_ledger_sql import (
    _LOCK_AND_RULES,
    _RESERVE_PREPARED,
    _SETTLE_AND_SPEND_PREPARED,
    _SETTLE_PREPARED,
    _SPEND_PARAMS,
    _SPEND_PREPARED,
    _json_rows,
    _spend_args,
)
from rhetor.budget._rules import (
    COMPONENT_SCOPE,
    PERIODS,
    Claim,
    Decision,
    Period,
    component_of,
    decide_batch,
    effective_limits,
)

__all__ = [
    "Read",
    "decide",
    "reserve_and_commit",
    "rules_and_sums",
    "settle_only",
    "spend_starts",
]

# A row as psycopg types it, or as a simple query's text (None for NULL): both read alike.
Row = Sequence[Any]


def _literal(escaping: pq.abc.Escaping, text: str) -> str:
    return bytes(escaping.escape_literal(text.encode())).decode()


def rules_and_sums(escaping: pq.abc.Escaping, charges: str | None, starts: Sequence[float]) -> str:
    """
    The first round trip: ``BEGIN``, the lock, the policy, the limits, the sums.

    With ``charges`` (the JSON of :func:`~rhetor.budget._pg_ledger_sql._charges_json`)
    they are written by the statement that sums, in one snapshot. Its five
    results: BEGIN, the lock, the policy (0 or 1 row), the limits, the sums.
    """
    args = _spend_args(starts)
    floats = ", ".join(f"'{float(args[name])!r}'" for name in _SPEND_PARAMS)
    if charges is None:
        sums = f"EXECUTE {_SPEND_PREPARED}({floats})"
    else:
        sums = f"EXECUTE {_SETTLE_AND_SPEND_PREPARED}({_literal(escaping, charges)}, {floats})"
    return f"{_LOCK_AND_RULES}; {sums}"


def settle_only(escaping: pq.abc.Escaping, charges: str) -> str:
    """A batch of charges and no claims: one statement (its own transaction), no lock."""
    return f"EXECUTE {_SETTLE_PREPARED}({_literal(escaping, charges)})"


@attrs.frozen
class Read:
    """What the first round trip says: the policy and limits in force, and the spend they count."""

    policy: str
    in_force: dict[tuple[str, str | None], float]
    used: dict[tuple[Period, str], float]

    @classmethod
    def of(
        cls,
        policy: str,
        limits: Mapping[tuple[Period, str | None], float],
        stored_policy: Row | None,
        limit_rows: Iterable[Row],
        spend_rows: Iterable[Row],
    ) -> Read:
        """Read the rows (typed by psycopg, or text from a simple query: both read alike)."""
        if stored_policy is not None and stored_policy[0] in POLICIES:
            policy = str(stored_policy[0])
        in_force = effective_limits(
            limits, {(p, limit_scope(pr, co)): float(a) for p, pr, co, a in limit_rows}
        )
        used: dict[tuple[Period, str], float] = {}
        for provider, *totals in spend_rows:
            for period, total in zip(PERIODS, totals, strict=True):
                used[(period, provider)] = float(total)
        return cls(policy, in_force, used)

    def components(self) -> list[str]:
        """The components whose spend must be summed too (one more round trip); often none."""
        if self.policy == "ignore":
            return []
        return sorted({c for _, s in self.in_force if (c := component_of(s)) is not None})

    def add_components(self, rows: Iterable[Row]) -> None:
        for component, *totals in rows:
            for period, total in zip(PERIODS, totals, strict=True):
                self.used[(period, f"{COMPONENT_SCOPE}{component}")] = float(total)


def decide(
    read: Read, pairs: Sequence[tuple[ReservationRow, Claim]]
) -> tuple[list[Decision], list[ReservationRow]]:
    """Each claim's decision, and the reservations granted (at the amounts decided)."""
    decisions = decide_batch(read.policy, read.in_force, read.used, (c for _, c in pairs))
    granted = [
        attrs.evolve(row, output_tokens=d.output_tokens, amount=d.amount)
        for (row, _), d in zip(pairs, decisions, strict=True)
        if not d.refused and d.amount > 0
    ]
    return decisions, granted


def reserve_and_commit(escaping: pq.abc.Escaping, granted: Sequence[ReservationRow]) -> str:
    """The second round trip: the insert of the granted reservations (if any) and ``COMMIT``."""
    if not granted:
        return "COMMIT"
    rows = _json_rows(granted, RESERVATION_FIELDS)
    return f"EXECUTE {_RESERVE_PREPARED}({_literal(escaping, rows)}); COMMIT"


def spend_starts(starts: Mapping[Period, float]) -> list[float]:
    """Each period's start, in :data:`PERIODS` order (what the sums take)."""
    return [starts[p] for p in PERIODS]
