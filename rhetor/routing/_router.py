"""
Router: the actor that turns one LLM request into a reply.

For each request it windows the stored context, picks the system prompt,
plans the candidate models, reserves budget, calls the provider actors with
retries and fallbacks, settles the cost and stores the new turns. It holds no
one else's state: contexts, prompts, budget and providers are reached by
message only. The parts live beside it: the providers' status in
:mod:`~rhetor.routing._catalogue`, plans in :mod:`~rhetor.routing._planning`,
the attempt loop in :mod:`~rhetor.routing._attempts`, reservations and
charges in :mod:`~rhetor.routing._billing`, contexts in
:mod:`~rhetor.routing._conversations`, evaluations in :mod:`~rhetor.routing._evaluate`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from typing import Any, ClassVar

import anyio
import attrs

import actors
from rhetor import observe
from rhetor._asks import as_provider_error, ask
from rhetor._errors import (
    AllProvidersFailed,
    NotFound,
    ProviderError,
    RhetorError,
    UpstreamTimeout,
    ValidationError,
)
from rhetor._tokens import count_message_tokens, count_request_tokens
from rhetor._types import ChatMessage, Chunk, LLMRequest, Reply, RoutingParameters
from rhetor.budget._keeper import CheckBudget, GetActiveModel, GetBudgetMode, StoreActiveModel
from rhetor.budget._pricing import Pricer
from rhetor.observe import Observation
from rhetor.providers._actor import CountTokens
from rhetor.routing._attempts import Attempts, provider_request
from rhetor.routing._billing import Billing
from rhetor.routing._catalogue import Catalogue
from rhetor.routing._conversations import Conversations, split_messages, unstored_turns
from rhetor.routing._evaluate import DEFAULT_CRITERIA, evaluation, evaluation_request
from rhetor.routing._needs import needs_of
from rhetor.routing._plan import SIMULATED, TaskConfig, plan
from rhetor.routing._planning import DEFAULT_MAX_TOKENS, Planner, Prepared, max_tokens_of
from rhetor.storage._prompts import GetDefaultPrompt

__all__ = [
    "ActiveModelChanged",
    "BudgetModeChanged",
    "CountInput",
    "Estimate",
    "Evaluate",
    "Generate",
    "GetProviders",
    "Router",
    "SetActive",
    "Summarize",
]

log = logging.getLogger("rhetor.router")

# Turns an automatic summary leaves verbatim at the end of a long context.
_KEEP_RECENT = 4
# The model that writes summaries when the simulated provider is the fallback.
_SIMULATED_SUMMARY = "simulated-summary"


@attrs.frozen
class Generate:
    """
    Ask for a reply (``ask``), or stream one (``stream``).

    ``observation`` is the edge's record of the request it serves, which the
    router's task binds so that what it learns (attempts, timings, cost) is
    recorded there and its log lines carry the request's id.
    """

    request: LLMRequest
    observation: Observation | None = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen
class GetProviders:
    """Answers providers, their models and availability, and the active provider and model."""


@attrs.frozen
class SetActive:
    """Make ``provider``/``model`` head the default task's chain."""

    provider: str
    model: str | None = None


@attrs.frozen
class BudgetModeChanged:
    """The BudgetKeeper's limits or policy changed: whether reservations are now needed."""

    reservations_required: bool


@attrs.frozen
class ActiveModelChanged:
    """
    Another process stored the active model (``POST /provider`` there): head the chain with it.

    None: no active model is stored. A model this router's providers do not
    serve is ignored (and logged), as at start.
    """

    active: tuple[str, str] | None


@attrs.frozen
class CountInput:
    """
    Answers the input tokens of ``request`` as its first planned model would be sent it:
    ``{"input_tokens", "counted_by", "provider", "model"}``.

    ``counted_by`` is the provider when its backend counted (Anthropic's
    ``count_tokens``), else ``"estimate"``: Rhetor's own estimate, the one its
    reservations use.
    """

    request: LLMRequest
    observation: Observation | None = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen
class Estimate:
    """Answers estimated tokens and cost for a prompt, and whether it is under budget."""

    messages: tuple[ChatMessage, ...]
    model: str | None = None
    task_type: str = "default"
    max_tokens: int | None = None


@attrs.frozen
class Evaluate:
    """Score a response to a prompt against criteria, through the router."""

    prompt: str
    response: str
    criteria: tuple[str, ...] = DEFAULT_CRITERIA


@attrs.frozen
class Summarize:
    """Summarise a stored context through a cheap task and store the summary."""

    context_id: str


