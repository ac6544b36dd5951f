"""
What every provider backend shares: model lists, stream reading and clean-up, retry hints.

The backends (:mod:`rhetor._anthropic`, :mod:`rhetor._openai`, :mod:`rhetor._ollama`)
differ in their wire formats and in how they translate their library's errors, which
each does in its own ``_translate_errors``; what is the same for all of them lives here.
Nothing here raises a :mod:`rhetor._errors` exception: :class:`StreamedError` is the
backends' internal signal, translated where it is caught.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import suppress
from typing import Any

import trio

__all__ = [
    "CLEANUP_TIMEOUT",
    "ServerSentEvents",
    "StreamedError",
    "finish",
    "merge_models",
    "model_names",
    "retry_after",
]

# Seconds the shielded clean-up of an abandoned stream may take.
CLEANUP_TIMEOUT = 1.0


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


async def finish(iterator: AsyncIterator[Any]) -> None:
    """
    Run a half-read async iterator chain to its end by cancelling it at its next await.

    httpx, httpx2 and the SDKs over them nest async generators without closing the
    inner ones (encode/httpx#3686); abandoned half-way they are garbage collected
    unfinished, which trio reports as a ResourceWarning. A cancellation raised at the
    innermost await unwinds them all. Callers run this under a shielded scope bounded
    by :data:`CLEANUP_TIMEOUT`.
    """
    with trio.CancelScope() as scope:
        scope.cancel()
        # The iterator is being discarded: how it ends (StopAsyncIteration, a transport
        # error, or the Cancelled this scope absorbs) does not matter.
        with suppress(Exception):
            for _ in range(10_000):
                await anext(iterator)


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


class StreamedError(Exception):
    """
    An error object the upstream sent inside a 200 stream; ``body`` is the decoded object.

    The message is the upstream's own detail; each backend's ``_translate_errors`` reads
    ``body`` to choose the Rhetor error.
    """

    def __init__(self, message: str, body: Mapping[str, Any]) -> None:
        super().__init__(message)
        self.body = body


class ServerSentEvents:
    """
    Splits a server-sent-event byte stream into ``(event, data)`` pairs.

    An event without a ``data`` line is dropped, as the standard says, unless
    ``keep_dataless`` is set: then one that names its type arrives with empty data
    (Anthropic's events are read by their type alone).
    """

    def __init__(self, *, keep_dataless: bool = False) -> None:
        self._keep_dataless = keep_dataless
        self._buffer = b""
        self._event = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[tuple[str, str]]:
        """
        Take the next bytes; return the events they complete.
        """
        self._buffer += chunk
        events: list[tuple[str, str]] = []
        while (end := self._buffer.find(b"\n")) >= 0:
            # Lines are decoded whole, so a UTF-8 character split across chunks is safe.
            line = self._buffer[:end].rstrip(b"\r").decode()
            self._buffer = self._buffer[end + 1 :]
            if not line:
                if self._data or (self._keep_dataless and self._event):
                    events.append((self._event or "message", "\n".join(self._data)))
                self._event, self._data = "", []
            elif not line.startswith(":"):
                field, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if field == "event":
                    self._event = value
                elif field == "data":
                    self._data.append(value)
        return events
