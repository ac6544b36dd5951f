"""
Template text and prompt drafts (rhetor/storage/_rendering.py): variables, rendering, generate_prompt.
"""

from __future__ import annotations

import pytest

from rhetor._errors import ValidationError
from rhetor.storage._rendering import PROMPT_FORMATS, generate_prompt, parse_variables, render

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


def test_generate_prompt_refuses_a_number_too_large_to_print() -> None:
    """A context value past Python's digit limit is a ValidationError, not a ValueError."""
    with pytest.raises(ValidationError) as info:
        generate_prompt("a task", {"n": 10**5000})
    assert info.value.field == "context"
