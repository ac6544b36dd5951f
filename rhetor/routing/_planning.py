"""
Plans for requests: the candidates one request gets (cached), and what may stand in for one.

:func:`rhetor.routing._plan.plan` decides the order from the task config;
the :class:`Planner` feeds it the Router's live state (which providers are
up, the active model, worst-case prices), keeps the plans that depend on
nothing else, and answers the budget's stand-ins (:meth:`Planner.downgrades`).
"""

from __future__ import annotations

from typing import Any

import attrs

from rhetor._errors import ValidationError
from rhetor._types import ChatMessage, LLMRequest
from rhetor.budget._pricing import Pricer
from rhetor.routing._catalogue import Catalogue
from rhetor.routing._needs import Need, lacking
from rhetor.routing._plan import SIMULATED, Candidate, RoutePlan, TaskConfig, plan

__all__ = ["DEFAULT_MAX_TOKENS", "Planner", "Prepared", "max_tokens_of", "padded"]

DEFAULT_MAX_TOKENS = 1024
# Our offline token count can undershoot the upstream's; reserve with a margin.
_INPUT_MARGIN = 1.25
# Plans kept between status refreshes; cleared whole when full.
_PLAN_CACHE_SIZE = 1024


def padded(input_estimate: int) -> int:
    """The input tokens a reservation prices: the offline estimate, with a margin."""
    return int(input_estimate * _INPUT_MARGIN) + 16


def max_tokens_of(request: LLMRequest) -> int:
    """The output tokens a request may use: its own ``max_tokens``, else the default."""
    return request.max_tokens if request.max_tokens is not None else DEFAULT_MAX_TOKENS


@attrs.frozen
class Prepared:
    """
    One request made ready to send: its plan, what goes upstream, and what will be stored.

    ``messages`` are the context's window then the new turns; ``new_turns``
    are the client's turns the context does not hold yet (stored with the reply);
    ``needs`` what the request needs of its model (:mod:`rhetor.routing._needs`).
    """

    plan: RoutePlan
    messages: tuple[ChatMessage, ...]
    system: str | None
    new_turns: tuple[ChatMessage, ...]
    input_estimate: int
    max_tokens: int
    needs: tuple[Need, ...] = ()


@attrs.define(eq=False)
class Planner:
    """
    Plans requests against the providers that are up, and keeps the plans it can reuse.

    A plan depends on the request's routing fields, the active model, which
    providers are up and, when the request sets a max cost, on the prompt's
    size; plans of requests without a max cost are cached under everything
    else, and :meth:`forget` drops them all when the providers' status or the
    active model changes.
    """

    _config: TaskConfig
    _catalogue: Catalogue
    _pricer: Pricer
    # Invariant: None, or a (provider, model) pair that a provider serves.
    _active: tuple[str, str] | None = attrs.field(init=False, default=None)
    # Invariant: plans made since the last forget().
    _plans: dict[tuple[Any, ...], RoutePlan] = attrs.field(init=False, factory=dict)

    @property
    def active(self) -> tuple[str, str] | None:
        """The (provider, model) set to head the default task's chain, if any."""
        return self._active

    def set_active(self, active: tuple[str, str] | None) -> None:
        """Make ``active`` head the default task's chain; the plans made before are dropped."""
        self._active = active
        self._plans.clear()

    def forget(self) -> None:
        """Drop every cached plan (the providers' status changed)."""
        self._plans.clear()

    def worst_case(self, provider: str, model: str, input_estimate: int, max_tokens: int) -> float:
        """What a reservation for this model would hold: padded input and every output token."""
        return self._pricer.worst_case(provider, model, padded(input_estimate), max_tokens)

    def plan(
        self, request: LLMRequest, input_estimate: int, needs: tuple[Need, ...] = ()
    ) -> RoutePlan:
        """
        The candidates for ``request``, in order, from the cache when it has them.

        ``needs`` are what the request needs of its model; candidates whose
        context window is smaller than ``input_estimate`` are dropped too
        (:meth:`fit_context`).
        """
        max_tokens = max_tokens_of(request)
        catalogue = self._catalogue
        simulated_fallback = catalogue.simulated_fallback()
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
                needs,
                self._active,
                simulated_fallback,
                catalogue.liveness(),
            )
            route = self._plans.get(key)
            if route is not None:
                return self.fit_context(route, input_estimate)

        def cost_of(provider: str, model: str) -> float:
            return self.worst_case(provider, model, input_estimate, max_tokens)

        route = plan(
            self._config,
            task_type=request.task_type,
            component=request.component,
            provider=request.provider,
            model=request.model,
            temperature=request.temperature,
            params=request.routing,
            available=catalogue.available,
            provider_models=catalogue.models(),
            active=self._active,
            simulated_fallback=simulated_fallback,
            cost_of=cost_of,
            needs=needs,
            family_of=catalogue.family,
        )
        if key is not None:
            if len(self._plans) >= _PLAN_CACHE_SIZE:
                self._plans.clear()
            self._plans[key] = route
        return self.fit_context(route, input_estimate)

    def fit_context(self, route: RoutePlan, input_estimate: int) -> RoutePlan:
        """
        ``route`` without the candidates whose context window (where the catalogue
        states one) is smaller than the prompt's estimate; the explanation says
        which were dropped. The simulated provider has no window to overflow.

        Error handling: when every candidate is dropped, a :class:`ValidationError`
        on ``messages`` naming each one's window.
        """
        windows = self._config.models
        small = [
            c
            for c in route.candidates
            if c.provider != SIMULATED
            and c.model in windows
            and (window := windows[c.model].context_window) is not None
            and window < input_estimate
        ]
        if not small:
            return route
        kept = tuple(c for c in route.candidates if c not in small)
        listed = ", ".join(
            f"{c.provider}/{c.model} ({windows[c.model].context_window} tokens)" for c in small
        )
        if not kept:
            raise ValidationError(
                "messages",
                f"the prompt (about {input_estimate} tokens) is longer than the context "
                f"window of every candidate ({listed})",
            )
        explanation = f"{route.explanation}; skipped {listed}: the prompt (about {input_estimate} tokens) is longer"
        return attrs.evolve(route, candidates=kept, explanation=explanation)

    def downgrades(
        self, prepared: Prepared, request: LLMRequest, refused: Candidate
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
        max_tokens = prepared.max_tokens
        params = request.routing
        ceiling = self.worst_case(
            refused.provider, refused.model, prepared.input_estimate, max_tokens
        )
        if params.max_cost is not None:
            ceiling = min(ceiling, params.max_cost)
        catalogue = self._catalogue
        options = []
        for provider, models in catalogue.models().items():
            if not catalogue.available(provider) or (
                provider == SIMULATED and not catalogue.simulated_fallback()
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
                capabilities = info.capabilities if info is not None else None
                family = catalogue.family(provider)
                if lacking(prepared.needs, provider, family, capabilities, known=True):
                    continue
                window = info.context_window if info is not None else None
                if window is not None and window < prepared.input_estimate:
                    continue
                cost = self.worst_case(provider, model, prepared.input_estimate, max_tokens)
                if cost <= ceiling:
                    options.append((cost == 0.0, -cost, provider, model))
        options.sort()
        return [Candidate(p, m, refused.temperature) for _, _, p, m in options]
