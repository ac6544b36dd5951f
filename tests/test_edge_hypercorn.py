"""
Rhetor's adjustments to Hypercorn (rhetor.edge._hypercorn), over real sockets.

A small ASGI app on Hypercorn's trio worker, in the test's own trio run, with
the adjustments applied as ``rhetor serve`` applies them; the client is a raw
socket, so what is checked is exactly what goes on the wire. Real sockets run
on the real clock (see tests/helpers.py), so the keep-alive cases use a
half-second timeout and generous bounds.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import h11
import hypercorn.config
import hypercorn.protocol
import hypercorn.protocol.ws_stream
import hypercorn.trio.run
import hypercorn.trio.tcp_server
import pytest
import trio
from hypercorn.config import Config
from hypercorn.events import RawData
from hypercorn.protocol.events import Body, EndBody, Response
from hypercorn.trio import serve
from hypercorn.trio.worker_context import WorkerContext

import rhetor.edge._server  # noqa: F401  (importing it adjusts Hypercorn, as rhetor serve does)
from rhetor.edge._hypercorn import (
    WHOLE_REPLY,
    CoalescingH11Protocol,
    QuickSingleTask,
    QuickTCPServer,
    RFC6455Connection,
    WholeReplyStream,
    adjust_hypercorn,
    receive_nowait,
)

App = Callable[[Any, Any, Any], Awaitable[None]]


@asynccontextmanager
async def serving(
    app: App, keep_alive: float = 5.0, stopping: trio.Event | None = None
) -> AsyncIterator[int]:
    """Serve ``app`` on 127.0.0.1 with Hypercorn; yield its port. ``stopping`` set: it terminates."""
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.keep_alive_timeout = keep_alive
    config.graceful_timeout = 8.0  # past it Hypercorn cancels every connection itself

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await app(scope, receive, send)

    async with trio.open_nursery() as nursery:
        trigger = None if stopping is None else stopping.wait
        binds = await nursery.start(partial(serve, asgi, config, shutdown_trigger=trigger))
        yield int(binds[0].rsplit(":", 1)[1])
        nursery.cancel_scope.cancel()


async def whole(scope: Any, receive: Any, send: Any) -> None:
    """A reply with content-length: the request's path echoed."""
    while (await receive()).get("more_body"):
        pass
    body = scope["path"].encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Client:
    """HTTP/1.1 over one raw connection, read with h11."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)

    def post(self, parts: list[bytes], headers: list[tuple[str, str]]) -> bytes:
        """A POST's bytes, its body in ``parts`` (chunks, if ``headers`` say so), h11 moved on."""
        head = h11.Request(method="POST", target="/", headers=[("host", "t"), *headers])
        data = self.conn.send(head) or b""
        for part in parts:
            data += self.conn.send(h11.Data(data=part)) or b""
        return data + (self.conn.send(h11.EndOfMessage()) or b"")

    def request(self, path: str, method: str = "GET") -> bytes:
        """The request's bytes, h11 moved on as though they were sent."""
        data = self.conn.send(h11.Request(method=method, target=path, headers=[("host", "t")]))
        return (data or b"") + (self.conn.send(h11.EndOfMessage()) or b"")

    async def send(self, path: str, method: str = "GET") -> None:
        await self.stream.send_all(self.request(path, method))

    async def event(self) -> Any:
        while (event := self.conn.next_event()) is h11.NEED_DATA:
            self.conn.receive_data(await self.stream.receive_some(65536))
        return event

    async def reply(self) -> tuple[int, bytes]:
        head = await self.event()
        assert isinstance(head, h11.Response)
        body = b""
        while isinstance(event := await self.event(), h11.Data):
            body += event.data
        assert isinstance(event, h11.EndOfMessage)
        self.conn.start_next_cycle()
        return head.status_code, body


@asynccontextmanager
async def client(port: int) -> AsyncIterator[Client]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        yield Client(stream)
    finally:
        await stream.aclose()


def driven_protocol(send: Any, config: Config | None = None) -> CoalescingH11Protocol:
    """Rhetor's HTTP/1.1 protocol with no app or socket: a test drives its events, ``send`` gets its writes."""
    return CoalescingH11Protocol(
        None,  # type: ignore[arg-type]  (no app: the stream's events are driven here)
        config or Config(),
        WorkerContext(None),
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        False,
        None,
        None,
        send,
    )


