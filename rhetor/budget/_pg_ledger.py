"""
The budget ledger in PostgreSQL, shared by every Rhetor process on the database.

:class:`PostgresLedger` is the PostgreSQL :class:`~rhetor.budget._interfaces.BudgetLedger`.
Its tables are the SQLite ledger's (``entries``, ``reservations``,
``limits``, ``settings``) plus ``owners``, ``reservation_ids``,
``spend_hours`` and ``spend_days`` (the charges' cost per UTC hour and day,
provider and component, kept by triggers on ``entries``, which the
reservation check sums instead of the month's charges), created by the
numbered steps of :data:`LEDGER_MIGRATIONS`.

Budgets across processes are one atomic step: :meth:`PostgresLedger.reserve_checked`
takes ``pg_advisory_xact_lock(BUDGET_LOCK)``, reads the limits and policy in
force, sums the spend since each period's start and every open reservation
(of every process) in one statement, decides each claim of the batch, and
inserts those granted, all in one transaction. Reservations therefore
serialise on that lock, a batch at a time; nothing checks in one
transaction and inserts in another.

Settling is one statement (so one transaction): the reservations are
deleted, locked in id order, then the charges inserted, so a crash leaves
one or the other. A group commit's charges and checked reservations go in
one transaction of two round trips (:meth:`PostgresLedger.settle_and_reserve`),
its rows as one JSON parameter to statements prepared once per connection
(``_pg_ledger_sql``). A reservation has at most one charge (a
unique index on ``entries.reservation_id``).

Owners and the sweeper: every runtime registers its owner id in ``owners``
with a lock key, and holds ``pg_advisory_lock(OWNER_LOCKS, key)`` on a
connection of its own (:class:`OwnerLease`) for as long as it runs. The lock
ends with the connection, so a process killed with -9 (or cut off from the
database) loses it at once, and :meth:`PostgresLedger.sweep` takes exactly
the reservations whose owner holds no lock: each becomes an ``interrupted``
charge at its worst case. A process that was only cut off and settles one of
them later replaces that interrupted charge with the real one in place
(``ON CONFLICT (reservation_id) DO UPDATE``); a settle and a sweep racing for
one reservation wait for each other's row lock, so it is billed exactly once.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import ClassVar

import attrs
from psycopg import pq

from rhetor._errors import ValidationError
from rhetor.budget._interfaces import (
    GroupBy,
    LedgerEntry,
    ReservationRow,
    UsageRow,
    clean_text,
    limit_key,
    limit_scope,
)
from rhetor.budget._ledger_schema import RESERVATION_FIELDS
from rhetor.budget._pg_batch import Read, decide, reserve_and_commit, rules_and_sums, spend_starts
from rhetor.budget._pg_ledger_schema import BUDGET_LOCK, LEDGER_MIGRATIONS, OWNER_LOCKS
from rhetor.budget._pg_ledger_sql import (
    _ENTRY_COLUMNS,
    _FORGET_DEAD_OWNERS,
    _GROUP_COLUMNS,
    _RESERVE,
    _SETTLE,
    _SPEND_BY_COMPONENT,
    _SPENT,
    _SPENT_BY_PROVIDER,
    _SWEEP,
    _VACUUM_RESERVATIONS,
    _charges_json,
    _execute_prepared,
    _json_rows,
    _spend_args,
    _spent_args,
    _values,
)
from rhetor.budget._pg_ledger_trio import TrioBatches
from rhetor.budget._pg_owners import OwnerLease
from rhetor.budget._rules import (
    Claim,
    Decision,
    Period,
    check_period,
)
from rhetor.storage._pg import PgDatabase, pg_text

__all__ = [
    "BUDGET_LOCK",
    "LEDGER_MIGRATIONS",
    "OWNER_LOCKS",
    "OwnerLease",
    "PostgresLedger",
]

log = logging.getLogger("rhetor.budget")


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
    # The hot group commits, written on trio (see _pg_ledger_trio); only the keeper's writer uses it.
    trio_batches: TrioBatches = attrs.field(
        init=False, default=attrs.Factory(lambda self: TrioBatches(self.db), takes_self=True)
    )

    def broken(self) -> str | None:
        """Never: a broken connection goes back to the pool, which replaces it."""
        return None

    def close(self) -> None:
        """Close the connections of :attr:`trio_batches`; the pool belongs to the runtime."""
        self.trio_batches.close()

    def checkpoint(self) -> None:
        """
        Vacuum ``reservations`` (the keeper runs this every ``SHARED_CHECKPOINT_EVERY`` commits).

        Every request inserts a reservation and deletes it when it settles,
        and every checked batch sums the table whole, so its dead rows are
        read by every batch until a vacuum frees their pages. Autovacuum
        wakes once a minute at most (``autovacuum_naptime``): at 2,500
        requests a second, two workers' batches slowed by a third within 40
        seconds. Vacuumed every 100 commits, the table stays a few dozen
        pages. ``SKIP_LOCKED``: when another process is vacuuming it, this
        one skips; ``TRUNCATE false``: a vacuum never takes the exclusive
        lock that would stall reservations (its freed pages are reused).
        """
        with self.db.connection("vacuumed") as conn:
            conn.execute(_VACUUM_RESERVATIONS)

    # -- charges ---------------------------------------------------------------

    def record(self, entry: LedgerEntry) -> None:
        """Store one charge (see :meth:`record_many`)."""
        self.record_many((entry,))

    def record_many(self, entries: Iterable[LedgerEntry]) -> None:
        """
        Store a batch of charges in one statement (so one transaction): all of them, or none.

        The reservations they name are deleted first (locked in id order),
        then the charges are inserted: one charge per reservation (a second
        is skipped, except that a real charge replaces the sweeper's
        interrupted one) and one per charge id.
        """
        charges = _charges_json(entries)
        if charges is not None:
            with self.db.connection("written") as conn:
                conn.execute(_SETTLE, {"charges": charges})

    def record_progress(self, progress: Mapping[int, tuple[int, float]]) -> None:
        """Note how far streams got on their open reservations, in one statement."""
        if not progress:
            return
        values = [
            v for rid, (tokens, cost) in sorted(progress.items()) for v in (rid, tokens, cost)
        ]
        with self.db.connection("written") as conn:
            conn.execute(
                "UPDATE reservations r SET used_output = v.tokens, used_cost = v.cost FROM"
                f" (VALUES {_values(3, len(progress))}) AS v (id, tokens, cost)"
                " WHERE r.id = v.id::bigint AND v.tokens::bigint >= r.used_output",
                values,
            )

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
        """
        Total USD cost of the charges at or after ``since``, of one provider or of all.

        Read as the reservation check reads it: whole days from ``spend_days``,
        the hours before them from ``spend_hours``, the first partial hour from
        the charges (see ``_pg_ledger_sql._spent_sql``).
        ``GET /budget`` and the metrics' sampling ask for a dozen of these.
        Rounded to a millionth of a millionth of a dollar: an hour's total is a
        running sum (a charge that replaces another subtracts it), and its
        float noise (1e-17) is not spend.
        """
        statement = _SPENT if provider is None else _SPENT_BY_PROVIDER
        args = _spent_args(since, None if provider is None else pg_text(provider))
        with self.db.connection("read") as conn:
            row = conn.execute(statement, args).fetchone()
        return round(float(row[0]), 12) if row else 0.0

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
        """Store a batch of open reservations, unchecked, in one statement: all or none."""
        rows = list(reservations)
        if rows:
            with self.db.connection("written") as conn:
                conn.execute(_RESERVE, {"reservations": _json_rows(rows, RESERVATION_FIELDS)})

    def reserve_checked(
        self,
        claims: Sequence[tuple[ReservationRow, Claim]],
        *,
        policy: str,
        limits: Mapping[tuple[Period, str | None], float],
        starts: Mapping[Period, float],
    ) -> list[Decision]:
        """Decide each claim against every limit and record those granted (see :meth:`settle_and_reserve`)."""
        return self.settle_and_reserve((), claims, policy=policy, limits=limits, starts=starts)

    def settle_and_reserve(
        self,
        entries: Iterable[LedgerEntry],
        claims: Sequence[tuple[ReservationRow, Claim]],
        *,
        policy: str,
        limits: Mapping[tuple[Period, str | None], float],
        starts: Mapping[Period, float],
    ) -> list[Decision]:
        """
        Store charges (as :meth:`record_many`), then decide each claim and record those granted.

        One transaction, in two round trips, each one simple query: first
        ``BEGIN``, ``pg_advisory_xact_lock(BUDGET_LOCK)``, the stored limits
        and policy, and one statement that writes the charges and sums (one
        snapshot, so a charge replacing its reservation meanwhile is seen
        whole or not at all) the spend since each period's start and every
        open reservation, as the charges leave them; then, after the
        decisions, the insert of those granted and ``COMMIT``, which releases
        the lock. The statements are prepared once per connection and
        executed with their rows as escaped JSON literals. Without claims the
        charges are one statement of their own (:meth:`record_many`) and
        take no lock.
        """
        pairs = list(claims)
        charges = _charges_json(entries)
        if not pairs:
            if charges is not None:
                with self.db.connection("written") as conn:
                    conn.execute(_SETTLE, {"charges": charges})
            return []
        starts_list = spend_starts(starts)
        with self.db.connection("written") as conn:
            # A block that raises leaves the transaction to the connection, which rolls it back.
            escaping = pq.Escaping(conn.pgconn)
            cursor = _execute_prepared(conn, rules_and_sums(escaping, charges, starts_list))
            cursor.nextset()  # the lock
            cursor.nextset()
            stored_policy = cursor.fetchone()
            cursor.nextset()
            limit_rows = cursor.fetchall()
            cursor.nextset()
            read = Read.of(policy, limits, stored_policy, limit_rows, cursor.fetchall())
            if components := read.components():
                args = _spend_args(starts_list, components)
                read.add_components(conn.execute(_SPEND_BY_COMPONENT, args).fetchall())
            decisions, granted = decide(read, pairs)
            conn.execute(reserve_and_commit(escaping, granted))
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
        Settle every reservation whose owner holds no lease, as interrupted.

        Each is billed at its stream's recorded progress (input and output so
        far, never more than the worst case), else at its worst case.

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

    def set_limit(
        self,
        period: Period,
        amount: float,
        provider: str | None = None,
        *,
        component: str | None = None,
    ) -> None:
        """Set the USD limit for a period, overall, for one provider or for one component."""
        check_period(period)
        provider, component = (pg_text(k) for k in limit_key(provider, component))
        if (
            isinstance(amount, bool)
            or not isinstance(amount, int | float)
            or not math.isfinite(amount)
            or amount < 0
        ):
            raise ValidationError("amount", "must be a finite, non-negative number")
        with self.db.connection("written") as conn:
            conn.execute(
                "INSERT INTO limits (period, provider, component, amount) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (period, provider, component) DO UPDATE SET amount = excluded.amount",
                (period, provider, component, float(amount)),
            )

    def clear_limit(
        self, period: Period, provider: str | None = None, *, component: str | None = None
    ) -> bool:
        """Remove a limit; True if there was one."""
        check_period(period)
        provider, component = (pg_text(k) for k in limit_key(provider, component))
        with self.db.connection("written") as conn:
            cursor = conn.execute(
                "DELETE FROM limits WHERE period = %s AND provider = %s AND component = %s",
                (period, provider, component),
            )
            return cursor.rowcount > 0

    def get_limits(self) -> dict[tuple[Period, str | None], float]:
        """Every limit, keyed by (period, scope): None for all, a provider, or ``component:NAME``."""
        with self.db.connection("read") as conn:
            return {
                (period, limit_scope(provider, component)): float(amount)
                for period, provider, component, amount in conn.execute(
                    "SELECT period, provider, component, amount FROM limits"
                    " ORDER BY period, provider, component"
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
