"""
The loopback HTTP/1.1 server under every fake upstream.

A fake is a :class:`FakeUpstream` subclass that routes a :class:`ReceivedRequest` and
answers through a :class:`Responder`. The server is raw trio + h11 so that a fake can do
what a well-behaved framework would not: drop the connection half-way through a chunked
body, or never answer at all.

Behaviours (:mod:`tests.fakes._behaviours`) are provider-neutral frozen values; each
fake renders them in its own wire format, so one script drives any provider::

    async with fake_openai() as fake:
        fake.script(Fail.rate_limited(retry_after=2), Reply("hello"))

Requests to the completion endpoint consume scripted behaviours in order; once the script
is empty, ``fake.default`` answers.
"""

from __future__ import annotations

import argparse
import json
import math
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, TypeVar

import attrs
import h11
import trio

from tests.fakes._behaviours import (
    UNSET,
    Behaviour,
    Call,
    Cut,
    Fail,
    Garbled,
    Hang,
    Raw,
    Recorded,
    Reply,
    Stall,
    StreamError,
    dumps,
    split_text,
)

__all__ = [
    "UNSET",
    "Behaviour",
    "Call",
    "Cut",
    "Fail",
    "FakeUpstream",
    "Garbled",
    "Hang",
    "Raw",
    "ReceivedRequest",
    "Recorded",
    "Reply",
    "Responder",
    "Stall",
    "StreamError",
    "dumps",
    "echoed_keys",
    "run_standalone",
    "running",
    "split_text",
]


# ---------------------------------------------------------------------------
# The server


@attrs.frozen
class ReceivedRequest:
    """
    One request the fake received: method, path (without query), lower-case headers, JSON body.
    """

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    query: str = ""

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


def echoed_keys(request: ReceivedRequest) -> str:
    """
    The credentials a request carried, as an upstream that echoes them would write them.
    """
    sent = [
        f"{name}: {request.headers[name]}"
        for name in ("authorization", "x-api-key")
        if name in request.headers
    ]
    return f" (received {'; '.join(sent) or 'no credentials'})"


class _DropConnection(Exception):
    """
    Raised by a handler to close the socket without finishing the response.
    """


