"""
The Router's catalogue of providers: which are up, and which models each serves.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import attrs

import actors
from rhetor._errors import NotFound
from rhetor._types import ProviderStatus
from rhetor.providers._actor import GetStatus
from rhetor.providers._families import FAMILIES
from rhetor.routing._plan import SIMULATED, Candidate, TaskConfig

__all__ = ["Catalogue"]

log = logging.getLogger("rhetor.providers")

# Seconds one provider actor may take to answer GetStatus before it counts as down.
_STATUS_TIMEOUT = 2.0


@attrs.define(eq=False)
class Catalogue:
    """
    The provider actors the Router may call, their last known status, and their models.

    The status comes from each provider actor's last health check (``GetStatus``
    answers without probing) and is refreshed by the Router every few seconds;
    between refreshes every question here is answered from memory.
    """

    _refs: dict[str, actors.Ref]
    _config: TaskConfig
    # "auto" (the simulated provider joins only when no real one is up), "always" or "never".
    _simulated: str = "auto"
    _status: dict[str, ProviderStatus] = attrs.field(init=False, factory=dict)
    # Invariant: None, or each provider's models as ``_status`` has them; refresh() clears it.
    _models: dict[str, list[str]] | None = attrs.field(init=False, default=None)

    @property
    def names(self) -> tuple[str, ...]:
        """The providers running, in the order they were configured."""
        return tuple(self._refs)

    def ref(self, provider: str) -> actors.Ref | None:
        """The provider's actor, or None when no such provider runs."""
        return self._refs.get(provider)

    def liveness(self) -> tuple[bool, ...]:
        """Whether each provider actor is alive now (part of a cached plan's key)."""
        return tuple(ref.alive for ref in self._refs.values())

    async def refresh(self) -> None:
        """Ask every provider actor for its status; one that does not answer is down."""

        async def one(name: str, ref: actors.Ref) -> None:
            try:
                self._status[name] = await ref.ask(GetStatus(), timeout=_STATUS_TIMEOUT)
            except actors.ActorError as exc:
                self._status[name] = ProviderStatus(name, False, (), f"actor down: {exc}")

        before = {name: self.available(name) for name in self._status}
        async with anyio.create_task_group() as tg:
            for name, ref in self._refs.items():
                tg.start_soon(one, name, ref)
        self._models = None
        for name in self._refs:
            now = self.available(name)
            if before.get(name) != now:
                self._log_change(name, now, name in before)

    def _log_change(self, name: str, available: bool, known: bool) -> None:
        """Log a provider's availability when it changes (and once when first known)."""
        reason = self._status[name].reason if name in self._status else ""
        if available:
            log.info("provider %s is available", name)
        elif known:
            log.warning("provider %s became unavailable: %s", name, reason or "no reason given")
        else:
            log.info("provider %s is unavailable: %s", name, reason or "no reason given")

    def available(self, provider: str) -> bool:
        """Whether the provider runs, its actor is alive and its upstream answered the last check."""
        ref = self._refs.get(provider)
        status = self._status.get(provider)
        return ref is not None and ref.alive and status is not None and status.available

    def models(self) -> dict[str, list[str]]:
        """Each provider's models: configured ones first, then what it reports (cached)."""
        if self._models is None:
            self._models = self._collect_models()
        return self._models

    def _collect_models(self) -> dict[str, list[str]]:
        models: dict[str, list[str]] = {name: [] for name in self._refs}
        for name, info in self._config.models.items():
            if info.provider in models:
                models[info.provider].append(name)
        for name, status in self._status.items():
            for model in status.models:
                if model not in models.setdefault(name, []):
                    models[name].append(model)
        return models

    def family(self, provider: str) -> str:
        """
        The API family ``provider`` speaks, as its last status said; a provider named
        for a family (``openai``, ``anthropic``, ``ollama``, ``simulated``) speaks it
        until its status says otherwise; "" when unknown.
        """
        status = self._status.get(provider)
        if status is not None and status.family:
            return status.family
        return provider if provider in (*FAMILIES, SIMULATED) else ""

    def simulated_fallback(self) -> bool:
        """Whether the simulated provider may answer: always, never, or when nothing real is up."""
        if self._simulated == "never":
            return False
        if self._simulated == "always":
            return True
        return not any(self.available(p) for p in self._refs if p != SIMULATED)

    def provider_of(self, model: str) -> str:
        """
        The provider serving ``model``.

        Error handling: a model no provider serves is :class:`NotFound`.
        """
        for provider, models in self.models().items():
            if model in models:
                return provider
        raise NotFound("model", model, field="model")

    def describe(self, active: tuple[str, str] | None) -> dict[str, Any]:
        """
        Every provider, its models and availability, and the model a default request gets.

        ``active`` is the model set active, if any; without one, the head of
        the default task's chain among the providers that are up (or the
        simulated provider, when it is the fallback).
        """
        models = self.models()
        providers = {}
        for name in self._refs:
            status = self._status.get(name)
            providers[name] = {
                "available": self.available(name),
                "models": models.get(name, []),
                "reason": "" if status is None else status.reason,
            }
        if active is None:
            _, route = self._config.route_for("default", None)
            head = next(
                (
                    Candidate(self._config.provider_of(m), m, 0)
                    for m in route.chain
                    if self.available(self._config.provider_of(m))
                ),
                None,
            )
            if head is None and self.simulated_fallback() and models.get(SIMULATED):
                head = Candidate(SIMULATED, models[SIMULATED][0], 0)
            active = (head.provider, head.model) if head else None
        return {
            "providers": providers,
            "active_provider": active[0] if active else None,
            "active_model": active[1] if active else None,
            "simulated_fallback": self.simulated_fallback(),
        }
