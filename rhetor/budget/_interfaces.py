"""
What the budget ledger holds, and :class:`BudgetLedger`, the interface of a store that keeps it.

The ledger keeps every charge (:class:`LedgerEntry`), every reservation a
request still holds (:class:`ReservationRow`), the limits and the runtime's
settings. SQLite (:class:`~rhetor.budget._ledger.SQLiteLedger`, one
process) and PostgreSQL (:class:`~rhetor.budget._pg_ledger.PostgresLedger`,
shared by any number of processes) implement it; the interface lives here,
beside the ledger, rather than in :mod:`rhetor.storage._interfaces`, because
its rows are the budget's (storage never imports budget).

Nothing non-finite, negative or non-integer reaches a store: :class:`LedgerEntry`
and :class:`ReservationRow` refuse it when built.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, Literal, Protocol, get_args

import attrs

from rhetor._errors import ValidationError
from rhetor.budget._rules import COMPONENT_SCOPE, Claim, Decision, Period, component_scope
from rhetor.storage._interfaces import Store

__all__ = [
    "Billed",
    "BudgetLedger",
    "Claim",
    "Decision",
    "GroupBy",
    "LedgerEntry",
    "ReservationRow",
    "Status",
    "UsageRow",
    "clean_text",
    "limit_key",
    "limit_scope",
]

# interrupted: the reservation of a request whose process died before it settled.
Status = Literal["ok", "partial", "failed", "interrupted"]
# What the cost was computed from: the usage the provider reported; that usage
# capped at the reservation because it was absurd for the request; or the
# reservation's worst case because the real usage is unknown or malformed.
Billed = Literal["usage", "capped", "worst_case"]
GroupBy = Literal["provider", "model", "component", "context"]

_STATUSES: tuple[str, ...] = get_args(Status)
_BILLED: tuple[str, ...] = get_args(Billed)
# The largest count a store must hold (SQLite's INTEGER is 64-bit signed).
_MAX_TOKENS = 2**63 - 1


_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(value: str) -> str:
    """
    ``value`` as valid Unicode: lone surrogates become U+FFFD.

    SQLite stores a lone surrogate as bytes that are not UTF-8, and every
    later read of that column then fails, so text is cleaned before it is stored.
    """
    if value.isascii():
        return value
    return _SURROGATE.sub("\ufffd", value)


def _clean_optional(value: str | None) -> str | None:
    return None if value is None else clean_text(value)


def _one_of(choices: tuple[str, ...]) -> Any:
    def check(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
        if value not in choices:
            raise ValidationError(attribute.name, f"must be one of {', '.join(choices)}")

    return check


def _tokens(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if type(value) is not int or not 0 <= value <= _MAX_TOKENS:
        raise ValidationError(attribute.name, f"must be a whole number from 0, got {value!r}")


def _usd(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValidationError(attribute.name, f"must be a finite amount from 0, got {value!r}")


@attrs.frozen
class LedgerEntry:
    """
    One call's cost, as the budget actor records it.

    ``id`` is None until the entry is stored; ``ts`` is UTC epoch seconds.
    ``charge_id`` makes recording idempotent (a second entry with the same one
    is ignored); ``reservation_id`` names the reservation this charge replaces.
    """

    request_id: str = attrs.field(converter=clean_text)
    provider: str = attrs.field(converter=clean_text)
    model: str = attrs.field(converter=clean_text)
    input_tokens: int = attrs.field(validator=_tokens)
    output_tokens: int = attrs.field(validator=_tokens)
    cost: float = attrs.field(validator=_usd)
    status: Status = attrs.field(default="ok", validator=_one_of(_STATUSES))
    component: str = attrs.field(default="", converter=clean_text)
    context_id: str | None = attrs.field(default=None, converter=_clean_optional)
    ts: float = attrs.field(factory=time.time)
    id: int | None = None
    billed: Billed = attrs.field(default="usage", validator=_one_of(_BILLED))
    charge_id: str | None = None
    reservation_id: int | None = None


@attrs.frozen
class ReservationRow:
    """
    One open reservation: the worst case a request may still spend.

    ``owner`` is the runtime that made it (one id per process start); ``key``
    lets a retried reserve find the reservation its first attempt made.
    """

    id: int
    key: str
    owner: str
    request_id: str = attrs.field(converter=clean_text)
    provider: str = attrs.field(converter=clean_text)
    model: str = attrs.field(converter=clean_text)
    input_tokens: int = attrs.field(validator=_tokens)
    output_tokens: int = attrs.field(validator=_tokens)
    amount: float = attrs.field(validator=_usd)
    component: str = attrs.field(default="", converter=clean_text)
    context_id: str | None = attrs.field(default=None, converter=_clean_optional)
    ts: float = attrs.field(factory=time.time)


@attrs.frozen
class UsageRow:
    """
    Usage summed over one group (a provider, model, component or context).

    ``key`` is None for entries without that attribute (e.g. no context).
    """

    key: str | None
    requests: int
    input_tokens: int
    output_tokens: int
    cost: float


def limit_key(provider: str | None, component: str | None) -> tuple[str, str]:
    """
    The stored key of a limit: (provider, component), '' where it applies to all.

    Error handling: ValidationError for both a provider and a component, or a
    provider named like a component's scope.
    """
    provider, component = clean_text(provider or ""), clean_text(component or "")
    if provider and component:
        raise ValidationError("component", "a limit is for a provider or a component, not both")
    if provider.startswith(COMPONENT_SCOPE):
        raise ValidationError("provider", f"must not start with {COMPONENT_SCOPE!r}")
    return provider, component


def limit_scope(provider: str, component: str) -> str | None:
    """The scope of a stored limit's key, as :meth:`BudgetLedger.get_limits` names it."""
    return component_scope(component) if component else (provider or None)


