"""
The actor tree a runtime runs, started in order: storage, providers, router, sessions.

:func:`start_tree` starts the supervision tree of ``docs/architecture.md``
inside an actor system and answers the :class:`Tree` of its refs;
``rhetor.runtime.start()`` wraps them in the :class:`~rhetor.runtime.Runtime`
handle. :func:`default_backends` is the providers Rhetor runs unless told
otherwise. The stores come from :mod:`rhetor._stores`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

import attrs

import actors
from rhetor._asks import ask
from rhetor._errors import RhetorError
from rhetor._settings import Settings
from rhetor._stores import Stores
from rhetor.budget._keeper import BudgetKeeper, RefreshRules
from rhetor.budget._pricing import Pricer
from rhetor.providers._actor import ProviderActor
from rhetor.providers._backend import ProviderBackend
from rhetor.providers._simulated import SimulatedBackend
from rhetor.routing._plan import TaskConfig
from rhetor.routing._router import ActiveModelChanged, Router
from rhetor.storage._changes import Change, ChangeFeed
from rhetor.storage._contexts import ContextStore, SharedContextStore
from rhetor.storage._prompts import DefaultsChanged, PromptLibrary, SharedPromptLibrary

__all__ = ["BackendFactory", "Tree", "default_backends", "start_tree"]

log = logging.getLogger("rhetor.runtime")

BackendFactory = Callable[[], ProviderBackend]


def default_backends(settings: Settings, config: TaskConfig) -> dict[str, BackendFactory]:
    """
    The provider backends Rhetor runs by default: simulated, Anthropic, OpenAI, Ollama.

    Providers without a key (or an Ollama that does not answer) still run and
    report themselves unavailable, so the router skips them.
    """

    def models_of(provider: str) -> tuple[str, ...]:
        return tuple(n for n, i in config.models.items() if i.provider == provider)

    def simulated() -> ProviderBackend:
        return SimulatedBackend(
            models=models_of("simulated") or ("simulated-echo", "simulated-summary"),
            chunk_delay=settings.simulated_chunk_delay,
            available=settings.simulated != "never",
        )

    def anthropic() -> ProviderBackend:
        from rhetor.providers._anthropic import AnthropicBackend

        return AnthropicBackend(
            settings.anthropic_api_key, settings.anthropic_base_url, models=models_of("anthropic")
        )

    def openai() -> ProviderBackend:
        from rhetor.providers._openai import OpenAIBackend

        return OpenAIBackend(
            settings.openai_api_key, settings.openai_base_url, models=models_of("openai")
        )

    def ollama() -> ProviderBackend:
        from rhetor.providers._ollama import OllamaBackend

        return OllamaBackend(
            settings.ollama_base_url or "http://localhost:11434", models=models_of("ollama")
        )

    return {"simulated": simulated, "anthropic": anthropic, "openai": openai, "ollama": ollama}


async def _on_change(
    budget: actors.Ref, router: actors.Ref, prompts: actors.Ref, change: Change
) -> None:
    """
    What each cache does when another process's change is heard (or the feed went deaf or came back).

    - ``prompts``: the PromptLibrary forgets its default prompts, and caches
      them again only while the feed is live.
    - ``settings``: the BudgetKeeper reads the policy, limits and active model
      again, and the Router heads its chains with that active model. While
      the feed is not live the keeper's own refresh (every 10 s) is what
      keeps them; the reservations themselves never depend on them, since
      the ledger decides each from what is stored, in its own transaction.

    Error handling: a database that cannot be read now is logged; the next
    change, or the keeper's refresh, reads it again.
    """
    try:
        if "prompts" in change.kinds:
            await ask(prompts, DefaultsChanged(change.live))
        if "settings" in change.kinds and change.live:
            active = await ask(budget, RefreshRules())
            await ask(router, ActiveModelChanged(active))
    except RhetorError as exc:
        log.warning("could not take in another process's change: %s", exc)


@attrs.frozen
class Tree:
    """The refs of a started tree's long-lived actors."""

    router: actors.Ref
    budget_keeper: actors.Ref
    contexts: actors.Ref
    prompts: actors.Ref
    providers: dict[str, actors.Ref]
    sessions: Any


async def start_tree(
    system: actors.System,
    settings: Settings,
    config: TaskConfig,
    factories: Mapping[str, BackendFactory],
    health_interval: float,
    pricer_overrides: Mapping[str, Any],
    stores: Stores,
    owner: str,
) -> Tree:
    """
    Start the storage, providers, router and sessions subtrees in ``system``, in that order.

    ``owner`` is the runtime's id in the ledger's reservations. The actors
    over a ``shared`` store cache nothing another process could change,
    except what the ``changes`` actor (:class:`ChangeFeed`, on PostgreSQL)
    tells them another process changed (see :func:`_on_change`).
    """
    storage = actors.SupervisorSpec(
        children=(
            actors.ChildSpec(
                "budget",
                lambda: BudgetKeeper(
                    stores.ledger,
                    policy=settings.budget_policy,
                    limits=settings.limits,
                    owner=owner,
                    tz=ZoneInfo(settings.budget_timezone),
                    # Charges an outage keeps from the ledger, on this machine's disk too.
                    spool=settings.data_dir / "unrecorded",
                ),
            ),
            actors.ChildSpec(
                "contexts",
                lambda: (SharedContextStore if stores.shared else ContextStore)(
                    stores.history, window_tokens=settings.context_token_budget
                ),
            ),
            actors.ChildSpec(
                "prompts",
                lambda: (SharedPromptLibrary if stores.shared else PromptLibrary)(stores.library),
            ),
        ),
        strategy="one_for_one",
        intensity=5,
        period=10.0,
    )
    await system.start_supervisor(storage, name="storage")

    def provider_child(name: str, factory: BackendFactory) -> actors.ChildSpec:
        return actors.ChildSpec(
            f"provider:{name}",
            lambda: ProviderActor(factory, health_interval=health_interval),
            shutdown_timeout=3.0,
        )

    providers = actors.SupervisorSpec(
        children=tuple(provider_child(n, f) for n, f in factories.items()),
        strategy="one_for_one",
        intensity=10,
        period=30.0,
    )
    await system.start_supervisor(providers, name="providers")
    provider_refs = {n: system.ref(f"provider:{n}") for n in factories}

    budget_ref = system.ref("budget")
    contexts_ref = system.ref("contexts")
    prompts_ref = system.ref("prompts")
    router = await system.spawn(
        lambda: Router(
            config=config,
            providers=provider_refs,
            budget=budget_ref,
            contexts=contexts_ref,
            prompts=prompts_ref,
            pricer=Pricer(overrides=pricer_overrides),
            simulated=settings.simulated,
            request_timeout=settings.request_timeout,
            provider_timeout=settings.provider_timeout,
            context_token_budget=settings.context_token_budget,
        ),
        name="router",
    )
    database = stores.database
    if database is not None:
        await system.spawn(
            lambda: ChangeFeed(
                db=database,
                on_change=partial(_on_change, budget_ref, router, prompts_ref),
            ),
            name="changes",
        )
    sessions = await system.start_supervisor(
        actors.SupervisorSpec(children=(), strategy="one_for_one", intensity=1000, period=1.0),
        name="sessions",
    )
    return Tree(
        router=router,
        budget_keeper=budget_ref,
        contexts=contexts_ref,
        prompts=prompts_ref,
        providers=provider_refs,
        sessions=sessions,
    )
