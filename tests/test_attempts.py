"""
The attempt loop (rhetor/routing/_attempts.py), driven for whole replies and for streams alike.

Every case runs twice, once per path (``whole`` and ``streamed``), through the
same loop: real ProviderActors over scripted backends (test upstreams that play
one step per call), a keeper actor that records each reservation and charge,
and simulated time (MockClock with autojump), so timeouts and backoffs cost no
real time. Where the paths must differ (text that already reached a stream's
reader cannot be taken back), the test says so.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing, asynccontextmanager
from typing import Any, ClassVar

import attrs
import pytest
import trio
import trio.testing

import actors
from rhetor import (
    AllProvidersFailed,
    BadRequest,
    BudgetExceeded,
    RateLimited,
    RhetorError,
    StreamBroken,
    UpstreamConnectionError,
)
from rhetor._tokens import count_message_tokens, count_tokens
from rhetor._types import (
    ChatMessage,
    Chunk,
    LLMRequest,
    ProviderReply,
    ProviderRequest,
    ProviderStatus,
    Reply,
    StreamEnd,
    TextDelta,
    Usage,
)
from rhetor.budget._keeper import Reservation, Reserve, Settle
from rhetor.budget._pricing import Pricer
from rhetor.providers._actor import ProviderActor
from rhetor.routing._attempts import Attempts
from rhetor.routing._billing import Billing
from rhetor.routing._catalogue import Catalogue
from rhetor.routing._plan import TaskConfig
from rhetor.routing._planning import Planner, Prepared, max_tokens_of

CONFIG = TaskConfig.from_dict(
    {
        "tasks": {"default": {"primary": "alpha-1", "fallbacks": ["beta-1"], "temperature": 0.5}},
        "models": {
            "alpha-1": {"provider": "alpha", "tier": "high"},
            "beta-1": {"provider": "beta", "tier": "low"},
        },
    }
)
PATHS = pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
CHUNKS = ("one ", "two ", "three ", "four")
USAGE = Usage(7, 4)


# -- the scripted upstreams ----------------------------------------------------


@attrs.frozen
class Answer:
    """Answer with these pieces of text (a whole reply joins them)."""

    chunks: tuple[str, ...] = CHUNKS
    usage: Usage = USAGE


@attrs.frozen
class Raise:
    """Fail before any text."""

    error: BaseException


@attrs.frozen
class CutAfter:
    """Send ``chunks`` pieces, then fail (a whole reply just fails: nothing was sent)."""

    chunks: int
    error: BaseException


@attrs.frozen
class StallAfter:
    """Send ``chunks`` pieces, then go silent until cancelled (a whole reply is silent at once)."""

    chunks: int


Step = Answer | Raise | CutAfter | StallAfter


@attrs.define(eq=False)
class ScriptedBackend:
    """A provider backend that plays the next scripted step on each call (a test upstream)."""

    name: str
    steps: list[Step] = attrs.Factory(list)
    requests: list[ProviderRequest] = attrs.Factory(list)
    started: list[float] = attrs.Factory(list)
    # Calls that ended by cancellation (or a reader closing the stream), not by themselves.
    abandoned: int = 0

    @property
    def models(self) -> tuple[str, ...]:
        return (f"{self.name}-1",)

    def _next(self, request: ProviderRequest) -> Step:
        self.requests.append(request)
        self.started.append(trio.current_time())
        return self.steps.pop(0) if self.steps else Answer()

    async def check(self) -> ProviderStatus:
        return ProviderStatus(self.name, True, self.models)

    async def complete(self, request: ProviderRequest) -> ProviderReply:
        step = self._next(request)
        if isinstance(step, Raise | CutAfter):
            raise step.error
        if isinstance(step, StallAfter):
            try:
                await trio.sleep_forever()
            finally:
                self.abandoned += 1
        assert isinstance(step, Answer)
        return ProviderReply("".join(step.chunks), request.model, step.usage)

    async def stream(self, request: ProviderRequest) -> AsyncIterator[TextDelta | StreamEnd]:
        step = self._next(request)
        if isinstance(step, Raise):
            raise step.error
        try:
            if isinstance(step, Answer):
                for text in step.chunks:
                    yield TextDelta(text)
                yield StreamEnd(step.usage, model=request.model)
                return
            for i in range(step.chunks):
                yield TextDelta(CHUNKS[i])
            if isinstance(step, CutAfter):
                raise step.error
            await trio.sleep_forever()
        except BaseException as exc:
            if not isinstance(exc, RhetorError):
                self.abandoned += 1
            raise

    async def aclose(self) -> None:
        return None


# -- a keeper that records ---------------------------------------------------------


@attrs.define(eq=False)
class Accounts:
    """What the keeper was asked: every reservation and every charge, in order."""

    reserves: list[Reserve] = attrs.Factory(list)
    settles: list[Settle] = attrs.Factory(list)
    # Models whose reservations are refused.
    refused: set[str] = attrs.Factory(set)

    def charges(self) -> list[tuple[str, str]]:
        """Each charge's model and outcome."""
        return [(s.model, s.status) for s in self.settles]


