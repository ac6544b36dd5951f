"""
Refs: the only handle other code holds on an actor.

A ``Ref`` points at the actor's cell, not at an instance, so it stays valid across
restarts: a caller holding it reaches whichever incarnation is running.
"""

from __future__ import annotations

import math
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn

import anyio
import anyio.lowlevel
from anyio import BrokenResourceError, ClosedResourceError, WouldBlock
from anyio.streams.memory import MemoryObjectReceiveStream

from ._envelope import (
    ASK,
    ITEMS_EMPTY,
    ITEMS_ENDED,
    STREAM,
    TELL,
    Envelope,
    wait_generic,
    wait_trio,
)
from ._errors import ActorStopped, AskTimeout
from ._events import ActorStats
from ._specs import check_timeout

try:
    import trio
    from trio import current_time as trio_current_time
except ImportError:  # pragma: no cover - trio is optional
    trio = None  # type: ignore[assignment]
    trio_current_time = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from ._cell import ActorCell

__all__ = ["Ref"]


class Ref:
    """
    A handle on a named actor: ``tell``, ``ask`` and ``stream`` to it.
    """

    __slots__ = ("_cell", "name")

    def __init__(self, cell: ActorCell) -> None:
        self._cell = cell
        self.name = cell.name

    def __repr__(self) -> str:
        state = "alive" if self._cell.alive else "not running"
        return f"<Ref {self.name!r} {state}>"

    @property
    def alive(self) -> bool:
        """
        True while an incarnation of the actor is running.
        """
        return self._cell.alive

    def stats(self) -> ActorStats:
        """
        A snapshot of the actor's counters.
        """
        return self._cell.stats()

    async def tell(self, message: Any) -> None:
        """
        Send ``message`` without waiting for an answer.

        Waits only while the mailbox is full (backpressure); it does not checkpoint
        otherwise.

        Error handling: ``ActorStopped`` if the actor is stopped for good.
        """
        cell = self._cell
        envelope = Envelope(message, TELL)
        try:
            cell.mailbox.send_nowait(envelope)
        except WouldBlock:
            await cell.send_waiting(envelope, math.inf)
            return
        except (ClosedResourceError, BrokenResourceError):
            raise ActorStopped("the actor is stopped", name=self.name) from None
        if cell.parked is not None:
            cell.wake()

    def try_tell(self, message: Any) -> bool:
        """
        Send ``message`` without waiting at all: True if it is in the mailbox,
        False if the mailbox is full (nothing was sent).

        It never checkpoints, so it cannot be cancelled half-way; use it where a
        shielded ``tell`` would cost more than the common case needs (try this,
        and only fall back to a shielded ``tell`` when it answers False).

        Error handling: ``ActorStopped`` if the actor is stopped for good.
        """
        cell = self._cell
        try:
            cell.mailbox.send_nowait(Envelope(message, TELL))
        except WouldBlock:
            return False
        except (ClosedResourceError, BrokenResourceError):
            raise ActorStopped("the actor is stopped", name=self.name) from None
        if cell.parked is not None:
            cell.wake()
        return True

    async def ask(self, message: Any, *, timeout: float = 5.0) -> Any:
        """
        Send ``message`` and wait for the actor's answer, at most ``timeout`` seconds.

        Cancellation: cancelling the caller cancels the ask, down into the actor's
        handler if it is running it; the answer, if any, is discarded.

        Error handling: ``AskTimeout`` after the deadline; ``ActorDied`` (with the
        crash as ``__cause__``) if the actor died handling it; ``PoisonMessage`` if it
        crashed the actor twice; ``ActorStopped`` if the actor is stopped for good;
        an error type the actor lists in ``errors`` is raised as it is.
        """
        if timeout.__class__ is not float or not timeout >= 0.0:
            timeout = check_timeout(timeout, "timeout", name=self.name)
        cell = self._cell
        envelope = Envelope(message, ASK)
        if cell.fast:
            deadline = trio_current_time() + timeout
            try:
                cell.mailbox.send_nowait(envelope)
            except WouldBlock:
                await cell.send_waiting(envelope, deadline)
            except (ClosedResourceError, BrokenResourceError):
                raise ActorStopped("the actor is stopped", name=self.name) from None
            else:
                if cell.parked is not None:
                    cell.wake()
            answered = await wait_trio(envelope, deadline, timeout, cell.system.deadlines)
        else:
            deadline = anyio.current_time() + timeout
            try:
                cell.mailbox.send_nowait(envelope)
            except WouldBlock:
                await cell.send_waiting(envelope, deadline)
            except (ClosedResourceError, BrokenResourceError):
                raise ActorStopped("the actor is stopped", name=self.name) from None
            else:
                if cell.parked is not None:
                    cell.wake()
            answered = await wait_generic(envelope, deadline)
        if not answered:
            raise AskTimeout(f"no answer within {timeout} s", name=self.name)
        if envelope.error is not None:
            raise envelope.error
        return envelope.value

    def stream(
        self, message: Any, *, timeout: float = 5.0
    ) -> AbstractAsyncContextManager[StreamReader]:
        """
        Ask for a stream of items: ``async with ref.stream(m) as items: async for ...``.

        ``timeout`` is the deadline for each item. The producer waits until the reader
        takes each item (backpressure). Leaving the block early closes the producer.

        Error handling: as ``ask``, raised from the iteration; ``NotStreaming`` if the
        actor has no ``handle_stream``; ``ActorDied`` if it crashed mid-stream.
        """
        timeout = check_timeout(timeout, "timeout", name=self.name)
        return StreamReader(self._cell, message, timeout)


