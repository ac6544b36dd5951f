"""
A TCP proxy on loopback that a test can cut: PostgreSQL "restarting" without touching the server.

The machine's PostgreSQL serves other tests and CI, so a test never restarts
it. Instead Rhetor reaches the database through :class:`CuttableProxy`, which
forwards bytes both ways until the test calls :meth:`CuttableProxy.cut`: then
every open connection is closed at once (as a server shutting down does) and
new ones are refused (accepted and closed, so libpq sees "server closed the
connection unexpectedly" at once) until :meth:`CuttableProxy.restore`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from urllib.parse import urlsplit, urlunsplit

import attrs
import trio

from tests.fakes.proxy import pipe

__all__ = ["CuttableProxy", "cuttable_proxy", "database_address", "proxied_url"]


@attrs.define(eq=False)
class CuttableProxy:
    """
    Forwards ``127.0.0.1:port`` to ``target_host:target_port`` until cut.

    ``connections`` counts the connections accepted while open; ``refused``
    those turned away while cut.
    """

    target_host: str
    target_port: int
    port: int = 0
    connections: int = 0
    refused: int = 0
    _open: bool = True
    # Invariant: the scope of each forwarded connection still open; cut() cancels them.
    _scopes: set[trio.CancelScope] = attrs.field(factory=set)

    @property
    def is_open(self) -> bool:
        return self._open

    def cut(self) -> None:
        """Close every open connection now and refuse new ones until :meth:`restore`."""
        self._open = False
        for scope in self._scopes:
            scope.cancel()

    def restore(self) -> None:
        """Forward new connections again."""
        self._open = True

    async def serve(self, client: trio.SocketStream) -> None:
        """Serve one client connection: forward it, or close it at once when cut."""
        if not self._open:
            self.refused += 1
            await trio.aclose_forcefully(client)
            return
        self.connections += 1
        scope = trio.CancelScope()
        self._scopes.add(scope)
        try:
            with scope:
                server = await trio.open_tcp_stream(self.target_host, self.target_port)
                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(pipe, client, server, nursery.cancel_scope)
                        nursery.start_soon(pipe, server, client, nursery.cancel_scope)
                finally:
                    await trio.aclose_forcefully(server)
        except OSError:
            pass
        finally:
            self._scopes.discard(scope)
            await trio.aclose_forcefully(client)


@asynccontextmanager
async def cuttable_proxy(target_host: str, target_port: int) -> AsyncIterator[CuttableProxy]:
    """Serve a :class:`CuttableProxy` to the target for the block; ``proxy.port`` is where."""
    proxy = CuttableProxy(target_host, target_port)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, proxy.serve, 0, host="127.0.0.1"))
        proxy.port = listeners[0].socket.getsockname()[1]
        try:
            yield proxy
        finally:
            nursery.cancel_scope.cancel()


def database_address(url: str) -> tuple[str, int]:
    """The host and port a ``postgresql://`` URL names (libpq's defaults when it names none)."""
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 5432


def proxied_url(url: str, proxy: CuttableProxy) -> str:
    """``url`` with its host and port replaced by the proxy's."""
    parts = urlsplit(url)
    user = parts.netloc.rpartition("@")[0]
    netloc = f"{user}@127.0.0.1:{proxy.port}" if user else f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=netloc))