def test_importing_the_server_adjusts_hypercorn() -> None:
    assert hypercorn.protocol.H11Protocol is CoalescingH11Protocol
    assert hypercorn.trio.tcp_server.TrioSingleTask is QuickSingleTask
    assert hypercorn.protocol.ws_stream.Connection is RFC6455Connection
    assert hypercorn.protocol.h11.HTTPStream is WholeReplyStream
    assert hypercorn.trio.run.TCPServer is QuickTCPServer


async def test_whole_replies_keep_alive_across_many_requests_on_one_connection() -> None:
    with trio.fail_after(20):
        async with serving(whole) as port, client(port) as c:
            for i in range(50):
                await c.send(f"/n{i}")
                assert await c.reply() == (200, f"/n{i}".encode())


async def test_pipelined_requests_are_answered_in_order() -> None:
    with trio.fail_after(20):
        async with serving(whole) as port, client(port) as c:
            # All five requests in one write, before any reply.
            raw = b"".join(b"GET /p%d HTTP/1.1\r\nhost: t\r\n\r\n" % i for i in range(5))
            await c.stream.send_all(raw)
            for i in range(5):
                c.request(f"/p{i}")  # h11 reads a reply only to a request it saw go out
                assert await c.reply() == (200, f"/p{i}".encode())


async def test_a_head_request_gets_the_head_alone_and_the_connection_goes_on() -> None:
    with trio.fail_after(20):
        async with serving(whole) as port, client(port) as c:
            await c.send("/h", "HEAD")
            head = await c.event()
            assert isinstance(head, h11.Response) and head.status_code == 200
            assert dict(head.headers)[b"content-length"] == b"2"
            assert isinstance(await c.event(), h11.EndOfMessage)
            c.conn.start_next_cycle()
            await c.send("/after")
            assert await c.reply() == (200, b"/after")


