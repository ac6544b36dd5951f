"""
Actor cells: the persistent home of one named actor, and the loop that runs it.

The cell owns the mailbox (an anyio memory object stream), the counters and the ``Ref``;
they outlive every incarnation, so messages queued behind a crash reach the next one.

The mailbox is read with ``receive_nowait`` only. When it is empty the actor parks
itself (``parked``) and whoever puts a message in wakes it; on trio that is a bare
``reschedule``, which is what makes an ask round trip cheap.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import TYPE_CHECKING, Any, cast

import anyio
from anyio import BrokenResourceError, ClosedResourceError, EndOfStream, WouldBlock
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._actor import Actor
from ._child import Child, Parent
from ._envelope import DROPPED, ITEMS_CLOSED, PENDING, STREAM, Envelope
from ._errors import (
    ActorDied,
    ActorStopped,
    AskTimeout,
    HandlerFailed,
    InvalidSpec,
    InvariantBroken,
    NotStreaming,
    PoisonMessage,
)
from ._events import ActorStats
from ._faults import Fault
from ._ref import Ref

with contextlib.suppress(ImportError):  # trio is optional; see ActorCell.fast
    import trio
    from trio.lowlevel import Abort, current_task, reschedule, wait_task_rescheduled

if TYPE_CHECKING:
    from ._specs import ChildSpec
    from ._system import System

__all__ = ["ActorCell"]

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


class _AlreadyStarted:
    """
    Stands in for a task status once it has been used.
    """

    def started(self, value: object = None) -> None:
        """
        Do nothing: the start was already reported.
        """


_ALREADY_STARTED = cast(TaskStatus[BaseException | None], _AlreadyStarted())

# An actor whose last few waits for mail were each shorter than _BUSY_WAIT counts as
# busy and keeps its handler cancel scope while it waits again (re-entering one costs
# about a context switch); a short burst followed by silence does not.
_BUSY_WAIT = 0.001
_BUSY_STREAK = 4


class ActorCell(Child):
    """
    One named actor across all its incarnations.
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
        "mailbox",
        "mailbox_size",
        "parked",
        "redeliver",
        "ref",
        "stop_deadline",
        "stop_requested",
    )

    def __init__(self, spec: ChildSpec, system: System, parent: Parent) -> None:
        super().__init__(spec, system, parent)
        self.fast = system.fast
        self.mailbox_size = spec.mailbox_size or system.mailbox_size
        self.mailbox: MemoryObjectSendStream[Envelope]
        self._receive: MemoryObjectReceiveStream[Envelope]
        self.mailbox, self._receive = anyio.create_memory_object_stream[Envelope](self.mailbox_size)
        # Invariant: not None only while the actor waits on an empty mailbox.
        self.parked: Any = None
        self.fault: Fault | None = system.faults.for_name(self.name)
        self.ref = Ref(self)
        self.handled = 0
        # Messages whose handler failed and was contained (see Actor.contained).
        self.failed = 0
        # Delivered first to the next incarnation: the message its predecessor died on.
        self.redeliver: Envelope | None = None
        # Per incarnation.
        self.current: Envelope | None = None
        # Concurrent actors only: the messages their handler tasks are working on.
        self.in_flight: set[Envelope] | None = None
        # The message (if any) and exception the running incarnation crashed with.
        self.crash: tuple[Envelope | None, BaseException] | None = None
        self.stop_requested = False
        self.stop_deadline = math.inf

    def __repr__(self) -> str:
        return f"<ActorCell {self.name!r} incarnation={self.incarnation}>"

    # ---- counters -------------------------------------------------------------------

    def stats(self) -> ActorStats:
        """
        A snapshot of this actor's counters.
        """
        statistics = self._receive.statistics()
        depth = statistics.current_buffer_used + statistics.tasks_waiting_send
        return ActorStats(self.name, depth, self.handled, self.restarts, self.alive, self.failed)

    # ---- sending --------------------------------------------------------------------

    def wake(self) -> None:
        """
        Wake the actor if it is parked on an empty mailbox.
        """
        parked = self.parked
        if parked is not None:
            self.parked = None
            if self.fast:
                reschedule(parked)
            else:
                parked.set()

    async def send_waiting(self, envelope: Envelope, deadline: float) -> None:
        """
        Put ``envelope`` in a full mailbox, waiting for room until ``deadline``.

        Error handling: ``ActorStopped`` if the actor is stopped for good;
        ``AskTimeout`` if the deadline passes first.
        """
        try:
            with anyio.CancelScope(deadline=deadline) as scope:
                await self.mailbox.send(envelope)
        except (ClosedResourceError, BrokenResourceError):
            envelope.abandon()
            raise ActorStopped("the actor is stopped", name=self.name) from None
        except BaseException:
            envelope.abandon()
            raise
        finally:
            self.wake()
        if scope.cancelled_caught:
            envelope.abandon()
            raise AskTimeout("no room in the mailbox before the deadline", name=self.name)

    # ---- lifecycle ------------------------------------------------------------------

    def prepare_start(self) -> None:
        if self.closed:
            self.closed = False
            self.mailbox, self._receive = anyio.create_memory_object_stream(self.mailbox_size)
        self.settle_crash(restart=True)

    def request_stop(self, deadline: float | None) -> None:
        self.stop_requested = True
        if deadline is not None:
            self.stop_deadline = deadline
        self.wake()

    def settle_crash(self, *, restart: bool) -> None:
        """
        Decide the fate of the message the last incarnation crashed on.

        Redelivered once if the actor restarts; failed with ``PoisonMessage`` if it
        crashed two incarnations; failed with ``ActorDied`` if there is no restart.
        """
        crash = self.crash
        if crash is None:
            return
        self.crash = None
        envelope, cause = crash
        if envelope is None or envelope.state != PENDING:
            return
        if envelope.attempts >= 2:
            poison = PoisonMessage("the message crashed the actor twice", name=self.name)
            poison.__cause__ = cause
            envelope.fail(poison)
        elif restart and not (envelope.kind == STREAM and envelope.delivered):
            self.redeliver = envelope
        else:
            died = ActorDied("the actor crashed handling the message", name=self.name)
            died.__cause__ = cause
            envelope.fail(died)

    def close(self, cause: BaseException | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.settle_crash(restart=False)
        self.mailbox.close()
        pending: list[Envelope] = []
        if self.redeliver is not None:
            pending.append(self.redeliver)
            self.redeliver = None
        while True:
            try:
                pending.append(self._receive.receive_nowait())
            except (WouldBlock, EndOfStream, ClosedResourceError):
                break
        self._receive.close()
        for envelope in pending:
            envelope.fail(self._gone(cause))
        if self.started_once:
            self.system.bus.emit("stopped", self.name, cause)

    def _gone(self, cause: BaseException | None) -> ActorDied:
        if cause is None:
            return ActorStopped("the actor stopped", name=self.name)
        died = ActorDied("the actor died", name=self.name)
        died.__cause__ = cause
        return died

    def _instantiate(self) -> Actor:
        factory = self.spec.factory
        instance = factory(*self.spec.args, **self.spec.kwargs)  # type: ignore[operator]
        if not isinstance(instance, Actor):
            raise InvalidSpec(f"the factory made {instance!r}, not an Actor", name=self.name)
        if instance.max_concurrency < 1:
            raise InvalidSpec("max_concurrency must be 1 or more", name=self.name)
        for kind in instance.contained:
            # Cancellation and other BaseExceptions must always propagate.
            if not (isinstance(kind, type) and issubclass(kind, Exception)):
                raise InvalidSpec(
                    f"contained lists {kind!r}; only Exception subclasses can be contained",
                    name=self.name,
                )
        instance.ref = self.ref
        instance.name = self.name
        instance.system = self.system
        instance._cell = self
        return instance

    async def run(self, *, task_status: TaskStatus[BaseException | None]) -> None:
        """
        Run one incarnation: create the instance, start it, serve, stop.

        Cancellation: the incarnation's kill scope (the supervisor's shutdown timeout)
        or the supervisor's task group ending cancels it; whatever it was handling is
        failed with ``ActorStopped``.

        Error handling: a crash ends the incarnation and is reported to the parent.
        """
        self.incarnation_began()
        incarnation = self.incarnation
        self.stop_requested = False
        self.stop_deadline = math.inf
        self.crash = None
        reported = served = False
        try:
            try:
                instance = self._instantiate()
            except Exception as exc:
                reported = True
                task_status.started(exc)
                return
            try:
                async with anyio.create_task_group() as task_group:
                    # The actor's own task group doubles as its kill switch: one cancel
                    # scope less per actor.
                    self.kill_scope = task_group.cancel_scope
                    instance.task_group = task_group
                    try:
                        await instance.started()
                    except Exception as exc:
                        reported = True
                        task_status.started(exc)
                        task_group.cancel_scope.cancel()
                        return
                    reported = served = self.alive = True
                    task_status.started(None)
                    # trio's task status keeps the start-up nursery's bookkeeping
                    # alive; an idle actor should not carry it around.
                    task_status = _ALREADY_STARTED
                    if instance.max_concurrency == 1:
                        await self._serve_inline(instance)
                    else:
                        await self._serve_concurrent(instance)
                    if self.crash is None:
                        await self._stopping(instance)
                    task_group.cancel_scope.cancel()
            except BaseExceptionGroup as group:
                # A task in the actor's own task group crashed: the actor crashed.
                _, crashes = group.split(anyio.get_cancelled_exc_class())
                if crashes is None:
                    raise
                crash = crashes.exceptions[0] if len(crashes.exceptions) == 1 else crashes
                if not reported:
                    reported = True
                    task_status.started(crash)
                    return
                if self.crash is None:
                    self.crash = (None, crash)
            if not reported:
                reported = True
                task_status.started(ActorStopped("stopped while starting", name=self.name))
        finally:
            cause = self.crash[1] if self.crash is not None else None
            self._fail_in_flight()
            self.incarnation_ended()
        if served:
            if cause is not None:
                self.system.bus.emit("crashed", self.name, self._noted(cause))
            self.parent.child_exited(self, incarnation, cause)

    def _noted(self, cause: BaseException) -> BaseException:
        # The crashed event of a message's second crash says it is poison.
        if self.crash is not None and self.crash[0] is not None and self.crash[0].attempts >= 2:
            poison = PoisonMessage("the message crashed the actor twice; dropped", name=self.name)
            poison.__cause__ = cause
            return poison
        return cause

    def _fail_in_flight(self) -> None:
        crashed_on = self.crash[0] if self.crash is not None else None
        interrupted = [*self.in_flight] if self.in_flight is not None else []
        if self.current is not None:
            interrupted.append(self.current)
        self.current = None
        self.in_flight = None
        for envelope in interrupted:
            if envelope is not crashed_on and not envelope.state:
                envelope.fail(self._interrupted())

    async def _stopping(self, instance: Actor) -> None:
        with anyio.CancelScope(shield=True, deadline=self.stop_deadline):
            try:
                await instance.stopping()
            except Exception as exc:
                self.crash = (None, exc)

    # ---- serving --------------------------------------------------------------------

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
                            envelope.resolve(await instance.handle(envelope.message))
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
                    return
                in_flight.add(envelope)
                handlers.start_soon(self._handle_one, instance, envelope, slots, handlers)

    async def _handle_one(
        self,
        instance: Actor,
        envelope: Envelope,
        slots: _Slots,
        handlers: Any,
    ) -> None:
        crash: Exception | None = None
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
                        envelope.resolve(await instance.handle(envelope.message))
                except Exception as exc:
                    if isinstance(exc, (instance.errors, NotStreaming)):
                        envelope.fail(exc)
                    elif instance.contained and _contained(exc, instance.contained):
                        self._contain(envelope, exc)
                    else:
                        crash = exc
                # As inline: a message answered with an error or a failure was handled.
                if crash is None:
                    self.handled += 1
        finally:
            envelope.scope = None
            if self.in_flight is not None:
                self.in_flight.discard(envelope)
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
