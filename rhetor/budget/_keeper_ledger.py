"""
The BudgetKeeper's state and its ledger side: reads, refreshes, settings and group commits.

:class:`KeeperLedger` is the base of :class:`~rhetor.budget._keeper.BudgetKeeper`
(see that module for what the keeper guarantees): it holds the keeper's
fields, reads the ledger (on the reader connection, in a worker thread),
refreshes a shared ledger's rules, stores settings, and runs the group
commit and the rewriting of charges an outage kept from the ledger. The
message handlers (reserve, settle, reports) are in ``_keeper``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any

import anyio
import attrs

import actors
from rhetor._errors import ServiceUnavailable, ValidationError
from rhetor._settings import POLICIES, BudgetPolicy
from rhetor.budget._accounts import Accounts
from rhetor.budget._commits import (
    Rules,
    SettlesAndReservesOnTrio,
    Write,
    takes_on_trio,
    write_batch,
    write_batch_on_trio,
)
from rhetor.budget._interfaces import BudgetLedger, LedgerEntry
from rhetor.budget._keeper_values import utcnow
from rhetor.budget._messages import BudgetStatus
from rhetor.budget._rules import PERIODS, Period, component_scope, usd
from rhetor.budget._spool import ChargeSpool
from rhetor.budget._unrecorded import Unrecorded, transient

__all__ = ["KeeperLedger"]

log = logging.getLogger("rhetor.budget")

# Commits between checkpoints: a few pages each, so the log stays near the
# 1,000 pages at which SQLite would checkpoint by itself.
_CHECKPOINT_EVERY = 250
# Seconds between attempts to write the charges an outage kept from the ledger.
_REWRITE_EVERY = 1.0
# Group commits a shared ledger may have in flight at once (see _pipelined_commits).
SHARED_COMMITS_IN_FLIGHT = 2
# A shared ledger's commits between housekeepings (PostgreSQL: a vacuum of the
# reservations, which every commit churns; see PostgresLedger.checkpoint).
SHARED_CHECKPOINT_EVERY = 100


@attrs.define(eq=False)
class KeeperLedger(actors.Actor):
    """The BudgetKeeper's fields and ledger side; the actor is its subclass ``BudgetKeeper``."""

    # Opens the ledger; called twice per incarnation, for the writer and the reader.
    _open_ledger: Callable[[], BudgetLedger] = attrs.field(alias="ledger")
    _policy: BudgetPolicy = attrs.field(alias="policy", kw_only=True)
    _limits: Mapping[str, float] = attrs.field(alias="limits", kw_only=True)
    # The runtime this keeper serves: one id per process start, the same for
    # every incarnation, so a restarted keeper knows its reservations.
    _owner: str = attrs.field(alias="owner", kw_only=True)
    _now: Callable[[], datetime] = attrs.field(default=utcnow, alias="now", kw_only=True)
    # The zone whose midnights start the periods (RHETOR_BUDGET_TIMEZONE).
    _tz: tzinfo = attrs.field(default=UTC, alias="tz", kw_only=True)
    # Seconds between a shared ledger's refreshes (lease, sweep, policy and limits).
    _refresh_interval: float = attrs.field(default=10.0, alias="refresh_interval", kw_only=True)
    _accounts: Accounts = attrs.field(init=False)
    # Whether other processes spend against the ledger (see _keeper's docstring).
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
    # Group commits that wrote anything since the keeper started, their writes and seconds.
    _commits: int = attrs.field(init=False, default=0)
    _committed_writes: int = attrs.field(init=False, default=0)
    _commit_seconds: float = attrs.field(init=False, default=0.0)
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

    @property
    def _on_trio(self) -> SettlesAndReservesOnTrio | None:
        """The ledger's writer of hot batches on trio (PostgreSQL's), if it has one."""
        writer = getattr(self._ledger, "trio_batches", None)
        return writer if isinstance(writer, SettlesAndReservesOnTrio) else None

    async def _commit_loop(self) -> None:
        if self._shared:
            try:
                await self._pipelined_commits()
            finally:
                # The loop ends (a crash, a stop) only once no commit is in
                # flight; a crashed incarnation never reaches stopping().
                if (writer := self._on_trio) is not None:
                    writer.close()
            return
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            await self._commit()
            if self._commits_since_checkpoint >= _CHECKPOINT_EVERY:
                self._commits_since_checkpoint = 0
                # Writes wait meanwhile: a checkpoint that races no writer
                # copies the whole log, so the next commit starts it over.
                await self._checkpoint()

    async def _pipelined_commits(self) -> None:
        """
        A shared ledger's group commits, up to ``SHARED_COMMITS_IN_FLIGHT`` at once.

        One commit on PostgreSQL spends much of its time away from this
        process: the round trips and the database's own commit. With one at a time the next batch
        waits all that while, and the further the database the longer (see
        docs/storage.md for what two bought at 0, 2 and 5 ms round trips);
        with two, the next batch is on its way while the first commits.
        Each commit takes the writes queued when it starts, so no write is
        in two batches. The ledger decides every claim under its budget lock
        inside the transaction (see ``_pg_ledger``), so two batches of one
        process are serialised there exactly as two processes' batches are,
        and nothing here depends on their order: the in-memory totals are a
        report, and each write is answered when its own batch is durable.
        """
        slots = anyio.Semaphore(SHARED_COMMITS_IN_FLIGHT)
        tidying = False

        async def commit() -> None:
            try:
                await self._commit()
            finally:
                slots.release()

        async def tidy() -> None:
            nonlocal tidying
            try:
                await self._checkpoint()
            finally:
                tidying = False

        async with anyio.create_task_group() as commits:
            while True:
                await self._wake.wait()
                self._wake = anyio.Event()
                await slots.acquire()
                commits.start_soon(commit)
                # The housekeeping runs beside the commits (on the reader's
                # connection), one at a time: nothing waits for it.
                if self._commits_since_checkpoint >= SHARED_CHECKPOINT_EVERY and not tidying:
                    self._commits_since_checkpoint = 0
                    tidying = True
                    commits.start_soon(tidy)

    async def _commit(self) -> None:
        """
        Write every queued change, then apply and answer them.

        A SQLite ledger is written on the event loop's own thread, on purpose:
        a WAL commit with synchronous=NORMAL only appends to the log (no
        fsync), which costs less than handing the work to a worker thread and
        waiting for the busy loop to notice it finished. Writes that arrive
        while the loop is busy elsewhere all go into the next commit. A shared
        ledger waits on a network: a batch of checked reservations and new
        charges is sent from the event loop with libpq's non-blocking calls
        (``_pg_ledger_trio``), any other in a worker thread; what arrives
        meanwhile goes into the next batch.
        """
        batch, self._writes = self._writes, []
        if not batch:
            return
        began = time.perf_counter()
        if self._shared:
            rules = Rules(
                self._policy,
                dict(self._limits_default()),
                {p: start.timestamp() for p, start in self._accounts.period_starts().items()},
            )
            on_trio = self._on_trio
            if on_trio is not None and on_trio.ready and takes_on_trio(batch):
                # Like the worker thread's write, it runs to its end (its own deadline bounds it).
                with anyio.CancelScope(shield=True):
                    await write_batch_on_trio(self.ledger, on_trio, batch, rules)
            else:
                await anyio.to_thread.run_sync(write_batch, self.ledger, batch, rules)
        else:
            write_batch(self.ledger, batch)
        if not any(write.error is not None and transient(write.error) for write in batch):
            # Housekeeping counts the commits the database took: during an
            # outage every commit fails at once, and so would a checkpoint.
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
            if write.answer is not None:
                write.answer(write)
        self._commits += 1
        self._committed_writes += len(batch)
        self._commit_seconds += time.perf_counter() - began

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
        """
        The ledger's housekeeping in a worker thread: SQLite copies its log into
        the file, PostgreSQL vacuums the reservations.
        """
        try:
            await self._read(lambda reader: reader.checkpoint())
        except ServiceUnavailable as exc:
            log.warning("ledger checkpoint failed (the next one retries): %s", exc)

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

    def _reservations_required(self) -> bool:
        # Another process may set a limit or the policy at any time on a shared ledger.
        return self._shared or (self._policy != "ignore" and self._accounts.limited)

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
            "ledger_commits": {
                "commits": self._commits,
                "writes": self._committed_writes,
                "seconds": self._commit_seconds,
            },
        }
