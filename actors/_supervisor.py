"""
Supervisors: start children in order, restart them as OTP does, stop them in reverse.

A supervisor is itself a child (of another supervisor, or of the system for the root),
so trees nest. Its incarnation is one task whose task group holds its children's
incarnations; the task processes, one at a time, the exits its children report.
"""

from __future__ import annotations

import contextlib
import math
from collections import deque
from typing import TYPE_CHECKING, cast

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._cell import ActorCell
from ._child import Child, ChildGroup, Parent, open_child_group
from ._errors import ActorStopped, EscalationError, InvalidSpec, NoSuchActor, StartFailed
from ._ref import Ref
from ._specs import ChildSpec, SupervisorSpec

if TYPE_CHECKING:
    from ._system import System

__all__ = ["SupervisorCell", "SupervisorRef"]

# The notice that tells a supervisor's loop to stop.
_STOP = None
_Notice = tuple[Child, int, BaseException | None] | None


def make_child(spec: ChildSpec, system: System, parent: Parent) -> Child:
    """
    Build the child a spec describes (registering its names in the system).
    """
    system.ensure_free(spec.name)
    if isinstance(spec.factory, SupervisorSpec):
        supervisor = SupervisorCell(spec, spec.factory, system, parent)
        system.register(supervisor)
        try:
            supervisor.build_children()
        except BaseException:
            system.unregister(supervisor)
            raise
        return supervisor
    child = ActorCell(spec, system, parent)
    system.register(child)
    return child


class SupervisorRef:
    """
    A handle on a supervisor: add, stop and list its children.
    """

    __slots__ = ("_cell", "name")

    def __init__(self, cell: SupervisorCell) -> None:
        self._cell = cell
        self.name = cell.name

    def __repr__(self) -> str:
        return f"<SupervisorRef {self.name!r} children={self.children()}>"

    @property
    def alive(self) -> bool:
        """
        True while the supervisor is running.
        """
        return self._cell.alive

    def children(self) -> list[str]:
        """
        The names of the current children, in start order.
        """
        return [child.name for child in self._cell.children]

    async def start_child(self, spec: ChildSpec) -> Ref:
        """
        Add and start a child at run time (a dynamic child); return its Ref.

        For a nested supervisor use ``start_supervisor_child``.

        Error handling: ``DuplicateName``; ``StartFailed`` if its ``started()``
        raised; ``ActorStopped`` if this supervisor is not running.
        """
        if isinstance(spec, ChildSpec) and isinstance(spec.factory, SupervisorSpec):
            raise InvalidSpec("use start_supervisor_child for a supervisor", name=spec.name)
        child = await self._cell.start_child(spec)
        return cast(ActorCell, child).ref

    async def start_supervisor_child(self, spec: ChildSpec) -> SupervisorRef:
        """
        Add and start a nested supervisor (``spec.factory`` is a SupervisorSpec).
        """
        if not (isinstance(spec, ChildSpec) and isinstance(spec.factory, SupervisorSpec)):
            raise InvalidSpec("start_supervisor_child needs a SupervisorSpec factory")
        child = await self._cell.start_child(spec)
        return cast(SupervisorCell, child).ref

    async def stop_child(self, name: str) -> None:
        """
        Stop the child ``name`` for good and remove it.

        Error handling: ``NoSuchActor`` if this supervisor has no such child.
        """
        await self._cell.stop_child(name)


