"""Reading untrusted JSON as a whole (rhetor/edge/_fields.py); field by field is tests/test_schema.py."""

from __future__ import annotations

from typing import Any

import pytest

from rhetor._errors import InvalidJSON, RhetorError, ValidationError
from rhetor.edge._fields import MAX_DEPTH, check_json, load_json, parse_json


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
