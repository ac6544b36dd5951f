"""
The budget ledger: what every call cost, open reservations, limits and settings.

A :class:`Ledger` owns one SQLite connection. It is synchronous: the budget
actor calls it through ``anyio.to_thread.run_sync``, one call at a time, which
is why the connection allows use from a thread other than its creator's.

Two tables carry the money. ``reservations`` holds one row per request that
may still spend: written before the provider is called, owned by the runtime
that wrote it. ``entries`` holds one row per charge. Settling inserts the
charge, and the insert itself deletes the reservation it names (a trigger), so
a reservation is replaced by its charge in one statement: a crash can leave
one or the other, never both and never neither. On PostgreSQL the same step
is one ``WITH ... DELETE ... RETURNING`` feeding the ``INSERT``.

Nothing non-finite, negative or non-integer reaches SQL: :class:`LedgerEntry`
and :class:`ReservationRow` refuse it when built, and batches are serialised
with ``allow_nan=False``.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import sqlite3
import time
from collections.abc import Iterable
from typing import Any, ClassVar, Literal, get_args

import attrs

from rhetor._errors import ValidationError
from rhetor.budget._accounts import Period, check_period
from rhetor.storage._sqlite import SQLiteStore, transaction

__all__ = [
    "Billed",
    "GroupBy",
    "Ledger",
    "LedgerEntry",
    "ReservationRow",
    "Status",
    "UsageRow",
    "clean_text",
]

# interrupted: the reservation of a request whose process died before it settled.
Status = Literal["ok", "partial", "failed", "interrupted"]
# What the cost was computed from: the usage the provider reported; that usage
# capped at the reservation because it was absurd for the request; or the
# reservation's worst case because the real usage is unknown or malformed.
Billed = Literal["usage", "capped", "worst_case"]
GroupBy = Literal["provider", "model", "component", "context"]

_STATUSES: tuple[str, ...] = get_args(Status)
_BILLED: tuple[str, ...] = get_args(Billed)
# Whitelist of group_by values to column names: the column is spliced into SQL.
_GROUP_COLUMNS: dict[str, str] = {
    "provider": "provider",
    "model": "model",
    "component": "component",
    "context": "context_id",
}
# SQLite's INTEGER is 64-bit signed; a bigger count cannot be stored.
_MAX_TOKENS = 2**63 - 1


_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(value: str) -> str:
    """
    ``value`` as valid Unicode: lone surrogates become U+FFFD.

    SQLite stores a lone surrogate as bytes that are not UTF-8, and every
    later read of that column then fails, so text is cleaned before it is stored.
    """
    if value.isascii():
        return value
    return _SURROGATE.sub("\ufffd", value)


def _clean_optional(value: str | None) -> str | None:
    return None if value is None else clean_text(value)


def _one_of(choices: tuple[str, ...]) -> Any:
    def check(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
        if value not in choices:
            raise ValidationError(attribute.name, f"must be one of {', '.join(choices)}")

    return check


def _tokens(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if type(value) is not int or not 0 <= value <= _MAX_TOKENS:
        raise ValidationError(attribute.name, f"must be a whole number from 0, got {value!r}")


def _usd(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValidationError(attribute.name, f"must be a finite amount from 0, got {value!r}")


@attrs.frozen
class LedgerEntry:
    """
    One call's cost, as the budget actor records it.

    ``id`` is None until the entry is stored; ``ts`` is UTC epoch seconds.
    ``charge_id`` makes recording idempotent (a second entry with the same one
    is ignored); ``reservation_id`` names the reservation this charge replaces.
    """

    request_id: str = attrs.field(converter=clean_text)
    provider: str = attrs.field(converter=clean_text)
    model: str = attrs.field(converter=clean_text)
    input_tokens: int = attrs.field(validator=_tokens)
    output_tokens: int = attrs.field(validator=_tokens)
    cost: float = attrs.field(validator=_usd)
    status: Status = attrs.field(default="ok", validator=_one_of(_STATUSES))
    component: str = attrs.field(default="", converter=clean_text)
    context_id: str | None = attrs.field(default=None, converter=_clean_optional)
    ts: float = attrs.field(factory=time.time)
    id: int | None = None
    billed: Billed = attrs.field(default="usage", validator=_one_of(_BILLED))
    charge_id: str | None = None
    reservation_id: int | None = None


@attrs.frozen
class ReservationRow:
    """
    One open reservation: the worst case a request may still spend.

    ``owner`` is the runtime that made it (one id per process start); ``key``
    lets a retried reserve find the reservation its first attempt made.
    """

    id: int
    key: str
    owner: str
    request_id: str = attrs.field(converter=clean_text)
    provider: str = attrs.field(converter=clean_text)
    model: str = attrs.field(converter=clean_text)
    input_tokens: int = attrs.field(validator=_tokens)
    output_tokens: int = attrs.field(validator=_tokens)
    amount: float = attrs.field(validator=_usd)
    component: str = attrs.field(default="", converter=clean_text)
    context_id: str | None = attrs.field(default=None, converter=_clean_optional)
    ts: float = attrs.field(factory=time.time)


@attrs.frozen
class UsageRow:
    """
    Usage summed over one group (a provider, model, component or context).

    ``key`` is None for entries without that attribute (e.g. no context).
    """

    key: str | None
    requests: int
    input_tokens: int
    output_tokens: int
    cost: float


_SCHEMA_VERSION = 2
# Columns written from LedgerEntry and ReservationRow, in the order of their JSON rows.
_ENTRY_FIELDS = tuple(
    [
        "ts",
        "request_id",
        "provider",
        "model",
        "component",
        "context_id",
        "input_tokens",
        "output_tokens",
        "cost",
        "status",
        "billed",
        "charge_id",
        "reservation_id",
    ]
)
_RESERVATION_FIELDS = tuple(
    [
        "id",
        "key",
        "owner",
        "ts",
        "request_id",
        "provider",
        "model",
        "component",
        "context_id",
        "input_tokens",
        "output_tokens",
        "amount",
    ]
)


# Rows per INSERT: SQLite allows 32,766 bound values in one statement.
_ROWS_PER_STATEMENT = 1000


@functools.lru_cache(maxsize=128)
def _insert_sql(table: str, fields: tuple[str, ...], rows: int, tail: str = "") -> str:
    """``INSERT INTO table (fields) VALUES (?, ...), ...`` for ``rows`` rows."""
    row = f"({', '.join('?' * len(fields))})"
    return f"INSERT INTO {table} ({', '.join(fields)}) VALUES {', '.join([row] * rows)}{tail}"


# The sweeper: every reservation of another owner becomes an interrupted charge
# at its worst case, in one statement (the trigger deletes the reservations).
_SWEEP = (
    f"INSERT INTO entries ({', '.join(_ENTRY_FIELDS)})"
    " SELECT ts, request_id, provider, model, component, context_id, input_tokens,"
    " output_tokens, amount, 'interrupted', 'worst_case', 'interrupted:' || owner || ':' || id, id"
    " FROM reservations WHERE owner != ? ORDER BY id"
    " ON CONFLICT (charge_id) DO NOTHING"
)
_ON_CHARGE_CONFLICT = " ON CONFLICT (charge_id) DO NOTHING"
_TABLES = """
CREATE TABLE IF NOT EXISTS entries (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    ts             REAL    NOT NULL,
    request_id     TEXT    NOT NULL,
    provider       TEXT    NOT NULL,
    model          TEXT    NOT NULL,
    component      TEXT    NOT NULL DEFAULT '',
    context_id     TEXT,
    input_tokens   INTEGER NOT NULL CHECK (input_tokens >= 0),
    output_tokens  INTEGER NOT NULL CHECK (output_tokens >= 0),
    cost           REAL    NOT NULL CHECK (cost >= 0),
    status         TEXT    NOT NULL
                   CHECK (status IN ('ok', 'partial', 'failed', 'interrupted')),
    billed         TEXT    NOT NULL DEFAULT 'usage'
                   CHECK (billed IN ('usage', 'capped', 'worst_case')),
    charge_id      TEXT    UNIQUE,
    reservation_id INTEGER
);
CREATE INDEX IF NOT EXISTS entries_ts ON entries (ts);
"""
_SCHEMA = (
    _TABLES
    + """