class SupervisorCell(Child):
    """
    One named supervisor across all its incarnations.
    """

    __slots__ = (
        "_notices",
        "_restart_times",
        "_start_scopes",
        "_stopping",
        "_task_group",
        "children",
        "ref",
        "supervisor_spec",
    )

    def __init__(
        self, spec: ChildSpec, supervisor_spec: SupervisorSpec, system: System, parent: Parent
    ) -> None:
        super().__init__(spec, system, parent)
        self.supervisor_spec = supervisor_spec
        self.ref = SupervisorRef(self)
        self.children: list[Child] = []
        self._restart_times: deque[float] = deque()
        self._notices: MemoryObjectSendStream[_Notice] | None = None
        self._task_group: ChildGroup | None = None
        # Run-time starts in progress; cancelled when the supervisor stops.
        self._start_scopes: set[anyio.CancelScope] = set()
        self._stopping = False

    def __repr__(self) -> str:
        return f"<SupervisorCell {self.name!r} incarnation={self.incarnation}>"

    def build_children(self) -> None:
        """
        Create (and register) the static children; called once the name is taken.
        """
        try:
            for spec in self.supervisor_spec.children:
                self.children.append(make_child(spec, self.system, self))
        except BaseException:
            for child in self.children:
                child.close(None)
                self.system.unregister(child)
            self.children.clear()
            raise

    def names(self) -> list[str]:
        return [self.name, *(name for child in self.children for name in child.names())]

    # ---- lifecycle ------------------------------------------------------------------

    def prepare_start(self) -> None:
        self.closed = False

    def request_stop(self, deadline: float | None) -> None:
        self._stopping = True
        for scope in self._start_scopes:
            scope.cancel()
        if self._notices is not None:
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._notices.send_nowait(_STOP)

    def close(self, cause: BaseException | None) -> None:
        if self.closed:
            return
        self.closed = True
        for child in reversed(self.children):
            child.close(cause)
        if self.started_once:
            self.system.bus.emit("stopped", self.name, cause)

    def child_exited(self, child: Child, incarnation: int, cause: BaseException | None) -> None:
        notices = self._notices
        if notices is not None and not child.expected_exit:
            # Once the loop has stopped reading, exits are part of the shutdown itself.
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                notices.send_nowait((child, incarnation, cause))

    async def run(self, *, task_status: TaskStatus[BaseException | None]) -> None:
        """
        Run one incarnation: start the children in order, then supervise them.

        Cancellation: cancelling the incarnation cancels every child; the children are
        then closed, failing whatever waits on them.

        Error handling: restart intensity exceeded ends the incarnation with an
        ``EscalationError`` (cause: the last crash), reported to the parent.
        """
        self.incarnation_began()
        incarnation = self.incarnation
        self._stopping = False
        self._restart_times.clear()
        send, receive = anyio.create_memory_object_stream[_Notice](math.inf)
        self._notices = send
        reported = served = False
        cause: BaseException | None = None
        try:
            with anyio.CancelScope() as kill_scope:
                self.kill_scope = kill_scope
                async with open_child_group(fast=self.system.fast) as task_group:
                    self._task_group = task_group
                    for child in list(self.children):
                        try:
                            await child.start(task_group)
                        except StartFailed as exc:
                            await self._stop_children()
                            reported = True
                            task_status.started(exc)
                            return
                    reported = served = self.alive = True
                    task_status.started(None)
                    async with receive:
                        cause = await self._supervise(receive)
                    await self._stop_children()
                    if cause is not None:
                        self.system.bus.emit("escalated", self.name, cause)
            if not reported:
                reported = True
                task_status.started(ActorStopped("stopped while starting", name=self.name))
        finally:
            self._task_group = None
            self._notices = None
            send.close()
            receive.close()
            for child in reversed(self.children):
                child.close(cause)
            self.incarnation_ended()
        if served:
            if cause is not None:
                self.system.bus.emit("crashed", self.name, cause)
            self.parent.child_exited(self, incarnation, cause)

    async def _supervise(
        self, notices: MemoryObjectReceiveStream[_Notice]
    ) -> EscalationError | None:
        async for notice in notices:
            if notice is _STOP:
                return None
            child, incarnation, cause = notice
            escalation = await self._child_ended(child, incarnation, cause)
            if escalation is not None:
                return escalation
        return None

    async def _stop_children(self) -> None:
        self._stopping = True
        for scope in self._start_scopes:
            scope.cancel()
        for child in reversed(self.children):
            await child.stop(child.spec.shutdown_timeout)

    # ---- restarts -------------------------------------------------------------------

    async def _child_ended(
        self, child: Child, incarnation: int, cause: BaseException | None
    ) -> EscalationError | None:
        if child.incarnation != incarnation or child.expected_exit or child not in self.children:
            return None
        restart = child.spec.restart == "permanent" or (
            child.spec.restart == "transient" and cause is not None
        )
        if not restart:
            self._remove(child, cause)
            return None
        while True:
            if self._restart_limit_reached():
                spec = self.supervisor_spec
                escalation = EscalationError(
                    f"more than {spec.intensity} restarts in {spec.period} s", name=self.name
                )
                escalation.__cause__ = cause
                return escalation
            failed = await self._restart(child)
            if failed is None:
                return None
            child, cause = failed

    def _restart_limit_reached(self) -> bool:
        now = anyio.current_time()
        times = self._restart_times
        times.append(now)
        while times and times[0] < now - self.supervisor_spec.period:
            times.popleft()
        return len(times) > self.supervisor_spec.intensity

    async def _restart(self, crashed: Child) -> tuple[Child, BaseException] | None:
        """
        Restart ``crashed`` and whoever the strategy says; return a child that failed
        to start, with why.
        """
        strategy = self.supervisor_spec.strategy
        if strategy == "one_for_one":
            group = [crashed]
        elif strategy == "one_for_all":
            group = list(self.children)
        else:
            group = self.children[self.children.index(crashed) :]
        for child in reversed(group):
            if child is not crashed:
                await child.stop(child.spec.shutdown_timeout)
        task_group = self._task_group
        if task_group is None:
            return None
        for child in group:
            try:
                await child.start(task_group)
            except StartFailed as exc:
                cause = exc.__cause__ if exc.__cause__ is not None else exc
                self.system.bus.emit("crashed", child.name, cause)
                return child, cause
        return None

    def _remove(self, child: Child, cause: BaseException | None) -> None:
        child.close(cause)
        if child in self.children:
            self.children.remove(child)
        self.system.unregister(child)

    # ---- run-time children ----------------------------------------------------------

    async def start_child(self, spec: ChildSpec) -> Child:
        """
        Add and start a child at run time.

        No lock is held while the child starts, so its ``started()`` may itself spawn.
        """
        if not isinstance(spec, ChildSpec):
            raise TypeError(f"start_child takes a ChildSpec, not {spec!r}")
        task_group = self._task_group
        if not self.alive or task_group is None or self._stopping:
            raise ActorStopped("the supervisor is not running", name=self.name)
        child = make_child(spec, self.system, self)
        self.children.append(child)
        scope = anyio.CancelScope()
        self._start_scopes.add(scope)
        try:
            with scope:
                await child.start(task_group)
        except BaseException as exc:
            self._forget(child, exc)
            raise
        finally:
            self._start_scopes.discard(scope)
        if scope.cancelled_caught:
            self._forget(child, None)
            raise ActorStopped("the supervisor stopped while starting it", name=spec.name)
        return child

    def _forget(self, child: Child, cause: BaseException | None) -> None:
        child.close(cause)
        if child in self.children:
            self.children.remove(child)
        self.system.unregister(child)

    async def stop_child(self, name: str) -> None:
        """
        Stop the child ``name`` for good and remove it.
        """
        for child in self.children:
            if child.name == name:
                break
        else:
            raise NoSuchActor("no such child", name=name)
        await child.stop(child.spec.shutdown_timeout)
        self._remove(child, None)
