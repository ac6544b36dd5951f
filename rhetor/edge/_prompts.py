"""
The prompts blueprint: per-component system prompts under ``/prompts``.

List (by ``component``), create, get, update, delete, and ``POST
/prompts/generate``, which builds a prompt for a task. Bodies are
``rhetor.edge._schemas_admin``'s :class:`PromptBody` and
:class:`PromptUpdateBody`, which refuse an unknown field (a 422 naming it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import Blueprint, Response

from rhetor.edge._http import json_response, plain
from rhetor.edge._schema import operation
from rhetor.edge._schemas_admin import (
    DeletedReply,
    GeneratedPrompt,
    GeneratePromptBody,
    PromptBody,
    PromptList,
    PromptsQuery,
    PromptUpdateBody,
    given,
)
from rhetor.storage import Prompt

if TYPE_CHECKING:
    from rhetor.runtime import Runtime

__all__ = ["prompts_blueprint"]


def prompts_blueprint(runtime: Runtime) -> Blueprint:
    """The ``/prompts`` routes over ``runtime``."""
    bp = Blueprint("prompts", __name__, url_prefix="/prompts")
    rt = runtime

    @bp.get("")
    @operation(query=PromptsQuery, reply=PromptList)
    async def list_prompts(query: PromptsQuery) -> Response:
        """
        Every system prompt (``{"prompts": [...]}``), or those of a component.
        """
        return json_response({"prompts": plain(await rt.list_prompts(query.component))})

    @bp.post("")
    @operation(body=PromptBody, reply=Prompt, status=201)
    async def create_prompt(body: PromptBody) -> Response:
        """
        Create a system prompt; a default one displaces its component's old default.
        """
        fields = given(body)
        name, component, content = (
            fields.pop("name"),
            fields.pop("component"),
            fields.pop("content"),
        )
        return json_response(plain(await rt.create_prompt(name, component, content, **fields)), 201)

    @bp.post("/generate")
    @operation(body=GeneratePromptBody, reply=GeneratedPrompt)
    async def generate_prompt(body: GeneratePromptBody) -> Response:
        """
        Draft a system prompt for a task: ``{"prompt", "task", "format"}``.
        """
        fmt = body.format or "instruction"
        prompt = await rt.generate_prompt(body.task, body.context, fmt)
        return json_response({"prompt": prompt, "task": body.task, "format": fmt})

    @bp.get("/<prompt_id>")
    @operation(reply=Prompt)
    async def get_prompt(prompt_id: str) -> Response:
        """
        A system prompt by id.
        """
        return json_response(plain(await rt.get_prompt(prompt_id)))

    @bp.put("/<prompt_id>")
    @operation(body=PromptUpdateBody, reply=Prompt)
    async def update_prompt(prompt_id: str, body: PromptUpdateBody) -> Response:
        """
        Change a system prompt.
        """
        return json_response(plain(await rt.update_prompt(prompt_id, **given(body))))

    @bp.delete("/<prompt_id>")
    @operation(reply=DeletedReply)
    async def delete_prompt(prompt_id: str) -> Response:
        """
        Delete a system prompt.
        """
        await rt.delete_prompt(prompt_id)
        return json_response({"deleted": True, "id": prompt_id})

    return bp