CREATE TABLE IF NOT EXISTS reservations (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    key           TEXT    NOT NULL,
    owner         TEXT    NOT NULL,
    ts            REAL    NOT NULL,
    request_id    TEXT    NOT NULL,
    provider      TEXT    NOT NULL,
    model         TEXT    NOT NULL,
    component     TEXT    NOT NULL DEFAULT '',
    context_id    TEXT,
    input_tokens  INTEGER NOT NULL CHECK (input_tokens >= 0),
    output_tokens INTEGER NOT NULL CHECK (output_tokens >= 0),
    amount        REAL    NOT NULL CHECK (amount >= 0)
);
-- Settling is one INSERT: the charge replaces its reservation in the same statement.
CREATE TRIGGER IF NOT EXISTS entries_settle AFTER INSERT ON entries
WHEN NEW.reservation_id IS NOT NULL
BEGIN
    DELETE FROM reservations WHERE id = NEW.reservation_id;
END;
-- provider '' stands for "all providers": NULL would not be unique in the key.
CREATE TABLE IF NOT EXISTS limits (
    period   TEXT NOT NULL CHECK (period IN ('daily', 'weekly', 'monthly')),
    provider TEXT NOT NULL DEFAULT '',
    amount   REAL NOT NULL,
    PRIMARY KEY (period, provider)
);
CREATE TABLE IF NOT EXISTS settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
)
# Version 1 had no reservations, and its entries no billed, charge_id or
# reservation_id, and a status check without 'interrupted': rebuild entries.
_UPGRADE_FROM_1 = f"""
BEGIN IMMEDIATE;
ALTER TABLE entries RENAME TO entries_v1;
DROP INDEX IF EXISTS entries_ts;
DROP INDEX IF EXISTS entries_provider_ts;
{_TABLES}
INSERT INTO entries (id, ts, request_id, provider, model, component, context_id,
                     input_tokens, output_tokens, cost, status)
    SELECT id, ts, request_id, provider, model, component, context_id,
           input_tokens, output_tokens, cost, status FROM entries_v1;
DROP TABLE entries_v1;
{_SCHEMA}
PRAGMA user_version = 2;
COMMIT;
"""

