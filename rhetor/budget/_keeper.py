"""
BudgetKeeper: the actor that keeps spending inside its limits.

Enforcement is by reservation. Before a request is sent, the router reserves
its worst-case cost (all of ``max_tokens`` produced); the keeper grants it only
if spent + reserved + this request stays within every limit. The check and
the grant happen without a checkpoint between them, so concurrent requests can
never jointly overspend. After the call the router settles the reservation
with the actual cost.

Durability: a reservation is answered only once its row is in the ledger, and
a charge only once its row is (the row replaces the reservation in one
statement). Writes are group-committed: every reservation and charge that
arrives while one commit runs goes into the next, so the keeper handles its
messages concurrently (``max_concurrency``), each waiting for its commit; a
settle waits in no task at all: its handler queues the charge and returns an
``actors.Later``, which the commit that writes it resolves (``handle_now``).

What is cached in memory (:class:`~rhetor.budget._accounts.Accounts`): the
limits, the spend of each period overall and per provider, and every open
reservation, with the policy and the active model. They mirror the ledger:
they change only after a commit, and a restarted keeper rebuilds them from it,
with the reservations its runtime (``owner``) still holds. Reservations of
any other owner belong to a process that died; the ledger's ``sweep``
settles them at their worst case as ``interrupted`` when the keeper starts.
The check against them is right only while this keeper is the only one
spending against the ledger (SQLite: the runtime holds the data directory's
lock).

A ``shared`` ledger (PostgreSQL) is spent against by other processes too. The
keeper then decides nothing from memory: each reservation is a claim that the
ledger decides and records in one transaction (``reserve_checked``), a batch
of them per group commit, two group commits in flight at once
(``_keeper_ledger._pipelined_commits``); a batch of checked reservations
and new charges is sent from the event loop (``_pg_ledger_trio``), any
other write in a worker thread. The
in-memory totals become a report, read afresh from the ledger for
``GetBudget`` and ``CheckBudget``; the policy, limits and active model are
read again every ``refresh_interval`` seconds, when the keeper also renews
its owner's lease and sweeps the reservations of owners that died meanwhile.

Under ``enforce`` a reservation that does not fit may be granted with fewer
output tokens (its ``max_tokens`` clamped to the headroom left), down to the
claim's ``min_output_tokens``; the Router then asks the provider for no more.

The ledger is a :class:`~rhetor.budget._interfaces.BudgetLedger`, opened by
the ``ledger`` factory (twice: a writer and a reader for long reads).
"""

from __future__ import annotations

import functools
import logging
from typing import Any, ClassVar

import anyio
import attrs

import actors
from rhetor._errors import RhetorError, ServiceUnavailable, ValidationError
from rhetor._settings import POLICIES
from rhetor.budget._commits import Write
from rhetor.budget._interfaces import BudgetLedger, LedgerEntry, ReservationRow
from rhetor.budget._keeper_ledger import KeeperLedger
from rhetor.budget._keeper_values import (
    again,
    exceeded,
    finite_amount,
    granted,
    spend_entry,
    token_count,
)
from rhetor.budget._messages import (
    ENTRIES_LIMIT,
    BudgetStatus,
    CheckBudget,
    GetActiveModel,
    GetBudget,
    GetBudgetMode,
    GetEntries,
    GetUsage,
    Progress,
    RefreshRules,
    Reservation,
    Reserve,
    SetLimit,
    SetPolicy,
    Settle,
    SpendEntry,
    StoreActiveModel,
    UsageTotals,
)
from rhetor.budget._rules import PERIODS, Claim, Decision, period_start, usd
from rhetor.budget._spool import ChargeSpool
from rhetor.budget._unrecorded import transient

__all__ = [
    # The messages are re-exported: callers import them from here too.
    "PERIODS",
    "BudgetKeeper",
    "CheckBudget",
    "GetActiveModel",
    "GetBudget",
    "GetBudgetMode",
    "GetEntries",
    "GetUsage",
    "Progress",
    "RefreshRules",
    "Reservation",
    "Reserve",
    "SetLimit",
    "SetPolicy",
    "Settle",
    "StoreActiveModel",
    "token_count",
]

