"""
The SQLite ledger's schema (rhetor/budget/_ledger_schema.py): WAL, its version, upgrades of old files.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

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
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 5
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


def test_a_version_2_ledger_keeps_one_charge_per_reservation(tmp_path: Path) -> None:
    """A reservation billed twice by an old race keeps its real charge only, and stays unique."""
    path = tmp_path / "v2.db"
    SQLiteLedger(path).close()
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        DROP INDEX entries_reservation;
        ALTER TABLE reservations DROP COLUMN used_cost;
        ALTER TABLE reservations DROP COLUMN used_output;
        INSERT INTO entries (ts, request_id, provider, model, input_tokens, output_tokens, cost,
                             status, billed, charge_id, reservation_id)
        VALUES (1.0, 'r1', 'openai', 'gpt-4o', 100, 1000, 0.5, 'interrupted', 'worst_case',
                'interrupted:dead:1', 1),
               (2.0, 'r1', 'openai', 'gpt-4o', 100, 20, 0.01, 'ok', 'usage', 'c1', 1),
               (3.0, 'r2', 'openai', 'gpt-4o', 100, 20, 0.02, 'ok', 'usage', 'c2', 2),
               (4.0, 'r2', 'openai', 'gpt-4o', 100, 20, 0.03, 'ok', 'usage', 'c3', 2);
        PRAGMA user_version = 2;
        """
    )
    conn.close()
    with SQLiteLedger(path) as ledger:
        kept = sorted((e.charge_id, e.reservation_id) for e in ledger.entries())
        assert kept == [("c1", 1), ("c2", 2), ("c3", None)]
        assert ledger.spent(0.0) == 0.06
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 5
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute(
            "INSERT INTO entries (ts, request_id, provider, model, input_tokens, output_tokens,"
            " cost, status, reservation_id) VALUES (5.0, 'r', 'p', 'm', 1, 1, 0.1, 'ok', 1)"
        )
    conn.close()
