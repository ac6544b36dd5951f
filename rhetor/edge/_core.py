"""
The core blueprint: what Rhetor is, whether it is healthy, and which provider answers.

``GET /`` (name, version and every route), ``GET /health``, ``GET /providers``
and ``POST /provider``. ``/`` and ``/health`` are open even with an API key
set (``rhetor.edge._checks.OPEN_PATHS``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import Blueprint, Response

from rhetor.edge._http import json_response
from rhetor.edge._schema import operation
from rhetor.edge._schemas_native import HealthReply, ProviderBody, RootReply
from rhetor.runtime import VERSION

if TYPE_CHECKING:
    from rhetor.edge._sockets import EdgeState

__all__ = ["DESCRIPTION", "core_blueprint"]

DESCRIPTION = "LLM Management System for Tekton"


def core_blueprint(state: EdgeState) -> Blueprint:
    """The ``/``, ``/health``, ``/providers`` and ``/provider`` routes over ``state.runtime``."""
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
