"""
What every SQLite-backed store shares: opening the file, transactions, closing.

:func:`open_database` is the one way Rhetor's stores open SQLite (WAL,
``synchronous=NORMAL``, schema versioned by ``user_version``), and
:func:`transaction` the one way they group writes. :class:`SQLiteStore` is the
base of the ledger, the history and the library stores: it owns the connection
from construction to :meth:`SQLiteStore.close`.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from typing import ClassVar, Self

import attrs

__all__ = ["SQLiteStore", "open_database", "transaction"]


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
    """

    SCHEMA: ClassVar[str]
    SCHEMA_VERSION: ClassVar[int]

    path: str | os.PathLike[str]
    _conn: sqlite3.Connection = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._conn = open_database(self.path, self.SCHEMA, self.SCHEMA_VERSION)

    def close(self) -> None:
        """
        Close the database; safe to call twice.
        """
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
