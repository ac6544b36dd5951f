"""
Prompt templates, on SQLite and PostgreSQL: versions, names, validation.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rhetor._errors import NotFound, ValidationError
from rhetor.storage._library_interfaces import Library
from tests.stores import library_opener


@pytest.fixture
def open_store(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Callable[[], Library]:
    """Opens the library afresh on the backend's storage (SQLite or PostgreSQL), on one clock."""
    ticks = itertools.count(1000)
    return library_opener(backend, tmp_path, request, clock=lambda: float(next(ticks)))


@pytest.fixture
def store(open_store: Callable[[], Library]) -> Iterator[Library]:
    s = open_store()
    yield s
    s.close()


# -- templates -----------------------------------------------------------------


def test_create_and_get_template(store: Library) -> None:
    """A new template is version 1, found by id or by name, with its variables."""
    t = store.create_template(
        "greet",
        "Hello {name} from {place}",
        description="greeting",
        category="social",
        optional=["place"],
        defaults={"place": "Earth"},
        metadata={"author": "me"},
    )
    assert (t.version, t.current_version, t.variables) == (1, 1, ("name", "place"))
    assert len(t.id) == 32
    assert store.get_template(t.id) == t
    assert store.get_template("greet") == t
    assert t.metadata == {"author": "me"}
    assert store.render_template("greet", {"name": "Ann"}) == "Hello Ann from Earth"


def test_duplicate_template_name(store: Library) -> None:
    """A second template with a taken name is refused on the name field."""
    store.create_template("t", "x")
    with pytest.raises(ValidationError) as info:
        store.create_template("t", "y")
    assert (info.value.field, info.value.message) == ("name", "name: already exists")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "", "content": "x"}, "name"),
        ({"name": "t", "content": "{a.b}"}, "content"),
        ({"name": "t", "content": "{a}", "required": ["a"], "optional": ["a"]}, "optional"),
        ({"name": "t", "content": "{a}", "required": "a"}, "required"),
        ({"name": "t", "content": "{a}", "defaults": {"a": 1}}, "defaults.a"),
        ({"name": "t", "content": "x", "metadata": {"x": object()}}, "metadata"),
    ],
)
def test_create_template_validates(store: Library, kwargs: dict[str, object], field: str) -> None:
    """Bad template fields are refused with the field named."""
    with pytest.raises(ValidationError) as info:
        store.create_template(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_get_unknown_template(store: Library) -> None:
    """An unknown template or version raises NotFound."""
    with pytest.raises(NotFound):
        store.get_template("nope")
    store.create_template("t", "x")
    with pytest.raises(NotFound):
        store.get_template("t", version=2)
    with pytest.raises(NotFound):
        store.versions("nope")


def test_update_makes_versions(store: Library) -> None:
    """A content update adds a version, and old versions stay readable."""
    t = store.create_template("t", "v1 {a}", required=["a"])
    t2 = store.update_template("t", "v2 {a} {b}", optional=["b"])
    assert (t2.version, t2.current_version, t2.id) == (2, 2, t.id)
    assert t2.required == ("a",)  # carried over
    assert store.get_template("t", version=1).content == "v1 {a}"
    assert [v.version for v in store.versions(t.id)] == [1, 2]
    assert [v.content for v in store.versions("t")] == ["v1 {a}", "v2 {a} {b}"]
    assert store.render_template("t", {"a": 1}) == "v2 1 "


def test_update_metadata_only_keeps_version(store: Library) -> None:
    """Renaming or re-describing a template does not add a version."""
    store.create_template("t", "x")
    t = store.update_template("t", name="u", description="d", category="c")
    assert (t.name, t.description, t.category, t.version) == ("u", "d", "c", 1)
    with pytest.raises(NotFound):
        store.get_template("t")
    store.create_template("other", "y")
    with pytest.raises(ValidationError):
        store.update_template("u", name="other")


def test_list_and_delete_templates(store: Library) -> None:
    """Templates list by name, filter by category, and delete with their versions."""
    store.create_template("b", "x", category="code")
    store.create_template("a", "y")
    store.update_template("a", "y2")
    assert [t.name for t in store.list_templates()] == ["a", "b"]
    assert [t.content for t in store.list_templates()] == ["y2", "x"]
    assert [t.name for t in store.list_templates("code")] == ["b"]
    assert store.delete_template("a")
    assert not store.delete_template("a")
    assert [t.name for t in store.list_templates()] == ["b"]
