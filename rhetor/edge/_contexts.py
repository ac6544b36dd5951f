"""
The contexts blueprint: stored conversations under ``/contexts``.

List (``limit``, ``offset``), search (``q``), get (its last ``limit``
messages), delete, and summarize. Turns are stored by the LLM requests that
name a context, never through these routes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import Blueprint, Response, request

from rhetor.edge._http import json_response, plain, query_number

if TYPE_CHECKING:
    from rhetor.runtime import Runtime

__all__ = ["contexts_blueprint"]


def contexts_blueprint(runtime: Runtime) -> Blueprint:
    """The ``/contexts`` routes over ``runtime``."""
    bp = Blueprint("contexts", __name__, url_prefix="/contexts")
    rt = runtime

    @bp.get("")
    async def list_contexts() -> Response:
        limit = query_number("limit", 100, minimum=1)
        offset = query_number("offset", 0)
        contexts = await rt.list_contexts(limit or 100, offset or 0)
        return json_response({"contexts": plain(contexts)})

    @bp.get("/search")
    async def search_contexts() -> Response:
        query = request.args.get("q", "")
        limit = query_number("limit", 20, minimum=1) or 20
        hits = await rt.search_contexts(query, limit)
        return json_response({"query": query, "results": plain(hits)})

    @bp.get("/<context_id>")
    async def get_context(context_id: str) -> Response:
        limit = query_number("limit", None, minimum=1)
        return json_response(plain(await rt.get_context(context_id, limit)))

    @bp.delete("/<context_id>")
    async def delete_context(context_id: str) -> Response:
        await rt.delete_context(context_id)
        return json_response({"deleted": True, "id": context_id})

    @bp.post("/<context_id>/summarize")
    async def summarize_context(context_id: str) -> Response:
        return json_response(await rt.summarize_context(context_id))

    return bp
