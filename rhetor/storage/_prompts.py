"""
PromptLibrary: the actor that owns prompt templates and per-component system prompts.

It keeps them in a :class:`~rhetor.storage._library_interfaces.Library` (SQLite today,
see :mod:`rhetor.storage._library`) and answers one message per operation,
defined here.

What is cached in memory: the default system prompt of each component the
Router has asked for (it asks on every request that names a component and
brings no system prompt), up to 1,024 components. This actor's own prompt
writes clear it. That is right only while this actor is the only writer of
the prompts: over a store shared by several processes the runtime turns it
off (``cache_defaults=False``), unless something invalidates it when another
process writes: :class:`DefaultsChanged`, sent when another process's
change is heard (:mod:`rhetor.storage._changes`), forgets them and says
whether to cache again.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import attrs

from rhetor._asks import Ask
from rhetor._errors import StorageUnavailable
from rhetor.storage._actor import StoreActor
from rhetor.storage._library_interfaces import Library, Prompt, Template, TemplateVersion
from rhetor.storage._rendering import generate_prompt
from rhetor.storage._sqlite import check_text

__all__ = [
    "CreatePrompt",
    "CreateTemplate",
    "DefaultsChanged",
    "DeletePrompt",
    "DeleteTemplate",
    "GeneratePrompt",
    "GetDefaultPrompt",
    "GetPrompt",
    "GetTemplate",
    "GetTemplateVersions",
    "ListPrompts",
    "ListTemplates",
    "PromptLibrary",
    "RenderTemplate",
    "SharedPromptLibrary",
    "UpdatePrompt",
    "UpdateTemplate",
]

log = logging.getLogger("rhetor.prompts")

# Components named in requests are the cache's keys; past this many it starts afresh,
# so requests naming ever new components cannot grow it without bound.
_MAX_CACHED_DEFAULTS = 1024


# -- templates -------------------------------------------------------------------------


@attrs.frozen
class CreateTemplate(Ask[Template]):
    """
    Store a new template at version 1; ValidationError on ``name`` if it is taken.
    """

    name: str
    content: str
    description: str = ""
    category: str = "general"
    required: Sequence[str] | None = None
    optional: Sequence[str] | None = None
    defaults: Mapping[str, str] | None = None
    metadata: Mapping[str, Any] | None = None


@attrs.frozen
class UpdateTemplate(Ask[Template]):
    """
    Change the template named by id or name (None leaves a field as it is).

    A change to content, required, optional, defaults or metadata makes a new version.
    """

    template: str
    content: str | None = None
    name: str | None = None
    description: str | None = None
    category: str | None = None
    required: Sequence[str] | None = None
    optional: Sequence[str] | None = None
    defaults: Mapping[str, str] | None = None
    metadata: Mapping[str, Any] | None = None


@attrs.frozen
class GetTemplate(Ask[Template]):
    """
    A template by id or name, at its current version or ``version``; NotFound if none.
    """

    template: str
    version: int | None = None


@attrs.frozen
class ListTemplates(Ask[builtins.list[Template]]):
    """
    Every template at its current version, by name; optionally of one category.
    """

    category: str | None = None


@attrs.frozen
class GetTemplateVersions(Ask[builtins.list[TemplateVersion]]):
    """
    Every version of a template, oldest first; NotFound for an unknown template.
    """

    template: str


@attrs.frozen
class DeleteTemplate(Ask[bool]):
    """
    Delete a template and its versions; answers whether it existed.
    """

    template: str


@attrs.frozen
class RenderTemplate(Ask[str]):
    """
    A template's current version filled with ``variables``.
    """

    template: str
    variables: Mapping[str, object]


# -- system prompts --------------------------------------------------------------------


@attrs.frozen
class CreatePrompt(Ask[Prompt]):
    """
    Store a system prompt; as the default, it displaces the component's old default.
    """

    name: str
    component: str
    content: str
    description: str = ""
    tags: Sequence[str] = ()
    is_default: bool = False


@attrs.frozen
class UpdatePrompt(Ask[Prompt]):
    """
    Change a prompt's fields (None leaves one as it is); NotFound for an unknown id.
    """

    prompt_id: str
    name: str | None = None
    component: str | None = None
    content: str | None = None
    description: str | None = None
    tags: Sequence[str] | None = None
    is_default: bool | None = None


@attrs.frozen
class GetPrompt(Ask[Prompt]):
    """
    A prompt by id; NotFound for an unknown id.
    """

    prompt_id: str


@attrs.frozen
class ListPrompts(Ask[builtins.list[Prompt]]):
    """
    Every prompt by component then name; optionally of one component.
    """

    component: str | None = None


@attrs.frozen
class DeletePrompt(Ask[bool]):
    """
    Delete a prompt; answers whether it existed.
    """

    prompt_id: str


@attrs.frozen
class GetDefaultPrompt(Ask[Prompt | None]):
    """
    The component's default system prompt, or None; answered from memory after the first ask.
    """

    component: str


@attrs.frozen
class DefaultsChanged(Ask[None]):
    """
    Another process may have changed the prompts: forget the cached default prompts.

    ``live``: whether later changes will be heard (the defaults are cached
    again), or not (each is read from the store, and the last one read is
    served only while the store cannot be read).
    """

    live: bool = True


@attrs.frozen
class GeneratePrompt(Ask[str]):
    """
    A drafted prompt for ``task`` in ``format`` (see :func:`rhetor.storage._rendering.generate_prompt`).
    """

    task: str
    context: Mapping[str, object] | str | None = None
    format: str = "instruction"


# -- the actor -------------------------------------------------------------------------


@attrs.define(eq=False)
class PromptLibrary(StoreActor[Library]):
    """
    Answers the messages above from a :class:`Library`; default prompts from memory.
    """

    # False: every default prompt is read from the store (a store other
    # processes write too, with nothing telling this actor of their writes),
    # until a DefaultsChanged(live=True) says their writes will be heard.
    _cache_defaults: bool = attrs.field(default=True, alias="cache_defaults", kw_only=True)
    # Invariant: while _cache_defaults, holds exactly what the store's
    # default_prompt(component) answers now; otherwise the answers last read,
    # used only when the store cannot be read.
    _defaults: dict[str, Prompt | None] = attrs.field(init=False, factory=dict)
    # Invariant: grows whenever _defaults is emptied; a read of the store keeps
    # its answer only if no emptying happened while it ran (a concurrent
    # library's read may outlive a write or a change heard meanwhile).
    _generation: int = attrs.field(init=False, default=0)

    def _forget_defaults(self) -> None:
        self._defaults.clear()
        self._generation += 1

    async def handle(self, message: Any) -> Any:
        match message:
            case GetDefaultPrompt():
                return await self._default_prompt(message.component)
            case DefaultsChanged():
                if message.live:
                    # Changes made while nobody listened were not heard.
                    self._forget_defaults()
                self._cache_defaults = message.live
                return None
            case GeneratePrompt():
                # Pure text work: no store, no thread.
                return generate_prompt(message.task, message.context, message.format)
            case CreateTemplate():
                return await self.run(
                    lambda s: s.create_template(
                        message.name,
                        message.content,
                        description=message.description,
                        category=message.category,
                        required=message.required,
                        optional=message.optional,
                        defaults=message.defaults,
                        metadata=message.metadata,
                    ),
                    "CreateTemplate",
                )
            case UpdateTemplate():
                return await self.run(
                    lambda s: s.update_template(
                        message.template,
                        message.content,
                        name=message.name,
                        description=message.description,
                        category=message.category,
                        required=message.required,
                        optional=message.optional,
                        defaults=message.defaults,
                        metadata=message.metadata,
                    ),
                    "UpdateTemplate",
                )
            case GetTemplate():
                return await self.run(
                    lambda s: s.get_template(message.template, message.version), "GetTemplate"
                )
            case ListTemplates():
                return await self.run(lambda s: s.list_templates(message.category), "ListTemplates")
            case GetTemplateVersions():
                return await self.run(lambda s: s.versions(message.template), "GetTemplateVersions")
            case DeleteTemplate():
                return await self.run(
                    lambda s: s.delete_template(message.template), "DeleteTemplate"
                )
            case RenderTemplate():
                return await self.run(
                    lambda s: s.render_template(message.template, message.variables),
                    "RenderTemplate",
                )
            case GetPrompt():
                return await self.run(lambda s: s.get_prompt(message.prompt_id), "GetPrompt")
            case ListPrompts():
                return await self.run(lambda s: s.list_prompts(message.component), "ListPrompts")
            case CreatePrompt() | UpdatePrompt() | DeletePrompt():
                return await self._write_prompt(message)
        return await super().handle(message)

    async def _default_prompt(self, component: str) -> Prompt | None:
        check_text("component", component)
        if self._cache_defaults and component in self._defaults:
            return self._defaults[component]
        generation = self._generation
        try:
            prompt = await self.run(lambda s: s.default_prompt(component), "GetDefaultPrompt")
        except StorageUnavailable:
            if self._cache_defaults or component not in self._defaults:
                raise
            # The store cannot be read (the database is down): serve what it said last.
            log.warning(
                "default prompt of %r read from memory: the store is unavailable", component
            )
            return self._defaults[component]
        if generation == self._generation:
            if len(self._defaults) >= _MAX_CACHED_DEFAULTS:
                self._forget_defaults()
            self._defaults[component] = prompt
        return prompt

    async def _write_prompt(self, message: CreatePrompt | UpdatePrompt | DeletePrompt) -> Any:
        # Any prompt write may change a default. Forgotten before the write and
        # again after it: a concurrent library may read meanwhile.
        self._forget_defaults()
        try:
            return await self._write(message)
        finally:
            self._forget_defaults()

    async def _write(self, message: CreatePrompt | UpdatePrompt | DeletePrompt) -> Any:
        match message:
            case CreatePrompt():
                return await self.run(
                    lambda s: s.create_prompt(
                        message.name,
                        message.component,
                        message.content,
                        description=message.description,
                        tags=message.tags,
                        is_default=message.is_default,
                    ),
                    "CreatePrompt",
                )
            case UpdatePrompt():
                return await self.run(
                    lambda s: s.update_prompt(
                        message.prompt_id,
                        name=message.name,
                        component=message.component,
                        content=message.content,
                        description=message.description,
                        tags=message.tags,
                        is_default=message.is_default,
                    ),
                    "UpdatePrompt",
                )
        return await self.run(lambda s: s.delete_prompt(message.prompt_id), "DeletePrompt")


@attrs.define(eq=False)
class SharedPromptLibrary(PromptLibrary):
    """
    A PromptLibrary over a store other processes write too (PostgreSQL): calls at once.

    The actor answers up to ``max_concurrency`` messages at once, each in a
    worker thread. Default prompts are read from the store every time
    (another process may have changed them) until the change feed says it
    hears other processes' writes (``DefaultsChanged(live=True)``); from then
    on they are cached, each change heard empties the cache, and a read that
    overlapped an emptying keeps nothing (see ``_generation``). While the
    store cannot be read the last default read is served.
    """

    max_concurrency: ClassVar[int] = 64

    def __attrs_post_init__(self) -> None:
        self._cache_defaults = False
