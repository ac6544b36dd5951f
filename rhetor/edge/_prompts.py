"""
The prompts blueprint: per-component system prompts under ``/prompts``.

List (by ``component``), create, get, update, delete, and ``POST
/prompts/generate``, which builds a prompt for a task. Bodies take only the
fields in :data:`PROMPT_FIELDS`; an unknown one is a 422 naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from quart import Blueprint, Response, request

from rhetor._errors import ValidationError
from rhetor.edge._fields import read_bool, read_str, read_str_list
from rhetor.edge._http import json_response, only, plain, read_body

if TYPE_CHECKING:
    from rhetor.runtime import Runtime

__all__ = ["PROMPT_FIELDS", "prompt_body", "prompts_blueprint"]

PROMPT_FIELDS = frozenset({"name", "component", "content", "description", "tags", "is_default"})


def prompt_body(body: Mapping[str, Any], *, creating: bool) -> dict[str, Any]:
    """
    A prompt's fields from a body (``name``, ``component``, ``content`` required when creating).

    Error handling: raises :class:`ValidationError` naming the first bad field.
    """
    fields = only(body, PROMPT_FIELDS)
    for name in ("name", "component", "content"):
        read_str(fields, name, required=creating)
    read_str(fields, "description")
    read_str_list(fields, "tags")
    if "is_default" in fields:
        read_bool(fields, "is_default", False)
    return {k: v for k, v in fields.items() if v is not None}


def prompts_blueprint(runtime: Runtime) -> Blueprint:
    """The ``/prompts`` routes over ``runtime``."""
    bp = Blueprint("prompts", __name__, url_prefix="/prompts")
    rt = runtime

    @bp.get("")
    async def list_prompts() -> Response:
        component = request.args.get("component") or None
        return json_response({"prompts": plain(await rt.list_prompts(component))})

    @bp.post("")
    async def create_prompt() -> Response:
        fields = prompt_body(await read_body(), creating=True)
        name, component, content = (
            fields.pop("name"),
            fields.pop("component"),
            fields.pop("content"),
        )
        return json_response(plain(await rt.create_prompt(name, component, content, **fields)), 201)

    @bp.post("/generate")
    async def generate_prompt() -> Response:
        body = await read_body()
        task = read_str(body, "task", required=True)
        context = body.get("context")
        if context is not None and not isinstance(context, str | dict):
            raise ValidationError("context", "must be an object, a string or null")
        fmt = read_str(body, "format", default="instruction")
        prompt = await rt.generate_prompt(task, context, fmt)
        return json_response({"prompt": prompt, "task": task, "format": fmt})

    @bp.get("/<prompt_id>")
    async def get_prompt(prompt_id: str) -> Response:
        return json_response(plain(await rt.get_prompt(prompt_id)))

    @bp.put("/<prompt_id>")
    async def update_prompt(prompt_id: str) -> Response:
        fields = prompt_body(await read_body(), creating=False)
        return json_response(plain(await rt.update_prompt(prompt_id, **fields)))

    @bp.delete("/<prompt_id>")
    async def delete_prompt(prompt_id: str) -> Response:
        await rt.delete_prompt(prompt_id)
        return json_response({"deleted": True, "id": prompt_id})

    return bp
