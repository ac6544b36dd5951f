"""
What every provider backend shares: model lists, stream reading and clean-up, retry
hints, and the checks on what a 200 reply may contain.

The backends (:mod:`rhetor.providers._anthropic`, :mod:`rhetor.providers._openai`, :mod:`rhetor.providers._ollama`)
differ in their wire formats and in how they translate their library's errors, which
each does in its own ``_translate_errors``; what is the same for all of them lives here.
Nothing here raises a :mod:`rhetor._errors` exception: :class:`StreamedError` and
:class:`MalformedReply` are the backends' internal signals, translated where they are
caught.

Every reader here takes time linear in what it reads: an upstream's multi-megabyte
event costs a few copies of its bytes, never a rescan per chunk or per line.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import reprlib
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec

__all__ = [
    "MALFORMED",
    "MAX_EVENT_BYTES",
    "MAX_TOKEN_COUNT",
    "LineSplitter",
    "MalformedReply",
    "ServerSentEvents",
    "StreamIncomplete",
    "StreamedError",
    "UpstreamStatus",
    "decode_json",
    "encode_json",
    "error_detail_text",
    "merge_models",
    "model_ids",
    "model_name",
    "model_names",
    "optional_text",
    "preview",
    "relay",
    "retry_after",
    "token_count",
    "usage_anomaly",
]

log = logging.getLogger("rhetor.upstream")

# The longest line (NDJSON) or event (SSE) a stream may send, in bytes: no token
# delta comes near it, and a hostile upstream cannot make Rhetor buffer more.
MAX_EVENT_BYTES = 32 * 1024 * 1024

# The largest token count one call may report. No model reads or writes a billion
# tokens in one call; a count above this is a broken upstream, not usage (and would
# overflow the ledger's 64-bit integers long before a float-to-int conversion did).
MAX_TOKEN_COUNT = 1_000_000_000

_PREVIEW = reprlib.Repr()
_PREVIEW.maxlevel = 3
_PREVIEW.maxstring = 80
_PREVIEW.maxother = 80
_PREVIEW.maxlong = 40


def model_names(models: Iterable[str]) -> tuple[str, ...]:
    """
    The configured models as a tuple (the converter of each backend's ``models``).
    """
    return tuple(models)


def merge_models(first: Sequence[str], second: Sequence[str]) -> tuple[str, ...]:
    """
    Both lists of models, each name once, in order of first appearance.
    """
    return tuple(dict.fromkeys([*first, *second]))


def retry_after(headers: Mapping[str, str]) -> float | None:
    """
    Seconds from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date).
    """
    if (millis := headers.get("retry-after-ms")) is not None:
        try:
            value = float(millis) / 1000
        except ValueError:
            pass
        else:
            if math.isfinite(value) and value >= 0:
                return value
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())
    return value if math.isfinite(value) and value >= 0 else None


class MalformedReply(Exception):
    """
    A 2xx reply that is not what the provider's wire format promises; the message says how.

    Each backend's ``_translate_errors`` turns it into an ``UpstreamServerError`` for
    the one call that met it.
    """


# What reading a 2xx reply raises when the reply is not what its format promises:
# MalformedReply from the checks here, and what a library's parser raises on the
# same (pydantic's ValidationError is a ValueError; 1e400 through int() is an
# OverflowError, an ArithmeticError; a deep nesting is a RecursionError).
MALFORMED: tuple[type[Exception], ...] = (
    MalformedReply,
    ValueError,
    KeyError,
    TypeError,
    AttributeError,
    ArithmeticError,
    RecursionError,
)


_DECODER = msgspec.json.Decoder()
_ENCODER = msgspec.json.Encoder()


def decode_json(data: bytes | str) -> Any:
    """
    One JSON document; :class:`MalformedReply` when it is not one.

    msgspec reads it; what msgspec refuses, the standard library reads as it always
    did (``1e400`` as ``inf``, ``NaN``, a lone surrogate), so the callers' checks
    (:func:`token_count`) decide what such values mean. A nesting too deep for either
    decoder (``RecursionError``) is malformed too, not a crash.
    """
    try:
        return _DECODER.decode(data)
    except (msgspec.DecodeError, RecursionError):
        pass
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise MalformedReply(f"not JSON: {type(exc).__name__}: {exc}"[:200]) from exc


def encode_json(value: Any) -> bytes:
    """
    ``value`` as compact JSON bytes (a request body).

    A string that is not valid Unicode (a lone surrogate, which UTF-8 cannot carry)
    is written as the standard library writes it, escaped as ``\\ud800``.
    """
    try:
        return _ENCODER.encode(value)
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":")).encode()


def relay(body: dict[str, Any], params: Mapping[str, Any]) -> None:
    """
    Add a same-family client's untranslated ``params`` to a request ``body``, under
    what Rhetor set: a parameter Rhetor also set is kept as Rhetor's, except that two
    objects are merged with Rhetor's keys winning (``output_config``, ``options``).
    """
    for name, value in params.items():
        ours = body.get(name)
        if ours is None:
            body[name] = value
        elif isinstance(ours, dict) and isinstance(value, Mapping):
            body[name] = {**value, **ours}


def optional_text(value: object, what: str) -> str | None:
    """
    ``value`` when it is a string, None when it is null or missing; else :class:`MalformedReply`.
    """
    if value is None or isinstance(value, str):
        return value
    raise MalformedReply(f"{what} is {type(value).__name__}, not a string")


def model_name(value: object) -> str | None:
    """
    ``value`` when it is a non-empty string (a model a reply names), else None.
    """
    return value if isinstance(value, str) and value else None


def token_count(value: object) -> int | None:
    """
    A token count an upstream reported, as a non-negative int; None when it is not one.

    A finite non-negative number up to :data:`MAX_TOKEN_COUNT` is a count (a float
    is rounded: ``12.7`` is 13 tokens, never a fractional count). Anything else is
    not: a negative number, ``inf`` or ``nan`` (``1e400`` decodes as ``inf``), a
    string, a bool, null, an object or a list.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= MAX_TOKEN_COUNT else None
    if isinstance(value, float) and math.isfinite(value) and 0 <= value <= MAX_TOKEN_COUNT:
        return round(value)
    return None


