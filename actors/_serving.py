"""
Serving an actor's mailbox: take each message, run the actor's handler on it, answer it.

This is the half of an :class:`~actors._cell.ActorCell` that runs while an incarnation
serves; the cell (its state, sending, start, crash and stop) is in :mod:`actors._cell`.

The mailbox is read with ``receive_nowait`` only. When it is empty the actor parks
itself (``parked``) and whoever puts a message in wakes it; on trio that is a bare
``reschedule``, which is what makes an ask round trip cheap. An actor handles one
message at a time (``_serve_inline``), or up to its ``max_concurrency`` at once, each in
a task of its own (``_serve_concurrent``).
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

import anyio
from anyio import ClosedResourceError, EndOfStream, WouldBlock

from ._actor import Actor
from ._child import Child
from ._envelope import DROPPED, ITEMS_CLOSED, PENDING, STREAM, Envelope
from ._errors import ActorDied, ActorStopped, HandlerFailed, InvariantBroken, NotStreaming
from ._later import Later

with contextlib.suppress(ImportError):  # trio is optional; see ActorCell.fast
    import trio
    from trio.lowlevel import Abort, current_task, wait_task_rescheduled

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream

    from ._faults import Fault

__all__ = ["Serving"]

log = logging.getLogger("actors")

# What an actor's own code raises when its state is broken: never contained, always a
# crash, whatever the actor's ``contained`` types say.
_INVARIANT_BREAKS = (InvariantBroken, AssertionError)


def _contained(exc: BaseException, contained: tuple[type[Exception], ...]) -> bool:
    """
    Whether ``exc`` fails only its message: of a contained type and no invariant break.

    A group is contained only when every exception in it is.
    """
    if isinstance(exc, _INVARIANT_BREAKS):
        return False
    if isinstance(exc, BaseExceptionGroup):
        return all(_contained(inner, contained) for inner in exc.exceptions)
    return isinstance(exc, contained)


# An actor whose last few waits for mail were each shorter than _BUSY_WAIT counts as
# busy and keeps its handler cancel scope while it waits again (re-entering one costs
# about a context switch); a short burst followed by silence does not.
_BUSY_WAIT = 0.001
_BUSY_STREAK = 4


class Serving(Child):
    """
    The serving half of an actor's cell: its mailbox read, its handler run, each message answered.
    """

    __slots__ = (
        "_receive",
        "crash",
        "current",
        "failed",
        "fast",
        "fault",
        "handled",
        "in_flight",
        "parked",
        "redeliver",
        "stop_requested",
    )

    # The cell's state that serving reads and writes: ActorCell.__init__ sets it, and
    # says each field's invariant.
    fast: bool
    parked: Any
    fault: Fault | None
    handled: int
    failed: int
    redeliver: Envelope | None
    current: Envelope | None
    in_flight: set[Envelope] | None
    crash: tuple[Envelope | None, BaseException] | None
    stop_requested: bool
    _receive: MemoryObjectReceiveStream[Envelope]

    def __call__(self, raise_cancel: Any) -> Abort:
        """
        Trio's abort callback for a parked actor (see ``_serve_inline``).

        The cell itself is the callback, so a parked actor holds no bound method.
        """
        self.parked = None
        return Abort.SUCCEEDED

    async def _park(self) -> None:
        if self.fast:
            self.parked = current_task()
            await wait_task_rescheduled(self)
        else:
            event = anyio.Event()
            self.parked = event
            try:
                await event.wait()
            finally:
                if self.parked is event:
                    self.parked = None

    async def _next(self) -> Envelope | None:
        """
        The next message to handle, or None once the incarnation should stop.
        """
        while not self.stop_requested:
            envelope = self._take()
            if envelope is not None:
                return envelope
            if not self.stop_requested:
                await self._park()
        return None

    def _take(self) -> Envelope | None:
        """
        The next live message if one is waiting, else None (never waits).
        """
        while True:
            envelope = self.redeliver
            if envelope is not None:
                self.redeliver = None
            else:
                try:
                    envelope = self._receive.receive_nowait()
                except WouldBlock:
                    return None
                except (EndOfStream, ClosedResourceError):
                    # Closed for good under a running incarnation: stop serving.
                    self.stop_requested = True
                    return None
            if not envelope.state:
                return envelope

    async def _serve_inline(self, instance: Actor) -> None:
        # Hot loop: parking is written out here rather than calling _park, because
        # every frame on an idle actor's stack costs memory.
        errors = instance.errors
        contained = instance.contained
        fast = self.fast
        new_scope = trio.CancelScope if fast else anyio.CancelScope
        now = trio.current_time if fast else anyio.current_time
        # How many waits for mail in a row were short; from _BUSY_STREAK on the actor
        # counts as busy.
        streak = 0
        while not self.stop_requested:
            envelope = self._take()
            if envelope is None:
                if self.stop_requested:
                    return
                since = now()
                if fast:
                    self.parked = current_task()
                    await wait_task_rescheduled(self)
                else:
                    await self._park()
                streak = streak + 1 if now() - since < _BUSY_WAIT else 0
                continue
            # Handlers run in a cancel scope that an abandoned ask cancels. Entering one
            # costs about a context switch, so a busy actor keeps its scope while it
            # waits for mail; an actor that waited long leaves it before waiting again,
            # so an idle actor holds no scope (it would cost ~600 bytes). A scope that
            # an abandoned ask cancelled is left at once, so a cancel meant for one
            # handler never reaches the next.
            with new_scope() as scope:
                while not self.stop_requested:
                    if envelope is None:
                        envelope = self._take()
                        if envelope is None:
                            if self.stop_requested or streak < _BUSY_STREAK:
                                break
                            since = now()
                            if fast:
                                self.parked = current_task()
                                await wait_task_rescheduled(self)
                            else:
                                await self._park()
                            streak = streak + 1 if now() - since < _BUSY_WAIT else 0
                            continue
                    fault = self.fault
                    if fault is not None and fault.take_drop():
                        self._fault_used(fault)
                        envelope.state = DROPPED
                        envelope = None
                        continue
                    envelope.scope = scope
                    self.current = envelope
                    try:
                        if fault is not None:
                            await fault.apply()
                            self._fault_used(fault)
                        if envelope.kind == STREAM:
                            await self._produce(instance, envelope)
                        elif envelope.kind:
                            result = await instance.handle(envelope.message)
                            if type(result) is Later:
                                raise InvariantBroken("a Later needs max_concurrency > 1")
                            envelope.resolve(result)
                        else:
                            await instance.handle(envelope.message)
                    except Exception as exc:
                        if isinstance(exc, (errors, NotStreaming)):
                            envelope.fail(exc)
                        elif contained and _contained(exc, contained):
                            self._contain(envelope, exc)
                        else:
                            envelope.attempts += 1
                            self.crash = (envelope, exc)
                            self.current = envelope.scope = None
                            return
                    self.current = envelope.scope = None
                    envelope = None
                    self.handled += 1
                    if scope.cancel_called:
                        break
            if self.current is not None:
                self.current.scope = None
                self.current = None

    async def _serve_concurrent(self, instance: Actor) -> None:
        # Hot path: a slot count rather than a semaphore (whose acquire always
        # yields), and on trio a bare nursery and cancel scopes, not anyio's wrappers.
        limit = instance.max_concurrency
        immediate = instance.immediate
        in_flight = self.in_flight = set()
        slots = _Slots(limit, self.fast)
        opener = trio.open_nursery if self.fast else anyio.create_task_group
        async with opener() as handlers:
            while True:
                if len(in_flight) >= limit:
                    await slots.wait_for_room()
                    continue
                envelope = await self._next()
                if envelope is None:
                    break
                in_flight.add(envelope)
                if (
                    immediate
                    and type(envelope.message) in immediate
                    and envelope.kind != STREAM
                    and self.fault is None
                ):
                    if not self._handle_now(instance, envelope, in_flight, slots):
                        handlers.cancel_scope.cancel()
                        return
                    continue
                handlers.start_soon(self._handle_one, instance, envelope, slots, handlers)
        # An orderly stop: the messages answered Later are still in flight.
        while in_flight:
            await slots.wait_for_room()

    def _handle_now(
        self, instance: Actor, envelope: Envelope, in_flight: set[Envelope], slots: _Slots
    ) -> bool:
        """Answer ``envelope`` in the serving loop (``Actor.immediate``); False if the actor crashed."""
        try:
            result = instance.handle_now(envelope.message)
        except Exception as exc:
            if not self._failed(instance, envelope, exc):
                envelope.attempts += 1
                self.crash = (envelope, exc)
                return False
        else:
            if type(result) is Later:
                result._bind(envelope, self, in_flight, slots)
                return True
            envelope.resolve(result)
        in_flight.discard(envelope)
        self.handled += 1
        return True

    async def _handle_one(
        self,
        instance: Actor,
        envelope: Envelope,
        slots: _Slots,
        handlers: Any,
    ) -> None:
        crash: Exception | None = None
        later: Later | None = None
        try:
            with trio.CancelScope() if self.fast else anyio.CancelScope() as scope:
                envelope.scope = scope
                try:
                    fault = self.fault
                    if fault is not None:
                        if fault.take_drop():
                            self._fault_used(fault)
                            # Never answered: the asker meets its deadline.
                            envelope.state = DROPPED
                            return
                        await fault.apply()
                        self._fault_used(fault)
                    if envelope.kind == STREAM:
                        await self._produce(instance, envelope)
                    else:
                        result = await instance.handle(envelope.message)
                        if type(result) is Later:
                            later = result
                        else:
                            envelope.resolve(result)
                except Exception as exc:
                    if not self._failed(instance, envelope, exc):
                        crash = exc
                # As inline: a message answered with an error or a failure was handled.
                if crash is None and later is None:
                    self.handled += 1
        finally:
            envelope.scope = None
            in_flight = self.in_flight
            if later is not None and in_flight is not None:
                # Answered when the Later is: it stays in flight until then.
                later._bind(envelope, self, in_flight, slots)
            else:
                if in_flight is not None:
                    in_flight.discard(envelope)
                slots.freed()
                if crash is None and envelope.state == PENDING:
                    envelope.fail(self._interrupted())
        if crash is not None:
            if self.crash is None:
                envelope.attempts += 1
                self.crash = (envelope, crash)
                handlers.cancel_scope.cancel()
            else:
                died = ActorDied("the actor crashed handling the message", name=self.name)
                died.__cause__ = crash
                envelope.fail(died)

    def _failed(self, instance: Actor, envelope: Envelope, exc: Exception) -> bool:
        """
        Answer ``envelope`` with a handler's ``exc`` when it fails only that message.

        True for one of the actor's ``errors`` (the answer) or a contained failure;
        False when ``exc`` must crash the actor (nothing answered).
        """
        if isinstance(exc, (instance.errors, NotStreaming)):
            envelope.fail(exc)
            return True
        if instance.contained and _contained(exc, instance.contained):
            self._contain(envelope, exc)
            return True
        return False

    def _contain(self, envelope: Envelope, exc: Exception) -> None:
        """
        Fail only ``envelope``: log the handler's exception with its traceback, emit a
        ``failed`` event, count it, and answer its sender (if any) ``HandlerFailed``.
        """
        self.failed += 1
        # The message's type, never its content: a message may carry anything.
        kind = type(envelope.message).__name__
        log.error(
            "%s: handling a %s message failed; only that message fails",
            self.name,
            kind,
            exc_info=exc,
        )
        self.system.bus.emit("failed", self.name, exc)
        failure = HandlerFailed(
            f"handling a {kind} message failed: {type(exc).__name__}",
            name=self.name,
            boxed_type=type(exc),
        )
        failure.__cause__ = exc
        # A tell has nobody waiting; failing it just marks it ended.
        envelope.fail(failure)

    def _interrupted(self) -> ActorDied:
        if self.crash is None:
            return ActorStopped("stopped while handling the message", name=self.name)
        died = ActorDied("interrupted by a crash of the actor", name=self.name)
        died.__cause__ = self.crash[1]
        return died

    async def _produce(self, instance: Actor, envelope: Envelope) -> None:
        items = instance.handle_stream(envelope.message)
        send = envelope.items
        try:
            async for item in items:
                try:
                    await send.send(item)
                except ITEMS_CLOSED:
                    # The reader left: that is the end of this stream.
                    envelope.abandon()
                    return
                envelope.delivered = True
        finally:
            aclose = getattr(items, "aclose", None)
            if aclose is not None:
                await aclose()
        envelope.resolve(None)

    def _fault_used(self, fault: Fault) -> None:
        if fault.empty:
            self.system.faults.settle(self.name)


class _Slots:
    """
    Wakes a concurrent actor's loop when it was full and a handler finished.
    """

    __slots__ = ("_event", "_fast", "_limit")

    def __init__(self, limit: int, fast: bool) -> None:
        self._limit = limit
        self._fast = fast
        # Invariant: an unset event only while the loop waits for room.
        self._event: Any = None

    async def wait_for_room(self) -> None:
        self._event = trio.Event() if self._fast else anyio.Event()
        await self._event.wait()

    def freed(self) -> None:
        event = self._event
        if event is not None:
            self._event = None
            event.set()
