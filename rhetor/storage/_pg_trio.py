"""
Simple queries on a psycopg connection, driven by trio on the event loop's own thread.

Every other call to PostgreSQL runs psycopg's synchronous API in a worker
thread (``rhetor.storage._pg``). That costs a hand-over to the thread and
back for each call, and the two threads then pass the interpreter's lock
between two cores: measured on the budget ledger's group commit, about 100 us
of CPU a request in all, an eighth of a request's cost (see
docs/storage.md). The ledger's hot batch is two simple queries and a little
Python between them, so :class:`TrioSession` sends them with libpq's
non-blocking calls (psycopg's ``pq`` wrapper of libpq) and waits on the
connection's socket with trio, like any other socket of the process.

The connection is one psycopg opened and configured
(:meth:`~rhetor.storage._pg.PgDatabase.connect`): its search path and
server-side deadlines hold, and the same connection can still be used
through psycopg in a worker thread between two queries here.

Cancellation and errors: a query that is cancelled, or whose connection
fails mid-way, closes the connection at once (the server rolls back what it
had not committed), and the session is ``closed`` for good. A query the
server refuses leaves the connection usable: the results are read to the
end, an open transaction is rolled back, and psycopg's own error for that
result is raised (``psycopg.errors.error_from_result``).
"""

from __future__ import annotations

from typing import Any

import attrs
import psycopg
import trio
from psycopg import pq
from psycopg.errors import error_from_result

__all__ = ["TrioSession", "text_rows"]

_FAILED = (pq.ExecStatus.FATAL_ERROR, pq.ExecStatus.BAD_RESPONSE, pq.ExecStatus.NONFATAL_ERROR)
# Transaction states after which the connection needs a ROLLBACK to be idle.
_IN_TRANSACTION = (pq.TransactionStatus.INTRANS, pq.TransactionStatus.INERROR)


def text_rows(result: pq.abc.PGresult) -> list[tuple[str | None, ...]]:
    """A result's rows, each value as text (None for NULL); what a simple query answers."""
    columns = range(result.nfields)
    rows: list[tuple[str | None, ...]] = []
    for row in range(result.ntuples):
        values = (result.get_value(row, column) for column in columns)
        rows.append(tuple(None if v is None else bytes(v).decode() for v in values))
    return rows


@attrs.define(eq=False)
class TrioSession:
    """
    One psycopg connection, queried with libpq's non-blocking calls on trio.

    Invariant: used by one task at a time (the caller's to ensure), and never
    again once ``closed``.
    """

    conn: psycopg.Connection[Any]

    @property
    def closed(self) -> bool:
        return self.conn.closed or self.conn.pgconn.status != pq.ConnStatus.OK

    def close(self) -> None:
        """Close the connection at once (no round trip); safe to call twice."""
        self.conn.close()

    async def query(self, text: str) -> list[pq.abc.PGresult]:
        """
        Send ``text`` (one or more statements, as one simple query); answers every result.

        Error handling: psycopg's error for the first statement the server
        refused (the connection stays usable, its transaction rolled back);
        ``psycopg.OperationalError`` when the connection fails (it is closed).
        A cancelled query closes the connection.
        """
        if self.closed:
            raise psycopg.OperationalError("the connection is closed")
        try:
            results = await self._exchange(text.encode())
            refused = next((r for r in results if r.status in _FAILED), None)
            if refused is not None and self.conn.pgconn.transaction_status in _IN_TRANSACTION:
                await self._exchange(b"ROLLBACK")
        except BaseException:
            # Cancelled or broken half-way: what the connection holds is unknown.
            self.close()
            raise
        if refused is not None:
            raise error_from_result(refused, encoding=self.conn.info.encoding)
        return results

    async def _exchange(self, query: bytes) -> list[pq.abc.PGresult]:
        pgconn = self.conn.pgconn
        fd = pgconn.socket
        pgconn.send_query(query)
        # Non-blocking (psycopg connects so): what the socket did not take yet.
        while pgconn.flush():
            await trio.lowlevel.wait_writable(fd)
        results: list[pq.abc.PGresult] = []
        while True:
            while pgconn.is_busy():
                await trio.lowlevel.wait_readable(fd)
                pgconn.consume_input()
            result = pgconn.get_result()
            if result is None:
                return results
            results.append(result)
