"""
What every SQLite-backed store shares: opening the file, transactions, closing.

:func:`open_database` is the one way Rhetor's stores open SQLite (WAL,
``synchronous=NORMAL``, schema versioned by ``user_version``), and
:func:`transaction` the one way they group writes. :class:`SQLiteStore` is the
base of the ledger, the history and the library stores: it owns the connection
from construction to :meth:`SQLiteStore.close`.

SQLite cannot take every Python value: an int beyond 64 bits raises
``OverflowError`` and a string holding a lone surrogate ``UnicodeEncodeError``
when bound. The stores pass every value that comes from a caller through
:func:`check_int` or :func:`check_text` first, so such a value is refused as a
:class:`ValidationError` naming its field, before any statement runs.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from typing import ClassVar, Self

import attrs

from rhetor._errors import ValidationError

__all__ = [
    "SQLITE_INT_MAX",
    "SQLITE_INT_MIN",
    "SQLiteStore",
    "check_int",
    "check_optional_text",
    "check_text",
    "open_database",
    "transaction",
]

# SQLite's INTEGER is a signed 64-bit number.
SQLITE_INT_MAX = 2**63 - 1
SQLITE_INT_MIN = -(2**63)


def check_int(field: str, value: object, *, minimum: int = 0) -> int:
    """
    Return ``value`` if it is a whole number from ``minimum`` to what SQLite can
    store; raise ``ValidationError(field, ...)`` if not (a bool is not a number).
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(field, "must be a whole number")
    if value < minimum:
        raise ValidationError(
            field, "must not be negative" if minimum == 0 else f"must be at least {minimum}"
        )
    if value > SQLITE_INT_MAX:
        raise ValidationError(field, f"must be at most {SQLITE_INT_MAX}")
    return value


def check_text(field: str, value: object) -> str:
    """
    Return ``value`` if it is a string SQLite can store (valid Unicode); raise
    ``ValidationError(field, ...)`` if not.

    A lone surrogate (``"\\ud800"``, which JSON and Python allow but UTF-8 does not)
    cannot be encoded. ASCII text, the common case, is let through without encoding.
    """
    if not isinstance(value, str):
        raise ValidationError(field, "must be a string")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValidationError(
                field, f"must be valid Unicode (a lone surrogate at index {exc.start})"
            ) from None
    return value


def check_optional_text(field: str, value: object) -> None:
    """
    Check ``value`` with :func:`check_text` unless it is None (a field left as it is).
    """
    if value is not None:
        check_text(field, value)


def open_database(path: str | os.PathLike[str], schema: str, version: int) -> sqlite3.Connection:
    """
    Open (creating if need be) a SQLite file in WAL mode with ``schema`` applied.

    ``schema`` must be idempotent (``CREATE ... IF NOT EXISTS``); it runs when the
    file's ``user_version`` is below ``version``, which is then recorded. The
    connection is in autocommit mode: callers group writes with :func:`transaction`.

    Error handling: a file written by a newer schema raises ``RuntimeError``
    rather than being silently misread.
    """
    conn = sqlite3.connect(os.fspath(path), check_same_thread=False, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
        (current,) = conn.execute("PRAGMA user_version").fetchone()
        if current > version:
            raise RuntimeError(
                f"{os.fspath(path)}: schema version {current} is newer than supported {version}"
            )
        if current < version:
            conn.executescript(f"BEGIN;\n{schema}\nPRAGMA user_version = {int(version)};\nCOMMIT;")
    except BaseException:
        conn.close()
        raise
    return conn


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """
    Run the block in one write transaction: committed on success, rolled back on error.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


@attrs.define(eq=False)
class SQLiteStore:
    """
    A store kept in one SQLite file, opened with its schema when constructed.

    Subclasses name their ``SCHEMA`` and ``SCHEMA_VERSION`` (see :func:`open_database`).
    A store is also a context manager that closes it on exit.

    With ``autocheckpoint=False`` a commit never copies the write-ahead log
    into the file (which syncs it, milliseconds on a busy disk), so commits
    may run on the event loop's own thread; the owner calls
    :meth:`checkpoint` instead, from a worker thread, every few hundred
    commits.
    """

    SCHEMA: ClassVar[str]
    SCHEMA_VERSION: ClassVar[int]

    path: str | os.PathLike[str]
    autocheckpoint: bool = attrs.field(default=True, kw_only=True)
    _conn: sqlite3.Connection = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._conn = open_database(self.path, self.SCHEMA, self.SCHEMA_VERSION)
        if not self.autocheckpoint:
            self._conn.execute("PRAGMA wal_autocheckpoint=0")

    def checkpoint(self) -> None:
        """
        Copy committed pages from the write-ahead log into the database file.

        PASSIVE: it never waits for, or blocks, a writer on another connection.
        """
        self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def close(self) -> None:
        """
        Close the database; safe to call twice.
        """
        self._conn.close()

    def broken(self) -> str | None:
        """
        Why the connection cannot serve another call, or None when it can.

        Invariant: between calls no transaction is open. A call that failed in a
        way :func:`transaction` could not roll back (or that closed the connection)
        breaks it, and every later call would fail too; its owner should reopen.
        """
        try:
            if self._conn.in_transaction:
                return "a failed call left a transaction open"
        except sqlite3.ProgrammingError:
            return "the connection is closed"
        return None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
