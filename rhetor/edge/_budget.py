"""
The budget blueprint: spend, limits, the policy and estimates under ``/budget``.

``GET /budget`` (every period), ``GET /budget/usage`` (grouped spend),
``GET /budget/entries`` (the latest charges, newest first),
``POST /budget/limit``, ``POST /budget/policy`` and ``POST /budget/estimate``.
A limit or policy set here is stored in the ledger. The bodies' and query's
schemas (``rhetor.edge._schemas_admin``) name the periods, policies and
groupings; the runtime checks what depends on state (a provider that exists).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import Blueprint, Response

from rhetor.edge._http import json_response, plain
from rhetor.edge._schema import operation
from rhetor.edge._schemas_admin import (
    BudgetLimitBody,
    BudgetPolicyBody,
    BudgetReply,
    EntriesQuery,
    EstimateBody,
    UsageQuery,
    UsageReply,
)

if TYPE_CHECKING:
    from rhetor.runtime import Runtime

__all__ = ["budget_blueprint"]


def budget_blueprint(runtime: Runtime) -> Blueprint:
    """The ``/budget`` routes over ``runtime``."""
    bp = Blueprint("budget", __name__, url_prefix="/budget")
    rt = runtime

    @bp.get("")
    @operation(reply=BudgetReply)
    async def budget() -> Response:
        """
        Spend, reservations and limits for the day, ISO week and month (UTC), and the policy.
        """
        return json_response(await rt.budget())

    @bp.get("/usage")
    @operation(query=UsageQuery, reply=UsageReply)
    async def budget_usage(query: UsageQuery) -> Response:
        """
        Spend in the current period, grouped: ``{"period", "group_by", "usage": [...]}``.
        """
        rows = await rt.budget_usage(query.period, query.group_by)
        return json_response(
            {"period": query.period, "group_by": query.group_by, "usage": plain(rows)}
        )

    @bp.get("/entries")
    @operation(query=EntriesQuery)
    async def budget_entries(query: EntriesQuery) -> Response:
        """
        The latest charges, newest first: ``{"limit", "since", "entries": [...]}``.
        """
        entries = await rt.budget_entries(query.limit, query.since)
        return json_response({"limit": query.limit, "since": query.since, "entries": entries})

    @bp.post("/limit")
    @operation(body=BudgetLimitBody, reply=BudgetReply)
    async def budget_limit(body: BudgetLimitBody) -> Response:
        """
        Set a limit (0 removes it); stored, and from then on overriding the environment.
        """
        return json_response(await rt.set_limit(body.period, body.limit, body.provider))

    @bp.post("/policy")
    @operation(body=BudgetPolicyBody, reply=BudgetReply)
    async def budget_policy(body: BudgetPolicyBody) -> Response:
        """
        Set the policy: ``ignore``, ``warn`` (the default) or ``enforce``.
        """
        return json_response(await rt.set_policy(body.policy))

    @bp.post("/estimate")
    @operation(body=EstimateBody)
    async def budget_estimate(body: EstimateBody) -> Response:
        """
        A request's estimated tokens and cost, and whether it fits the budget.
        """
        result = await rt.estimate(
            body.prompt,
            messages=None if body.messages is None else [m.as_message() for m in body.messages],
            model=body.model,
            task_type=body.task_type or body.task or "default",
            max_tokens=None if body.max_tokens is None else int(body.max_tokens),
        )
        return json_response(result)

    return bp
