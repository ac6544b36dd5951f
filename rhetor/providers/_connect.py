"""
Connections to an upstream: opening them (TCP, TLS with the system or certifi trust
store, HTTP proxies from the environment), what the pool keeps of each, and the
transport's signals.

:mod:`rhetor.providers._http` pools what :func:`open_stream` opens. Nothing here reads
or writes HTTP messages but a proxy's ``CONNECT``.

The transport's signals, which :func:`rhetor.providers._calls.transport_error`
translates (they never reach a Rhetor caller as they are)::

    TransportError
    ├── ConnectFailed              no connection: DNS, refused, TLS, proxy
    ├── ConnectionBroken           dropped, or not HTTP/1.1, mid-exchange
    │   └── Unheard                ... before a byte of the reply
    ├── ReplyTooLarge              a whole reply over its size limit
    └── TransportTimeout           one phase took longer than its bound
        ├── DeadlineExceeded       the call's own deadline, whatever the phase
        ├── ConnectTimeout
        ├── WriteTimeout
        ├── ReadTimeout
        └── PoolTimeout

TLS uses the standard :mod:`ssl` module: ``SSL_CERT_FILE`` and/or ``SSL_CERT_DIR``,
when set, are the trust store (as OpenSSL's own tools read them); otherwise the
system's default store, or certifi's bundle where the system has none. Proxies come
from ``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY`` and ``NO_PROXY`` (either case,
read by :func:`urllib.request.getproxies_environment`), and must be ``http://``
proxies: plain requests go to them in absolute form, TLS ones through a
``CONNECT`` tunnel.
"""

from __future__ import annotations

import base64
import os
import select
import ssl
import urllib.parse
import urllib.request
from collections.abc import Mapping

import attrs
import h11
import trio

__all__ = [
    "ConnectFailed",
    "ConnectTimeout",
    "Connection",
    "ConnectionBroken",
    "DeadlineExceeded",
    "Origin",
    "PoolTimeout",
    "Proxy",
    "ReadTimeout",
    "ReplyTooLarge",
    "Stream",
    "Timeouts",
    "TransportError",
    "TransportTimeout",
    "Unheard",
    "WriteTimeout",
    "open_stream",
    "proxy_for",
    "trust_store",
]

Stream = trio.SocketStream | trio.SSLStream[trio.SocketStream]


class TransportError(Exception):
    """
    A failure of the connection under an HTTP exchange (the base of the transport's signals).

    The tree is drawn in this module's docstring.
    """


class ConnectFailed(TransportError):
    """
    No connection could be opened: DNS, refused, TLS handshake, or the proxy said no.
    """


class ConnectionBroken(TransportError):
    """
    The connection dropped, or the upstream broke HTTP/1.1, in the middle of an exchange.
    """


class Unheard(ConnectionBroken):
    """
    The connection failed before any byte of the reply: the upstream may not have the request.
    """


class ReplyTooLarge(TransportError):
    """
    A whole reply ran past the size it was allowed.
    """


class TransportTimeout(TransportError):
    """
    One phase of an exchange took longer than its bound (the subclass says which).
    """


class DeadlineExceeded(TransportTimeout):
    """The call's own deadline passed (whatever phase it was in)."""


class ConnectTimeout(TransportTimeout):
    """Opening the connection (TCP, proxy tunnel, TLS handshake) took too long."""


class WriteTimeout(TransportTimeout):
    """Sending the request took too long."""


class ReadTimeout(TransportTimeout):
    """The upstream sent nothing for longer than the read bound."""


class PoolTimeout(TransportTimeout):
    """Every pooled connection stayed busy for longer than the pool bound."""


@attrs.frozen
class Timeouts:
    """
    Seconds each phase of one call may take; each backend's call also has its own deadline.

    ``read`` bounds the silence between two pieces of a reply (a model may think
    for minutes before its first token, so it is generous); ``pool`` the wait for a
    free connection when all ``max_connections`` are busy.
    """

    connect: float = 10.0
    write: float = 30.0
    read: float = 600.0
    pool: float = 30.0


