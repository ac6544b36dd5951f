"""
The SQLite ledger's schema, and the migration of files written by older versions.

Two tables carry the money. ``reservations`` holds one row per request that
may still spend: written before the provider is called, owned by the runtime
that wrote it. ``entries`` holds one row per charge. Settling inserts the
charge, and the insert itself deletes the reservation it names (a trigger), so
a reservation is replaced by its charge in one statement: a crash can leave
one or the other, never both and never neither. On PostgreSQL the same step
is one ``WITH ... DELETE ... RETURNING`` feeding the ``INSERT``.
"""

from __future__ import annotations

import os
import sqlite3

__all__ = ["ENTRY_FIELDS", "RESERVATION_FIELDS", "SCHEMA", "SCHEMA_VERSION", "upgrade"]

SCHEMA_VERSION = 5
# Columns written from LedgerEntry and ReservationRow, in the order of their JSON rows.
ENTRY_FIELDS = tuple(
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
RESERVATION_FIELDS = tuple(
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
-- One charge per reservation: a settle and a sweep of the same one never both bill it.
CREATE UNIQUE INDEX IF NOT EXISTS entries_reservation ON entries (reservation_id);
"""
SCHEMA = (
    _TABLES
    + """
-- used_output and used_cost: how far a stream got, what the sweeper bills
-- (used_cost NULL: nothing known, so the worst case).
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
    amount        REAL    NOT NULL CHECK (amount >= 0),
    used_output   INTEGER NOT NULL DEFAULT 0 CHECK (used_output >= 0),
    used_cost     REAL    CHECK (used_cost >= 0)
);
-- Settling is one INSERT: the charge replaces its reservation in the same statement.
CREATE TRIGGER IF NOT EXISTS entries_settle AFTER INSERT ON entries
WHEN NEW.reservation_id IS NOT NULL
BEGIN
    DELETE FROM reservations WHERE id = NEW.reservation_id;
END;
-- provider and component '' stand for "all": NULL would not be unique in the key.
-- A limit is overall, for one provider or for one component.
CREATE TABLE IF NOT EXISTS limits (
    period    TEXT NOT NULL CHECK (period IN ('daily', 'weekly', 'monthly')),
    provider  TEXT NOT NULL DEFAULT '',
    component TEXT NOT NULL DEFAULT '',
    amount    REAL NOT NULL,
    PRIMARY KEY (period, provider, component),
    CHECK (provider = '' OR component = '')
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
{SCHEMA}
PRAGMA user_version = 4;
COMMIT;
"""
_PROGRESS_COLUMNS = """
ALTER TABLE reservations
    ADD COLUMN used_output INTEGER NOT NULL DEFAULT 0 CHECK (used_output >= 0);
ALTER TABLE reservations ADD COLUMN used_cost REAL CHECK (used_cost >= 0);
"""
# Version 2 allowed two charges for one reservation (a sweep and a late
# settle): keep the real one, then make the reservation's charge unique.
_UPGRADE_FROM_2 = f"""
BEGIN IMMEDIATE;
DELETE FROM entries WHERE status = 'interrupted' AND charge_id LIKE 'interrupted:%'
    AND EXISTS (SELECT 1 FROM entries o WHERE o.reservation_id = entries.reservation_id
                AND o.id <> entries.id);
UPDATE entries SET reservation_id = NULL WHERE EXISTS (
    SELECT 1 FROM entries o WHERE o.reservation_id = entries.reservation_id AND o.id < entries.id);
{_PROGRESS_COLUMNS}
{SCHEMA}
PRAGMA user_version = 4;
COMMIT;
"""
# Version 4 had limits overall and per provider only: rebuild the table with
# a component in its key.
_UPGRADE_FROM_4 = """
BEGIN IMMEDIATE;
CREATE TABLE limits_v5 (
    period    TEXT NOT NULL CHECK (period IN ('daily', 'weekly', 'monthly')),
    provider  TEXT NOT NULL DEFAULT '',
    component TEXT NOT NULL DEFAULT '',
    amount    REAL NOT NULL,
    PRIMARY KEY (period, provider, component),
    CHECK (provider = '' OR component = '')
);
INSERT INTO limits_v5 (period, provider, amount) SELECT period, provider, amount FROM limits;
DROP TABLE limits;
ALTER TABLE limits_v5 RENAME TO limits;
PRAGMA user_version = 5;
COMMIT;
"""
# Version 3 had no progress on reservations.
_UPGRADE_FROM_3 = f"""
BEGIN IMMEDIATE;
{_PROGRESS_COLUMNS}
PRAGMA user_version = 4;
COMMIT;
"""


def upgrade(path: str | os.PathLike[str]) -> None:
    """
    Bring a ledger file written by an older Rhetor to this schema, one transaction a step.
    """
    if not os.path.exists(path):
        return
    conn = sqlite3.connect(os.fspath(path), isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout=5000")
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        # Each script brings a file to a later version; the last to this one.
        scripts = {1: _UPGRADE_FROM_1, 2: _UPGRADE_FROM_2, 3: _UPGRADE_FROM_3, 4: _UPGRADE_FROM_4}
        while (script := scripts.get(version)) is not None:
            try:
                conn.executescript(script)
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            (version,) = conn.execute("PRAGMA user_version").fetchone()
    finally:
        conn.close()
