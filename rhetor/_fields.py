"""
Field-by-field reading of request bodies and WebSocket payloads.

Both edges (HTTP in ``_edge.py``, WebSocket in ``_session.py``) receive
untyped JSON. These pure functions check each field's type and raise
:class:`ValidationError` naming the field, so a wrong body is a 422 (or an
``ERROR`` frame) that says exactly what to fix. They do no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs

from rhetor._errors import ValidationError

__all__ = [
    "LLMOptions",
    "read_bool",
    "read_int",
    "read_list",
    "read_llm_request",
    "read_number",
    "read_object",
    "read_str",
    "read_str_list",
]

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
    return value


def read_bool(body: Mapping[str, Any], field: str, default: bool) -> bool:
    """The boolean at ``field``, or ``default`` when absent or null."""
    value = body.get(field)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ValidationError(field, f"must be true or false, not {_kind(value)}")
    return value


def read_number(body: Mapping[str, Any], field: str, *, required: bool = False) -> float | None:
    """The finite number at ``field`` (booleans are not numbers), or None when absent."""
    value = body.get(field)
    if value is None:
        if required:
            raise ValidationError(field, "is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValidationError(field, f"must be a number, not {_kind(value)}")
    return float(value)


def read_int(body: Mapping[str, Any], field: str, *, minimum: int | None = None) -> int | None:
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
    return list(items)


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
    ``Runtime.request`` then checks the values (ranges, roles, routing).

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
        "routing_parameters": read_object(body, "routing_parameters"),
        "timeout": read_number(body, "timeout"),
    }
    if chat:
        kwargs["messages"] = read_list(body, "messages", required=True)
    else:
        kwargs["message"] = read_str(body, "message", required=True)
    return LLMOptions(kwargs, read_bool(body, "streaming", streaming_default))
