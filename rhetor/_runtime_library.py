"""
The runtime handle's prompt library and context methods, split out of
``runtime.py``: :class:`rhetor.runtime.Runtime` inherits them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import actors
from rhetor._asks import ask
from rhetor._errors import NotFound, ValidationError
from rhetor._runtime_requests import ContextDetail, _refuse_unknown
from rhetor._settings import Settings
from rhetor.routing._router import Summarize
from rhetor.storage._contexts import (
    DeleteContext,
    ListContexts,
    ReadContext,
    SearchContexts,
)
from rhetor.storage._interfaces import ContextInfo, SearchHit
from rhetor.storage._library_interfaces import Prompt, Template, TemplateVersion
from rhetor.storage._prompts import (
    CreatePrompt,
    CreateTemplate,
    DeletePrompt,
    DeleteTemplate,
    GeneratePrompt,
    GetPrompt,
    GetTemplate,
    GetTemplateVersions,
    ListPrompts,
    ListTemplates,
    RenderTemplate,
    UpdatePrompt,
    UpdateTemplate,
)

__all__ = ["LibraryMethods"]


class LibraryMethods:
    """
    Templates, prompts and contexts: each method one ask of the owning actor.

    Error handling: as :class:`rhetor.runtime.Runtime` (whose fields below
    these methods use).
    """

    __slots__ = ()

    settings: Settings
    router: actors.Ref
    contexts: actors.Ref
    prompts: actors.Ref

    # -- templates and prompts ----------------------------------------------

    async def create_template(self, name: str, content: str, **fields: Any) -> Template:
        _refuse_unknown(fields, CreateTemplate, "name", "content")
        return await ask(self.prompts, CreateTemplate(name, content, **fields))

    async def update_template(self, template: str, **fields: Any) -> Template:
        _refuse_unknown(fields, UpdateTemplate, "template")
        return await ask(self.prompts, UpdateTemplate(template, **fields))

    async def get_template(self, template: str, version: int | None = None) -> Template:
        return await ask(self.prompts, GetTemplate(template, version))

    async def list_templates(self, category: str | None = None) -> list[Template]:
        return await ask(self.prompts, ListTemplates(category))

    async def template_versions(self, template: str) -> list[TemplateVersion]:
        return await ask(self.prompts, GetTemplateVersions(template))

    async def delete_template(self, template: str) -> bool:
        if not await ask(self.prompts, DeleteTemplate(template)):
            raise NotFound("template", template)
        return True

    async def render_template(self, template: str, variables: Mapping[str, Any]) -> str:
        return await ask(self.prompts, RenderTemplate(template, variables))

    async def create_prompt(self, name: str, component: str, content: str, **fields: Any) -> Prompt:
        _refuse_unknown(fields, CreatePrompt, "name", "component", "content")
        return await ask(self.prompts, CreatePrompt(name, component, content, **fields))

    async def update_prompt(self, prompt_id: str, **fields: Any) -> Prompt:
        _refuse_unknown(fields, UpdatePrompt, "prompt_id")
        return await ask(self.prompts, UpdatePrompt(prompt_id, **fields))

    async def get_prompt(self, prompt_id: str) -> Prompt:
        return await ask(self.prompts, GetPrompt(prompt_id))

    async def list_prompts(self, component: str | None = None) -> list[Prompt]:
        return await ask(self.prompts, ListPrompts(component))

    async def delete_prompt(self, prompt_id: str) -> bool:
        if not await ask(self.prompts, DeletePrompt(prompt_id)):
            raise NotFound("prompt", prompt_id)
        return True

    async def generate_prompt(
        self, task: str, context: Any = None, format: str = "instruction"
    ) -> str:
        return await ask(self.prompts, GeneratePrompt(task, context, format))

    # -- contexts -----------------------------------------------------------

    async def list_contexts(self, limit: int = 100, offset: int = 0) -> list[ContextInfo]:
        return await ask(self.contexts, ListContexts(limit, offset))

    async def get_context(self, context_id: str, limit: int | None = None) -> ContextDetail:
        """A context's description and messages (the newest ``limit``); NotFound if unknown."""
        record = await ask(self.contexts, ReadContext(context_id, limit))
        return {"info": record.info, "messages": record.messages}

    async def delete_context(self, context_id: str) -> bool:
        if not await ask(self.contexts, DeleteContext(context_id)):
            raise NotFound("context", context_id)
        return True

    async def search_contexts(self, query: str, limit: int = 20) -> list[SearchHit]:
        if not query:
            raise ValidationError("q", "must not be empty")
        return await ask(self.contexts, SearchContexts(query, limit))

    async def summarize_context(self, context_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await ask(
            self.router, Summarize(context_id), timeout=self.settings.request_timeout + 5
        )
        return result
