"""
Rhetor's replies as JSON: every HTTP body, SSE event and WebSocket frame the edge writes.

msgspec writes them, several times faster than the standard library, and
what it writes means the same to any JSON reader: the same keys in the same
order, the same strings (non-ASCII written as UTF-8 rather than ``\\u``
escapes), the same numbers (each float written with its shortest exact form,
``1e-6`` for ``1e-06``). Where msgspec would differ, the standard library
writes the reply as it always did:

- NaN and Infinity are not JSON. msgspec writes them as ``null``, so a reply
  whose encoding holds a ``null`` is checked for them, and one holding either
  raises ``ValueError`` (a bug, answered as such). As mapping keys msgspec
  writes them as ``"nan"`` or ``"inf"``: output holding ``nan"`` or ``inf"``
  is written by the standard library, which refuses them;
- a lone surrogate (UTF-8 cannot carry it) is escaped as ``\\ud800``;
- a mapping key that is not a string or a number (``True``, ``None``) is
  written as the standard library writes it, and a value neither can write is
  a ``TypeError``.

msgspec also writes some values the standard library refuses (sets, bytes,
datetimes, attrs classes); no reply holds one, since the blueprints answer
plain values (``rhetor.edge._http.plain``).

Only encoding lives here; reading requests is ``rhetor.edge._fields``'s.
"""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec

__all__ = ["dumps", "encode"]

_ENCODER = msgspec.json.Encoder()
_STDLIB = json.JSONEncoder(allow_nan=False)


def encode(body: Any) -> bytes:
    """``body`` as JSON bytes (UTF-8); NaN or Infinity in it raises ``ValueError``."""
    try:
        out = _ENCODER.encode(body)
    except (TypeError, UnicodeEncodeError, OverflowError):
        return _STDLIB.encode(body).encode()
    # Cheap scans of the output decide whether a NaN or Infinity could be there.
    if b'nan"' in out or b'inf"' in out:
        # Perhaps a key (rare): the standard library writes the body, or refuses it.
        return _STDLIB.encode(body).encode()
    if b"null" in out and _holds_non_finite(body):
        raise ValueError("Out of range float values are not JSON compliant")
    return out


def dumps(body: Any) -> str:
    """``body`` as JSON text (a WebSocket text frame); NaN or Infinity raises ``ValueError``."""
    return encode(body).decode()


_isfinite = math.isfinite


def _holds_non_finite(value: Any) -> bool:
    """
    Whether a NaN or an Infinity is among the values in ``value``, at any depth.

    Written for speed (a reply with a ``null`` in it is walked every time):
    the common types are told apart by identity, subclasses by ``isinstance``.
    """
    kind = type(value)
    if kind is float:
        return not _isfinite(value)
    if kind is dict:
        value = value.values()
    elif kind is not list and kind is not tuple:
        if isinstance(value, float):
            return not _isfinite(value)
        if isinstance(value, dict):
            value = value.values()
        elif not isinstance(value, list | tuple):
            return False
    for item in value:
        kind = type(item)
        if kind is str or kind is int or item is None or kind is bool:
            continue
        if kind is float:
            if not _isfinite(item):
                return True
        elif _holds_non_finite(item):
            return True
    return False
