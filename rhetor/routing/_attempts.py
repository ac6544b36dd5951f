"""
The attempt loop: one request's candidates, each reserved, called with retries, and settled.

Whole replies and streams share it. A provider call is read as a stream
whichever it is: a stream's items are :class:`TextDelta` pieces then one
:class:`StreamEnd`; a whole reply (:class:`_WholeReply`) is a stream of one
:class:`ProviderReply`. :meth:`Attempts.run` is an async generator of
:class:`Chunk`; the last one carries the :class:`Reply`, which a whole-reply
caller takes and a stream passes on. So retries, fallbacks, timeouts,
budget downgrades, settling and partial billing are written once.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import NoReturn

import anyio
import attrs

import actors
from rhetor._asks import as_provider_error
from rhetor._errors import (
    AllProvidersFailed,
    BudgetExceeded,
    ProviderError,
    ProviderUnavailable,
    RhetorError,
    StreamBroken,
    UpstreamTimeout,
)
from rhetor._tokens import count_tokens
from rhetor._types import (
    Chunk,
    LLMRequest,
    ProviderReply,
    ProviderRequest,
    Reply,
    StreamEnd,
    TextDelta,
    Usage,
)
from rhetor.budget._keeper import Reservation
from rhetor.providers._actor import Complete, StreamCompletion
from rhetor.routing._billing import Billing, Outcome
from rhetor.routing._catalogue import Catalogue
from rhetor.routing._plan import Candidate
from rhetor.routing._planning import Planner, Prepared

__all__ = ["Attempts", "CandidateQueue", "Failures", "explain"]

log = logging.getLogger("rhetor.router")

# Calls of one candidate after its first, for transient errors.
_RETRIES = 2
# Seconds before the first retry; doubled for each next one, jittered by ±50 %.
_BACKOFF = 0.25
# The smallest per-item deadline a stream is given (a deadline already past is not 0).
_MIN_ITEM_TIMEOUT = 0.001

# What failed, in order: (provider, model, error).
Failures = list[tuple[str, str, RhetorError]]
ProviderItem = TextDelta | StreamEnd | ProviderReply


@attrs.define(eq=False)
class Attempts:
    """
    Runs requests through their candidates until one answers.

    For each candidate: reserve its worst case (a refusal moves on, see
    :class:`CandidateQueue`), call its provider actor within the attempt's
    share of the deadline (:func:`attempt_timeout`), retry a transient error
    after a jittered backoff (:func:`retry`), fall back on any other, and
    settle every attempt. The reply's turns are stored before the reply goes out.

    Cancellation: cancelling the caller, or a reader leaving a stream,
    cancels the provider call (closing the upstream request) and bills what
    was produced: the prompt's input, and a stream's output so far.

    Error handling: a stream that fails after its first chunk reached the
    caller is :class:`StreamBroken` (billed as partial, never retried); a
    request nothing answered is the first budget refusal, else
    :class:`AllProvidersFailed` listing each attempt.
    """

    _catalogue: Catalogue
    _planner: Planner
    _billing: Billing
    # Seconds one provider call may take at most, whatever the request's deadline.
    _provider_timeout: float
    # Stores a reply's turns in its context: called once the reply is billed,
    # before the caller sees it, so that an acknowledged reply is a stored turn.
    _store: Callable[[LLMRequest, Prepared, str], Awaitable[None]]

    async def run(
        self, request: LLMRequest, prepared: Prepared, deadline: float, *, streamed: bool
    ) -> AsyncGenerator[Chunk, None]:
        """
        Answer ``request``: a :class:`Chunk` per streamed piece, then a last one with the reply.

        ``streamed`` picks the provider call: a stream of pieces, or a whole
        reply (then the only chunk is the last). A caller that leaves early
        must close the generator (``aclosing``) so the partial bill is sent now.
        """
        failures: Failures = []
        candidates = CandidateQueue(self._billing, self._planner, request, prepared)
        asked = prepared
        while (granted := await candidates.next()) is not None:
            c, reservation = granted
            # Under enforce the budget may grant fewer output tokens than asked:
            # this candidate is then asked for no more (and billed against that).
            prepared = clamped(asked, reservation)
            attempt = 0
            while True:
                timeout = attempt_timeout(deadline, candidates.last, self._provider_timeout)
                call = ProviderRequest(
                    model=c.model,
                    messages=prepared.messages,
                    system=prepared.system,
                    temperature=c.temperature,
                    max_tokens=prepared.max_tokens,
                    request_id=request.request_id,
                    timeout=timeout,
                )
                produced: list[str] = []
                end: StreamEnd | ProviderReply | None = None
                try:
                    async with self._open(c, call, timeout, streamed) as items:
                        async for item in items:
                            if isinstance(item, TextDelta):
                                produced.append(item.text)
                                yield Chunk(item.text, c.model, c.provider, request.context_id)
                            elif isinstance(item, StreamEnd | ProviderReply):
                                end = item
                except (ProviderError, actors.ActorError) as raw:
                    exc = as_provider_error(raw, c.provider, c.model, timeout)
                    if produced:
                        # Text reached the caller: no other model may continue it.
                        await self._settle_partial(request, prepared, reservation, c, produced)
                        raise StreamBroken(
                            f"stream from {c.provider}/{c.model} broke after it began: {exc.message}",
                            provider=c.provider,
                            model=c.model,
                        ) from raw
                    if await retry(attempt, exc, deadline):
                        attempt += 1
                        continue
                    await self._billing.settle(request, prepared, reservation, c, Usage(), "failed")
                    failures.append((c.provider, c.model, exc))
                    break
                except BaseException:
                    # Cancelled, or the reader left: the upstream saw the prompt
                    # (and produced what a stream sent), so bill that.
                    outcome: Outcome = "partial" if streamed else "failed"
                    await self._settle_partial(request, prepared, reservation, c, produced, outcome)
                    raise
                reply = await self._answer(
                    request, prepared, reservation, c, end, produced, candidates, failures
                )
                yield Chunk("", reply.model, c.provider, request.context_id, True, reply)
                return
        candidates.raise_unanswered(failures)

    def _open(
        self, c: Candidate, call: ProviderRequest, timeout: float, streamed: bool
    ) -> AbstractAsyncContextManager[AsyncIterator[ProviderItem]]:
        """
        Call the candidate's provider actor: its items, as a stream either way.

        Error handling: a provider that is not running is :class:`ProviderUnavailable`.
        """
        ref = self._catalogue.ref(c.provider)
        if ref is None:
            raise ProviderUnavailable(
                f"provider {c.provider!r} is not running", provider=c.provider, model=c.model
            )
        if streamed:
            # A stream's timeout bounds the wait for each item, not the whole.
            return ref.stream(StreamCompletion(call), timeout=max(timeout, _MIN_ITEM_TIMEOUT))
        return _WholeReply(ref, Complete(call), timeout)

    async def _settle_partial(
        self,
        request: LLMRequest,
        prepared: Prepared,
        reservation: Reservation,
        c: Candidate,
        produced: list[str],
        outcome: Outcome = "partial",
    ) -> None:
        """Bill an attempt that ended early: the prompt's input and the text produced so far."""
        usage = Usage(prepared.input_estimate, count_tokens("".join(produced)))
        await self._billing.settle(request, prepared, reservation, c, usage, outcome)

    async def _answer(
        self,
        request: LLMRequest,
        prepared: Prepared,
        reservation: Reservation,
        c: Candidate,
        end: StreamEnd | ProviderReply | None,
        produced: list[str],
        candidates: CandidateQueue,
        failures: Failures,
    ) -> Reply:
        """Settle a call that succeeded, store its turns, and make its reply."""
        text = end.text if isinstance(end, ProviderReply) else "".join(produced)
        if end is None:
            # A stream that ended without its StreamEnd: count what it sent.
            usage, usage_valid = Usage(prepared.input_estimate, count_tokens(text)), True
        else:
            usage, usage_valid = end.usage, end.usage_valid
        charge = await self._billing.settle(
            request, prepared, reservation, c, usage, "ok", usage_valid=usage_valid
        )
        await self._store(request, prepared, text)
        return Reply(
            message=text,
            model=(end.model if end is not None else "") or c.model,
            provider=c.provider,
            context=request.context_id,
            usage=charge.usage,
            cost=charge.cost,
            routing=candidates.explain(c, failures),
            request_id=request.request_id,
            task_type=prepared.plan.task_type,
            budget_warning=candidates.budget_warning(c, reservation),
            finish_reason=end.finish_reason if end is not None else "stop",
        )