@attrs.define(eq=False)
class RecordingKeeper(actors.Actor):
    """A BudgetKeeper stand-in: grants every reservation (or refuses the listed models), records all."""

    max_concurrency: ClassVar[int] = 100
    errors: ClassVar[tuple[type[BaseException], ...]] = (RhetorError,)

    _accounts: Accounts

    async def handle(self, message: Any) -> Any:
        if isinstance(message, Reserve):
            self._accounts.reserves.append(message)
            if message.model in self._accounts.refused:
                raise BudgetExceeded("over the daily limit", period="daily", limit=1.0, spent=1.0)
            return Reservation(len(self._accounts.reserves), message.provider, message.amount)
        if isinstance(message, Settle):
            # As the real keeper: a charge id is recorded at most once (a
            # cancelled settle is sent again with try_tell).
            if all(s.charge_id != message.charge_id for s in self._accounts.settles):
                self._accounts.settles.append(message)
            return message.cost
        raise TypeError(type(message).__name__)


@attrs.define(eq=False)
class Loop:
    """One attempt loop over two providers, alpha (primary) and beta (fallback)."""

    attempts: Attempts
    planner: Planner
    alpha: ScriptedBackend
    beta: ScriptedBackend
    accounts: Accounts
    stored: list[str]

    def prepare(self, request: LLMRequest) -> Prepared:
        """What the Router's _prepare makes of a request without a context."""
        messages = (ChatMessage("user", request.message or ""),)
        estimate = count_message_tokens(messages, None)
        route = self.planner.plan(request, estimate)
        return Prepared(route, messages, None, messages, estimate, max_tokens_of(request))

    def run(self, *, streamed: bool, timeout: float = 30.0) -> Any:
        """The loop's generator for one request: "hello there", with ``timeout`` seconds."""
        request = LLMRequest(message="hello there", timeout=timeout)
        deadline = trio.current_time() + timeout
        return self.attempts.run(request, self.prepare(request), deadline, streamed=streamed)

    async def answer(self, *, streamed: bool, timeout: float = 30.0) -> tuple[list[Chunk], Reply]:
        """Every chunk of one request, and the reply its last chunk carries."""
        async with aclosing(self.run(streamed=streamed, timeout=timeout)) as items:
            chunks = [chunk async for chunk in items]
        reply = chunks[-1].reply
        assert chunks[-1].done and reply is not None
        return chunks, reply


@asynccontextmanager
async def loop(alpha: Sequence[Step] = (), beta: Sequence[Step] = ()) -> AsyncIterator[Loop]:
    """Run the attempt loop's actors (two providers, a recording keeper) for the block."""
    backends = {
        "alpha": ScriptedBackend("alpha", list(alpha)),
        "beta": ScriptedBackend("beta", list(beta)),
    }
    accounts = Accounts()
    stored: list[str] = []

    async def store(request: LLMRequest, prepared: Prepared, answer: ChatMessage) -> None:
        stored.append(answer.content)

    async with actors.open_system() as system:
        refs = {
            name: await system.spawn(
                lambda b=backend: ProviderActor(lambda: b, health_interval=0),
                name=f"provider:{name}",
            )
            for name, backend in backends.items()
        }
        keeper = await system.spawn(lambda: RecordingKeeper(accounts), name="budget")
        pricer = Pricer()
        catalogue = Catalogue(refs, CONFIG, "never")
        await catalogue.refresh()
        planner = Planner(CONFIG, catalogue, pricer)
        attempts = Attempts(catalogue, planner, Billing(keeper, pricer), 60.0, store)
        yield Loop(attempts, planner, backends["alpha"], backends["beta"], accounts, stored)


# -- the cases, each on both paths ---------------------------------------------


@PATHS
async def test_an_answer_is_settled_and_stored_before_the_reply_goes_out(
    streamed: bool, autojump_clock: trio.testing.MockClock
) -> None:
    """The first candidate answers: one reservation, one "ok" charge of the reported usage, the text stored."""
    async with loop() as lp:
        chunks, reply = await lp.answer(streamed=streamed)
    assert [c.text for c in chunks[:-1]] == (list(CHUNKS) if streamed else [])
    assert (reply.provider, reply.message, reply.usage) == ("alpha", "".join(CHUNKS), Usage(7, 4))
    assert lp.accounts.charges() == [("alpha-1", "ok")]
    assert len(lp.accounts.reserves) == 1 and lp.accounts.settles[0].reservation_id == 1
    assert lp.stored == ["".join(CHUNKS)]


