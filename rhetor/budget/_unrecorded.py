"""
Charges the ledger could not take because the database was out of reach: kept, counted, written later.

When PostgreSQL is down (restarting, cut off), a settle cannot be written.
The reply it belongs to was produced, and under ``warn`` or ``ignore`` the
request went ahead without a recorded reservation. The BudgetKeeper then
keeps the charge here (:class:`Unrecorded`), logs it, counts it (in
``GET /budget``, ``ledger_errors.unrecorded_charges`` and ``.pending_charges``)
and writes it again every second until the database takes it. The charge's
id makes the rewrite safe to repeat: the ledger records a charge id once.

A reservation whose write the outage cut off may be in the ledger even so
(the commit may have happened and only its answer been lost); nobody will
settle it, so it is deleted when the database answers (``release``), as a
reservation whose asker left is.

Only an outage is kept this way (:func:`transient`): a row the database
refuses for itself (a constraint) fails its settle, as before, so it cannot
be retried forever. What is kept lives in this process's memory and, when
the keeper has a spool directory, on local disk (:mod:`rhetor.budget._spool`),
synced before the settle is answered: the next runtime to start on the same
data directory writes what a process that died had kept.
"""

from __future__ import annotations

import sqlite3

import attrs

from rhetor._errors import ServiceUnavailable
from rhetor.budget._interfaces import LedgerEntry
from rhetor.storage._pg_breaker import out_of_reach

__all__ = ["Unrecorded", "transient"]


def transient(error: ServiceUnavailable) -> bool:
    """
    Whether a ledger write failed because the database was out of reach (worth writing again).

    PostgreSQL unreachable or shutting down, or SQLite busy or failing to
    write its file; not a row the database refused.
    """
    cause = error.__cause__
    if isinstance(cause, sqlite3.OperationalError):
        return True
    return out_of_reach(error)


@attrs.define(eq=False)
class Unrecorded:
    """
    The charges waiting for the database, by charge id, and how many there ever were.
    """

    # Invariant: every charge kept and not yet written, by its charge id.
    _entries: dict[str, LedgerEntry] = attrs.field(init=False, factory=dict)
    # Invariant: reservations that may be in the ledger (a write whose answer
    # the outage cut off) and that nobody will settle: to be deleted.
    _releases: set[int] = attrs.field(init=False, factory=set)
    # Charges that could not be written at once, since the keeper started.
    kept: int = attrs.field(init=False, default=0)
    # Of those, how many were written later.
    written_late: int = attrs.field(init=False, default=0)

    def keep(self, entry: LedgerEntry) -> None:
        """Keep a charge its settle could not write (once per charge id)."""
        key = _key(entry)
        if key not in self._entries:
            self._entries[key] = entry
            self.kept += 1

    def due(self) -> list[LedgerEntry]:
        """Every charge still waiting, oldest first."""
        return list(self._entries.values())

    def release(self, reservation_id: int) -> None:
        """Delete this reservation when the database answers (it may hold headroom nobody settles)."""
        if reservation_id:
            self._releases.add(reservation_id)

    def releases_due(self) -> list[int]:
        """Every reservation still to be deleted."""
        return sorted(self._releases)

    def released(self, reservation_id: int) -> None:
        """The reservation is gone from the ledger."""
        self._releases.discard(reservation_id)

    def written(self, entry: LedgerEntry) -> None:
        """``entry`` is in the ledger now (or was already): stop keeping it."""
        if self._entries.pop(_key(entry), None) is not None:
            self.written_late += 1

    @property
    def pending(self) -> int:
        """How many charges wait for the database."""
        return len(self._entries)

    @property
    def pending_cost(self) -> float:
        """What they cost, in USD."""
        return sum(e.cost for e in self._entries.values())


def _key(entry: LedgerEntry) -> str:
    # Every settle has a charge id; a charge without one is keyed by its request and time.
    return entry.charge_id or f"{entry.request_id}@{entry.ts!r}"
