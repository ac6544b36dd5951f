"""
The PostgreSQL ledger's statements: charges, settles, the spend a reservation is checked against, the sweep.

Built once (or cached per batch size) and run by :class:`~rhetor.budget._pg_ledger.PostgresLedger`;
what each guarantees is in :mod:`rhetor.budget._pg_ledger`. The names keep their
leading underscore: they are the ledger's internals, imported by it (and its tests) only.
"""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
import psycopg

from rhetor.budget._interfaces import LedgerEntry
from rhetor.budget._ledger_schema import ENTRY_FIELDS, RESERVATION_FIELDS
from rhetor.budget._pg_ledger_schema import BUDGET_LOCK, OWNER_LOCKS
from rhetor.budget._rules import PERIODS
from rhetor.storage._pg import pg_text

_ENTRY_COLUMNS = ", ".join(("id", *ENTRY_FIELDS))
_GROUP_COLUMNS: dict[str, str] = {
    "provider": "provider",
    "model": "model",
    "component": "component",
    "context": "context_id",
}
# Owners whose lease is held: their advisory lock, granted, in this database.
_ALIVE = (
    "EXISTS (SELECT 1 FROM owners o JOIN pg_locks l ON l.locktype = 'advisory'"
    " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    f" AND l.classid = {OWNER_LOCKS}::oid AND l.objid = o.lock_key::oid AND l.objsubid = 2"
    " AND l.granted WHERE o.owner = {owner})"
)


@functools.lru_cache(maxsize=64)
def _values(fields: int, rows: int) -> str:
    row = f"({', '.join(['%s'] * fields)})"
    return ", ".join([row] * rows)


def _text_fields(row: Any, fields: Sequence[str]) -> list[Any]:
    values = []
    for name in fields:
        value = getattr(row, name)
        values.append(pg_text(value) if isinstance(value, str) else value)
    return values


_SETTLE_COLUMNS = ", ".join(f"{f} = excluded.{f}" for f in ENTRY_FIELDS)
# A batch of rows travels as one JSON parameter (msgspec encodes it in C), and
# json_to_recordset types its columns: one statement text whatever the batch's
# size, so psycopg converts it once and the server plans it once (prepared).
_COLUMN_TYPES = {
    "id": "bigint",
    "key": "text",
    "owner": "text",
    "ts": "float8",
    "request_id": "text",
    "provider": "text",
    "model": "text",
    "component": "text",
    "context_id": "text",
    "input_tokens": "bigint",
    "output_tokens": "bigint",
    "cost": "float8",
    "amount": "float8",
    "status": "text",
    "billed": "text",
    "charge_id": "text",
    "reservation_id": "bigint",
}


def _record(fields: Sequence[str]) -> str:
    """The column definitions of json_to_recordset for ``fields``."""
    return ", ".join(f"{f} {_COLUMN_TYPES[f]}" for f in fields)


