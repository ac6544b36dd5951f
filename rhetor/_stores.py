"""
Which stores a runtime uses, opened and closed: SQLite files for one process, or PostgreSQL for many.

:func:`open_stores` is what ``rhetor.runtime.start()`` calls before it builds
the actor tree. Without ``database_url`` (``RHETOR_DATABASE_URL``) it gives
the embedded default: SQLite files under the data directory, which it locks
(``rhetor.lock``) so that no second runtime writes them. With a
``postgresql://`` URL it opens one connection pool for every store, applies
the schema's migrations (under an advisory lock, so instances starting
together do not race), and registers the runtime as a ledger owner with a
lease (see :mod:`rhetor.budget._pg_ledger`); the data directory is then not
locked, since any number of processes share the database.

:func:`upgrade_database` and :func:`database_status` are ``rhetor db upgrade``
and ``rhetor db status``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import attrs

from rhetor._errors import StorageUnavailable, ValidationError
from rhetor._settings import Settings
from rhetor.budget._interfaces import BudgetLedger
from rhetor.budget._ledger import SQLiteLedger
from rhetor.budget._pg_ledger import LEDGER_MIGRATIONS, OwnerLease, PostgresLedger
from rhetor.storage._changes import CHANGES_MIGRATIONS
from rhetor.storage._history import SQLiteHistory
from rhetor.storage._interfaces import ContextHistory
from rhetor.storage._library import SQLiteLibrary
from rhetor.storage._library_interfaces import Library
from rhetor.storage._pg import Migration, MigrationState, PgDatabase, migrate, migration_status
from rhetor.storage._pg_breaker import out_of_reach
from rhetor.storage._pg_history import HISTORY_MIGRATIONS, PostgresHistory
from rhetor.storage._pg_library import LIBRARY_MIGRATIONS, PostgresLibrary

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "MIGRATIONS",
    "START_WAITS",
    "Stores",
    "database_password",
    "database_status",
    "describe",
    "lock_data_dir",
    "open_database",
    "open_stores",
    "reach_database",
    "sqlite_status",
    "unlock_data_dir",
    "upgrade_database",
    "upgrade_sqlite",
    "worth_waiting_for",
]

log = logging.getLogger("rhetor.runtime")

# Every schema step of a PostgreSQL database, part by part (see rhetor.storage._pg).
MIGRATIONS: tuple[Migration, ...] = (
    LEDGER_MIGRATIONS + HISTORY_MIGRATIONS + LIBRARY_MIGRATIONS + CHANGES_MIGRATIONS
)


@attrs.frozen
class Stores:
    """
    What the storage actors are given: a factory for each store, and what the backend allows.

    ``shared`` is True when other processes use the same stores (PostgreSQL):
    the actors then cache nothing another process could change and answer
    many calls at once (``SharedContextStore``, ``SharedPromptLibrary``).
    ``database`` is the pool the PostgreSQL stores share (None on SQLite).
    """

    ledger: Callable[[], BudgetLedger]
    history: Callable[[], ContextHistory]
    library: Callable[[], Library]
    shared: bool
    database: PgDatabase | None = None


def open_database(settings: Settings) -> PgDatabase:
    """
    The pool of ``settings.database_url``, open (in the calling thread; it waits on the network).

    Error handling: ValidationError without a URL; StorageUnavailable if it cannot connect.
    """
    if not settings.database_url:
        raise ValidationError("database_url", "no PostgreSQL database is configured")
    return PgDatabase(settings.database_url, max_size=settings.database_pool_size).open()


@asynccontextmanager
async def open_stores(settings: Settings, owner: str) -> AsyncIterator[Stores]:
    """
    The stores of ``settings`` for one runtime whose ledger owner id is ``owner``.

    Cancellation: leaving the block closes the pool and releases the lease
    (or the data directory's lock), shielded.

    Error handling: a data directory another runtime holds is a
    :class:`ValidationError` on ``data_dir``; a database that cannot be
    reached (after :func:`reach_database`'s attempts), or whose schema is
    newer than this Rhetor's, is :class:`~rhetor.StorageUnavailable`.
    """
    if settings.database_url:
        async with _postgres(settings, owner) as stores:
            yield stores
        return
    data_dir = settings.data_dir
    await anyio.to_thread.run_sync(lambda: data_dir.mkdir(parents=True, exist_ok=True))
    lock = await anyio.to_thread.run_sync(lock_data_dir, data_dir)
    try:
        yield Stores(
            # The keeper checkpoints the file itself, off the loop.
            ledger=lambda: SQLiteLedger(data_dir / "ledger.db", autocheckpoint=False),
            # Appends commit on the loop; the actor checkpoints off it.
            history=lambda: SQLiteHistory(data_dir / "contexts.db", autocheckpoint=False),
            library=lambda: SQLiteLibrary(data_dir / "prompts.db"),
            shared=False,
        )
    finally:
        unlock_data_dir(lock)


# Pauses between a starting process's attempts to reach its database, in
# seconds; the last repeats.
START_WAITS = (0.5, 1.0, 2.0, 4.0, 5.0)


# What a server that is there but not ready says as it turns a connection away
# (libpq hands it on with no SQLSTATE): starting, stopping, recovering, full.
_NOT_READY = ("starting up", "shutting down", "in recovery", "too many", "connection slots")


def worth_waiting_for(error: StorageUnavailable) -> bool:
    """
    Whether a start that could not reach its database should try again.

    An outage is (nothing answers, or the connection breaks: see
    :func:`~rhetor.storage._pg_breaker.out_of_reach`), and so is a server
    that answers it is starting, stopping or full. A server's refusal of the
    connection itself (a wrong password, a database or role that does not
    exist, no ``pg_hba.conf`` entry: a ``FATAL`` that says none of those)
    is a configuration error, and waiting would not mend it. Servers that
    answer in another language than English are read as refusing.
    """
    if not out_of_reach(error):
        return False
    text = str(error.__cause__ or error)
    return "FATAL:" not in text or any(phrase in text for phrase in _NOT_READY)


async def reach_database(settings: Settings) -> PgDatabase:
    """
    ``settings``' database, open; while it is out of reach, tried again for ``database_start_timeout``.

    A database that starts after Rhetor (a compose file, a reboot) is waited
    for instead of failing the start: each failed attempt is logged with its
    reason and the pause before the next. Error handling: what is not an
    outage (a refused password, a database that does not exist, a bad URL)
    raises at once; an outage that outlasts the timeout raises its last
    :class:`~rhetor.StorageUnavailable`. Cancellation: a wait is cancelled
    as any sleep (a signal at start stops it).
    """
    deadline = anyio.current_time() + settings.database_start_timeout
    attempt = 0
    while True:
        try:
            return await anyio.to_thread.run_sync(open_database, settings)
        except StorageUnavailable as exc:
            pause = START_WAITS[min(attempt, len(START_WAITS) - 1)]
            if not worth_waiting_for(exc) or anyio.current_time() + pause > deadline:
                raise
            attempt += 1
            log.warning(
                "the database is out of reach (%s); trying again in %g s"
                " (attempt %d; giving up %g s after start)",
                exc,
                pause,
                attempt,
                settings.database_start_timeout,
            )
            await anyio.sleep(pause)


@asynccontextmanager
async def _postgres(settings: Settings, owner: str) -> AsyncIterator[Stores]:
    db = await reach_database(settings)
    lease = OwnerLease(db, owner)
    try:

        def prepare() -> None:
            migrate(db, MIGRATIONS)
            lease.hold()

        await anyio.to_thread.run_sync(prepare)
        log.info("stores in PostgreSQL (schema %s), owner %s", db.schema, owner)
        yield Stores(
            ledger=lambda: PostgresLedger(db, lease),
            history=lambda: PostgresHistory(db),
            library=lambda: PostgresLibrary(db),
            shared=True,
            database=db,
        )
    finally:
        with anyio.CancelScope(shield=True):

            def close() -> None:
                lease.close()
                db.close()

            await anyio.to_thread.run_sync(close)


def upgrade_database(settings: Settings) -> list[Migration]:
    """``rhetor db upgrade``: apply the pending migrations; answers those applied."""
    with open_database(settings) as db:
        return migrate(db, MIGRATIONS)


def database_status(settings: Settings) -> list[MigrationState]:
    """``rhetor db status``: every migration and when it was applied (None: pending)."""
    with open_database(settings) as db:
        return migration_status(db, MIGRATIONS)


# The SQLite files, each with the schema version this Rhetor writes.
def _sqlite_files() -> dict[str, tuple[type[Any], int]]:
    return {
        "ledger.db": (SQLiteLedger, SQLiteLedger.SCHEMA_VERSION),
        "contexts.db": (SQLiteHistory, SQLiteHistory.SCHEMA_VERSION),
        "prompts.db": (SQLiteLibrary, SQLiteLibrary.SCHEMA_VERSION),
    }


def sqlite_status(data_dir: Path) -> list[dict[str, Any]]:
    """
    ``rhetor db status`` on SQLite: each file's schema version against this Rhetor's.

    A file that does not exist yet is pending; one below the version is
    migrated when Rhetor (or ``rhetor db upgrade``) opens it.
    """
    import sqlite3

    rows = []
    for name, (_, version) in _sqlite_files().items():
        path = data_dir / name
        current = None
        if path.exists():
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                (current,) = conn.execute("PRAGMA user_version").fetchone()
            finally:
                conn.close()
        rows.append(
            {
                "part": name,
                "version": version,
                "name": "schema" if current is None else f"schema (file at {current})",
                "applied": None if current is None or current < version else "in file",
            }
        )
    return rows


def upgrade_sqlite(data_dir: Path) -> list[str]:
    """
    ``rhetor db upgrade`` on SQLite: open (create or migrate) each file, under the data directory's lock.

    Error handling: a data directory a running Rhetor holds is a ValidationError on ``data_dir``.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = lock_data_dir(data_dir)
    try:
        before = {row["part"]: row["applied"] for row in sqlite_status(data_dir)}
        for name, (store, _) in _sqlite_files().items():
            store(data_dir / name).close()
    finally:
        unlock_data_dir(lock)
    return [
        f"{name}: schema {version}"
        for name, (_, version) in _sqlite_files().items()
        if before[name] is None
    ]


def lock_data_dir(data_dir: Path) -> int | None:
    """
    Take ``data_dir/rhetor.lock`` for this runtime; the SQLite stores assume one owner.

    The BudgetKeeper, ContextStore and PromptLibrary keep in-memory state
    (budget totals and reservations, windows, default prompts) that is only
    right while they are the only writers of their files, and the ledger
    settles every other owner's reservations as interrupted when it starts,
    so a second runtime on the same data directory (in this process or
    another) is refused.

    Error handling: :class:`ValidationError` on ``data_dir`` when it is taken.
    """
    if fcntl is None:  # pragma: no cover - not POSIX: no advisory locks
        return None
    fd = os.open(data_dir / "rhetor.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip()
        os.close(fd)
        owner = f" (pid {holder})" if holder else ""
        raise ValidationError(
            "data_dir", f"{data_dir} is in use by another Rhetor runtime{owner}"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def unlock_data_dir(fd: int | None) -> None:
    """Release the data directory's lock (closing the descriptor releases it)."""
    if fd is not None:
        os.close(fd)


def database_password(url: str | None) -> str | None:
    """The password in a database URL, if any, so that logs can redact it."""
    if not url:
        return None
    from psycopg.conninfo import conninfo_to_dict

    try:
        password = conninfo_to_dict(url).get("password")
    except Exception:  # a URL libpq cannot parse holds no password we could find either
        return None
    return str(password) if password else None


def describe(settings: Settings) -> dict[str, Any]:
    """Where the stores are, for logs and ``rhetor db status``: never the URL's password."""
    if not settings.database_url:
        return {"backend": "sqlite", "data_dir": str(settings.data_dir)}
    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(settings.database_url)
    return {
        "backend": "postgresql",
        "host": info.get("host", "localhost"),
        "port": info.get("port", "5432"),
        "database": info.get("dbname", info.get("user", "")),
        "user": info.get("user", ""),
    }