def preview(value: object) -> str:
    """
    A short, bounded ``repr`` of an upstream's value, safe for any depth or size.
    """
    try:
        return _PREVIEW.repr(value)
    except (ValueError, RecursionError):  # an int too long to print, a cycle
        return f"<{type(value).__name__}>"


def usage_anomaly(provider: str, usage: object, why: str) -> None:
    """
    Log that ``provider`` reported usage Rhetor cannot bill from, and what it was.
    """
    log.warning(
        "%s sent unusable usage (%s): %s; the call is billed at its reservation's worst case",
        provider,
        why,
        preview(usage),
    )


def model_ids(body: object, key: str, *names: str) -> tuple[str, ...]:
    """
    The model names in a models listing: ``body[key]`` is a list of objects, each
    named by the first of ``names`` that holds a non-empty string.

    Entries that name nothing are skipped; a body of another shape is :class:`MalformedReply`.
    """
    entries = body.get(key) if isinstance(body, Mapping) else None
    if not isinstance(entries, list):
        raise MalformedReply(f"the models listing has no {key!r} list")
    found: list[str] = []
    for entry in entries:
        if not isinstance(entry, Mapping):
            continue
        name = next((v for n in names if isinstance(v := entry.get(n), str) and v), None)
        if name is not None:
            found.append(name)
    return tuple(found)


class UpstreamStatus(Exception):
    """
    An error status: the upstream's HTTP status, its headers, and its body as sent.

    Each provider's ``translated`` reads the body in its own error format.
    """

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> object:
        """
        The body decoded, or None when it is not JSON.
        """
        try:
            return decode_json(self.body)
        except MalformedReply:
            return None

    def text(self) -> str:
        """
        The body as text, at most 500 characters of it.
        """
        return self.body[:2000].decode("utf-8", "replace")[:500]


def error_detail_text(status: UpstreamStatus, detail: str) -> str:
    """
    ``detail`` when the body said something, else its text, else ``HTTP <status>``.
    """
    return detail or status.text() or f"HTTP {status.status}"


class StreamIncomplete(Exception):
    """
    A stream whose body ended before the format's own end (``[DONE]``, ``message_stop``, ``done``).
    """


