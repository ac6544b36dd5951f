"""
The budget ledger: what every call cost, the configured limits, and the policy.

A :class:`Ledger` owns one SQLite connection. It is synchronous: the budget
actor calls it through ``anyio.to_thread.run_sync``, one call at a time, which
is why the connection allows use from a thread other than its creator's.

:func:`period_start` and :func:`period_end` are the pure calendar arithmetic of
budget periods, all in UTC.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import ClassVar, Literal, get_args

import attrs

from ._errors import ValidationError
from ._sqlite import SQLiteStore, transaction

__all__ = [
    "GroupBy",
    "Ledger",
    "LedgerEntry",
    "Period",
    "Status",
    "UsageRow",
    "period_end",
    "period_start",
]

Period = Literal["daily", "weekly", "monthly"]
Status = Literal["ok", "partial", "failed"]
GroupBy = Literal["provider", "model", "component", "context"]

_PERIODS: tuple[str, ...] = get_args(Period)
_STATUSES: tuple[str, ...] = get_args(Status)
# Whitelist of group_by values to column names: the column is spliced into SQL.
_GROUP_COLUMNS: dict[str, str] = {
    "provider": "provider",
    "model": "model",
    "component": "component",
    "context": "context_id",
}


def _check_period(period: str) -> None:
    if period not in _PERIODS:
        raise ValidationError("period", f"must be one of {', '.join(_PERIODS)}")


def _check_status(entry: LedgerEntry, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in _STATUSES:
        raise ValidationError("status", f"must be one of {', '.join(_STATUSES)}")


@attrs.frozen
class LedgerEntry:
    """
    One call's cost, as the budget actor records it.

    ``id`` is None until the entry is stored; ``ts`` is UTC epoch seconds.
    """

    request_id: str
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    cost: float
    status: Status = attrs.field(default="ok", validator=_check_status)
    component: str = ""
    context_id: str | None = None
    ts: float = attrs.field(factory=time.time)
    id: int | None = None


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


_SCHEMA_VERSION = 1
_ENTRY_FIELDS = (
    "ts, request_id, provider, model, component, context_id,"
    " input_tokens, output_tokens, cost, status"
)
_INSERT_BATCH = (
    f"INSERT INTO entries ({_ENTRY_FIELDS}) SELECT "
    + ", ".join(f"json_extract(value, '$[{i}]')" for i in range(10))
    + " FROM json_each(?)"
)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    ts            REAL    NOT NULL,
    request_id    TEXT    NOT NULL,
    provider      TEXT    NOT NULL,
    model         TEXT    NOT NULL,
    component     TEXT    NOT NULL DEFAULT '',
    context_id    TEXT,
    input_tokens  INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost          REAL    NOT NULL,
    status        TEXT    NOT NULL CHECK (status IN ('ok', 'partial', 'failed'))
);
CREATE INDEX IF NOT EXISTS entries_ts ON entries (ts);
CREATE INDEX IF NOT EXISTS entries_provider_ts ON entries (provider, ts);
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

_ENTRY_COLUMNS = (
    "id, ts, request_id, provider, model, component, context_id,"
    " input_tokens, output_tokens, cost, status"
)


@attrs.define(eq=False)
class Ledger(SQLiteStore):
    """
    The budget ledger in one SQLite file.

    Not safe for concurrent use: one owner calls it, one call at a time.
    """

    SCHEMA: ClassVar[str] = _SCHEMA
    SCHEMA_VERSION: ClassVar[int] = _SCHEMA_VERSION

    def record(self, entry: LedgerEntry) -> None:
        """
        Store one entry.
        """
        self.record_many((entry,))

    def record_many(self, entries: Iterable[LedgerEntry]) -> None:
        """
        Store a batch of entries in one transaction: all of them, or none.

        The batch goes to SQLite as one JSON array and one INSERT ... SELECT
        over ``json_each``. ``executemany`` would release and retake the GIL
        around every row; called from a worker thread while the event loop
        keeps the GIL busy, each retake waits for a forced switch (5 ms), so
        a batch of a few hundred rows took most of a second and interrupted
        the loop hundreds of times. One statement releases the GIL once.
        """
        rows = [
            [
                e.ts,
                e.request_id,
                e.provider,
                e.model,
                e.component,
                e.context_id,
                e.input_tokens,
                e.output_tokens,
                e.cost,
                e.status,
            ]
            for e in entries
        ]
        if not rows:
            return
        with transaction(self._conn) as conn:
            conn.execute(_INSERT_BATCH, (json.dumps(rows),))

    def entries(self, since: float = 0.0, *, limit: int | None = None) -> list[LedgerEntry]:
        """
        Stored entries at or after ``since``, newest first.
        """
        cursor = self._conn.execute(
            f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE ts >= ? ORDER BY ts DESC, id DESC LIMIT ?",
            (since, -1 if limit is None else limit),
        )
        return [
            LedgerEntry(
                id=id_,
                ts=ts,
                request_id=request_id,
                provider=provider,
                model=model,
                component=component,
                context_id=context_id,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cost=cost,
                status=status,
            )
            for (
                id_,
                ts,
                request_id,
                provider,
                model,
                component,
                context_id,
                input_tokens,
                output_tokens,
                cost,
                status,
            ) in cursor
        ]

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

    def set_limit(self, period: Period, amount: float, provider: str | None = None) -> None:
        """
        Set the USD limit for a period, overall or for one provider.
        """
        _check_period(period)
        if isinstance(amount, bool) or not isinstance(amount, int | float) or amount < 0:
            raise ValidationError("amount", "must be a non-negative number")
        with transaction(self._conn) as conn:
            conn.execute(
                "INSERT INTO limits (period, provider, amount) VALUES (?, ?, ?)"
                " ON CONFLICT (period, provider) DO UPDATE SET amount = excluded.amount",
                (period, provider or "", float(amount)),
            )

    def clear_limit(self, period: Period, provider: str | None = None) -> bool:
        """
        Remove a limit; True if there was one.
        """
        _check_period(period)
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

    def set_policy(self, policy: str) -> None:
        """
        Store the budget policy name; its meaning belongs to the budget actor.
        """
        if not isinstance(policy, str) or not policy.strip():
            raise ValidationError("policy", "must be a non-empty string")
        with transaction(self._conn) as conn:
            conn.execute(
                "INSERT INTO settings (key, value) VALUES ('policy', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (policy,),
            )

    def get_policy(self) -> str | None:
        """
        The stored policy name, or None if none was ever set.
        """
        row = self._conn.execute("SELECT value FROM settings WHERE key = 'policy'").fetchone()
        return None if row is None else str(row[0])


def _as_utc(now: datetime) -> datetime:
    # A naive datetime is taken to be UTC already; an aware one is converted.
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


def period_start(period: Period, now: datetime) -> datetime:
    """
    The UTC start of the period holding ``now``: midnight, Monday midnight, or the 1st.
    """
    _check_period(period)
    day = _as_utc(now).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "daily":
        return day
    if period == "weekly":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def period_end(period: Period, now: datetime) -> datetime:
    """
    The UTC end (exclusive) of the period holding ``now``: the next period's start.
    """
    start = period_start(period, now)
    if period == "daily":
        return start + timedelta(days=1)
    if period == "weekly":
        return start + timedelta(weeks=1)
    if start.month == 12:
        return start.replace(year=start.year + 1, month=1)
    return start.replace(month=start.month + 1)