class StreamReader:
    """
    The reader's side of a streamed ask: an async context manager and async iterator.
    """

    def __init__(self, cell: ActorCell, message: Any, timeout: float) -> None:
        self._cell = cell
        self._timeout = timeout
        self._envelope = Envelope(message, STREAM)
        self._receive: MemoryObjectReceiveStream[Any] | trio.MemoryReceiveChannel[Any] | None = None
        self._finished = False

    async def __aenter__(self) -> StreamReader:
        # Buffer 0: the producer's send returns only when this reader takes the item.
        cell = self._cell
        send: Any
        receive: Any
        if cell.fast:
            send, receive = trio.open_memory_channel[Any](0)
        else:
            send, receive = anyio.create_memory_object_stream[Any](0)
        self._envelope.items = send
        self._envelope.delivered = False
        self._receive = receive
        try:
            cell.mailbox.send_nowait(self._envelope)
        except WouldBlock:
            await cell.send_waiting(self._envelope, anyio.current_time() + self._timeout)
        except (ClosedResourceError, BrokenResourceError):
            receive.close()
            raise ActorStopped("the actor is stopped", name=cell.name) from None
        else:
            if cell.parked is not None:
                cell.wake()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._envelope.abandon()
        if self._receive is not None:
            self._receive.close()

    def __aiter__(self) -> StreamReader:
        return self

    async def __anext__(self) -> Any:
        receive = self._receive
        if receive is None or self._finished:
            raise StopAsyncIteration
        # Fast path: a producer already waiting to hand over its next item needs
        # no deadline scope (entering one costs more than the hand-over). As in
        # trio's own channels: raise a pending cancellation first, then take the
        # item, then yield without raising so the item is never lost.
        await anyio.lowlevel.checkpoint_if_cancelled()
        try:
            item = receive.receive_nowait()
        except ITEMS_EMPTY:
            pass
        except ITEMS_ENDED:
            self._end()
        else:
            # The yield also lets the producer get its next item ready.
            await anyio.lowlevel.cancel_shielded_checkpoint()
            return item
        with anyio.move_on_after(self._timeout) as scope:
            try:
                return await receive.receive()
            except ITEMS_ENDED:
                pass
        if scope.cancelled_caught:
            raise AskTimeout(f"no item within {self._timeout} s", name=self._cell.name)
        self._end()

    def _end(self) -> NoReturn:
        """The producer closed the stream: raise its error, or StopAsyncIteration."""
        self._finished = True
        error = self._envelope.error
        if error is not None:
            raise error
        raise StopAsyncIteration