@attrs.define(eq=False)
class Connection:
    """
    One open connection and its h11 state; ``idle_since`` is when it was last put back.
    """

    stream: Stream
    h11: h11.Connection = attrs.field(factory=lambda: h11.Connection(h11.CLIENT))
    idle_since: float = 0.0
    reused: bool = False

    def send_now(self, data: bytes) -> int:
        """
        Write what the socket takes of ``data`` at once: how many bytes (0 over TLS).

        No wait and no checkpoint: a request that fits the socket's buffer (nearly
        all do) is sent without a context switch; the caller sends the rest with
        ``stream.send_all``, which waits.

        Error handling: ``OSError`` as the socket raises it (reset, broken, closed).
        """
        stream = self.stream
        if type(stream) is not trio.SocketStream:
            return 0
        try:
            return os.write(stream.socket.fileno(), data)
        except BlockingIOError:
            return 0

    async def receive(self, size: int) -> bytes:
        """
        Up to ``size`` bytes, waiting for them if none have arrived; b"" at the end.

        On plain TCP what has arrived already is taken with no checkpoint, and
        otherwise the socket is waited on until it is readable (a reply from an
        upstream nearby is often there by the time it is asked for).

        Error handling: ``OSError`` (and trio's resource errors over TLS).
        Cancellation: only while it waits.
        """
        stream = self.stream
        if type(stream) is not trio.SocketStream:
            return bytes(await stream.receive_some(size))
        socket = stream.socket
        while True:
            # Asked afresh each time: a socket closed meanwhile answers -1 (EBADF),
            # never a number the system has given to another socket since.
            try:
                return os.read(socket.fileno(), size)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(socket)

    def fileno(self) -> int:
        stream = self.stream
        socket = (
            stream.socket
            if isinstance(stream, trio.SocketStream)
            else stream.transport_stream.socket
        )
        return socket.fileno()

    def stale(self) -> bool:
        """
        True when the upstream closed this idle connection or wrote to it since.

        An idle HTTP/1.1 connection has nothing to say; readable means EOF, or bytes
        that belong to no request (a ``408`` before closing). Either way it is not
        safe to reuse.
        """
        try:
            poll = select.poll()
            poll.register(self.fileno(), select.POLLIN)
            return bool(poll.poll(0))
        except (OSError, ValueError):
            return True

    def close(self) -> None:
        """
        Close the socket now (no TLS close_notify: a half-read exchange has nothing to say).
        """
        stream = self.stream
        socket = (
            stream.socket
            if isinstance(stream, trio.SocketStream)
            else stream.transport_stream.socket
        )
        socket.close()


@attrs.frozen
class Origin:
    """
    Where requests go: scheme, host and port, and the path every request's path follows.
    """

    scheme: str
    host: str
    port: int
    base_path: str = ""

    @classmethod
    def of(cls, url: str) -> Origin:
        """
        The origin of ``http(s)://host[:port][/base]``; ValueError for anything else.
        """
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))

    @property
    def authority(self) -> str:
        """
        ``host:port`` as the Host header and a CONNECT target write it.
        """
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


@attrs.frozen
class Proxy:
    """
    An HTTP proxy: where it listens, and the ``Proxy-Authorization`` its URL's credentials make.
    """

    origin: Origin
    authorization: str | None = attrs.field(default=None, repr=False)


def proxy_for(origin: Origin, environ: Mapping[str, str] | None = None) -> Proxy | None:
    """
    The proxy the environment names for ``origin``, or None (none set, or NO_PROXY matches).

    Error handling: a proxy that is not ``http://`` raises ValueError naming its scheme.
    """
    env = os.environ if environ is None else environ
    proxies = _environment_proxies(env)
    url = proxies.get(origin.scheme) or proxies.get("all")
    if not url or _bypassed(origin.host, env):
        return None
    parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"only http:// proxies are supported, not {parts.scheme}://")
    authorization = None
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        authorization = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    return Proxy(Origin("http", parts.hostname, parts.port or 80), authorization)


def _environment_proxies(env: Mapping[str, str]) -> dict[str, str]:
    if env is os.environ:
        return urllib.request.getproxies_environment()
    found: dict[str, str] = {}
    for name, value in env.items():
        lowered = name.lower()
        if value and lowered.endswith("_proxy") and lowered != "no_proxy":
            found.setdefault(lowered[: -len("_proxy")], value)
    return found


