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

In-memory totals mirror the ledger: they change only after a commit, and a
restarted keeper rebuilds them from it, with the reservations its runtime
(``owner``) still holds. Reservations of any other owner belong to a process
that died; :meth:`Ledger.sweep` settles them at their worst case as
``interrupted`` when the keeper starts.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

import anyio
import attrs

import actors
from rhetor._errors import BudgetExceeded, RhetorError, ServiceUnavailable, ValidationError
from rhetor._settings import POLICIES, BudgetPolicy
from rhetor._types import Usage
from rhetor.budget._accounts import PERIODS, Accounts, Period, period_start, usd
from rhetor.budget._ledger import Billed, GroupBy, Ledger, LedgerEntry, ReservationRow

__all__ = [
    "PERIODS",
    "BudgetKeeper",
    "CheckBudget",
    "GetActiveModel",
    "GetBudget",
    "GetBudgetMode",
    "GetUsage",
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


@attrs.frozen
class Reserve:
    """
    Reserve ``amount`` USD for one request; answers a :class:`Reservation` once it is durable.

    ``input_tokens`` and ``output_tokens`` are the worst case the amount
    prices; they become the charge if the request's process dies. A retried
    reserve with the same non-empty ``key`` answers the reservation the first
    attempt made (the keeper may have restarted between the two).
    """

    request_id: str
    provider: str
    model: str
    amount: float
    input_tokens: int = 0
    output_tokens: int = 0
    component: str | None = None
    context_id: str | None = None
    key: str = ""


@attrs.frozen
class Reservation:
    """A granted reservation, and the warning to pass on under the ``warn`` policy."""

    id: int
    provider: str
    amount: float
    warning: str | None = None


@attrs.frozen
class Settle:
    """
    Replace a reservation with what the request actually cost; answers the cost once durable.

    ``worst_case`` is billed instead of ``cost`` when the cost or the usage is
    not a finite, non-negative number. A non-empty ``charge_id`` is recorded at
    most once, so a settle retried after a keeper restart is never billed twice.
    """

    reservation_id: int
    request_id: str
    provider: str
    model: str
    component: str | None
    context_id: str | None
    usage: Usage
    cost: float
    status: Literal["ok", "partial", "failed"] = "ok"
    billed: Billed = "usage"
    worst_case: float | None = None
    charge_id: str = ""
    retry: bool = False


@attrs.frozen
class CheckBudget:
    """Would ``amount`` on ``provider`` fit? Answers ``(under_budget, warning)``."""

    provider: str
    amount: float


@attrs.frozen
class GetBudget:
    """Answers the status of every period (spent, reserved, limit, remaining, policy)."""


@attrs.frozen
class GetUsage:
    """Answers usage rows for a period, grouped by provider, model, component or context."""

    period: Period
    group_by: GroupBy


@attrs.frozen
class SetLimit:
    """Set a period's limit, globally or for one provider; 0 removes it."""

    period: Period
    amount: float
    provider: str | None = None


@attrs.frozen
class SetPolicy:
    """Set the policy: ignore, warn or enforce."""

    policy: BudgetPolicy


@attrs.frozen
class GetBudgetMode:
    """
    Answers whether reservations are needed: only when a limit exists and the
    policy is not ``ignore`` can a reservation be refused or carry a warning.
    """


@attrs.frozen
class GetActiveModel:
    """Answers the stored active ``(provider, model)``, or None."""


@attrs.frozen
class StoreActiveModel:
    """Store the active provider and model, so that a restart keeps them; answers None."""

    provider: str
    model: str


@attrs.define(eq=False)
class _Write:
    """One change waiting for a group commit, and the event its handler waits on."""

    reservation: ReservationRow | None = None
    charge: LedgerEntry | None = None
    release: int | None = None
    retry: bool = False
    done: anyio.Event = attrs.field(factory=anyio.Event)
    error: sqlite3.Error | None = None
    # False for a charge that was already recorded (a retried settle).
    written: bool = True


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _finite_amount(value: Any) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and math.isfinite(value)
        and value >= 0
    )


