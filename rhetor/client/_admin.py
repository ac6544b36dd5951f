"""
The client's budget, evaluation, provider, context and health calls, split out
of ``_http.py``: :class:`~rhetor.client.RhetorClient` inherits them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from rhetor.client._errors import ServerError
from rhetor.client._stream import _object

__all__ = ["DEFAULT_ESTIMATE_MAX_TOKENS", "AdminMethods"]

# What the seeds' estimate calls assume when they give no max_tokens.
DEFAULT_ESTIMATE_MAX_TOKENS = 1000


class AdminMethods:
    """
    Budget, evaluation, providers, contexts and health: each one HTTP call.

    Error handling: every method raises a
    :class:`~rhetor.client.RhetorClientError` subclass, never an httpx error.
    """

    if TYPE_CHECKING:
        # RhetorClient's own; declared here for the type checker only.
        async def request(
            self,
            method: str,
            path: str,
            *,
            json: Any = None,
            params: Mapping[str, str | int] | None = None,
            headers: Mapping[str, str] | None = None,
        ) -> Any: ...

    # -- budget and evaluation ----------------------------------------------

    async def estimate_cost(
        self,
        prompt: str,
        model: str | None = None,
        max_tokens: int = DEFAULT_ESTIMATE_MAX_TOKENS,
        *,
        task_type: str | None = None,
    ) -> dict[str, Any]:
        """
        What a prompt would cost at worst: ``estimated_cost``, ``estimated_tokens``
        (``input_tokens``, ``output_tokens``, ``total_tokens``) and ``under_budget``.
        """
        fields = {
            "prompt": prompt,
            "model": model,
            "max_tokens": max_tokens,
            "task_type": task_type,
        }
        body = {k: v for k, v in fields.items() if v is not None}
        return _object(await self.request("POST", "/budget/estimate", json=body), "estimate")

    async def evaluate(
        self, prompt: str, response: str, criteria: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """
        Score a response to a prompt: ``evaluation`` holds ``overall_score`` (0-10),
        per-criterion ``scores`` and ``feedback``.
        """
        body: dict[str, Any] = {"prompt": prompt, "response": response}
        if criteria is not None:
            body["criteria"] = list(criteria)
        return _object(await self.request("POST", "/evaluate", json=body), "evaluation")

    async def get_budget(self) -> dict[str, Any]:
        """The budget policy and each period's spend, limit and remaining (``GET /budget``)."""
        return _object(await self.request("GET", "/budget"), "budget")

    async def get_usage(self, period: str = "daily", group_by: str = "provider") -> Any:
        """Spend in ``period`` grouped by provider, model or component (``GET /budget/usage``)."""
        return await self.request(
            "GET", "/budget/usage", params={"period": period, "group_by": group_by}
        )

    async def get_budget_entries(
        self, limit: int = 50, since: float | None = None
    ) -> list[dict[str, Any]]:
        """
        The latest requests' charges, newest first (``GET /budget/entries``).

        Each has ``time``, ``component``, ``provider``, ``model``, the tokens,
        ``cost`` and ``status`` (``ok``, ``partial``, ``failed`` or
        ``interrupted``). At most ``limit`` (1 to 500) of them, at or after the
        unix timestamp ``since`` when given.
        """
        params: dict[str, Any] = {"limit": limit}
        if since is not None:
            params["since"] = since
        answer = _object(await self.request("GET", "/budget/entries", params=params), "entries")
        entries = answer.get("entries")
        if not isinstance(entries, list):
            raise ServerError("Rhetor's entries answer holds no list of entries")
        return entries

    # -- providers, contexts, health ----------------------------------------

    async def get_providers(self) -> dict[str, Any]:
        """Every provider, its models and availability, and the active provider and model."""
        return _object(await self.request("GET", "/providers"), "providers")

    async def set_provider(self, provider: str, model: str | None = None) -> dict[str, Any]:
        """Make ``provider`` (and ``model``, else its first) the active choice."""
        body = {"provider": provider} if model is None else {"provider": provider, "model": model}
        return _object(await self.request("POST", "/provider", json=body), "provider")

    async def get_contexts(self) -> list[dict[str, Any]]:
        """The stored conversation contexts, most recent first."""
        answer = await self.request("GET", "/contexts")
        if isinstance(answer, dict):
            answer = answer.get("contexts", [])
        if not isinstance(answer, list):
            raise ServerError("Rhetor's contexts answer is not a list")
        return [c for c in answer if isinstance(c, dict)]

    async def get_context(self, context_id: str) -> dict[str, Any]:
        """One context's details and messages."""
        path = f"/contexts/{quote(context_id, safe='')}"
        return _object(await self.request("GET", path), "context")

    async def delete_context(self, context_id: str) -> None:
        """Forget a context and its messages."""
        await self.request("DELETE", f"/contexts/{quote(context_id, safe='')}")

    async def health(self) -> dict[str, Any]:
        """``status`` (healthy or degraded), each provider's availability, uptime, version."""
        return _object(await self.request("GET", "/health"), "health")
