"""
The messages the BudgetKeeper answers, and their replies.

Each message is an :class:`~rhetor._asks.Ask` of its reply type. The status
replies are ``TypedDict`` s, since the edge sends them as JSON as they are.
"""

from __future__ import annotations

from typing import Literal, TypedDict

import attrs

from rhetor._asks import Ask
from rhetor._settings import BudgetPolicy
from rhetor._types import Usage
from rhetor.budget._accounts import PeriodStatus
from rhetor.budget._interfaces import Billed, GroupBy, Status
from rhetor.budget._rules import Period

__all__ = [
    "ENTRIES_LIMIT",
    "BudgetStatus",
    "CheckBudget",
    "GetActiveModel",
    "GetBudget",
    "GetBudgetMode",
    "GetEntries",
    "GetUsage",
    "LedgerCommits",
    "LedgerErrors",
    "Progress",
    "RefreshRules",
    "Reservation",
    "Reserve",
    "SetLimit",
    "SetPolicy",
    "Settle",
    "SpendEntry",
    "StoreActiveModel",
    "UsageTotals",
]

# The most ledger entries one GetEntries answers.
ENTRIES_LIMIT = 500


class LedgerErrors(TypedDict):
    """What went wrong with the ledger since the keeper started: bad charges billed at their worst case, failed writes."""

    invalid_charges: int
    failed_writes: int
    # Charges the database was out of reach for, since the keeper started, and
    # how many of them still wait to be written.
    unrecorded_charges: int
    pending_charges: int


class LedgerCommits(TypedDict):
    """
    The keeper's group commits since it started: how many wrote anything, the writes
    (reservations, charges, releases) they carried, and the seconds they took in all.

    ``writes / commits`` is the mean batch; ``seconds / commits`` the mean commit.
    """

    commits: int
    writes: int
    seconds: float


class BudgetStatus(TypedDict):
    """The budget now: the policy, each period's spend and limits, and the ledger's errors and commits."""

    policy: BudgetPolicy
    periods: dict[Period, PeriodStatus]
    reservations_required: bool
    ledger_errors: LedgerErrors
    ledger_commits: LedgerCommits


class UsageTotals(TypedDict):
    """Requests, tokens and cost of one group (``key``: a provider, model, component or context)."""

    key: str | None
    requests: int
    input_tokens: int
    output_tokens: int
    cost: float


class SpendEntry(TypedDict):
    """
    One charge of the ledger as a report shows it: what a request cost, and how it ended.

    ``ts`` is UTC epoch seconds and ``time`` the same instant in ISO 8601;
    ``status`` is ``ok``, ``partial`` (cut off mid-stream), ``failed`` or
    ``interrupted`` (its process died); ``billed`` says what the cost was
    computed from (``usage``, ``capped`` or ``worst_case``). Nothing of the
    request's text, and no internal ids, appear.
    """

    time: str
    ts: float
    request_id: str
    component: str
    context_id: str | None
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cost: float
    status: Status
    billed: Billed


@attrs.frozen
class Reservation:
    """
    A granted reservation, and the warning to pass on under the ``warn`` policy.

    ``output_tokens`` is set when fewer output tokens were granted than asked
    for (``enforce`` clamped the request to the headroom left): the request
    must ask the provider for no more than that.
    """

    id: int
    provider: str
    amount: float
    warning: str | None = None
    output_tokens: int | None = None


@attrs.frozen
class Reserve(Ask[Reservation]):
    """
    Reserve ``amount`` USD for one request; answers a :class:`Reservation` once it is durable.

    ``input_tokens`` and ``output_tokens`` are the worst case the amount
    prices; they become the charge if the request's process dies. A retried
    reserve with the same non-empty ``key`` answers the reservation the first
    attempt made (the keeper may have restarted between the two).

    ``output_price`` is the USD one output token adds to ``amount``; with it
    and ``min_output_tokens``, ``enforce`` may grant fewer output tokens
    (at least ``min_output_tokens``) when the whole amount does not fit.
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
    output_price: float = 0.0
    min_output_tokens: int | None = None


@attrs.frozen
class Progress:
    """
    A told (never asked) note of how far a streamed request got: recorded on its reservation.

    ``output_tokens`` is what the stream produced so far and ``cost`` what
    the input and those tokens cost. If the runtime dies before the request
    settles, the sweeper bills this instead of the worst case (never more than
    the worst case). The keeper writes it with its next group commit; a
    note it cannot write is logged and dropped.
    """

    reservation_id: int
    output_tokens: int
    cost: float


@attrs.frozen
class Settle(Ask[float]):
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
class CheckBudget(Ask[tuple[bool, str | None]]):
    """Would ``amount`` on ``provider`` fit? Answers ``(under_budget, warning)``."""

    provider: str
    amount: float


@attrs.frozen
class GetBudget(Ask[BudgetStatus]):
    """Answers the status of every period (spent, reserved, limit, remaining, policy)."""


@attrs.frozen
class GetUsage(Ask[list[UsageTotals]]):
    """Answers usage rows for a period, grouped by provider, model, component or context."""

    period: Period
    group_by: GroupBy


@attrs.frozen
class GetEntries(Ask[list[SpendEntry]]):
    """
    Answers the ledger's charges at or after ``since`` (epoch seconds), newest first.

    At most ``limit`` of them, from 1 to :data:`ENTRIES_LIMIT`.
    """

    since: float = 0.0
    limit: int = 50


@attrs.frozen
class SetLimit(Ask[BudgetStatus]):
    """Set a period's limit, globally or for one provider; 0 removes it."""

    period: Period
    amount: float
    provider: str | None = None
    # A component's limit instead (at most one of provider and component).
    component: str | None = None


@attrs.frozen
class SetPolicy(Ask[BudgetStatus]):
    """Set the policy: ignore, warn or enforce."""

    policy: BudgetPolicy


@attrs.frozen
class GetBudgetMode(Ask[bool]):
    """
    Answers whether reservations are needed: only when a limit exists and the
    policy is not ``ignore`` can a reservation be refused or carry a warning.
    """


@attrs.frozen
class GetActiveModel(Ask[tuple[str, str] | None]):
    """Answers the stored active ``(provider, model)``, or None."""


@attrs.frozen
class RefreshRules(Ask[tuple[str, str] | None]):
    """
    Read the stored policy, limits and active model again now; answers the active ``(provider, model)``.

    Sent when another process changed them (a shared ledger; see
    :mod:`rhetor.storage._changes`). On a ledger of its own the keeper has
    nothing to read and answers what it holds.
    """


@attrs.frozen
class StoreActiveModel(Ask[None]):
    """Store the active provider and model, so that a restart keeps them; answers None."""

    provider: str
    model: str
