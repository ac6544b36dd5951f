"""
Reading untrusted JSON as a whole: what no field of any body or frame may hold.

Both edges (HTTP in the blueprints ``_app`` mounts, WebSocket in
``_session.py``) receive untyped JSON. :func:`load_json` turns the raw bytes
into JSON values and :func:`check_json` holds the rules every value must keep,
whatever field it sits in: strings are valid Unicode (no lone surrogates,
which the ``\\ud800`` escape can smuggle in and SQLite cannot store), numbers
are finite and whole numbers fit in 64 bits, and nesting is at most
:data:`MAX_DEPTH` deep. Each body is then checked field by field against its
typed schema (``rhetor.edge._schema``). Both raise :class:`ValidationError`
naming the field (or :class:`InvalidJSON`), so a bad body is a 4xx (or an
``ERROR`` frame) that says what to fix, and nothing malformed ever reaches an
actor. They do no I/O.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from rhetor._errors import InvalidJSON, ValidationError

__all__ = [
    "MAX_DEPTH",
    "MAX_INT",
    "MAX_TIMEOUT",
    "check_json",
    "check_text",
    "load_json",
    "may_hold_surrogates",
    "parse_json",
]

# Deepest nesting of arrays and objects a body or frame may have. Real bodies
# (an OpenAI request with content parts and a tool schema) stay far below it;
# every later walk over the value (storage, replies) is then shallow.
MAX_DEPTH = 64
# Largest whole number a field takes: exact in a double, so every JSON client
# (JavaScript included) reads it back unchanged, and well inside SQLite's range.
MAX_INT = 2**53 - 1
# Whole numbers anywhere in a body must fit SQLite's (and most APIs') 64 bits.
_INT64 = 2**63
# Timeouts are seconds; a day is already far past any request's use.
MAX_TIMEOUT = 86400.0
# A lone surrogate can only come from a \uD800-\uDFFF escape: without one in
# the text, no string in it needs checking.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


# -- whole bodies ------------------------------------------------------------------


def _no_constant(name: str) -> Any:
    # json.loads accepts NaN, Infinity and -Infinity, which are not JSON.
    raise ValueError(f"{name} is not a JSON value")


# One decoder for every body: json.loads with a hook would build a new one each call.
_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def _decode(raw: bytes | str, what: str) -> str:
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidJSON(f"{what} is not UTF-8 text: {exc.reason}") from None


def load_json(raw: bytes | str, *, what: str = "body") -> Any:
    """
    Parse ``raw`` (UTF-8 bytes or text) as strict JSON, without checking its values.

    Error handling: :class:`InvalidJSON` when it is not UTF-8 or not JSON
    (``NaN`` and ``Infinity`` included), :class:`ValidationError` on ``what``
    when it nests too deeply for the parser.
    """
    try:
        return _DECODER.decode(_decode(raw, what))
    except RecursionError:
        # The C parser recurses once per level; far below that, check_json
        # refuses anything deeper than MAX_DEPTH with the same message.
        raise ValidationError(what, f"must not nest deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # JSONDecodeError, and _no_constant
        raise InvalidJSON(f"{what} is not valid JSON: {exc}") from None


def check_json(value: Any, *, what: str = "body", text: bool = True) -> None:
    """
    Check the rules every JSON value from a client must keep, wherever it sits.

    Strings (and keys) are valid Unicode, floats are finite, whole numbers fit
    in 64 bits, and arrays and objects nest at most :data:`MAX_DEPTH` deep.
    ``text=False`` skips the string check when the source text had no
    surrogate escape. The walk is iterative, so depth cannot exhaust the stack.

    Error handling: :class:`ValidationError` naming the first bad field
    (``messages[0].content``), or ``what`` for the value as a whole.
    """
    # Each entry: (value, depth, parent entry, key) -- the path is built only on error.
    stack: list[tuple[Any, int, Any, str | int | None]] = [(value, 0, None, None)]
    while stack:
        entry = stack.pop()
        item, depth = entry[0], entry[1]
        kind = type(item)
        if kind is str:
            if text and not item.isascii() and not _valid_text(item):
                raise ValidationError(_path(entry, what), "must be valid Unicode text")
        elif kind is dict:
            if depth >= MAX_DEPTH:
                raise _too_deep(entry, what)
            for key, child in item.items():
                if text and not key.isascii() and not _valid_text(key):
                    raise ValidationError(_path(entry, what), "has a key that is not Unicode")
                stack.append((child, depth + 1, entry, key))
        elif kind is list:
            if depth >= MAX_DEPTH:
                raise _too_deep(entry, what)
            stack.extend((child, depth + 1, entry, i) for i, child in enumerate(item))
        elif kind is float:
            if not math.isfinite(item):
                raise ValidationError(_path(entry, what), "must be a finite number")
        elif kind is int and not -_INT64 <= item < _INT64:
            raise ValidationError(_path(entry, what), "must be a number that fits in 64 bits")


def parse_json(raw: bytes | str, *, what: str = "body") -> Any:
    """
    :func:`load_json` then :func:`check_json`: a client's JSON, safe to hand on.
    """
    text = _decode(raw, what)
    value = load_json(text, what=what)
    check_json(value, what=what, text=may_hold_surrogates(text))
    return value


def may_hold_surrogates(text: str) -> bool:
    """Whether JSON ``text`` has a surrogate escape, the only way a lone surrogate gets in."""
    return "\\u" in text and _SURROGATE_ESCAPE.search(text) is not None


def _path(entry: tuple[Any, int, Any, str | int | None], what: str) -> str:
    keys: list[str | int] = []
    while entry[2] is not None:
        keys.append(entry[3])  # type: ignore[arg-type]  # only the root has no key
        entry = entry[2]
    path = ""
    for key in reversed(keys):
        if isinstance(key, int):
            path = f"{path or what}[{key}]"
        elif path:
            path = f"{path}.{key}"
        else:
            path = key
    return path or what


def _too_deep(entry: tuple[Any, int, Any, str | int | None], what: str) -> ValidationError:
    # The full path would repeat MAX_DEPTH keys: name the field the nesting starts in.
    while entry[2] is not None and entry[2][2] is not None:
        entry = entry[2]
    return ValidationError(_path(entry, what), f"must not nest deeper than {MAX_DEPTH} levels")


def _valid_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_text(value: str, field: str) -> str:
    """``value`` if it is valid Unicode (no lone surrogates); else a ValidationError on ``field``."""
    if not value.isascii() and not _valid_text(value):
        raise ValidationError(field, "must be valid Unicode text")
    return value
