"""
The core blueprint: what Rhetor is, whether it is healthy, and which provider answers.

``GET /`` (name, version and every route), ``GET /health`` (liveness),
``GET /ready`` (readiness: 503 with the reasons when a store does not answer
or no provider can), ``GET /metrics`` (Prometheus), ``GET /providers`` and
``POST /provider``. ``/``, ``/health`` and ``/ready`` are open even with an
API key set (``rhetor.edge._checks.OPEN_PATHS``), and ``/metrics`` is when
``RHETOR_METRICS_PUBLIC=1``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import Blueprint, Response

from rhetor import observe
from rhetor._errors import NotFound
from rhetor.edge._checks import METRICS_PATH
from rhetor.edge._fields import read_str
from rhetor.edge._http import json_response, read_body
from rhetor.runtime import VERSION

if TYPE_CHECKING:
    from rhetor.edge._sockets import EdgeState

__all__ = ["DESCRIPTION", "core_blueprint"]

DESCRIPTION = "LLM Management System for Tekton"


def core_blueprint(state: EdgeState) -> Blueprint:
    """The ``/``, ``/health``, ``/ready``, ``/metrics``, ``/providers`` and ``/provider`` routes."""
    bp = Blueprint("core", __name__)
    rt = state.runtime

    @bp.get("/")
    async def root() -> Response:
        return json_response(
            {
                "name": "Rhetor",
                "version": VERSION,
                "description": DESCRIPTION,
                "endpoints": list(state.endpoints),
            }
        )

    @bp.get("/health")
    async def health() -> Response:
        return json_response(await rt.health())

    @bp.get("/ready")
    async def ready() -> Response:
        readiness = await rt.ready()
        return json_response(readiness, 200 if readiness["status"] == "ready" else 503)

    @bp.get(METRICS_PATH)
    async def metrics() -> Response:
        if not state.observer.recording:
            raise NotFound("route", METRICS_PATH)
        await state.observer.sample(rt)
        body = state.observer.metrics.render()
        return Response(body, content_type=observe.CONTENT_TYPE)

    @bp.get("/providers")
    async def providers() -> Response:
        return json_response(await rt.providers())

    @bp.post("/provider")
    async def set_provider() -> Response:
        body = await read_body()
        provider = read_str(body, "provider", required=True)
        return json_response(await rt.set_provider(provider, read_str(body, "model")))

    return bp
