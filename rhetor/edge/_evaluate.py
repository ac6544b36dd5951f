"""
The evaluate blueprint: ``POST /evaluate`` scores a response to a prompt.

The body names the ``prompt``, the ``response`` and optional ``criteria``;
the answer is an overall score from 0 to 10, a score per criterion and
feedback (the router asks a model for them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import Blueprint, Response

from rhetor.edge._fields import read_str, read_str_list
from rhetor.edge._http import json_response, read_body

if TYPE_CHECKING:
    from rhetor.runtime import Runtime

__all__ = ["evaluate_blueprint"]


def evaluate_blueprint(runtime: Runtime) -> Blueprint:
    """The ``/evaluate`` route over ``runtime``."""
    bp = Blueprint("evaluate", __name__)
    rt = runtime

    @bp.post("/evaluate")
    async def evaluate() -> Response:
        body = await read_body()
        prompt = read_str(body, "prompt", required=True)
        response = read_str(body, "response", required=True)
        criteria = read_str_list(body, "criteria")
        return json_response(await rt.evaluate(prompt, response, criteria))

    return bp