_ENTRY_COLUMNS = ", ".join(("id", *_ENTRY_FIELDS))


def _upgrade(path: str | os.PathLike[str]) -> None:
    """
    Bring a ledger file written by an older Rhetor to this schema, in one transaction.
    """
    if not os.path.exists(path):
        return
    conn = sqlite3.connect(os.fspath(path), isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout=5000")
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version == 1:
            try:
                conn.executescript(_UPGRADE_FROM_1)
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
    finally:
        conn.close()


def _named(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
    return {column[0]: value for column, value in zip(cursor.description, row, strict=True)}


def _insert(
    conn: sqlite3.Connection, table: str, fields: tuple[str, ...], rows: list[Any], tail: str = ""
) -> None:
    """Insert ``rows`` (objects with the ``fields`` as attributes): all of them, or none."""
    if len(rows) <= _ROWS_PER_STATEMENT:
        if rows:
            values = [getattr(row, name) for row in rows for name in fields]
            conn.execute(_insert_sql(table, fields, len(rows), tail), values)
        return
    with transaction(conn):
        for first in range(0, len(rows), _ROWS_PER_STATEMENT):
            _insert(conn, table, fields, rows[first : first + _ROWS_PER_STATEMENT], tail)


@attrs.define(eq=False)
class Ledger(SQLiteStore):
    """
    The budget ledger in one SQLite file.

    Not safe for concurrent use: one owner calls it, one call at a time.
    """

    SCHEMA: ClassVar[str] = _SCHEMA
    SCHEMA_VERSION: ClassVar[int] = _SCHEMA_VERSION

    def __attrs_post_init__(self) -> None:
        _upgrade(self.path)
        super().__attrs_post_init__()

    def disable_autocheckpoint(self) -> None:
        """
        Never checkpoint on commit: the owner calls :meth:`checkpoint` (elsewhere) instead.
        """
        self._conn.execute("PRAGMA wal_autocheckpoint=0")

    def checkpoint(self) -> None:
        """
        Copy committed pages from the write-ahead log into the database file.

        PASSIVE: it never waits for, or blocks, a writer on another connection.
        """
        self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    # -- charges -------------------------------------------------------------

    def record(self, entry: LedgerEntry) -> None:
        """
        Store one entry.
        """
        self.record_many((entry,))

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
        _insert(self._conn, "entries", _ENTRY_FIELDS, list(entries), _ON_CHARGE_CONFLICT)

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

    def entries(self, since: float = 0.0, *, limit: int | None = None) -> list[LedgerEntry]:
        """
        Stored entries at or after ``since``, newest first.
        """
        cursor = self._conn.execute(
            f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE ts >= ? ORDER BY ts DESC, id DESC LIMIT ?",
            (since, -1 if limit is None else limit),
        )
        return [LedgerEntry(**_named(cursor, row)) for row in cursor]

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

    def reserve_many(self, reservations: Iterable[ReservationRow]) -> None:
        """
        Store a batch of open reservations in one statement: all of them, or none.
        """
        _insert(self._conn, "reservations", _RESERVATION_FIELDS, list(reservations))

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

    def reservations(self, owner: str | None = None) -> list[ReservationRow]:
        """
        Open reservations, oldest first: all of them, or one owner's.
        """
        query = f"SELECT {', '.join(_RESERVATION_FIELDS)} FROM reservations"
        args: tuple[str, ...] = ()
        if owner is not None:
            query += " WHERE owner = ?"
            args = (owner,)
        cursor = self._conn.execute(query + " ORDER BY id", args)
        return [ReservationRow(**_named(cursor, row)) for row in cursor]

    def last_reservation_id(self) -> int:
        """
        The highest reservation id ever given out (ids are never reused).
        """
        row = self._conn.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = 'reservations'"
        ).fetchone()
        return 0 if row is None else int(row[0])

    def sweep(self, owner: str) -> tuple[int, float]:
        """
        Settle every reservation not owned by ``owner``, at its worst case, as interrupted.

        Only the runtime that holds the data directory calls this, so any other
        owner's process is gone: its requests can no longer settle. Answers how
        many were settled and their total.
        """
        with transaction(self._conn) as conn:
            count, total = conn.execute(
                "SELECT COUNT(*), TOTAL(amount) FROM reservations WHERE owner != ?", (owner,)
            ).fetchone()
            conn.execute(_SWEEP, (owner,))
            # A reservation whose charge was already recorded has nothing left to bill.
            conn.execute("DELETE FROM reservations WHERE owner != ?", (owner,))
        return int(count), float(total)

    # -- limits and settings -----------------------------------------------------

    def set_limit(self, period: Period, amount: float, provider: str | None = None) -> None:
        """
        Set the USD limit for a period, overall or for one provider.
        """
        check_period(period)
        if (
            isinstance(amount, bool)
            or not isinstance(amount, int | float)
            or not math.isfinite(amount)
            or amount < 0
        ):
            raise ValidationError("amount", "must be a finite, non-negative number")
        with transaction(self._conn) as conn:
            conn.execute(
                "INSERT INTO limits (period, provider, amount) VALUES (?, ?, ?)"
                " ON CONFLICT (period, provider) DO UPDATE SET amount = excluded.amount",
                (period, clean_text(provider or ""), float(amount)),
            )

    def clear_limit(self, period: Period, provider: str | None = None) -> bool:
        """
        Remove a limit; True if there was one.
        """
        check_period(period)
        with transaction(self._conn) as conn:
            cursor = conn.execute(
                "DELETE FROM limits WHERE period = ? AND provider = ?", (period, provider or "")
            )
        return cursor.rowcount > 0

    def get_limits(self) -> dict[tuple[Period, str | None], float]:
        """
        Every limit, keyed by (period, provider); provider None means all providers.
        """
        return {
            (period, provider or None): amount
            for period, provider, amount in self._conn.execute(
                "SELECT period, provider, amount FROM limits ORDER BY period, provider"
            )
        }

    def set_setting(self, key: str, value: str | None) -> None:
        """
        Store a runtime setting (None removes it); its meaning belongs to the caller.
        """
        with transaction(self._conn) as conn:
            if value is None:
                conn.execute("DELETE FROM settings WHERE key = ?", (key,))
            else:
                conn.execute(
                    "INSERT INTO settings (key, value) VALUES (?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, clean_text(value)),
                )

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
