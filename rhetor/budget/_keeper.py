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
messages concurrently (``max_concurrency``), each waiting for its commit.

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
of them per group commit, and every write runs in a worker thread. The
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

import contextlib
import functools
import logging
import math
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any, ClassVar

import anyio
import attrs

import actors
from rhetor._errors import BudgetExceeded, RhetorError, ServiceUnavailable, ValidationError
from rhetor._settings import POLICIES, BudgetPolicy
from rhetor.budget._accounts import (
    PERIODS,
    Accounts,
    Claim,
    Decision,
    Period,
    component_of,
    component_scope,
    period_start,
    usd,
)
from rhetor.budget._commits import Rules, Write, write_batch
from rhetor.budget._interfaces import BudgetLedger, LedgerEntry, ReservationRow
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
from rhetor.budget._spool import ChargeSpool
from rhetor.budget._unrecorded import Unrecorded, transient

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

_MAX_TOKENS = 2**63 - 1
# Commits between checkpoints: a few pages each, so the log stays near the
# 1,000 pages at which SQLite would checkpoint by itself.
_CHECKPOINT_EVERY = 250
# Seconds between attempts to write the charges an outage kept from the ledger.
_REWRITE_EVERY = 1.0
# Reservation ids claimed from the ledger at a time (see BudgetLedger.claim_reservation_ids).
_ID_BLOCK = 1024


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _finite_amount(value: Any) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and math.isfinite(value)
        and value >= 0
    )


def spend_entry(entry: LedgerEntry) -> SpendEntry:
    """A ledger row as a report shows it (no charge, reservation or row ids)."""
    time = datetime.fromtimestamp(entry.ts, UTC).isoformat().replace("+00:00", "Z")
    return {
        "time": time,
        "ts": entry.ts,
        "request_id": entry.request_id,
        "component": entry.component,
        "context_id": entry.context_id,
        "provider": entry.provider,
        "model": entry.model,
        "input_tokens": entry.input_tokens,
        "output_tokens": entry.output_tokens,
        "total_tokens": entry.input_tokens + entry.output_tokens,
        "cost": entry.cost,
        "status": entry.status,
        "billed": entry.billed,
    }


def token_count(value: Any) -> int | None:
    """A usable token count: a whole number from 0 (a finite float is rounded), else None."""
    if type(value) is int:
        return value if 0 <= value <= _MAX_TOKENS else None
    if type(value) is float and math.isfinite(value) and 0 <= value <= _MAX_TOKENS:
        return round(value)
    return None