async def test_a_client_that_expects_100_continue_gets_it_before_sending_its_body() -> None:
    async def echo(scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        headers = [(b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    with trio.fail_after(20):
        async with serving(echo) as port, client(port) as c:
            headers = [("host", "t"), ("expect", "100-continue"), ("content-length", "5")]
            await c.stream.send_all(
                c.conn.send(h11.Request(method="POST", target="/e", headers=headers)) or b""
            )
            informational = await c.event()
            assert isinstance(informational, h11.InformationalResponse)
            assert informational.status_code == 100
            data = c.conn.send(h11.Data(data=b"hello")) or b""
            await c.stream.send_all(data + (c.conn.send(h11.EndOfMessage()) or b""))
            assert await c.reply() == (200, b"hello")


async def test_an_empty_whole_reply_is_sent_with_its_end() -> None:
    async def empty(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        headers = [(b"content-length", b"0")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    with trio.fail_after(20):
        async with serving(empty) as port, client(port) as c:
            for _ in range(3):
                await c.send("/empty")
                assert await c.reply() == (200, b"")


async def test_a_streamed_reply_sends_its_head_before_its_first_chunk() -> None:
    head_seen = trio.Event()

    async def streamed(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        start = {"type": "http.response.start", "status": 200, "headers": []}
        await send(start)
        await head_seen.wait()  # only the client, having read the head, lets the body go
        await send({"type": "http.response.body", "body": b"late", "more_body": False})

    with trio.fail_after(20):
        async with serving(streamed) as port, client(port) as c:
            await c.send("/s")
            head = await c.event()
            assert isinstance(head, h11.Response) and head.status_code == 200
            head_seen.set()
            data = await c.event()
            assert isinstance(data, h11.Data) and data.data == b"late"


async def test_an_app_that_fails_after_its_head_still_sends_the_head_then_closes() -> None:
    async def fails(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        headers = [(b"content-length", b"10")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        raise RuntimeError("the app broke mid-reply")

    with trio.fail_after(20):
        async with serving(fails) as port, client(port) as c:
            await c.send("/f")
            head = await c.event()
            assert isinstance(head, h11.Response) and head.status_code == 200
            with pytest.raises(h11.RemoteProtocolError):
                await c.event()  # the connection closed before the 10 bytes


async def test_an_idle_connection_is_closed_after_the_keep_alive_timeout() -> None:
    with trio.fail_after(20):
        async with serving(whole, keep_alive=0.5) as port, client(port) as c:
            await c.send("/a")
            assert await c.reply() == (200, b"/a")
            answered = trio.current_time()
            assert await c.stream.receive_some(1024) == b""  # the server closed it
            assert trio.current_time() - answered >= 0.45


async def test_the_keep_alive_timer_is_stopped_while_a_request_runs() -> None:
    async def slow(scope: Any, receive: Any, send: Any) -> None:
        await trio.sleep(1.2)  # over twice the keep-alive timeout
        await whole(scope, receive, send)

    with trio.fail_after(20):
        async with serving(slow, keep_alive=0.5) as port, client(port) as c:
            await c.send("/first")
            assert await c.reply() == (200, b"/first")
            await c.send("/second")  # the timer restarted after the first: still open
            assert await c.reply() == (200, b"/second")


class _Spawns(trio.abc.Instrument):
    """Counts the tasks spawned, by name."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.names.append(task.name)


async def test_the_keep_alive_timer_is_one_task_per_connection_however_many_requests() -> None:
    """A request moves the idle timer's deadline; it neither starts nor cancels a task for it."""
    spawns = _Spawns()
    with trio.fail_after(20):
        async with serving(whole, keep_alive=0.5) as port, client(port) as c:
            trio.lowlevel.add_instrument(spawns)
            try:
                for i in range(20):
                    await c.send(f"/n{i}")
                    assert await c.reply() == (200, f"/n{i}".encode())
                    await trio.sleep(0.02)  # idle between requests: the timer is armed
            finally:
                trio.lowlevel.remove_instrument(spawns)
            timers = [n for n in spawns.names if "QuickSingleTask" in n or "_run_in" in n]
            assert timers == []  # the watcher started with the connection, before these
            answered = trio.current_time()
            assert await c.stream.receive_some(1024) == b""  # still closed once idle 0.5 s
            assert trio.current_time() - answered >= 0.45


async def test_a_connection_the_client_closed_leaves_no_timer_behind() -> None:
    """The watcher ends when its connection closes, not at the keep-alive timeout."""
    ended = trio.Event()

    class Exits(trio.abc.Instrument):
        def task_exited(self, task: trio.lowlevel.Task) -> None:
            if task.name.endswith("QuickSingleTask._watch"):
                ended.set()

    instrument = Exits()
    with trio.fail_after(10):
        async with serving(whole, keep_alive=30.0) as port:
            trio.lowlevel.add_instrument(instrument)
            try:
                async with client(port) as c:
                    await c.send("/a")
                    assert await c.reply() == (200, b"/a")
                closed = trio.current_time()
                await ended.wait()
                assert trio.current_time() - closed < 2.0  # not the 30 s
            finally:
                trio.lowlevel.remove_instrument(instrument)


async def test_a_terminating_server_closes_an_idle_connection_at_once() -> None:
    """The watcher closes an idle connection when the server terminates, not at the timeout."""
    stopping = trio.Event()
    with trio.fail_after(10):
        async with serving(whole, keep_alive=30.0, stopping=stopping) as port, client(port) as c:
            await c.send("/a")
            assert await c.reply() == (200, b"/a")
            stopping.set()
            asked = trio.current_time()
            assert await c.stream.receive_some(1024) == b""
            assert trio.current_time() - asked < 2.0  # not the 30 s, nor the 8 s graceful timeout


async def test_a_stop_before_the_timer_task_starts_still_stops_it() -> None:
    async def action() -> None:
        await trio.sleep(math.inf)

    class Group:
        def __init__(self, nursery: trio.Nursery) -> None:
            self._nursery = nursery

    # The nursery ends only if no timer task is left waiting.
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            task = QuickSingleTask()
            await task.restart(Group(nursery), action)  # type: ignore[arg-type]
            await task.restart(Group(nursery), action)  # type: ignore[arg-type]
            await task.stop()  # neither spawned task has run yet


async def test_a_whole_reply_is_one_write_and_a_streamed_one_is_not_held() -> None:
    written: list[bytes] = []

    async def send(event: Any) -> None:
        if isinstance(event, RawData):
            written.append(event.data)

    protocol = driven_protocol(send)
    protocol.connection.receive_data(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
    protocol.connection.next_event()
    protocol.connection.next_event()
    await protocol.stream_send(
        Response(stream_id=1, headers=[(b"content-length", b"2")], status_code=200)
    )
    await protocol.stream_send(Body(stream_id=1, data=b"ok"))
    await protocol.stream_send(EndBody(stream_id=1))
    assert len(written) == 1
    assert written[0].startswith(b"HTTP/1.1 200 ") and written[0].endswith(b"\r\n\r\nok")

    written.clear()
    protocol.connection.start_next_cycle()
    protocol.connection.receive_data(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
    protocol.connection.next_event()
    protocol.connection.next_event()
    await protocol.stream_send(Response(stream_id=1, headers=[], status_code=200))
    assert len(written) == 1  # no content-length: a stream, its head written at once
    await protocol.stream_send(Body(stream_id=1, data=b"x"))
    await protocol.stream_send(EndBody(stream_id=1))
    assert written[1:] == [b"1\r\nx\r\n", b"0\r\n\r\n"]


async def whole_in_one(scope: Any, receive: Any, send: Any) -> None:
    """As ``whole``, sent as one WHOLE_REPLY message where the server offers it."""
    while (await receive()).get("more_body"):
        pass
    body = scope["path"].encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]
    if WHOLE_REPLY not in scope["extensions"]:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    await send({"type": WHOLE_REPLY, "status": 201, "headers": headers, "body": body})


async def test_a_whole_reply_message_is_one_write_with_hypercorns_head_and_keeps_alive() -> None:
    written: list[bytes] = []
    original = CoalescingH11Protocol._send_whole

    async def counted(self: CoalescingH11Protocol, event: Any) -> None:
        sends = self.send

        async def send(raw: Any) -> None:
            written.append(raw.data)
            await sends(raw)

        self.send = send  # type: ignore[method-assign]
        try:
            await original(self, event)
        finally:
            self.send = sends  # type: ignore[method-assign]

    with trio.fail_after(20), pytest.MonkeyPatch.context() as patch:
        patch.setattr(CoalescingH11Protocol, "_send_whole", counted)
        async with serving(whole_in_one) as port, client(port) as c:
            for i in range(20):
                await c.send(f"/w{i}")
                head = await c.event()
                assert isinstance(head, h11.Response) and head.status_code == 201
                names = {name for name, _ in head.headers}
                assert {b"date", b"server", b"content-type", b"content-length"} <= names
                data = await c.event()
                assert isinstance(data, h11.Data) and data.data == f"/w{i}".encode()
                assert isinstance(await c.event(), h11.EndOfMessage)
                c.conn.start_next_cycle()
    assert len(written) == 20  # head, body and end: one write each


async def test_a_whole_reply_past_the_keep_alive_limit_closes_the_connection() -> None:
    config = Config()
    protocol_sends: list[bytes] = []

    async def send(event: Any) -> None:
        if isinstance(event, RawData):
            protocol_sends.append(event.data)

    config.keep_alive_max_requests = 1
    protocol = driven_protocol(send, config)
    protocol.connection.receive_data(b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 0\r\n\r\n")
    protocol.connection.next_event()
    protocol.connection.next_event()
    protocol.keep_alive_requests = 1
    from rhetor.edge._hypercorn import _WholeResponse

    await protocol.stream_send(
        _WholeResponse(
            stream_id=1, status_code=200, headers=[(b"content-length", b"2")], body=b"ok"
        )
    )
    assert len(protocol_sends) == 1
    assert b"\r\nconnection: close\r\n" in protocol_sends[0].lower()
    assert protocol_sends[0].endswith(b"\r\n\r\nok")
    assert protocol.connection.our_state is h11.MUST_CLOSE


async def test_stock_hypercorn_offers_no_whole_reply_and_the_app_sends_two_messages() -> None:
    adjust_hypercorn(performance=False)
    try:
        assert hypercorn.protocol.h11.HTTPStream is not WholeReplyStream
        assert hypercorn.trio.run.TCPServer is not QuickTCPServer
        with trio.fail_after(20):
            async with serving(whole_in_one) as port, client(port) as c:
                await c.send("/stock")
                assert await c.reply() == (200, b"/stock")
    finally:
        adjust_hypercorn()


async def test_a_whole_reply_after_the_client_left_is_dropped_and_one_after_a_start_refused() -> (
    None
):
    from hypercorn.protocol.events import Request, StreamClosed
    from hypercorn.utils import UnexpectedMessageError

    sent: list[Any] = []

    async def send(event: Any) -> None:
        sent.append(event)

    class Group:
        async def spawn_app(self, *args: Any) -> Any:
            async def app_put(message: Any) -> None:
                pass

            return app_put

    def stream() -> WholeReplyStream:
        made = WholeReplyStream(
            None,  # type: ignore[arg-type]
            Config(),
            WorkerContext(None),
            Group(),  # type: ignore[arg-type]
            False,
            None,
            None,
            send,
            1,
        )
        return made

    reply = {
        "type": WHOLE_REPLY,
        "status": 200,
        "headers": [(b"content-length", b"2")],
        "body": b"ok",
    }
    request = Request(
        stream_id=1, headers=[], http_version="1.1", method="POST", raw_path=b"/", state={}
    )
    left = stream()
    await left.handle(request)
    await left.handle(StreamClosed(stream_id=1))
    await left.app_send(reply)  # type: ignore[arg-type]
    assert sent == []  # nothing sent, nothing raised

    started = stream()
    await started.handle(request)
    await started.app_send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    with pytest.raises(UnexpectedMessageError):
        await started.app_send(reply)  # type: ignore[arg-type]


async def test_a_small_body_is_queued_with_its_request_and_taken_without_waiting() -> None:
    """The app finds the whole body queued when it starts: receive_nowait takes it, no await."""
    taken: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while not taken or taken[-1]["more_body"]:
            taken.append(receive_nowait(receive))
        with pytest.raises(trio.WouldBlock):
            receive_nowait(receive)
        body = b"".join(event["body"] for event in taken)
        headers = [(b"content-length", b"%d" % len(body))]
        await send({"type": WHOLE_REPLY, "status": 200, "headers": headers, "body": body})

    async with serving(app) as port, client(port) as c:
        await c.stream.send_all(c.post([b"hello"], [("content-length", "5")]))
        assert await c.reply() == (200, b"hello")
    assert taken == [
        {"type": "http.request", "body": b"hello", "more_body": True},
        {"type": "http.request", "body": b"", "more_body": False},
    ]


async def test_more_body_parts_than_the_apps_queue_holds_arrive_whole_and_in_order() -> None:
    """A slow app and 40 chunks at once: the queue (10) fills, the rest wait for room, none is lost."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await trio.sleep(0.3)  # the whole request is parsed and queued meanwhile
        parts = []
        while True:
            event = await receive()
            parts.append(event["body"])
            if not event["more_body"]:
                break
        body = b"".join(parts)
        headers = [(b"content-length", b"%d" % len(body))]
        await send({"type": WHOLE_REPLY, "status": 200, "headers": headers, "body": body})

    chunks = [b"%02d," % i for i in range(40)]
    async with serving(app) as port, client(port) as c:
        with trio.fail_after(10):
            await c.stream.send_all(c.post(chunks, [("transfer-encoding", "chunked")]))
            assert await c.reply() == (200, b"".join(chunks))


async def test_a_client_that_leaves_is_queued_for_the_app_as_a_disconnect() -> None:
    """After the body, the app waiting on receive() is told http.disconnect when the client closes."""
    seen: list[str] = []
    told = trio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        seen.append((await receive())["type"])
        told.set()

    async with serving(app) as port:
        async with client(port) as c:
            await c.stream.send_all(b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n\r\nhi")
            await trio.sleep(0.1)
        with trio.fail_after(5):
            await told.wait()
    assert seen == ["http.disconnect"]


async def big_reply(scope: Any, receive: Any, send: Any) -> None:
    """A reply far larger than a socket's buffer: 8 MB of a repeating, numbered pattern."""
    while (await receive()).get("more_body"):
        pass
    body = b"".join(b"%07d\n" % i for i in range(1_000_000))
    headers = [(b"content-length", b"%d" % len(body))]
    await send({"type": WHOLE_REPLY, "status": 200, "headers": headers, "body": body})


async def test_a_reply_larger_than_the_socket_takes_at_once_arrives_whole_and_in_order() -> None:
    """The socket takes part of an 8 MB write at once; the rest goes Hypercorn's way, after it."""
    expected = b"".join(b"%07d\n" % i for i in range(1_000_000))
    async with serving(big_reply) as port, client(port) as c:
        with trio.fail_after(20):
            await c.send("/big")
            await trio.sleep(0.3)  # the client reads late: the socket's buffer fills
            assert await c.reply() == (200, expected)
            await c.send("/again")  # and the connection goes on
            assert await c.reply() == (200, expected)


async def test_a_write_to_a_connection_the_client_reset_closes_it_and_the_server_goes_on() -> None:
    """A client that resets its connection before its reply: no error escapes, others are served."""
    import socket as stdlib_socket
    import struct

    release = trio.Event()

    async def late(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/late":
            await release.wait()
        await whole(scope, receive, send)

    async with serving(late) as port:
        with trio.fail_after(20):
            async with client(port) as c:
                await c.send("/late")
                await trio.sleep(0.2)
                # SO_LINGER 0: the close sends a reset, not a FIN.
                c.stream.socket.setsockopt(
                    stdlib_socket.SOL_SOCKET, stdlib_socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            await trio.sleep(0.2)
            release.set()
            await trio.sleep(0.2)
            async with client(port) as c:
                await c.send("/after")
                assert await c.reply() == (200, b"/after")


async def test_with_a_read_timeout_set_a_silent_connection_is_closed_as_hypercorn_does() -> None:
    """read_timeout is Hypercorn's own path: a connection that sends nothing for it is closed."""
    config_read_timeout = 0.3

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await whole(scope, receive, send)

    original = Config.read_timeout
    Config.read_timeout = config_read_timeout  # type: ignore[assignment]
    try:
        async with serving(app, keep_alive=60) as port, client(port) as c:
            with trio.fail_after(10):
                await c.send("/one")
                assert await c.reply() == (200, b"/one")
                assert await c.stream.receive_some(100) == b""  # closed by the read timeout
    finally:
        Config.read_timeout = original  # type: ignore[assignment]


async def test_a_write_that_the_socket_refuses_tells_the_protocol_the_connection_closed() -> None:
    """A broken connection (its peer gone) makes a write fail: the protocol is told Closed, as Hypercorn does."""
    from hypercorn.events import Closed

    ours, theirs = trio.socket.socketpair()
    told: list[Any] = []

    class Protocol:
        async def handle(self, event: Any) -> None:
            told.append(event)

    server = QuickTCPServer(
        None,  # type: ignore[arg-type]  (no app: only its writes are driven here)
        Config(),
        WorkerContext(None),
        None,  # type: ignore[arg-type]
        trio.SocketStream(ours),  # type: ignore[arg-type]
    )
    server.protocol = Protocol()  # type: ignore[assignment]
    try:
        await server.protocol_send(RawData(data=b"first"))
        assert await theirs.recv(100) == b"first"  # written at once
        theirs.close()
        with trio.fail_after(5):
            while not told:  # the first write after the peer left may still be taken
                await server.protocol_send(RawData(data=b"x" * 1000))
        assert [type(event) for event in told] == [Closed]
    finally:
        ours.close()
        theirs.close()


def test_the_server_headers_are_made_once_a_second_and_carry_that_seconds_date(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A whole reply's date, server and alt-svc headers: Hypercorn's own, remade when the second changes."""
    from email.utils import parsedate_to_datetime

    import rhetor.edge._hypercorn as adjusted

    config = Config()
    now = [1_800_000_000.25]
    monkeypatch.setattr(adjusted.time, "time", lambda: now[0])
    monkeypatch.setattr(hypercorn.config, "time", lambda: now[0])  # its own import of time()
    first = adjusted._server_headers(config)
    assert first is adjusted._server_headers(config)  # the same second: made once
    assert dict(first)[b"server"] == b"hypercorn-h11"
    assert parsedate_to_datetime(dict(first)[b"date"].decode()).timestamp() == 1_800_000_000
    now[0] = 1_800_000_001.0
    second = adjusted._server_headers(config)
    assert parsedate_to_datetime(dict(second)[b"date"].decode()).timestamp() == 1_800_000_001
    other = Config()
    other.include_server_header = False
    assert b"server" not in dict(adjusted._server_headers(other))  # another config: its own
