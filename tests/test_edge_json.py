"""Tests for the edge's JSON writer (rhetor/edge/_json.py): msgspec, meaning what the standard library meant."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rhetor.edge._json import dumps, encode

STDLIB = json.JSONEncoder(allow_nan=False)


def meaning(text: str | bytes) -> Any:
    """What a JSON reader takes from ``text``: keys in order, and each float to the bit."""

    def pairs(items: list[tuple[str, Any]]) -> Any:
        return ("object", items)

    def exact(value: str) -> Any:
        return ("float", float(value).hex())

    return json.loads(text, object_pairs_hook=pairs, parse_float=exact)


texts = st.text(st.characters(exclude_categories=("Cs",)))
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(texts, inner, max_size=4)
        | st.tuples(inner, inner)
    ),
    max_leaves=20,
)


@given(values)
def test_any_json_value_means_what_the_standard_library_wrote(value: Any) -> None:
    """Keys and their order, strings, integers and every float's exact value are the standard library's."""
    assert meaning(encode(value)) == meaning(STDLIB.encode(value))
    assert dumps(value) == encode(value).decode()


def test_a_reply_is_written_compact_in_utf_8_with_shortest_floats() -> None:
    """Non-ASCII text goes as UTF-8 rather than escapes, and 1e-06 as 1e-6: the same to a reader."""
    reply = {"message": "Grüße 👋 null", "cost": 1e-06, "context": None, "usage": {"total": 7}}
    assert encode(reply) == (
        '{"message":"Grüße 👋 null","cost":1e-6,"context":null,"usage":{"total":7}}'.encode()
    )


@pytest.mark.parametrize(
    "body",
    [
        {"cost": math.nan},
        {"usage": {"input_tokens": 3, "cost": -math.inf}},
        [1, [2, (math.inf,)]],
        {math.nan: "a key"},
        {"scores": {math.inf: 1}, "note": None},
    ],
)
def test_nan_or_infinity_anywhere_is_a_value_error_as_before(body: Any) -> None:
    """NaN and Infinity are not JSON: as a value or a key, at any depth, they raise ValueError."""
    with pytest.raises(ValueError, match="not JSON compliant"):
        STDLIB.encode(body)
    with pytest.raises(ValueError, match="not JSON compliant"):
        encode(body)


@pytest.mark.parametrize(
    "body",
    [
        {"text": "half a pair: \ud800"},
        {True: 1, None: 2, 3: "three"},
        {"banana": "nan", "inf": "-inf", "what": "null"},
        {"big": 2**70, "keyed": {2.5: "x"}},
    ],
)
def test_what_msgspec_would_write_otherwise_is_written_as_the_standard_library_wrote(
    body: Any,
) -> None:
    """Lone surrogates, non-string keys and look-alike strings come out meaning the same as before."""
    assert meaning(encode(body)) == meaning(STDLIB.encode(body))


def test_a_value_json_cannot_hold_is_a_type_error() -> None:
    """An object neither encoder can write raises TypeError, a bug for the caller to answer."""
    with pytest.raises(TypeError):
        encode({"reply": object()})