@attrs.define(eq=False)
class Responder:
    """
    Writes one response on an h11 connection: whole JSON, or a chunked body piece by piece.
    """

    _conn: h11.Connection
    _stream: trio.abc.Stream

    async def _send(self, event: h11.Event) -> None:
        data = self._conn.send(event)
        if data:
            await self._stream.send_all(data)

    async def start(
        self,
        status: int,
        content_type: str,
        headers: Mapping[str, str] | None = None,
        *,
        length: int | None = None,
    ) -> None:
        """
        Send the status line and headers; without ``length`` the body is chunked.
        """
        fields = [("content-type", content_type), ("server", "rhetor-fake")]
        if length is not None:
            fields.append(("content-length", str(length)))
        fields.extend((headers or {}).items())
        await self._send(h11.Response(status_code=status, headers=fields))

    async def send(self, data: bytes) -> None:
        """
        Send one piece of the body (one chunk, when chunked).
        """
        await self._send(h11.Data(data=data))

    async def end(self) -> None:
        """
        Finish the body.
        """
        await self._send(h11.EndOfMessage())

    async def json(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        """
        Send a whole JSON response.
        """
        data = dumps(body).encode()
        await self.start(status, "application/json", headers, length=len(data))
        await self.send(data)
        await self.end()

    async def drop(self) -> None:
        """
        Close the connection now, leaving the response unfinished.
        """
        raise _DropConnection

    async def hold(self) -> None:
        """
        Wait until the client disconnects (the server cancels this when it does).
        """
        await trio.sleep_forever()


_Upstream = TypeVar("_Upstream", bound="FakeUpstream")


@attrs.define(eq=False)
class FakeUpstream:
    """
    A scriptable fake upstream; subclasses implement :meth:`handle` for one wire format.

    ``requests`` records every request in arrival order; ``disconnects`` counts clients
    that left before a response was complete, and ``disconnected`` is set on the first.
    """

    default: Behaviour = attrs.field(factory=Reply)
    models: tuple[str, ...] = ()
    # When set, the model listing answers with this error instead.
    models_failure: Fail | None = None
    # When set, the model listing answers 200 with this body instead (JSON or Raw).
    models_body: Any = UNSET
    base_url: str = ""
    root_url: str = ""
    requests: list[ReceivedRequest] = attrs.field(factory=list)
    # Connections accepted so far (keep-alive reuses one for many requests).
    connections: int = 0
    disconnects: int = 0
    disconnected: trio.Event = attrs.field(factory=trio.Event)
    # Invariant: consumed from the left, one per completion request.
    _script: deque[Behaviour] = attrs.field(factory=deque)

    # Path under the root that a client SDK treats as its base URL ("/v1" for OpenAI).
    base_path = ""

    def script(self, *behaviours: Behaviour) -> None:
        """
        Queue behaviours for the next completion requests, in order.
        """
        self._script.extend(behaviours)

    def next_behaviour(self) -> Behaviour:
        """
        The behaviour for this completion request: the next scripted one, or the default.
        """
        return self._script.popleft() if self._script else self.default

    @property
    def completions(self) -> list[ReceivedRequest]:
        """
        The requests that asked for a completion (not model listings).
        """
        return [r for r in self.requests if r.method == "POST"]

    async def handle(self, request: ReceivedRequest, respond: Responder) -> None:
        """
        Answer one request; subclasses route by path.
        """
        await respond.json(404, {"error": f"no route {request.path}"})

    # -- connection handling ------------------------------------------------

    async def serve_connection(self, stream: trio.abc.Stream) -> None:
        """
        Serve keep-alive requests on one connection until the client closes it.
        """
        conn = h11.Connection(h11.SERVER)
        self.connections += 1
        try:
            while True:
                try:
                    request = await _read_request(conn, stream)
                except h11.RemoteProtocolError:
                    return
                if request is None:
                    return
                self.requests.append(request)
                if not await self._respond(conn, stream, request):
                    return
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        finally:
            # At once, TLS or not: the client may be gone, and a fake says no goodbyes.
            await trio.aclose_forcefully(stream)

    async def _respond(
        self, conn: h11.Connection, stream: trio.abc.Stream, request: ReceivedRequest
    ) -> bool:
        """
        Run the handler while watching for the client leaving; False to close the connection.
        """
        keep = True

        async def watch() -> None:
            while True:
                try:
                    data = await stream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                conn.receive_data(data)
                if not data:
                    break
            if conn.our_state in (h11.SEND_RESPONSE, h11.SEND_BODY):
                left()

        def left() -> None:
            nonlocal keep
            keep = False
            self._client_left()
            nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            try:
                await self.handle(request, Responder(conn, stream))
            except _DropConnection:
                keep = False
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                left()
            nursery.cancel_scope.cancel()
        return keep

    def _client_left(self) -> None:
        self.disconnects += 1
        self.disconnected.set()


async def _read_request(conn: h11.Connection, stream: trio.abc.Stream) -> ReceivedRequest | None:
    head: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            try:
                data = await stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return None
            conn.receive_data(data)
            continue
        if isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            target = head.target.decode()
            path, _, query = target.partition("?")
            return ReceivedRequest(
                method=head.method.decode(),
                path=path,
                query=query,
                headers={k.decode().lower(): v.decode() for k, v in head.headers},
                body=bytes(body),
            )
        else:  # ConnectionClosed, or PAUSED after an unexpected pipeline.
            return None


@asynccontextmanager
async def running(
    upstream: _Upstream,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    tls: ssl.SSLContext | None = None,
) -> AsyncIterator[_Upstream]:
    """
    Serve ``upstream`` on a loopback port for the body of the ``async with``.

    With ``tls`` (a server context) it speaks HTTPS and its URLs say ``https``.
    Cancellation: leaving the block cancels the server and every open connection.
    """
    async with trio.open_nursery() as nursery:
        if tls is None:
            listeners = await nursery.start(
                partial(trio.serve_tcp, upstream.serve_connection, port, host=host)
            )
            bound = listeners[0].socket.getsockname()[1]
        else:
            secured = await nursery.start(
                partial(
                    trio.serve_ssl_over_tcp,
                    upstream.serve_connection,
                    port,
                    tls,
                    host=host,
                    https_compatible=True,
                )
            )
            bound = secured[0].transport_listener.socket.getsockname()[1]
        scheme = "http" if tls is None else "https"
        upstream.root_url = f"{scheme}://{host}:{bound}"
        upstream.base_url = upstream.root_url + upstream.base_path
        try:
            yield upstream
        finally:
            nursery.cancel_scope.cancel()


def run_standalone(make: Callable[[], FakeUpstream], argv: Sequence[str] | None = None) -> None:
    """
    Serve a fake until interrupted: ``python -m tests.fakes.openai --port 8001``.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)

    async def serve() -> None:
        async with running(make(), host=args.host, port=args.port) as upstream:
            print(f"serving {type(upstream).__name__} at {upstream.base_url}", flush=True)
            await trio.sleep(math.inf)

    trio.run(serve)
