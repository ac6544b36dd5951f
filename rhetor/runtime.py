"""
Rhetor embedded in-process: ``async with rhetor.runtime.start() as rt: ...``.

``start()`` builds the whole supervision tree (see ``docs/architecture.md``)
inside one actor system and yields a :class:`Runtime` handle, whose methods
turn calls into actor messages. The HTTP edge is a thin layer over the same
handle.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from typing import Any

import anyio
import attrs

import actors
from rhetor import observe
from rhetor._asks import as_rhetor_error, ask
from rhetor._errors import NotFound, RhetorError, ValidationError
from rhetor._redact import install_log_redaction
from rhetor._runtime_library import LibraryMethods
from rhetor._runtime_requests import (
    ContextDetail,
    Readiness,
    StoreCheck,
    _generate,
    _messages,
)
from rhetor._settings import Settings
from rhetor._stores import Stores, database_password, open_stores
from rhetor._tree import BackendFactory, default_backends, start_tree
from rhetor._types import (
    ChatMessage,
    Chunk,
    LLMRequest,
    Passthrough,
    Reply,
    ResponseFormat,
    RoutingParameters,
    Tool,
    ToolChoice,
)
from rhetor.budget._messages import (
    BudgetStatus,
    GetBudget,
    GetEntries,
    GetUsage,
    SetLimit,
    SetPolicy,
    SpendEntry,
    UsageTotals,
)
from rhetor.budget._pricing import load_overrides
from rhetor.providers._actor import CheckHealth
from rhetor.routing._plan import TaskConfig
from rhetor.routing._router import (
    BudgetModeChanged,
    CountInput,
    Estimate,
    Evaluate,
    GetProviders,
    SetActive,
)
from rhetor.storage._contexts import ListContexts
from rhetor.storage._prompts import ListPrompts

__all__ = [
    "BackendFactory",
    "ContextDetail",
    "Readiness",
    "Runtime",
    "StoreCheck",
    "default_backends",
    "start",
]

log = logging.getLogger("rhetor.runtime")

VERSION = "0.1.0"


@attrs.define(eq=False)
class Runtime(LibraryMethods):
    """
    The handle to a running Rhetor: every operation the edges offer, in-process.

    Error handling: every method raises :class:`rhetor.RhetorError`
    subclasses; an internal actor that is down becomes
    :class:`ServiceUnavailable`, never a hang past the deadline, and a bug an
    actor met handling this one call becomes :class:`InternalError`.
    """

    settings: Settings
    system: actors.System
    router: actors.Ref
    budget_keeper: actors.Ref
    contexts: actors.Ref
    prompts: actors.Ref
    providers_refs: dict[str, actors.Ref]
    sessions: Any
    started_at: float = attrs.field(factory=time.monotonic)

    # -- helpers ----------------------------------------------------------

    def request(
        self,
        message: str | None = None,
        *,
        messages: Sequence[Any] | None = None,
        context_id: str | None = None,
        task_type: str | None = "default",
        component: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        system_prompt: str | None = None,
        routing_parameters: Mapping[str, Any] | RoutingParameters | None = None,
        timeout: float | None = None,
        request_id: str | None = None,
        tools: Sequence[Tool] = (),
        tool_choice: ToolChoice | None = None,
        response_format: ResponseFormat | None = None,
        stop: Sequence[str] = (),
        top_p: float | None = None,
        seed: int | None = None,
        user: str | None = None,
        metadata: Mapping[str, str] | None = None,
        passthrough: Passthrough | None = None,
    ) -> LLMRequest:
        """
        Build and validate an :class:`LLMRequest` (what every edge does first).

        ``messages`` are :class:`ChatMessage` values (content blocks and all) or
        ``{role, content}`` objects with string content; ``tools``,
        ``tool_choice``, ``response_format`` and ``passthrough`` are the typed
        values of :mod:`rhetor._content`, which the edges read from each API's JSON.
        """
        routing = (
            routing_parameters
            if isinstance(routing_parameters, RoutingParameters)
            else RoutingParameters.from_dict(routing_parameters)
        )
        if request_id is None:
            # Served at the edge: the id of the HTTP request or WebSocket frame it came in.
            request_id = observe.request_id()
        extra: dict[str, Any] = {} if request_id is None else {"request_id": request_id}
        return LLMRequest(
            message=message,
            messages=_messages(messages) if messages is not None else (),
            context_id=context_id,
            task_type=task_type or "default",
            component=component,
            provider=provider,
            model=model,
            temperature=temperature,
            max_tokens=max_tokens,
            system_prompt=system_prompt,
            routing=routing,
            timeout=timeout,
            tools=tuple(tools),
            tool_choice=tool_choice,
            response_format=response_format,
            stop=tuple(stop),
            top_p=top_p,
            seed=seed,
            user=user,
            metadata=metadata,
            passthrough=passthrough,
            **extra,
        )

    def _deadline(self, request: LLMRequest) -> float:
        # The router enforces the request's own deadline; this one only guards
        # against the router itself going silent.
        return (request.timeout or self.settings.request_timeout) + 5.0

    # -- LLM requests -----------------------------------------------------

    async def send(self, request: LLMRequest) -> Reply:
        """Run a prepared request to completion."""
        reply: Reply = await ask(self.router, _generate(request), timeout=self._deadline(request))
        return reply

    async def count_tokens(self, request: LLMRequest) -> dict[str, Any]:
        """
        The input tokens of a prepared request, as its first planned model would be sent it.

        Answers ``{"input_tokens", "counted_by", "provider", "model"}``:
        ``counted_by`` names the provider that counted (Anthropic counts
        upstream, free of charge), or is ``"estimate"`` for Rhetor's own count
        (every other provider, or Anthropic failing). Nothing is reserved or billed.
        """
        observation = observe.current()
        message = CountInput(request, None if observation is observe.DISCARD else observation)
        counted: dict[str, Any] = await ask(self.router, message, timeout=self._deadline(request))
        return counted

    async def send_stream(self, request: LLMRequest) -> AsyncGenerator[Chunk, None]:
        """
        Stream a prepared request: text chunks, then one ``done`` chunk with the reply.

        Cancellation: closing this generator (or cancelling its reader)
        cancels the provider call.
        """
        try:
            async with self.router.stream(
                _generate(request), timeout=self._deadline(request)
            ) as items:
                async for chunk in items:
                    yield chunk
        except actors.ActorError as exc:
            raise as_rhetor_error(self.router.name, exc, self._deadline(request)) from exc

    async def message(self, message: str, **options: Any) -> Reply:
        """One message, with the stored context of ``context_id`` prepended."""
        return await self.send(self.request(message, **options))

    def stream(self, message: str, **options: Any) -> AsyncGenerator[Chunk, None]:
        """Stream one message; see :meth:`send_stream`."""
        return self.send_stream(self.request(message, **options))

    async def chat(self, messages: Sequence[Any], **options: Any) -> Reply:
        """A list of ``{role, content}`` messages; the last must be the user's."""
        return await self.send(self.request(messages=messages, **options))

    def chat_stream(self, messages: Sequence[Any], **options: Any) -> AsyncGenerator[Chunk, None]:
        return self.send_stream(self.request(messages=messages, **options))

    # -- providers ----------------------------------------------------------

    async def providers(self) -> dict[str, Any]:
        result: dict[str, Any] = await ask(self.router, GetProviders())
        return result

    async def set_provider(self, provider: str, model: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = await ask(self.router, SetActive(provider, model))
        return result

    async def check_providers(self) -> dict[str, Any]:
        """Probe every provider now; answers each one's fresh status."""
        out: dict[str, Any] = {}
        for name, ref in self.providers_refs.items():
            try:
                status = await ref.ask(CheckHealth(), timeout=6.0)
                out[name] = {"available": status.available, "reason": status.reason}
            except actors.ActorError as exc:
                out[name] = {"available": False, "reason": f"actor down: {exc}"}
        return out

    async def health(self) -> dict[str, Any]:
        info = await self.providers()
        available = {n: p["available"] for n, p in info["providers"].items()}
        real = [n for n in available if n != "simulated"]
        healthy = all(
            r.alive for r in (self.router, self.budget_keeper, self.contexts, self.prompts)
        )
        healthy = healthy and (any(available[n] for n in real) or available.get("simulated", False))
        return {
            "status": "healthy" if healthy else "degraded",
            "providers": available,
            "uptime": round(time.monotonic() - self.started_at, 3),
            "version": VERSION,
        }

    async def ready(self, timeout: float = 2.0) -> Readiness:
        """
        Whether this Rhetor can serve requests now, and if not, why.

        Ready means every store answered a read within ``timeout`` seconds
        (the ledger, the contexts and the prompt library, each through its
        actor) and at least one provider can answer (a real one, or the
        simulated one where it is allowed to).
        """
        stores: dict[str, StoreCheck] = {}
        reasons: list[str] = []

        async def check(name: str, ref: actors.Ref, message: Any) -> None:
            try:
                await ask(ref, message, timeout=timeout)
            except RhetorError as exc:
                stores[name] = {"reachable": False, "reason": exc.message}
                reasons.append(f"the {name} store is unreachable: {exc.message}")
            else:
                stores[name] = {"reachable": True, "reason": None}

        async with anyio.create_task_group() as tg:
            tg.start_soon(check, "budget", self.budget_keeper, GetUsage("daily", "provider"))
            tg.start_soon(check, "contexts", self.contexts, ListContexts(1, 0))
            tg.start_soon(check, "prompts", self.prompts, ListPrompts("rhetor/ready"))
        providers: dict[str, bool] = {}
        try:
            with anyio.fail_after(timeout):
                info = await self.providers()
            providers = {n: p["available"] for n, p in info["providers"].items()}
        except (RhetorError, TimeoutError) as exc:
            reasons.append(f"the router did not say which providers are up: {exc}")
        else:
            if not any(providers.values()):
                reasons.append("no provider can answer: " + ", ".join(sorted(providers)))
        return {
            "status": "not_ready" if reasons else "ready",
            "stores": dict(sorted(stores.items())),
            "providers": providers,
            "reasons": sorted(reasons),
        }

    # -- budget -------------------------------------------------------------

    async def budget(self) -> BudgetStatus:
        return await ask(self.budget_keeper, GetBudget())

    async def budget_usage(
        self, period: str = "daily", group_by: str = "provider"
    ) -> list[UsageTotals]:
        if period not in ("daily", "weekly", "monthly"):
            raise ValidationError("period", "must be daily, weekly or monthly")
        if group_by not in ("provider", "model", "component", "context"):
            raise ValidationError("group_by", "must be provider, model, component or context")
        return await ask(self.budget_keeper, GetUsage(period, group_by))  # type: ignore[arg-type]

    async def budget_entries(self, limit: int = 50, since: float = 0.0) -> list[SpendEntry]:
        """The latest ledger charges at or after ``since`` (epoch seconds), newest first."""
        return await ask(self.budget_keeper, GetEntries(since, limit))

    async def set_limit(
        self,
        period: str,
        amount: float,
        provider: str | None = None,
        *,
        component: str | None = None,
    ) -> BudgetStatus:
        """Set (0: remove) a limit overall, for one provider or for one component."""
        if provider is not None and component is not None:
            raise ValidationError("component", "a limit is for a provider or a component, not both")
        if provider is not None and provider not in self.providers_refs:
            raise NotFound("provider", provider, field="provider")
        message = SetLimit(period, amount, provider, component)  # type: ignore[arg-type]
        status = await ask(self.budget_keeper, message)
        await ask(self.router, BudgetModeChanged(status["reservations_required"]))
        return status

    async def set_policy(self, policy: str) -> BudgetStatus:
        status = await ask(self.budget_keeper, SetPolicy(policy))  # type: ignore[arg-type]
        await ask(self.router, BudgetModeChanged(status["reservations_required"]))
        return status

    async def estimate(
        self,
        prompt: str | None = None,
        *,
        messages: Sequence[Any] | None = None,
        model: str | None = None,
        task_type: str = "default",
        max_tokens: int | None = None,
    ) -> dict[str, Any]:
        if messages is not None:
            msgs = _messages(messages)
        elif prompt is not None:
            msgs = (ChatMessage("user", prompt),)
        else:
            raise ValidationError("prompt", "a prompt or messages is required")
        if max_tokens is not None and max_tokens <= 0:
            raise ValidationError("max_tokens", "must be a positive whole number")
        result: dict[str, Any] = await ask(
            self.router, Estimate(msgs, model, task_type, max_tokens)
        )
        return result

    async def evaluate(
        self, prompt: str, response: str, criteria: Sequence[str] | None = None
    ) -> dict[str, Any]:
        crit = tuple(criteria) if criteria else ("accuracy", "clarity", "relevance")
        if not all(isinstance(c, str) and c for c in crit):
            raise ValidationError("criteria", "must be a list of non-empty strings")
        result: dict[str, Any] = await ask(
            self.router, Evaluate(prompt, response, crit), timeout=self.settings.request_timeout + 5
        )
        return result


@asynccontextmanager
async def start(
    settings: Settings | None = None,
    *,
    backends: Mapping[str, BackendFactory] | None = None,
    health_interval: float = 30.0,
) -> AsyncIterator[Runtime]:
    """
    Start Rhetor in-process and yield its :class:`Runtime` handle.

    With no arguments it reads the environment (``Settings.from_env()``) and
    runs the simulated provider plus any configured real ones, with SQLite
    under the data directory; with ``settings.database_url`` every store is
    in that PostgreSQL database, shared with any other runtime on it, and the
    data directory is neither created nor locked (see :mod:`rhetor._stores`).

    Cancellation: leaving the block stops every actor in reverse start order;
    ledger writes still queued are committed on the way out.

    Error handling: a bad setting or task config, or a data directory that
    another runtime holds (``data_dir/rhetor.lock``), raises
    :class:`ValidationError` before anything starts; a database that
    refuses the connection, or stays out of reach for
    ``settings.database_start_timeout`` seconds (tried again meanwhile),
    raises :class:`~rhetor.StorageUnavailable`.
    """
    settings = Settings.from_env() if settings is None else settings
    install_log_redaction(
        settings.api_key,
        settings.anthropic_api_key,
        settings.openai_api_key,
        database_password(settings.database_url),
    )
    config = TaskConfig.load(settings.task_config)
    pricer_overrides = load_overrides(settings.price_overrides) if settings.price_overrides else {}
    factories = dict(default_backends(settings, config) if backends is None else backends)
    # This runtime's id in the ledger's reservations: the same for every
    # incarnation of the BudgetKeeper, new with every start of the process.
    owner = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    async with (
        open_stores(settings, owner) as stores,
        _started(
            settings, config, factories, health_interval, pricer_overrides, stores, owner
        ) as rt,
    ):
        yield rt


@asynccontextmanager
async def _lifecycle_logged(system: actors.System) -> AsyncIterator[None]:
    """
    Log the actors' crashes (with tracebacks), restarts and escalations for the block.

    The events are read from a subscription the runtime never waits on; at the
    end the subscription is closed and what it still holds is logged before
    the block is left.
    """
    async with system.events(buffer=10_000) as events, anyio.create_task_group() as tg:
        tg.start_soon(observe.log_lifecycle, events)
        try:
            yield
        finally:
            events.close()


@asynccontextmanager
async def _started(
    settings: Settings,
    config: TaskConfig,
    factories: dict[str, BackendFactory],
    health_interval: float,
    pricer_overrides: Mapping[str, Any],
    stores: Stores,
    owner: str,
) -> AsyncIterator[Runtime]:
    async with actors.open_system(name="rhetor") as system, _lifecycle_logged(system):
        tree = await start_tree(
            system, settings, config, factories, health_interval, pricer_overrides, stores, owner
        )
        runtime = Runtime(
            settings=settings,
            system=system,
            router=tree.router,
            budget_keeper=tree.budget_keeper,
            contexts=tree.contexts,
            prompts=tree.prompts,
            providers_refs=tree.providers,
            sessions=tree.sessions,
        )
        log.info("rhetor runtime started with providers %s", ", ".join(factories))
        try:
            yield runtime
        finally:
            with anyio.CancelScope(shield=True):
                await system.stop()
