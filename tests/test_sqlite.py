from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import ClassVar

import attrs
import pytest

from rhetor._sqlite import SQLiteStore, open_database, transaction

_SCHEMA = "CREATE TABLE IF NOT EXISTS items (name TEXT PRIMARY KEY);"


@attrs.define(eq=False)
class Items(SQLiteStore):
    SCHEMA: ClassVar[str] = _SCHEMA
    SCHEMA_VERSION: ClassVar[int] = 3

    def add(self, name: str) -> None:
        with transaction(self._conn) as conn:
            conn.execute("INSERT INTO items (name) VALUES (?)", (name,))

    def names(self) -> list[str]:
        return [name for (name,) in self._conn.execute("SELECT name FROM items ORDER BY name")]


def test_open_applies_schema_and_records_version(tmp_path: Path) -> None:
    """A new file gets the schema, WAL mode and the schema version."""
    conn = open_database(tmp_path / "s.db", _SCHEMA, 2)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    assert conn.execute("SELECT count(*) FROM items").fetchone()[0] == 0
    conn.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A file from a newer schema version is refused, not misread."""
    conn = sqlite3.connect(tmp_path / "l.db")
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(RuntimeError, match="newer"):
        open_database(tmp_path / "l.db", "", 1)


def test_transaction_rolls_back_on_error(tmp_path: Path) -> None:
    """A block that raises leaves nothing written, and the error passes through."""
    conn = open_database(tmp_path / "s.db", _SCHEMA, 1)

    def insert_then_fail() -> None:
        with transaction(conn):
            conn.execute("INSERT INTO items (name) VALUES ('a')")
            raise KeyError("a")

    with pytest.raises(KeyError):
        insert_then_fail()
    assert not conn.in_transaction
    assert conn.execute("SELECT count(*) FROM items").fetchone()[0] == 0
    conn.close()


def test_store_opens_with_its_schema_and_closes_on_exit(tmp_path: Path) -> None:
    """A store opens its file with its own schema version and closes it as a context manager."""
    with Items(tmp_path / "s.db") as store:
        store.add("b")
        store.add("a")
        assert store.names() == ["a", "b"]
    with pytest.raises(sqlite3.ProgrammingError):
        store.names()
    store.close()  # Safe to call twice.
    conn = sqlite3.connect(tmp_path / "s.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
    conn.close()
