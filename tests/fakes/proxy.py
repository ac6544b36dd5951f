"""
A fake HTTP proxy on loopback: plain requests forwarded from their absolute form, and
``CONNECT`` tunnels (what HTTPS through a proxy uses).

It records what it was asked (``proxy.asked``: the method and target of each request
it received, with its ``proxy-authorization``) and refuses requests without the
expected credentials with a 407, as a real proxy would.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import attrs
import h11
import trio

__all__ = ["FakeProxy", "fake_proxy", "pipe"]


@attrs.define(eq=False)
class FakeProxy:
    """
    Forwards plain requests and opens CONNECT tunnels; ``url`` is where it listens.
    """

    # When set, every request must carry this proxy-authorization.
    authorization: str | None = None
    url: str = ""
    asked: list[tuple[str, str, str | None]] = attrs.field(factory=list)

    async def serve(self, client: trio.SocketStream) -> None:
        """
        Serve one client connection: one request, forwarded or tunnelled.
        """
        conn = h11.Connection(h11.SERVER)
        try:
            request, body = await _read(conn, client)
            if request is None:
                return
            headers = {k.decode().lower(): v.decode() for k, v in request.headers}
            method, target = request.method.decode(), request.target.decode()
            self.asked.append((method, target, headers.get("proxy-authorization")))
            if self.authorization and headers.get("proxy-authorization") != self.authorization:
                await _answer(conn, client, 407, b"proxy authentication required")
                return
            if method == "CONNECT":
                await self._tunnel(conn, client, target)
            else:
                await self._forward(client, request, body, target)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            return
        finally:
            await trio.aclose_forcefully(client)

    async def _tunnel(self, conn: h11.Connection, client: trio.SocketStream, target: str) -> None:
        host, _, port = target.rpartition(":")
        upstream = await trio.open_tcp_stream(host.strip("[]"), int(port))
        await client.send_all(conn.send(h11.Response(status_code=200, headers=[])))
        async with upstream, trio.open_nursery() as nursery:
            nursery.start_soon(pipe, client, upstream, nursery.cancel_scope)
            nursery.start_soon(pipe, upstream, client, nursery.cancel_scope)

    async def _forward(
        self, client: trio.SocketStream, request: h11.Request, body: bytes, target: str
    ) -> None:
        parts = urllib.parse.urlsplit(target)
        assert parts.hostname is not None and parts.port is not None, target
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        headers = [(k, v) for k, v in request.headers if k.lower() not in (b"proxy-authorization",)]
        upstream = await trio.open_tcp_stream(parts.hostname, parts.port)
        async with upstream:
            out = h11.Connection(h11.CLIENT)
            data = out.send(h11.Request(method=request.method, target=path, headers=headers))
            data += out.send(h11.Data(data=body)) if body else b""
            data += out.send(h11.EndOfMessage())
            await upstream.send_all(data)
            # Relay the reply as it comes, until the upstream ends it or closes.
            while True:
                event = out.next_event()
                if event is h11.NEED_DATA:
                    chunk = await upstream.receive_some(65536)
                    out.receive_data(chunk)
                    if chunk:
                        await client.send_all(chunk)
                    continue
                if isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    return


async def _read(
    conn: h11.Connection, stream: trio.SocketStream
) -> tuple[h11.Request | None, bytes]:
    request: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return request, bytes(body)
        else:
            return None, b""


async def _answer(
    conn: h11.Connection, stream: trio.SocketStream, status: int, text: bytes
) -> None:
    headers = [("content-length", str(len(text))), ("connection", "close")]
    data = conn.send(h11.Response(status_code=status, headers=headers))
    await stream.send_all(data + conn.send(h11.Data(data=text)) + conn.send(h11.EndOfMessage()))


async def pipe(source: trio.SocketStream, sink: trio.SocketStream, scope: trio.CancelScope) -> None:
    """Copy ``source`` to ``sink`` until either ends, then cancel ``scope`` (the other way too)."""
    try:
        while data := await source.receive_some(65536):
            await sink.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        scope.cancel()


@asynccontextmanager
async def fake_proxy(authorization: str | None = None) -> AsyncIterator[FakeProxy]:
    """
    Serve a :class:`FakeProxy` on loopback for the body of the ``async with``.
    """
    proxy = FakeProxy(authorization)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, proxy.serve, 0, host="127.0.0.1"))
        proxy.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        try:
            yield proxy
        finally:
            nursery.cancel_scope.cancel()
