"""
Group commits: how the BudgetKeeper writes a batch of changes to its ledger.

Every reservation, charge and release that arrives while one commit runs goes
into the next, as at most one statement of each kind. One row the database
refuses must never keep the others out, so a failed batch is retried row by
row, and only the rows that fail again carry the error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
import attrs

from rhetor._errors import ServiceUnavailable
from rhetor.budget._interfaces import BudgetLedger, LedgerEntry, ReservationRow
from rhetor.budget._rules import Claim, Decision, Period

__all__ = ["Rules", "Write", "write_batch"]

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
    under ``rules``. On a ledger that is not ``shared`` a failed batch is
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
    if checked:
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


def _decide(ledger: BudgetLedger, writes: list[Write], rules: Rules | None) -> None:
    """Decide and store checked reservations in one transaction; a failure fails them all."""
    if rules is None:
        raise ValueError("checked reservations need the rules they are decided by")
    try:
        decisions = ledger.reserve_checked(
            [(w.reservation, w.claim) for w in writes if w.reservation and w.claim],
            policy=rules.policy,
            limits=rules.limits,
            starts=rules.starts,
        )
    except ServiceUnavailable as exc:
        for write in writes:
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