def token_count(value: Any) -> int | None:
    """A usable token count: a whole number from 0 (a finite float is rounded), else None."""
    if type(value) is int:
        return value if 0 <= value <= _MAX_TOKENS else None
    if type(value) is float and math.isfinite(value) and 0 <= value <= _MAX_TOKENS:
        return round(value)
    return None


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

    def __init__(
        self,
        path: Path,
        *,
        policy: BudgetPolicy,
        limits: dict[str, float],
        owner: str,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._path = path
        # The runtime this keeper serves: one id per process start, the same
        # for every incarnation, so a restarted keeper knows its reservations.
        self._owner = owner
        self._now = now
        self._policy: BudgetPolicy = policy
        self._accounts = Accounts(now=now)
        for period, amount in limits.items():
            self._accounts.set_limit(period, amount)
        self._ledger: Ledger | None = None
        # Invariant: above every reservation id ever written to the ledger.
        self._next_id = 1
        self._active: tuple[str, str] | None = None
        # Invariant: writes not yet taken by a commit; _wake is set while any wait.
        self._writes: list[_Write] = []
        self._wake = anyio.Event()
        # Reads that may be long (usage reports, checkpoints) use a second
        # connection in a worker thread, one at a time.
        self._reader: Ledger | None = None
        self._reading = anyio.Lock()
        self._commits_since_checkpoint = 0
        self._invalid_charges = 0
        self._failed_writes = 0

    async def started(self) -> None:
        self._ledger, self._reader = await anyio.to_thread.run_sync(self._open_ledger)
        self.task_group.start_soon(self._commit_loop)

    def _open_ledger(self) -> tuple[Ledger, Ledger]:
        """In a worker thread, before any message: two connections, the sweep, the accounts."""
        ledger = Ledger(self._path)
        try:
            reader = Ledger(self._path)
            try:
                self._load(ledger)
            except BaseException:
                reader.close()
                raise
        except BaseException:
            ledger.close()
            raise
        return ledger, reader

    def _load(self, ledger: Ledger) -> None:
        """Settle dead runtimes' reservations, then load limits, settings, spend and our own."""
        # Commits run on the event loop; a checkpoint (which syncs the file)
        # must not, so the writer never checkpoints by itself (_checkpoint).
        ledger.disable_autocheckpoint()
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
        self._next_id = ledger.last_reservation_id() + 1
        for (period, provider), amount in ledger.get_limits().items():
            try:
                self._accounts.set_limit(period, amount, provider)
            except ValidationError as exc:
                log.warning("ignoring a stored %s limit for %s: %s", period, provider, exc)
        stored_policy = ledger.get_policy()
        for policy in POLICIES:
            if stored_policy == policy:
                self._policy = policy
        self._active = ledger.get_active()
        starts = self._accounts.period_starts()
        totals: list[tuple[Period, str | None, float]] = []
        for period, start in starts.items():
            since = start.timestamp()
            totals.append((period, None, ledger.spent(since)))
            totals += [(period, row.key, row.cost) for row in ledger.usage(since, "provider")]
        self._accounts.load(starts, totals)

    async def stopping(self) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(5.0):
            self._commit()
            async with self._reading:
                for ledger in (self._ledger, self._reader):
                    if ledger is not None:
                        await anyio.to_thread.run_sync(ledger.close)

    @property
    def ledger(self) -> Ledger:
        assert self._ledger is not None, "used before started()"
        return self._ledger

    async def _read(self, fn: Callable[[Ledger], Any]) -> Any:
        """Run a read on the reader connection in a worker thread."""
        assert self._reader is not None, "used before started()"
        reader = self._reader
        async with self._reading:
            return await anyio.to_thread.run_sync(fn, reader)

    # -- group commit ------------------------------------------------------

    def _queue(self, write: _Write) -> None:
        self._writes.append(write)
        self._wake.set()

    async def _commit_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            self._commit()
            if self._commits_since_checkpoint >= _CHECKPOINT_EVERY:
                self._commits_since_checkpoint = 0
                # Writes wait meanwhile: a checkpoint that races no writer
                # copies the whole log, so the next commit starts it over.
                await self._checkpoint()

    def _commit(self) -> None:
        """
        Write every queued change, then apply and answer them.

        On the event loop's own thread, on purpose: a WAL commit with
        synchronous=NORMAL only appends to the log (no fsync), which costs
        less than handing the work to a worker thread and waiting for the
        busy loop to notice it finished. Writes that arrive while the loop is
        busy elsewhere all go into the next commit.
        """
        batch, self._writes = self._writes, []
        if not batch:
            return
        self._write_batch(batch)
        self._commits_since_checkpoint += 1
        for write in batch:
            if write.error is not None:
                self._failed_writes += 1
            elif write.charge is not None and write.written:
                self._accounts.apply_charge(write.charge)
            write.done.set()

    def _write_batch(self, batch: list[_Write]) -> None:
        """At most one statement for each kind of change."""
        ledger = self.ledger
        _isolated(ledger.reserve_many, [w for w in batch if w.reservation], lambda w: w.reservation)
        retried = [w.charge.charge_id for w in batch if w.charge and w.retry and w.charge.charge_id]
        seen: set[str | None] = set()
        if retried:
            try:
                seen.update(ledger.recorded_charges(c for c in retried if c))
            except sqlite3.Error as exc:
                log.error("could not look up retried charges: %s", exc)
        charges: list[_Write] = []
        for write in batch:
            if write.charge is None:
                continue
            charge_id = write.charge.charge_id
            if charge_id is not None and charge_id in seen:
                write.written = False
                continue
            seen.add(charge_id)
            charges.append(write)
        _isolated(ledger.record_many, charges, lambda w: w.charge)
        releases = [w.release for w in batch if w.release is not None]
        try:
            ledger.release(releases)
        except sqlite3.Error as exc:
            # They stay in the ledger; the next start settles them as interrupted.
            log.error("could not release reservations %s: %s", releases, exc)

    async def _checkpoint(self) -> None:
        """Move the write-ahead log into the database file, in a worker thread."""
        try:
            await self._read(Ledger.checkpoint)
        except sqlite3.Error as exc:
            log.warning("ledger checkpoint failed (the next one retries): %s", exc)

    # -- messages ----------------------------------------------------------

    async def handle(self, message: Any) -> Any:
        if isinstance(message, Reserve):
            return await self._reserve(message)
        if isinstance(message, Settle):
            return await self._settle(message)
        if isinstance(message, CheckBudget):
            over = self._accounts.over(message.provider, message.amount)
            return over is None, None if over is None else over.describe()
        if isinstance(message, GetBudget):
            return self._status()
        if isinstance(message, GetUsage):
            since = period_start(message.period, self._now()).timestamp()
            group_by = message.group_by
            rows = await self._read(lambda reader: reader.usage(since, group_by))
            return [attrs.asdict(r) for r in rows]
        if isinstance(message, SetLimit):
            before = self._accounts.limit(message.period, message.provider)
            self._accounts.set_limit(message.period, message.amount, message.provider)
            try:
                self._store(self.ledger.set_limit, message.period, message.amount, message.provider)
            except ServiceUnavailable:
                self._accounts.set_limit(message.period, before, message.provider)
                raise
            return self._status()
        if isinstance(message, GetBudgetMode):
            return self._reservations_required()
        if isinstance(message, SetPolicy):
            if message.policy not in POLICIES:
                raise ValidationError("policy", f"must be one of {', '.join(POLICIES)}")
            self._store(self.ledger.set_policy, message.policy)
            self._policy = message.policy
            return self._status()
        if isinstance(message, GetActiveModel):
            return self._active
        if isinstance(message, StoreActiveModel):
            self._store(self.ledger.set_active, message.provider, message.model)
            self._active = (message.provider, message.model)
            return None
        raise TypeError(f"BudgetKeeper cannot handle {type(message).__name__}")

    def _store(self, write: Callable[..., None], *args: Any) -> None:
        """
        Write a setting now, on the loop like a commit (it is one small transaction).

        Error handling: a failed write is :class:`ServiceUnavailable`, the setting unchanged.
        """
        try:
            write(*args)
        except sqlite3.Error as exc:
            self._failed_writes += 1
            log.error("could not store a budget setting: %s", exc)
            raise ServiceUnavailable(f"the budget ledger cannot be written: {exc}") from exc

    def _reservations_required(self) -> bool:
        return self._policy != "ignore" and self._accounts.limited

    async def _reserve(self, message: Reserve) -> Reservation:
        if not _finite_amount(message.amount):
            raise ValidationError("amount", "must be a finite amount from 0")
        known = self._accounts.held_by_key(message.key)
        if known is not None:
            # A retry of a reserve already durable (the keeper restarted between).
            row, warning = known
            return Reservation(row.id, row.provider, row.amount, warning)
        warning = None
        if self._policy != "ignore":
            over = self._accounts.over(message.provider, message.amount)
            if over is not None:
                if self._policy == "enforce":
                    raise BudgetExceeded(
                        f"{over.describe()}: request for {message.provider}/{message.model} refused",
                        period=over.period,
                        limit=over.limit,
                        spent=over.spent,
                        provider=over.provider,
                    )
                warning = over.describe()
        row = ReservationRow(
            id=self._next_id,
            key=message.key,
            owner=self._owner,
            ts=self._now().timestamp(),
            request_id=message.request_id,
            provider=message.provider,
            model=message.model,
            component=message.component or "",
            context_id=message.context_id,
            input_tokens=token_count(message.input_tokens) or 0,
            output_tokens=token_count(message.output_tokens) or 0,
            amount=float(message.amount),
        )
        self._next_id += 1
        # Held before it is written, with no checkpoint since the check: every
        # concurrent reserve already counts it.
        self._accounts.hold(row, warning)
        if row.amount == 0:
            # Holds no headroom (a free model), so losing it reopens nothing:
            # not worth a commit on the request's path.
            return Reservation(row.id, row.provider, row.amount, warning)
        write = _Write(reservation=row)
        self._queue(write)
        try:
            await write.done.wait()
        except BaseException:
            # The asker left: nobody will call the provider for it or settle it.
            self._accounts.forget(row.id)
            if write in self._writes:
                self._writes.remove(write)
            else:
                self._queue(_Write(release=row.id))
            raise
        if write.error is not None:
            log.error("could not record reservation %s: %s", row.id, write.error)
            if self._policy == "enforce":
                self._accounts.forget(row.id)
                raise ServiceUnavailable(f"the budget ledger cannot be written: {write.error}")
        return Reservation(row.id, row.provider, row.amount, warning)

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

    async def _settle(self, message: Settle) -> float:
        entry = self._entry(message)
        write = _Write(charge=entry, retry=message.retry)
        # Once queued the charge is recorded and counted even if the asker leaves.
        self._queue(write)
        await write.done.wait()
        if write.error is not None:
            log.error("could not record the charge of %s: %s", message.request_id, write.error)
            raise ServiceUnavailable(f"the budget ledger cannot be written: {write.error}")
        return entry.cost

    def _status(self) -> dict[str, Any]:
        return {
            "policy": self._policy,
            "periods": self._accounts.status(),
            "reservations_required": self._reservations_required(),
            "ledger_errors": {
                "invalid_charges": self._invalid_charges,
                "failed_writes": self._failed_writes,
            },
        }


def _isolated(
    store_many: Callable[[list[Any]], None], writes: list[_Write], row: Callable[[_Write], Any]
) -> None:
    """
    Store the rows of ``writes`` in one call; if that fails, each alone.

    One bad row must never keep the others out, so a failed batch is retried
    row by row and only the rows that fail again carry the error.
    """
    if not writes:
        return
    try:
        store_many([row(w) for w in writes])
        return
    except sqlite3.Error as exc:
        if len(writes) == 1:
            writes[0].error = exc
            return
        log.error(
            "a ledger batch of %d rows failed (%s); writing them one by one", len(writes), exc
        )
    for write in writes:
        try:
            store_many([row(write)])
        except sqlite3.Error as exc:
            write.error = exc