@attrs.define(eq=False, kw_only=True)
class Router(actors.Actor):
    """
    Plans, dispatches and accounts for every LLM request.

    Cancellation: cancelling an ask, or leaving a stream, cancels the provider
    call (closing the upstream request) and bills what was produced, under a
    shielded scope.

    Error handling: every failure reaches the caller as a :class:`RhetorError`:
    provider failures after all fallbacks as :class:`AllProvidersFailed`, a
    refused budget as :class:`BudgetExceeded`, an internal actor that is down
    as :class:`ServiceUnavailable`. Any other exception is a bug met with that
    one request: the runtime contains it (``contained``), so it fails only that
    request, as ``InternalError``, and the router keeps serving the others.
    """

    max_concurrency: ClassVar[int] = 100_000
    errors: ClassVar[tuple[type[BaseException], ...]] = (RhetorError,)
    contained: ClassVar[tuple[type[Exception], ...]] = (Exception,)

    _config: TaskConfig
    _providers: Mapping[str, actors.Ref]
    _budget: actors.Ref
    _contexts: actors.Ref
    _prompts: actors.Ref
    _pricer: Pricer
    # "auto" (the simulated provider answers only when no real one is up), "always" or "never".
    _simulated: str = "auto"
    # Seconds a whole request may take, unless it sets its own timeout.
    _request_timeout: float = 120.0
    # Seconds one provider call may take at most.
    _provider_timeout: float = 60.0
    # Tokens of stored history a request sends; past it, a context is summarised.
    _context_token_budget: int = 8000
    # Seconds between refreshes of the providers' status.
    _status_interval: float = 2.0
    _catalogue: Catalogue = attrs.field(init=False)
    _planner: Planner = attrs.field(init=False)
    _billing: Billing = attrs.field(init=False)
    _conversations: Conversations = attrs.field(init=False)
    _attempts: Attempts = attrs.field(init=False)
    # The stored active model last taken in (or found not served), so that a
    # stored choice is acted on, and logged, once per change.
    _last_stored: tuple[str, str] | None = attrs.field(init=False, default=None)
    # Invariant: the contexts a background summary is being made for.
    _summarizing: set[str] = attrs.field(init=False, factory=set)

    def __attrs_post_init__(self) -> None:
        self._catalogue = Catalogue(dict(self._providers), self._config, self._simulated)
        self._planner = Planner(self._config, self._catalogue, self._pricer)
        self._billing = Billing(self._budget, self._pricer)
        self._conversations = Conversations(self._contexts, self._context_token_budget)
        self._attempts = Attempts(
            self._catalogue,
            self._planner,
            self._billing,
            self._provider_timeout,
            self._store_turns,
        )

    async def started(self) -> None:
        self._billing.reservations_required = await ask(self._budget, GetBudgetMode())
        stored = await ask(self._budget, GetActiveModel())
        await self._refresh_status()
        self._adopt_active(stored)
        self.task_group.start_soon(self._watch_status)

    def _adopt_active(self, stored: tuple[str, str] | None) -> None:
        """Head the chain with the stored active model, if a provider serves it (once per change)."""
        if stored is None or stored == self._planner.active or stored == self._last_stored:
            return
        self._last_stored = stored
        provider, model = stored
        if model in self._catalogue.models().get(provider, []):
            self._planner.set_active((provider, model))
        else:
            log.warning("the stored active model %s/%s is not served now; routing by task", *stored)

    async def handle(self, message: Any) -> Any:
        if isinstance(message, Generate):
            # This handler's task serves this one request: bind its observation.
            observe.bind(message.observation)
            return await self._generate(message.request)
        if isinstance(message, BudgetModeChanged):
            self._billing.reservations_required = message.reservations_required
            return None
        if isinstance(message, ActiveModelChanged):
            self._adopt_active(message.active)
            return None
        if isinstance(message, GetProviders):
            return self._catalogue.describe(self._planner.active)
        if isinstance(message, SetActive):
            return await self._set_active(message)
        if isinstance(message, CountInput):
            observe.bind(message.observation)
            return await self._count_input(message.request)
        if isinstance(message, Estimate):
            return await self._estimate(message)
        if isinstance(message, Evaluate):
            criteria = message.criteria or DEFAULT_CRITERIA
            request = evaluation_request(message.prompt, message.response, criteria)
            reply = await self._generate(request)
            return evaluation(message.prompt, message.response, criteria, reply)
        if isinstance(message, Summarize):
            return await self._summarize(message.context_id)
        raise TypeError(f"Router cannot handle {type(message).__name__}")

    async def handle_stream(self, message: Any) -> AsyncIterator[Chunk]:
        if not isinstance(message, Generate):
            raise TypeError(f"Router cannot stream {type(message).__name__}")
        # This handler's task serves this one stream: bind its observation.
        observe.bind(message.observation)
        request = message.request
        # A stream has no deadline of its own: the deadline paces its attempts,
        # and each item must come within its attempt's timeout.
        deadline = anyio.current_time() + (request.timeout or self._request_timeout)
        prepared = await self._prepare(request)
        # aclosing: a reader that leaves must run the loop's cleanup (billing the
        # partial output) now, not whenever the generator is garbage collected.
        async with aclosing(
            self._attempts.run(request, prepared, deadline, streamed=True)
        ) as chunks:
            async for chunk in chunks:
                yield chunk

    # -- replies -----------------------------------------------------------

    async def _generate(self, request: LLMRequest) -> Reply:
        """A whole reply: the attempt loop's last chunk, within the request's deadline."""
        timeout = request.timeout or self._request_timeout
        with anyio.move_on_after(timeout):
            deadline = anyio.current_time() + timeout
            prepared = await self._prepare(request)
            reply: Reply | None = None
            async with aclosing(
                self._attempts.run(request, prepared, deadline, streamed=False)
            ) as chunks:
                async for chunk in chunks:
                    reply = chunk.reply
            # Invariant: the loop either raises or ends with the chunk that carries the reply.
            assert reply is not None
            return reply
        raise UpstreamTimeout(f"request did not finish in {timeout:g}s", provider="rhetor")

    async def _prepare(self, request: LLMRequest) -> Prepared:
        """
        What a request sends, and to which models: its turns after the context's
        window, its system prompt, the input estimate and the plan.
        """
        observation = observe.current()
        observation.asked(request.component, request.task_type, request.context_id)
        system_parts, turns = split_messages(request)
        if not turns or turns[-1].role != "user":
            raise ValidationError("messages", "the last message must be from the user")
        if not system_parts and request.component:
            prompt = await ask(self._prompts, GetDefaultPrompt(request.component))
            if prompt is not None:
                system_parts.append(prompt.content)
        history: list[ChatMessage] = []
        history_tokens = 0
        if request.context_id is not None:
            window = await self._conversations.window(request.context_id)
            history, history_tokens = list(window.messages), window.tokens
            if window.summary:
                system_parts.append(f"Summary of the earlier conversation: {window.summary}")
            tail = await self._conversations.stored_tail(request.context_id, history, turns)
            turns = list(unstored_turns(tail, turns))
        system = "\n\n".join(system_parts) or None
        messages = tuple(history + turns)
        # The window's tokens arrive with it: only the new turns, the system prompt,
        # the tools and the response schema are counted.
        input_estimate = (
            history_tokens
            + count_message_tokens(turns, system)
            + count_request_tokens(request.tools, request.response_format)
        )
        needs = needs_of(request, messages)
        route = self._planner.plan(request, input_estimate, needs)
        observation.asked(request.component, route.task_type, request.context_id)
        return Prepared(
            route, messages, system, tuple(turns), input_estimate, max_tokens_of(request), needs
        )

    async def _store_turns(
        self, request: LLMRequest, prepared: Prepared, answer: ChatMessage
    ) -> None:
        """Store a reply's new turns in its context; start a summary when the context outgrew the window."""
        context_id = request.context_id
        if context_id is None:
            return
        turns = (*prepared.new_turns, answer)
        metadata = {"component": request.component, "task_type": prepared.plan.task_type}
        due = await self._conversations.append(
            context_id, turns, metadata, check_summary=context_id not in self._summarizing
        )
        if due and context_id not in self._summarizing:
            self._summarizing.add(context_id)
            self.task_group.start_soon(self._auto_summarize, context_id)

    # -- summaries ---------------------------------------------------------

    async def _summarize(self, context_id: str, keep_recent: int = 0) -> dict[str, Any]:
        async def generate(prompt: str) -> Reply:
            summary_model = None
            if self._catalogue.simulated_fallback() and _SIMULATED_SUMMARY in (
                self._catalogue.models().get(SIMULATED, [])
            ):
                summary_model = _SIMULATED_SUMMARY
            return await self._generate(
                LLMRequest(
                    message=prompt,
                    task_type=self._config.summary_task,
                    component="rhetor",
                    model=summary_model,
                    max_tokens=300,
                )
            )

        return await self._conversations.summarize(context_id, keep_recent, generate)

    async def _auto_summarize(self, context_id: str) -> None:
        """
        Summarise a context whose unsummarised history outgrew the window.

        Runs in the background after the reply went out; the newest turns are
        kept verbatim. Error handling: a failure is logged and retried after
        the next turn, never surfaced to a caller. It runs in the router's own
        task group, where an exception would crash the router and every request
        in flight, so any Exception ends here: a RhetorError (a provider down)
        as a warning, anything else (a bug) with its traceback.
        """
        # Started from a request's task, whose observation this task inherited:
        # the summary is not part of that request.
        observe.bind(None)
        try:
            with anyio.move_on_after(self._request_timeout):
                await self._summarize(context_id, keep_recent=_KEEP_RECENT)
        except RhetorError as exc:
            log.warning("could not summarise context %s: %s", context_id, exc)
        except Exception:
            log.exception("summarising context %s failed", context_id)
        finally:
            self._summarizing.discard(context_id)

    # -- providers ---------------------------------------------------------

    async def _refresh_status(self) -> None:
        await self._catalogue.refresh()
        self._planner.forget()

    async def _watch_status(self) -> None:
        while True:
            await anyio.sleep(self._status_interval)
            await self._refresh_status()
            await self._follow_active()

    async def _follow_active(self) -> None:
        """
        Take the keeper's active model: another process may have stored one.

        On a shared ledger the keeper rereads it every 10 s (and at once when
        the change feed hears of a change, which also tells this router), so
        the active model follows another process's choice within 12 s even
        while the feed hears nothing. Error handling: a keeper that does not
        answer now is asked again next time.
        """
        try:
            stored = await ask(self._budget, GetActiveModel(), timeout=1.0)
        except RhetorError as exc:
            log.debug("could not read the active model now: %s", exc)
            return
        self._adopt_active(stored)

    async def _set_active(self, message: SetActive) -> dict[str, Any]:
        if message.provider not in self._catalogue.names:
            raise NotFound("provider", message.provider, field="provider")
        models = self._catalogue.models().get(message.provider, [])
        model = message.model or (models[0] if models else None)
        if model is None or model not in models:
            raise NotFound("model", f"{message.model} on {message.provider}", field="model")
        # Stored first: the choice survives a restart, as limits and policy do.
        await ask(self._budget, StoreActiveModel(message.provider, model))
        self._planner.set_active((message.provider, model))
        self._last_stored = (message.provider, model)
        return self._catalogue.describe(self._planner.active)

    async def _count_input(self, request: LLMRequest) -> dict[str, Any]:
        """
        The input tokens of what the first candidate would be sent (the context's window,
        the system prompt, the tools included), counted by its provider where it can.

        Error handling: a provider that cannot count, or fails to, leaves Rhetor's
        estimate (a failure is logged); nothing is reserved or billed.
        """
        prepared = await self._prepare(request)
        if not prepared.plan.candidates:
            raise AllProvidersFailed([])
        c = prepared.plan.candidates[0]
        answer: dict[str, Any] = {
            "input_tokens": prepared.input_estimate,
            "counted_by": "estimate",
            "provider": c.provider,
            "model": c.model,
        }
        ref = self._catalogue.ref(c.provider)
        if ref is None:
            return answer
        timeout = request.timeout or self._request_timeout
        call = provider_request(request, prepared, c, timeout)
        try:
            counted = await ref.ask(CountTokens(call), timeout=timeout)
        except (ProviderError, actors.ActorError) as raw:
            exc = as_provider_error(raw, c.provider, c.model, timeout)
            log.warning(
                "request %s: %s/%s could not count tokens (%s: %s); answering Rhetor's estimate",
                request.request_id,
                c.provider,
                c.model,
                exc.code,
                exc.message,
            )
            return answer
        if isinstance(counted, int):
            answer.update(input_tokens=counted, counted_by=c.provider)
        return answer

    async def _estimate(self, message: Estimate) -> dict[str, Any]:
        max_tokens = message.max_tokens or DEFAULT_MAX_TOKENS
        input_tokens = count_message_tokens(message.messages, None)
        if message.model is not None:
            provider = self._catalogue.provider_of(message.model)
            model = message.model
        else:
            # Price what would answer now: the head of the plan, not the configured primary.
            route = plan(
                self._config,
                task_type=message.task_type,
                component=None,
                provider=None,
                model=None,
                temperature=None,
                params=RoutingParameters(),
                available=self._catalogue.available,
                provider_models=self._catalogue.models(),
                active=self._planner.active,
                simulated_fallback=self._catalogue.simulated_fallback(),
                cost_of=lambda p, m: self._pricer.worst_case(p, m, input_tokens, max_tokens),
            )
            if not route.candidates:
                raise AllProvidersFailed([])
            provider, model = route.candidates[0].provider, route.candidates[0].model
        cost = self._pricer.worst_case(provider, model, input_tokens, max_tokens)
        under, warning = await ask(self._budget, CheckBudget(provider, cost))
        result: dict[str, Any] = {
            "model": model,
            "provider": provider,
            "estimated_tokens": {
                "input_tokens": input_tokens,
                "output_tokens": max_tokens,
                "total_tokens": input_tokens + max_tokens,
            },
            "estimated_cost": cost,
            "price_known": self._pricer.known(provider, model),
            "under_budget": under,
        }
        if warning:
            result["budget_warning"] = warning
        return result
