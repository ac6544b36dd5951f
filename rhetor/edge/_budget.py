"""
The budget blueprint: spend, limits, the policy and estimates under ``/budget``.

``GET /budget`` (every period), ``GET /budget/usage`` (grouped spend),
``GET /budget/entries`` (the latest charges, newest first), ``POST /budget/limit``, ``POST /budget/policy`` and ``POST /budget/estimate``.
A limit or policy set here is stored in the ledger; the runtime checks
periods, policies and groupings, and answers a bad one as a 422 naming it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from quart import Blueprint, Response, request

from rhetor._errors import ValidationError
from rhetor.budget._messages import ENTRIES_LIMIT
from rhetor.edge._fields import query_int, read_int, read_list, read_number, read_str
from rhetor.edge._http import json_response, plain, read_body

if TYPE_CHECKING:
    from rhetor.runtime import Runtime

__all__ = ["budget_blueprint"]

_ENTRIES_DEFAULT = 50


def _query_since() -> float:
    """The ``since`` query parameter: a unix timestamp, finite and from 0 (absent: 0)."""
    raw = request.args.get("since")
    if raw is None or raw == "":
        return 0.0
    try:
        since = float(raw)
    except ValueError:
        raise ValidationError("since", "must be a unix timestamp (seconds)") from None
    if not math.isfinite(since) or since < 0:
        raise ValidationError("since", "must be a finite unix timestamp from 0")
    return since


def budget_blueprint(runtime: Runtime) -> Blueprint:
    """The ``/budget`` routes over ``runtime``."""
    bp = Blueprint("budget", __name__, url_prefix="/budget")
    rt = runtime

    @bp.get("")
    async def budget() -> Response:
        return json_response(await rt.budget())

    @bp.get("/usage")
    async def budget_usage() -> Response:
        period = request.args.get("period") or "daily"
        group_by = request.args.get("group_by") or "provider"
        rows = await rt.budget_usage(period, group_by)
        return json_response({"period": period, "group_by": group_by, "usage": plain(rows)})

    @bp.get("/entries")
    async def budget_entries() -> Response:
        limit = query_int(
            request.args.get("limit"), "limit", _ENTRIES_DEFAULT, minimum=1, maximum=ENTRIES_LIMIT
        )
        assert limit is not None
        since = _query_since()
        entries = await rt.budget_entries(limit, since)
        return json_response({"limit": limit, "since": since, "entries": entries})

    @bp.post("/limit")
    async def budget_limit() -> Response:
        body = await read_body()
        period = read_str(body, "period", required=True)
        amount = read_number(body, "limit", required=True)
        assert amount is not None
        if amount < 0:
            raise ValidationError("limit", "must not be negative")
        return json_response(await rt.set_limit(period, amount, read_str(body, "provider")))

    @bp.post("/policy")
    async def budget_policy() -> Response:
        body = await read_body()
        return json_response(await rt.set_policy(read_str(body, "policy", required=True)))

    @bp.post("/estimate")
    async def budget_estimate() -> Response:
        body = await read_body()
        result = await rt.estimate(
            read_str(body, "prompt"),
            messages=read_list(body, "messages"),
            model=read_str(body, "model"),
            task_type=read_str(body, "task_type", default=None)
            or read_str(body, "task", default="default"),
            max_tokens=read_int(body, "max_tokens", minimum=1),
        )
        return json_response(result)

    return bp
