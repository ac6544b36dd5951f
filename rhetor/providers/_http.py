"""
Rhetor's HTTP/1.1 client for upstream providers: h11 on trio streams, one pool per upstream.

Each backend owns one :class:`HttpClient` for its upstream's origin. It keeps
connections alive between calls in a bounded pool, bounds each phase of a call
(connect, write, read, the wait for a pooled connection), and reads replies as they
arrive: whole (:meth:`Response.read`) or chunk by chunk (:meth:`Response.receive`).
A connection goes back to the pool only when its exchange ended cleanly (request
sent, reply read to its end, both sides willing to keep it); a call that is
cancelled, broken or abandoned half-way closes its connection at once, synchronously,
so the upstream sees it close and nothing half-read is ever reused. An idle
connection that the upstream closed (or wrote to) meanwhile is dropped when it is
next taken, never used.

On plain TCP a request is written straight to the socket (``Connection.send_now``):
one that fits the socket's buffer, nearly every one, goes out with no wait; the
call then yields once, so that a nearby upstream's reply is usually there when it
is read (reading at once finds nothing and waits on the socket, which costs more
system calls than the yield), and the reply is read with no checkpoint when it has
arrived (``Connection.receive``). Over TLS, and for what a full buffer does not
take, trio's stream sends and waits as usual.

h11 was chosen over httpcore after measuring both under the same load
(``benchmarks/transport.py``): one keep-alive call cost about 240 µs with h11 on a
trio stream and about 600 µs through ``httpcore.AsyncConnectionPool``, and 16
concurrent callers got about five times the calls per second; the pool, timeouts and
checks here cost a fraction of bare h11's own time.

The pool of connections, and how they are opened (proxies, TLS), is
:mod:`rhetor.providers._pool`. Every failure is one of the transport's signals, drawn in
:mod:`rhetor.providers._connect` and translated in
:func:`rhetor.providers._calls.transport_error`.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import Sequence

import attrs
import h11
import trio
from h11._headers import Headers as h11_headers
from h11._headers import normalize_and_validate as h11_normalize

from rhetor.providers._connect import (
    ConnectFailed,
    Connection,
    ConnectionBroken,
    ConnectTimeout,
    DeadlineExceeded,
    Origin,
    ReadTimeout,
    ReplyTooLarge,
    Timeouts,
    TransportError,
    TransportTimeout,
    Unheard,
    WriteTimeout,
)
from rhetor.providers._pool import ConnectionPool

__all__ = ["MAX_REPLY_BYTES", "USER_AGENT", "HttpClient", "Response"]

# Every request's User-Agent.
USER_AGENT = "Rhetor (Tekton LLM gateway)"

# The largest whole reply (or error body) read into memory: no chat completion comes
# near it, and a hostile upstream cannot make Rhetor buffer more.
MAX_REPLY_BYTES = 32 * 1024 * 1024
_RECEIVE = 65536
# Distinct header sets whose validated form a client keeps (a backend sends a few):
# h11 checks every name and value against its grammar, a tenth of a relayed call's
# client time, so a set is checked once, not on every request.
_HEADER_SETS = 32

Headers = Sequence[tuple[str, str]]


_FRAMING = frozenset({b"content-length", b"transfer-encoding"})


def _checked(headers: Sequence[tuple[str, str]]) -> list[tuple[bytes, bytes, bytes]]:
    """``headers`` checked and normalised by h11: (name as given, lower-case name, value)."""
    return list(h11_normalize(list(headers))._full_items)


@attrs.define(eq=False)
class HttpClient:
    """
    A pooled HTTP/1.1 client for one upstream, ``base_url`` being its origin and base path.

    ``max_connections`` bounds the connections open at once, busy or idle. Proxies
    (``HTTP_PROXY`` and the rest) and ``SSL_CERT_FILE`` are read when the client is
    made, unless ``trust_env`` is False.

    Cancellation: a call cancelled at any point closes its connection at once.
    Error handling: every failure is a :class:`TransportError` subclass (above).
    """

    base_url: str
    timeouts: Timeouts = attrs.field(factory=Timeouts)
    max_connections: int = 64
    # Seconds an idle connection is kept: upstreams close theirs after a while, and a
    # request must not race a close.
    keepalive_expiry: float = 15.0
    trust_env: bool = True
    tls: ssl.SSLContext | None = None
    _origin: Origin = attrs.field(init=False)
    _pool: ConnectionPool = attrs.field(init=False)
    # The validated heads' fields by the caller's headers: host first, then theirs.
    _validated: dict[tuple[tuple[str, str], ...], list[tuple[bytes, bytes, bytes]]] = attrs.field(
        init=False, factory=dict
    )

    def __attrs_post_init__(self) -> None:
        self._origin = Origin.of(self.base_url)
        self._pool = ConnectionPool(
            self._origin,
            self.max_connections,
            self.keepalive_expiry,
            self.timeouts.pool,
            self.trust_env,
            self.tls,
        )
        self.tls = self._pool.tls

    @property
    def origin(self) -> Origin:
        """
        Where this client's requests go.
        """
        return self._origin

    @property
    def idle(self) -> int:
        """
        How many connections wait in the pool.
        """
        return self._pool.idle

    async def request(
        self,
        method: str,
        path: str,
        headers: Headers,
        body: bytes = b"",
        *,
        deadline: float = math.inf,
        whole: bool = False,
    ) -> Response:
        """
        Send one request to ``base path + path``; answer the response, its body unread.

        The caller must finish or close the response (:meth:`Response.read`,
        :meth:`Response.receive` to the end, or :meth:`Response.close`): until then it
        holds a connection. Headers are sent as given, after ``host`` (and
        ``content-length`` for a body); names are lower case. ``deadline`` (trio
        time) bounds the whole call on top of each phase's bound. ``whole`` reads
        the body too (at most :data:`MAX_REPLY_BYTES`, :class:`ReplyTooLarge`
        past that), under the same bounds, for :meth:`Response.read` to answer
        at once; the connection is then free when this returns.

        Error handling: :class:`TransportError` subclasses only. A reused connection
        that fails before the reply's first byte (the upstream closed it while it was
        idle, and never saw the request) is retried once on a fresh one.
        Cancellation: closes the connection; nothing is returned to the pool.
        """
        pool = self._pool
        if pool.closed:
            raise ConnectFailed("the client is closed")
        head = self._head(method, path, headers, body)
        await pool.acquire()
        try:
            for attempt in (1, 2):
                connection = pool.pooled()
                try:
                    return await self._exchange(connection, head, body, deadline, whole)
                except Unheard:
                    if connection is None or attempt == 2:
                        raise
            raise AssertionError("unreachable")  # pragma: no cover
        except BaseException:
            pool.release()
            raise

    def _head(self, method: str, path: str, headers: Headers, body: bytes) -> h11.Request:
        origin = self._origin
        target = origin.base_path + path
        framing = body or method in ("POST", "PUT", "PATCH")
        fields: list[tuple[str, str]] = []
        proxy = self._pool.proxy
        if proxy is not None and origin.scheme == "http":
            # A plain request goes to the proxy whole, its target in absolute form.
            target = f"http://{origin.authority}{target}"
            if proxy.authorization:
                fields.append(("proxy-authorization", proxy.authorization))
        try:
            checked = self._checked(tuple(headers))
            if checked is None:  # the caller's own framing headers: h11 checks them together
                length = [("content-length", str(len(body)))] if framing else []
                return h11.Request(
                    method=method,
                    target=target,
                    headers=[("host", origin.authority), *headers, *length, *fields],
                )
            if framing:
                checked = [*checked, (b"content-length", b"content-length", b"%d" % len(body))]
            if fields:
                checked = [*checked, *_checked(fields)]
            return h11.Request(method=method, target=target, headers=h11_headers(checked))
        except h11.LocalProtocolError as exc:
            raise ConnectFailed(f"the request cannot be sent: {exc}") from exc

    def _checked(
        self, headers: tuple[tuple[str, str], ...]
    ) -> list[tuple[bytes, bytes, bytes]] | None:
        """
        ``host`` and ``headers`` as h11 holds them, checked by h11 once per distinct set;
        None when they set the framing (``content-length``, ``transfer-encoding``).

        Error handling: ``h11.LocalProtocolError`` for a name or value h11 refuses.
        """
        checked = self._validated.get(headers)
        if checked is None:
            checked = _checked([("host", self._origin.authority), *headers])
            if any(name in _FRAMING for _, name, _ in checked):
                return None
            if len(self._validated) >= _HEADER_SETS:
                self._validated.clear()
            self._validated[headers] = checked
        return checked

    async def _exchange(
        self,
        connection: Connection | None,
        head: h11.Request,
        body: bytes,
        deadline: float,
        whole: bool,
    ) -> Response:
        """
        Connect if need be, send the request, read the reply's head (and its body when
        ``whole``): one cancel scope, whose deadline moves with each phase.
        """
        timeouts = self.timeouts
        phase: type[TransportTimeout] = ConnectTimeout
        response: Response | None = None
        with trio.CancelScope() as scope:
            try:
                if connection is None:
                    scope.deadline = min(deadline, trio.current_time() + timeouts.connect)
                    connection = await self._pool.open()
                conn = connection.h11
                data = conn.send(head)
                if body:
                    data += conn.send(h11.Data(data=body))
                data += conn.send(h11.EndOfMessage())
                phase = WriteTimeout
                # Nothing goes out for a call already cancelled (its client left).
                await trio.lowlevel.checkpoint_if_cancelled()
                try:
                    sent = connection.send_now(data)
                    if sent < len(data):  # the socket's buffer is full, or TLS: wait to send
                        scope.deadline = min(deadline, trio.current_time() + timeouts.write)
                        await connection.stream.send_all(memoryview(data)[sent:])
                    else:
                        # Let the upstream answer before reading: a read at once finds
                        # nothing and waits on the socket, which costs more system calls.
                        await trio.lowlevel.cancel_shielded_checkpoint()
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    raise Unheard(f"sending the request failed: {_reason(exc)}") from exc
                phase = ReadTimeout
                scope.deadline = min(deadline, trio.current_time() + timeouts.read)
                response = Response(self, connection)
                event = await response._next_event()
                if not isinstance(event, h11.Response):
                    raise ConnectionBroken(
                        f"the upstream answered {type(event).__name__}, not a response"
                    )
                response._start(event)
                if whole:
                    await response._read_whole(scope, deadline)
                return response
            except BaseException:
                if connection is not None:
                    connection.close()
                raise
        if connection is not None:
            connection.close()
        if trio.current_time() >= deadline:
            raise DeadlineExceeded("the call's deadline passed")
        raise phase(self._timed_out(phase))

    def _timed_out(self, phase: type[TransportTimeout]) -> str:
        if phase is ConnectTimeout:
            return f"connecting to {self._origin.authority} took over {self.timeouts.connect:g} s"
        if phase is WriteTimeout:
            return f"sending the request took over {self.timeouts.write:g} s"
        return f"the upstream sent nothing for {self.timeouts.read:g} s"

    async def aclose(self) -> None:
        """
        Close the idle connections; those in use close as their responses end.
        """
        self._pool.close()
        await trio.lowlevel.checkpoint()


@attrs.define(eq=False)
class Response:
    """
    One reply: its status and headers at once, its body as it is read.

    ``headers`` has lower-case names; a repeated header's values are joined with
    ``", "``. The body is read once, whole or in chunks, and ending it (reading it
    to its end, or :meth:`close`) frees the connection.
    """

    _client: HttpClient
    _connection: Connection
    status: int = 0
    reason: str = ""
    headers: dict[str, str] = attrs.field(factory=dict)
    # Invariant: True once the connection is put back or closed.
    _ended: bool = False
    # True once any byte of the reply arrived (a reused connection is then not retried).
    _heard: bool = False
    # The body, when it was read with the head (HttpClient.request's whole=True).
    _body: bytes | None = None

    async def _read_whole(self, scope: trio.CancelScope, deadline: float) -> None:
        """
        Read the body into ``_body``; ``scope`` bounds the silence between its pieces.
        """
        parts: list[bytes] = []
        size = 0
        read = self._client.timeouts.read
        while (data := await self._body_event()) is not None:
            size += len(data)
            if size > MAX_REPLY_BYTES:
                raise ReplyTooLarge(f"the reply ran past {MAX_REPLY_BYTES} bytes")
            parts.append(data)
            # The bound is on silence, not on the whole body.
            scope.deadline = min(deadline, trio.current_time() + read)
        self._body = parts[0] if len(parts) == 1 else b"".join(parts)

    def _start(self, event: h11.Response) -> None:
        self.status = event.status_code
        self.reason = event.reason.decode("latin-1")
        headers: dict[str, str] = {}
        for name, value in event.headers:
            key, text = name.decode("latin-1"), value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        self.headers = headers

    async def _next_event(self) -> h11.Event | type[h11.PAUSED]:
        """
        The next h11 event of the reply, receiving as needed; the caller bounds the time.
        """
        conn = self._connection.h11
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise ConnectionBroken(f"the reply broke off or is not HTTP/1.1: {exc}") from exc
            if event is not h11.NEED_DATA:
                return event  # type: ignore[return-value]
            try:
                data = await self._connection.receive(_RECEIVE)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                if not self._heard:
                    raise Unheard(f"the connection dropped: {_reason(exc)}") from exc
                raise ConnectionBroken(f"the connection dropped: {_reason(exc)}") from exc
            if data:
                self._heard = True
            elif not self._heard:
                raise Unheard("the connection closed before the reply began")
            conn.receive_data(data)

    async def _body_event(self) -> bytes | None:
        """
        The next piece of the body, or None at its end (the connection then put back).
        """
        while True:
            event = await self._next_event()
            if type(event) is h11.Data:
                return bytes(event.data)
            if type(event) is h11.EndOfMessage:
                self._ended = True
                self._client._pool.put_back(self._connection)
                return None
            if isinstance(event, h11.ConnectionClosed):
                raise ConnectionBroken("the connection closed mid-reply")

    async def receive(self, *, deadline: float = math.inf) -> bytes | None:
        """
        The next piece of the body; None at its end (and the connection is free again).

        Error handling: :class:`ConnectionBroken` when it breaks off, :class:`ReadTimeout`
        after the read bound's silence, :class:`DeadlineExceeded` past ``deadline``.
        Cancellation: closes the connection.
        """
        if self._ended:
            return None
        read = self._client.timeouts.read
        try:
            with trio.CancelScope(deadline=min(deadline, trio.current_time() + read)):
                return await self._body_event()
            raise self._timed_out(deadline)
        except BaseException:
            self.close()
            raise

    def _timed_out(self, deadline: float) -> TransportTimeout:
        if trio.current_time() >= deadline:
            return DeadlineExceeded("the call's deadline passed")
        return ReadTimeout(f"the upstream sent nothing for {self._client.timeouts.read:g} s")

    async def read(self, limit: int = MAX_REPLY_BYTES, *, deadline: float = math.inf) -> bytes:
        """
        The whole body (at most ``limit`` bytes; :class:`ReplyTooLarge` past that).

        Error handling and cancellation as :meth:`receive`'s.
        """
        if self._body is not None:
            body, self._body = self._body, None
            if len(body) > limit:
                raise ReplyTooLarge(f"the reply ran past {limit} bytes")
            return body
        parts: list[bytes] = []
        size = 0
        read = self._client.timeouts.read
        try:
            with trio.CancelScope(deadline=min(deadline, trio.current_time() + read)) as scope:
                while not self._ended:
                    data = await self._body_event()
                    if data is None:
                        return parts[0] if len(parts) == 1 else b"".join(parts)
                    size += len(data)
                    if size > limit:
                        raise ReplyTooLarge(f"the reply ran past {limit} bytes")
                    parts.append(data)
                    # The bound is on silence, not on the whole body.
                    scope.deadline = min(deadline, trio.current_time() + read)
                raise ConnectionBroken("the reply was already read")
            raise self._timed_out(deadline)
        except BaseException:
            self.close()
            raise

    async def drain(self, timeout: float) -> None:
        """
        Read and drop what is left of the body within ``timeout`` s, so the connection
        can be reused; close it if that fails or takes longer.
        """
        with trio.move_on_after(timeout):
            try:
                while await self.receive() is not None:
                    pass
            except TransportError:
                pass
        self.close()

    def close(self) -> None:
        """
        End the response now: an unfinished body's connection is closed, never reused.
        """
        if not self._ended:
            self._ended = True
            self._client._pool.discard(self._connection)

    async def aclose(self) -> None:
        """
        :meth:`close`, as an awaitable (it never blocks).
        """
        self.close()
        await trio.lowlevel.checkpoint()


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
