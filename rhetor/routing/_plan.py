"""
Task routing: which models, in which order, answer a request, and why.

Pure logic, no I/O beyond reading the config file; the Router actor owns one
:class:`TaskConfig` and calls :func:`plan` for every request.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs

from rhetor._errors import NotFound, ValidationError
from rhetor._types import RoutingParameters
from rhetor.routing._needs import Need, fitting, lacking

__all__ = [
    "TASK_TYPES",
    "Candidate",
    "ModelInfo",
    "RoutePlan",
    "TaskConfig",
    "TaskRoute",
    "plan",
]

TASK_TYPES = ("code", "planning", "reasoning", "chat", "default")
_TIERS = {"local": 0, "low": 1, "medium": 2, "high": 3}
Pinned = Literal["model", "provider"] | None
SIMULATED = "simulated"


@attrs.frozen
class ModelInfo:
    """
    What the router knows of one model: who serves it and what it can do.

    ``capabilities`` are free words the routing parameters match (``general``,
    ``code_generation``, ...) and the ones requests need (``tools``, ``vision``,
    ``json_schema``, ``json_mode``; see :mod:`rhetor.routing._needs`).
    ``context_window`` is the prompt tokens it reads at most (None: not stated).
    """

    name: str
    provider: str
    tier: str = "medium"
    context_window: int | None = None
    capabilities: frozenset[str] = frozenset({"general"})


@attrs.frozen
class TaskRoute:
    """
    A task's (or component rule's) primary model, its fallbacks and default temperature.
    """

    primary: str
    fallbacks: tuple[str, ...] = ()
    temperature: float = 0.7

    @property
    def chain(self) -> tuple[str, ...]:
        return (self.primary, *self.fallbacks)


@attrs.frozen
class Candidate:
    """
    One model to try, with the temperature to use.
    """

    provider: str
    model: str
    temperature: float


@attrs.frozen
class RoutePlan:
    """
    The ordered candidates for one request, and the explanation for the first.

    ``pinned`` says what the request named explicitly: ``"model"`` (never
    swapped), ``"provider"`` (only that provider's models may stand in), or
    None (routed). ``skipped`` are planned models whose provider is down.
    """

    candidates: tuple[Candidate, ...]
    explanation: str
    task_type: str
    rule: str
    pinned: Pinned = None
    skipped: tuple[Candidate, ...] = ()


def _route(raw: Any, where: str) -> TaskRoute:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("primary"), str):
        raise ValidationError(where, "must be an object with a 'primary' model name")
    fallbacks = raw.get("fallbacks", raw.get("fallback", ()))
    if isinstance(fallbacks, str):
        fallbacks = (fallbacks,)
    temperature = raw.get("temperature", 0.7)
    if not isinstance(temperature, int | float) or not 0 <= temperature <= 2:
        raise ValidationError(f"{where}.temperature", "must be a number from 0 to 2")
    return TaskRoute(raw["primary"], tuple(fallbacks), float(temperature))


@attrs.frozen
class TaskConfig:
    """
    The routing table: task routes, component rules and the model catalogue.
    """

    tasks: Mapping[str, TaskRoute]
    components: Mapping[str, TaskRoute]
    models: Mapping[str, ModelInfo]
    summary_task: str = "chat"

    @classmethod
    def load(cls, path: Path) -> TaskConfig:
        """
        Read and validate a ``tasks.json``.

        Error handling: a missing file, bad JSON or a bad entry raises
        :class:`ValidationError` naming the file and the entry.
        """
        try:
            raw = json.loads(path.read_text())
        except OSError as exc:
            raise ValidationError("RHETOR_TASK_CONFIG", f"cannot read {path}: {exc}") from None
        except json.JSONDecodeError as exc:
            raise ValidationError("RHETOR_TASK_CONFIG", f"{path} is not JSON: {exc}") from None
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: Any) -> TaskConfig:
        if not isinstance(raw, Mapping):
            raise ValidationError("tasks.json", "must be a JSON object")
        models: dict[str, ModelInfo] = {}
        for name, info in (raw.get("models") or {}).items():
            if not isinstance(info, Mapping) or not isinstance(info.get("provider"), str):
                raise ValidationError(f"models.{name}", "needs a 'provider'")
            tier = info.get("tier", "medium")
            if tier not in _TIERS:
                raise ValidationError(f"models.{name}.tier", f"must be one of {', '.join(_TIERS)}")
            window = info.get("context_window")
            if window is not None and (
                isinstance(window, bool) or not isinstance(window, int) or window <= 0
            ):
                raise ValidationError(
                    f"models.{name}.context_window", "must be a positive whole number"
                )
            capabilities = info.get("capabilities", ("general",))
            if not isinstance(capabilities, list | tuple) or not all(
                isinstance(c, str) for c in capabilities
            ):
                raise ValidationError(f"models.{name}.capabilities", "must be a list of strings")
            models[name] = ModelInfo(name, info["provider"], tier, window, frozenset(capabilities))
        tasks = {k: _route(v, f"tasks.{k}") for k, v in (raw.get("tasks") or {}).items()}
        if "default" not in tasks:
            raise ValidationError("tasks.default", "a 'default' task is required")
        components = {
            k: _route(v, f"components.{k}") for k, v in (raw.get("components") or {}).items()
        }
        for where, route in [*tasks.items(), *components.items()]:
            for model in route.chain:
                if model not in models:
                    raise ValidationError(where, f"model {model!r} is not in 'models'")
        return cls(tasks, components, models, raw.get("summary_task", "chat"))

    def route_for(self, task_type: str, component: str | None) -> tuple[str, TaskRoute]:
        """
        The rule that applies: ``{component}_{task}``, then ``{component}``, then the task.

        An unknown task type falls to ``default``.
        """
        task = task_type if task_type in self.tasks else "default"
        if component:
            for key in (f"{component}_{task}", component):
                if key in self.components:
                    return key, self.components[key]
        return task, self.tasks[task]

    def provider_of(self, model: str) -> str:
        info = self.models.get(model)
        if info is None:
            raise NotFound("model", model, field="model")
        return info.provider


def usd(amount: float) -> str:
    """A cost for a message: enough decimals for small amounts, no float noise."""
    text = f"{amount:.6f}".rstrip("0").rstrip(".")
    return f"${text or '0'}"


def plan(
    config: TaskConfig,
    *,
    task_type: str,
    component: str | None,
    provider: str | None,
    model: str | None,
    temperature: float | None,
    params: RoutingParameters,
    available: Callable[[str], bool],
    provider_models: Mapping[str, Sequence[str]],
    active: tuple[str, str] | None,
    simulated_fallback: bool,
    cost_of: Callable[[str, str], float],
    needs: Sequence[Need] = (),
    family_of: Callable[[str], str] = lambda provider: "",
) -> RoutePlan:
    """
    Order the candidates for one request and explain the choice.

    ``available(provider)`` says whether a provider is up; ``cost_of`` gives a
    request's worst-case cost on a model; ``active`` is the operator's choice
    from ``POST /provider``, which heads the ``default`` task's chain.
    ``simulated_fallback`` says the simulated provider may answer as the last
    resort (no real provider is up, or ``RHETOR_SIMULATED=always``); otherwise
    it answers only when named (by the request, a task route or ``active``).

    Error handling: an unknown provider or model is :class:`NotFound`; routing
    parameters that no real model meets (or that an explicitly named model
    does not meet) are a :class:`ValidationError` naming the parameter and
    the models considered. With ``simulated_fallback``, unmet parameters leave
    the simulated provider to answer instead.

    ``needs`` are what the request itself needs (:mod:`rhetor.routing._needs`);
    ``family_of(provider)`` is the API family a provider speaks. Models lacking a
    need are skipped, and the explanation says so; when none is left, the
    request is a :class:`ValidationError` naming the field that needs it and the
    models tried (unless the simulated provider may answer).
    """
    task = task_type if task_type in config.tasks else "default"
    reasons: list[str] = []
    if task != task_type:
        reasons.append(f"unknown task type {task_type!r} routed as 'default'")

    def provider_for(name: str) -> str:
        info = config.models.get(name)
        if info is not None:
            return info.provider
        for prov, names in provider_models.items():
            if name in names:
                return prov
        raise NotFound("model", name, field="model")

    def cost(name: str) -> float:
        return cost_of(provider_for(name), name)

    def lacks(prov: str, name: str, known: bool = False) -> Need | None:
        info = config.models.get(name)
        capabilities = info.capabilities if info is not None else None
        return lacking(needs, prov, family_of(prov), capabilities, known=known)

    if model is not None or provider is not None:
        return _explicit(
            config,
            task,
            component,
            provider,
            model,
            temperature,
            params,
            provider_models,
            provider_for,
            cost_of,
            lacks,
        )

    rule, route = config.route_for(task, component)
    chain = list(route.chain)
    if task == "default" and active is not None and (component is None or rule == "default"):
        chain = [active[1], *[m for m in chain if m != active[1]]]
        rule = "active provider"
        reasons.append(f"{active[0]}/{active[1]} is the active model")
    temp = route.temperature if temperature is None else temperature

    def tier(name: str) -> int:
        info = config.models.get(name)
        return _TIERS.get(info.tier, 2) if info is not None else 2

    # Models the parameters may add from the catalogue: real ones only, since
    # the simulated echo (free, claiming every capability) would otherwise win
    # every capability and cost filter while real providers are up.
    need = params.required_capabilities
    catalogue = [
        n for n, i in config.models.items() if i.provider != SIMULATED and need <= i.capabilities
    ]
    unmet = False
    if need:
        capable = [m for m in chain if m in config.models and need <= config.models[m].capabilities]
        if not capable:
            capable = sorted(catalogue, key=tier)
        if capable:
            reasons.append(f"needs {', '.join(sorted(need))}")
        elif simulated_fallback:
            unmet = True
            reasons.append(f"no real model has all of {', '.join(sorted(need))}")
        else:
            considered = [n for n, i in config.models.items() if i.provider != SIMULATED]
            raise ValidationError(
                "routing_parameters.required_capabilities",
                f"no model has all of {', '.join(sorted(need))} "
                f"(considered {', '.join(considered) or 'none'})",
            )
        chain = capable
    if params.complexity == "low":
        chain.sort(key=tier)
        reasons.append("low complexity prefers cheaper models")
    elif params.complexity == "high":
        chain.sort(key=tier, reverse=True)
        reasons.append("high complexity prefers stronger models")
    if params.max_cost is not None and not unmet:
        limit = params.max_cost
        affordable = [m for m in chain if cost(m) <= limit]
        cheaper = sorted(
            (n for n in catalogue if n not in affordable and cost(n) <= limit), key=cost
        )
        if not affordable and not cheaper:
            if not simulated_fallback:
                considered = sorted(dict.fromkeys([*chain, *catalogue]), key=cost)
                raise ValidationError(
                    "routing_parameters.max_cost",
                    f"no model's worst-case cost (the prompt plus max_tokens) is within "
                    f"{usd(limit)} (considered "
                    + (", ".join(f"{m} {usd(cost(m))}" for m in considered) or "none")
                    + ")",
                )
            reasons.append(f"no real model's worst case is within {usd(limit)}")
        else:
            reasons.append(f"max cost {usd(limit)}")
        # Catalogue additions join only when up, unless nothing else fits:
        # then they stay, so that the plan reports them as skipped.
        added = [m for m in cheaper if available(config.models[m].provider)]
        chain = affordable + (added if affordable or added else cheaper)
    if needs:
        chain = fitting(chain, provider_for, lacks, reasons, simulated_fallback)

    candidates: list[Candidate] = []
    skipped: list[Candidate] = []
    for name in chain:
        prov = provider_for(name)
        (candidates if available(prov) else skipped).append(Candidate(prov, name, temp))
    if simulated_fallback and available(SIMULATED):
        sim_models = list(provider_models.get(SIMULATED, ()))
        if sim_models and not any(c.provider == SIMULATED for c in candidates):
            candidates.append(Candidate(SIMULATED, sim_models[0], temp))
            if not any(c.provider != SIMULATED for c in candidates):
                reasons.append("no real provider is available, so the simulated provider answers")
    if skipped:
        reasons.append(
            f"skipped unavailable {', '.join(f'{c.provider}/{c.model}' for c in skipped)}"
        )
    head = f"{candidates[0].provider}/{candidates[0].model}" if candidates else "nothing"
    explanation = f"task '{task}' via rule '{rule}' chose {head}"
    if reasons:
        explanation += "; " + "; ".join(reasons)
    return RoutePlan(tuple(candidates), explanation, task, rule, None, tuple(skipped))


def _explicit(
    config: TaskConfig,
    task: str,
    component: str | None,
    provider: str | None,
    model: str | None,
    temperature: float | None,
    params: RoutingParameters,
    provider_models: Mapping[str, Sequence[str]],
    provider_for: Callable[[str], str],
    cost_of: Callable[[str, str], float],
    lacks: Callable[[str, str, bool], Need | None],
) -> RoutePlan:
    """
    The plan of a request naming its provider and/or model: that one candidate.

    An explicit model is the only candidate, never swapped. An explicit
    provider alone means its first model that meets the routing parameters.
    Availability is not checked here: an explicit model whose provider is down
    fails as ``provider_unavailable`` rather than being skipped for another.
    """
    if provider is not None and provider not in provider_models:
        raise NotFound("provider", provider, field="provider")
    if model is None:
        assert provider is not None  # for mypy: the caller needs one of the two
        models = list(provider_models.get(provider, ()))
        if not models:
            raise NotFound("model", f"any model of {provider}", field="model")
        unmet = [
            _meets(config, m, params, lambda m: cost_of(provider, m), known=True) for m in models
        ]
        fitting = [m for m, why in zip(models, unmet, strict=True) if why is None]
        if not fitting:
            reasons = [why for why in unmet if why is not None]
            raise ValidationError(
                reasons[0][0],
                f"no model of {provider} meets the routing parameters "
                f"({'; '.join(message for _, message in reasons)})",
            )
        needed = [(m, lacks(provider, m, True)) for m in fitting]
        able = [m for m, need in needed if need is None]
        if not able:
            need = next(need for _, need in needed if need is not None)
            raise ValidationError(
                need.field,
                f"needs {need.description}, which no model of {provider} has "
                f"(tried {', '.join(fitting)})",
            )
        model, pinned = able[0], "provider"
    else:
        pinned = "model"
    prov = provider if provider is not None else provider_for(model)
    served = model in provider_models.get(prov, ())
    configured = model in config.models and config.models[model].provider == prov
    if not served and not configured:
        raise NotFound("model", f"{model} on {prov}", field="model")
    if pinned == "model":
        why = _meets(config, model, params, lambda m: cost_of(prov, m))
        if why is not None:
            field, message = why
            raise ValidationError(field, f"{prov}/{model} was requested explicitly, but {message}")
        lacked = lacks(prov, model, False)
        if lacked is not None:
            raise ValidationError(
                lacked.field,
                f"needs {lacked.description}, which {prov}/{model} (requested explicitly) lacks",
            )
    _, route = config.route_for(task, component)
    temp = route.temperature if temperature is None else temperature
    explanation = (
        f"{prov}/{model} was requested explicitly"
        if pinned == "model"
        else f"provider {prov} was requested explicitly; {model} is its first fitting model"
    )
    return RoutePlan(
        (Candidate(prov, model, temp),),
        explanation,
        task,
        "override",
        pinned,  # type: ignore[arg-type]  # "model" or "provider", set just above
    )


def _meets(
    config: TaskConfig,
    model: str,
    params: RoutingParameters,
    cost: Callable[[str], float],
    *,
    known: bool = False,
) -> tuple[str, str] | None:
    """
    Why a model does not meet the routing parameters, as ``(field, message)``; None if it does.

    A model missing from the catalogue has unknown capabilities: a request
    naming it is taken at its word, but with ``known`` (Rhetor choosing among
    a provider's models) it meets no capability need.
    """
    info = config.models.get(model)
    if info is not None:
        missing = params.required_capabilities - info.capabilities
    else:
        missing = params.required_capabilities if known else frozenset()
    if missing:
        return (
            "routing_parameters.required_capabilities",
            f"{model} lacks {', '.join(sorted(missing))}",
        )
    if params.max_cost is not None and cost(model) > params.max_cost:
        return (
            "routing_parameters.max_cost",
            f"{model}'s worst-case cost {usd(cost(model))} is over {usd(params.max_cost)}",
        )
    return None
