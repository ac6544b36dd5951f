"""
The PromptLibrary actor (rhetor/storage/_prompts.py): its messages, and the default-prompt cache.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import actors
import rhetor.storage._prompts
from rhetor._errors import NotFound, ValidationError
from rhetor.storage._actor import StoreActor
from rhetor.storage._library import SQLiteLibrary
from rhetor.storage._library_interfaces import Library, Prompt, Template
from rhetor.storage._pg_library import PostgresLibrary
from rhetor.storage._prompts import (
    CreatePrompt,
    CreateTemplate,
    DeletePrompt,
    DeleteTemplate,
    GeneratePrompt,
    GetDefaultPrompt,
    GetPrompt,
    GetTemplate,
    GetTemplateVersions,
    ListPrompts,
    ListTemplates,
    PromptLibrary,
    RenderTemplate,
    UpdatePrompt,
    UpdateTemplate,
)
from tests.stores import library_opener


@pytest.fixture
def path(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Callable[[], Library]:
    """Opens the library on the backend's storage (SQLite or PostgreSQL)."""
    return library_opener(backend, tmp_path, request)


def library(path: Callable[[], Library] | Path, **options: Any) -> PromptLibrary:
    if callable(path):
        return PromptLibrary(path, **options)
    return PromptLibrary(lambda: SQLiteLibrary(path), **options)


@pytest.fixture
def store_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The store operations the actor runs, by name, in order."""
    calls: list[str] = []
    original = StoreActor.run

    async def counted(self: Any, operation: Any, what: str) -> Any:
        calls.append(what)
        return await original(self, operation, what)

    monkeypatch.setattr(StoreActor, "run", counted)
    return calls


async def test_a_default_prompt_is_read_once_then_answered_from_memory(
    tmp_path: Path, store_calls: list[str]
) -> None:
    """After the first ask for a component's default prompt, asks need no store call, a missing one too."""
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: library(tmp_path / "p.db"), name="prompts")
        made = await ref.ask(CreatePrompt("base", "ergon", "You write code.", is_default=True))
        store_calls.clear()
        for _ in range(3):
            assert await ref.ask(GetDefaultPrompt("ergon")) == made
            assert await ref.ask(GetDefaultPrompt("athena")) is None
    assert store_calls == ["GetDefaultPrompt", "GetDefaultPrompt"]


async def test_every_prompt_write_clears_the_cached_defaults(path: Callable[[], Library]) -> None:
    """A create, update or delete of a prompt is seen by the next default-prompt ask."""
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: library(path), name="prompts")
        assert await ref.ask(GetDefaultPrompt("ergon")) is None
        first = await ref.ask(CreatePrompt("a", "ergon", "one", is_default=True))
        assert await ref.ask(GetDefaultPrompt("ergon")) == first
        second = await ref.ask(CreatePrompt("b", "ergon", "two", is_default=True))
        assert await ref.ask(GetDefaultPrompt("ergon")) == second
        changed = await ref.ask(UpdatePrompt(second.id, content="two, changed"))
        assert await ref.ask(GetDefaultPrompt("ergon")) == changed
        assert await ref.ask(DeletePrompt(second.id))
        assert await ref.ask(GetDefaultPrompt("ergon")) is None


async def test_the_cache_starts_afresh_past_its_bound(
    tmp_path: Path, store_calls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests naming ever new components cannot grow the cache: past its bound it is emptied."""
    monkeypatch.setattr(rhetor.storage._prompts, "_MAX_CACHED_DEFAULTS", 2)
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: library(tmp_path / "p.db"), name="prompts")
        for component in ("a", "b", "a", "b", "c", "a"):
            assert await ref.ask(GetDefaultPrompt(component)) is None
    # a and b read once; c finds the cache full and empties it; a is read again.
    assert store_calls == ["GetDefaultPrompt"] * 4


async def test_a_component_sqlite_cannot_store_is_refused_before_the_cache(
    tmp_path: Path, store_calls: list[str]
) -> None:
    """A default-prompt ask for a component that is not valid Unicode is a ValidationError naming it."""
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: library(tmp_path / "p.db"), name="prompts")
        with pytest.raises(ValidationError) as info:
            await ref.ask(GetDefaultPrompt("a\ud800b"))
    assert info.value.field == "component"
    assert store_calls == []


async def test_each_message_answers_its_reply_type(
    path: Callable[[], Library], store_calls: list[str]
) -> None:
    """Templates and prompts round-trip through their messages; drafting a prompt needs no store."""
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: library(path), name="prompts")
        made = await ref.ask(CreateTemplate("greet", "Hi {who}", required=("who",)))
        assert isinstance(made, Template) and made.version == 1
        updated = await ref.ask(UpdateTemplate("greet", "Hello {who}"))
        assert (updated.id, updated.version) == (made.id, 2)
        assert (await ref.ask(GetTemplate("greet", 1))).content == made.content
        assert await ref.ask(ListTemplates()) == [updated]
        assert [v.version for v in await ref.ask(GetTemplateVersions(made.id))] == [1, 2]
        assert await ref.ask(RenderTemplate("greet", {"who": "you"})) == "Hello you"
        assert await ref.ask(DeleteTemplate("greet"))
        with pytest.raises(NotFound):
            await ref.ask(GetTemplate("greet"))
        prompt = await ref.ask(CreatePrompt("p", "c", "You help.", tags=("x",)))
        assert isinstance(prompt, Prompt) and prompt.tags == ("x",)
        assert await ref.ask(GetPrompt(prompt.id)) == prompt
        assert await ref.ask(ListPrompts("c")) == [prompt]
        store_calls.clear()
        drafted = await ref.ask(GeneratePrompt("sort a list", {"language": "Python"}, "chat"))
        assert "sort a list" in drafted and "language: Python" in drafted
    assert store_calls == []


async def test_without_the_cache_a_default_set_by_another_process_is_seen_at_once(
    pg: Any, store_calls: list[str]
) -> None:
    """Over a shared store (cache_defaults=False) every default-prompt ask reads the database."""
    async with actors.open_system() as system:
        one = await system.spawn(lambda: library(lambda: PostgresLibrary(pg)), name="one")
        two = await system.spawn(
            lambda: library(lambda: PostgresLibrary(pg), cache_defaults=False), name="two"
        )
        assert await two.ask(GetDefaultPrompt("ergon")) is None
        made = await one.ask(CreatePrompt("base", "ergon", "You write code.", is_default=True))
        assert await two.ask(GetDefaultPrompt("ergon")) == made
        store_calls.clear()
        assert await two.ask(GetDefaultPrompt("ergon")) == made
    assert store_calls == ["GetDefaultPrompt"]