class BudgetLedger(Store, Protocol):
    """
    A store of charges, open reservations, limits and settings: what the BudgetKeeper keeps.

    The keeper owns two (a writer and a reader for long reads), each used one
    call at a time. Every write is atomic. Shared by several processes, a
    store keeps these promises, which no method here assumes away:

    - reservation ids come from :meth:`claim_reservation_ids`, which never
      gives an id twice, to any process;
    - :meth:`record_many` replaces each charge's reservation in the same
      transaction, and records a ``charge_id`` at most once, whoever retries it;
    - :meth:`sweep` settles only reservations whose owner is gone, at the
      progress :meth:`record_progress` noted (never above the worst case),
      else at the worst case; a reservation has at most one charge;
    - :meth:`reserve_checked` checks every limit against the spend and open
      reservations of every process and records the reservations that fit,
      in one transaction that no other reservation can interleave with.

    A ledger that is not ``shared`` (SQLite: one process holds it) lets the
    keeper decide reservations from its in-memory totals and call the writes
    (:meth:`reserve_many`, :meth:`record_many`, :meth:`release`,
    :meth:`claim_reservation_ids`, the settings) on the event loop's own
    thread, because a SQLite commit there costs less than a thread hop (see
    :class:`~rhetor.budget._keeper.BudgetKeeper`). A ``shared`` ledger
    (PostgreSQL) is spent against by other processes too, so the keeper
    reserves through :meth:`reserve_checked`, and its writes wait on a
    network: the keeper calls them from worker threads only (the store must
    be safe to use from several threads at once).

    Error handling: a value that cannot be stored is a :class:`ValidationError`;
    a failure of the database itself is :class:`~rhetor.ServiceUnavailable`
    (each store translates its driver's errors in one place), and nothing of
    that call is written.
    """

    # Whether other processes spend against this ledger (see above).
    shared: ClassVar[bool]

    def checkpoint(self) -> None:
        """
        Housekeeping the keeper runs in a worker thread every few hundred commits.

        SQLite copies its write-ahead log into the database file (the writes
        wait); PostgreSQL vacuums the reservations (beside the writes); a
        store with nothing to do does nothing.
        """
        ...

    # -- charges ---------------------------------------------------------------

    def record(self, entry: LedgerEntry) -> None:
        """
        Store one charge (see :meth:`record_many`).
        """
        ...

    def record_progress(self, progress: Mapping[int, tuple[int, float]]) -> None:
        """
        Note on open reservations how far their streams got: ``{id: (output tokens, cost)}``.

        What :meth:`sweep` bills if the request never settles. A count never
        goes down; a reservation already settled or released is skipped.
        """
        ...

    def record_many(self, entries: Iterable[LedgerEntry]) -> None:
        """
        Store a batch of charges atomically: all of them, or none.

        A charge whose ``charge_id`` is already stored is skipped; a charge
        with a ``reservation_id`` deletes that reservation in the same transaction.
        """
        ...

    def recorded_charges(self, charge_ids: Iterable[str]) -> set[str]:
        """
        Which of ``charge_ids`` are already stored.
        """
        ...

    def entries(self, since: float = 0.0, *, limit: int | None = None) -> list[LedgerEntry]:
        """
        Stored charges at or after ``since`` (epoch seconds), newest first.
        """
        ...

    def spent(self, since: float, provider: str | None = None) -> float:
        """
        Total USD cost of the charges at or after ``since``, of one provider or of all.
        """
        ...

    def usage(self, since: float, group_by: GroupBy) -> list[UsageRow]:
        """
        Requests, tokens and cost since ``since``, summed per group, costliest first.
        """
        ...

    # -- reservations ----------------------------------------------------------

    def claim_reservation_ids(self, count: int) -> range:
        """
        ``count`` reservation ids that no caller, in any process, has had or will get.

        Ids grow and are never reused, even after their rows are gone. The
        keeper claims a block at a time, so it can number a reservation
        without waiting for the store.
        """
        ...

    def reserve_many(self, reservations: Iterable[ReservationRow]) -> None:
        """
        Store a batch of open reservations atomically: all of them, or none.
        """
        ...

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

        ``policy`` and ``limits`` are the defaults (the environment's): a
        policy or limit stored with :meth:`set_policy` or :meth:`set_limit`
        replaces them, as read inside the transaction. ``starts`` are the
        epoch seconds at which each period began (in the budget's time zone).
        Each claim is decided by :func:`~rhetor.budget._rules.decide`
        against the spend since each start plus every open reservation (of
        every process), plus the claims before it in the batch; a granted
        claim is stored as its row with the decision's ``output_tokens`` and
        ``amount`` (a $0 one is not stored). Nothing another process does can
        come between the check and the write: the transaction holds the
        ledger's reservation lock. Answers one decision per claim, in order.
        """
        ...

    def release(self, reservation_ids: Iterable[int]) -> None:
        """
        Delete reservations that will never be settled (their request never ran).
        """
        ...

    def reservations(self, owner: str | None = None) -> list[ReservationRow]:
        """
        Open reservations, oldest first: all of them, or one owner's.
        """
        ...

    def sweep(self, owner: str) -> tuple[int, float]:
        """
        Settle every reservation whose owner is gone, at its worst case, as ``interrupted``.

        ``owner`` is the caller's own id, alive. Which other owners are gone
        is the store's knowledge: a store only one runtime opens at a time
        (SQLite, under the data directory's lock) knows that every other owner
        is; a store shared by processes must track its owners' liveness and
        sweep only the dead. Answers how many were settled and their total.
        """
        ...

    # -- limits and settings ---------------------------------------------------

    def set_limit(
        self,
        period: Period,
        amount: float,
        provider: str | None = None,
        *,
        component: str | None = None,
    ) -> None:
        """
        Set the USD limit for a period, overall, for one provider or for one component.

        Error handling: ValidationError for both a provider and a component.
        """
        ...

    def clear_limit(
        self, period: Period, provider: str | None = None, *, component: str | None = None
    ) -> bool:
        """
        Remove a limit; True if there was one.
        """
        ...

    def get_limits(self) -> dict[tuple[Period, str | None], float]:
        """
        Every limit, keyed by (period, scope): None for all providers, a
        provider's name, or ``component:NAME`` for a component's
        (:func:`~rhetor.budget._rules.component_scope`).
        """
        ...

    def set_setting(self, key: str, value: str | None) -> None:
        """
        Store a runtime setting (None removes it); its meaning belongs to the caller.
        """
        ...

    def get_setting(self, key: str) -> str | None:
        """
        A stored runtime setting, or None if it was never set.
        """
        ...

    def set_policy(self, policy: str) -> None:
        """
        Store the budget policy's name.
        """
        ...

    def get_policy(self) -> str | None:
        """
        The stored policy name, or None if none was ever set.
        """
        ...

    def set_active(self, provider: str, model: str) -> None:
        """
        Store the active provider and model (what ``POST /provider`` chose).
        """
        ...

    def get_active(self) -> tuple[str, str] | None:
        """
        The stored active provider and model, or None if never chosen.
        """
        ...
