"""
Router: the actor that turns one LLM request into a reply.

For each request it windows the stored context, picks the system prompt,
plans the candidate models, reserves budget, calls the provider actors with
retries and fallbacks, settles the cost and stores the new turns. It holds no
one else's state: contexts, prompts, budget and providers are reached by
message only.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import re
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from contextlib import aclosing
from datetime import UTC, datetime
from typing import Any, ClassVar, NoReturn

import anyio
import attrs

import actors
from rhetor._asks import ask
from rhetor._errors import (
    AllProvidersFailed,
    BudgetExceeded,
    NotFound,
    ProviderError,
    ProviderUnavailable,
    RhetorError,
    ServiceUnavailable,
    StreamBroken,
    UpstreamTimeout,
    ValidationError,
)
from rhetor._tokens import count_message_tokens, count_tokens
from rhetor._types import (
    ChatMessage,
    ProviderReply,
    ProviderRequest,
    ProviderStatus,
    StreamEnd,
    TextDelta,
    Usage,
)
from rhetor.budget._accounts import usd
from rhetor.budget._keeper import (
    CheckBudget,
    GetActiveModel,
    GetBudgetMode,
    Reservation,
    Reserve,
    Settle,
    StoreActiveModel,
    token_count,
)
from rhetor.budget._ledger import Billed
from rhetor.budget._pricing import Pricer
from rhetor.providers._actor import Complete, GetStatus, StreamCompletion
from rhetor.routing._plan import (
    SIMULATED,
    Candidate,
    RoutePlan,
    RoutingParameters,
    TaskConfig,
    plan,
)
from rhetor.storage._actor import StoreCall

__all__ = [
    "BudgetModeChanged",
    "Chunk",
    "Evaluate",
    "Generate",
    "GetProviders",
    "LLMRequest",
    "Reply",
    "Router",
    "SetActive",
    "Summarize",
]

log = logging.getLogger("rhetor.router")

DEFAULT_MAX_TOKENS = 1024
# Our offline token count can undershoot the upstream's; reserve with a margin.
_INPUT_MARGIN = 1.25
_RETRIES = 2
_BACKOFF = 0.25
# Turns an automatic summary leaves verbatim at the end of a long context.
_KEEP_RECENT = 4
# Plans kept between status refreshes; cleared whole when full.
_PLAN_CACHE_SIZE = 1024
# Seconds a reserve or a settle may wait for the BudgetKeeper, its restarts included.
_KEEPER_DEADLINE = 10.0
# Usage this far beyond the request's own bounds is a broken upstream, not a
# reply: output over twice max_tokens, or input over four times the padded
# estimate plus 4,096 tokens (room for a provider's own framing and for text
# the offline counter undercounts). It is billed at the reserved worst case.
_ABSURD_OUTPUT = 2
_ABSURD_INPUT = 4
_ABSURD_INPUT_SLACK = 4096


# Request ids: unique per process start (a random prefix) and cheap (a counter);
# uuid4 reads the OS entropy pool on every request.
_ID_PREFIX = uuid.uuid4().hex[:12]
_ID_COUNTER = itertools.count(1)


def _new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):012x}"


# Reservation keys and charge ids: unique per process like request ids, but
# never chosen by a client (a client may reuse its own request_id).
_KEY_COUNTER = itertools.count(1)


def _new_key(kind: str) -> str:
    return f"{_ID_PREFIX}{kind}{next(_KEY_COUNTER):x}"


def _retried(message: Settle) -> Settle:
    return attrs.evolve(message, retry=True)


def _padded(input_estimate: int) -> int:
    """The input tokens a reservation prices: the offline estimate, with a margin."""
    return int(input_estimate * _INPUT_MARGIN) + 16


def _now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@attrs.frozen
class LLMRequest:
    """
    One request for a reply: a single message, or a list of chat messages.
    """

    message: str | None = None
    messages: tuple[ChatMessage, ...] = ()
    context_id: str | None = None
    task_type: str = "default"
    component: str | None = None
    provider: str | None = None
    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    system_prompt: str | None = None
    routing: RoutingParameters = attrs.field(factory=RoutingParameters)
    request_id: str = attrs.field(factory=lambda: _new_request_id())
    # Seconds the whole request may take; None uses the server's setting.
    timeout: float | None = None

    def __attrs_post_init__(self) -> None:
        if self.message is None and not self.messages:
            raise ValidationError("message", "a message or messages is required")
        if self.temperature is not None and not 0 <= self.temperature <= 2:
            raise ValidationError("temperature", "must be from 0 to 2")
        if self.max_tokens is not None and self.max_tokens <= 0:
            raise ValidationError("max_tokens", "must be a positive whole number")
        if self.timeout is not None and self.timeout <= 0:
            raise ValidationError("timeout", "must be positive")


@attrs.frozen
class Reply:
    """
    A finished reply, as every edge reports it.
    """

    message: str
    model: str
    provider: str
    context: str | None
    usage: Usage
    cost: float
    routing: str
    request_id: str
    task_type: str
    budget_warning: str | None = None
    finish_reason: str = "stop"
    finished: bool = True
    timestamp: str = attrs.field(factory=_now_iso)

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "message": self.message,
            "model": self.model,
            "provider": self.provider,
            "context": self.context,
            "finished": self.finished,
            "timestamp": self.timestamp,
            "usage": {
                "input_tokens": self.usage.input_tokens,
                "output_tokens": self.usage.output_tokens,
                "total_tokens": self.usage.total_tokens,
            },
            "cost": self.cost,
            "routing": self.routing,
            "request_id": self.request_id,
            "task_type": self.task_type,
            "finish_reason": self.finish_reason,
        }
        if self.budget_warning:
            body["budget_warning"] = self.budget_warning
        return body


@attrs.frozen
class Chunk:
    """
    One streamed piece; the last one has ``done`` set and carries the :class:`Reply`.
    """

    text: str
    model: str
    provider: str
    context: str | None
    done: bool = False
    reply: Reply | None = None


@attrs.frozen
class Generate:
    """Ask for a reply (``ask``), or stream one (``stream``)."""

    request: LLMRequest


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
    criteria: tuple[str, ...] = ("accuracy", "clarity", "relevance")


@attrs.frozen
class Summarize:
    """Summarise a stored context through a cheap task and store the summary."""

    context_id: str


@attrs.frozen
class _Charge:
    """What one attempt was billed: cost, the usage recorded, and on what basis."""

    cost: float
    usage: Usage
    billed: Billed = "usage"


@attrs.frozen
class _Prepared:
    plan: RoutePlan
    messages: tuple[ChatMessage, ...]
    system: str | None
    new_turns: tuple[ChatMessage, ...]
    input_estimate: int


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

    def __init__(
        self,
        *,
        config: TaskConfig,
        providers: Mapping[str, actors.Ref],
        budget: actors.Ref,
        contexts: actors.Ref,
        prompts: actors.Ref,
        pricer: Pricer,
        simulated: str = "auto",
        request_timeout: float = 120.0,
        provider_timeout: float = 60.0,
        context_token_budget: int = 8000,
        status_interval: float = 2.0,
    ) -> None:
        self._config = config
        self._providers = dict(providers)
        self._budget = budget
        self._contexts = contexts
        self._prompts = prompts
        self._pricer = pricer
        self._simulated = simulated
        self._request_timeout = request_timeout
        self._provider_timeout = provider_timeout
        self._context_budget = context_token_budget
        self._status_interval = status_interval
        self._status: dict[str, ProviderStatus] = {}
        self._models_cache: dict[str, list[str]] | None = None
        # Invariant: plans made since the last status refresh or SetActive.
        self._plans: dict[tuple[Any, ...], RoutePlan] = {}
        # Invariant: None, or a (provider, model) pair that a provider serves.
        self._active: tuple[str, str] | None = None
        # Invariant: False only while the BudgetKeeper has no limit or ignores
        # them, so that no reservation could be refused or warned about; kept
        # current by BudgetModeChanged. True (reserve) until told otherwise.
        self._reservations_required = True
        # Invariant: the contexts a background summary is being made for.
        self._summarizing: set[str] = set()

    async def started(self) -> None:
        self._reservations_required = await ask(self._budget, GetBudgetMode())
        stored = await ask(self._budget, GetActiveModel())
        await self._refresh_status()
        if stored is not None:
            provider, model = stored
            if model in self._provider_models().get(provider, []):
                self._active = (provider, model)
            else:
                log.warning(
                    "the stored active model %s/%s is not served now; routing by task", *stored
                )
        self.task_group.start_soon(self._watch_status)

    # -- provider status ---------------------------------------------------

    async def _refresh_status(self) -> None:
        async def one(name: str, ref: actors.Ref) -> None:
            try:
                self._status[name] = await ref.ask(GetStatus(), timeout=2.0)
            except actors.ActorError as exc:
                self._status[name] = ProviderStatus(name, False, (), f"actor down: {exc}")

        async with anyio.create_task_group() as tg:
            for name, ref in self._providers.items():
                tg.start_soon(one, name, ref)
        self._models_cache = None
        self._plans.clear()

    async def _watch_status(self) -> None:
        while True:
            await anyio.sleep(self._status_interval)
            await self._refresh_status()

    def _available(self, provider: str) -> bool:
        ref = self._providers.get(provider)
        status = self._status.get(provider)
        return ref is not None and ref.alive and status is not None and status.available

    def _provider_models(self) -> dict[str, list[str]]:
        """Each provider's models: configured ones first, then what it reports (cached)."""
        # Invariant: the cache matches self._status; _refresh_status clears it.
        if self._models_cache is None:
            self._models_cache = self._collect_models()
        return self._models_cache

    def _collect_models(self) -> dict[str, list[str]]:
        models: dict[str, list[str]] = {name: [] for name in self._providers}
        for name, info in self._config.models.items():
            if info.provider in models:
                models[info.provider].append(name)
        for name, status in self._status.items():
            for model in status.models:
                if model not in models.setdefault(name, []):
                    models[name].append(model)
        return models

    def _simulated_fallback(self) -> bool:
        if self._simulated == "never":
            return False
        if self._simulated == "always":
            return True
        return not any(self._available(p) for p in self._providers if p != "simulated")

    # -- planning ----------------------------------------------------------

    def _max_tokens(self, request: LLMRequest) -> int:
        return request.max_tokens if request.max_tokens is not None else DEFAULT_MAX_TOKENS

    def _worst_case(self, provider: str, model: str, input_tokens: int, max_tokens: int) -> float:
        return self._pricer.worst_case(provider, model, _padded(input_tokens), max_tokens)

    async def _prepare(self, request: LLMRequest) -> _Prepared:
        given = list(request.messages)
        if request.message is not None:
            given.append(ChatMessage("user", request.message))
        system_parts: list[str] = []
        if request.system_prompt:
            system_parts.append(request.system_prompt)
        turns: list[ChatMessage] = []
        for m in given:
            if m.role == "system":
                if not request.system_prompt:
                    system_parts.append(m.content)
            else:
                turns.append(m)
        if not turns or turns[-1].role != "user":
            raise ValidationError("messages", "the last message must be from the user")
        if not system_parts and request.component:
            prompt = await ask(self._prompts, StoreCall("default_prompt", (request.component,)))
            if prompt is not None:
                system_parts.append(prompt.content)
        history: list[ChatMessage] = []
        if request.context_id is not None:
            summary, window = await ask(
                self._contexts,
                StoreCall("window", (request.context_id, self._context_budget)),
            )
            history = list(window)
            if summary:
                system_parts.append(f"Summary of the earlier conversation: {summary}")
            turns = list(_unstored_turns(await self._stored_tail(request, history, turns), turns))
        system = "\n\n".join(system_parts) or None
        messages = tuple(history + turns)
        input_estimate = count_message_tokens(messages, system)
        max_tokens = self._max_tokens(request)

        def cost_of(provider: str, model: str) -> float:
            return self._worst_case(provider, model, input_estimate, max_tokens)

        simulated_fallback = self._simulated_fallback()
        key = None
        if request.routing.max_cost is None:
            # Without a max cost the plan depends only on these, so it is cached;
            # provider liveness is part of the key, status refreshes clear it.
            key = (
                request.task_type,
                request.component,
                request.provider,
                request.model,
                request.temperature,
                request.routing,
                self._active,
                simulated_fallback,
                tuple(ref.alive for ref in self._providers.values()),
            )
            route = self._plans.get(key)
            if route is not None:
                return _Prepared(route, messages, system, tuple(turns), input_estimate)
        route = plan(
            self._config,
            task_type=request.task_type,
            component=request.component,
            provider=request.provider,
            model=request.model,
            temperature=request.temperature,
            params=request.routing,
            available=self._available,
            provider_models=self._provider_models(),
            active=self._active,
            simulated_fallback=simulated_fallback,
            cost_of=cost_of,
        )
        if key is not None:
            if len(self._plans) >= _PLAN_CACHE_SIZE:
                self._plans.clear()
            self._plans[key] = route
        return _Prepared(route, messages, system, tuple(turns), input_estimate)

    async def _stored_tail(
        self, request: LLMRequest, window: list[ChatMessage], turns: list[ChatMessage]
    ) -> list[ChatMessage]:
        """
        The context's newest stored turns, to match the client's history against.

        The window is them, unless it came back empty (a summary or one turn
        over the token budget) while the client sent history that may repeat
        stored turns: then the store is asked for as many as the client sent.
        """
        if window or len(turns) < 2:
            return window
        assert request.context_id is not None  # for mypy: only called with a context
        try:
            stored = await ask(
                self._contexts,
                StoreCall("history", (request.context_id,), {"limit": len(turns) - 1}),
            )
        except NotFound:
            return []
        return [ChatMessage(m.role, m.content) for m in stored]

    def _downgrades(
        self, prepared: _Prepared, request: LLMRequest, refused: Candidate
    ) -> list[Candidate]:
        """
        What may stand in for a candidate the budget refused, under ``enforce``.

        Models with a known price no dearer than the refused one (the dearest
        first, free local ones last) that still meet the request's routing
        parameters; for a request naming only a provider, that provider's
        models alone; for one naming a model, nothing: an explicit model is
        never swapped.
        """
        if prepared.plan.pinned == "model":
            return []
        tried = {(c.provider, c.model) for c in prepared.plan.candidates}
        max_tokens = self._max_tokens(request)
        params = request.routing
        ceiling = self._worst_case(
            refused.provider, refused.model, prepared.input_estimate, max_tokens
        )
        if params.max_cost is not None:
            ceiling = min(ceiling, params.max_cost)
        options = []
        for provider, models in self._provider_models().items():
            if not self._available(provider) or (
                provider == SIMULATED and not self._simulated_fallback()
            ):
                continue
            if prepared.plan.pinned == "provider" and provider != refused.provider:
                continue
            for model in models:
                # A model without a known price would be priced at zero: a
                # stand-in the budget cannot bound, so it is never one.
                if (provider, model) in tried or not self._pricer.known(provider, model):
                    continue
                info = self._config.models.get(model)
                if params.required_capabilities and (
                    info is None or not params.required_capabilities <= info.capabilities
                ):
                    continue
                cost = self._worst_case(provider, model, prepared.input_estimate, max_tokens)
                if cost <= ceiling:
                    options.append((cost == 0.0, -cost, provider, model))
        options.sort()
        return [Candidate(p, m, refused.temperature) for _, _, p, m in options]

    def _provider_request(
        self, prepared: _Prepared, candidate: Candidate, request: LLMRequest, timeout: float
    ) -> ProviderRequest:
        return ProviderRequest(
            model=candidate.model,
            messages=prepared.messages,
            system=prepared.system,
            temperature=candidate.temperature,
            max_tokens=self._max_tokens(request),
            request_id=request.request_id,
            timeout=timeout,
        )

    # -- accounting --------------------------------------------------------

    async def _reserve(self, request: LLMRequest, prepared: _Prepared, c: Candidate) -> Reservation:
        if not self._reservations_required:
            # Nothing could refuse or warn: skip the round trip (id 0 settles as none).
            return Reservation(0, c.provider, 0.0)
        max_tokens = self._max_tokens(request)
        padded = _padded(prepared.input_estimate)
        amount = self._pricer.worst_case(c.provider, c.model, padded, max_tokens)
        message = Reserve(
            request.request_id,
            c.provider,
            c.model,
            amount,
            padded,
            max_tokens,
            request.component,
            request.context_id,
            key=_new_key("r"),
        )
        # The same key again after a keeper restart answers the same reservation.
        reservation: Reservation = await self._ask_budget(message)
        return reservation

    async def _ask_budget(self, message: Any, again: Callable[[Any], Any] | None = None) -> Any:
        """
        Ask the BudgetKeeper; if it died or is restarting, ask its next incarnation.

        ``again(message)`` is what is sent after a death (the message itself by
        default): the keeper may have recorded the first one before it died,
        so it must be safe to repeat.

        Error handling: a keeper still down at the deadline is
        :class:`ServiceUnavailable`; its own answers pass through.
        """
        deadline = anyio.current_time() + _KEEPER_DEADLINE
        while True:
            try:
                return await self._budget.ask(
                    message, timeout=max(0.001, deadline - anyio.current_time())
                )
            except (actors.ActorDied, actors.PoisonMessage) as exc:
                if isinstance(exc, actors.PoisonMessage) or anyio.current_time() >= deadline:
                    raise ServiceUnavailable(f"budget keeper is unavailable: {exc}") from exc
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
            except actors.AskTimeout as exc:
                raise ServiceUnavailable(
                    f"budget keeper did not answer in {_KEEPER_DEADLINE:g}s"
                ) from exc
            except actors.ActorError as exc:
                raise ServiceUnavailable(f"budget keeper is unavailable: {exc}") from exc

    def _bill(
        self,
        request: LLMRequest,
        prepared: _Prepared,
        c: Candidate,
        usage: Usage,
        usage_valid: bool,
    ) -> _Charge:
        """
        What an attempt costs: its usage priced, unless that usage cannot be trusted.

        Usage the upstream marked malformed, or counts that are not whole
        numbers from 0, are billed at the worst case the request reserved; so
        is usage absurd for the request (see _ABSURD_OUTPUT), whose counts
        are recorded capped at the reservation's.
        """
        max_tokens = self._max_tokens(request)
        padded = _padded(prepared.input_estimate)
        inputs, outputs = token_count(usage.input_tokens), token_count(usage.output_tokens)
        if usage_valid and inputs is not None and outputs is not None:
            if (
                outputs <= _ABSURD_OUTPUT * max_tokens
                and inputs <= _ABSURD_INPUT * padded + _ABSURD_INPUT_SLACK
            ):
                counted = Usage(inputs, outputs)
                return _Charge(self._pricer.price(c.provider, c.model, counted), counted)
            billed: Billed = "capped"
            counted = Usage(min(inputs, padded), min(outputs, max_tokens))
        else:
            billed = "worst_case"
            counted = Usage(padded, max_tokens)
        cost = self._pricer.worst_case(c.provider, c.model, padded, max_tokens)
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
        return _Charge(cost, counted, billed)

    async def _settle(
        self,
        request: LLMRequest,
        prepared: _Prepared,
        reservation: Reservation,
        c: Candidate,
        usage: Usage,
        status: str,
        *,
        usage_valid: bool = True,
    ) -> _Charge:
        """
        Record what an attempt cost before its reply goes out; answers what was billed.

        An ask, not a tell: the keeper answers once the charge is in the ledger,
        so an acknowledged reply always has its charge on disk. A keeper that
        dies is asked again with ``retry`` set; it records a charge id at most
        once. A cancelled request is still billed: see below.
        """
        charge = self._bill(request, prepared, c, usage, usage_valid)
        message = Settle(
            reservation.id,
            request.request_id,
            c.provider,
            c.model,
            request.component,
            request.context_id,
            charge.usage,
            charge.cost,
            status,  # type: ignore[arg-type]
            charge.billed,
            reservation.amount if reservation.id else None,
            _new_key("c"),
        )
        try:
            cost = await self._ask_budget(message, _retried)
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
            await self._tell_budget(_retried(message), request.request_id)
            raise
        return attrs.evolve(charge, cost=cost)

    async def _tell_budget(self, message: Settle, request_id: str) -> None:
        try:
            if not self._budget.try_tell(message):
                with anyio.CancelScope(shield=True, deadline=anyio.current_time() + 5.0):
                    await self._budget.tell(message)
        except actors.ActorError as exc:
            log.error("budget keeper unavailable; could not record %s: %s", request_id, exc)

    async def _store_turns(self, request: LLMRequest, prepared: _Prepared, text: str) -> None:
        if request.context_id is None:
            return
        turns = (*prepared.new_turns, ChatMessage("assistant", text))
        metadata = {"component": request.component, "task_type": prepared.plan.task_type}
        await ask(
            self._contexts,
            StoreCall("append", (request.context_id, turns), {"metadata": metadata}),
        )
        if request.context_id in self._summarizing:
            return
        long = await ask(
            self._contexts,
            StoreCall("needs_summary", (request.context_id, self._context_budget)),
        )
        if long:
            self._summarizing.add(request.context_id)
            self.task_group.start_soon(self._auto_summarize, request.context_id)

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
        try:
            with anyio.move_on_after(self._request_timeout):
                await self._summarize(context_id, keep_recent=_KEEP_RECENT)
        except RhetorError as exc:
            log.warning("could not summarise context %s: %s", context_id, exc)
        except Exception:
            log.exception("summarising context %s failed", context_id)
        finally:
            self._summarizing.discard(context_id)

    # -- dispatch ----------------------------------------------------------

    def _deadline_left(self, deadline: float) -> float:
        return deadline - anyio.current_time()

    def _attempt_timeout(self, deadline: float, last: bool) -> float:
        """
        How long one provider call may take.

        A candidate that is not the last may use at most half of what is left,
        so that a hanging primary still leaves time for its fallbacks.
        """
        left = max(0.0, self._deadline_left(deadline))
        return min(self._provider_timeout, left if last else left / 2)

    async def _retry(self, attempt: int, exc: ProviderError, deadline: float) -> bool:
        """
        Whether to call the same candidate again, after a jittered backoff.

        Only transient errors are retried, at most ``_RETRIES`` times. A timeout
        is not: the attempt already used its share of the deadline, and a
        provider that hung once is likely to hang again, so the fallbacks get
        the time that is left.
        """
        if not exc.transient or attempt >= _RETRIES or isinstance(exc, UpstreamTimeout):
            return False
        return await self._backoff(attempt, exc, deadline)

    async def _backoff(self, attempt: int, exc: ProviderError, deadline: float) -> bool:
        """Sleep before a retry; False when the deadline leaves no room for one."""
        delay = _BACKOFF * (2**attempt) * random.uniform(0.5, 1.5)
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            delay = max(delay, float(retry_after))
        if anyio.current_time() + delay >= deadline:
            return False
        await anyio.sleep(delay)
        return True

    def _provider_ref(self, c: Candidate) -> actors.Ref:
        """The provider actor for a candidate; a provider that is not running is unavailable."""
        ref = self._providers.get(c.provider)
        if ref is None:
            raise ProviderUnavailable(
                f"provider {c.provider!r} is not running", provider=c.provider, model=c.model
            )
        return ref

    async def _complete_once(
        self, c: Candidate, provider_request: ProviderRequest, timeout: float
    ) -> ProviderReply:
        ref = self._provider_ref(c)
        try:
            reply: ProviderReply = await ref.ask(Complete(provider_request), timeout=timeout)
        except actors.ActorError as exc:
            raise _as_provider_error(exc, c, timeout) from exc
        return reply

    def _candidates(self, request: LLMRequest, prepared: _Prepared) -> _CandidateQueue:
        return _CandidateQueue(self, request, prepared)

    def _explain(
        self,
        prepared: _Prepared,
        c: Candidate,
        failures: list[tuple[str, str, RhetorError]],
        refusals: Sequence[tuple[Candidate, BudgetExceeded]] = (),
    ) -> str:
        """The plan's explanation, then which candidate answered after what failed or was refused."""
        explanation = prepared.plan.explanation
        head = prepared.plan.candidates[0] if prepared.plan.candidates else None
        if head is None or (head.provider, head.model) != (c.provider, c.model):
            why = [f"{p}/{m} failed ({e.code})" for p, m, e in failures]
            why += [
                f"the budget refused {r.provider}/{r.model} ({exc.message})" for r, exc in refusals
            ]
            explanation += f"; answered by {c.provider}/{c.model}"
            if refusals:
                explanation += " (a budget downgrade)"
            if why:
                explanation += f" after {'; '.join(why)}"
        return explanation

    async def _generate(self, request: LLMRequest) -> Reply:
        timeout = request.timeout or self._request_timeout
        with anyio.move_on_after(timeout):
            return await self._generate_within(request, anyio.current_time() + timeout)
        raise UpstreamTimeout(f"request did not finish in {timeout:g}s", provider="rhetor")

    async def _generate_within(self, request: LLMRequest, deadline: float) -> Reply:
        prepared = await self._prepare(request)
        failures: list[tuple[str, str, RhetorError]] = []
        candidates = self._candidates(request, prepared)
        while (granted := await candidates.next()) is not None:
            c, reservation = granted
            attempt = 0
            while True:
                call_timeout = self._attempt_timeout(deadline, candidates.last)
                preq = self._provider_request(prepared, c, request, call_timeout)
                try:
                    result = await self._complete_once(c, preq, call_timeout)
                except ProviderError as exc:
                    if await self._retry(attempt, exc, deadline):
                        attempt += 1
                        continue
                    await self._settle(request, prepared, reservation, c, Usage(), "failed")
                    failures.append((c.provider, c.model, exc))
                    break
                except BaseException:
                    # Cancelled mid-call: the upstream saw the prompt, so bill its input.
                    partial = Usage(prepared.input_estimate, 0)
                    await self._settle(request, prepared, reservation, c, partial, "failed")
                    raise
                charge = await self._settle(
                    request,
                    prepared,
                    reservation,
                    c,
                    result.usage,
                    "ok",
                    usage_valid=result.usage_valid,
                )
                await self._store_turns(request, prepared, result.text)
                return Reply(
                    message=result.text,
                    model=result.model or c.model,
                    provider=c.provider,
                    context=request.context_id,
                    usage=charge.usage,
                    cost=charge.cost,
                    routing=candidates.explain(c, failures),
                    request_id=request.request_id,
                    task_type=prepared.plan.task_type,
                    budget_warning=candidates.budget_warning(c, reservation),
                    finish_reason=result.finish_reason,
                )
        candidates.raise_unanswered(failures)

    async def _stream(self, request: LLMRequest) -> AsyncGenerator[Chunk, None]:
        timeout = request.timeout or self._request_timeout
        deadline = anyio.current_time() + timeout
        prepared = await self._prepare(request)
        failures: list[tuple[str, str, RhetorError]] = []
        candidates = self._candidates(request, prepared)
        while (granted := await candidates.next()) is not None:
            c, reservation = granted
            attempt = 0
            while True:
                call_timeout = self._attempt_timeout(deadline, candidates.last)
                preq = self._provider_request(prepared, c, request, call_timeout)
                produced: list[str] = []
                end: StreamEnd | None = None
                sent_any = False
                try:
                    async with self._provider_ref(c).stream(
                        StreamCompletion(preq), timeout=max(call_timeout, 0.001)
                    ) as items:
                        async for item in items:
                            if isinstance(item, TextDelta):
                                produced.append(item.text)
                                sent_any = True
                                yield Chunk(item.text, c.model, c.provider, request.context_id)
                            elif isinstance(item, StreamEnd):
                                end = item
                except (ProviderError, actors.ActorError) as raw:
                    exc = _as_provider_error(raw, c, call_timeout)
                    partial = Usage(prepared.input_estimate, count_tokens("".join(produced)))
                    if sent_any:
                        await self._settle(request, prepared, reservation, c, partial, "partial")
                        raise StreamBroken(
                            f"stream from {c.provider}/{c.model} broke after it began: {exc.message}",
                            provider=c.provider,
                            model=c.model,
                        ) from raw
                    if await self._retry(attempt, exc, deadline):
                        attempt += 1
                        continue
                    await self._settle(request, prepared, reservation, c, Usage(), "failed")
                    failures.append((c.provider, c.model, exc))
                    break
                except BaseException:
                    # Cancelled or the reader left: bill what was produced.
                    partial = Usage(prepared.input_estimate, count_tokens("".join(produced)))
                    await self._settle(request, prepared, reservation, c, partial, "partial")
                    raise
                text = "".join(produced)
                usage = (
                    end.usage
                    if end is not None
                    else Usage(prepared.input_estimate, count_tokens(text))
                )
                charge = await self._settle(
                    request,
                    prepared,
                    reservation,
                    c,
                    usage,
                    "ok",
                    usage_valid=end is None or end.usage_valid,
                )
                await self._store_turns(request, prepared, text)
                reply = Reply(
                    message=text,
                    model=(end.model if end is not None and end.model else c.model),
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
                yield Chunk("", reply.model, c.provider, request.context_id, True, reply)
                return
        candidates.raise_unanswered(failures)

    # -- other operations --------------------------------------------------

    def _providers_info(self) -> dict[str, Any]:
        models = self._provider_models()
        providers = {}
        for name in self._providers:
            status = self._status.get(name)
            providers[name] = {
                "available": self._available(name),
                "models": models.get(name, []),
                "reason": "" if status is None else status.reason,
            }
        active = self._active
        if active is None:
            _, route = self._config.route_for("default", None)
            head = next(
                (
                    Candidate(self._config.provider_of(m), m, 0)
                    for m in route.chain
                    if self._available(self._config.provider_of(m))
                ),
                None,
            )
            if head is None and self._simulated_fallback() and models.get("simulated"):
                head = Candidate("simulated", models["simulated"][0], 0)
            active = (head.provider, head.model) if head else None
        return {
            "providers": providers,
            "active_provider": active[0] if active else None,
            "active_model": active[1] if active else None,
            "simulated_fallback": self._simulated_fallback(),
        }

    async def _estimate(self, message: Estimate) -> dict[str, Any]:
        max_tokens = message.max_tokens or DEFAULT_MAX_TOKENS
        input_tokens = count_message_tokens(message.messages, None)
        if message.model is not None:
            provider = self._resolve_provider(message.model)
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
                available=self._available,
                provider_models=self._provider_models(),
                active=self._active,
                simulated_fallback=self._simulated_fallback(),
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

    def _resolve_provider(self, model: str) -> str:
        for provider, models in self._provider_models().items():
            if model in models:
                return provider
        raise NotFound("model", model, field="model")

    async def _evaluate(self, message: Evaluate) -> dict[str, Any]:
        criteria = message.criteria or ("accuracy", "clarity", "relevance")
        instruction = (
            "Evaluate the response to the prompt. Score each criterion from 0 to 10 and answer "
            'with JSON only: {"scores": {"<criterion>": <number>}, "overall_score": <number>, '
            '"feedback": "<text>"}.\n'
            f"Criteria: {', '.join(criteria)}\n\nPrompt:\n{message.prompt}\n\nResponse:\n{message.response}"
        )
        reply = await self._generate(
            LLMRequest(
                message=instruction, task_type="reasoning", component="rhetor", max_tokens=512
            )
        )
        parsed = _parse_evaluation(reply.message, criteria)
        if parsed is not None:
            scores, overall, feedback = parsed
            method = "model"
        else:
            scores = _heuristic_scores(message.prompt, message.response, criteria)
            overall = round(sum(scores.values()) / len(scores), 2)
            feedback = (
                "The model's answer was not a JSON evaluation, so these scores come from "
                "Rhetor's lexical heuristic (relevance by word overlap, clarity by sentence "
                f"length, completeness by length). Model said: {reply.message[:200]}"
            )
            method = "heuristic"
        return {
            "evaluation": {
                "overall_score": overall,
                "scores": scores,
                "feedback": feedback,
                "method": method,
            },
            "model": reply.model,
            "provider": reply.provider,
            "cost": reply.cost,
        }

    async def _summarize(self, context_id: str, keep_recent: int = 0) -> dict[str, Any]:
        stored = await ask(self._contexts, StoreCall("history", (context_id,)))
        if not stored:
            raise NotFound("context", context_id, field="context_id")
        info = await ask(self._contexts, StoreCall("get", (context_id,)))
        if info is None:
            # Deleted between the two asks: as gone as if it never was.
            raise NotFound("context", context_id, field="context_id")
        covered = stored[:-keep_recent] if keep_recent else stored
        if not covered:
            return {"context_id": context_id, "summary": info.summary, "upto": None, "model": None}
        lines = [f"Earlier summary: {info.summary}"] if info.summary else []
        lines += [f"{m.role}: {m.content}" for m in covered]
        transcript = "\n".join(lines)
        models = self._provider_models()
        summary_model = None
        if self._simulated_fallback() and "simulated-summary" in models.get("simulated", []):
            summary_model = "simulated-summary"
        reply = await self._generate(
            LLMRequest(
                message=f"Summarise this conversation in a few sentences:\n\n{transcript}",
                task_type=self._config.summary_task,
                component="rhetor",
                model=summary_model,
                max_tokens=300,
            )
        )
        upto = covered[-1].seq
        await ask(
            self._contexts,
            StoreCall("set_summary", (context_id, reply.message, upto)),
        )
        return {
            "context_id": context_id,
            "summary": reply.message,
            "upto": upto,
            "model": reply.model,
        }

    async def handle(self, message: Any) -> Any:
        if isinstance(message, Generate):
            return await self._generate(message.request)
        if isinstance(message, BudgetModeChanged):
            self._reservations_required = message.reservations_required
            return None
        if isinstance(message, GetProviders):
            return self._providers_info()
        if isinstance(message, SetActive):
            if message.provider not in self._providers:
                raise NotFound("provider", message.provider, field="provider")
            models = self._provider_models().get(message.provider, [])
            model = message.model or (models[0] if models else None)
            if model is None or model not in models:
                raise NotFound("model", f"{message.model} on {message.provider}", field="model")
            # Stored first: the choice survives a restart, as limits and policy do.
            await ask(self._budget, StoreActiveModel(message.provider, model))
            self._active = (message.provider, model)
            self._plans.clear()
            return self._providers_info()
        if isinstance(message, Estimate):
            return await self._estimate(message)
        if isinstance(message, Evaluate):
            return await self._evaluate(message)
        if isinstance(message, Summarize):
            return await self._summarize(message.context_id)
        raise TypeError(f"Router cannot handle {type(message).__name__}")

    async def handle_stream(self, message: Any) -> AsyncIterator[Chunk]:
        if not isinstance(message, Generate):
            raise TypeError(f"Router cannot stream {type(message).__name__}")
        # aclosing: a reader that leaves must run _stream's cleanup (billing the
        # partial output) now, not whenever the generator is garbage collected.
        async with aclosing(self._stream(message.request)) as chunks:
            async for chunk in chunks:
                yield chunk


@attrs.define(eq=False)
class _CandidateQueue:
    """
    The candidates of one request, each handed out with a granted reservation.

    When the budget refuses a candidate, cheaper models and then free local
    ones are queued after the plan (the ``enforce`` downgrade path; see
    :meth:`Router._downgrades` for what may stand in). Every refusal is kept,
    so that a reply from a stand-in says which model it replaced and why.
    """

    _router: Router
    _request: LLMRequest
    _prepared: _Prepared
    _queue: list[Candidate] = attrs.field(init=False)
    # Invariant: the candidates the budget refused, in the order they were tried.
    _refusals: list[tuple[Candidate, BudgetExceeded]] = attrs.field(init=False, factory=list)
    _extended: bool = attrs.field(init=False, default=False)

    def __attrs_post_init__(self) -> None:
        self._queue = list(self._prepared.plan.candidates)

    @property
    def last(self) -> bool:
        """True when the candidate just handed out is the last one planned."""
        return not self._queue

    async def next(self) -> tuple[Candidate, Reservation] | None:
        while self._queue:
            c = self._queue.pop(0)
            try:
                reservation = await self._router._reserve(self._request, self._prepared, c)
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
                    downgrades = self._router._downgrades(self._prepared, self._request, c)
                    self._queue.extend(d for d in downgrades if d not in self._queue)
                continue
            return c, reservation
        return None

    def explain(self, c: Candidate, failures: list[tuple[str, str, RhetorError]]) -> str:
        """The reply's ``routing``: the plan's explanation, then what replaced what and why."""
        return self._router._explain(self._prepared, c, failures, self._refusals)

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
        return "; ".join(notes) or None

    def raise_unanswered(self, failures: list[tuple[str, str, RhetorError]]) -> NoReturn:
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


def _unstored_turns(
    stored: Sequence[ChatMessage], turns: Sequence[ChatMessage]
) -> tuple[ChatMessage, ...]:
    """
    Which of a client's turns a context does not hold yet: the ones to send and store.

    A client may resend its whole history with every request (seed 002's
    ChatSession, every OpenAI or Anthropic SDK client). With a context, the
    stored turns are the history, so the client's turns up to the latest
    point where they end with the stored tail (``stored``, the newest stored
    turns, oldest first) are repeats; only the turns after it are new. Where
    they overlap, every turn must match (role and content); when nothing
    lines up (a fresh context, a client sending only the new turn, or a
    history that differs from what was stored) every turn is new. The last
    turn, the user's, is always new.
    """
    if stored:
        for held in range(len(turns) - 1, 0, -1):
            overlap = min(held, len(stored))
            if turns[held - 1] == stored[-1] and list(turns[held - overlap : held]) == list(
                stored[-overlap:]
            ):
                return tuple(turns[held:])
    return tuple(turns)


def _as_provider_error(raw: BaseException, c: Candidate, timeout: float) -> ProviderError:
    """
    What a provider call that failed with ``raw`` means for this candidate.

    The one translation of a provider actor's failures: its own errors pass,
    silence is a timeout, a bug it met handling this call (``HandlerFailed``,
    logged there with its traceback) fails this candidate alone, so the router
    falls back; only a provider actor that is gone is unavailable.
    """
    if isinstance(raw, ProviderError):
        return raw
    if isinstance(raw, actors.HandlerFailed):
        return ProviderError(
            f"{c.provider} met an internal error on this call ({raw.boxed_type.__name__})",
            provider=c.provider,
            model=c.model,
        )
    if isinstance(raw, actors.AskTimeout):
        return UpstreamTimeout(
            f"{c.provider} sent nothing for {timeout:g}s", provider=c.provider, model=c.model
        )
    return ProviderUnavailable(
        f"{c.provider} actor is down: {raw}", provider=c.provider, model=c.model
    )


_JSON = re.compile(r"\{.*\}", re.DOTALL)
_WORD = re.compile(r"[a-z0-9]+")


def _parse_evaluation(
    text: str, criteria: Sequence[str]
) -> tuple[dict[str, float], float, str] | None:
    match = _JSON.search(text)
    if match is None:
        return None
    try:
        raw = json.loads(match.group(0))
        scores = {c: max(0.0, min(10.0, float(raw["scores"][c]))) for c in criteria}
        overall = raw.get("overall_score")
        overall = float(overall) if overall is not None else sum(scores.values()) / len(scores)
        return scores, max(0.0, min(10.0, overall)), str(raw.get("feedback", ""))
    except (ValueError, KeyError, TypeError):
        return None


def _heuristic_scores(prompt: str, response: str, criteria: Sequence[str]) -> dict[str, float]:
    prompt_words = set(_WORD.findall(prompt.lower()))
    response_words = _WORD.findall(response.lower())
    overlap = len(prompt_words & set(response_words)) / max(1, len(prompt_words))
    sentences = max(1, len(re.findall(r"[.!?]+", response)) or 1)
    avg_len = len(response_words) / sentences
    clarity = 10.0 - min(6.0, abs(avg_len - 18) / 3)
    completeness = min(10.0, len(response_words) / 10)
    relevance = min(10.0, 2 + overlap * 8)
    base = {"relevance": relevance, "clarity": clarity, "completeness": completeness}
    scores = {}
    for criterion in criteria:
        value = base.get(criterion, (relevance + clarity + completeness) / 3)
        scores[criterion] = round(max(0.0, min(10.0, value)), 2)
    return scores
