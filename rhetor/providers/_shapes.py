"""
What the API families' shape modules share: reading a JSON value field by field, and the
one signal for content a family cannot carry.

The shape modules (:mod:`rhetor.providers._openai_shapes`,
:mod:`rhetor.providers._anthropic_shapes`) translate between a family's JSON and the
internal model (:mod:`rhetor._content`), both ways, with no I/O. Reading a client's JSON,
a bad value is a :class:`rhetor.ValidationError` naming its field, path and all
(``messages[2].content[0].image_url.url``); the wire modules read upstream replies with
the same functions and turn that error into a malformed reply. Writing, content the
family cannot carry raises :class:`Untranslatable`, which the wire modules turn into the
provider's ``BadRequest`` and the edge into a ``ValidationError``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from rhetor._errors import ValidationError

__all__ = [
    "Untranslatable",
    "as_list",
    "as_object",
    "compact_json",
    "optional_bool",
    "optional_str",
    "required_str",
    "sampling_fields",
    "string_map",
]


class Untranslatable(ValueError):
    """
    Content a family's wire format cannot carry (an image in an OpenAI tool result, an image URL for Ollama).

    ``field`` names the request field that holds it.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def as_object(value: object, field: str) -> Mapping[str, Any]:
    """``value`` when it is a JSON object; else a :class:`ValidationError` on ``field``."""
    if not isinstance(value, Mapping):
        raise ValidationError(field, "must be an object")
    return value


def as_list(value: object, field: str) -> Sequence[Any]:
    """``value`` when it is a JSON array; else a :class:`ValidationError` on ``field``."""
    if not isinstance(value, list | tuple):
        raise ValidationError(field, "must be an array")
    return value


def required_str(body: Mapping[str, Any], key: str, field: str) -> str:
    """``body[key]`` when it is a string; else a :class:`ValidationError` on ``field.key``."""
    value = body.get(key)
    if not isinstance(value, str):
        raise ValidationError(f"{field}.{key}", f"is {_kind(value)}, not a string")
    return value


def optional_str(body: Mapping[str, Any], key: str, field: str) -> str | None:
    """``body[key]`` when it is a string, None when absent or null; else a :class:`ValidationError`."""
    value = body.get(key)
    if value is None or isinstance(value, str):
        return value
    raise ValidationError(f"{field}.{key}", f"is {_kind(value)}, not a string")


def optional_bool(body: Mapping[str, Any], key: str, field: str) -> bool | None:
    """``body[key]`` when it is a boolean, None when absent or null; else a :class:`ValidationError`."""
    value = body.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise ValidationError(f"{field}.{key}", "must be true or false")


def _kind(value: object) -> str:
    """What a JSON value is, in words (for a message saying what it should have been)."""
    if value is None:
        return "missing"
    return {bool: "a boolean", int: "a number", float: "a number", list: "an array"}.get(
        type(value), "an object" if isinstance(value, Mapping) else type(value).__name__
    )


def compact_json(value: object) -> str:
    """``value`` as compact JSON text, keys in their order (a tool call's arguments)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def sampling_fields(body: Mapping[str, Any], *, top_p_max: float = 1.0) -> dict[str, Any]:
    """
    ``top_p`` (a number from 0 to ``top_p_max``) and ``seed`` (a whole number) from a
    body, as the request's keyword arguments; absent ones are left out.
    """
    fields: dict[str, Any] = {}
    top_p = body.get("top_p")
    if top_p is not None:
        if (
            isinstance(top_p, bool)
            or not isinstance(top_p, int | float)
            or not 0 <= top_p <= top_p_max
        ):
            raise ValidationError("top_p", f"must be a number from 0 to {top_p_max:g}")
        fields["top_p"] = float(top_p)
    seed = body.get("seed")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValidationError("seed", "must be a whole number")
        fields["seed"] = seed
    return fields


def string_map(value: object, field: str) -> dict[str, str] | None:
    """An object of strings (``metadata``); None when absent."""
    if value is None:
        return None
    body = as_object(value, field)
    if not all(isinstance(v, str) for v in body.values()):
        raise ValidationError(field, "must be an object of strings")
    return dict(body)
