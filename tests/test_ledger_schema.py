"""
The SQLite ledger's schema (rhetor/budget/_ledger_schema.py): WAL, its version, upgrades of old files.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from rhetor.budget._interfaces import ReservationRow
from rhetor.budget._ledger import SQLiteLedger


def _dead_reservation() -> ReservationRow:
    return ReservationRow(
        id=1,
        key="k1",
        owner="dead",
        request_id="req-1",
        provider="openai",
        model="gpt-4o",
        input_tokens=100,
        output_tokens=1000,
        amount=0.5,
        component="ergon",
        ts=501.0,
    )


def test_opens_in_wal_mode_with_schema_version(tmp_path: Path) -> None:
    """The ledger file is in WAL mode and records its schema version."""
    SQLiteLedger(tmp_path / "l.db").close()
    conn = sqlite3.connect(tmp_path / "l.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    conn.close()


def test_a_version_1_ledger_is_upgraded_in_place(tmp_path: Path) -> None:
    """A ledger written before reservations keeps its rows and limits and gains the new columns."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE entries (
            id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, request_id TEXT NOT NULL,
            provider TEXT NOT NULL, model TEXT NOT NULL, component TEXT NOT NULL DEFAULT '',
            context_id TEXT, input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,
            cost REAL NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('ok', 'partial', 'failed')));
        CREATE INDEX entries_ts ON entries (ts);
        CREATE INDEX entries_provider_ts ON entries (provider, ts);
        CREATE TABLE limits (period TEXT NOT NULL, provider TEXT NOT NULL DEFAULT '',
            amount REAL NOT NULL, PRIMARY KEY (period, provider));
        CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO entries VALUES (1, 10.0, 'r1', 'openai', 'gpt-4o', 'ergon', NULL, 5, 6, 0.5, 'ok');
        INSERT INTO limits VALUES ('daily', '', 3.0);
        INSERT INTO settings VALUES ('policy', 'enforce');
        PRAGMA user_version = 1;
        """
    )
    conn.close()
    with SQLiteLedger(path) as ledger:
        [old] = ledger.entries()
        assert (old.id, old.request_id, old.cost, old.billed, old.charge_id) == (
            1,
            "r1",
            0.5,
            "usage",
            None,
        )
        assert ledger.get_limits() == {("daily", None): 3.0}
        assert ledger.get_policy() == "enforce"
        ledger.reserve_many([_dead_reservation()])
        ledger.sweep("alive")
        assert [e.status for e in ledger.entries()] == ["interrupted", "ok"]  # newest first
    with SQLiteLedger(path) as ledger:  # and opening it again changes nothing
        assert len(ledger.entries()) == 2
