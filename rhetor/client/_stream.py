"""
What :class:`~rhetor.client.RhetorClient` reads off the wire: a response's
JSON or the error it reports, Server-Sent Events, and :class:`ReplyStream`.

Split out of ``_http.py``, which re-exports these names.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AbstractAsyncContextManager, aclosing
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

from rhetor.client._errors import (
    RhetorClientError,
    ServerError,
    error_from_body,
    transport_errors,
)
from rhetor.client._models import Reply

if TYPE_CHECKING:
    from rhetor.client._http import RhetorClient

__all__ = ["ReplyStream"]


def _base_url(host: str, port: int) -> str:
    if host.startswith(("http://", "https://")):
        return host.rstrip("/")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # a bare IPv6 address
    return f"http://{host}:{port}"


def _decode(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def _check(response: httpx.Response) -> Any:
    """The response's JSON, or the error it reports raised as a client error."""
    body = _decode(response)
    if response.status_code >= 400:
        raise error_from_body(body, response.status_code)
    if body is None:
        raise ServerError(
            f"Rhetor answered {response.status_code} with a body that is not JSON",
            status=response.status_code,
        )
    return body


def _object(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ServerError(f"Rhetor's {what} answer is not a JSON object")
    return body


def _sse_payload(data: list[str]) -> dict[str, Any] | None:
    payload = "\n".join(data)
    try:
        event = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise ServerError(f"Rhetor sent a stream event that is not JSON: {payload!r}") from exc
    return event if isinstance(event, dict) else None


async def _sse_events(response: httpx.Response) -> AsyncGenerator[dict[str, Any], None]:
    """Decode Server-Sent Events' ``data:`` payloads as JSON objects, one per event."""
    lines = response.aiter_lines()
    data: list[str] = []
    try:
        async for line in lines:
            if line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
            elif not line.strip() and data:
                event, data = _sse_payload(data), []
                if event is not None:
                    yield event
            # Anything else is a comment, an event name or an id: not used.
        if data and (event := _sse_payload(data)) is not None:
            yield event
    finally:
        # httpx's line iterator is an async generator too; close it now, not at GC.
        aclose = getattr(lines, "aclose", None)
        if aclose is not None:
            await aclose()


class ReplyStream(AsyncIterator[str], AbstractAsyncContextManager["ReplyStream"]):
    """
    A streamed reply: iterate it for text chunks; ``.reply`` is set once it ends.

    It behaves like an async generator: ``aclose()`` (or leaving ``async with``)
    closes the HTTP response, and the server cancels the request down to the
    provider call. Breaking out of ``async for`` without closing it leaves the
    close to garbage collection; use ``async with`` to make it prompt.

    Error handling: an error event mid-stream raises the matching
    :class:`~rhetor.client.RhetorClientError` from the iteration.
    """

    def __init__(
        self, client: RhetorClient, path: str, body: dict[str, Any], headers: dict[str, str]
    ) -> None:
        self._parts: list[str] = []
        #: The whole reply (text, model, provider, usage, cost), once the stream is done.
        self.reply: Reply | None = None
        self._events = self._run(client, path, body, headers)

    @property
    def text(self) -> str:
        """The text streamed so far."""
        return "".join(self._parts)

    def __aiter__(self) -> ReplyStream:
        return self

    async def __anext__(self) -> str:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        """Stop reading; the server cancels the request if it is still running."""
        await self._events.aclose()

    async def __aenter__(self) -> ReplyStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _run(
        self, client: RhetorClient, path: str, body: dict[str, Any], headers: dict[str, str]
    ) -> AsyncGenerator[str, None]:
        last: dict[str, Any] = {}
        failure: RhetorClientError | None = None
        url = client.base_url + path
        with transport_errors(url):
            async with client.http.stream("POST", path, json=body, headers=headers) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise error_from_body(_decode(response), response.status_code)
                # Read to the end of the stream even after the final event (the
                # server ends it there): an exhausted stream leaves no half-read
                # httpx generators behind for the garbage collector.
                async with aclosing(_sse_events(response)) as events:
                    async for event in events:
                        if failure is not None or self.reply is not None:
                            continue
                        if event.get("error") is not None:
                            failure = error_from_body(event)
                            continue
                        chunk = event.get("chunk")
                        if isinstance(chunk, str) and chunk:
                            self._parts.append(chunk)
                            yield chunk
                        if event.get("done"):
                            self.reply = Reply.from_dict({**last, **event, "message": self.text})
                        else:
                            last = {k: v for k, v in event.items() if k not in ("chunk", "done")}
        if failure is not None:
            raise failure
        if self.reply is None:
            raise ServerError(f"Rhetor's stream from {path} ended before its final event")
