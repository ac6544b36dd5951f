"""
The attempt loop: one request's candidates, each reserved, called with retries, and settled.

Whole replies and streams share it. A provider call is read as a stream
whichever it is: a stream's items are :class:`TextDelta` and
:class:`ToolCallDelta` pieces then one :class:`StreamEnd`; a whole reply
(:class:`_WholeReply`) is a stream of one :class:`ProviderReply`. :meth:`Attempts.run` is an async generator of
:class:`Chunk`; the last one carries the :class:`Reply`, which a whole-reply
caller takes and a stream passes on. So retries, fallbacks, timeouts,
budget downgrades, settling and partial billing are written once.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any

import anyio
import attrs

import actors
from rhetor import observe
from rhetor._asks import as_provider_error
from rhetor._content import Text, ThinkingAssembly, ToolCallAssembly, finish_reason
from rhetor._errors import (
    ProviderError,
    ProviderUnavailable,
    StreamBroken,
    UpstreamTimeout,
)
from rhetor._tokens import count_tokens
from rhetor._types import (
    ChatMessage,
    Chunk,
    CitationDelta,
    LLMRequest,
    ProviderReply,
    ProviderRequest,
    Reply,
    StreamEnd,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    Usage,
)
from rhetor.budget._keeper import Reservation
from rhetor.observe import Attempt
from rhetor.observe._record import AttemptOutcome
from rhetor.providers._actor import Complete, StreamCompletion
from rhetor.routing._billing import Billing, Charge, Outcome, estimated_usage
from rhetor.routing._candidates import CandidateQueue, Failures, clamped, explain
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
# Seconds between two notes of a stream's progress to the budget (the first
# piece is always noted): each costs the keeper one row in a group commit.
PROGRESS_EVERY = 2.0

ProviderItem = TextDelta | ToolCallDelta | ThinkingDelta | CitationDelta | StreamEnd | ProviderReply


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
    _store: Callable[[LLMRequest, Prepared, ChatMessage], Awaitable[None]]

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
        # The edge's record of this request (a no-op one in-process): attempts, timings, cost.
        observation = observe.current()
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
                call = provider_request(request, prepared, c, timeout)
                produced: list[str] = []
                calls = ToolCallAssembly()
                thinking = ThinkingAssembly()
                end: StreamEnd | ProviderReply | None = None
                began = observation.call_begins()
                noted: float | None = None
                try:
                    with observation.traced(f"chat {c.model}", _call_attributes(c, call)) as span:
                        async with self._open(c, call, timeout, streamed) as items:
                            async for item in items:
                                if isinstance(item, TextDelta | ToolCallDelta | ThinkingDelta) and (
                                    noted is None or anyio.current_time() - noted >= PROGRESS_EVERY
                                ):
                                    # The first piece, then every few seconds: what a
                                    # sweep bills if this process dies mid-stream.
                                    noted = anyio.current_time()
                                    self._note(
                                        request,
                                        prepared,
                                        reservation,
                                        c,
                                        produced,
                                        calls,
                                        thinking,
                                        item,
                                    )
                                if isinstance(item, TextDelta):
                                    observation.token_arrived()
                                    produced.append(item.text)
                                    yield Chunk(item.text, c.model, c.provider, request.context_id)
                                elif isinstance(
                                    item, ToolCallDelta | ThinkingDelta | CitationDelta
                                ):
                                    if isinstance(item, ToolCallDelta):
                                        calls.add(item)
                                    elif isinstance(item, ThinkingDelta):
                                        thinking.add(item)
                                    if not isinstance(item, CitationDelta):
                                        observation.token_arrived()
                                    yield _piece(item, c, request.context_id)
                                elif isinstance(item, StreamEnd | ProviderReply):
                                    end = item
                        if span is not None and end is not None:
                            span.set_attributes(_answer_attributes(end))
                except (ProviderError, actors.ActorError) as raw:
                    exc = as_provider_error(raw, c.provider, c.model, timeout)
                    seconds = observation.call_ends(began)
                    if produced or calls or thinking:
                        produced.append(calls.produced() + thinking.produced())
                        # Text reached the caller: no other model may continue it.
                        charge = await self._settle_partial(
                            request, prepared, reservation, c, produced
                        )
                        observation.attempted(
                            _attempt(c, "partial", exc.code, seconds, charge, attempt)
                        )
                        raise StreamBroken(
                            f"stream from {c.provider}/{c.model} broke after it began: {exc.message}",
                            provider=c.provider,
                            model=c.model,
                        ) from raw
                    observation.attempted(_attempt(c, "failed", exc.code, seconds, None, attempt))
                    if await retry(attempt, exc, deadline):
                        attempt += 1
                        continue
                    await self._billing.settle(request, prepared, reservation, c, Usage(), "failed")
                    failures.append((c.provider, c.model, exc))
                    break
                except BaseException:
                    seconds = observation.call_ends(began)
                    # Cancelled, or the reader left: the upstream saw the prompt
                    # (and produced what a stream sent), so bill that.
                    outcome: Outcome = "partial" if streamed else "failed"
                    produced.append(calls.produced() + thinking.produced())
                    charge = await self._settle_partial(
                        request, prepared, reservation, c, produced, outcome
                    )
                    observation.attempted(
                        _attempt(c, outcome, "cancelled", seconds, charge, attempt)
                    )
                    raise
                seconds = observation.call_ends(began)
                observation.token_arrived()
                reply = await self._answer(
                    request,
                    prepared,
                    reservation,
                    c,
                    end,
                    produced,
                    (calls, thinking),
                    candidates,
                    failures,
                )
                observation.attempted(
                    _attempt(c, "ok", None, seconds, reply, attempt, _cached_input_tokens(end))
                )
                observation.answered(c.provider, reply.model)
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

    def _note(
        self,
        request: LLMRequest,
        prepared: Prepared,
        reservation: Reservation,
        c: Candidate,
        produced: list[str],
        calls: ToolCallAssembly,
        thinking: ThinkingAssembly,
        item: TextDelta | ToolCallDelta | ThinkingDelta,
    ) -> None:
        """Tell the budget how many tokens the stream has produced, ``item`` included."""
        text = "".join(produced) + calls.produced() + thinking.produced()
        if isinstance(item, TextDelta | ThinkingDelta):
            text += item.text
        else:
            text += item.arguments
        self._billing.progress(request, prepared, reservation, c, count_tokens(text))

    async def _settle_partial(
        self,
        request: LLMRequest,
        prepared: Prepared,
        reservation: Reservation,
        c: Candidate,
        produced: list[str],
        outcome: Outcome = "partial",
    ) -> Charge:
        """Bill an attempt that ended early: the prompt's input and the text produced so far."""
        sent = count_tokens("".join(produced))
        usage = estimated_usage(request, prepared.input_estimate, sent)
        return await self._billing.settle(request, prepared, reservation, c, usage, outcome)

    async def _answer(
        self,
        request: LLMRequest,
        prepared: Prepared,
        reservation: Reservation,
        c: Candidate,
        end: StreamEnd | ProviderReply | None,
        produced: list[str],
        assemblies: tuple[ToolCallAssembly, ThinkingAssembly],
        candidates: CandidateQueue,
        failures: Failures,
    ) -> Reply:
        """Settle a call that succeeded, store its turns, and make its reply."""
        assembly, thought = assemblies
        if isinstance(end, ProviderReply):
            text, calls, thinking = end.text, end.tool_calls, end.thinking
        else:
            text, calls, thinking = "".join(produced), assembly.calls(), thought.blocks()
        if end is None:
            # A stream that ended without its StreamEnd: count what it sent.
            sent = count_tokens(text + assembly.produced() + thought.produced())
            usage, usage_valid = estimated_usage(request, prepared.input_estimate, sent), True
        else:
            usage, usage_valid = end.usage, end.usage_valid
        charge = await self._billing.settle(
            request, prepared, reservation, c, usage, "ok", usage_valid=usage_valid
        )
        reason = finish_reason(
            end.finish_reason if end is not None else None, tool_calls=bool(calls)
        )
        rich = calls or thinking
        turn = ChatMessage("assistant", blocks=(*thinking, Text(text), *calls)) if rich else None
        await self._store(request, prepared, turn or ChatMessage("assistant", text))
        warning = candidates.budget_warning(c, reservation)
        if warning is not None:
            candidates.note_warning(warning)
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
            budget_warning=warning,
            finish_reason=reason,
            tool_calls=calls,
            thinking=thinking,
            cited=end.cited if isinstance(end, ProviderReply) else (),
        )


