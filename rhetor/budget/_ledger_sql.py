"""
The SQLite ledger's statements: charges, progress, the spend a reservation is checked against, the sweep.

Built once (or cached per batch size) and run by :class:`~rhetor.budget._ledger.SQLiteLedger`;
what each guarantees is in :mod:`rhetor.budget._ledger`. The names keep their
leading underscore: they are the ledger's internals, imported by it only.
"""

from __future__ import annotations

import functools
import sqlite3
from typing import Any

from rhetor.budget._ledger_schema import ENTRY_FIELDS
from rhetor.storage._sqlite import transaction

# Whitelist of group_by values to column names: the column is spliced into SQL.
_GROUP_COLUMNS: dict[str, str] = {
    "provider": "provider",
    "model": "model",
    "component": "component",
    "context": "context_id",
}
# Rows per INSERT: SQLite allows 32,766 bound values in one statement.
_ROWS_PER_STATEMENT = 1000


@functools.lru_cache(maxsize=128)
def _insert_sql(table: str, fields: tuple[str, ...], rows: int, tail: str = "") -> str:
    """``INSERT INTO table (fields) VALUES (?, ...), ...`` for ``rows`` rows."""
    row = f"({', '.join('?' * len(fields))})"
    return f"INSERT INTO {table} ({', '.join(fields)}) VALUES {', '.join([row] * rows)}{tail}"


# The sweeper: every reservation of another owner becomes an interrupted charge
# at its stream's recorded progress, else at its worst case, in one statement
# (the trigger deletes the reservations).
_SWEPT_COST = "CASE WHEN used_cost IS NULL THEN amount ELSE MIN(used_cost, amount) END"
_SWEEP = (
    f"INSERT INTO entries ({', '.join(ENTRY_FIELDS)})"
    " SELECT ts, request_id, provider, model, component, context_id, input_tokens,"
    " CASE WHEN used_cost IS NULL THEN output_tokens ELSE MIN(used_output, output_tokens) END,"
    f" {_SWEPT_COST}, 'interrupted',"
    " CASE WHEN used_cost IS NULL THEN 'worst_case'"
    " WHEN used_cost > amount THEN 'capped' ELSE 'usage' END,"
    " 'interrupted:' || owner || ':' || id, id"
    " FROM reservations WHERE owner != ? ORDER BY id"
    " ON CONFLICT DO NOTHING"
)
# One charge per reservation and per charge id: a real charge replaces the
# sweeper's interrupted one for its reservation; any other second charge is skipped.
_ON_CHARGE_CONFLICT = (
    " ON CONFLICT (reservation_id) DO UPDATE SET "
    + ", ".join(f"{f} = excluded.{f}" for f in ENTRY_FIELDS)
    + " WHERE entries.status = 'interrupted' AND entries.charge_id LIKE 'interrupted:%'"
    " ON CONFLICT DO NOTHING"
)
# How many reservations the sweep settles, and their total.
_SWEPT_TOTAL = f"SELECT COUNT(*), TOTAL({_SWEPT_COST}) FROM reservations WHERE owner != ?"
_ENTRY_COLUMNS = ", ".join(("id", *ENTRY_FIELDS))
_LAST_RESERVATION_ID = "SELECT seq FROM sqlite_sequence WHERE name = 'reservations'"
# The first claim of reservation ids creates SQLite's counter; later ones raise it.
_FIRST_RESERVATION_IDS = "INSERT INTO sqlite_sequence (name, seq) VALUES ('reservations', ?)"
_MORE_RESERVATION_IDS = "UPDATE sqlite_sequence SET seq = ? WHERE name = 'reservations'"

# A period's spend per provider (its arguments: the three periods' starts, then the earliest).
_SPENT_BY_PROVIDER = (
    "SELECT provider, TOTAL(CASE WHEN ts >= ? THEN cost END),"
    " TOTAL(CASE WHEN ts >= ? THEN cost END), TOTAL(CASE WHEN ts >= ? THEN cost END)"
    " FROM entries WHERE ts >= ? GROUP BY provider"
)
_RESERVED_BY_PROVIDER = "SELECT provider, TOTAL(amount) FROM reservations GROUP BY provider"
# A period's spend and open reservations per component (arguments as above); an open
# reservation counts in every period.
_USED_BY_COMPONENT = (
    "SELECT component, TOTAL(CASE WHEN ts >= ? THEN cost END),"
    " TOTAL(CASE WHEN ts >= ? THEN cost END),"
    " TOTAL(CASE WHEN ts >= ? THEN cost END) FROM"
    " (SELECT ts, component, cost FROM entries WHERE ts >= ? AND component != ''"
    "  UNION ALL SELECT 1e999, component, amount FROM reservations"
    "  WHERE component != '') GROUP BY component"
)
# Streams' progress on their open reservations, from a JSON array of [id, tokens, cost];
# progress never goes back.
_RECORD_PROGRESS = (
    "UPDATE reservations SET used_output = p.value ->> 1, used_cost = p.value ->> 2"
    " FROM json_each(?) AS p WHERE reservations.id = p.value ->> 0"
    " AND p.value ->> 1 >= reservations.used_output"
)
_SET_SETTING = (
    "INSERT INTO settings (key, value) VALUES (?, ?)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
_SET_LIMIT = (
    "INSERT INTO limits (period, provider, component, amount) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (period, provider, component) DO UPDATE SET amount = excluded.amount"
)


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
