from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rhetor._errors import NotFound, ValidationError
from rhetor.storage._library import (
    PROMPT_FORMATS,
    LibraryStore,
    generate_prompt,
    parse_variables,
    render,
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LibraryStore]:
    ticks = itertools.count(1000)
    with LibraryStore(tmp_path / "library.db", clock=lambda: float(next(ticks))) as s:
        yield s


# -- parse_variables and render ------------------------------------------------


def test_parse_variables_in_order_once() -> None:
    """Variables come out in order of first use, each once; doubled braces are literal."""
    content = "Hi {name}, {{not_a_var}} your {item} for {name}"
    assert parse_variables(content) == ["name", "item"]
    assert parse_variables("no variables {{}}") == []


@pytest.mark.parametrize(
    "content",
    ["{a.b}", "{a[0]}", "{}", "{0}", "{a:>10}", "{a!r}", "{a", "a}", "{a:{b}}", "{__class__.x}"],
)
def test_parse_variables_rejects_non_names(content: str) -> None:
    """Attribute/index access, positions, specs, conversions and bad braces are refused."""
    with pytest.raises(ValidationError) as info:
        parse_variables(content)
    assert info.value.field == "content"


def test_render_fills_variables() -> None:
    """Variables are filled with their values; numbers and bools become text."""
    out = render("{who} has {n} items ({ok}) {{x}}", {"who": "Ann", "n": 3, "ok": True})
    assert out == "Ann has 3 items (True) {x}"


def test_render_missing_required() -> None:
    """A missing required parameter names itself in the error field."""
    with pytest.raises(ValidationError) as info:
        render("{a} {b}", {"a": "x"}, required=["a", "b"])
    assert info.value.field == "parameters.b"
    assert info.value.message == "parameters.b: missing required parameter"


def test_render_everything_required_by_default() -> None:
    """With no required list, every variable is required unless listed optional."""
    with pytest.raises(ValidationError) as info:
        render("{a} {b}", {"b": "y"})
    assert info.value.field == "parameters.a"
    assert render("{a}-{b}", {"a": "x"}, optional=["b"]) == "x-"


def test_render_optional_defaults() -> None:
    """A missing optional parameter takes its default, or the empty string."""
    out = render(
        "{a}|{b}|{c}", {"a": "x"}, required=["a"], optional=["b", "c"], defaults={"b": "B"}
    )
    assert out == "x|B|"


@pytest.mark.parametrize(("value", "type_name"), [(None, "NoneType"), ([1], "list"), ({}, "dict")])
def test_render_rejects_wrong_type(value: object, type_name: str) -> None:
    """A parameter that is not a string or number is refused, naming its type."""
    with pytest.raises(ValidationError) as info:
        render("{a}", {"a": value})
    assert info.value.field == "parameters.a"
    assert info.value.message == f"parameters.a: must be a string or number, got {type_name}"


def test_render_ignores_extra_parameters() -> None:
    """Parameters the template does not use are ignored, whatever their type."""
    assert render("{a}", {"a": 1.5, "extra": object()}) == "1.5"


# -- templates -----------------------------------------------------------------


def test_create_and_get_template(store: LibraryStore) -> None:
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


