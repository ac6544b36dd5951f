"""
One upstream call over the pooled HTTP client, whole or streamed: what every HTTP
backend does alike.

A backend describes its request (:class:`Outgoing`), how its stream is framed and
read (a :class:`StreamReading`), and how its upstream's failures read (its
``translated`` function); :func:`fetch` and :func:`stream` do the rest: the call's
deadline, error statuses, reading the body as it arrives, keep-alive, and closing the
connection at once when the call fails or its consumer leaves.

Every failure leaves here as a :mod:`rhetor._errors` exception, made by
:func:`translate`: the backend's own mapping first (error statuses and error
events), then :func:`transport_error` for what every transport has in common.
Messages are redacted there (:func:`rhetor._redact.redact_error`), the one place.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any, Protocol, TypeVar

import attrs
import trio

from rhetor._errors import (
    ProviderError,
    UpstreamConnectionError,
    UpstreamServerError,
    UpstreamTimeout,
)
from rhetor._redact import redact_error
from rhetor._types import CitationDelta, StreamEnd, TextDelta, ThinkingDelta, ToolCallDelta
from rhetor.providers._connect import ReplyTooLarge, TransportError, TransportTimeout
from rhetor.providers._http import HttpClient, Response
from rhetor.providers._wire import MALFORMED, StreamIncomplete, UpstreamStatus, decode_json

__all__ = [
    "DRAIN_TIMEOUT",
    "Outgoing",
    "StreamReading",
    "Translation",
    "failing",
    "fetch",
    "stream",
    "translate",
    "transport_error",
]

# Seconds to wait for the end of a body after the format's own end, so that its
# connection can be reused; past that it is closed.
DRAIN_TIMEOUT = 0.1

# A provider's own reading of a failure: an error status or an error event in the
# stream becomes a Rhetor error; None for what it does not know.
Translation = Callable[[Exception, str, "str | None"], "ProviderError | None"]

T = TypeVar("T")


@attrs.frozen
class Outgoing:
    """
    One request as it goes on the wire: method, path under the base URL, headers, body.
    """

    method: str
    path: str
    headers: Sequence[tuple[str, str]]
    body: bytes = b""


class StreamReading(Protocol):
    """
    How one provider's stream is framed and read, one call's worth of state.

    :meth:`feed` cuts bytes into events (SSE events, NDJSON lines), :meth:`take`
    reads one event and answers the items it adds (raising a wire signal or
    :class:`rhetor.providers._wire.MalformedReply` for what the format does not
    allow), and :meth:`end` makes the last item once ``finished`` is set or the body
    ends (raising :class:`StreamIncomplete` when it ended too soon).
    """

    # Set when the format's own end arrived: nothing after it is read.
    finished: bool

    def feed(self, data: bytes) -> Sequence[Any]:
        """The events these bytes complete."""
        ...

    def flush(self) -> Sequence[Any]:
        """The events a body ending here completes (a last line without its newline)."""
        ...

    def take(
        self, event: Any
    ) -> Sequence[TextDelta | ToolCallDelta | ThinkingDelta | CitationDelta]:
        """Read one event; the items it adds."""
        ...

    def end(self) -> StreamEnd:
        """The stream's last item, from what the events said."""
        ...


def transport_error(exc: Exception, provider: str, model: str | None) -> ProviderError | None:
    """
    The Rhetor error for a failure every transport and wire format has; None for others.
    """
    if isinstance(exc, trio.TooSlowError | TransportTimeout):
        return UpstreamTimeout(f"{provider} did not answer in time", provider=provider, model=model)
    if isinstance(exc, ReplyTooLarge):
        return UpstreamServerError(
            f"malformed reply from {provider}: {exc}", provider=provider, model=model
        )
    if isinstance(exc, TransportError):
        return UpstreamConnectionError(
            f"cannot reach {provider}, or it dropped the connection: {exc}",
            provider=provider,
            model=model,
        )
    if isinstance(exc, StreamIncomplete):
        return UpstreamConnectionError(f"{provider} stream {exc}", provider=provider, model=model)
    if isinstance(exc, MALFORMED):
        # A 2xx body or event that is not the provider's wire format.
        return UpstreamServerError(
            f"malformed reply from {provider}: {exc}", provider=provider, model=model
        )
    return None


