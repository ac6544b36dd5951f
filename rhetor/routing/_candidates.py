"""
The candidates of one request, each handed out with a granted reservation,
and what the reply says of them: which model answered after which failed or
was refused (:func:`explain`), and the budget's warnings.

Split out of ``_attempts.py``, whose loop takes its candidates from a
:class:`CandidateQueue`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import NoReturn

import attrs

from rhetor import observe
from rhetor._errors import (
    AllProvidersFailed,
    BudgetExceeded,
    ProviderUnavailable,
    RhetorError,
)
from rhetor._types import LLMRequest
from rhetor.budget._keeper import Reservation
from rhetor.observe import Attempt
from rhetor.routing._billing import Billing
from rhetor.routing._plan import Candidate
from rhetor.routing._planning import Planner, Prepared

__all__ = ["CandidateQueue", "Failures", "clamped", "explain"]

log = logging.getLogger("rhetor.router")

# What failed, in order: (provider, model, error).
Failures = list[tuple[str, str, RhetorError]]


def clamped(prepared: Prepared, reservation: Reservation) -> Prepared:
    """``prepared`` with the output tokens the reservation granted, when fewer than asked."""
    granted = reservation.output_tokens
    if granted is None or granted >= prepared.max_tokens:
        return prepared
    return attrs.evolve(prepared, max_tokens=granted)


def explain(
    prepared: Prepared,
    c: Candidate,
    failures: Failures,
    refusals: Sequence[tuple[Candidate, BudgetExceeded]] = (),
) -> str:
    """The plan's explanation, then which candidate answered after what failed or was refused."""
    explanation = prepared.plan.explanation
    head = prepared.plan.candidates[0] if prepared.plan.candidates else None
    if head is None or (head.provider, head.model) != (c.provider, c.model):
        why = [f"{p}/{m} failed ({e.code})" for p, m, e in failures]
        why += [f"the budget refused {r.provider}/{r.model} ({exc.message})" for r, exc in refusals]
        explanation += f"; answered by {c.provider}/{c.model}"
        if refusals:
            explanation += " (a budget downgrade)"
        if why:
            explanation += f" after {'; '.join(why)}"
    return explanation


@attrs.define(eq=False)
class CandidateQueue:
    """
    The candidates of one request, each handed out with a granted reservation.

    When the budget refuses a candidate, cheaper models and then free local
    ones are queued after the plan (the ``enforce`` downgrade path; see
    :meth:`Planner.downgrades` for what may stand in). When none fits whole,
    the model first chosen is tried once more with its ``max_tokens``
    clamped to the headroom left. Every refusal is kept,
    so that a reply from a stand-in says which model it replaced and why.
    """

    _billing: Billing
    _planner: Planner
    _request: LLMRequest
    _prepared: Prepared
    _queue: list[Candidate] = attrs.field(init=False)
    # Invariant: the candidates the budget refused, in the order they were tried.
    _refusals: list[tuple[Candidate, BudgetExceeded]] = attrs.field(init=False, factory=list)
    _extended: bool = attrs.field(init=False, default=False)
    _clamp_tried: bool = attrs.field(init=False, default=False)

    def __attrs_post_init__(self) -> None:
        self._queue = list(self._prepared.plan.candidates)

    @property
    def last(self) -> bool:
        """True when the candidate just handed out is the last one planned."""
        return not self._queue

    async def next(self) -> tuple[Candidate, Reservation] | None:
        """The next candidate the budget grants, with its reservation; None when none is left."""
        while self._queue:
            c = self._queue.pop(0)
            try:
                reservation = await self._billing.reserve(self._request, self._prepared, c)
            except BudgetExceeded as exc:
                self._refusals.append((c, exc))
                observe.current().attempted(Attempt(c.provider, c.model, "refused", exc.code))
                log.warning(
                    "request %s: the budget refused %s/%s: %s",
                    self._request.request_id,
                    c.provider,
                    c.model,
                    exc.message,
                )
                if not self._extended:
                    self._extended = True
                    downgrades = self._planner.downgrades(self._prepared, self._request, c)
                    self._queue.extend(d for d in downgrades if d not in self._queue)
                continue
            return c, reservation
        return await self._clamped()

    async def _clamped(self) -> tuple[Candidate, Reservation] | None:
        """
        The last resort under enforce: the first refused candidate, with max_tokens clamped.

        Once neither the plan nor a cheaper stand-in fits whole, the model
        first chosen is reserved again allowing fewer output tokens (as many
        as the headroom left pays for, at least ``MIN_CLAMPED_OUTPUT``); the
        provider is then asked for no more, so the cap holds even if it
        writes the full length. None if that is refused too.
        """
        if self._clamp_tried or not self._refusals:
            return None
        self._clamp_tried = True
        c = self._refusals[0][0]
        try:
            reservation = await self._billing.reserve(self._request, self._prepared, c, clamp=True)
        except BudgetExceeded:
            return None
        # Answered by the model first chosen: not a downgrade, and not refused after all.
        self._refusals = [(other, exc) for other, exc in self._refusals if other is not c]
        return c, reservation

    def explain(self, c: Candidate, failures: Failures) -> str:
        """The reply's ``routing``: the plan's explanation, then what replaced what and why."""
        return explain(self._prepared, c, failures, self._refusals)

    def budget_warning(self, c: Candidate, reservation: Reservation) -> str | None:
        """
        The reply's ``budget_warning``: a downgrade names the model first chosen
        and the refusal; the ``warn`` policy's warning follows.
        """
        notes = []
        if self._refusals:
            first, exc = self._refusals[0]
            notes.append(
                f"budget downgrade: {first.provider}/{first.model} was chosen first but the "
                f"budget refused it ({exc.message}); answered by {c.provider}/{c.model} instead"
            )
        if reservation.warning:
            notes.append(reservation.warning)
        if reservation.output_tokens is not None:
            notes.append(
                f"max_tokens clamped from {self._prepared.max_tokens} to"
                f" {reservation.output_tokens} to stay within the budget"
            )
        return "; ".join(notes) or None

    def note_warning(self, warning: str) -> None:
        """Log a reply's budget warning (a downgrade, or the ``warn`` policy's) and note it."""
        downgraded = bool(self._refusals)
        observe.current().budget_noted(warning, downgraded=downgraded)
        kind = "budget downgrade" if downgraded else "budget warning"
        log.warning("request %s: %s: %s", self._request.request_id, kind, warning)

    def raise_unanswered(self, failures: Failures) -> NoReturn:
        """
        Raise why nothing answered: the first budget refusal when the budget is
        why; else every failed attempt, or the planned models whose provider
        is down when nothing could be tried.
        """
        if self._refusals:
            refused, exc = self._refusals[0]
            log.warning(
                "request %s refused by the budget: %s/%s was chosen: %s",
                self._request.request_id,
                refused.provider,
                refused.model,
                exc.message,
            )
            raise exc
        if not failures:
            failures = [
                (
                    c.provider,
                    c.model,
                    ProviderUnavailable(
                        f"{c.provider} is not available", provider=c.provider, model=c.model
                    ),
                )
                for c in self._prepared.plan.skipped
            ]
        raise AllProvidersFailed.of(failures)
