"""
What Rhetor stores about prompts, and the interfaces of the stores that keep it.

- :class:`TemplateLibrary`: versioned prompt templates;
- :class:`SystemPrompts`: per-component system prompts, at most one default each;
- :class:`Library`: both, as the PromptLibrary actor keeps them.

What every store shares (:class:`~rhetor.storage._interfaces.Store`), and the
contracts and error handling that hold for every store, are in
:mod:`rhetor.storage._interfaces`.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import attrs

from rhetor.storage._interfaces import Store
from rhetor.storage._rendering import render

__all__ = [
    "Library",
    "Prompt",
    "SystemPrompts",
    "Template",
    "TemplateLibrary",
    "TemplateVersion",
]


@attrs.frozen
class TemplateVersion:
    """
    One immutable version of a template's content and parameters.
    """

    template_id: str
    version: int
    content: str
    variables: tuple[str, ...]
    required: tuple[str, ...]
    optional: tuple[str, ...]
    defaults: Mapping[str, str]
    metadata: Mapping[str, Any]
    created: float


@attrs.frozen
class Template:
    """
    A named template at one version (its current one unless asked otherwise).
    """

    id: str
    name: str
    description: str
    category: str
    current_version: int
    version: int
    content: str
    variables: tuple[str, ...]
    required: tuple[str, ...]
    optional: tuple[str, ...]
    defaults: Mapping[str, str]
    metadata: Mapping[str, Any]
    created: float
    updated: float

    def render(self, variables: Mapping[str, object]) -> str:
        """
        This version filled with ``variables``; see :func:`rhetor.storage._rendering.render`.
        """
        return render(self.content, variables, self.required, self.optional, self.defaults)


@attrs.frozen
class Prompt:
    """
    A system prompt for one component; at most one per component is the default.
    """

    id: str
    name: str
    component: str
    content: str
    description: str
    tags: tuple[str, ...]
    is_default: bool
    created: float
    updated: float


class TemplateLibrary(Store, Protocol):
    """
    Versioned prompt templates, found by id or by (unique) name.

    Shared by several processes, a store keeps these promises: names stay
    unique and version numbers consecutive under concurrent writers (a write
    that would break either is refused or retried, never half applied).
    """

    def create_template(
        self,
        name: str,
        content: str,
        *,
        description: str = "",
        category: str = "general",
        required: Sequence[str] | None = None,
        optional: Sequence[str] | None = None,
        defaults: Mapping[str, str] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Template:
        """
        Store a new template at version 1.

        Error handling: ValidationError on ``name`` when the name is taken.
        """
        ...

    def update_template(
        self,
        id_or_name: str,
        content: str | None = None,
        *,
        name: str | None = None,
        description: str | None = None,
        category: str | None = None,
        required: Sequence[str] | None = None,
        optional: Sequence[str] | None = None,
        defaults: Mapping[str, str] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Template:
        """
        Change a template: content, required, optional, defaults or metadata
        make a new version (the rest carries over); name, description or
        category alone do not. None leaves a field as it is.
        """
        ...

    def get_template(self, id_or_name: str, version: int | None = None) -> Template:
        """
        A template at its current version or the one asked for; NotFound if there is none.
        """
        ...

    def list_templates(self, category: str | None = None) -> builtins.list[Template]:
        """
        Every template at its current version, by name; optionally of one category.
        """
        ...

    def versions(self, id_or_name: str) -> builtins.list[TemplateVersion]:
        """
        Every version of a template, oldest first; NotFound for an unknown template.
        """
        ...

    def delete_template(self, id_or_name: str) -> bool:
        """
        Delete a template and all its versions; True if it existed.
        """
        ...

    def render_template(self, id_or_name: str, variables: Mapping[str, object]) -> str:
        """
        A template's current version filled with ``variables``.
        """
        ...


class SystemPrompts(Store, Protocol):
    """
    System prompts per component; at most one per component is the default.

    Shared by several processes, a store keeps the one-default rule itself
    (SQLite with a unique partial index), so two writers making different
    prompts the default leave exactly one.
    """

    def create_prompt(
        self,
        name: str,
        component: str,
        content: str,
        *,
        description: str = "",
        tags: Sequence[str] = (),
        is_default: bool = False,
    ) -> Prompt:
        """
        Store a system prompt; as the default, it displaces the component's old default.
        """
        ...

    def update_prompt(
        self,
        prompt_id: str,
        *,
        name: str | None = None,
        component: str | None = None,
        content: str | None = None,
        description: str | None = None,
        tags: Sequence[str] | None = None,
        is_default: bool | None = None,
    ) -> Prompt:
        """
        Change a prompt's fields (None leaves one as it is); NotFound for an unknown id.
        """
        ...

    def get_prompt(self, prompt_id: str) -> Prompt:
        """
        A prompt by id; NotFound for an unknown id.
        """
        ...

    def list_prompts(self, component: str | None = None) -> builtins.list[Prompt]:
        """
        Every prompt by component then name; optionally of one component.
        """
        ...

    def delete_prompt(self, prompt_id: str) -> bool:
        """
        Delete a prompt; True if it existed.
        """
        ...

    def default_prompt(self, component: str) -> Prompt | None:
        """
        The component's default prompt, or None if it has none.
        """
        ...


class Library(TemplateLibrary, SystemPrompts, Protocol):
    """
    Templates and system prompts together: what the PromptLibrary actor keeps.
    """