_ENTRY_LIST = ", ".join(ENTRY_FIELDS)
# Charges, as one statement: the reservations they name are deleted first,
# locked in id order (each insert reads `taken` whole before its first row,
# so the deletes come first, as a sweep's do), then the charges are inserted:
# one per reservation (a real charge replaces the sweeper's interrupted one,
# any other second one is skipped) and one per charge id, in reservation id
# and charge id order: two settles replacing the same interrupted charges (or
# racing on the same charge ids) then wait for each other's rows in one order
# and cannot deadlock. Both inserts are one statement, so the spend_hours
# triggers run once for it. The locks are taken once, in their own step, the
# rows looked up by id: a vacuum that finds the table empty leaves the planner
# thinking it always is, and a locking subquery inside the delete's IN was
# then run again for every row (2.7 s for 400; see docs/storage.md, Vacuum).
_SETTLE_WITH = f"""
WITH charge AS MATERIALIZED (
    SELECT * FROM json_to_recordset(%(charges)s::json) AS c ({_record(ENTRY_FIELDS)})
), locked AS MATERIALIZED (
    SELECT id FROM reservations
    WHERE id = ANY(ARRAY(SELECT reservation_id FROM charge WHERE reservation_id IS NOT NULL))
    ORDER BY id FOR UPDATE
), taken AS (
    DELETE FROM reservations WHERE id = ANY(ARRAY(SELECT id FROM locked))
    RETURNING provider, component, amount
), settled AS (
    INSERT INTO entries ({_ENTRY_LIST})
    SELECT {_ENTRY_LIST} FROM charge
    WHERE reservation_id IS NOT NULL AND (SELECT count(*) FROM taken) >= 0
    ORDER BY reservation_id
    ON CONFLICT (reservation_id) DO UPDATE SET {_SETTLE_COLUMNS}
    WHERE entries.status = 'interrupted' AND entries.charge_id LIKE 'interrupted:%%'
    RETURNING ts, provider, component, cost
), unreserved AS (
    INSERT INTO entries ({_ENTRY_LIST})
    SELECT {_ENTRY_LIST} FROM charge
    WHERE reservation_id IS NULL AND (SELECT count(*) FROM taken) >= 0
    ORDER BY charge_id
    ON CONFLICT (charge_id) DO NOTHING
    RETURNING ts, provider, component, cost
)
"""
_SETTLE = _SETTLE_WITH + "SELECT (SELECT count(*) FROM settled) + (SELECT count(*) FROM unreserved)"
# Reservations, as one statement; the high-water mark of ids rises past theirs.
_RESERVE = f"""
WITH held AS (
    INSERT INTO reservations ({", ".join(RESERVATION_FIELDS)})
    SELECT {", ".join(RESERVATION_FIELDS)}
    FROM json_to_recordset(%(reservations)s::json) AS r ({_record(RESERVATION_FIELDS)})
    RETURNING id
)
UPDATE reservation_ids SET last = (SELECT max(id) FROM held) WHERE last < (SELECT max(id) FROM held)
"""
# The first round trip of a reservation check begins as one simple query (no
# parameters): the transaction, the reservation lock, then the rules, each
# statement with its own snapshot, taken once the lock is held. The spend
# sums follow in the same query, as an EXECUTE of a statement prepared on
# the connection (see _PREPARE_BATCH).
_LOCK_AND_RULES = (
    f"BEGIN; SELECT pg_advisory_xact_lock({BUDGET_LOCK});"
    " SELECT value FROM settings WHERE key = 'policy';"
    " SELECT period, provider, component, amount FROM limits"
)


def _json_rows(rows: Sequence[Any], fields: Sequence[str]) -> str:
    """``rows`` (LedgerEntry or ReservationRow) as the JSON of :data:`_SETTLE_WITH` or :data:`_RESERVE`."""
    payload = msgspec.json.encode(rows)
    if b"\\u0000" in payload:
        # A NUL, which PostgreSQL's text cannot hold (or text that merely looks like one).
        payload = msgspec.json.encode(
            [dict(zip(fields, _text_fields(row, fields), strict=True)) for row in rows]
        )
    return payload.decode()


# Seconds in one bucket of spend_hours, and of spend_days.
_HOUR = 3600
_DAY = 86400


def _spend_sql(column: str, *, only: bool = False, settling: bool = False) -> str:
    """
    What is spent since each period's start and held by every open reservation, per ``column``.

    One statement, so one snapshot (a charge that replaces its reservation
    meanwhile is seen whole or not at all; the triggers keep spend_hours and
    spend_days in the same transaction). From each period's first whole UTC
    day the days are read from ``spend_days``, the hours before it from its
    first whole hour from ``spend_hours``, and only the charges of a period's
    first partial hour (a start at a half-hour in its time zone) one by one.
    So its cost grows with the days of the month, not its hours or charges.
    With ``only``, just the components named.

    With ``settling``, the statement follows :data:`_SETTLE_WITH` and sums
    the ledger as that settle leaves it: a statement does not see its own
    writes, so the reservations it took are subtracted and the charges it
    wrote added (a charge that replaced an interrupted one is counted as
    well as the one it replaced: the sum errs high, never low).
    """
    keep = f" AND {column} = ANY(%(only)s)" if only else ""
    # kind 0: a day's total or a reservation (at infinity); 1: a charge of a
    # first partial hour; 2: a charge this statement wrote (in no total yet);
    # 3: an hour's total. Period p: charges from s{p}, whole hours from c{p},
    # whole days from d{p}.
    sums = ", ".join(
        f"COALESCE(sum(cost) FILTER (WHERE (kind = 0 AND t >= %(d{p})s)"
        f" OR (kind = 3 AND t >= %(c{p})s AND t < %(d{p})s)"
        f" OR (kind = 1 AND t >= %(s{p})s AND t < %(c{p})s)"
        f" OR (kind = 2 AND t >= %(s{p})s)), 0)"
        for p in range(len(PERIODS))
    )
    edges = " OR ".join(f"(ts >= %(s{p})s AND ts < %(c{p})s)" for p in range(len(PERIODS)))
    hours = " OR ".join(f"(hour >= %(c{p})s AND hour < %(d{p})s)" for p in range(len(PERIODS)))
    written = (
        f" UNION ALL SELECT 'Infinity'::float8, {column}, -amount, 0 FROM taken"
        f" UNION ALL SELECT ts, {column}, cost, 2 FROM settled"
        f" UNION ALL SELECT ts, {column}, cost, 2 FROM unreserved"
        if settling
        else ""
    )
    return (
        f"SELECT {column}, {sums} FROM ("
        f" SELECT day AS t, {column}, cost, 0 AS kind FROM spend_days"
        f"  WHERE day >= %(first_day)s{keep}"
        f" UNION ALL SELECT hour, {column}, cost, 3 FROM spend_hours WHERE ({hours}){keep}"
        f" UNION ALL SELECT ts, {column}, cost, 1 FROM entries WHERE ({edges}){keep}"
        f" UNION ALL SELECT 'Infinity'::float8, {column}, amount, 0 FROM reservations"
        f"  WHERE true{keep}{written}"
        f") AS spend GROUP BY {column}"
    )


