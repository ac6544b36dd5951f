"""
The contexts blueprint: stored conversations under ``/contexts``.

List (``limit``, ``offset``), search (``q``), get (its last ``limit``
messages), delete, and summarize. Turns are stored by the LLM requests that
name a context, never through these routes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import Blueprint, Response

from rhetor.edge._http import json_response, plain
from rhetor.edge._schema import operation
from rhetor.edge._schemas_admin import (
    ContextList,
    ContextQuery,
    ContextReply,
    ContextsQuery,
    DeletedReply,
    SearchQuery,
    SearchReply,
)

if TYPE_CHECKING:
    from rhetor.runtime import Runtime

__all__ = ["contexts_blueprint"]


def contexts_blueprint(runtime: Runtime) -> Blueprint:
    """The ``/contexts`` routes over ``runtime``."""
    bp = Blueprint("contexts", __name__, url_prefix="/contexts")
    rt = runtime

    @bp.get("")
    @operation(query=ContextsQuery, reply=ContextList)
    async def list_contexts(query: ContextsQuery) -> Response:
        """
        One page of contexts: ``{"contexts": [{id, created, updated, message_count, summary, metadata}]}``.
        """
        contexts = await rt.list_contexts(query.limit, query.offset)
        return json_response({"contexts": plain(contexts)})

    @bp.get("/search")
    @operation(query=SearchQuery, reply=SearchReply)
    async def search_contexts(query: SearchQuery) -> Response:
        """
        Messages that mention ``q``: ``{"query", "results": [{context_id, seq, role, snippet}]}``.
        """
        hits = await rt.search_contexts(query.q, query.limit)
        return json_response({"query": query.q, "results": plain(hits)})

    @bp.get("/<context_id>")
    @operation(query=ContextQuery, reply=ContextReply)
    async def get_context(context_id: str, query: ContextQuery) -> Response:
        """
        A context and its messages: ``{"info", "messages": [{context_id, seq, role, content, ts, tokens}]}``.
        """
        return json_response(plain(await rt.get_context(context_id, query.limit)))

    @bp.delete("/<context_id>")
    @operation(reply=DeletedReply)
    async def delete_context(context_id: str) -> Response:
        """
        Delete a context and its messages.
        """
        await rt.delete_context(context_id)
        return json_response({"deleted": True, "id": context_id})

    @bp.post("/<context_id>/summarize")
    async def summarize_context(context_id: str) -> Response:
        """
        Summarize a context now: ``{"context_id", "summary", "upto", "model"}``.
        """
        return json_response(await rt.summarize_context(context_id))

    return bp