class StreamedError(Exception):
    """
    An error object the upstream sent inside a 200 stream; ``body`` is the decoded object.

    The message is the upstream's own detail; each backend's ``_translate_errors`` reads
    ``body`` to choose the Rhetor error.
    """

    def __init__(self, message: str, body: Mapping[str, Any]) -> None:
        super().__init__(message)
        self.body = body


class LineSplitter:
    """
    Splits a byte stream into lines at ``\\n`` (dropping a ``\\r`` before it).

    Linear in the bytes fed, however they are chunked: each chunk is split on its own
    (in C, once), and only the unfinished line is kept between chunks, so no byte is
    searched twice and nothing already read is re-sliced per line. Only ``\\n`` ends
    a line, as in NDJSON and server-sent events; a Unicode line separator inside a
    JSON string does not. A line longer than ``limit`` bytes is :class:`MalformedReply`.
    """

    def __init__(self, limit: int = MAX_EVENT_BYTES) -> None:
        self._limit = limit
        # Invariant: the unfinished line: what followed the last b"\n" fed.
        self._buffer = bytearray()
        # The work done so far, which tests and benchmarks read to show it is linear:
        # bytes searched for a line end (each byte fed, once) and bytes copied (split
        # out of its chunk, and an unfinished line's pieces joined).
        self.scanned = 0
        self.copied = 0

    def feed(self, chunk: bytes) -> list[bytes]:
        """
        Take the next bytes; return the lines they complete, without their line ends.
        """
        lines = chunk.split(b"\n")
        self.scanned += len(chunk)
        rest = lines.pop()
        buffer = self._buffer
        if lines:
            # Split out of the chunk (without a b"\n", split copies nothing).
            self.copied += len(chunk) - len(rest)
            if buffer:
                # The unfinished line ends in this chunk: join its pieces, once.
                buffer += lines[0]
                self.copied += len(lines[0])
                lines[0] = bytes(buffer)
                self.copied += len(buffer)
                buffer.clear()
        buffer += rest
        self.copied += len(rest)
        if len(buffer) > self._limit or (lines and max(map(len, lines)) > self._limit):
            raise MalformedReply(f"a line ran past {self._limit} bytes")
        return [line[:-1] if line.endswith(b"\r") else line for line in lines]

    def rest(self) -> bytes:
        """
        What follows the last line end: a last line the stream did not end with ``\\n``.
        """
        rest = bytes(self._buffer).removesuffix(b"\r")
        self._buffer.clear()
        return rest


class ServerSentEvents:
    """
    Splits a server-sent-event byte stream into ``(event, data)`` pairs.

    An event without a ``data`` line is dropped, as the standard says, unless
    ``keep_dataless`` is set: then one that names its type arrives with empty data
    (Anthropic's events are read by their type alone). Bytes that are not UTF-8 are
    replaced, as the standard says. An event (or one line) longer than ``limit``
    bytes is :class:`MalformedReply`; nothing else makes this raise.
    """

    def __init__(self, *, keep_dataless: bool = False, limit: int = MAX_EVENT_BYTES) -> None:
        self._keep_dataless = keep_dataless
        self._limit = limit
        self._lines = LineSplitter(limit)
        self._event = ""
        self._data: list[str] = []
        # Invariant: the characters in _data (what the event under way holds).
        self._size = 0

    @property
    def lines(self) -> LineSplitter:
        """
        The line splitter underneath; its counters show the work done so far.
        """
        return self._lines

    def feed(self, chunk: bytes) -> list[tuple[str, str]]:
        """
        Take the next bytes; return the events they complete.
        """
        events: list[tuple[str, str]] = []
        for raw in self._lines.feed(chunk):
            # Lines are decoded whole, so a UTF-8 character split across chunks is safe.
            line = raw.decode(errors="replace")
            if not line:
                if self._data or (self._keep_dataless and self._event):
                    events.append((self._event or "message", "\n".join(self._data)))
                self._event, self._data, self._size = "", [], 0
            elif not line.startswith(":"):
                field, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if field == "event":
                    self._event = value
                elif field == "data":
                    self._data.append(value)
                    self._size += len(value) + 1
                    if self._size > self._limit:
                        raise MalformedReply(f"an event ran past {self._limit} bytes")
        return events
