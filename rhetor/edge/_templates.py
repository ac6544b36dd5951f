"""
The templates blueprint: versioned prompt templates under ``/templates``.

List (by ``category``), create, get (the current or a given ``version``),
update (a new version), delete, render with ``variables``, and list versions.
Bodies take only the fields in :data:`TEMPLATE_FIELDS`; an unknown one is a
422 naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from quart import Blueprint, Response, request

from rhetor.edge._fields import read_object, read_str, read_str_list
from rhetor.edge._http import json_response, only, plain, query_number, read_body

if TYPE_CHECKING:
    from rhetor.runtime import Runtime

__all__ = ["TEMPLATE_FIELDS", "template_body", "templates_blueprint"]

TEMPLATE_FIELDS = frozenset(
    {"name", "content", "description", "category", "required", "optional", "defaults", "metadata"}
)


def template_body(body: Mapping[str, Any], *, creating: bool) -> dict[str, Any]:
    """
    A template's fields from a body (``name`` and ``content`` required when creating).

    Error handling: raises :class:`ValidationError` naming the first bad field.
    """
    fields = only(body, TEMPLATE_FIELDS)
    for name in ("name", "content", "description", "category"):
        read_str(fields, name, required=creating and name in ("name", "content"))
    for name in ("required", "optional"):
        read_str_list(fields, name)
    for name in ("defaults", "metadata"):
        read_object(fields, name)
    return {k: v for k, v in fields.items() if v is not None}


def templates_blueprint(runtime: Runtime) -> Blueprint:
    """The ``/templates`` routes over ``runtime``."""
    bp = Blueprint("templates", __name__, url_prefix="/templates")
    rt = runtime

    @bp.get("")
    async def list_templates() -> Response:
        category = request.args.get("category") or None
        return json_response({"templates": plain(await rt.list_templates(category))})

    @bp.post("")
    async def create_template() -> Response:
        fields = template_body(await read_body(), creating=True)
        name, content = fields.pop("name"), fields.pop("content")
        return json_response(plain(await rt.create_template(name, content, **fields)), 201)

    @bp.get("/<template_id>")
    async def get_template(template_id: str) -> Response:
        version = query_number("version", None, minimum=1)
        return json_response(plain(await rt.get_template(template_id, version)))

    @bp.put("/<template_id>")
    async def update_template(template_id: str) -> Response:
        fields = template_body(await read_body(), creating=False)
        return json_response(plain(await rt.update_template(template_id, **fields)))

    @bp.delete("/<template_id>")
    async def delete_template(template_id: str) -> Response:
        await rt.delete_template(template_id)
        return json_response({"deleted": True, "id": template_id})

    @bp.post("/<template_id>/render")
    async def render_template(template_id: str) -> Response:
        variables = read_object(await read_body(), "variables") or {}
        rendered = await rt.render_template(template_id, variables)
        return json_response({"template": template_id, "rendered": rendered})

    @bp.get("/<template_id>/versions")
    async def template_versions(template_id: str) -> Response:
        versions = await rt.template_versions(template_id)
        return json_response({"template": template_id, "versions": plain(versions)})

    return bp
