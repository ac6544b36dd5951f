"""
Actor cells: the persistent home of one named actor, and the loop that runs it.

The cell owns the mailbox (an anyio memory object stream), the counters and the ``Ref``;
they outlive every incarnation, so messages queued behind a crash reach the next one.

A cell runs each incarnation: it makes the actor, starts it, serves its mailbox
(:mod:`actors._serving`, which the cell inherits), stops it, and settles what a crash
leaves behind. Sending wakes an actor parked on an empty mailbox.
"""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, Any, cast

import anyio
from anyio import BrokenResourceError, ClosedResourceError, EndOfStream, WouldBlock
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._actor import Actor
from ._child import Parent
from ._envelope import PENDING, STREAM, Envelope
from ._errors import ActorDied, ActorStopped, AskTimeout, InvalidSpec, PoisonMessage
from ._events import ActorStats
from ._faults import Fault
from ._ref import Ref
from ._serving import Serving

with contextlib.suppress(ImportError):  # trio is optional; see ActorCell.fast
    from trio.lowlevel import reschedule

if TYPE_CHECKING:
    from ._specs import ChildSpec
    from ._system import System

__all__ = ["ActorCell"]


class _AlreadyStarted:
    """
    Stands in for a task status once it has been used.
    """

    def started(self, value: object = None) -> None:
        """
        Do nothing: the start was already reported.
        """


_ALREADY_STARTED = cast(TaskStatus[BaseException | None], _AlreadyStarted())


class ActorCell(Serving):
    """
    One named actor across all its incarnations.
    """

    # The state serving uses has its slots in Serving.
    __slots__ = ("mailbox", "mailbox_size", "ref", "stop_deadline")

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
        if self.in_flight is not None:
            # A Later told afterwards finds its message gone (see actors._later).
            self.in_flight.clear()
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