@attrs.define(eq=False)
class BudgetKeeper(actors.Actor):
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

    # Opens the ledger; called twice per incarnation, for the writer and the reader.
    _open_ledger: Callable[[], BudgetLedger] = attrs.field(alias="ledger")
    _policy: BudgetPolicy = attrs.field(alias="policy", kw_only=True)
    _limits: Mapping[str, float] = attrs.field(alias="limits", kw_only=True)
    # The runtime this keeper serves: one id per process start, the same for
    # every incarnation, so a restarted keeper knows its reservations.
    _owner: str = attrs.field(alias="owner", kw_only=True)
    _now: Callable[[], datetime] = attrs.field(default=_utcnow, alias="now", kw_only=True)
    # The zone whose midnights start the periods (RHETOR_BUDGET_TIMEZONE).
    _tz: tzinfo = attrs.field(default=UTC, alias="tz", kw_only=True)
    # Seconds between a shared ledger's refreshes (lease, sweep, policy and limits).
    _refresh_interval: float = attrs.field(default=10.0, alias="refresh_interval", kw_only=True)
    _accounts: Accounts = attrs.field(init=False)
    # Whether other processes spend against the ledger (see the module's docstring).
    _shared: bool = attrs.field(init=False, default=False)
    _claiming: anyio.Lock = attrs.field(init=False, factory=anyio.Lock)
    _ledger: BudgetLedger | None = attrs.field(init=False, default=None)
    # Reads that may be long (usage reports, checkpoints) use a second
    # connection in a worker thread, one at a time.
    _reader: BudgetLedger | None = attrs.field(init=False, default=None)
    _reading: anyio.Lock = attrs.field(init=False, factory=anyio.Lock)
    # Invariant: ids claimed from the ledger and not yet given to a reservation.
    _ids: Iterator[int] = attrs.field(init=False, factory=lambda: iter(()))
    _active: tuple[str, str] | None = attrs.field(init=False, default=None)
    # Invariant: writes not yet taken by a commit; _wake is set while any wait.
    _writes: list[Write] = attrs.field(init=False, factory=list)
    _wake: anyio.Event = attrs.field(init=False, factory=anyio.Event)
    _commits_since_checkpoint: int = attrs.field(init=False, default=0)
    _invalid_charges: int = attrs.field(init=False, default=0)
    _failed_writes: int = attrs.field(init=False, default=0)
    # Charges an outage kept from the ledger, written again every second.
    _unrecorded: Unrecorded = attrs.field(init=False, factory=Unrecorded)
    # Where kept charges are also written to disk (see _spool); None: memory only.
    _spool_dir: Path | None = attrs.field(default=None, alias="spool", kw_only=True)
    _spool: ChargeSpool | None = attrs.field(init=False, default=None)
    _spooling: anyio.Lock = attrs.field(init=False, factory=anyio.Lock)

    def __attrs_post_init__(self) -> None:
        self._accounts = self._fresh_accounts()

    def _fresh_accounts(self) -> Accounts:
        accounts = Accounts(now=self._now, tz=self._tz)
        for period, amount in self._limits.items():
            accounts.set_limit(period, amount)
        return accounts

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

    def _read_rules(self, ledger: BudgetLedger, accounts: Accounts) -> BudgetPolicy | None:
        """The stored limits (over the environment's) into ``accounts``; answers the stored policy."""
        for (period, provider), amount in ledger.get_limits().items():
            try:
                accounts.set_limit(period, amount, provider)
            except ValidationError as exc:
                log.warning("ignoring a stored %s limit for %s: %s", period, provider, exc)
        stored_policy = ledger.get_policy()
        for policy in POLICIES:
            if stored_policy == policy:
                return policy
        return None

    def _load_spend(self, ledger: BudgetLedger, accounts: Accounts) -> None:
        """The spend of each current period, overall and per provider, into ``accounts``."""
        starts = accounts.period_starts()
        totals: list[tuple[Period, str | None, float]] = []
        for period, start in starts.items():
            since = start.timestamp()
            totals.append((period, None, ledger.spent(since)))
            totals += [(period, row.key, row.cost) for row in ledger.usage(since, "provider")]
            totals += [
                (period, component_scope(row.key), row.cost)
                for row in ledger.usage(since, "component")
                if row.key
            ]
        accounts.load(starts, totals)

    def _report(self, ledger: BudgetLedger) -> tuple[Accounts, BudgetPolicy | None]:
        """
        A shared ledger's totals now (in a worker thread): every process's spend and open
        reservations, and the stored policy.
        """
        accounts = self._fresh_accounts()
        policy = self._read_rules(ledger, accounts)
        for row in ledger.reservations():
            accounts.hold(row)
        self._load_spend(ledger, accounts)
        return accounts, policy

    async def _shared_report(self) -> Accounts:
        """:meth:`_report`, with the policy it read taken as this keeper's."""
        report: tuple[Accounts, BudgetPolicy | None] = await self._read(self._report)
        accounts, policy = report
        self._policy = policy or self._policy
        return accounts

    async def _refresh_loop(self) -> None:
        """
        A shared ledger, every ``refresh_interval`` s: renew the lease, sweep the dead, reread the rules.

        Error handling: a database that cannot be reached is logged; the next round tries again.
        """
        while True:
            await anyio.sleep(self._refresh_interval)
            try:
                limits, policy, active = await self._read(self._refresh)
            except ServiceUnavailable as exc:
                log.warning("budget refresh failed (the next one retries): %s", exc)
                continue
            self._accounts.replace_limits(limits)
            self._policy = policy or self._policy
            self._active = active

    def _refresh(
        self, ledger: BudgetLedger
    ) -> tuple[dict[tuple[str, str | None], float], BudgetPolicy | None, tuple[str, str] | None]:
        """In a worker thread: renew the lease, sweep, and read the limits, policy and active model."""
        swept, total = ledger.sweep(self._owner)
        if swept:
            log.warning(
                "settled %d reservations of processes that died as interrupted,"
                " at their worst case (%s in all)",
                swept,
                usd(total),
            )
        return self._current_rules(ledger)

    def _current_rules(
        self, ledger: BudgetLedger
    ) -> tuple[dict[tuple[str, str | None], float], BudgetPolicy | None, tuple[str, str] | None]:
        """In a worker thread: the stored limits (over the environment's), policy and active model."""
        accounts = self._fresh_accounts()
        policy = self._read_rules(ledger, accounts)
        return accounts.limits, policy, ledger.get_active()

    async def _reread_rules(self) -> tuple[str, str] | None:
        """
        A shared ledger's limits, policy and active model, read again now; answers the active model.

        What another process changed (heard through ``RefreshRules``). Error
        handling: a database that cannot be reached is StorageUnavailable,
        and the rules stay as they were.
        """
        if self._shared:
            limits, policy, active = await self._read(self._current_rules)
            self._accounts.replace_limits(limits)
            self._policy = policy or self._policy
            self._active = active
        return self._active

    async def stopping(self) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(5.0):
            await self._commit()
            if self._unrecorded.pending:
                log.error(
                    "stopping with %d charges (%s) the ledger could not take; %s",
                    self._unrecorded.pending,
                    usd(self._unrecorded.pending_cost),
                    "they are lost"
                    if self._spool is None
                    else f"the next start on this data directory writes them ({self._spool.path})",
                )
            if self._spool is not None:
                with contextlib.suppress(OSError):
                    await anyio.to_thread.run_sync(self._spool.close)
            async with self._reading:
                for ledger in (self._ledger, self._reader):
                    if ledger is not None:
                        await anyio.to_thread.run_sync(ledger.close)

    @property
    def ledger(self) -> BudgetLedger:
        assert self._ledger is not None, "used before started()"
        return self._ledger

    async def _read(self, fn: Callable[[BudgetLedger], Any]) -> Any:
        """Run a read on the reader connection in a worker thread."""
        assert self._reader is not None, "used before started()"
        reader = self._reader
        async with self._reading:
            return await anyio.to_thread.run_sync(fn, reader)

    # -- group commit ------------------------------------------------------

    def _queue(self, write: Write) -> None:
        self._writes.append(write)
        self._wake.set()

    async def _commit_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            await self._commit()
            if self._commits_since_checkpoint >= _CHECKPOINT_EVERY:
                self._commits_since_checkpoint = 0
                # Writes wait meanwhile: a checkpoint that races no writer
                # copies the whole log, so the next commit starts it over.
                await self._checkpoint()

    async def _commit(self) -> None:
        """
        Write every queued change, then apply and answer them.

        A SQLite ledger is written on the event loop's own thread, on purpose:
        a WAL commit with synchronous=NORMAL only appends to the log (no
        fsync), which costs less than handing the work to a worker thread and
        waiting for the busy loop to notice it finished. Writes that arrive
        while the loop is busy elsewhere all go into the next commit. A shared
        ledger waits on a network, so its batch is written in a worker thread;
        what arrives meanwhile goes into the next batch.
        """
        batch, self._writes = self._writes, []
        if not batch:
            return
        if self._shared:
            rules = Rules(
                self._policy,
                dict(self._limits_default()),
                {p: start.timestamp() for p, start in self._accounts.period_starts().items()},
            )
            await anyio.to_thread.run_sync(write_batch, self.ledger, batch, rules)
        else:
            write_batch(self.ledger, batch)
        self._commits_since_checkpoint += 1
        for write in batch:
            if write.release is not None:
                if write.error is not None and transient(write.error):
                    self._unrecorded.release(write.release)
                elif write.error is None:
                    self._unrecorded.released(write.release)
            if write.error is not None:
                self._failed_writes += 1
            elif write.charge is not None:
                if write.written:
                    self._accounts.apply_charge(write.charge)
                self._unrecorded.written(write.charge)
            write.done.set()

    async def _adopt_kept_charges(self, spool: ChargeSpool) -> None:
        """Keep the charges processes that died kept on disk; they are written with this keeper's."""
        self._spool = spool
        try:
            async with self._spooling:
                adopted = await anyio.to_thread.run_sync(spool.adopt)
        except OSError as exc:
            log.error("cannot read the kept charges under %s: %s", spool.directory, exc)
            return
        for entry in adopted:
            self._unrecorded.keep(entry)
        if adopted:
            log.warning(
                "took over %d charges (%s) that a process which died kept from the ledger",
                len(adopted),
                usd(sum(e.cost for e in adopted)),
            )

    async def _spool_kept(self, entries: list[LedgerEntry]) -> None:
        """Write kept charges to disk before their settles are answered (see _spool)."""
        spool = self._spool
        if spool is None:
            return
        try:
            async with self._spooling:
                await anyio.to_thread.run_sync(spool.append, entries)
        except OSError as exc:
            log.error("kept charges stay in memory only: %s: %s", spool.path, exc)

    async def _rewrite_loop(self) -> None:
        """
        Every second, write again the charges an outage kept from the ledger (see _unrecorded).

        Each goes into the next group commit as a retried settle, so a charge
        that did reach the ledger after all is not recorded twice.
        """
        while True:
            await anyio.sleep(_REWRITE_EVERY)
            due = self._unrecorded.due()
            releases = self._unrecorded.releases_due()
            if not due and not releases:
                continue
            writes = [Write(charge=entry, retry=True) for entry in due]
            writes += [Write(release=reservation_id) for reservation_id in releases]
            for write in writes:
                self._queue(write)
            for write in writes:
                await write.done.wait()
            late = sum(1 for w in writes if w.error is None and w.charge is not None)
            if not self._unrecorded.pending and self._spool is not None:
                spool = self._spool
                async with self._spooling:
                    with contextlib.suppress(OSError):
                        await anyio.to_thread.run_sync(spool.clear)
            if late:
                log.warning(
                    "wrote %d charges the ledger could not take before; %d still wait",
                    late,
                    self._unrecorded.pending,
                )

    def _limits_default(self) -> dict[tuple[Period, str | None], float]:
        """The environment's limits, which a stored limit replaces."""
        return {(p, None): float(a) for p, a in self._limits.items() if p in PERIODS and a}

    async def _checkpoint(self) -> None:
        """The ledger's housekeeping (SQLite: copy its log into the file), in a worker thread."""
        try:
            await self._read(lambda reader: reader.checkpoint())
        except ServiceUnavailable as exc:
            log.warning("ledger checkpoint failed (the next one retries): %s", exc)

    # -- messages ----------------------------------------------------------

    async def handle(self, message: Any) -> Any:
        if isinstance(message, Reserve):
            return await self._reserve(message)
        if isinstance(message, Settle):
            return await self._settle(message)
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
        if not _finite_amount(since):
            raise ValidationError("since", "must be a finite number of seconds from 0")
        if type(limit) is not int or not 1 <= limit <= ENTRIES_LIMIT:
            raise ValidationError("limit", f"must be a whole number from 1 to {ENTRIES_LIMIT}")
        rows = await self._read(lambda reader: reader.entries(float(since), limit=limit))
        return [spend_entry(row) for row in rows]

    async def _current_status(self) -> BudgetStatus:
        if self._shared:
            return self._status(await self._shared_report())
        return self._status()

    async def _store(self, write: Callable[..., None], *args: Any) -> None:
        """
        Write a setting now: on the loop like a commit (one small SQLite transaction), or
        in a worker thread for a shared ledger.

        Error handling: a failed write is :class:`ServiceUnavailable`, the setting unchanged.
        """
        try:
            if self._shared:
                await anyio.to_thread.run_sync(lambda: write(*args))
            else:
                write(*args)
        except ServiceUnavailable as exc:
            self._failed_writes += 1
            log.error("could not store a budget setting: %s", exc)
            raise

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

    def _reservations_required(self) -> bool:
        # Another process may set a limit or the policy at any time on a shared ledger.
        return self._shared or (self._policy != "ignore" and self._accounts.limited)

    async def _reserve(self, message: Reserve) -> Reservation:
        if not _finite_amount(message.amount):
            raise ValidationError("amount", "must be a finite amount from 0")
        known = self._accounts.held_by_key(message.key)
        if known is not None:
            # A retry of a reserve already durable (the keeper restarted between).
            row, warning = known
            return _granted(row, message, warning)
        output_tokens = token_count(message.output_tokens) or 0
        claim = Claim(
            message.provider,
            float(message.amount),
            output_tokens,
            message.output_price if _finite_amount(message.output_price) else 0.0,
            token_count(message.min_output_tokens),
            message.component or None,
        )
        if self._shared:
            # Free claims too: under enforce a budget already spent refuses even those.
            return await self._reserve_shared(message, claim)
        # The check and the hold below run with no checkpoint between them.
        decision = self._accounts.decide(self._policy, claim)
        if decision.refused:
            raise _exceeded(decision, message)
        warning = decision.warning
        row = self._row(message, decision, await self._next_reservation_id())
        # Held before it is written, with no checkpoint since the check: every
        # concurrent reserve already counts it. (The claim of ids above is a
        # checkpoint only on a shared ledger, which does not come here.)
        self._accounts.hold(row, warning)
        if row.amount == 0:
            # Holds no headroom (a free model), so losing it reopens nothing:
            # not worth a commit on the request's path.
            return _granted(row, message, warning)
        write = Write(reservation=row)
        await self._wait_written(write, row)
        if write.error is not None:
            log.error("could not record reservation %s: %s", row.id, write.error)
            if transient(write.error):
                # Its commit may have happened with only the answer lost.
                self._unrecorded.release(row.id)
            if self._policy == "enforce":
                self._accounts.forget(row.id)
                raise _again(write.error)
        return _granted(row, message, warning)

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
                raise _again(write.error)
            # Not recorded (or released once the database answers): warn and ignore serve anyway.
            return _granted(row, message, None)
        decision = write.decision
        assert decision is not None, "a checked reservation was written without a decision"
        if decision.refused:
            raise _exceeded(decision, message)
        row = attrs.evolve(row, output_tokens=decision.output_tokens, amount=decision.amount)
        if row.amount:
            self._accounts.hold(row, decision.warning)
        return _granted(row, message, decision.warning)

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
        if not _finite_amount(cost) or inputs is None or outputs is None:
            self._invalid_charges += 1
            held = self._accounts.held(message.reservation_id)
            if message.worst_case is not None and _finite_amount(message.worst_case):
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
        if type(rid) is not int or rid < 1 or tokens is None or not _finite_amount(message.cost):
            log.warning("dropped a stream's progress with bad numbers: %r", message)
            return
        self._queue(Write(progress=(rid, tokens, float(message.cost))))

    async def _settle(self, message: Settle) -> float:
        entry = self._entry(message)
        write = Write(charge=entry, retry=message.retry)
        # Once queued the charge is recorded and counted even if the asker leaves.
        self._queue(write)
        await write.done.wait()
        if write.error is not None:
            if transient(write.error):
                # The database is out of reach: keep the charge and write it when it answers.
                self._unrecorded.keep(entry)
                await self._spool_kept([entry])
                log.warning(
                    "the ledger cannot take the charge of %s (%s) now; kept, to be written"
                    " when it answers (%d waiting): %s",
                    message.request_id,
                    usd(entry.cost),
                    self._unrecorded.pending,
                    write.error,
                )
                return entry.cost
            log.error("could not record the charge of %s: %s", message.request_id, write.error)
            raise _again(write.error)
        return entry.cost

    def _status(self, accounts: Accounts | None = None) -> BudgetStatus:
        return {
            "policy": self._policy,
            "periods": (accounts or self._accounts).status(),
            "reservations_required": self._reservations_required(),
            "ledger_errors": {
                "invalid_charges": self._invalid_charges,
                "failed_writes": self._failed_writes,
                "unrecorded_charges": self._unrecorded.kept,
                "pending_charges": self._unrecorded.pending,
            },
        }


def _again(error: ServiceUnavailable) -> ServiceUnavailable:
    """
    A fresh error of the same kind as ``error`` (StorageUnavailable stays itself) for one asker.

    One failed commit answers every write of its batch; each asker raises its own copy.
    """
    again = type(error)(error.message, field=error.field)
    again.__cause__ = error.__cause__
    return again


def _granted(row: ReservationRow, message: Reserve, warning: str | None) -> Reservation:
    """The answer to a granted reserve; ``output_tokens`` set only when fewer were granted."""
    asked = token_count(message.output_tokens) or 0
    clamped = row.output_tokens if row.amount and row.output_tokens < asked else None
    return Reservation(row.id, row.provider, row.amount, warning, clamped)


def _exceeded(decision: Decision, message: Reserve) -> BudgetExceeded:
    over = decision.over
    assert over is not None, "a refusal names the limit it breaks"
    return BudgetExceeded(
        f"{over.describe()}: request for {message.provider}/{message.model} refused",
        period=over.period,
        limit=over.limit,
        spent=over.spent,
        provider=over.provider if component_of(over.provider) is None else None,
        component=component_of(over.provider),
    )
