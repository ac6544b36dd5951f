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
    Collection,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from typing import Any, TypedDict

import anyio
import attrs

import actors
from rhetor._asks import as_rhetor_error, ask
from rhetor._errors import NotFound, ValidationError
from rhetor._redact import install_log_redaction
from rhetor._settings import Settings
from rhetor._stores import Stores, database_password, open_stores
from rhetor._tree import BackendFactory, default_backends, start_tree
from rhetor._types import (
    ChatMessage,
    Chunk,
    LLMRequest,
    Reply,
    RoutingParameters,
)
from rhetor.budget._messages import (
    BudgetStatus,
    GetBudget,
    GetUsage,
    SetLimit,
    SetPolicy,
    UsageTotals,
)
from rhetor.budget._pricing import load_overrides
from rhetor.providers._actor import CheckHealth
from rhetor.routing._plan import TaskConfig
from rhetor.routing._router import (
    BudgetModeChanged,
    Estimate,
    Evaluate,
    Generate,
    GetProviders,
    SetActive,
    Summarize,
)
from rhetor.storage._contexts import (
    DeleteContext,
    ListContexts,
    ReadContext,
    SearchContexts,
)
from rhetor.storage._interfaces import (
    ContextInfo,
    Prompt,
    SearchHit,
    StoredMessage,
    Template,
    TemplateVersion,
)
from rhetor.storage._prompts import (
    CreatePrompt,
    CreateTemplate,
    DeletePrompt,
    DeleteTemplate,
    GeneratePrompt,
    GetPrompt,
    GetTemplate,
    GetTemplateVersions,
    ListPrompts,
    ListTemplates,
    RenderTemplate,
    UpdatePrompt,
    UpdateTemplate,
)

__all__ = ["BackendFactory", "ContextDetail", "Runtime", "default_backends", "start"]

log = logging.getLogger("rhetor.runtime")

VERSION = "0.1.0"


def _messages(raw: Iterable[Any], field: str = "messages") -> tuple[ChatMessage, ...]:
    out = []
    for i, m in enumerate(raw):
        if isinstance(m, ChatMessage):
            out.append(m)
            continue
        if not isinstance(m, Mapping):
            raise ValidationError(f"{field}[{i}]", "must be an object with role and content")
        role, content = m.get("role"), m.get("content")
        if role not in ("system", "user", "assistant"):
            raise ValidationError(f"{field}[{i}].role", "must be system, user or assistant")
        if not isinstance(content, str):
            raise ValidationError(f"{field}[{i}].content", "must be a string")
        out.append(ChatMessage(role, content))
    if not out:
        raise ValidationError(field, "must not be empty")
    return tuple(out)


def _refuse_unknown(fields: Mapping[str, Any], message: type[Any], *positional: str) -> None:
    """
    Check that each of ``fields`` names a field of ``message`` given by keyword.

    Error handling: ``ValidationError(<name>, "unknown field")`` for the first
    one that does not (a stray field of a request body is the client's mistake).
    """
    allowed: Collection[str] = attrs.fields_dict(message).keys() - set(positional)
    for name in fields:
        if name not in allowed:
            raise ValidationError(name, "unknown field")


class ContextDetail(TypedDict):
    """
    A context's description and its messages (oldest first): what ``GET /contexts/<id>`` sends.
    """

    info: ContextInfo
    messages: list[StoredMessage]