def clamped(prepared: Prepared, reservation: Reservation) -> Prepared:
    """``prepared`` with the output tokens the reservation granted, when fewer than asked."""
    granted = reservation.output_tokens
    if granted is None or granted >= prepared.max_tokens:
        return prepared
    return attrs.evolve(prepared, max_tokens=granted)


class _WholeReply:
    """
    A whole-reply call to a provider actor, read as a stream of one :class:`ProviderReply`.

    Cancellation: cancelling the read cancels the ask, down into the provider call.
    """

    def __init__(self, ref: actors.Ref, message: Complete, timeout: float) -> None:
        self._ref = ref
        self._message = message
        self._timeout = timeout
        self._asked = False

    async def __aenter__(self) -> _WholeReply:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def __aiter__(self) -> _WholeReply:
        return self

    async def __anext__(self) -> ProviderReply:
        if self._asked:
            raise StopAsyncIteration
        self._asked = True
        reply: ProviderReply = await self._ref.ask(self._message, timeout=self._timeout)
        return reply


def attempt_timeout(deadline: float, last: bool, provider_timeout: float) -> float:
    """
    How long one provider call may take.

    A candidate that is not the last may use at most half of what is left,
    so that a hanging primary still leaves time for its fallbacks.
    """
    left = max(0.0, deadline - anyio.current_time())
    return min(provider_timeout, left if last else left / 2)


async def retry(attempt: int, exc: ProviderError, deadline: float) -> bool:
    """
    Whether to call the same candidate again, after a jittered backoff.

    Only transient errors are retried, at most ``_RETRIES`` times. A timeout
    is not: the attempt already used its share of the deadline, and a
    provider that hung once is likely to hang again, so the fallbacks get
    the time that is left.
    """
    if not exc.transient or attempt >= _RETRIES or isinstance(exc, UpstreamTimeout):
        return False
    return await _backoff(attempt, exc, deadline)


async def _backoff(attempt: int, exc: ProviderError, deadline: float) -> bool:
    """Sleep before a retry, at least the upstream's Retry-After; False when the deadline leaves no room."""
    delay = _BACKOFF * (2**attempt) * random.uniform(0.5, 1.5)
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        delay = max(delay, float(retry_after))
    if anyio.current_time() + delay >= deadline:
        return False
    await anyio.sleep(delay)
    return True


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
                log.info(
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

    def raise_unanswered(self, failures: Failures) -> NoReturn:
        """
        Raise why nothing answered: the first budget refusal when the budget is
        why; else every failed attempt, or the planned models whose provider
        is down when nothing could be tried.
        """
        if self._refusals:
            raise self._refusals[0][1]
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
        raise AllProvidersFailed(failures)
