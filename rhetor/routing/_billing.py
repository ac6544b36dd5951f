"""
The Router's accounts with the BudgetKeeper: a reservation before each attempt, a charge after.

What the keeper guarantees is in :mod:`rhetor.budget._keeper`; this module
decides what to ask of it: the worst case a reservation holds, what an
attempt is billed (usage that cannot be trusted is billed at that worst
case), and how a charge still reaches the ledger when the keeper restarts or
the request is cancelled.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal

import anyio
import attrs

import actors
from rhetor import observe
from rhetor._asks import as_rhetor_error
from rhetor._errors import RhetorError
from rhetor._types import LLMRequest, Usage
from rhetor.budget._keeper import Progress, Reservation, Reserve, Settle, token_count
from rhetor.budget._ledger import Billed
from rhetor.budget._pricing import Pricer
from rhetor.budget._rules import usd
from rhetor.providers._families import ANTHROPIC
from rhetor.routing._plan import Candidate
from rhetor.routing._planning import Prepared, padded

__all__ = [
    "MIN_CLAMPED_OUTPUT",
    "Billing",
    "Charge",
    "Outcome",
    "asks_to_cache",
    "estimated_usage",
]

log = logging.getLogger("rhetor.router")

# How an attempt ended, as the ledger records it.
Outcome = Literal["ok", "partial", "failed"]

# The name the keeper goes by in errors.
_KEEPER = "budget keeper"
# Seconds a reserve or a settle may wait for the BudgetKeeper, its restarts included.
_KEEPER_DEADLINE = 10.0
# Seconds a cancelled request's charge may wait for room in the keeper's mailbox.
_TELL_DEADLINE = 5.0
# Usage this far beyond the request's own bounds is a broken upstream, not a
# reply: output over twice max_tokens, or input over four times the padded
# estimate plus 4,096 tokens (room for a provider's own framing and for text
# the offline counter undercounts). It is billed at the reserved worst case.
_ABSURD_OUTPUT = 2
# Under enforce, a request whose max_tokens does not fit the budget left may be
# granted fewer output tokens, but never fewer than this (or its own max_tokens):
# a shorter reply is seldom worth paying for, and a cheaper model may fit whole.
MIN_CLAMPED_OUTPUT = 64
_ABSURD_INPUT = 4
_ABSURD_INPUT_SLACK = 4096

# Reservation keys and charge ids: unique per process start (a random prefix)
# and never chosen by a client (a client may reuse its own request_id).
_KEY_PREFIX = uuid.uuid4().hex[:12]
_KEY_COUNTER = itertools.count(1)


def asks_to_cache(request: LLMRequest) -> bool:
    """
    Whether ``request`` asks an Anthropic upstream to cache its prompt (a relayed ``cache_control``).

    Its reservation then prices the input as written to the cache for an
    hour (Anthropic bills a write at up to twice the input rate), so that the
    charge cannot exceed what was reserved.
    """
    extra = request.passthrough
    return extra is not None and extra.family == ANTHROPIC and "cache_control" in extra.params


def estimated_usage(request: LLMRequest, input_estimate: int, output_tokens: int) -> Usage:
    """
    The usage of an attempt whose upstream counts never came (a cut or cancelled stream).

    The input is the offline estimate; a request that asked Anthropic to cache
    its prompt counts all of it as written to the cache for an hour, the
    dearest it can have cost upstream and what its reservation assumed, so a
    cut stream is never billed below what the upstream may charge for it.
    """
    if asks_to_cache(request):
        return Usage(input_estimate, output_tokens, 0, 0, input_estimate, input_estimate)
    return Usage(input_estimate, output_tokens)


def _new_key(kind: str) -> str:
    # The counter zero-padded, so that a process's keys sort in the order they
    # were made: each new row's entry in the ledger's unique indexes lands next
    # to the last one (a SQLite group commit of 13 charges wrote ~10 % less
    # at 150,000 rows than with scattered keys), on SQLite and PostgreSQL alike.
    return f"{_KEY_PREFIX}{kind}{next(_KEY_COUNTER):012x}"


def _retried(message: Settle) -> Settle:
    return attrs.evolve(message, retry=True)


@attrs.frozen
class Charge:
    """What one attempt was billed: cost, the usage recorded, and on what basis."""

    cost: float
    usage: Usage
    billed: Billed = "usage"


@attrs.define(eq=False)
class Billing:
    """
    Reserves the worst case before each attempt and settles what it cost after.

    Error handling: a keeper that stays down past its deadline makes a
    reserve :class:`ServiceUnavailable` (the request fails, nothing was
    spent); a settle that cannot be recorded is logged, never raised, since
    the reply it belongs to was produced (its reservation stays open and is
    billed as interrupted at the next start).
    """

    _budget: actors.Ref
    _pricer: Pricer
    # Invariant: False only while the BudgetKeeper has no limit or ignores
    # them, so that no reservation could be refused or warned about; kept
    # current by the Router (BudgetModeChanged). True (reserve) until told otherwise.
    reservations_required: bool = True

    async def reserve(
        self, request: LLMRequest, prepared: Prepared, c: Candidate, *, clamp: bool = False
    ) -> Reservation:
        """
        Reserve the attempt's worst case; answers the reservation once it is durable.

        With ``clamp``, under enforce a worst case that does not fit may be
        granted with fewer output tokens (at least ``MIN_CLAMPED_OUTPUT``);
        the answer's ``output_tokens`` then says how many.

        Error handling: a refusal is the keeper's :class:`BudgetExceeded`.
        """
        if not self.reservations_required:
            # Nothing could refuse or warn: skip the round trip (id 0 settles as none).
            return Reservation(0, c.provider, 0.0)
        max_tokens = prepared.max_tokens
        input_tokens = padded(prepared.input_estimate)
        writes = asks_to_cache(request)
        amount = self._pricer.worst_case(
            c.provider, c.model, input_tokens, max_tokens, cache_writes=writes
        )
        input_cost = self._pricer.worst_case(
            c.provider, c.model, input_tokens, 0, cache_writes=writes
        )
        output_price = max(0.0, amount - input_cost) / max_tokens if max_tokens else 0.0
        message = Reserve(
            request.request_id,
            c.provider,
            c.model,
            amount,
            input_tokens,
            max_tokens,
            request.component,
            request.context_id,
            key=_new_key("r"),
            output_price=output_price,
            min_output_tokens=min(max_tokens, MIN_CLAMPED_OUTPUT) if clamp else None,
        )
        # The same key again after a keeper restart answers the same reservation.
        observation = observe.current()
        attributes = {"gen_ai.provider.name": c.provider, "gen_ai.request.model": c.model}
        with observation.traced("rhetor.budget.reserve", attributes) as span:
            began = time.perf_counter()
            reservation: Reservation = await self._ask(message)
            observation.ledger_written(time.perf_counter() - began)
            if span is not None:
                span.set_attribute("rhetor.reserved_usd", reservation.amount)
        return reservation

    async def settle(
        self,
        request: LLMRequest,
        prepared: Prepared,
        reservation: Reservation,
        c: Candidate,
        usage: Usage,
        outcome: Outcome,
        *,
        usage_valid: bool = True,
    ) -> Charge:
        """
        Record what an attempt cost before its reply goes out; answers what was billed.

        An ask, not a tell: the keeper answers once the charge is in the ledger,
        so an acknowledged reply always has its charge on disk. A keeper that
        dies is asked again with ``retry`` set; it records a charge id at most
        once. A cancelled request is still billed: see below.
        """
        charge = self.bill(request, prepared, c, usage, usage_valid)
        message = Settle(
            reservation.id,
            request.request_id,
            c.provider,
            c.model,
            request.component,
            request.context_id,
            charge.usage,
            charge.cost,
            outcome,
            charge.billed,
            reservation.amount if reservation.id else None,
            _new_key("c"),
        )
        observation = observe.current()
        attributes = {
            "gen_ai.provider.name": c.provider,
            "gen_ai.request.model": c.model,
            "rhetor.outcome": outcome,
            "gen_ai.usage.input_tokens": charge.usage.input_tokens,
            "gen_ai.usage.output_tokens": charge.usage.output_tokens,
        }
        try:
            with observation.traced("rhetor.budget.settle", attributes) as span:
                began = time.perf_counter()
                cost = await self._ask(message, _retried)
                observation.ledger_written(time.perf_counter() - began)
                if span is not None:
                    span.set_attribute("rhetor.cost_usd", cost)
        except RhetorError as exc:
            # Under a limit the reservation stays open, so its worst case stays
            # counted; the next start bills it as interrupted.
            log.error(
                "could not record the charge of %s (%s): %s",
                request.request_id,
                usd(charge.cost),
                exc,
            )
            return charge
        except BaseException:
            # Cancelled: no reply goes out, but the charge must be recorded.
            # try_tell never checkpoints, so cancellation cannot interrupt it;
            # if the ask got there first, the keeper skips this copy (same
            # charge id). Only a full mailbox needs the shielded wait.
            await self._tell(_retried(message), request.request_id)
            raise
        return attrs.evolve(charge, cost=cost)

    def progress(
        self,
        request: LLMRequest,
        prepared: Prepared,
        reservation: Reservation,
        c: Candidate,
        output_tokens: int,
    ) -> None:
        """
        Tell the keeper how far a stream got, so a sweep after a crash bills that, not the worst case.

        Never waits: a full mailbox or a keeper that is down drops the note
        (the sweep then bills the worst case, as without it).
        """
        if not reservation.id:
            return
        usage = estimated_usage(request, prepared.input_estimate, output_tokens)
        cost = self._pricer.price(c.provider, c.model, usage)
        try:
            self._budget.try_tell(Progress(reservation.id, output_tokens, cost))
        except actors.ActorError as exc:
            log.debug("could not note a stream's progress: %s", exc)

    def bill(
        self,
        request: LLMRequest,
        prepared: Prepared,
        c: Candidate,
        usage: Usage,
        usage_valid: bool,
    ) -> Charge:
        """
        What an attempt costs: its usage priced, unless that usage cannot be trusted.

        Usage the upstream marked malformed, or counts that are not whole
        numbers from 0, are billed at the worst case the request reserved; so
        is usage absurd for the request (see _ABSURD_OUTPUT), whose counts
        are recorded capped at the reservation's.
        """
        max_tokens = prepared.max_tokens
        input_tokens = padded(prepared.input_estimate)
        inputs, outputs = token_count(usage.input_tokens), token_count(usage.output_tokens)
        if usage_valid and inputs is not None and outputs is not None:
            if (
                outputs <= _ABSURD_OUTPUT * max_tokens
                and inputs <= _ABSURD_INPUT * input_tokens + _ABSURD_INPUT_SLACK
            ):
                written = min(token_count(usage.cache_write_tokens) or 0, inputs)
                counted = Usage(
                    inputs,
                    outputs,
                    min(token_count(usage.cached_input_tokens) or 0, inputs),
                    min(token_count(usage.reasoning_tokens) or 0, outputs),
                    written,
                    min(token_count(usage.cache_write_1h_tokens) or 0, written),
                )
                return Charge(self._pricer.price(c.provider, c.model, counted), counted)
            billed: Billed = "capped"
            counted = Usage(min(inputs, input_tokens), min(outputs, max_tokens))
        else:
            billed = "worst_case"
            counted = Usage(input_tokens, max_tokens)
        cost = self._pricer.worst_case(
            c.provider, c.model, input_tokens, max_tokens, cache_writes=asks_to_cache(request)
        )
        log.warning(
            "%s/%s reported usage %r%s for request %s (max_tokens %d, input estimate %d);"
            " billed at the worst case %s",
            c.provider,
            c.model,
            usage,
            "" if usage_valid else " marked malformed",
            request.request_id,
            max_tokens,
            prepared.input_estimate,
            usd(cost),
        )
        return Charge(cost, counted, billed)

    async def _ask(self, message: Any, again: Callable[[Any], Any] | None = None) -> Any:
        """
        Ask the BudgetKeeper; if it died or is restarting, ask its next incarnation.

        ``again(message)`` is what is sent after a death (the message itself by
        default): the keeper may have recorded the first one before it died,
        so it must be safe to repeat.

        Error handling: the keeper's own answers pass through; its other
        failures become Rhetor's in :func:`rhetor._asks.as_rhetor_error` (a
        keeper still down at the deadline is :class:`ServiceUnavailable`).
        """
        deadline = anyio.current_time() + _KEEPER_DEADLINE
        while True:
            try:
                return await self._budget.ask(
                    message, timeout=max(0.001, deadline - anyio.current_time())
                )
            except (actors.ActorDied, actors.PoisonMessage) as exc:
                if isinstance(exc, actors.PoisonMessage) or anyio.current_time() >= deadline:
                    raise as_rhetor_error(_KEEPER, exc, _KEEPER_DEADLINE) from exc
                log.warning(
                    "budget keeper died or is restarting (%s); asking again: %s",
                    exc,
                    type(message).__name__,
                )
                if again is not None:
                    message = again(message)
                if isinstance(exc, actors.ActorStopped):
                    # Stopped while its supervisor restarts it: give it a moment.
                    await anyio.sleep(0.05)
            except actors.ActorError as exc:
                raise as_rhetor_error(_KEEPER, exc, _KEEPER_DEADLINE) from exc

    async def _tell(self, message: Settle, request_id: str) -> None:
        """Send a cancelled request's charge without a checkpoint, or wait shielded for room."""
        try:
            if not self._budget.try_tell(message):
                with anyio.CancelScope(shield=True, deadline=anyio.current_time() + _TELL_DEADLINE):
                    await self._budget.tell(message)
        except actors.ActorError as exc:
            log.error("budget keeper unavailable; could not record %s: %s", request_id, exc)