@attrs.define(eq=False)
class Runtime:
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
    ) -> LLMRequest:
        """Build and validate an :class:`LLMRequest` (what every edge does first)."""
        routing = (
            routing_parameters
            if isinstance(routing_parameters, RoutingParameters)
            else RoutingParameters.from_dict(routing_parameters)
        )
        extra = {} if request_id is None else {"request_id": request_id}
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
            **extra,
        )

    def _deadline(self, request: LLMRequest) -> float:
        # The router enforces the request's own deadline; this one only guards
        # against the router itself going silent.
        return (request.timeout or self.settings.request_timeout) + 5.0

    # -- LLM requests -----------------------------------------------------

    async def send(self, request: LLMRequest) -> Reply:
        """Run a prepared request to completion."""
        reply: Reply = await ask(self.router, Generate(request), timeout=self._deadline(request))
        return reply

    async def send_stream(self, request: LLMRequest) -> AsyncGenerator[Chunk, None]:
        """
        Stream a prepared request: text chunks, then one ``done`` chunk with the reply.

        Cancellation: closing this generator (or cancelling its reader)
        cancels the provider call.
        """
        try:
            async with self.router.stream(
                Generate(request), timeout=self._deadline(request)
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

    # -- templates and prompts ----------------------------------------------

    async def create_template(self, name: str, content: str, **fields: Any) -> Template:
        _refuse_unknown(fields, CreateTemplate, "name", "content")
        return await ask(self.prompts, CreateTemplate(name, content, **fields))

    async def update_template(self, template: str, **fields: Any) -> Template:
        _refuse_unknown(fields, UpdateTemplate, "template")
        return await ask(self.prompts, UpdateTemplate(template, **fields))

    async def get_template(self, template: str, version: int | None = None) -> Template:
        return await ask(self.prompts, GetTemplate(template, version))

    async def list_templates(self, category: str | None = None) -> list[Template]:
        return await ask(self.prompts, ListTemplates(category))

    async def template_versions(self, template: str) -> list[TemplateVersion]:
        return await ask(self.prompts, GetTemplateVersions(template))

    async def delete_template(self, template: str) -> bool:
        if not await ask(self.prompts, DeleteTemplate(template)):
            raise NotFound("template", template)
        return True

    async def render_template(self, template: str, variables: Mapping[str, Any]) -> str:
        return await ask(self.prompts, RenderTemplate(template, variables))

    async def create_prompt(self, name: str, component: str, content: str, **fields: Any) -> Prompt:
        _refuse_unknown(fields, CreatePrompt, "name", "component", "content")
        return await ask(self.prompts, CreatePrompt(name, component, content, **fields))

    async def update_prompt(self, prompt_id: str, **fields: Any) -> Prompt:
        _refuse_unknown(fields, UpdatePrompt, "prompt_id")
        return await ask(self.prompts, UpdatePrompt(prompt_id, **fields))

    async def get_prompt(self, prompt_id: str) -> Prompt:
        return await ask(self.prompts, GetPrompt(prompt_id))

    async def list_prompts(self, component: str | None = None) -> list[Prompt]:
        return await ask(self.prompts, ListPrompts(component))

    async def delete_prompt(self, prompt_id: str) -> bool:
        if not await ask(self.prompts, DeletePrompt(prompt_id)):
            raise NotFound("prompt", prompt_id)
        return True

    async def generate_prompt(
        self, task: str, context: Any = None, format: str = "instruction"
    ) -> str:
        return await ask(self.prompts, GeneratePrompt(task, context, format))

    # -- contexts -----------------------------------------------------------

    async def list_contexts(self, limit: int = 100, offset: int = 0) -> list[ContextInfo]:
        return await ask(self.contexts, ListContexts(limit, offset))

    async def get_context(self, context_id: str, limit: int | None = None) -> ContextDetail:
        """A context's description and messages (the newest ``limit``); NotFound if unknown."""
        record = await ask(self.contexts, ReadContext(context_id, limit))
        return {"info": record.info, "messages": record.messages}

    async def delete_context(self, context_id: str) -> bool:
        if not await ask(self.contexts, DeleteContext(context_id)):
            raise NotFound("context", context_id)
        return True

    async def search_contexts(self, query: str, limit: int = 20) -> list[SearchHit]:
        if not query:
            raise ValidationError("q", "must not be empty")
        return await ask(self.contexts, SearchContexts(query, limit))

    async def summarize_context(self, context_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await ask(
            self.router, Summarize(context_id), timeout=self.settings.request_timeout + 5
        )
        return result

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

    async def set_limit(
        self, period: str, amount: float, provider: str | None = None
    ) -> BudgetStatus:
        if provider is not None and provider not in self.providers_refs:
            raise NotFound("provider", provider, field="provider")
        status = await ask(self.budget_keeper, SetLimit(period, amount, provider))  # type: ignore[arg-type]
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
    :class:`ValidationError` before anything starts; a database that cannot
    be reached raises :class:`~rhetor.StorageUnavailable`.
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
async def _started(
    settings: Settings,
    config: TaskConfig,
    factories: dict[str, BackendFactory],
    health_interval: float,
    pricer_overrides: Mapping[str, Any],
    stores: Stores,
    owner: str,
) -> AsyncIterator[Runtime]:
    async with actors.open_system(name="rhetor") as system:
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