@PATHS
async def test_a_transient_error_is_retried_on_the_same_model_no_sooner_than_retry_after(
    streamed: bool, autojump_clock: trio.testing.MockClock
) -> None:
    """A 429 with Retry-After 3 s is retried on alpha after at least 3 s; one reservation, one charge."""
    limited = RateLimited("slow down", provider="alpha", retry_after=3.0)
    async with loop(alpha=[Raise(limited)]) as lp:
        _, reply = await lp.answer(streamed=streamed)
    assert reply.provider == "alpha" and lp.beta.requests == []
    first, second = lp.alpha.started
    assert second - first >= 3.0
    assert lp.accounts.charges() == [("alpha-1", "ok")]


@PATHS
async def test_a_transient_error_that_persists_falls_back_after_two_retries(
    streamed: bool, autojump_clock: trio.testing.MockClock
) -> None:
    """A 5xx three times in a row: alpha is called three times, billed failed, and beta answers."""
    dropped = [Raise(UpstreamConnectionError("reset", provider="alpha")) for _ in range(3)]
    async with loop(alpha=dropped) as lp:
        _, reply = await lp.answer(streamed=streamed)
    assert reply.provider == "beta" and len(lp.alpha.requests) == 3
    assert "alpha/alpha-1 failed (upstream_connection_error)" in reply.routing
    assert lp.accounts.charges() == [("alpha-1", "failed"), ("beta-1", "ok")]


@PATHS
async def test_a_refused_request_falls_back_at_once_and_is_billed_failed_without_usage(
    streamed: bool, autojump_clock: trio.testing.MockClock
) -> None:
    """A 400 is never retried: beta answers at once, and alpha's charge records no usage."""
    async with loop(alpha=[Raise(BadRequest("no", provider="alpha"))]) as lp:
        start = trio.current_time()
        _, reply = await lp.answer(streamed=streamed)
        assert trio.current_time() == start
    assert reply.provider == "beta" and len(lp.alpha.requests) == 1
    assert "alpha/alpha-1 failed (upstream_bad_request)" in reply.routing
    assert lp.accounts.charges() == [("alpha-1", "failed"), ("beta-1", "ok")]
    assert lp.accounts.settles[0].usage == Usage()


@PATHS
async def test_a_bug_in_a_provider_actor_fails_that_candidate_alone(
    streamed: bool, autojump_clock: trio.testing.MockClock
) -> None:
    """A backend bug becomes this candidate's provider_error (one translation for both paths); beta answers."""
    async with loop(alpha=[Raise(KeyError("a bug"))]) as lp:
        _, reply = await lp.answer(streamed=streamed)
    assert reply.provider == "beta"
    assert "alpha/alpha-1 failed (provider_error)" in reply.routing
    assert len(lp.alpha.requests) == 1


@PATHS
async def test_a_silent_candidate_gets_half_the_time_left_then_falls_back_at_once(
    streamed: bool, autojump_clock: trio.testing.MockClock
) -> None:
    """With 30 s, a silent alpha is given 15 s and never retried; beta, the last, gets the rest."""
    async with loop(alpha=[StallAfter(0)]) as lp:
        start = trio.current_time()
        _, reply = await lp.answer(streamed=streamed, timeout=30.0)
        assert 15.0 <= trio.current_time() - start < 16.0
    assert reply.provider == "beta" and "upstream_timeout" in reply.routing
    assert [r.timeout for r in lp.alpha.requests] == [15.0]
    assert [r.timeout for r in lp.beta.requests] == [pytest.approx(15.0)]
    assert lp.alpha.abandoned == 1
    assert lp.accounts.charges() == [("alpha-1", "failed"), ("beta-1", "ok")]


async def read(items: Any, received: list[str]) -> None:
    """Read a stream to its end, keeping each piece's text."""
    async with aclosing(items) as chunks:
        async for chunk in chunks:
            received.append(chunk.text)


@PATHS
async def test_a_failure_after_the_first_chunk_breaks_a_stream_but_a_whole_reply_is_tried_again(
    streamed: bool, autojump_clock: trio.testing.MockClock
) -> None:
    """Cut after two pieces: a stream is StreamBroken (billed partial, never retried); a whole reply, which sent nothing, is retried."""
    cut = CutAfter(2, UpstreamConnectionError("dropped", provider="alpha"))
    async with loop(alpha=[cut]) as lp:
        if streamed:
            received: list[str] = []
            with pytest.raises(StreamBroken) as caught:
                await read(lp.run(streamed=True), received)
            assert received == list(CHUNKS[:2])
            assert isinstance(caught.value.__cause__, UpstreamConnectionError)
            assert len(lp.alpha.requests) == 1 and lp.beta.requests == [] and lp.stored == []
            [charge] = lp.accounts.settles
            assert (charge.model, charge.status) == ("alpha-1", "partial")
            assert charge.usage.output_tokens == count_tokens("".join(CHUNKS[:2]))
        else:
            _, reply = await lp.answer(streamed=False)
            assert reply.provider == "alpha" and len(lp.alpha.requests) == 2
            assert lp.accounts.charges() == [("alpha-1", "ok")]


