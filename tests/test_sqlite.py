"""
SQLite stores' shared base: opening, transactions, and the values SQLite can store.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import ClassVar

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rhetor._errors import ValidationError
from rhetor.storage._sqlite import (
    SQLITE_INT_MAX,
    SQLITE_INT_MIN,
    SQLiteStore,
    check_int,
    check_text,
    open_database,
    transaction,
)

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


# -- values SQLite cannot take -------------------------------------------------------


@pytest.mark.parametrize("value", [0, 1, SQLITE_INT_MAX])
def test_check_int_passes_what_sqlite_can_store(value: int) -> None:
    """Whole numbers from the minimum to 2**63 - 1 pass unchanged."""
    assert check_int("limit", value) == value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (SQLITE_INT_MAX + 1, f"limit: must be at most {SQLITE_INT_MAX}"),
        (10**24, f"limit: must be at most {SQLITE_INT_MAX}"),
        (-1, "limit: must not be negative"),
        (True, "limit: must be a whole number"),
        (1.5, "limit: must be a whole number"),
        ("10", "limit: must be a whole number"),
        (None, "limit: must be a whole number"),
    ],
)
def test_check_int_refuses_what_sqlite_cannot_store(value: object, message: str) -> None:
    """An int past 64 bits, a negative, a bool or a non-int is a ValidationError naming the field."""
    with pytest.raises(ValidationError) as info:
        check_int("limit", value)
    assert (info.value.field, info.value.message) == ("limit", message)


def test_check_int_with_a_minimum_allows_sqlites_whole_range() -> None:
    """With minimum=SQLITE_INT_MIN, negatives pass down to -2**63 and no further."""
    assert check_int("version", SQLITE_INT_MIN, minimum=SQLITE_INT_MIN) == SQLITE_INT_MIN
    with pytest.raises(ValidationError, match="must be at least"):
        check_int("version", SQLITE_INT_MIN - 1, minimum=SQLITE_INT_MIN)


@pytest.mark.parametrize("text", ["", "plain", "naïve ☃ 𝄞", "\x00nul"])
def test_check_text_passes_valid_unicode(text: str) -> None:
    """Any string that encodes as UTF-8 passes unchanged."""
    assert check_text("name", text) == text


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("a\ud800b", "name: must be valid Unicode (a lone surrogate at index 1)"),
        ("\udfff", "name: must be valid Unicode (a lone surrogate at index 0)"),
        (b"bytes", "name: must be a string"),
        (7, "name: must be a string"),
    ],
)
def test_check_text_refuses_what_sqlite_cannot_store(value: object, message: str) -> None:
    """A lone surrogate or a non-string is a ValidationError naming the field."""
    with pytest.raises(ValidationError) as info:
        check_text("name", value)
    assert (info.value.field, info.value.message) == ("name", message)


_HOSTILE_VALUES = st.one_of(
    st.integers(),
    st.integers(min_value=2**62, max_value=2**65),
    st.integers(min_value=-(2**65), max_value=-(2**62)),
    st.text(st.characters(exclude_categories=())),
    st.text(st.sampled_from(["a", "é", "☃", "\ud800", "\udbff", "\udc00", "\udfff"])),
)


@given(_HOSTILE_VALUES)
def test_checks_refuse_exactly_what_sqlite_cannot_bind(value: int | str) -> None:
    """Property: check_int/check_text let a value through if and only if SQLite can bind it."""
    try:
        if isinstance(value, int):
            check_int("v", value, minimum=SQLITE_INT_MIN)
        else:
            check_text("v", value)
        refused = False
    except ValidationError:
        refused = True
    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        try:
            assert conn.execute("SELECT ?", (value,)).fetchone() == (value,)
            bound = True
        except (OverflowError, UnicodeEncodeError):
            bound = False
    assert refused is not bound


# -- a broken connection ---------------------------------------------------------------


def test_a_healthy_store_is_not_broken(tmp_path: Path) -> None:
    """Between calls, with no transaction open, broken() is None."""
    with Items(tmp_path / "i.db") as items:
        items.add("a")
        assert items.broken() is None


def test_a_transaction_left_open_breaks_the_store(tmp_path: Path) -> None:
    """A transaction left open by a failed call (its rollback failed) is reported as broken."""
    with Items(tmp_path / "i.db") as items:
        items._conn.execute("BEGIN")
        assert items.broken() == "a failed call left a transaction open"


def test_a_closed_store_is_broken(tmp_path: Path) -> None:
    """A closed connection cannot serve: broken() says so rather than raising."""
    items = Items(tmp_path / "i.db")
    items.close()
    assert items.broken() == "the connection is closed"
