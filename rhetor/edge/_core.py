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
from rhetor.edge._http import json_response
from rhetor.edge._schema import operation
from rhetor.edge._schemas_native import HealthReply, ProviderBody, ReadyReply, RootReply
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
    @operation(reply=RootReply)
    async def root() -> Response:
        """
        What this server is: name, version and every route.
        """
        return json_response(
            {
                "name": "Rhetor",
                "version": VERSION,
                "description": DESCRIPTION,
                "endpoints": list(state.endpoints),
            }
        )

    @bp.get("/health")
    @operation(reply=HealthReply)
    async def health() -> Response:
        """
        Liveness: ``degraded`` when an internal actor is down or no provider is available.
        """
        return json_response(await rt.health())

    @bp.get("/ready")
    @operation(reply=ReadyReply, also=503)
    async def ready() -> Response:
        """
        Readiness: 200 when every store answers a read and a provider can answer; 503 and why if not.
        """
        readiness = await rt.ready()
        return json_response(readiness, 200 if readiness["status"] == "ready" else 503)

    @bp.get(METRICS_PATH)
    @operation(content_type="text/plain")
    async def metrics() -> Response:
        """
        Metrics in the Prometheus text format (404 when ``RHETOR_METRICS=0``).

        Under the API key unless ``RHETOR_METRICS_PUBLIC=1``.
        """
        if not state.observer.recording:
            raise NotFound("route", METRICS_PATH)
        await state.observer.sample(rt)
        body = state.observer.metrics.render()
        return Response(body, content_type=observe.CONTENT_TYPE)

    @bp.get("/providers")
    async def providers() -> Response:
        """
        Every provider with its models and availability, and the active provider and model.
        """
        return json_response(await rt.providers())

    @bp.post("/provider")
    @operation(body=ProviderBody)
    async def set_provider(body: ProviderBody) -> Response:
        """
        Choose the provider (and model) for requests routed by default; answers as ``/providers``.

        The choice is stored and survives a restart; it is ignored at a start
        where that provider no longer serves it.
        """
        return json_response(await rt.set_provider(body.provider, body.model))

    return bp