log = logging.getLogger("rhetor.budget")
# Reservation ids claimed from the ledger at a time (see BudgetLedger.claim_reservation_ids).
_ID_BLOCK = 1024


@attrs.define(eq=False)
class BudgetKeeper(KeeperLedger):
    """
    Grants, settles and reports spending against daily, weekly and monthly limits.

    Cancellation: a reserve whose asker leaves before it is answered is
    released (nobody will settle it); a settle whose asker leaves is still
    recorded. On stop, writes still queued are committed under a shielded
    scope with a deadline.

    Error handling: a refused reservation is a :class:`BudgetExceeded` answer;
    a bad limit or policy a :class:`ValidationError`. A cost or usage that is
    not a finite, non-negative number is logged, counted and billed at the
    worst case. A ledger write that fails is logged and counted and answers
    :class:`ServiceUnavailable` for its own rows only; under ``warn`` a
    reservation that could not be written is still granted.
    """

    errors: ClassVar[tuple[type[BaseException], ...]] = (RhetorError,)
    contained: ClassVar[tuple[type[Exception], ...]] = (Exception,)
    # Handlers wait for group commits; the bookkeeping itself never checkpoints.
    max_concurrency: ClassVar[int] = 100_000
    # Neither waits for anything: a settle queues its charge, and the commit
    # that writes it answers (actors.Later); a stream's progress is queued.
    immediate: ClassVar[tuple[type, ...]] = (Settle, Progress)

    async def started(self) -> None:
        self._ledger, self._reader = await anyio.to_thread.run_sync(self._open_ledgers)
        self._shared = self.ledger.shared
        if self._spool_dir is not None:
            await self._adopt_kept_charges(ChargeSpool(self._spool_dir, self._owner))
        self.task_group.start_soon(self._commit_loop)
        self.task_group.start_soon(self._rewrite_loop)
        if self._shared:
            self.task_group.start_soon(self._refresh_loop)

    def _open_ledgers(self) -> tuple[BudgetLedger, BudgetLedger]:
        """In a worker thread, before any message: two connections, the sweep, the accounts."""
        ledger = self._open_ledger()
        try:
            reader = self._open_ledger()
            try:
                self._load(ledger)
            except BaseException:
                reader.close()
                raise
        except BaseException:
            ledger.close()
            raise
        return ledger, reader

    def _load(self, ledger: BudgetLedger) -> None:
        """Settle dead runtimes' reservations, then load limits, settings, spend and our own."""
        swept, total = ledger.sweep(self._owner)
        if swept:
            log.warning(
                "settled %d reservations of a process that died as interrupted,"
                " at their worst case (%s in all)",
                swept,
                usd(total),
            )
        for row in ledger.reservations(self._owner):
            self._accounts.hold(row)
        if self._accounts.open_count:
            log.warning(
                "budget keeper restarted; %d reservations of in-flight requests stay open",
                self._accounts.open_count,
            )
        self._ids = iter(ledger.claim_reservation_ids(_ID_BLOCK))
        self._policy = self._read_rules(ledger, self._accounts) or self._policy
        self._active = ledger.get_active()
        self._load_spend(ledger, self._accounts)

    # -- messages ----------------------------------------------------------

    def handle_now(self, message: Any) -> Any:
        if isinstance(message, Settle):
            return self._settle(message)
        if isinstance(message, Progress):
            self._progress(message)
            return None
        raise TypeError(f"BudgetKeeper cannot handle {type(message).__name__} at once")

    async def handle(self, message: Any) -> Any:
        if isinstance(message, Reserve):
            return await self._reserve(message)
        if isinstance(message, Settle):
            return self._settle(message)
        if isinstance(message, Progress):
            self._progress(message)
            return None
        if isinstance(message, CheckBudget):
            accounts = await self._shared_report() if self._shared else self._accounts
            over = accounts.over(message.provider, message.amount)
            return over is None, None if over is None else over.describe()
        if isinstance(message, GetBudget):
            if self._shared:
                return self._status(await self._shared_report())
            return self._status()
        if isinstance(message, GetUsage):
            since = period_start(message.period, self._now(), self._tz).timestamp()
            group_by = message.group_by
            rows = await self._read(lambda reader: reader.usage(since, group_by))
            return [
                UsageTotals(
                    key=r.key,
                    requests=r.requests,
                    input_tokens=r.input_tokens,
                    output_tokens=r.output_tokens,
                    cost=r.cost,
                )
                for r in rows
            ]
        if isinstance(message, GetEntries):
            return await self._entries(message)
        if isinstance(message, SetLimit):
            return await self._set_limit(message)
        if isinstance(message, GetBudgetMode):
            return self._reservations_required()
        if isinstance(message, SetPolicy):
            if message.policy not in POLICIES:
                raise ValidationError("policy", f"must be one of {', '.join(POLICIES)}")
            await self._store(self.ledger.set_policy, message.policy)
            self._policy = message.policy
            return await self._current_status()
        if isinstance(message, GetActiveModel):
            return self._active
        if isinstance(message, RefreshRules):
            return await self._reread_rules()
        if isinstance(message, StoreActiveModel):
            await self._store(self.ledger.set_active, message.provider, message.model)
            self._active = (message.provider, message.model)
            return None
        raise TypeError(f"BudgetKeeper cannot handle {type(message).__name__}")

    async def _set_limit(self, message: SetLimit) -> BudgetStatus:
        """Set (0: remove) a limit overall, for a provider or for a component; stored first."""
        period, amount, provider, component = (
            message.period,
            message.amount,
            message.provider,
            message.component,
        )
        if provider is not None and component is not None:
            raise ValidationError("component", "a limit is for a provider or a component, not both")
        if component is not None and (not isinstance(component, str) or not component):
            raise ValidationError("component", "must be a non-empty name")
        before = self._accounts.limit(period, provider, component=component)
        self._accounts.set_limit(period, amount, provider, component=component)
        try:
            await self._store(
                functools.partial(self.ledger.set_limit, component=component),
                period,
                amount,
                provider,
            )
        except ServiceUnavailable:
            self._accounts.set_limit(period, before, provider, component=component)
            raise
        return await self._current_status()

    async def _entries(self, message: GetEntries) -> list[SpendEntry]:
        """The newest charges, read on the reader connection; a bad bound is a ValidationError."""
        since, limit = message.since, message.limit
        if not finite_amount(since):
            raise ValidationError("since", "must be a finite number of seconds from 0")
        if type(limit) is not int or not 1 <= limit <= ENTRIES_LIMIT:
            raise ValidationError("limit", f"must be a whole number from 1 to {ENTRIES_LIMIT}")
        rows = await self._read(lambda reader: reader.entries(float(since), limit=limit))
        return [spend_entry(row) for row in rows]

    async def _next_reservation_id(self) -> int:
        """
        The next id of the block claimed from the ledger; a new block when it is used up.

        On SQLite the claim is one small write on the loop, like a commit: no
        checkpoint comes between a reserve's check and its hold. A shared
        ledger is asked in a worker thread, one claim at a time. Error
        handling: a failed claim is :class:`ServiceUnavailable`, logged and counted.
        """
        reservation_id = next(self._ids, None)
        if reservation_id is not None:
            return reservation_id
        try:
            if not self._shared:
                self._ids = iter(self.ledger.claim_reservation_ids(_ID_BLOCK))
            else:
                async with self._claiming:
                    reservation_id = next(self._ids, None)
                    if reservation_id is not None:
                        return reservation_id
                    ledger = self.ledger
                    self._ids = iter(
                        await anyio.to_thread.run_sync(ledger.claim_reservation_ids, _ID_BLOCK)
                    )
        except ServiceUnavailable as exc:
            self._failed_writes += 1
            log.error("could not claim reservation ids: %s", exc)
            raise
        return next(self._ids)

    async def _reserve(self, message: Reserve) -> Reservation:
        if not finite_amount(message.amount):
            raise ValidationError("amount", "must be a finite amount from 0")
        known = self._accounts.held_by_key(message.key)
        if known is not None:
            # A retry of a reserve already durable (the keeper restarted between).
            row, warning = known
            return granted(row, message, warning)
        output_tokens = token_count(message.output_tokens) or 0
        claim = Claim(
            message.provider,
            float(message.amount),
            output_tokens,
            message.output_price if finite_amount(message.output_price) else 0.0,
            token_count(message.min_output_tokens),
            message.component or None,
        )
        if self._shared:
            # Free claims too: under enforce a budget already spent refuses even those.
            return await self._reserve_shared(message, claim)
        # The check and the hold below run with no checkpoint between them.
        decision = self._accounts.decide(self._policy, claim)
        if decision.refused:
            raise exceeded(decision, message)
        warning = decision.warning
        row = self._row(message, decision, await self._next_reservation_id())
        # Held before it is written, with no checkpoint since the check: every
        # concurrent reserve already counts it. (The claim of ids above is a
        # checkpoint only on a shared ledger, which does not come here.)
        self._accounts.hold(row, warning)
        if row.amount == 0:
            # Holds no headroom (a free model), so losing it reopens nothing:
            # not worth a commit on the request's path.
            return granted(row, message, warning)
        write = Write(reservation=row)
        await self._wait_written(write, row)
        if write.error is not None:
            log.error("could not record reservation %s: %s", row.id, write.error)
            if transient(write.error):
                # Its commit may have happened with only the answer lost.
                self._unrecorded.release(row.id)
            if self._policy == "enforce":
                self._accounts.forget(row.id)
                raise again(write.error)
        return granted(row, message, warning)

    async def _reserve_shared(self, message: Reserve, claim: Claim) -> Reservation:
        """
        Reserve on a shared ledger: the ledger decides and records the claim in one transaction.

        Error handling: a ledger that cannot be written fails the reserve
        under ``enforce`` (closed: nothing is spent that was not checked);
        under ``warn`` or ``ignore`` the request goes ahead unrecorded (its
        charge is kept if the settle cannot be written either).
        """
        try:
            reservation_id = await self._next_reservation_id()
        except ServiceUnavailable as exc:
            if self._policy == "enforce" or not transient(exc):
                raise
            log.warning(
                "the ledger is out of reach; %s/%s proceeds unreserved under %s",
                message.provider,
                message.model,
                self._policy,
            )
            return Reservation(0, message.provider, 0.0)
        row = self._row(message, None, reservation_id)
        write = Write(reservation=row, claim=claim)
        await self._wait_written(write, row)
        if write.error is not None:
            log.error("could not record reservation %s: %s", row.id, write.error)
            if transient(write.error):
                # Its commit may have happened with only the answer lost.
                self._unrecorded.release(row.id)
            if self._policy == "enforce":
                raise again(write.error)
            # Not recorded (or released once the database answers): warn and ignore serve anyway.
            return granted(row, message, None)
        decision = write.decision
        assert decision is not None, "a checked reservation was written without a decision"
        if decision.refused:
            raise exceeded(decision, message)
        row = attrs.evolve(row, output_tokens=decision.output_tokens, amount=decision.amount)
        if row.amount:
            self._accounts.hold(row, decision.warning)
        return granted(row, message, decision.warning)

    def _row(
        self, message: Reserve, decision: Decision | None, reservation_id: int
    ) -> ReservationRow:
        return ReservationRow(
            id=reservation_id,
            key=message.key,
            owner=self._owner,
            ts=self._now().timestamp(),
            request_id=message.request_id,
            provider=message.provider,
            model=message.model,
            component=message.component or "",
            context_id=message.context_id,
            input_tokens=token_count(message.input_tokens) or 0,
            output_tokens=(
                token_count(message.output_tokens) or 0
                if decision is None
                else decision.output_tokens
            ),
            amount=float(message.amount) if decision is None else decision.amount,
        )

    async def _wait_written(self, write: Write, row: ReservationRow) -> None:
        """Queue a reservation's write and wait for its commit; a leaving asker releases it."""
        self._queue(write)
        try:
            await write.done.wait()
        except BaseException:
            # The asker left: nobody will call the provider for it or settle it.
            self._accounts.forget(row.id)
            if write in self._writes:
                self._writes.remove(write)
            else:
                self._queue(Write(release=row.id))
            raise

    def _entry(self, message: Settle) -> LedgerEntry:
        """The ledger row of a settle; bad numbers are logged, counted and billed at the worst case."""
        cost, billed = message.cost, message.billed
        inputs = token_count(message.usage.input_tokens)
        outputs = token_count(message.usage.output_tokens)
        if not finite_amount(cost) or inputs is None or outputs is None:
            self._invalid_charges += 1
            held = self._accounts.held(message.reservation_id)
            if message.worst_case is not None and finite_amount(message.worst_case):
                fallback = float(message.worst_case)
            else:
                fallback = held.amount if held is not None else 0.0
            log.error(
                "charge for %s has cost %r and usage %r; billing the worst case %s",
                message.request_id,
                cost,
                message.usage,
                usd(fallback),
            )
            cost, billed = fallback, "worst_case"
        return LedgerEntry(
            ts=self._now().timestamp(),
            request_id=message.request_id,
            provider=message.provider,
            model=message.model,
            component=message.component or "",
            context_id=message.context_id,
            input_tokens=inputs or 0,
            output_tokens=outputs or 0,
            cost=float(cost),
            status=message.status,
            billed=billed,
            charge_id=message.charge_id or None,
            reservation_id=message.reservation_id or None,
        )

    def _progress(self, message: Progress) -> None:
        """Queue a stream's progress for the next group commit; bad numbers are dropped."""
        rid, tokens = message.reservation_id, token_count(message.output_tokens)
        if type(rid) is not int or rid < 1 or tokens is None or not finite_amount(message.cost):
            log.warning("dropped a stream's progress with bad numbers: %r", message)
            return
        self._queue(Write(progress=(rid, tokens, float(message.cost))))

    def _settle(self, message: Settle) -> actors.Later:
        """
        Queue the charge; answer its cost once the commit that writes it ends.

        No task waits for the commit: the commit loop answers (``_settled``).
        """
        entry = self._entry(message)
        later = actors.Later()
        # Once queued the charge is recorded and counted even if the asker leaves.
        self._queue(
            Write(
                charge=entry,
                retry=message.retry,
                answer=functools.partial(self._settled, message, entry, later),
            )
        )
        return later

    def _settled(
        self, message: Settle, entry: LedgerEntry, later: actors.Later, write: Write
    ) -> None:
        if write.error is None:
            later.resolve(entry.cost)
        else:
            self.task_group.start_soon(self._settle_failed, message, entry, later, write.error)

    async def _settle_failed(
        self, message: Settle, entry: LedgerEntry, later: actors.Later, error: ServiceUnavailable
    ) -> None:
        """
        Answer a settle whose commit failed: keep a charge the database could not take.

        Runs in the keeper's task group, not a handler: a bug here fails this
        settle alone (logged with its traceback), as a contained handler's would,
        rather than crashing the keeper.
        """
        try:
            await self._answer_failed_settle(message, entry, later, error)
        except Exception as exc:
            log.exception("answering the failed settle of %s failed", message.request_id)
            failure = ServiceUnavailable(f"could not record the charge: {type(exc).__name__}")
            failure.__cause__ = exc
            later.fail(failure)

    async def _answer_failed_settle(
        self, message: Settle, entry: LedgerEntry, later: actors.Later, error: ServiceUnavailable
    ) -> None:
        if transient(error):
            # The database is out of reach: keep the charge and write it when it answers.
            self._unrecorded.keep(entry)
            await self._spool_kept([entry])
            log.warning(
                "the ledger cannot take the charge of %s (%s) now; kept, to be written"
                " when it answers (%d waiting): %s",
                message.request_id,
                usd(entry.cost),
                self._unrecorded.pending,
                error,
            )
            later.resolve(entry.cost)
            return
        log.error("could not record the charge of %s: %s", message.request_id, error)
        later.fail(again(error))
