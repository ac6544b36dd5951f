"""
The PostgreSQL ledger's hot group commits, written on trio instead of a worker thread.

A group commit of checked reservations and charges (what a steady load is
made of) is one transaction of two simple queries (``_pg_batch``).
:class:`TrioBatches` sends them with libpq's non-blocking calls on the event
loop's thread (:class:`~rhetor.storage._pg_trio.TrioSession`), on
connections of its own, one per commit in flight; every other ledger call
still runs psycopg in a worker thread, and so does the rare extra round trip
(the per-component sums, when a component has a limit in force), on the same
connection inside the transaction.

Why: handing each batch to a worker thread and back, and the interpreter's
lock passing between two cores meanwhile, cost about 100 us of CPU a request
on one process (measured with the whole process kept on one core, which
removed the difference; docs/storage.md).

Deadlines: a batch has ``statement_timeout * 2 + lock_timeout`` seconds in
all (the server's own timeouts bound each statement first). Error handling:
any failure is :class:`~rhetor.StorageUnavailable`, reported to the
database's breaker like every pooled call; a connection that failed, timed
out or was cancelled mid-way is closed (the server rolls back), and the next
batch opens another. While the breaker is open the keeper writes through the
worker-thread path instead, which probes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import anyio
import attrs
import psycopg
import trio
from psycopg import pq

from rhetor._errors import StorageUnavailable
from rhetor.budget._interfaces import LedgerEntry, ReservationRow
from rhetor.budget._pg_batch import (
    Read,
    decide,
    reserve_and_commit,
    rules_and_sums,
    settle_only,
    spend_starts,
)
from rhetor.budget._pg_ledger_sql import (
    _PREPARE_BATCH,
    _SPEND_BY_COMPONENT,
    _charges_json,
    _spend_args,
)
from rhetor.budget._rules import Claim, Decision, Period
from rhetor.storage._pg import PgDatabase, unavailable
from rhetor.storage._pg_trio import TrioSession, text_rows

__all__ = ["TrioBatches"]


@attrs.define(eq=False)
class TrioBatches:
    """
    Checked reservations and charges written on trio, on connections of their own.

    Invariant: a session is used by one batch at a time; at most ``idle``
    sessions wait between batches (more are closed). Batches run on the
    event loop's thread; :meth:`close` may come from another (the ledger's
    close, in a worker thread), so the idle list is kept under a lock.
    """

    db: PgDatabase
    idle: int = 2
    _sessions: list[TrioSession] = attrs.field(init=False, factory=list)
    _lock: threading.Lock = attrs.field(init=False, factory=threading.Lock)
    # The breaker's outage count when the kept sessions were last known good.
    _outages: int = attrs.field(init=False, default=0)
    # Batches written here since the start (and the connections opened for them).
    written: int = attrs.field(init=False, default=0)
    connected: int = attrs.field(init=False, default=0)

    @property
    def ready(self) -> bool:
        """Whether to write here: not while the database is out of reach (the thread path probes)."""
        return not self.db.breaker.down

    def close(self) -> None:
        """Close the idle connections (none is in use once the keeper stopped committing)."""
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()

    async def settle_and_reserve(
        self,
        entries: Iterable[LedgerEntry],
        claims: Sequence[tuple[ReservationRow, Claim]],
        *,
        policy: str,
        limits: Mapping[tuple[Period, str | None], float],
        starts: Mapping[Period, float],
    ) -> list[Decision]:
        """
        What :meth:`~rhetor.budget._pg_ledger.PostgresLedger.settle_and_reserve` does, on trio.

        Error handling: :class:`~rhetor.StorageUnavailable`, and nothing of the
        batch is written (the transaction is rolled back, or never committed).
        """
        pairs = list(claims)
        charges = _charges_json(entries)
        if not pairs and charges is None:
            return []
        deadline = self.db.statement_timeout * 2 + self.db.lock_timeout
        probe = self.db.breaker.admit()
        try:
            try:
                with trio.fail_after(deadline), unavailable("written"):
                    session = await self._session()
                    try:
                        decisions = await self._transaction(
                            session, pairs, charges, policy, limits, starts
                        )
                    except BaseException:
                        session.close()
                        raise
            except trio.TooSlowError:
                raise StorageUnavailable(
                    f"the database did not finish a ledger batch within {deadline:g}s"
                ) from None
        except StorageUnavailable as exc:
            self.db.breaker.failed(exc, probe)
            raise
        except BaseException:
            self.db.breaker.abandoned(probe)
            raise
        self.db.breaker.succeeded(probe)
        self._give_back(session)
        self.written += 1
        return decisions

    async def _transaction(
        self,
        session: TrioSession,
        pairs: list[tuple[ReservationRow, Claim]],
        charges: str | None,
        policy: str,
        limits: Mapping[tuple[Period, str | None], float],
        starts: Mapping[Period, float],
    ) -> list[Decision]:
        escaping = pq.Escaping(session.conn.pgconn)
        if not pairs:
            assert charges is not None
            await session.query(settle_only(escaping, charges))
            return []
        starts_list = spend_starts(starts)
        results = await session.query(rules_and_sums(escaping, charges, starts_list))
        if len(results) != 5:
            raise psycopg.ProgrammingError(f"a ledger batch got {len(results)} results, not 5")
        stored_policy = text_rows(results[2])
        read = Read.of(
            policy,
            limits,
            stored_policy[0] if stored_policy else None,
            text_rows(results[3]),
            text_rows(results[4]),
        )
        if components := read.components():
            args = _spend_args(starts_list, components)
            rows: list[Any] = await anyio.to_thread.run_sync(
                lambda: session.conn.execute(_SPEND_BY_COMPONENT, args).fetchall()
            )
            read.add_components(rows)
        decisions, granted = decide(read, pairs)
        await session.query(reserve_and_commit(escaping, granted))
        return decisions

    async def _session(self) -> TrioSession:
        if self.db.breaker.outages != self._outages:
            # Kept from before an outage: a restarted server closed them, and
            # libpq would find out only by failing a batch.
            self._outages = self.db.breaker.outages
            self.close()
        while True:
            with self._lock:
                session = self._sessions.pop() if self._sessions else None
            if session is None:
                break
            if not session.closed:
                return session
        conn = await anyio.to_thread.run_sync(self._connect)
        self.connected += 1
        return TrioSession(conn)

    def _connect(self) -> psycopg.Connection[Any]:
        """A connection configured like the pool's, with the batch statements prepared on it."""
        conn = self.db.connect()
        try:
            conn.execute(_PREPARE_BATCH)
        except BaseException:
            conn.close()
            raise
        return conn

    def _give_back(self, session: TrioSession) -> None:
        with self._lock:
            kept = len(self._sessions) < self.idle and not session.closed
            if kept:
                self._sessions.append(session)
        if not kept:
            session.close()
