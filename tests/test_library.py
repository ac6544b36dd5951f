"""
The library of system prompts, on SQLite and PostgreSQL: prompts, persistence, values a store cannot hold.
"""

from __future__ import annotations

import itertools
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from rhetor._errors import NotFound, StorageUnavailable, ValidationError
from rhetor.storage._library import SQLiteLibrary
from rhetor.storage._library_interfaces import Library
from rhetor.storage._pg import PgDatabase
from rhetor.storage._pg_library import PostgresLibrary
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


# -- system prompts --------------------------------------------------------------


def test_prompt_crud(store: Library) -> None:
    """Prompts are created, read, updated, listed by component, and deleted."""
    p = store.create_prompt("base", "ergon", "You write code.", tags=["code"])
    assert store.get_prompt(p.id) == p
    assert p.tags == ("code",)
    assert not p.is_default
    q = store.update_prompt(p.id, content="You write good code.", tags=["a", "b"])
    assert (q.content, q.tags, q.created) == ("You write good code.", ("a", "b"), p.created)
    assert q.updated > p.updated
    store.create_prompt("other", "hermes", "You route.")
    assert [x.name for x in store.list_prompts()] == ["base", "other"]
    assert [x.name for x in store.list_prompts("hermes")] == ["other"]
    assert store.delete_prompt(p.id)
    assert not store.delete_prompt(p.id)
    with pytest.raises(NotFound):
        store.get_prompt(p.id)
    with pytest.raises(NotFound):
        store.update_prompt(p.id, name="x")


def test_one_default_prompt_per_component(store: Library) -> None:
    """Making a prompt the default clears the component's previous default, only there."""
    a = store.create_prompt("a", "ergon", "A", is_default=True)
    other = store.create_prompt("o", "hermes", "O", is_default=True)
    b = store.create_prompt("b", "ergon", "B", is_default=True)
    assert store.default_prompt("ergon") == b
    assert not store.get_prompt(a.id).is_default
    assert store.default_prompt("hermes") == other
    store.update_prompt(a.id, is_default=True)
    assert store.default_prompt("ergon").id == a.id  # type: ignore[union-attr]
    assert [p.name for p in store.list_prompts("ergon") if p.is_default] == ["a"]
    store.update_prompt(a.id, is_default=False)
    assert store.default_prompt("ergon") is None
    assert store.default_prompt("nobody") is None


def test_moving_default_prompt_to_another_component(store: Library) -> None:
    """A default prompt moved to another component displaces that component's default."""
    store.create_prompt("h", "hermes", "H", is_default=True)
    e = store.create_prompt("e", "ergon", "E", is_default=True)
    store.update_prompt(e.id, component="hermes")
    assert store.default_prompt("hermes").id == e.id  # type: ignore[union-attr]
    assert store.default_prompt("ergon") is None


def test_database_enforces_one_default(tmp_path: Path) -> None:
    """Even a raw write cannot give a component two defaults (SQLite)."""
    with SQLiteLibrary(tmp_path / "library.db") as store:
        store.create_prompt("a", "ergon", "A", is_default=True)
        store.create_prompt("b", "ergon", "B")
    conn = sqlite3.connect(tmp_path / "library.db")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("UPDATE prompts SET is_default = 1 WHERE name = 'b'")
    conn.close()


def test_postgresql_enforces_one_default(pg: PgDatabase) -> None:
    """Even a raw write cannot give a component two defaults (PostgreSQL)."""
    store = PostgresLibrary(pg)
    store.create_prompt("a", "ergon", "A", is_default=True)
    store.create_prompt("b", "ergon", "B")
    with pytest.raises(StorageUnavailable) as info, pg.connection("written") as conn:
        conn.execute("UPDATE prompts SET is_default = TRUE WHERE name = 'b'")
    assert isinstance(info.value.__cause__, psycopg.errors.UniqueViolation)


