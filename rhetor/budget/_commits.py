"""
Group commits: how the BudgetKeeper writes a batch of changes to its ledger.

Every reservation, charge and release that arrives while one commit runs goes
into the next, as at most one statement of each kind. One row the database
refuses must never keep the others out, so a failed batch is retried row by
row, and only the rows that fail again carry the error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import anyio
import attrs

from rhetor._errors import ServiceUnavailable
from rhetor.budget._interfaces import BudgetLedger, LedgerEntry, ReservationRow
from rhetor.budget._rules import Claim, Decision, Period

__all__ = [
    "Rules",
    "SettlesAndReserves",
    "SettlesAndReservesOnTrio",
    "Write",
    "takes_on_trio",
    "write_batch",
    "write_batch_on_trio",
]

log = logging.getLogger("rhetor.budget")


@attrs.define(eq=False)
class Write:
    """
    One change waiting for a group commit, and the event its handler waits on.

    Exactly one of ``reservation``, ``charge``, ``release`` and ``progress`` is set. A
    reservation with a ``claim`` is checked by the ledger as it is written
    (a shared ledger's ``reserve_checked``), and gets its ``decision``.
    """

    reservation: ReservationRow | None = None
    claim: Claim | None = None
    decision: Decision | None = None
    charge: LedgerEntry | None = None
    release: int | None = None
    # A streamed request's progress: (reservation id, output tokens so far, their cost).
    progress: tuple[int, int, float] | None = None
    retry: bool = False
    done: anyio.Event = attrs.field(factory=anyio.Event)
    error: ServiceUnavailable | None = None
    # False for a charge that was already recorded (a retried settle).
    written: bool = True
    # Called with the write once its commit ended (after ``done`` is set), in
    # the commit's own task: how a settle is answered without a task waiting on
    # ``done`` (``BudgetKeeper.handle_now``). It must not raise or await.
    answer: Callable[[Write], None] | None = None


@runtime_checkable
class SettlesAndReserves(Protocol):
    """A ledger that writes charges and checked reservations in one transaction (PostgreSQL)."""

    def settle_and_reserve(
        self,
        entries: Iterable[LedgerEntry],
        claims: Sequence[tuple[ReservationRow, Claim]],
        *,
        policy: str,
        limits: Mapping[tuple[Period, str | None], float],
        starts: Mapping[Period, float],
    ) -> list[Decision]:
        """Record ``entries`` (as ``record_many``), then decide and record ``claims`` (as ``reserve_checked``)."""
        ...


@runtime_checkable
class SettlesAndReservesOnTrio(Protocol):
    """A writer of checked reservations and charges in one transaction, on trio (PostgreSQL's)."""

    @property
    def ready(self) -> bool:
        """Whether to write through it now (else through the ledger in a worker thread)."""
        ...

    def close(self) -> None:
        """Close the connections it keeps between batches; it opens others if used again."""
        ...

    async def settle_and_reserve(
        self,
        entries: Iterable[LedgerEntry],
        claims: Sequence[tuple[ReservationRow, Claim]],
        *,
        policy: str,
        limits: Mapping[tuple[Period, str | None], float],
        starts: Mapping[Period, float],
    ) -> list[Decision]:
        """As :meth:`SettlesAndReserves.settle_and_reserve`."""
        ...


@attrs.frozen
class Rules:
    """What checked reservations are decided by, unless the ledger stores others: the environment's."""

    policy: str
    limits: dict[tuple[Period, str | None], float]
    # The epoch second each current period began.
    starts: dict[Period, float]


def write_batch(ledger: BudgetLedger, batch: list[Write], rules: Rules | None = None) -> None:
    """
    Write ``batch`` with at most one statement (or transaction) for each kind of change.

    Reservations with a claim are decided and written by ``reserve_checked``
    under ``rules``; on a ledger that :class:`SettlesAndReserves` (PostgreSQL),
    by ``settle_and_reserve``, in one transaction with the batch's charges,
    which then fail with them. On a ledger that is not ``shared`` a failed batch is
    retried row by row, so that one row the database refuses keeps no other
    out; on a shared one a failure is the database's, not a row's (every
    row is checked before it is built), and fails the batch's rows at once
    rather than wait out a deadline per row.

    Error handling: a row that cannot be written gets the error on its own
    :class:`Write`; nothing is raised. A retried charge already in the ledger
    is marked not ``written``.
    """
    per_row = not ledger.shared
    checked = [w for w in batch if w.reservation and w.claim]
    charges = _charges(ledger, batch)
    if checked and charges and isinstance(ledger, SettlesAndReserves):
        # One transaction for both: on a shared ledger a batch's cost is its round trips.
        _decide(ledger, checked, rules, charges)
        charges = []
    elif checked:
        _decide(ledger, checked, rules)
    _isolated(
        ledger.reserve_many,
        [w for w in batch if w.reservation and not w.claim],
        lambda w: w.reservation,
        per_row,
    )
    progress: dict[int, tuple[int, float]] = {}
    for write in batch:
        if write.progress is not None:
            rid, tokens, cost = write.progress
            # Notes may arrive out of order: the furthest one counts.
            if tokens >= progress.get(rid, (-1, 0.0))[0]:
                progress[rid] = (tokens, cost)
    if progress:
        try:
            ledger.record_progress(progress)
        except ServiceUnavailable as exc:
            # Only the sweeper reads it: it then bills the worst case instead.
            log.error("could not record the progress of %d streams: %s", len(progress), exc)
    _isolated(ledger.record_many, charges, lambda w: w.charge, per_row)
    releasing = [w for w in batch if w.release is not None]
    releases = [w.release for w in releasing if w.release is not None]
    try:
        ledger.release(releases)
    except ServiceUnavailable as exc:
        # They stay in the ledger until a release is written again, or the
        # next start settles them as interrupted.
        log.error("could not release reservations %s: %s", releases, exc)
        for write in releasing:
            write.error = exc


def takes_on_trio(batch: list[Write]) -> bool:
    """
    Whether :func:`write_batch_on_trio` writes ``batch``: only checked reservations and new charges.

    What a steady load is made of. Anything else (a release, a stream's
    progress, an unchecked reservation, a charge retried after an outage)
    goes through :func:`write_batch`.
    """
    # A write is exactly one change (see Write): a release or progress matches neither.
    return all(
        (w.reservation is not None and w.claim is not None)
        or (w.charge is not None and not w.retry)
        for w in batch
    )


async def write_batch_on_trio(
    ledger: BudgetLedger, writer: SettlesAndReservesOnTrio, batch: list[Write], rules: Rules
) -> None:
    """
    :func:`write_batch` for a batch :func:`takes_on_trio`, in one transaction written by ``writer``.

    Error handling: as a shared ledger's batch, a failure is the database's
    and goes on every write of the batch; nothing is raised.
    """
    checked = [w for w in batch if w.reservation and w.claim]
    charges = _charges(ledger, batch)
    claims = [(w.reservation, w.claim) for w in checked if w.reservation and w.claim]
    try:
        decisions = await writer.settle_and_reserve(
            [w.charge for w in charges if w.charge],
            claims,
            policy=rules.policy,
            limits=rules.limits,
            starts=rules.starts,
        )
    except ServiceUnavailable as exc:
        for write in [*checked, *charges]:
            write.error = exc
        return
    for write, decision in zip(checked, decisions, strict=True):
        write.decision = decision


def _charges(ledger: BudgetLedger, batch: list[Write]) -> list[Write]:
    """
    The batch's charges to write: each charge id once, and no retried one the ledger already has.

    Those skipped are marked not ``written``. Error handling: a lookup that
    fails is logged, and the retried charges are written anyway (the ledger
    records a charge id at most once).
    """
    retried = [w.charge.charge_id for w in batch if w.charge and w.retry and w.charge.charge_id]
    seen: set[str | None] = set()
    if retried:
        try:
            seen.update(ledger.recorded_charges(c for c in retried if c))
        except ServiceUnavailable as exc:
            log.error("could not look up retried charges: %s", exc)
    charges: list[Write] = []
    for write in batch:
        if write.charge is None:
            continue
        charge_id = write.charge.charge_id
        if charge_id is not None and charge_id in seen:
            write.written = False
            continue
        seen.add(charge_id)
        charges.append(write)
    return charges


def _decide(
    ledger: BudgetLedger,
    writes: list[Write],
    rules: Rules | None,
    charges: list[Write] | None = None,
) -> None:
    """
    Decide and store checked reservations in one transaction; a failure fails them all.

    With ``charges`` (on a ledger that :class:`SettlesAndReserves`) the
    charges are written first in the same transaction, and fail with it.
    """
    if rules is None:
        raise ValueError("checked reservations need the rules they are decided by")
    claims = [(w.reservation, w.claim) for w in writes if w.reservation and w.claim]
    try:
        if charges:
            assert isinstance(ledger, SettlesAndReserves)
            decisions = ledger.settle_and_reserve(
                [w.charge for w in charges if w.charge],
                claims,
                policy=rules.policy,
                limits=rules.limits,
                starts=rules.starts,
            )
        else:
            decisions = ledger.reserve_checked(
                claims, policy=rules.policy, limits=rules.limits, starts=rules.starts
            )
    except ServiceUnavailable as exc:
        for write in [*writes, *(charges or ())]:
            write.error = exc
        return
    for write, decision in zip(writes, decisions, strict=True):
        write.decision = decision


def _isolated(
    store_many: Callable[[list[Any]], None],
    writes: list[Write],
    row: Callable[[Write], Any],
    per_row: bool = True,
) -> None:
    """
    Store the rows of ``writes`` in one call; if that fails (and ``per_row``), each alone.
    """
    if not writes:
        return
    try:
        store_many([row(w) for w in writes])
        return
    except ServiceUnavailable as exc:
        if len(writes) == 1 or not per_row:
            for write in writes:
                write.error = exc
            return
        log.error(
            "a ledger batch of %d rows failed (%s); writing them one by one", len(writes), exc
        )
    for write in writes:
        try:
            store_many([row(write)])
        except ServiceUnavailable as exc:
            write.error = exc