def _whole(start: float, unit: int) -> float:
    """The first multiple of ``unit`` seconds at or after ``start``."""
    return float(math.ceil(start / unit) * unit)


def _spend_args(starts: Sequence[float], only: Sequence[str] = ()) -> dict[str, Any]:
    """
    The parameters of :func:`_spend_sql`: each start ``s``, its first whole hour
    ``c`` and the first whole UTC day ``d`` from there.
    """
    args: dict[str, Any] = {"only": list(only)}
    hours = [_whole(start, _HOUR) for start in starts]
    days = [_whole(hour, _DAY) for hour in hours]
    for p, (start, hour, day) in enumerate(zip(starts, hours, days, strict=True)):
        args[f"s{p}"], args[f"c{p}"], args[f"d{p}"] = start, hour, day
    args["first_day"] = min(days)
    return args


def _spent_sql(*, one_provider: bool) -> str:
    """
    The charges' cost at or after ``%(since)s``: whole UTC days from
    ``spend_days`` (from ``%(day)s``), the hours before them from
    ``spend_hours`` (from ``%(hour)s``, the first whole hour), the first
    partial hour from the charges. One statement, so one snapshot; its cost
    grows with the days since then, not with the charges (a month of charges
    is a month of index scans otherwise: 70-80 ms a sum at a million charges).
    """
    keep = " AND provider = %(provider)s" if one_provider else ""
    return (
        "SELECT COALESCE((SELECT sum(cost) FROM spend_days"
        f" WHERE day >= %(day)s{keep}), 0)"
        " + COALESCE((SELECT sum(cost) FROM spend_hours"
        f" WHERE hour >= %(hour)s AND hour < %(day)s{keep}), 0)"
        " + COALESCE((SELECT sum(cost) FROM entries"
        f" WHERE ts >= %(since)s AND ts < %(hour)s{keep}), 0)"
    )


_SPENT = _spent_sql(one_provider=False)
_SPENT_BY_PROVIDER = _spent_sql(one_provider=True)


def _spent_args(since: float, provider: str | None = None) -> dict[str, Any]:
    """The parameters of :data:`_SPENT` (and, with ``provider``, :data:`_SPENT_BY_PROVIDER`)."""
    hour = _whole(since, _HOUR)
    return {"since": since, "hour": hour, "day": _whole(hour, _DAY), "provider": provider}


_SPEND = _spend_sql("provider")
# The same after a settle in the same statement (see _SETTLE_WITH).
_SETTLE_AND_SPEND = _SETTLE_WITH + _spend_sql("provider", settling=True)
# The same per component, for the components that have a limit: read only
# when one is in force (one more round trip then).
_SPEND_BY_COMPONENT = _spend_sql("component", only=True)
_SWEEP = f"""
WITH locked AS MATERIALIZED (
    SELECT r.id FROM reservations r
    WHERE r.owner <> %(owner)s AND NOT {_ALIVE.format(owner="r.owner")}
    ORDER BY r.id FOR UPDATE
), gone AS (
    DELETE FROM reservations WHERE id = ANY(ARRAY(SELECT id FROM locked))
    RETURNING *
), billed AS (
    INSERT INTO entries ({", ".join(ENTRY_FIELDS)})
    SELECT ts, request_id, provider, model, component, context_id, input_tokens,
           CASE WHEN used_cost IS NULL THEN output_tokens
                ELSE LEAST(used_output, output_tokens) END,
           CASE WHEN used_cost IS NULL THEN amount ELSE LEAST(used_cost, amount) END,
           'interrupted',
           CASE WHEN used_cost IS NULL THEN 'worst_case'
                WHEN used_cost > amount THEN 'capped' ELSE 'usage' END,
           'interrupted:' || owner || ':' || id, id
    FROM gone ORDER BY id
    ON CONFLICT DO NOTHING
    RETURNING cost
)
SELECT count(*), COALESCE(sum(cost), 0) FROM billed
"""
# A vacuum that waits for no lock and never takes the exclusive one (see PostgresLedger.checkpoint).
_VACUUM_RESERVATIONS = "VACUUM (SKIP_LOCKED, TRUNCATE false) reservations"
_FORGET_DEAD_OWNERS = f"""
DELETE FROM owners d WHERE d.owner <> %(owner)s AND NOT {_ALIVE.format(owner="d.owner")}
AND NOT EXISTS (SELECT 1 FROM reservations r WHERE r.owner = d.owner)
"""


