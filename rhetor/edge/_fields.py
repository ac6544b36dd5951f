"""
Reading untrusted JSON: bodies and frames as a whole, then field by field.

Both edges (HTTP in the blueprints ``_app`` mounts, WebSocket in
``_session.py``) receive untyped JSON. :func:`load_json` turns the raw bytes
into JSON values and :func:`check_json` holds the rules every value must keep,
whatever field it sits in: strings are valid Unicode (no lone surrogates,
which the ``\\ud800`` escape can smuggle in and SQLite cannot store), numbers
are finite and whole numbers fit in 64 bits, and nesting is at most
:data:`MAX_DEPTH` deep. The ``read_*`` functions then check each field's type
and range. All raise :class:`ValidationError` naming the field (or
:class:`InvalidJSON`), so a bad body is a 4xx (or an ``ERROR`` frame) that
says what to fix, and nothing malformed ever reaches an actor. They do no I/O.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

import attrs

from rhetor._errors import InvalidJSON, ValidationError

__all__ = [
    "MAX_DEPTH",
    "MAX_INT",
    "MAX_TIMEOUT",
    "LLMOptions",
    "check_json",
    "check_text",
    "load_json",
    "may_hold_surrogates",
    "parse_json",
    "query_int",
    "read_bool",
    "read_int",
    "read_list",
    "read_llm_request",
    "read_number",
    "read_object",
    "read_routing",
    "read_str",
    "read_str_list",
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
_COMPLEXITIES = ("low", "medium", "high")


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


def query_int(
    raw: str | None,
    field: str,
    default: int | None,
    *,
    minimum: int = 0,
    maximum: int = MAX_INT,
) -> int | None:
    """A whole number from a query parameter, from ``minimum`` to ``maximum``; absent: ``default``."""
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError(field, "must be a whole number") from None
    if value < minimum:
        raise ValidationError(field, f"must be at least {minimum}")
    if value > maximum:
        raise ValidationError(field, f"must be at most {maximum}")
    return value


# -- fields ----------------------------------------------------------------------------


_MISSING: Any = object()


def read_str(
    body: Mapping[str, Any], field: str, *, required: bool = False, default: Any = None
) -> Any:
    """The string at ``field``; None (or ``default``) when absent or null unless required."""
    value = body.get(field, _MISSING)
    if value is _MISSING or value is None:
        if required:
            raise ValidationError(field, "is required")
        return default
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a string, not {_kind(value)}")
    if required and not value:
        raise ValidationError(field, "must not be empty")
    return check_text(value, field)


def read_bool(body: Mapping[str, Any], field: str, default: bool) -> bool:
    """The boolean at ``field``, or ``default`` when absent or null."""
    value = body.get(field)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ValidationError(field, f"must be true or false, not {_kind(value)}")
    return value


def read_number(
    body: Mapping[str, Any],
    field: str,
    *,
    required: bool = False,
    minimum: float | None = None,
    maximum: float | None = None,
) -> float | None:
    """The finite number at ``field`` (booleans are not numbers), or None when absent."""
    value = body.get(field)
    if value is None:
        if required:
            raise ValidationError(field, "is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(field, f"must be a number, not {_kind(value)}")
    try:
        number = float(value)  # a whole number too large for a float overflows here
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ValidationError(field, "must be a finite number")
    if minimum is not None and number < minimum:
        raise ValidationError(field, f"must be at least {minimum:g}")
    if maximum is not None and number > maximum:
        raise ValidationError(field, f"must be at most {maximum:g}")
    return number


def read_int(
    body: Mapping[str, Any],
    field: str,
    *,
    minimum: int | None = None,
    maximum: int = MAX_INT,
) -> int | None:
    """The whole number at ``field`` (not a bool, not 1.5), or None when absent."""
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(field, f"must be a whole number, not {_kind(value)}")
    if minimum is not None and value < minimum:
        raise ValidationError(field, f"must be at least {minimum}")
    if value > maximum:
        raise ValidationError(field, f"must be at most {maximum}")
    return value


def read_object(body: Mapping[str, Any], field: str, *, required: bool = False) -> Any:
    """The JSON object at ``field``, or None when absent."""
    value = body.get(field)
    if value is None:
        if required:
            raise ValidationError(field, "is required")
        return None
    if not isinstance(value, dict):
        raise ValidationError(field, f"must be an object, not {_kind(value)}")
    return value


def read_list(body: Mapping[str, Any], field: str, *, required: bool = False) -> Any:
    """The JSON array at ``field``, or None when absent."""
    value = body.get(field)
    if value is None:
        if required:
            raise ValidationError(field, "is required")
        return None
    if not isinstance(value, list):
        raise ValidationError(field, f"must be an array, not {_kind(value)}")
    return value


def read_str_list(body: Mapping[str, Any], field: str) -> list[str] | None:
    """A JSON array of strings at ``field``, or None when absent."""
    items = read_list(body, field)
    if items is None:
        return None
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise ValidationError(f"{field}[{i}]", f"must be a string, not {_kind(item)}")
        check_text(item, f"{field}[{i}]")
    return list(items)


def read_routing(body: Mapping[str, Any], field: str = "routing_parameters") -> Any:
    """
    The routing hints at ``field``, checked: ``{complexity, required_capabilities, max_cost}``.

    Unknown keys are dropped (the seeds send ``task_type`` there too); None when absent.
    """
    raw = read_object(body, field)
    if raw is None:
        return None
    # Each hint is read under its full name, so errors say routing_parameters.max_cost.
    names = {key: f"{field}.{key}" for key in ("complexity", "required_capabilities", "max_cost")}
    nested = {names[key]: raw.get(key) for key in names}
    routing: dict[str, Any] = {}
    complexity = read_str(nested, names["complexity"])
    if complexity is not None:
        if complexity not in _COMPLEXITIES:
            raise ValidationError(names["complexity"], "must be low, medium or high")
        routing["complexity"] = complexity
    capabilities = read_str_list(nested, names["required_capabilities"])
    if capabilities:
        routing["required_capabilities"] = capabilities
    max_cost = read_number(nested, names["max_cost"], minimum=0)
    if max_cost is not None:
        routing["max_cost"] = max_cost
    return routing


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


@attrs.frozen
class LLMOptions:
    """
    The checked keyword arguments of ``Runtime.request`` and whether to stream.
    """

    kwargs: dict[str, Any]
    streaming: bool


def read_llm_request(
    body: Mapping[str, Any],
    *,
    chat: bool,
    context_field: str = "context_id",
    streaming_default: bool = False,
) -> LLMOptions:
    """
    Read an LLM request from a JSON body, checking every field's type.

    ``chat`` selects ``messages: [{role, content}]`` over ``message``. The
    context id is read from ``context_field`` (``context_id`` over HTTP,
    ``context`` over WebSocket); the other spelling is accepted too. Unknown
    fields are ignored, as the seeds' clients send extras such as ``source``.
    Types, Unicode, finiteness, the routing hints and the sizes are checked
    here; ``Runtime.request`` then checks what depends on configuration
    (temperature's range, roles, known providers).

    Error handling: raises :class:`ValidationError` naming the first bad field.
    """
    other = "context" if context_field == "context_id" else "context_id"
    context_id = read_str(body, context_field)
    if context_id is None:
        context_id = read_str(body, other)
    kwargs: dict[str, Any] = {
        "context_id": context_id,
        "task_type": read_str(body, "task_type", default="default") or "default",
        "component": read_str(body, "component"),
        "provider": read_str(body, "provider"),
        "model": read_str(body, "model"),
        "temperature": read_number(body, "temperature"),
        "max_tokens": read_int(body, "max_tokens", minimum=1),
        "system_prompt": read_str(body, "system_prompt"),
        "routing_parameters": read_routing(body),
        "timeout": read_number(body, "timeout", maximum=MAX_TIMEOUT),
    }
    if chat:
        kwargs["messages"] = read_list(body, "messages", required=True)
    else:
        kwargs["message"] = read_str(body, "message", required=True)
    return LLMOptions(kwargs, read_bool(body, "streaming", streaming_default))