def _piece(
    item: ToolCallDelta | ThinkingDelta | CitationDelta, c: Candidate, context_id: str | None
) -> Chunk:
    """The chunk that carries a streamed piece other than text to the caller."""
    if isinstance(item, ToolCallDelta):
        return Chunk("", c.model, c.provider, context_id, tool_calls=(item,))
    if isinstance(item, ThinkingDelta):
        return Chunk("", c.model, c.provider, context_id, thinking=(item,))
    return Chunk("", c.model, c.provider, context_id, citations=(item.citation,))


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


def provider_request(
    request: LLMRequest, prepared: Prepared, c: Candidate, timeout: float
) -> ProviderRequest:
    """What one candidate is asked: the prepared conversation and the request's own fields."""
    return ProviderRequest(
        model=c.model,
        messages=prepared.messages,
        system=prepared.system,
        temperature=c.temperature,
        max_tokens=prepared.max_tokens,
        request_id=request.request_id,
        timeout=timeout,
        tools=request.tools,
        tool_choice=request.tool_choice,
        response_format=request.response_format,
        stop=request.stop,
        top_p=request.top_p,
        seed=request.seed,
        user=request.user,
        metadata=request.metadata,
        passthrough=request.passthrough,
    )


def _attempt(
    c: Candidate,
    outcome: AttemptOutcome,
    error_type: str | None,
    seconds: float,
    billed: Charge | Reply | None,
    retry: int,
    cached_input_tokens: int = 0,
) -> Attempt:
    """The observation's record of one provider call and what it was billed."""
    if billed is None:
        return Attempt(c.provider, c.model, outcome, error_type, seconds, retry=retry)
    return Attempt(
        c.provider,
        c.model,
        outcome,
        error_type,
        seconds,
        billed.usage.input_tokens,
        billed.usage.output_tokens,
        cached_input_tokens,
        billed.cost,
        retry,
    )


def _cached_input_tokens(end: StreamEnd | ProviderReply | None) -> int:
    """The input tokens the upstream read from its prompt cache, when it said."""
    return 0 if end is None else end.usage.cached_input_tokens


def _call_attributes(c: Candidate, call: ProviderRequest) -> dict[str, Any]:
    """A provider attempt's span attributes (OpenTelemetry GenAI conventions)."""
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": c.provider,
        "gen_ai.request.model": c.model,
        "gen_ai.request.max_tokens": call.max_tokens,
        "gen_ai.request.temperature": call.temperature,
    }


def _answer_attributes(end: StreamEnd | ProviderReply) -> dict[str, Any]:
    """What an answered attempt adds to its span."""
    return {
        "gen_ai.response.model": end.model,
        "gen_ai.response.finish_reasons": [end.finish_reason],
        "gen_ai.usage.input_tokens": end.usage.input_tokens,
        "gen_ai.usage.output_tokens": end.usage.output_tokens,
    }


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
