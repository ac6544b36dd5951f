"""
PromptLibrary: the actor that owns prompt templates and per-component system prompts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from rhetor.storage._actor import StoreActor, StoreCall
from rhetor.storage._library import LibraryStore, generate_prompt
from rhetor.storage._sqlite import check_text

__all__ = ["PromptLibrary"]

_PROMPT_WRITES = frozenset({"create_prompt", "update_prompt", "delete_prompt"})
# Components named in requests are the cache's keys; past this many it starts afresh,
# so requests naming ever new components cannot grow it without bound.
_MAX_CACHED_DEFAULTS = 1024


class PromptLibrary(StoreActor):
    """
    Answers :class:`rhetor.storage._actor.StoreCall` for templates and system prompts.

    The default system prompt of each component is cached in memory, since
    the router asks for it on every request; prompt writes clear the cache.
    """

    allowed: ClassVar[frozenset[str]] = frozenset(
        {
            "create_template",
            "update_template",
            "get_template",
            "list_templates",
            "versions",
            "delete_template",
            "render_template",
            "create_prompt",
            "update_prompt",
            "get_prompt",
            "list_prompts",
            "delete_prompt",
            "default_prompt",
            "generate_prompt",
        }
    )

    def __init__(self, path: Path) -> None:
        super().__init__(lambda: LibraryStore(path))
        # Invariant: holds exactly what default_prompt(component) returns now.
        self._defaults: dict[str, Any] = {}

    async def handle(self, message: Any) -> Any:
        if isinstance(message, StoreCall):
            if message.method == "generate_prompt":
                return generate_prompt(*message.args, **message.kwargs)
            if message.method == "default_prompt":
                component = check_text("component", message.args[0])
                if component not in self._defaults:
                    if len(self._defaults) >= _MAX_CACHED_DEFAULTS:
                        self._defaults.clear()
                    self._defaults[component] = await self.call("default_prompt", component)
                return self._defaults[component]
            if message.method in _PROMPT_WRITES:
                self._defaults.clear()
        return await super().handle(message)