def translate(
    exc: Exception, provider: str, model: str | None, translated: Translation
) -> Exception:
    """
    The redacted Rhetor error for ``exc``; ``exc`` itself for what is no upstream's doing.

    Callers ``raise`` the answer ``from exc`` unless it is ``exc``. A
    :class:`rhetor.ProviderError` passes as it is.
    """
    if isinstance(exc, ProviderError):
        return exc
    error = translated(exc, provider, model) or transport_error(exc, provider, model)
    return exc if error is None else redact_error(error)


async def fetch(
    client: HttpClient,
    outgoing: Outgoing,
    timeout: float,
    provider: str,
    model: str | None,
    translated: Translation,
    read: Callable[[Any], T],
) -> T:
    """
    Send ``outgoing``; answer ``read`` of its 2xx body, decoded from JSON.

    ``read`` checks the body as it reads it, raising
    :class:`rhetor.providers._wire.MalformedReply` for what the format does not allow.

    Error handling: a :class:`rhetor.ProviderError` for every failure: an error
    status (read by ``translated``), a transport failure, a body that is not JSON
    or not what ``read`` expects, ``timeout`` seconds passing.
    Cancellation: closes the connection.
    """
    response: Response | None = None
    deadline = trio.current_time() + timeout
    try:
        response = await client.request(
            outgoing.method,
            outgoing.path,
            outgoing.headers,
            outgoing.body,
            deadline=deadline,
            whole=True,
        )
        data = await response.read()
        if response.status >= 300:
            raise UpstreamStatus(response.status, response.headers, data)
        return read(decode_json(data))
    except Exception as exc:
        error = translate(exc, provider, model, translated)
        if error is exc:
            raise
        raise error from exc
    finally:
        if response is not None:
            response.close()


async def stream(
    client: HttpClient,
    outgoing: Outgoing,
    timeout: float,
    reading: StreamReading,
    provider: str,
    model: str,
    translated: Translation,
) -> AsyncGenerator[TextDelta | ToolCallDelta | ThinkingDelta | CitationDelta | StreamEnd, None]:
    """
    Send ``outgoing``; yield the items ``reading`` reads as the body arrives, then its end.

    One event at a time: the items before a bad event still reach the caller (and
    make a later failure a broken stream).

    Error handling: a :class:`rhetor.ProviderError` for every failure, before the
    first item or after some; past ``timeout`` seconds in all, UpstreamTimeout.
    Cancellation: closing or cancelling the generator closes the connection at once.
    """
    response: Response | None = None
    deadline = trio.current_time() + timeout
    try:
        try:
            response = await client.request(
                outgoing.method, outgoing.path, outgoing.headers, outgoing.body, deadline=deadline
            )
            if response.status >= 300:
                error_body = await response.read(deadline=deadline)
                raise UpstreamStatus(response.status, response.headers, error_body)
        except Exception as exc:
            raise _as_provider_error(exc, provider, model, translated) from exc
        while not reading.finished:
            try:
                data = await response.receive(deadline=deadline)
                events = reading.feed(data) if data is not None else reading.flush()
            except Exception as exc:
                raise _as_provider_error(exc, provider, model, translated) from exc
            for event in events:
                try:
                    items = reading.take(event)
                except Exception as exc:
                    raise _as_provider_error(exc, provider, model, translated) from exc
                for item in items:
                    yield item
                if reading.finished:
                    break
            if data is None:
                break
        try:
            end = reading.end()
        except Exception as exc:
            raise _as_provider_error(exc, provider, model, translated) from exc
        # Read the body's own end (normally already here) so the connection is reused.
        await response.drain(min(DRAIN_TIMEOUT, max(0.0, deadline - trio.current_time())))
        yield end
    finally:
        if response is not None:
            response.close()


async def failing(
    error: ProviderError,
) -> AsyncGenerator[TextDelta | ToolCallDelta | ThinkingDelta | CitationDelta | StreamEnd, None]:
    """
    A stream that fails with ``error`` at its first item (a backend that cannot call).
    """
    raise error
    yield  # pragma: no cover  (makes this an async generator)


def _as_provider_error(
    exc: Exception, provider: str, model: str, translated: Translation
) -> Exception:
    """
    The Rhetor error to raise for ``exc``; re-raises ``exc`` when it is no upstream's doing.
    """
    error = translate(exc, provider, model, translated)
    if error is exc:
        raise exc
    return error