def test_concurrent_writers_leave_one_default_and_unique_names(
    open_store: Callable[[], Library],
) -> None:
    """Eight writers at once (each its own connection) make defaults and templates: one default, consecutive versions."""
    stores = [open_store() for _ in range(8)]
    store = stores[0]
    store.create_template("shared", "v1 {x}")
    outcomes: list[str] = []

    def write(library: Library, n: int) -> None:
        for i in range(5):
            library.create_prompt(f"p{n}-{i}", "ergon", "E", is_default=True)
            library.update_template("shared", f"v {n}-{i} {{x}}")
            try:
                library.create_template("taken", "x")
                outcomes.append("created")
            except ValidationError as exc:
                outcomes.append(str(exc.field))

    threads = [threading.Thread(target=write, args=(s, n)) for n, s in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    defaults = [p for p in store.list_prompts("ergon") if p.is_default]
    versions = [v.version for v in store.versions("shared")]
    for s in stores:
        s.close()
    assert len(defaults) == 1
    assert versions == list(range(1, 42))
    assert sorted(outcomes) == ["created"] + ["name"] * 39


def test_create_prompt_validates(store: Library) -> None:
    """A prompt needs a name and component, and tags must be a list of strings."""
    with pytest.raises(ValidationError) as info:
        store.create_prompt("", "ergon", "x")
    assert info.value.field == "name"
    with pytest.raises(ValidationError) as info:
        store.create_prompt("n", "ergon", "x", tags="code")
    assert info.value.field == "tags"


def test_library_persists(open_store: Callable[[], Library]) -> None:
    """Templates, versions and prompts survive closing and reopening the store."""
    store = open_store()
    t = store.create_template("t", "one {x}")
    store.update_template("t", "two {x}")
    p = store.create_prompt("p", "ergon", "E", is_default=True, tags=["x"])
    store.close()
    store = open_store()
    assert store.get_template(t.id).content == "two {x}"
    assert len(store.versions("t")) == 2
    assert store.default_prompt("ergon") == p
    store.close()


# -- values SQLite cannot store are the caller's ValidationError ----------------------

HUGE = 10**24
LONE = "a\ud800b"


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda s: s.create_template(LONE, "Hi"), "name"),
        (lambda s: s.create_template("t", LONE), "content"),
        (lambda s: s.create_template("t", "Hi", description=LONE), "description"),
        (lambda s: s.create_template("t", "Hi", category=LONE), "category"),
        (lambda s: s.create_template("t", "Hi", category=["x"]), "category"),
        (lambda s: s.create_template("t", "Hi", metadata={"x": float("nan")}), "metadata"),
        (lambda s: s.create_template("t", "Hi", defaults=["a"]), "defaults"),
        (lambda s: s.create_template("t", "Hi", required=5), "required"),
        (lambda s: s.get_template(LONE), "template"),
        (lambda s: s.get_template("greet", version=HUGE), "version"),
        (lambda s: s.get_template("greet", version="1"), "version"),
        (lambda s: s.update_template("greet", name=LONE), "name"),
        (lambda s: s.update_template("greet", description=LONE), "description"),
        (lambda s: s.versions(LONE), "template"),
        (lambda s: s.delete_template(LONE), "template"),
        (lambda s: s.render_template(LONE, {}), "template"),
        (lambda s: s.render_template("greet", ["who"]), "parameters"),
        (lambda s: s.render_template("greet", {"who": 10**5000}), "parameters.who"),
        (lambda s: s.list_templates(LONE), "category"),
        (lambda s: s.create_prompt("p", LONE, "x"), "component"),
        (lambda s: s.create_prompt("p", "c", LONE), "content"),
        (lambda s: s.create_prompt("p", "c", "x", description=LONE), "description"),
        (lambda s: s.create_prompt("p", "c", "x", tags=5), "tags"),
        (lambda s: s.get_prompt(LONE), "prompt_id"),
        (lambda s: s.delete_prompt(LONE), "prompt_id"),
        (lambda s: s.list_prompts(LONE), "component"),
        (lambda s: s.default_prompt(LONE), "component"),
    ],
)
def test_values_sqlite_cannot_store_are_refused_naming_the_field(
    store: Library, call: Any, field: str
) -> None:
    """A lone surrogate, a 24-digit number or a value of the wrong shape is a ValidationError naming its field."""
    store.create_template("greet", "Hi {who}")
    with pytest.raises(ValidationError) as info:
        call(store)
    assert info.value.field == field
    assert [t.name for t in store.list_templates()] == ["greet"]
    assert store.broken() is None
