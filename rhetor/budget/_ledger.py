"""
The budget ledger in one SQLite file: the SQLite :class:`~rhetor.budget._interfaces.BudgetLedger`.

A :class:`SQLiteLedger` owns one SQLite connection. It is synchronous: the
budget actor calls it on the event loop's thread (commits) or through
``anyio.to_thread.run_sync`` (long reads, checkpoints), one call at a time,
which is why the connection allows use from a thread other than its creator's.
Its tables, and how a charge replaces its reservation in one statement, are
in :mod:`rhetor.budget._ledger_schema`; its statements in :mod:`rhetor.budget._ledger_sql`.

SQLite's errors become :class:`~rhetor.StorageUnavailable` (a ServiceUnavailable) in one place,
:func:`_unavailable`, with the SQLite error as the cause.
"""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import ClassVar

import attrs

from rhetor._errors import StorageUnavailable, ValidationError
from rhetor._settings import POLICIES
from rhetor.budget._interfaces import (
    Billed,
    GroupBy,
    LedgerEntry,
    ReservationRow,
    Status,
    UsageRow,
    clean_text,
    limit_key,
    limit_scope,
)
from rhetor.budget._ledger_schema import (
    ENTRY_FIELDS,
    RESERVATION_FIELDS,
    SCHEMA,
    SCHEMA_VERSION,
    upgrade,
)
from rhetor.budget._ledger_sql import (
    _ENTRY_COLUMNS,
    _FIRST_RESERVATION_IDS,
    _GROUP_COLUMNS,
    _LAST_RESERVATION_ID,
    _MORE_RESERVATION_IDS,
    _ON_CHARGE_CONFLICT,
    _RECORD_PROGRESS,
    _RESERVED_BY_PROVIDER,
    _ROWS_PER_STATEMENT,
    _SET_LIMIT,
    _SET_SETTING,
    _SPENT_BY_PROVIDER,
    _SWEEP,
    _SWEPT_TOTAL,
    _USED_BY_COMPONENT,
    _insert,
    _insert_sql,
    _named,
)
from rhetor.budget._rules import (
    COMPONENT_SCOPE,
    PERIODS,
    Claim,
    Decision,
    Period,
    check_period,
    component_of,
    decide_batch,
    effective_limits,
)
from rhetor.storage._sqlite import SQLiteStore, check_int, transaction

__all__ = [
    # Re-exported for the modules that import them from here.
    "Billed",
    "GroupBy",
    "LedgerEntry",
    "ReservationRow",
    "SQLiteLedger",
    "Status",
    "UsageRow",
    "clean_text",
]


@contextlib.contextmanager
def _unavailable(doing: str) -> Iterator[None]:
    """
    The one place SQLite's errors become the ledger's: :class:`StorageUnavailable`.

    The SQLite error is its cause; ``doing`` ("read" or "written") says what failed.
    """
    try:
        yield
    except sqlite3.Error as exc:
        raise StorageUnavailable(f"the budget ledger cannot be {doing}: {exc}") from exc