def _bypassed(host: str, env: Mapping[str, str]) -> bool:
    """
    Whether NO_PROXY names ``host``: ``*``, the host itself, or a domain it is under.

    Entries may carry a port (ignored) or a leading dot; address ranges (CIDR) are
    not matched, only exact addresses.
    """
    no_proxy = env.get("no_proxy") or env.get("NO_PROXY") or ""
    host = host.lower().strip("[]")
    for entry in no_proxy.split(","):
        name = entry.strip().lower()
        if name.startswith("[") and "]" in name:
            name = name[1 : name.index("]")]
        elif name.count(":") == 1:
            name = name.partition(":")[0]
        name = name.lstrip(".")
        if name == "*" or (name and (host == name or host.endswith("." + name))):
            return True
    return False


def trust_store(environ: Mapping[str, str] | None = None) -> ssl.SSLContext:
    """
    A client TLS context that verifies upstreams against the trust store in force.

    ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` when set; else the system's default paths,
    when they hold certificates; else certifi's bundle. It offers ALPN ``http/1.1``.
    """
    env = os.environ if environ is None else environ
    cafile, capath = env.get("SSL_CERT_FILE") or None, env.get("SSL_CERT_DIR") or None
    if cafile or capath:
        context = ssl.create_default_context(cafile=cafile, capath=capath)
    elif _system_store_exists():
        context = ssl.create_default_context()
    else:
        import certifi  # only where the system has no store

        context = ssl.create_default_context(cafile=certifi.where())
    context.set_alpn_protocols(["http/1.1"])
    return context


def _system_store_exists() -> bool:
    paths = ssl.get_default_verify_paths()
    if paths.cafile and os.path.isfile(paths.cafile):
        return True
    return bool(paths.capath and os.path.isdir(paths.capath) and os.listdir(paths.capath))


async def open_stream(origin: Origin, proxy: Proxy | None, tls: ssl.SSLContext | None) -> Stream:
    """
    A connected stream to ``origin`` (through ``proxy``'s tunnel when it is TLS), handshake done.

    Error handling: raises :class:`ConnectFailed` for anything that stops it.
    Cancellation: the half-open connection is closed; the caller bounds the time.
    """
    target = proxy.origin if proxy is not None else origin
    try:
        stream = await trio.open_tcp_stream(target.host, target.port)
    except OSError as exc:
        raise ConnectFailed(f"cannot connect to {target.authority}: {_reason(exc)}") from exc
    try:
        if origin.scheme != "https":
            return stream
        if proxy is not None:
            await _tunnel(stream, origin, proxy)
        assert tls is not None, "an https origin has a TLS context"
        secured = trio.SSLStream(stream, tls, server_hostname=origin.host, https_compatible=True)
        try:
            await secured.do_handshake()
        except trio.BrokenResourceError as exc:
            cause = exc.__cause__ or exc
            raise ConnectFailed(
                f"TLS handshake with {origin.authority} failed: {_reason(cause)}"
            ) from exc
        return secured
    except BaseException:
        stream.socket.close()
        raise


async def _tunnel(stream: trio.SocketStream, origin: Origin, proxy: Proxy) -> None:
    """
    Ask ``proxy`` over ``stream`` for a tunnel to ``origin``; ConnectFailed unless it says 2xx.
    """
    conn = h11.Connection(h11.CLIENT)
    headers = [("host", origin.authority)]
    if proxy.authorization:
        headers.append(("proxy-authorization", proxy.authorization))
    request = h11.Request(method="CONNECT", target=origin.authority, headers=headers)
    try:
        await stream.send_all(conn.send(request) + conn.send(h11.EndOfMessage()))
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectFailed(f"the proxy {proxy.origin.authority} closed the connection")
    except (h11.ProtocolError, trio.BrokenResourceError, OSError) as exc:
        raise ConnectFailed(f"the proxy {proxy.origin.authority} failed: {_reason(exc)}") from exc
    if not 200 <= event.status_code < 300:
        raise ConnectFailed(
            f"the proxy {proxy.origin.authority} refused a tunnel to {origin.authority}:"
            f" {event.status_code} {event.reason.decode(errors='replace')}"
        )
    if conn.trailing_data[0]:
        raise ConnectFailed(f"the proxy {proxy.origin.authority} sent data into the tunnel")


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
