"""Reading untrusted JSON (rhetor/edge/_fields.py): whole bodies, then field by field."""

from __future__ import annotations

from typing import Any

import pytest

from rhetor._errors import InvalidJSON, RhetorError, ValidationError
from rhetor.edge._fields import (
    MAX_DEPTH,
    MAX_INT,
    check_json,
    load_json,
    parse_json,
    query_int,
    read_int,
    read_llm_request,
    read_number,
    read_routing,
    read_str,
    read_str_list,
)


def error_of(call: Any, *args: Any, **kwargs: Any) -> RhetorError:
    with pytest.raises(RhetorError) as caught:
        call(*args, **kwargs)
    return caught.value


@pytest.mark.parametrize(
    ("raw", "kind", "field"),
    [
        (b"\xff{}", InvalidJSON, None),
        (b'{"a": "\xed\xa0\x80"}', InvalidJSON, None),  # a surrogate encoded as UTF-8
        ('{"a": NaN}', InvalidJSON, None),
        ('{"a": -Infinity}', InvalidJSON, None),
        ("{nope", InvalidJSON, None),
        ("[" * 100_000 + "]" * 100_000, ValidationError, "body"),
        ('{"a": [1, {"b": 1e400}]}', ValidationError, "a[1].b"),
        ('{"n": %s}' % ("9" * 30), ValidationError, "n"),
        ('{"m": [{"content": "x\\ud800"}]}', ValidationError, "m[0].content"),
        ('{"k\\udc00": 1}', ValidationError, "body"),
        ('{"a": ' + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "}", ValidationError, "a"),
        ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), ValidationError, "body[0]"),
    ],
)
def test_parse_json_refuses_what_no_field_may_hold(
    raw: str | bytes, kind: type[RhetorError], field: str | None
) -> None:
    """Bad UTF-8, NaN, deep nesting, out-of-range numbers and lone surrogates name where they are."""
    error = error_of(parse_json, raw)
    assert type(error) is kind
    assert error.field == field


@pytest.mark.parametrize(
    "raw",
    [
        '{"emoji": "\\ud83d\\ude00"}',  # a surrogate pair is one valid character
        '{"escaped": "\\\\ud800"}',  # a backslash, then the letters ud800
        '{"big": 9223372036854775807, "small": -9223372036854775808, "f": 1e308}',
        "[" * MAX_DEPTH + "]" * MAX_DEPTH,
        '{"text": "caf\\u00e9 \u2603"}',
    ],
)
def test_parse_json_accepts_every_value_a_client_may_mean(raw: str) -> None:
    """Surrogate pairs, escaped backslashes, 64-bit numbers and nesting up to the limit pass."""
    assert parse_json(raw) == load_json(raw)


def test_check_json_skips_the_string_walk_only_when_told_there_is_no_escape() -> None:
    """``text=False`` (no surrogate escape in the source) skips the Unicode check, nothing else."""
    value = {"s": "\ud800", "n": float("inf")}
    assert error_of(check_json, {"s": "\ud800"}).field == "s"
    check_json({"s": "\ud800"}, text=False)
    assert error_of(check_json, value, text=False).field == "n"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (10**400, "must be a finite number"),
        (float("nan"), "must be a finite number"),
        (True, "must be a number, not a boolean"),
        ("1", "must be a number, not a string"),
        (-1, "must be at least 0"),
        (11, "must be at most 10"),
    ],
)
def test_read_number_wants_a_finite_number_in_range(value: Any, message: str) -> None:
    """A 400-digit integer is a validation error, not an OverflowError."""
    error = error_of(read_number, {"x": value}, "x", minimum=0, maximum=10)
    assert isinstance(error, ValidationError) and error.message == f"x: {message}"


def test_read_int_bounds_whole_numbers() -> None:
    """Whole numbers are at most MAX_INT (exact in a double); 2.0 counts as whole, 1.5 not."""
    assert read_int({"n": 2.0}, "n") == 2
    assert read_int({"n": MAX_INT}, "n") == MAX_INT
    assert error_of(read_int, {"n": MAX_INT + 1}, "n").field == "n"
    assert error_of(read_int, {"n": 1e300}, "n").field == "n"
    assert error_of(read_int, {"n": 1.5}, "n").field == "n"


def test_strings_must_be_valid_unicode() -> None:
    """A lone surrogate in a string field, or in a list of strings, names its place."""
    assert error_of(read_str, {"name": "a\ud800b"}, "name").field == "name"
    assert error_of(read_str_list, {"tags": ["ok", "\udfff"]}, "tags").field == "tags[1]"
    assert read_str({"name": "café"}, "name") == "café"


@pytest.mark.parametrize(
    ("routing", "field"),
    [
        (True, "routing_parameters"),
        ({"required_capabilities": True}, "routing_parameters.required_capabilities"),
        ({"required_capabilities": "vision"}, "routing_parameters.required_capabilities"),
        ({"required_capabilities": [1]}, "routing_parameters.required_capabilities[0]"),
        ({"complexity": ["low"]}, "routing_parameters.complexity"),
        ({"complexity": "extreme"}, "routing_parameters.complexity"),
        ({"max_cost": -0.5}, "routing_parameters.max_cost"),
        ({"max_cost": 10**400}, "routing_parameters.max_cost"),
    ],
)
def test_read_routing_checks_each_hint(routing: Any, field: str) -> None:
    """Each routing hint is checked and named in full."""
    assert error_of(read_routing, {"routing_parameters": routing}).field == field


def test_read_routing_keeps_only_the_known_hints() -> None:
    """Unknown keys (the seeds send task_type there) are dropped; empty lists too."""
    routing = {"task_type": "chat", "complexity": "low", "max_cost": 1, "required_capabilities": []}
    assert read_routing({"routing_parameters": routing}) == {"complexity": "low", "max_cost": 1.0}
    assert read_routing({}) is None


def test_read_llm_request_bounds_the_timeout() -> None:
    """A timeout is a finite number of seconds, at most a day."""
    assert read_llm_request({"message": "x", "timeout": 30}, chat=False).kwargs["timeout"] == 30
    error = error_of(read_llm_request, {"message": "x", "timeout": 1e9}, chat=False)
    assert error.field == "timeout"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, 7), ("", 7), ("12", 12), ("0", 0)],
)
def test_query_int_reads_a_whole_number(raw: str | None, expected: int) -> None:
    """An absent or empty parameter takes the default."""
    assert query_int(raw, "limit", 7) == expected


@pytest.mark.parametrize("raw", ["9" * 24, "-1", "ten", "1.5", "9" * 5000])
def test_query_int_refuses_what_storage_cannot_take(raw: str) -> None:
    """A 24-digit limit is a 422 naming it, before it could overflow SQLite."""
    assert error_of(query_int, raw, "limit", 7).field == "limit"