def test_duplicate_template_name(store: LibraryStore) -> None:
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
def test_create_template_validates(
    store: LibraryStore, kwargs: dict[str, object], field: str
) -> None:
    """Bad template fields are refused with the field named."""
    with pytest.raises(ValidationError) as info:
        store.create_template(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_get_unknown_template(store: LibraryStore) -> None:
    """An unknown template or version raises NotFound."""
    with pytest.raises(NotFound):
        store.get_template("nope")
    store.create_template("t", "x")
    with pytest.raises(NotFound):
        store.get_template("t", version=2)
    with pytest.raises(NotFound):
        store.versions("nope")


def test_update_makes_versions(store: LibraryStore) -> None:
    """A content update adds a version, and old versions stay readable."""
    t = store.create_template("t", "v1 {a}", required=["a"])
    t2 = store.update_template("t", "v2 {a} {b}", optional=["b"])
    assert (t2.version, t2.current_version, t2.id) == (2, 2, t.id)
    assert t2.required == ("a",)  # carried over
    assert store.get_template("t", version=1).content == "v1 {a}"
    assert [v.version for v in store.versions(t.id)] == [1, 2]
    assert [v.content for v in store.versions("t")] == ["v1 {a}", "v2 {a} {b}"]
    assert store.render_template("t", {"a": 1}) == "v2 1 "


def test_update_metadata_only_keeps_version(store: LibraryStore) -> None:
    """Renaming or re-describing a template does not add a version."""
    store.create_template("t", "x")
    t = store.update_template("t", name="u", description="d", category="c")
    assert (t.name, t.description, t.category, t.version) == ("u", "d", "c", 1)
    with pytest.raises(NotFound):
        store.get_template("t")
    store.create_template("other", "y")
    with pytest.raises(ValidationError):
        store.update_template("u", name="other")


def test_list_and_delete_templates(store: LibraryStore) -> None:
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


# -- system prompts --------------------------------------------------------------


def test_prompt_crud(store: LibraryStore) -> None:
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


def test_one_default_prompt_per_component(store: LibraryStore) -> None:
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


def test_moving_default_prompt_to_another_component(store: LibraryStore) -> None:
    """A default prompt moved to another component displaces that component's default."""
    store.create_prompt("h", "hermes", "H", is_default=True)
    e = store.create_prompt("e", "ergon", "E", is_default=True)
    store.update_prompt(e.id, component="hermes")
    assert store.default_prompt("hermes").id == e.id  # type: ignore[union-attr]
    assert store.default_prompt("ergon") is None


def test_database_enforces_one_default(store: LibraryStore, tmp_path: Path) -> None:
    """Even a raw write cannot give a component two defaults."""
    store.create_prompt("a", "ergon", "A", is_default=True)
    store.create_prompt("b", "ergon", "B")
    conn = sqlite3.connect(tmp_path / "library.db")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("UPDATE prompts SET is_default = 1 WHERE name = 'b'")
    conn.close()


def test_create_prompt_validates(store: LibraryStore) -> None:
    """A prompt needs a name and component, and tags must be a list of strings."""
    with pytest.raises(ValidationError) as info:
        store.create_prompt("", "ergon", "x")
    assert info.value.field == "name"
    with pytest.raises(ValidationError) as info:
        store.create_prompt("n", "ergon", "x", tags="code")
    assert info.value.field == "tags"


def test_library_persists(tmp_path: Path) -> None:
    """Templates, versions and prompts survive closing and reopening the store."""
    with LibraryStore(tmp_path / "lib.db") as store:
        t = store.create_template("t", "one {x}")
        store.update_template("t", "two {x}")
        p = store.create_prompt("p", "ergon", "E", is_default=True, tags=["x"])
    with LibraryStore(tmp_path / "lib.db") as store:
        assert store.get_template(t.id).content == "two {x}"
        assert len(store.versions("t")) == 2
        assert store.default_prompt("ergon") == p


# -- generate_prompt ---------------------------------------------------------------


@pytest.mark.parametrize("fmt", PROMPT_FORMATS)
def test_generate_prompt_formats(fmt: str) -> None:
    """Every format includes the task and lists the context items as bullets."""
    out = generate_prompt("Summarise the report", {"audience": "executives", "length": 3}, fmt)
    assert "Summarise the report" in out
    assert "- audience: executives" in out
    assert "- length: 3" in out


@pytest.mark.parametrize(
    ("fmt", "marker"),
    [
        ("instruction", "## Instructions"),
        ("chat", "conversation"),
        ("few_shot", "## Examples"),
        ("chain_of_thought", "step by step"),
        ("structured", "## Output format"),
    ],
)
def test_generate_prompt_formats_differ(fmt: str, marker: str) -> None:
    """Each format has its own shape."""
    assert marker in generate_prompt("Do it", None, fmt)


def test_generate_prompt_string_context() -> None:
    """A string context becomes one bullet per non-empty line; no context, no bullets."""
    out = generate_prompt("t", "first fact\n\n  second fact ", "instruction")
    assert "- first fact\n- second fact" in out
    assert "## Context" not in generate_prompt("t", None, "instruction")


def test_generate_prompt_rejects_bad_input() -> None:
    """An unknown format or an empty task is a ValidationError naming the field."""
    with pytest.raises(ValidationError) as info:
        generate_prompt("t", None, "haiku")
    assert info.value.field == "format"
    with pytest.raises(ValidationError) as info:
        generate_prompt("  ", None, "chat")
    assert info.value.field == "task"


def test_unknown_fields_rejected(store: LibraryStore) -> None:
    """An unknown keyword to a create or update is a ValidationError naming it."""
    t = store.create_template("t", "x")
    p = store.create_prompt("p", "c", "x")
    calls = [
        lambda: store.create_template("u", "x", colour="red"),
        lambda: store.update_template(t.id, colour="red"),
        lambda: store.create_prompt("q", "c", "x", colour="red"),
        lambda: store.update_prompt(p.id, colour="red"),
    ]
    for call in calls:
        with pytest.raises(ValidationError) as info:
            call()
        assert info.value.field == "colour"
    assert [x.name for x in store.list_templates()] == ["t"]


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
    store: LibraryStore, call: Any, field: str
) -> None:
    """A lone surrogate, a 24-digit number or a value of the wrong shape is a ValidationError naming its field."""
    store.create_template("greet", "Hi {who}")
    with pytest.raises(ValidationError) as info:
        call(store)
    assert info.value.field == field
    assert [t.name for t in store.list_templates()] == ["greet"]
    assert store.broken() is None


def test_generate_prompt_refuses_a_number_too_large_to_print() -> None:
    """A context value past Python's digit limit is a ValidationError, not a ValueError."""
    with pytest.raises(ValidationError) as info:
        generate_prompt("a task", {"n": 10**5000})
    assert info.value.field == "context"
