"""
The templates blueprint: versioned prompt templates under ``/templates``.

List (by ``category``), create, get (the current or a given ``version``),
update (a new version), delete, render with ``variables``, and list versions.
Bodies are ``rhetor.edge._schemas_admin``'s :class:`TemplateBody` and
:class:`TemplateUpdateBody`, which refuse an unknown field (a 422 naming it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import Blueprint, Response

from rhetor.edge._http import json_response, plain
from rhetor.edge._schema import operation
from rhetor.edge._schemas_admin import (
    DeletedReply,
    RenderBody,
    RenderReply,
    TemplateBody,
    TemplateList,
    TemplateQuery,
    TemplatesQuery,
    TemplateUpdateBody,
    TemplateVersionsReply,
    given,
)
from rhetor.storage import Template

if TYPE_CHECKING:
    from rhetor.runtime import Runtime

__all__ = ["templates_blueprint"]


def templates_blueprint(runtime: Runtime) -> Blueprint:
    """The ``/templates`` routes over ``runtime``."""
    bp = Blueprint("templates", __name__, url_prefix="/templates")
    rt = runtime

    @bp.get("")
    @operation(query=TemplatesQuery, reply=TemplateList)
    async def list_templates(query: TemplatesQuery) -> Response:
        """
        Every template (``{"templates": [...]}``), or those of a category.
        """
        return json_response({"templates": plain(await rt.list_templates(query.category))})

    @bp.post("")
    @operation(body=TemplateBody, reply=Template, status=201)
    async def create_template(body: TemplateBody) -> Response:
        """
        Create a template; ``{name}`` placeholders in its content are its variables.
        """
        fields = given(body)
        name, content = fields.pop("name"), fields.pop("content")
        return json_response(plain(await rt.create_template(name, content, **fields)), 201)

    @bp.get("/<template_id>")
    @operation(query=TemplateQuery, reply=Template)
    async def get_template(template_id: str, query: TemplateQuery) -> Response:
        """
        A template by id or name, at its current or a given version.
        """
        return json_response(plain(await rt.get_template(template_id, query.version)))

    @bp.put("/<template_id>")
    @operation(body=TemplateUpdateBody, reply=Template)
    async def update_template(template_id: str, body: TemplateUpdateBody) -> Response:
        """
        Change a template; a new content or parameter makes a new version.
        """
        return json_response(plain(await rt.update_template(template_id, **given(body))))

    @bp.delete("/<template_id>")
    @operation(reply=DeletedReply)
    async def delete_template(template_id: str) -> Response:
        """
        Delete a template and its versions.
        """
        await rt.delete_template(template_id)
        return json_response({"deleted": True, "id": template_id})

    @bp.post("/<template_id>/render")
    @operation(body=RenderBody, reply=RenderReply)
    async def render_template(template_id: str, body: RenderBody) -> Response:
        """
        Render a template with ``variables``: ``{"template", "rendered"}``.
        """
        rendered = await rt.render_template(template_id, body.variables or {})
        return json_response({"template": template_id, "rendered": rendered})

    @bp.get("/<template_id>/versions")
    @operation(reply=TemplateVersionsReply)
    async def template_versions(template_id: str) -> Response:
        """
        Every version of a template: ``{"template", "versions": [...]}``.
        """
        versions = await rt.template_versions(template_id)
        return json_response({"template": template_id, "versions": plain(versions)})

    return bp
