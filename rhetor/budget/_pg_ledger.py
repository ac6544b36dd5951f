"""
The budget ledger in PostgreSQL, shared by every Rhetor process on the database.

:class:`PostgresLedger` is the PostgreSQL :class:`~rhetor.budget._interfaces.BudgetLedger`.
Its tables are the SQLite ledger's (``entries``, ``reservations``,
``limits``, ``settings``) plus ``owners`` and ``reservation_ids``, created by
the numbered steps of :data:`LEDGER_MIGRATIONS`.

Budgets across processes are one atomic step: :meth:`PostgresLedger.reserve_checked`
takes ``pg_advisory_xact_lock(BUDGET_LOCK)``, reads the limits and policy in
force, sums the spend since each period's start and every open reservation
(of every process) in one statement, decides each claim of the batch, and
inserts those granted, all in one transaction. Reservations therefore
serialise on that lock, a batch at a time; nothing checks in one
transaction and inserts in another.

Settling is one statement: the charge's ``INSERT`` feeds a ``DELETE`` of its
reservation (a data-modifying ``WITH``), so a crash leaves one or the other.

Owners and the sweeper: every runtime registers its owner id in ``owners``
with a lock key, and holds ``pg_advisory_lock(OWNER_LOCKS, key)`` on a
connection of its own (:class:`OwnerLease`) for as long as it runs. The lock
ends with the connection, so a process killed with -9 (or cut off from the
database) loses it at once, and :meth:`PostgresLedger.sweep` takes exactly
the reservations whose owner holds no lock: each becomes an ``interrupted``
charge at its worst case. A process that was only cut off and settles one of
them later replaces that interrupted charge with the real one (the settle
deletes it), so nothing is billed twice.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import socket
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import attrs
import psycopg

from rhetor._errors import ValidationError
from rhetor._settings import POLICIES
from rhetor.budget._accounts import (
    PERIODS,
    Claim,
    Decision,
    Period,
    check_period,
    decide_batch,
    effective_limits,
)
from rhetor.budget._interfaces import (
    GroupBy,
    LedgerEntry,
    ReservationRow,
    UsageRow,
    clean_text,
)
from rhetor.budget._ledger_schema import ENTRY_FIELDS, RESERVATION_FIELDS
from rhetor.storage._pg import Migration, PgDatabase, pg_text, unavailable

__all__ = [
    "BUDGET_LOCK",
    "LEDGER_MIGRATIONS",
    "OWNER_LOCKS",
    "OwnerLease",
    "PostgresLedger",
]

log = logging.getLogger("rhetor.budget")

# pg_advisory_xact_lock key every reservation transaction takes (any fixed 64-bit number).
BUDGET_LOCK = 0x5248_4554_4F52_0002
# The first key of the two-key advisory locks owners hold: pg_advisory_lock(OWNER_LOCKS, key).
OWNER_LOCKS = 0x5248_0003

LEDGER_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        "ledger",
        1,
        "charges, reservations, limits, settings, owners",
        (
            """
            CREATE TABLE entries (
                id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                ts             DOUBLE PRECISION NOT NULL,
                request_id     TEXT    NOT NULL,
                provider       TEXT    NOT NULL,
                model          TEXT    NOT NULL,
                component      TEXT    NOT NULL DEFAULT '',
                context_id     TEXT,
                input_tokens   BIGINT  NOT NULL CHECK (input_tokens >= 0),
                output_tokens  BIGINT  NOT NULL CHECK (output_tokens >= 0),
                cost           DOUBLE PRECISION NOT NULL CHECK (cost >= 0),
                status         TEXT    NOT NULL
                               CHECK (status IN ('ok', 'partial', 'failed', 'interrupted')),
                billed         TEXT    NOT NULL DEFAULT 'usage'
                               CHECK (billed IN ('usage', 'capped', 'worst_case')),
                charge_id      TEXT    UNIQUE,
                reservation_id BIGINT
            )
            """,
            # The sums of a reservation's check read only this index.
            "CREATE INDEX entries_ts ON entries (ts) INCLUDE (provider, cost)",
            "CREATE INDEX entries_reservation ON entries (reservation_id)"
            " WHERE reservation_id IS NOT NULL",
            """
            CREATE TABLE reservations (
                id            BIGINT  PRIMARY KEY,
                key           TEXT    NOT NULL,
                owner         TEXT    NOT NULL,
                ts            DOUBLE PRECISION NOT NULL,
                request_id    TEXT    NOT NULL,
                provider      TEXT    NOT NULL,
                model         TEXT    NOT NULL,
                component     TEXT    NOT NULL DEFAULT '',
                context_id    TEXT,
                input_tokens  BIGINT  NOT NULL CHECK (input_tokens >= 0),
                output_tokens BIGINT  NOT NULL CHECK (output_tokens >= 0),
                amount        DOUBLE PRECISION NOT NULL CHECK (amount >= 0)
            )
            """,
            "CREATE INDEX reservations_owner ON reservations (owner)",
            # provider '' stands for "all providers": NULL would not be unique in the key.
            """
            CREATE TABLE limits (
                period   TEXT NOT NULL CHECK (period IN ('daily', 'weekly', 'monthly')),
                provider TEXT NOT NULL DEFAULT '',
                amount   DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (period, provider)
            )
            """,
            "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            # The high-water mark of reservation ids claimed by any process.
            """
            CREATE TABLE reservation_ids (
                one  BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
                last BIGINT  NOT NULL
            )
            """,
            "INSERT INTO reservation_ids (last) VALUES (0)",
            # Each running runtime; alive while it holds pg_advisory_lock(OWNER_LOCKS, lock_key).
            """
            CREATE TABLE owners (
                owner    TEXT    PRIMARY KEY,
                lock_key INTEGER NOT NULL UNIQUE,
                pid      INTEGER NOT NULL,
                host     TEXT    NOT NULL,
                started  DOUBLE PRECISION NOT NULL
            )
            """,
            "CREATE SEQUENCE owner_lock_keys AS INTEGER CYCLE",
        ),
    ),
)

# Rows per INSERT: PostgreSQL allows 65,535 bound values in one statement.
_ROWS_PER_STATEMENT = 1000
_ENTRY_COLUMNS = ", ".join(("id", *ENTRY_FIELDS))
_GROUP_COLUMNS: dict[str, str] = {
    "provider": "provider",
    "model": "model",
    "component": "component",
    "context": "context_id",
}
# Owners whose lease is held: their advisory lock, granted, in this database.
_ALIVE = (
    "EXISTS (SELECT 1 FROM owners o JOIN pg_locks l ON l.locktype = 'advisory'"
    " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    f" AND l.classid = {OWNER_LOCKS}::oid AND l.objid = o.lock_key::oid AND l.objsubid = 2"
    " AND l.granted WHERE o.owner = {owner})"
)


@functools.lru_cache(maxsize=64)
def _values(fields: int, rows: int) -> str:
    row = f"({', '.join(['%s'] * fields)})"
    return ", ".join([row] * rows)


def _text_fields(row: Any, fields: Sequence[str]) -> list[Any]:
    values = []
    for name in fields:
        value = getattr(row, name)
        values.append(pg_text(value) if isinstance(value, str) else value)
    return values


def _settle_sql(rows: int) -> str:
    """
    Insert ``rows`` charges; each deletes its reservation (and an interrupted charge for it).

    One statement: the charges, the reservations they replace and any
    interrupted charge the sweeper wrote for one of them (its owner was only
    cut off, not dead) change together or not at all.
    """
    return (
        f"WITH charged AS (INSERT INTO entries ({', '.join(ENTRY_FIELDS)})"
        f" VALUES {_values(len(ENTRY_FIELDS), rows)}"
        " ON CONFLICT (charge_id) DO NOTHING RETURNING reservation_id),"
        " settled AS (DELETE FROM reservations WHERE id IN"
        " (SELECT reservation_id FROM charged WHERE reservation_id IS NOT NULL)),"
        " replaced AS (DELETE FROM entries WHERE status = 'interrupted'"
        " AND charge_id LIKE 'interrupted:%%' AND reservation_id IN"
        " (SELECT reservation_id FROM charged WHERE reservation_id IS NOT NULL))"
        " SELECT count(*) FROM charged"
    )


# What is spent since each period's start and held by every open reservation,
# per provider: one statement, so one snapshot (a charge that replaces its
# reservation meanwhile is seen whole or not at all).
_SPEND = (
    "SELECT provider, COALESCE(sum(cost) FILTER (WHERE ts >= %s), 0),"
    " COALESCE(sum(cost) FILTER (WHERE ts >= %s), 0),"
    " COALESCE(sum(cost) FILTER (WHERE ts >= %s), 0)"
    " FROM (SELECT ts, provider, cost FROM entries WHERE ts >= %s"
    "       UNION ALL SELECT 'Infinity'::float8, provider, amount FROM reservations)"
    " AS spend GROUP BY provider"
)
_SWEEP = f"""
WITH gone AS (
    DELETE FROM reservations r
    WHERE r.owner <> %(owner)s AND NOT {_ALIVE.format(owner="r.owner")}
    RETURNING r.*
), billed AS (
    INSERT INTO entries ({", ".join(ENTRY_FIELDS)})
    SELECT ts, request_id, provider, model, component, context_id, input_tokens,
           output_tokens, amount, 'interrupted', 'worst_case',
           'interrupted:' || owner || ':' || id, id
    FROM gone ORDER BY id
    ON CONFLICT (charge_id) DO NOTHING
)
SELECT count(*), COALESCE(sum(amount), 0) FROM gone
"""
_FORGET_DEAD_OWNERS = f"""
DELETE FROM owners d WHERE d.owner <> %(owner)s AND NOT {_ALIVE.format(owner="d.owner")}
AND NOT EXISTS (SELECT 1 FROM reservations r WHERE r.owner = d.owner)
"""


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


@attrs.define(eq=False)
class PostgresLedger:
    """
    The budget ledger in PostgreSQL (a shared :class:`~rhetor.budget._interfaces.BudgetLedger`).

    Safe for use from several threads at once: each call borrows a pooled
    connection of ``db`` for one transaction. Closing it leaves the pool
    (shared with the other stores) open. ``lease`` is the runtime's own
    :class:`OwnerLease`; :meth:`sweep` renews it before it sweeps.

    Error handling: every failure of the database is
    :class:`~rhetor.StorageUnavailable`, and nothing of that call is written.
    """

    shared: ClassVar[bool] = True

    db: PgDatabase
    lease: OwnerLease | None = None

    def broken(self) -> str | None:
        """Never: a broken connection goes back to the pool, which replaces it."""
        return None

    def close(self) -> None:
        """Nothing to release: the pool belongs to the runtime."""

    def checkpoint(self) -> None:
        """Nothing to do: PostgreSQL checkpoints by itself."""

    # -- charges ---------------------------------------------------------------

    def record(self, entry: LedgerEntry) -> None:
        """Store one charge (see :meth:`record_many`)."""
        self.record_many((entry,))

    def record_many(self, entries: Iterable[LedgerEntry]) -> None:
        """
        Store a batch of charges in one transaction: all of them, or none.

        Each statement inserts up to 1,000 charges, deletes the reservations
        they name and any interrupted charge standing in for one of them.
        """
        rows = list(entries)
        if not rows:
            return
        if len(rows) <= _ROWS_PER_STATEMENT:
            # One statement is its own transaction: one round trip, no BEGIN or COMMIT.
            values = [v for row in rows for v in _text_fields(row, ENTRY_FIELDS)]
            with self.db.connection("written") as conn:
                conn.execute(_settle_sql(len(rows)), values)
            return
        with self.db.transaction("written") as conn:
            for first in range(0, len(rows), _ROWS_PER_STATEMENT):
                chunk = rows[first : first + _ROWS_PER_STATEMENT]
                values = [v for row in chunk for v in _text_fields(row, ENTRY_FIELDS)]
                conn.execute(_settle_sql(len(chunk)), values)

    def recorded_charges(self, charge_ids: Iterable[str]) -> set[str]:
        """Which of ``charge_ids`` are already stored."""
        ids = [pg_text(c) for c in charge_ids]
        if not ids:
            return set()
        with self.db.connection("read") as conn:
            rows = conn.execute(
                "SELECT charge_id FROM entries WHERE charge_id = ANY(%s)", (ids,)
            ).fetchall()
        return {row[0] for row in rows}

    def entries(self, since: float = 0.0, *, limit: int | None = None) -> list[LedgerEntry]:
        """Stored charges at or after ``since``, newest first."""
        with self.db.connection("read") as conn:
            cursor = conn.execute(
                f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE ts >= %s"
                " ORDER BY ts DESC, id DESC LIMIT %s",
                (since, limit),
            )
            names = [c.name for c in cursor.description or ()]
            return [LedgerEntry(**dict(zip(names, row, strict=True))) for row in cursor]

    def spent(self, since: float, provider: str | None = None) -> float:
        """Total USD cost of the charges at or after ``since``, of one provider or of all."""
        with self.db.connection("read") as conn:
            if provider is None:
                row = conn.execute(
                    "SELECT COALESCE(sum(cost), 0) FROM entries WHERE ts >= %s", (since,)
                ).fetchone()
            else:
                row = conn.execute(
                    "SELECT COALESCE(sum(cost), 0) FROM entries WHERE ts >= %s AND provider = %s",
                    (since, pg_text(provider)),
                ).fetchone()
        return float(row[0]) if row else 0.0

    def usage(self, since: float, group_by: GroupBy) -> list[UsageRow]:
        """Requests, tokens and cost since ``since``, summed per group, costliest first."""
        column = _GROUP_COLUMNS.get(group_by)
        if column is None:
            raise ValidationError("group_by", f"must be one of {', '.join(_GROUP_COLUMNS)}")
        with self.db.connection("read") as conn:
            rows = conn.execute(
                f"SELECT {column}, count(*), COALESCE(sum(input_tokens), 0),"
                f" COALESCE(sum(output_tokens), 0), COALESCE(sum(cost), 0)"
                f" FROM entries WHERE ts >= %s GROUP BY {column}"
                f" ORDER BY sum(cost) DESC, {column} NULLS FIRST",
                (since,),
            ).fetchall()
        return [
            UsageRow(key, int(requests), int(inputs), int(outputs), float(cost))
            for key, requests, inputs, outputs, cost in rows
        ]

    # -- reservations ----------------------------------------------------------

    def claim_reservation_ids(self, count: int) -> range:
        """
        ``count`` ids above every reservation id claimed by any process.

        One row holds the high-water mark; raising it takes the row's lock,
        so two processes claiming at once get blocks that never overlap.
        """
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValidationError("count", "must be a whole number from 1")
        with self.db.transaction("written") as conn:
            row = conn.execute(
                "UPDATE reservation_ids SET last = last + %s RETURNING last", (count,)
            ).fetchone()
        last = int(row[0]) if row else count
        return range(last - count + 1, last + 1)

    def reserve_many(self, reservations: Iterable[ReservationRow]) -> None:
        """Store a batch of open reservations, unchecked, in one transaction: all or none."""
        rows = list(reservations)
        if not rows:
            return
        with self.db.transaction("written") as conn:
            self._insert_reservations(conn, rows)

    @staticmethod
    def _insert_reservations(conn: psycopg.Connection[Any], rows: Sequence[ReservationRow]) -> None:
        """Insert ``rows``; the high-water mark of ids rises past theirs in the same statement."""
        for first in range(0, len(rows), _ROWS_PER_STATEMENT):
            chunk = rows[first : first + _ROWS_PER_STATEMENT]
            values = [v for row in chunk for v in _text_fields(row, RESERVATION_FIELDS)]
            conn.execute(
                f"WITH held AS (INSERT INTO reservations ({', '.join(RESERVATION_FIELDS)})"
                f" VALUES {_values(len(RESERVATION_FIELDS), len(chunk))} RETURNING id)"
                " UPDATE reservation_ids SET last = (SELECT max(id) FROM held)"
                " WHERE last < (SELECT max(id) FROM held)",
                values,
            )

    def reserve_checked(
        self,
        claims: Sequence[tuple[ReservationRow, Claim]],
        *,
        policy: str,
        limits: Mapping[tuple[Period, str | None], float],
        starts: Mapping[Period, float],
    ) -> list[Decision]:
        """
        Decide each claim against every limit and record those granted, in one transaction.

        Under ``pg_advisory_xact_lock(BUDGET_LOCK)``: the stored limits and
        policy, then the spend since each period's start and every open
        reservation, summed in one statement (one snapshot, so a charge
        replacing its reservation meanwhile is seen whole or not at all),
        then the decisions and the insert. The lock is released by the commit.
        """
        pairs = list(claims)
        if not pairs:
            return []
        periods = [starts[p] for p in PERIODS]
        # Pipeline mode: BEGIN, the lock, the rules and the sums go out together
        # (one round trip); the insert goes out with COMMIT (the second).
        with self.db.transaction("written", pipeline=True) as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (BUDGET_LOCK,))
            policy_row = conn.execute("SELECT value FROM settings WHERE key = 'policy'")
            limit_rows = conn.execute("SELECT period, provider, amount FROM limits")
            # Summed even when no limit turns out to apply: the rules are not known yet.
            spend = conn.execute(_SPEND, (*periods, min(periods)))
            stored_policy = policy_row.fetchone()
            if stored_policy is not None and stored_policy[0] in POLICIES:
                policy = str(stored_policy[0])
            in_force = effective_limits(
                limits,
                {(p, provider or None): float(a) for p, provider, a in limit_rows.fetchall()},
            )
            used: dict[tuple[Period, str], float] = {}
            for provider, *totals in spend.fetchall():
                for period, total in zip(PERIODS, totals, strict=True):
                    used[(period, provider)] = float(total)
            decisions = decide_batch(policy, in_force, used, (claim for _, claim in pairs))
            granted = [
                attrs.evolve(row, output_tokens=d.output_tokens, amount=d.amount)
                for (row, _), d in zip(pairs, decisions, strict=True)
                if not d.refused and d.amount > 0
            ]
            if granted:
                self._insert_reservations(conn, granted)
        return decisions

    def release(self, reservation_ids: Iterable[int]) -> None:
        """Delete reservations that will never be settled (their request never ran)."""
        ids = list(reservation_ids)
        if ids:
            with self.db.connection("written") as conn:
                conn.execute("DELETE FROM reservations WHERE id = ANY(%s)", (ids,))

    def reservations(self, owner: str | None = None) -> list[ReservationRow]:
        """Open reservations, oldest first: all of them, or one owner's."""
        query = f"SELECT {', '.join(RESERVATION_FIELDS)} FROM reservations"
        args: tuple[str, ...] = ()
        if owner is not None:
            query += " WHERE owner = %s"
            args = (pg_text(owner),)
        with self.db.connection("read") as conn:
            cursor = conn.execute(query + " ORDER BY id", args)
            names = [c.name for c in cursor.description or ()]
            return [ReservationRow(**dict(zip(names, row, strict=True))) for row in cursor]

    def sweep(self, owner: str) -> tuple[int, float]:
        """
        Settle every reservation whose owner holds no lease, at its worst case, as interrupted.

        The caller's own lease is renewed first (so it is never taken for
        dead), then one statement moves every dead owner's reservations into
        ``entries``, and owners with nothing left and no lease are forgotten.
        Answers how many were settled and their total.
        """
        if self.lease is not None:
            self.lease.ensure()
        with self.db.transaction("written") as conn:
            # Under the reservation lock: a reserve's sums see the sweep whole or not at all.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (BUDGET_LOCK,))
            row = conn.execute(_SWEEP, {"owner": pg_text(owner)}).fetchone()
            conn.execute(_FORGET_DEAD_OWNERS, {"owner": pg_text(owner)})
        count, total = row if row else (0, 0.0)
        return int(count), float(total)

    # -- limits and settings ---------------------------------------------------

    def set_limit(self, period: Period, amount: float, provider: str | None = None) -> None:
        """Set the USD limit for a period, overall or for one provider."""
        check_period(period)
        if (
            isinstance(amount, bool)
            or not isinstance(amount, int | float)
            or not math.isfinite(amount)
            or amount < 0
        ):
            raise ValidationError("amount", "must be a finite, non-negative number")
        with self.db.connection("written") as conn:
            conn.execute(
                "INSERT INTO limits (period, provider, amount) VALUES (%s, %s, %s)"
                " ON CONFLICT (period, provider) DO UPDATE SET amount = excluded.amount",
                (period, pg_text(clean_text(provider or "")), float(amount)),
            )

    def clear_limit(self, period: Period, provider: str | None = None) -> bool:
        """Remove a limit; True if there was one."""
        check_period(period)
        with self.db.connection("written") as conn:
            cursor = conn.execute(
                "DELETE FROM limits WHERE period = %s AND provider = %s",
                (period, pg_text(clean_text(provider or ""))),
            )
            return cursor.rowcount > 0

    def get_limits(self) -> dict[tuple[Period, str | None], float]:
        """Every limit, keyed by (period, provider); provider None means all providers."""
        with self.db.connection("read") as conn:
            return {
                (period, provider or None): float(amount)
                for period, provider, amount in conn.execute(
                    "SELECT period, provider, amount FROM limits ORDER BY period, provider"
                ).fetchall()
            }

    def set_setting(self, key: str, value: str | None) -> None:
        """Store a runtime setting (None removes it); its meaning belongs to the caller."""
        with self.db.connection("written") as conn:
            if value is None:
                conn.execute("DELETE FROM settings WHERE key = %s", (pg_text(key),))
            else:
                conn.execute(
                    "INSERT INTO settings (key, value) VALUES (%s, %s)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (pg_text(key), pg_text(clean_text(value))),
                )

    def get_setting(self, key: str) -> str | None:
        """A stored runtime setting, or None if it was never set."""
        with self.db.connection("read") as conn:
            row = conn.execute(
                "SELECT value FROM settings WHERE key = %s", (pg_text(key),)
            ).fetchone()
        return None if row is None else str(row[0])

    def set_policy(self, policy: str) -> None:
        """Store the budget policy name; its meaning belongs to the budget actor."""
        if not isinstance(policy, str) or not policy.strip():
            raise ValidationError("policy", "must be a non-empty string")
        self.set_setting("policy", policy)

    def get_policy(self) -> str | None:
        """The stored policy name, or None if none was ever set."""
        return self.get_setting("policy")

    def set_active(self, provider: str, model: str) -> None:
        """Store the active provider and model (what ``POST /provider`` chose)."""
        self.set_setting("active", json.dumps([provider, model]))

    def get_active(self) -> tuple[str, str] | None:
        """The stored active provider and model, or None if never chosen."""
        raw = self.get_setting("active")
        if raw is None:
            return None
        try:
            provider, model = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(provider, str) or not isinstance(model, str):
            return None
        return provider, model
