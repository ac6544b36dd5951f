"""
The pool of one upstream's connections: opened through its proxy and TLS, kept alive, bounded.

:class:`~rhetor.providers._http.HttpClient` takes a slot and a connection from its
:class:`ConnectionPool` for each exchange and hands the connection back when the exchange
ends: put back to be reused when it ended cleanly, closed at once when it did not. How a
connection is opened (TCP, TLS, a proxy's tunnel) is :mod:`rhetor.providers._connect`.
"""

from __future__ import annotations

import ssl

import attrs
import h11
import trio

from rhetor.providers._connect import (
    ConnectFailed,
    Connection,
    Origin,
    PoolTimeout,
    Proxy,
    open_stream,
    proxy_for,
    trust_store,
)

__all__ = ["ConnectionPool"]


@attrs.define(eq=False)
class ConnectionPool:
    """
    The connections to ``origin``: at most ``max_connections`` open at once, busy or idle.

    Proxies (``HTTP_PROXY`` and the rest) and ``SSL_CERT_FILE`` are read when the pool
    is made, unless ``trust_env`` is False; ``tls`` is then the trust store in force for
    an ``https`` origin. An idle connection is kept ``keepalive_expiry`` seconds.

    Error handling: :class:`PoolTimeout` when no slot frees within ``wait`` seconds;
    :class:`ConnectFailed` when a connection cannot be opened.
    """

    origin: Origin
    max_connections: int
    keepalive_expiry: float
    wait: float
    trust_env: bool = True
    tls: ssl.SSLContext | None = None
    proxy: Proxy | None = attrs.field(init=False, default=None)
    _proxy_error: str | None = attrs.field(init=False, default=None)
    # Invariant: the connections open and not in use, the last put back at the end.
    _idle: list[Connection] = attrs.field(init=False, factory=list)
    # Invariant: one token per connection in use; busy + idle <= max_connections.
    _slots: trio.Semaphore = attrs.field(init=False)
    closed: bool = attrs.field(init=False, default=False)

    def __attrs_post_init__(self) -> None:
        self._slots = trio.Semaphore(self.max_connections)
        if self.trust_env:
            try:
                self.proxy = proxy_for(self.origin)
            except ValueError as exc:
                self._proxy_error = str(exc)
        if self.origin.scheme == "https" and self.tls is None:
            self.tls = trust_store() if self.trust_env else ssl.create_default_context()

    @property
    def idle(self) -> int:
        """
        How many connections wait in the pool.
        """
        return len(self._idle)

    async def acquire(self) -> None:
        """
        Take a slot for one exchange, waiting at most ``wait`` seconds for one to free.
        """
        try:
            self._slots.acquire_nowait()
        except trio.WouldBlock:
            with trio.move_on_after(self.wait) as waited:
                await self._slots.acquire()
            if waited.cancelled_caught:
                raise PoolTimeout(
                    f"all {self.max_connections} connections stayed busy for {self.wait:g} s"
                ) from None

    def release(self) -> None:
        """
        Give back a slot whose exchange never got a connection to end.
        """
        self._slots.release()

    def pooled(self) -> Connection | None:
        """
        The most recently used idle connection that is still good, if any.
        """
        now = trio.current_time()
        while self._idle:
            connection = self._idle.pop()
            if now - connection.idle_since <= self.keepalive_expiry and not connection.stale():
                return connection
            connection.close()
        return None

    async def open(self) -> Connection:
        """
        A new connection to the origin, through the proxy if there is one; the caller bounds the time.
        """
        if self._proxy_error is not None:
            raise ConnectFailed(self._proxy_error)
        return Connection(await open_stream(self.origin, self.proxy, self.tls))

    def put_back(self, connection: Connection) -> None:
        """
        End one exchange: the connection back in the pool if it may be reused, else closed.
        """
        try:
            conn = connection.h11
            if (
                not self.closed
                and conn.our_state is h11.DONE
                and conn.their_state is h11.DONE
                and len(self._idle) < self.max_connections
            ):
                conn.start_next_cycle()
                connection.idle_since = trio.current_time()
                connection.reused = False
                self._idle.append(connection)
            else:
                connection.close()
        finally:
            self._slots.release()

    def discard(self, connection: Connection) -> None:
        """
        End one exchange that did not finish: close its connection now.
        """
        try:
            connection.close()
        finally:
            self._slots.release()

    def close(self) -> None:
        """
        Close the idle connections; those in use close as their exchanges end.
        """
        self.closed = True
        while self._idle:
            self._idle.pop().close()
