"""
Rhetor's adjustments to Hypercorn's connection server: its writes and reads, its keep-alive timer.

Two of the module-level names that :func:`rhetor.edge._hypercorn.adjust_hypercorn`
replaces (see that module for all five and why): :class:`QuickTCPServer` and
:class:`QuickSingleTask`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Awaitable, Callable
from typing import Any

import hypercorn.trio.tcp_server
import trio
from hypercorn.events import Closed, RawData
from hypercorn.events import Event as HypercornEvent
from hypercorn.typing import TaskGroup

__all__ = ["QuickSingleTask", "QuickTCPServer"]


class QuickTCPServer(hypercorn.trio.tcp_server.TCPServer):
    """
    Hypercorn's connection server, writing at once when it can and timing reads only when asked.

    - **Writes.** Hypercorn takes the connection's send lock, enters a shielded
      cancel scope and awaits ``send_all`` for every write. Here, when no other
      write is under way and the connection is plain TCP, the bytes go to the
      socket there and then, with no lock, scope or context switch. Whatever
      the socket does not take at once (its buffer is full) goes Hypercorn's
      way, after them and in order, as does every write over TLS.
    - **Reads.** Hypercorn enters ``fail_after(read_timeout or inf)`` around
      every read, a cancel scope even when no ``read_timeout`` is set; here
      only when one is.
    """

    async def protocol_send(self, event: HypercornEvent) -> None:
        stream: Any = self.stream  # typed as TLS by Hypercorn; plain TCP too
        if (
            type(event) is RawData
            and type(stream) is trio.SocketStream
            and not self.send_lock.locked()
        ):
            data = event.data
            try:
                sent = os.write(stream.socket.fileno(), data)
            except BlockingIOError:
                sent = 0
            except OSError:
                # As Hypercorn's on a broken or closed connection.
                await self.protocol.handle(Closed())
                return
            if sent == len(data):
                return
            event = RawData(data=data[sent:])
        await super().protocol_send(event)

    async def _read_data(self) -> None:
        if self.config.read_timeout is not None:
            await super()._read_data()
            return
        stream = self.stream
        while True:
            try:
                data = await stream.receive_some(_MAX_RECV)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                break
            await self.protocol.handle(RawData(bytes(data)))
            if data == b"":
                break
        await self.protocol.handle(Closed())


_MAX_RECV: int = getattr(hypercorn.trio.tcp_server, "MAX_RECV", 2**16)


async def _run_in(scope: trio.CancelScope, action: Callable[[], Awaitable[None]]) -> None:
    with scope:
        await action()


class QuickSingleTask:
    """
    Hypercorn's ``SingleTask`` for a connection's idle timer: re-armed, not respawned.

    Hypercorn restarts the timer (``TCPServer._idle_timeout``: wait up to
    ``keep_alive_timeout`` for the server to terminate, then close the
    connection) each time the connection goes idle, and stops it when a
    request arrives: a new task and a cancelled one for every request. For
    that action this keeps one watcher task per connection instead, asleep
    in a cancel scope. Each restart and each stop sets its deadline to
    ``keep_alive_timeout`` from now; the scope itself moves only to an
    earlier deadline (a terminating server's), and a watcher that wakes
    before its deadline sleeps on. A request then costs no task and no
    deadline change. The watcher closes the connection as the action would:
    when the deadline passes while idle, or at once when the server
    terminates while it is idle. It ends without closing anything, as the
    stopped task would have, when the server terminates or the deadline
    passes while a request runs (a long one, a WebSocket); the next restart
    starts another, which closes at once if the server is terminating. It
    also ends when the connection closes (``CoalescingH11Protocol`` tells it),
    so it never holds a closed connection open. Any other action runs as
    before, in a task that a restart or a stop cancels.

    Needs no lock: neither method awaits, so in trio each runs whole.
    """

    def __init__(self) -> None:
        # Any other action: the cancel scope of its task (made before the task runs).
        self._handle: trio.CancelScope | None = None
        # The idle timer's watcher: whether it runs; the scope it waits in now;
        # when it next looks; whether a request runs (stopped) or the connection idles.
        self._watching = False
        self._waiting: trio.CancelScope | None = None
        self._deadline = math.inf
        self._busy = False
        self._keep_alive = math.inf
        # Set once the connection has closed: the watcher ends, with nothing to close.
        self._closed = False

    async def restart(self, task_group: TaskGroup, action: Callable[[], Awaitable[None]]) -> None:
        nursery: Any = task_group._nursery  # type: ignore[attr-defined]
        server = getattr(action, "__self__", None)
        if getattr(action, "__func__", None) is not _IDLE_TIMEOUT or server is None:
            if self._handle is not None:
                self._handle.cancel()
            self._handle = scope = trio.CancelScope()
            nursery.start_soon(_run_in, scope, action)
            return
        self._keep_alive = server.config.keep_alive_timeout
        terminating = server.context.terminated.is_set()
        self._busy = False
        self._move(trio.current_time() + (0.0 if terminating else self._keep_alive))
        if not self._watching and not self._closed:
            self._watching = True
            protocol: Any = getattr(getattr(server, "protocol", None), "protocol", None)
            if hasattr(protocol, "on_closed"):  # Rhetor's CoalescingH11Protocol
                protocol.on_closed = self._connection_closed
            nursery.start_soon(self._watch, server)

    async def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = None
        if self._watching:
            self._busy = True
            self._move(trio.current_time() + self._keep_alive)

    def _connection_closed(self) -> None:
        self._closed = True
        if self._waiting is not None:
            self._waiting.cancel()

    def _move(self, deadline: float) -> None:
        # Only an earlier deadline moves the watcher's scope (a terminating
        # server's). A later one waits until the watcher wakes at the old one,
        # sees it is not due, and sleeps on: once per keep-alive period, not
        # twice a request.
        self._deadline = deadline
        waiting = self._waiting
        if waiting is not None and deadline < waiting.deadline:
            waiting.deadline = deadline

    async def _watch(self, server: Any) -> None:
        terminated = server.context.terminated
        try:
            while True:
                with trio.CancelScope(deadline=self._deadline) as waiting:
                    self._waiting = waiting
                    await terminated.wait()
                self._waiting = None
                expired = trio.current_time() >= self._deadline
                if self._closed or (self._busy and (expired or terminated.is_set())):
                    # Closed: the connection's own close follows. Busy: a stop
                    # would have ended the timer; a restart starts another.
                    return
                if expired or terminated.is_set():
                    break
        finally:
            self._waiting = None
            self._watching = False
        with trio.CancelScope(shield=True):
            await server._initiate_server_close()


# The action whose task QuickSingleTask replaces with a re-armed watcher.
_IDLE_TIMEOUT = getattr(hypercorn.trio.tcp_server.TCPServer, "_idle_timeout", None)
