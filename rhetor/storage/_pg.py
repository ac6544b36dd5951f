"""
What every PostgreSQL-backed store shares: the connection pool, its deadlines, errors, migrations.

:class:`PgDatabase` is the one way Rhetor's stores reach PostgreSQL: a
``psycopg_pool.ConnectionPool`` of psycopg 3 connections, used through
psycopg's synchronous API from worker threads (psycopg's async API runs on
asyncio only; Rhetor runs on trio), exactly as the SQLite stores are. One
pool serves every store of a process. Every wait has a deadline: connecting
(``connect_timeout``), a statement (``statement_timeout``), a lock
(``lock_timeout``), a transaction left idle (``idle_in_transaction_session_timeout``),
a dead peer (TCP keepalives and ``tcp_user_timeout``) and a free connection
(the pool's ``timeout``).

Every table lives in one schema (``rhetor`` unless told otherwise), set as
each connection's ``search_path``, so Rhetor shares a database with other
software without touching its tables.

Schema changes are numbered steps (:class:`Migration`) per part of Rhetor
(``ledger``, ``history``, ``library``), recorded in ``schema_migrations``.
:func:`migrate` applies the missing ones in one transaction under a
transaction-level advisory lock, so two processes starting at once apply
each step exactly once; :func:`migration_status` says which are applied.

Error handling: :func:`unavailable` is the one place psycopg's errors become
Rhetor's: a database that cannot be reached or answer in time (or any other
failure of the database itself) is :class:`~rhetor.StorageUnavailable`, with
psycopg's error as its cause.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import attrs
import psycopg
import psycopg_pool
from psycopg import sql

from rhetor._errors import StorageUnavailable, ValidationError
from rhetor.storage._pg_breaker import Breaker

__all__ = [
    "MIGRATION_LOCK",
    "Migration",
    "MigrationState",
    "PgDatabase",
    "migrate",
    "migration_status",
    "pg_text",
    "unavailable",
]

log = logging.getLogger("rhetor.storage")

# pg_advisory_xact_lock key under which migrations run (any fixed 64-bit number).
MIGRATION_LOCK = 0x5248_4554_4F52_0001  # "RHETOR" 1
# Seconds of each wait for a pooled connection between looks at the breaker.
_POOL_SLICE = 0.25
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def pg_text(value: str) -> str:
    """
    ``value`` as PostgreSQL can store it: NUL characters become U+FFFD.

    PostgreSQL's text cannot hold U+0000 (SQLite's can); a reply or a message
    holding one is stored with the replacement character instead of failing.
    """
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


@contextlib.contextmanager
def unavailable(doing: str) -> Iterator[None]:
    """
    The one place psycopg's errors become Rhetor's: :class:`StorageUnavailable`.

    ``doing`` says what failed ("read", "written"). psycopg's error is the cause.
    Rhetor's own errors (a ValidationError raised inside) pass through.
    """
    try:
        yield
    except psycopg.Error as exc:
        raise StorageUnavailable(
            f"the database cannot be {doing}: {type(exc).__name__}: {_first_line(exc)}"
        ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no detail"


@attrs.define(eq=False)
class PgDatabase:
    """
    A pool of connections to one PostgreSQL database, with Rhetor's schema as their search path.

    Opened by :meth:`open` (which waits, up to ``connect_timeout``, for its
    first connection), closed by :meth:`close`; safe for use from many
    threads at once (each call borrows its own connection). Connections are
    in autocommit mode: a store groups statements with :meth:`transaction`.

    Deadlines (seconds): ``connect_timeout`` to open a connection,
    ``statement_timeout`` for one statement, ``lock_timeout`` to wait for a
    lock, ``pool_timeout`` for a free connection. Error handling: any
    failure to connect or to get a connection in time is :class:`StorageUnavailable`.
    """

    url: str = attrs.field(repr=False)
    schema: str = "rhetor"
    min_size: int = 1
    max_size: int = 8
    connect_timeout: float = 5.0
    statement_timeout: float = 15.0
    lock_timeout: float = 10.0
    pool_timeout: float = 10.0
    # Fails calls at once while the database is out of reach (see rhetor.storage._pg_breaker).
    breaker: Breaker = attrs.field(factory=Breaker)
    _pool: psycopg_pool.ConnectionPool | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        if not _SCHEMA_NAME.fullmatch(self.schema):
            raise ValidationError("schema", "must be a lower-case SQL identifier")

    # -- opening and closing -------------------------------------------------

    def conninfo_kwargs(self) -> dict[str, Any]:
        """The connection parameters Rhetor adds to the URL: its deadlines."""
        return {
            "connect_timeout": max(1, round(self.connect_timeout)),
            "application_name": "rhetor",
            # A peer that vanished without closing (a partition, a dead host) is
            # noticed within seconds, not after the kernel's two hours.
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 3,
            "tcp_user_timeout": round(self.statement_timeout * 1000) + 5000,
        }

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        """Each new connection: autocommit, the schema as search path, the server-side deadlines."""
        conn.autocommit = True
        conn.execute(
            sql.SQL(
                "SET search_path TO {}, public; SET statement_timeout = {};"
                " SET lock_timeout = {}; SET idle_in_transaction_session_timeout = {}"
            ).format(
                sql.Identifier(self.schema),
                sql.Literal(round(self.statement_timeout * 1000)),
                sql.Literal(round(self.lock_timeout * 1000)),
                sql.Literal(round((self.statement_timeout + self.lock_timeout) * 2000)),
            )
        )

    def connect(self) -> psycopg.Connection[Any]:
        """
        One connection of its own, outside the pool, configured like the pool's.

        For a connection that must live as long as something it holds (an
        owner's session lock). The caller closes it.
        """
        with unavailable("reached"):
            conn = psycopg.connect(self.url, **self.conninfo_kwargs())
            try:
                self._configure(conn)
            except BaseException:
                conn.close()
                raise
        return conn

    def open(self) -> PgDatabase:
        """
        Open the pool and wait for its first connection; answers itself.

        Error handling: :class:`StorageUnavailable` if no connection can be
        made within ``connect_timeout`` (the pool is then closed again).
        """
        if self._pool is not None:
            return self
        # One connection first: a server that refuses or a bad URL fails now,
        # with libpq's own reason, instead of after the pool's retries.
        self.connect().close()
        pool: psycopg_pool.ConnectionPool = psycopg_pool.ConnectionPool(
            self.url,
            kwargs=self.conninfo_kwargs(),
            min_size=self.min_size,
            max_size=max(self.min_size, self.max_size),
            open=False,
            configure=self._configure,
            timeout=self.pool_timeout,
            # Retry connecting for at most this long before reporting the pool broken.
            reconnect_timeout=60.0,
            name=f"rhetor-{self.schema}",
        )
        try:
            with unavailable("reached"):
                pool.open(wait=True, timeout=self.connect_timeout + 1.0)
        except BaseException:
            pool.close(timeout=1.0)
            raise
        self._pool = pool
        return self

    def close(self) -> None:
        """Close every connection; safe to call twice."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close(timeout=5.0)

    def __enter__(self) -> PgDatabase:
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def pool(self) -> psycopg_pool.ConnectionPool:
        """The open pool. Invariant: only used between open() and close()."""
        if self._pool is None:
            raise StorageUnavailable("the database connection pool is closed")
        return self._pool

    # -- using it --------------------------------------------------------------

    @contextlib.contextmanager
    def connection(self, doing: str = "read") -> Iterator[psycopg.Connection[Any]]:
        """
        A connection of the pool for the block (autocommit: each statement its own transaction).

        Error handling: psycopg's errors in the block are :class:`StorageUnavailable`
        (see :func:`unavailable`); a connection left broken is discarded by the pool.
        While the database is out of reach, :class:`StorageUnavailable` comes at
        once, but for one probe at a time (:class:`~rhetor.storage._pg_breaker.Breaker`).
        """
        probe = self.breaker.admit()
        try:
            if probe:
                # A connection of its own first: it fails at once while the server
                # refuses (the pool would wait out its deadline), and once the
                # server answers, the idle connections the outage broke are replaced.
                self.connect().close()
                with unavailable("reached"):
                    self.pool.check()
            with unavailable(doing):
                conn = self._pooled(probe)
                try:
                    with conn:
                        yield conn
                finally:
                    self.pool.putconn(conn)
        except StorageUnavailable as exc:
            self.breaker.failed(exc, probe)
            raise
        except Exception:
            # The block's own error (a ValidationError): the database answered.
            self.breaker.succeeded(probe)
            raise
        except BaseException:
            self.breaker.abandoned(probe)
            raise
        self.breaker.succeeded(probe)

    def _pooled(self, probe: bool) -> psycopg.Connection[Any]:
        """
        A connection of the pool, waited for (up to ``pool_timeout``) in short slices.

        While the pool has none free it may be failing to connect: another call
        that finds the database out of reach trips the breaker, and then this
        wait ends at once instead of at the deadline (a probe waits on: it has
        just reached the server). Error handling: ``PoolTimeout``.
        """
        deadline = time.monotonic() + self.pool_timeout
        while True:
            left = deadline - time.monotonic()
            try:
                return self.pool.getconn(timeout=max(0.001, min(_POOL_SLICE, left)))
            except psycopg_pool.PoolTimeout:
                if left <= _POOL_SLICE or (self.breaker.down and not probe):
                    raise

    @contextlib.contextmanager
    def transaction(
        self, doing: str = "written", *, pipeline: bool = False
    ) -> Iterator[psycopg.Connection[Any]]:
        """
        A connection inside one transaction: committed if the block ends, rolled back if it raises.

        With ``pipeline``, statements go out without waiting for each other's
        results (libpq's pipeline mode) until one is read: ``BEGIN`` and the
        statements before the first read share one round trip, and so do the
        statements after the last read and ``COMMIT``.
        """
        with self.connection(doing) as conn:
            if pipeline:
                with conn.pipeline(), conn.transaction():
                    yield conn
            else:
                with conn.transaction():
                    yield conn

    def stats(self) -> dict[str, int]:
        """The pool's counters (connections, waiting requests, errors), for reports."""
        return dict(self.pool.get_stats())


# -- migrations -------------------------------------------------------------------------


@attrs.frozen
class Migration:
    """
    One numbered schema step of one part of Rhetor (``ledger``, ``history``, ``library``).

    Versions of a part count from 1 without gaps. ``statements`` run in order,
    in the same transaction as every other step applied with them.
    """

    part: str
    version: int
    name: str
    statements: tuple[str, ...]


@attrs.frozen
class MigrationState:
    """A known migration and when it was applied (None: not yet)."""

    part: str
    version: int
    name: str
    applied: datetime | None


_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    part       TEXT        NOT NULL,
    version    INTEGER     NOT NULL,
    name       TEXT        NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (part, version)
)
"""


def _check_steps(steps: Sequence[Migration]) -> None:
    seen: dict[str, int] = {}
    for step in steps:
        expected = seen.get(step.part, 0) + 1
        if step.version != expected:
            raise ValueError(f"migration {step.part} {step.version}: expected version {expected}")
        seen[step.part] = step.version


def _applied(conn: psycopg.Connection[Any]) -> dict[tuple[str, int], datetime]:
    rows = conn.execute("SELECT part, version, applied_at FROM schema_migrations").fetchall()
    return {(part, version): applied for part, version, applied in rows}


def migrate(db: PgDatabase, steps: Sequence[Migration]) -> list[Migration]:
    """
    Apply every step of ``steps`` not yet applied, in one transaction; answers those applied.

    The transaction first takes ``pg_advisory_xact_lock(MIGRATION_LOCK)``, so
    processes starting together wait for each other and each step runs once.

    Error handling: a database holding a step of a part newer than any in
    ``steps`` (written by a newer Rhetor) is refused with :class:`StorageUnavailable`
    rather than misread; a failed step rolls every step back.
    """
    _check_steps(steps)
    known = {(s.part, s.version) for s in steps}
    done: list[Migration] = []
    with db.transaction("migrated") as conn:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(db.schema)))
        conn.execute(_MIGRATIONS_TABLE)
        applied = _applied(conn)
        parts = {s.part for s in steps}
        newer = sorted(k for k in applied if k[0] in parts and k not in known)
        if newer:
            part, version = newer[-1]
            raise StorageUnavailable(
                f"the database's {part} schema is at version {version}, newer than this"
                " Rhetor knows: upgrade Rhetor"
            )
        for step in steps:
            if (step.part, step.version) in applied:
                continue
            for statement in step.statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (part, version, name) VALUES (%s, %s, %s)",
                (step.part, step.version, step.name),
            )
            done.append(step)
    for step in done:
        log.info("database schema: applied %s %d (%s)", step.part, step.version, step.name)
    return done


def migration_status(db: PgDatabase, steps: Sequence[Migration]) -> list[MigrationState]:
    """
    Every step of ``steps`` with when it was applied (None: pending), in order.
    """
    _check_steps(steps)
    with db.connection("read") as conn:
        exists = conn.execute(
            "SELECT to_regclass(format('%%I.schema_migrations', %s::text)) IS NOT NULL",
            (db.schema,),
        ).fetchone()
        applied = _applied(conn) if exists and exists[0] else {}
    return [
        MigrationState(s.part, s.version, s.name, applied.get((s.part, s.version))) for s in steps
    ]