@attrs.define(eq=False)
class SQLiteLedger(SQLiteStore):
    """
    The budget ledger in one SQLite file (a :class:`~rhetor.budget._interfaces.BudgetLedger`).

    Not safe for concurrent use: one owner calls it, one call at a time. The
    keeper opens its writer with ``autocheckpoint=False`` (see
    :class:`~rhetor.storage._sqlite.SQLiteStore`). Files written by older
    versions are migrated when opened.
    """

    SCHEMA: ClassVar[str] = SCHEMA
    SCHEMA_VERSION: ClassVar[int] = SCHEMA_VERSION
    # One process holds the file (the data directory's lock).
    shared: ClassVar[bool] = False

    def __attrs_post_init__(self) -> None:
        upgrade(self.path)
        super().__attrs_post_init__()

    @_unavailable("written")
    def checkpoint(self) -> None:
        """
        Copy committed pages from the write-ahead log into the database file (PASSIVE).
        """
        super().checkpoint()

    # -- charges -------------------------------------------------------------

    def record(self, entry: LedgerEntry) -> None:
        """
        Store one entry.
        """
        self.record_many((entry,))

    @_unavailable("written")
    def record_many(self, entries: Iterable[LedgerEntry]) -> None:
        """
        Store a batch of entries in one statement: all of them, or none.

        An entry whose ``charge_id`` is already stored is skipped; an entry
        with a ``reservation_id`` deletes that reservation in the same statement.

        The batch is one multi-row ``INSERT ... VALUES``, not an
        ``executemany``: that would release and retake the GIL around every
        row, and beside a busy event loop each retake can wait for a forced
        switch (5 ms); a batch of a few hundred rows once took most of a
        second. One statement releases the GIL once, and in autocommit mode
        it is its own transaction: no BEGIN, no COMMIT. (An INSERT ... SELECT
        over one JSON array costs three times as much per row: every column
        is another parse of the row's JSON.)
        """
        _insert(self._conn, "entries", ENTRY_FIELDS, list(entries), _ON_CHARGE_CONFLICT)

    @_unavailable("written")
    def record_progress(self, progress: Mapping[int, tuple[int, float]]) -> None:
        """
        Note how far streams got on their open reservations, in one statement.
        """
        if progress:
            self._conn.execute(
                _RECORD_PROGRESS,
                (json.dumps([[rid, t, c] for rid, (t, c) in progress.items()]),),
            )

    @_unavailable("written")
    def recorded_charges(self, charge_ids: Iterable[str]) -> set[str]:
        """
        Which of ``charge_ids`` are already stored.
        """
        ids = list(charge_ids)
        if not ids:
            return set()
        cursor = self._conn.execute(
            "SELECT charge_id FROM entries WHERE charge_id IN (SELECT value FROM json_each(?))",
            (json.dumps(ids),),
        )
        return {row[0] for row in cursor}

    @_unavailable("read")
    def entries(self, since: float = 0.0, *, limit: int | None = None) -> list[LedgerEntry]:
        """
        Stored entries at or after ``since``, newest first.
        """
        cursor = self._conn.execute(
            f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE ts >= ? ORDER BY ts DESC, id DESC LIMIT ?",
            (since, -1 if limit is None else limit),
        )
        return [LedgerEntry(**_named(cursor, row)) for row in cursor]

    @_unavailable("read")
    def spent(self, since: float, provider: str | None = None) -> float:
        """
        Total USD cost of entries at or after ``since``, of one provider or of all.
        """
        if provider is None:
            row = self._conn.execute(
                "SELECT TOTAL(cost) FROM entries WHERE ts >= ?", (since,)
            ).fetchone()
        else:
            row = self._conn.execute(
                "SELECT TOTAL(cost) FROM entries WHERE ts >= ? AND provider = ?",
                (since, provider),
            ).fetchone()
        return float(row[0])

    @_unavailable("read")
    def usage(self, since: float, group_by: GroupBy) -> list[UsageRow]:
        """
        Requests, tokens and cost since ``since``, summed per group, costliest first.
        """
        column = _GROUP_COLUMNS.get(group_by)
        if column is None:
            raise ValidationError("group_by", f"must be one of {', '.join(_GROUP_COLUMNS)}")
        cursor = self._conn.execute(
            f"SELECT {column}, COUNT(*), TOTAL(input_tokens), TOTAL(output_tokens), TOTAL(cost)"
            f" FROM entries WHERE ts >= ? GROUP BY {column}"
            f" ORDER BY TOTAL(cost) DESC, {column}",
            (since,),
        )
        return [
            UsageRow(key, requests, int(input_tokens), int(output_tokens), cost)
            for key, requests, input_tokens, output_tokens, cost in cursor
        ]

    # -- reservations ----------------------------------------------------------

    @_unavailable("written")
    def reserve_many(self, reservations: Iterable[ReservationRow]) -> None:
        """
        Store a batch of open reservations in one statement: all of them, or none.
        """
        _insert(self._conn, "reservations", RESERVATION_FIELDS, list(reservations))

    @_unavailable("written")
    def reserve_checked(
        self,
        claims: Sequence[tuple[ReservationRow, Claim]],
        *,
        policy: str,
        limits: Mapping[tuple[Period, str | None], float],
        starts: Mapping[Period, float],
    ) -> list[Decision]:
        """
        Decide each claim against every limit and record those granted, in one transaction.

        ``BEGIN IMMEDIATE`` takes SQLite's write lock first, so no other
        connection writes between the sums and the insert. (The keeper on
        SQLite decides from its in-memory totals instead, on the loop; this
        is the same rule for a caller without them.)
        """
        pairs = list(claims)
        with transaction(self._conn) as conn:
            stored_policy = self.get_setting("policy")
            in_force = effective_limits(limits, self.get_limits())
            policy = stored_policy if stored_policy in POLICIES else policy
            used: dict[tuple[Period, str], float] = {}
            if policy != "ignore" and in_force:
                periods = [starts[p] for p in PERIODS]
                cursor = conn.execute(_SPENT_BY_PROVIDER, (*periods, min(periods)))
                for provider, *totals in cursor:
                    for period, total in zip(PERIODS, totals, strict=True):
                        used[(period, provider)] = float(total)
                for provider, amount in conn.execute(_RESERVED_BY_PROVIDER):
                    for period in PERIODS:
                        used[(period, provider)] = used.get((period, provider), 0.0) + amount
                if any(component_of(scope) for _, scope in in_force):
                    cursor = conn.execute(_USED_BY_COMPONENT, (*periods, min(periods)))
                    for component, *totals in cursor:
                        for period, total in zip(PERIODS, totals, strict=True):
                            used[(period, f"{COMPONENT_SCOPE}{component}")] = float(total)
            decisions = decide_batch(policy, in_force, used, (claim for _, claim in pairs))
            granted = [
                attrs.evolve(row, output_tokens=d.output_tokens, amount=d.amount)
                for (row, _), d in zip(pairs, decisions, strict=True)
                if not d.refused and d.amount > 0
            ]
            for first in range(0, len(granted), _ROWS_PER_STATEMENT):
                chunk = granted[first : first + _ROWS_PER_STATEMENT]
                values = [getattr(row, name) for row in chunk for name in RESERVATION_FIELDS]
                conn.execute(_insert_sql("reservations", RESERVATION_FIELDS, len(chunk)), values)
        return decisions

    @_unavailable("written")
    def release(self, reservation_ids: Iterable[int]) -> None:
        """
        Delete reservations that will never be settled (their request never ran).
        """
        ids = list(reservation_ids)
        if ids:
            self._conn.execute(
                "DELETE FROM reservations WHERE id IN (SELECT value FROM json_each(?))",
                (json.dumps(ids),),
            )

    @_unavailable("read")
    def reservations(self, owner: str | None = None) -> list[ReservationRow]:
        """
        Open reservations, oldest first: all of them, or one owner's.
        """
        query = f"SELECT {', '.join(RESERVATION_FIELDS)} FROM reservations"
        args: tuple[str, ...] = ()
        if owner is not None:
            query += " WHERE owner = ?"
            args = (owner,)
        cursor = self._conn.execute(query + " ORDER BY id", args)
        return [ReservationRow(**_named(cursor, row)) for row in cursor]

    @_unavailable("written")
    def claim_reservation_ids(self, count: int) -> range:
        """
        ``count`` ids above every reservation id ever claimed or written.

        SQLite's own counter of the AUTOINCREMENT key (``sqlite_sequence``)
        is the high-water mark: it only grows, also when rows are written
        with ids of their own, and the claim raises it in one transaction.
        """
        check_int("count", count, minimum=1)
        with transaction(self._conn) as conn:
            row = conn.execute(_LAST_RESERVATION_ID).fetchone()
            last = 0 if row is None else int(row[0])
            conn.execute(
                _FIRST_RESERVATION_IDS if row is None else _MORE_RESERVATION_IDS, (last + count,)
            )
        return range(last + 1, last + count + 1)

    @_unavailable("written")
    def sweep(self, owner: str) -> tuple[int, float]:
        """
        Settle every reservation whose owner is gone, as interrupted.

        Each is billed at its stream's recorded progress (input and output so
        far, never more than the worst case), else at its worst case.

        Only the runtime that holds the data directory opens this file, so
        every owner but the caller's own (``owner``) is gone: its requests
        can no longer settle. Answers how many were settled and their total.
        """
        with transaction(self._conn) as conn:
            count, total = conn.execute(_SWEPT_TOTAL, (owner,)).fetchone()
            conn.execute(_SWEEP, (owner,))
            # A reservation whose charge was already recorded has nothing left to bill.
            conn.execute("DELETE FROM reservations WHERE owner != ?", (owner,))
        return int(count), float(total)

    # -- limits and settings -----------------------------------------------------

    @_unavailable("written")
    def set_limit(
        self,
        period: Period,
        amount: float,
        provider: str | None = None,
        *,
        component: str | None = None,
    ) -> None:
        """
        Set the USD limit for a period, overall, for one provider or for one component.
        """
        check_period(period)
        key = limit_key(provider, component)
        if (
            isinstance(amount, bool)
            or not isinstance(amount, int | float)
            or not math.isfinite(amount)
            or amount < 0
        ):
            raise ValidationError("amount", "must be a finite, non-negative number")
        with transaction(self._conn) as conn:
            conn.execute(_SET_LIMIT, (period, *key, float(amount)))

    @_unavailable("written")
    def clear_limit(
        self, period: Period, provider: str | None = None, *, component: str | None = None
    ) -> bool:
        """
        Remove a limit; True if there was one.
        """
        check_period(period)
        key = limit_key(provider, component)
        with transaction(self._conn) as conn:
            cursor = conn.execute(
                "DELETE FROM limits WHERE period = ? AND provider = ? AND component = ?",
                (period, *key),
            )
        return cursor.rowcount > 0

    @_unavailable("read")
    def get_limits(self) -> dict[tuple[Period, str | None], float]:
        """
        Every limit, keyed by (period, scope): None for all providers, a
        provider's name, or ``component:NAME``.
        """
        return {
            (period, limit_scope(provider, component)): amount
            for period, provider, component, amount in self._conn.execute(
                "SELECT period, provider, component, amount FROM limits"
                " ORDER BY period, provider, component"
            )
        }

    @_unavailable("written")
    def set_setting(self, key: str, value: str | None) -> None:
        """
        Store a runtime setting (None removes it); its meaning belongs to the caller.
        """
        with transaction(self._conn) as conn:
            if value is None:
                conn.execute("DELETE FROM settings WHERE key = ?", (key,))
            else:
                conn.execute(_SET_SETTING, (key, clean_text(value)))

    @_unavailable("read")
    def get_setting(self, key: str) -> str | None:
        """
        A stored runtime setting, or None if it was never set.
        """
        row = self._conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_policy(self, policy: str) -> None:
        """
        Store the budget policy name; its meaning belongs to the budget actor.
        """
        if not isinstance(policy, str) or not policy.strip():
            raise ValidationError("policy", "must be a non-empty string")
        self.set_setting("policy", policy)

    def get_policy(self) -> str | None:
        """
        The stored policy name, or None if none was ever set.
        """
        return self.get_setting("policy")

    def set_active(self, provider: str, model: str) -> None:
        """
        Store the active provider and model (what ``POST /provider`` chose).
        """
        self.set_setting("active", json.dumps([provider, model]))

    def get_active(self) -> tuple[str, str] | None:
        """
        The stored active provider and model, or None if never chosen.
        """
        raw = self.get_setting("active")
        if raw is None:
            return None
        try:
            provider, model = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(provider, str) or not isinstance(model, str):
            return None
        return provider, model
