"""
The PostgreSQL ledger's statements: charges, settles, the spend a reservation is checked against, the sweep.

Built once (or cached per batch size) and run by :class:`~rhetor.budget._pg_ledger.PostgresLedger`;
what each guarantees is in :mod:`rhetor.budget._pg_ledger`. The names keep their
leading underscore: they are the ledger's internals, imported by it (and its tests) only.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

from rhetor.budget._ledger_schema import ENTRY_FIELDS
from rhetor.budget._pg_ledger_schema import OWNER_LOCKS
from rhetor.budget._rules import PERIODS
from rhetor.storage._pg import pg_text

# Rows per INSERT: PostgreSQL allows 65,535 bound values in one statement.
_ROWS_PER_STATEMENT = 1000
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
# A settle's reservations go first, locked in id order (as the sweep locks
# them), so a settle and a sweep of the same reservation wait for each other
# instead of deadlocking.
_TAKE_RESERVATIONS = (
    "DELETE FROM reservations WHERE id IN"
    " (SELECT id FROM reservations WHERE id = ANY(%s) ORDER BY id FOR UPDATE)"
)


@functools.lru_cache(maxsize=64)
def _settle_sql(rows: int, *, reserved: bool) -> str:
    """
    Insert ``rows`` charges: at most one per reservation, at most one per charge id.

    A reservation has one charge (the unique index ``entries_reservation``):
    a charge for a reservation the sweeper already billed as interrupted (its
    owner was only cut off, not dead) replaces that interrupted charge in
    place; any other second charge for it is skipped. Whichever of a settle
    and a sweep commits first, the other one finds its row and gives way.
    """
    head = (
        f"INSERT INTO entries ({', '.join(ENTRY_FIELDS)}) VALUES {_values(len(ENTRY_FIELDS), rows)}"
    )
    if not reserved:
        return head + " ON CONFLICT (charge_id) DO NOTHING"
    return (
        head + f" ON CONFLICT (reservation_id) DO UPDATE SET {_SETTLE_COLUMNS}"
        " WHERE entries.status = 'interrupted' AND entries.charge_id LIKE 'interrupted:%%'"
    )


@functools.lru_cache(maxsize=64)
def _settle_batch_sql(reserved: int, unreserved: int) -> str:
    """:func:`_settle_sql` for ``reserved`` charges then ``unreserved`` ones, as one statement."""
    if not unreserved:
        return _settle_sql(reserved, reserved=True)
    if not reserved:
        return _settle_sql(unreserved, reserved=False)
    return (
        f"WITH settled AS ({_settle_sql(reserved, reserved=True)} RETURNING 1),"
        f" unreserved AS ({_settle_sql(unreserved, reserved=False)} RETURNING 1)"
        " SELECT (SELECT count(*) FROM settled) + (SELECT count(*) FROM unreserved)"
    )


# Seconds in one bucket of spend_hours.
_HOUR = 3600


def _spend_sql(column: str, *, only: bool = False) -> str:
    """
    What is spent since each period's start and held by every open reservation, per ``column``.

    One statement, so one snapshot (a charge that replaces its reservation
    meanwhile is seen whole or not at all; the triggers keep spend_hours in
    the same transaction). The hours from each period's first whole hour are
    read from ``spend_hours``; only the charges of a period's first partial
    hour (a start at a half-hour in its time zone) are read one by one. So
    its cost grows with the hours of the month, not its charges. With
    ``only``, just the components named.
    """
    keep = f" AND {column} = ANY(%(only)s)" if only else ""
    sums = ", ".join(
        f"COALESCE(sum(cost) FILTER (WHERE (NOT raw AND t >= %(c{p})s)"
        f" OR (raw AND t >= %(s{p})s AND t < %(c{p})s)), 0)"
        for p in range(len(PERIODS))
    )
    edges = " OR ".join(f"(ts >= %(s{p})s AND ts < %(c{p})s)" for p in range(len(PERIODS)))
    return (
        f"SELECT {column}, {sums} FROM ("
        f" SELECT hour AS t, {column}, cost, false AS raw FROM spend_hours"
        f"  WHERE hour >= %(first)s{keep}"
        f" UNION ALL SELECT ts, {column}, cost, true FROM entries WHERE ({edges}){keep}"
        f" UNION ALL SELECT 'Infinity'::float8, {column}, amount, false FROM reservations"
        f"  WHERE true{keep}"
        f") AS spend GROUP BY {column}"
    )


def _spend_args(starts: Sequence[float], only: Sequence[str] = ()) -> dict[str, Any]:
    """The parameters of :func:`_spend_sql`: each start ``s`` and its first whole hour ``c``."""
    args: dict[str, Any] = {"only": list(only)}
    hours = [float(math.ceil(start / _HOUR) * _HOUR) for start in starts]
    for p, (start, hour) in enumerate(zip(starts, hours, strict=True)):
        args[f"s{p}"], args[f"c{p}"] = start, hour
    args["first"] = min(hours)
    return args


_SPEND = _spend_sql("provider")
# The same per component, for the components that have a limit: read only
# when one is in force (one more round trip then).
_SPEND_BY_COMPONENT = _spend_sql("component", only=True)
_SWEEP = f"""
WITH gone AS (
    DELETE FROM reservations WHERE id IN (
        SELECT r.id FROM reservations r
        WHERE r.owner <> %(owner)s AND NOT {_ALIVE.format(owner="r.owner")}
        ORDER BY r.id FOR UPDATE
    )
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
_FORGET_DEAD_OWNERS = f"""
DELETE FROM owners d WHERE d.owner <> %(owner)s AND NOT {_ALIVE.format(owner="d.owner")}
AND NOT EXISTS (SELECT 1 FROM reservations r WHERE r.owner = d.owner)
"""