@PATHS
async def test_cancelling_a_call_bills_the_prompt_and_what_was_produced(
    streamed: bool, autojump_clock: trio.testing.MockClock
) -> None:
    """Cancelled mid-call: the upstream call is abandoned and billed (prompt, plus a stream's pieces); nothing stored."""
    async with loop(alpha=[StallAfter(2)]) as lp:
        received: list[str] = []
        with trio.move_on_after(5.0) as scope:
            await read(lp.run(streamed=streamed), received)
        assert scope.cancelled_caught
        await trio.testing.wait_all_tasks_blocked()
        assert lp.alpha.abandoned == 1 and lp.stored == []
    produced = "".join(CHUNKS[:2]) if streamed else ""
    assert received == (list(CHUNKS[:2]) if streamed else [])
    [charge] = lp.accounts.settles
    assert charge.status == ("partial" if streamed else "failed")
    assert charge.usage.input_tokens > 0
    assert charge.usage.output_tokens == count_tokens(produced)


async def test_a_reader_leaving_a_stream_bills_the_pieces_it_took(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A reader that closes the stream after two pieces abandons the upstream call, billed partial."""
    async with loop(alpha=[StallAfter(3)]) as lp:
        async with aclosing(lp.run(streamed=True)) as items:
            taken = [(await anext(items)).text for _ in range(2)]
        await trio.testing.wait_all_tasks_blocked()
        assert lp.alpha.abandoned == 1
    assert taken == list(CHUNKS[:2])
    [charge] = lp.accounts.settles
    assert charge.status == "partial" and charge.usage.output_tokens > 0


@PATHS
async def test_every_candidate_failing_lists_each_attempt(
    streamed: bool, autojump_clock: trio.testing.MockClock
) -> None:
    """Both refuse: AllProvidersFailed names alpha then beta with their own errors; both billed failed."""
    async with loop(
        alpha=[Raise(BadRequest("no", provider="alpha"))],
        beta=[Raise(BadRequest("no", provider="beta"))],
    ) as lp:
        with pytest.raises(AllProvidersFailed) as caught:
            await lp.answer(streamed=streamed)
    assert [(p, e.code) for p, _, e in caught.value.attempts] == [
        ("alpha", "upstream_bad_request"),
        ("beta", "upstream_bad_request"),
    ]
    assert lp.accounts.charges() == [("alpha-1", "failed"), ("beta-1", "failed")]


@PATHS
async def test_a_budget_refusal_moves_on_and_the_reply_says_which_model_it_replaced(
    streamed: bool, autojump_clock: trio.testing.MockClock
) -> None:
    """The keeper refuses alpha: beta answers, and routing and budget_warning name the refusal."""
    async with loop() as lp:
        lp.accounts.refused.add("alpha-1")
        _, reply = await lp.answer(streamed=streamed)
    assert reply.provider == "beta" and lp.alpha.requests == []
    assert "the budget refused alpha/alpha-1" in reply.routing
    assert reply.budget_warning is not None
    assert reply.budget_warning.startswith("budget downgrade: alpha/alpha-1 was chosen first")
    assert lp.accounts.charges() == [("beta-1", "ok")]


@PATHS
async def test_a_request_the_budget_refuses_entirely_raises_the_first_refusal(
    streamed: bool, autojump_clock: trio.testing.MockClock
) -> None:
    """Every candidate refused: the caller gets the first BudgetExceeded, and no provider is called."""
    async with loop() as lp:
        lp.accounts.refused.update({"alpha-1", "beta-1"})
        with pytest.raises(BudgetExceeded):
            await lp.answer(streamed=streamed)
    assert lp.alpha.requests == [] == lp.beta.requests and lp.accounts.settles == []


@PATHS
async def test_a_retry_that_cannot_start_before_the_deadline_falls_back_instead(
    streamed: bool, autojump_clock: trio.testing.MockClock
) -> None:
    """A Retry-After longer than the time left is not waited for: beta answers within the deadline."""
    limited = RateLimited("slow down", provider="alpha", retry_after=60.0)
    async with loop(alpha=[Raise(limited)]) as lp:
        start = trio.current_time()
        _, reply = await lp.answer(streamed=streamed, timeout=10.0)
        assert trio.current_time() - start < 10.0
    assert reply.provider == "beta" and len(lp.alpha.requests) == 1
    assert math.isclose(lp.beta.requests[0].timeout, 10.0)