def _positional(statement: str, names: Sequence[str]) -> str:
    """``statement`` with its ``%(name)s`` parameters as ``$1``, ``$2``... in the order of ``names``."""
    for number, name in enumerate(names, 1):
        statement = statement.replace(f"%({name})s", f"${number}")
    return statement.replace("%%", "%")


# The parameters of _SPEND and _SETTLE_AND_SPEND after the charges, in order.
_SPEND_PARAMS = (*(f"{k}{p}" for p in range(len(PERIODS)) for k in "scd"), "first_day")
_FLOATS = ", ".join(["float8"] * len(_SPEND_PARAMS))
# The statements of a batch's transaction, prepared once on each connection
# (names with a version: a change of text needs a new name), so the simple
# queries that carry a batch EXECUTE them: the lock, the rules and the sums
# go out as one round trip, the reservations' insert and COMMIT as another.
_SPEND_PREPARED = "rhetor_ledger_spend_2"
_SETTLE_AND_SPEND_PREPARED = "rhetor_ledger_settle_and_spend_4"
_RESERVE_PREPARED = "rhetor_ledger_reserve_1"
_SETTLE_PREPARED = "rhetor_ledger_settle_3"
_PREPARE_BATCH = "; ".join(
    [
        f"PREPARE {_SPEND_PREPARED} ({_FLOATS}) AS {_positional(_SPEND, _SPEND_PARAMS)}",
        f"PREPARE {_SETTLE_AND_SPEND_PREPARED} (json, {_FLOATS}) AS"
        f" {_positional(_SETTLE_AND_SPEND, ('charges', *_SPEND_PARAMS))}",
        f"PREPARE {_RESERVE_PREPARED} (json) AS {_positional(_RESERVE, ('reservations',))}",
        f"PREPARE {_SETTLE_PREPARED} (json) AS {_positional(_SETTLE, ('charges',))}",
    ]
)


# The pool's connections on which the batch statements are prepared (a
# connection the pool replaces is a new object, and prepares them again).
_PREPARED: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()


def _execute_prepared(conn: psycopg.Connection[Any], query: str) -> psycopg.Cursor[Any]:
    """
    Run ``query`` (a simple query that EXECUTEs the batch statements), preparing them first.

    psycopg deallocates every prepared statement of a connection (``DEALLOCATE
    ALL``) after a rollback on it, ours too: a query that finds them gone is
    rolled back, and sent again once they are prepared again.
    """
    for attempt in range(2):
        if conn not in _PREPARED:
            conn.execute(_PREPARE_BATCH)
            _PREPARED.add(conn)
        try:
            return conn.execute(query)
        except psycopg.errors.InvalidSqlStatementName:
            _PREPARED.discard(conn)
            if attempt:
                raise
            conn.rollback()
    raise AssertionError("unreachable")


def _charges_json(entries: Iterable[LedgerEntry]) -> str | None:
    """
    Charges as the JSON of :data:`_SETTLE_WITH`; None if there are none.

    One statement may not update a row twice: of two charges for one
    reservation, the first wins (the second is skipped, as it would be later).
    """
    reserved: dict[int, LedgerEntry] = {}
    unreserved: list[LedgerEntry] = []
    for row in entries:
        if row.reservation_id is None:
            unreserved.append(row)
        else:
            reserved.setdefault(row.reservation_id, row)
    if not reserved and not unreserved:
        return None
    return _json_rows([*reserved.values(), *unreserved], ENTRY_FIELDS)
