"""
The PostgreSQL ledger's owner lease: a runtime's advisory lock that tells the sweeper it is alive.

See :mod:`rhetor.budget._pg_ledger` for how owners and the sweeper work together.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

import attrs
import psycopg

from rhetor.budget._pg_ledger_schema import OWNER_LOCKS
from rhetor.storage._pg import PgDatabase, unavailable

__all__ = ["OwnerLease"]

log = logging.getLogger("rhetor.budget")


@attrs.define(eq=False)
class OwnerLease:
    """
    A runtime's claim to be alive: ``pg_advisory_lock(OWNER_LOCKS, key)`` held on a connection of its own.

    :meth:`hold` registers the owner and takes the lock; :meth:`ensure`
    checks the connection and, if it broke (the database restarted, the
    network dropped), takes the lock again on a new one; :meth:`close`
    releases it. Safe for one caller at a time (the keeper's sweeper).

    Error handling: a database that cannot be reached is
    :class:`~rhetor.StorageUnavailable`; the lease then stays released
    until a later :meth:`ensure` succeeds.
    """

    db: PgDatabase
    owner: str
    _conn: psycopg.Connection[Any] | None = attrs.field(init=False, default=None)

    @property
    def held(self) -> bool:
        """Whether the lock's connection is open (as far as this process knows)."""
        return self._conn is not None and not self._conn.closed

    @property
    def backend_pid(self) -> int | None:
        """The server process of the lock's connection (None when not held)."""
        return self._conn.info.backend_pid if self.held and self._conn is not None else None

    def hold(self) -> None:
        """Register the owner (once) and take its lock on a new connection."""
        conn = self.db.connect()
        try:
            with unavailable("written"):
                row = conn.execute(
                    "SELECT lock_key FROM owners WHERE owner = %s", (self.owner,)
                ).fetchone()
                if row is None:
                    (key,) = conn.execute("SELECT nextval('owner_lock_keys')").fetchone() or (0,)
                else:
                    (key,) = row
                # The lock first: an owners row whose lock nobody holds is a dead owner.
                conn.execute("SELECT pg_advisory_lock(%s, %s)", (OWNER_LOCKS, key))
                conn.execute(
                    "INSERT INTO owners (owner, lock_key, pid, host, started)"
                    " VALUES (%s, %s, %s, %s, extract(epoch FROM now()))"
                    " ON CONFLICT (owner) DO NOTHING",
                    (self.owner, key, os.getpid(), socket.gethostname()),
                )
        except BaseException:
            conn.close()
            raise
        old, self._conn = self._conn, conn
        if old is not None:
            old.close()

    def ensure(self) -> bool:
        """
        Check the lease; take it again if its connection broke. Answers whether it was lost.
        """
        if self._conn is not None and not self._conn.closed:
            try:
                self._conn.execute("SELECT 1")
                return False
            except psycopg.Error:
                self._conn.close()
        log.warning("owner %s lost its database lease; taking it again", self.owner)
        self.hold()
        return True

    def close(self) -> None:
        """
        Release the lock, then close its connection; safe to call twice.

        The unlock is explicit so that the lease is gone when this returns
        (a closed connection's backend releases it a moment later).
        """
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if not conn.closed:
                conn.execute("SELECT pg_advisory_unlock_all()")
        except psycopg.Error:
            pass  # the connection is gone, and the lock with it
        finally:
            conn.close()
