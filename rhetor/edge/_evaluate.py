"""
The evaluate blueprint: ``POST /evaluate`` scores a response to a prompt.

The body (:class:`~rhetor.edge._schemas_admin.EvaluateBody`) names the
``prompt``, the ``response`` and optional ``criteria``; the answer is an
overall score from 0 to 10, a score per criterion and feedback (the router
asks a model for them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import Blueprint, Response

from rhetor.edge._http import json_response
from rhetor.edge._schema import operation
from rhetor.edge._schemas_admin import EvaluateBody

if TYPE_CHECKING:
    from rhetor.runtime import Runtime

__all__ = ["evaluate_blueprint"]


def evaluate_blueprint(runtime: Runtime) -> Blueprint:
    """The ``/evaluate`` route over ``runtime``."""
    bp = Blueprint("evaluate", __name__)
    rt = runtime

    @bp.post("/evaluate")
    @operation(body=EvaluateBody)
    async def evaluate(body: EvaluateBody) -> Response:
        """
        Score a response: ``{"evaluation": {overall_score, scores, feedback, method}, "model", "provider", "cost"}``.

        When the model's answer is not a JSON evaluation, ``method`` is
        ``heuristic`` and the feedback says so.
        """
        return json_response(await rt.evaluate(body.prompt, body.response, body.criteria))

    return bp
