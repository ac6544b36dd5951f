"""
What every supervised child has in common, be it an actor or a nested supervisor.

A child object lives as long as its place in its supervisor, across incarnations. Each
incarnation is one task in the supervisor's task group; when it ends on its own it
reports to its parent with ``child_exited``.
"""

from __future__ import annotations

import math
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol, cast

import anyio

try:
    import trio
except ImportError:  # pragma: no cover - trio is optional
    trio = None  # type: ignore[assignment]

from ._errors import StartFailed

if TYPE_CHECKING:
    from ._specs import ChildSpec
    from ._system import System

__all__ = ["Child", "ChildGroup", "Parent", "open_child_group"]


class ChildGroup(Protocol):
    """
    Where a supervisor runs its children's incarnations: an anyio task group, or on
    trio a bare nursery (the same ``start``, without anyio's per-task handle, cancel
    scope and event, which cost about 1.5 kB per actor).
    """

    async def start(self, func: Any, *args: Any, name: Any = None) -> Any:
        """
        Start ``func`` as a task and return what it passes to ``task_status.started``.
        """


def open_child_group(*, fast: bool) -> AbstractAsyncContextManager[ChildGroup]:
    """
    Open the task group a supervisor runs its children in.
    """
    if fast:
        return cast(AbstractAsyncContextManager[ChildGroup], trio.open_nursery())
    return cast(AbstractAsyncContextManager[ChildGroup], anyio.create_task_group())


class Parent(Protocol):
    """
    Whoever runs a child's incarnations: a supervisor, or the system for the root.
    """

    def child_exited(self, child: Child, incarnation: int, cause: BaseException | None) -> None:
        """
        Note that ``child``'s incarnation ended on its own (never blocks).
        """


class Child:
    """
    The persistent part of a supervised child.
    """

    __slots__ = (
        "_exited",
        "alive",
        "closed",
        "expected_exit",
        "incarnation",
        "kill_scope",
        "name",
        "parent",
        "restarts",
        "running",
        "spec",
        "started_once",
        "system",
    )

    def __init__(self, spec: ChildSpec, system: System, parent: Parent) -> None:
        self.name = spec.name
        self.spec = spec
        self.system = system
        self.parent = parent
        # Invariant: bumped at the start of every incarnation; exits of older ones are
        # stale and ignored.
        self.incarnation = 0
        self.started_once = False
        # True while the parent itself is stopping this incarnation, so its exit is
        # no news to the parent.
        self.expected_exit = False
        # Invariant: True from the start of an incarnation until its task has ended.
        self.running = False
        # Made only when somebody waits for the incarnation to end (an Event per idle
        # actor would cost a few hundred bytes each).
        self._exited: anyio.Event | None = None
        self.kill_scope: anyio.CancelScope | None = None
        self.closed = False
        self.alive = False
        self.restarts = 0

    def incarnation_began(self) -> None:
        """
        Mark the start of an incarnation (called first thing by ``run``).
        """
        self.incarnation += 1
        self.running = True
        self.expected_exit = False

    def incarnation_ended(self) -> None:
        """
        Mark the end of an incarnation and wake whoever waits for it.
        """
        self.running = False
        self.alive = False
        self.kill_scope = None
        if self._exited is not None:
            self._exited.set()
            self._exited = None

    async def wait_ended(self) -> None:
        """
        Wait until the running incarnation, if any, has ended.
        """
        if not self.running:
            return
        if self._exited is None:
            self._exited = anyio.Event()
        await self._exited.wait()

    async def start(self, task_group: ChildGroup) -> None:
        """
        Start a new incarnation in ``task_group`` and wait until it is ready.

        Error handling: ``StartFailed`` (cause: what ``started()`` raised).
        """
        self.prepare_start()
        if self.started_once:
            self.restarts += 1
        failure: BaseException | None = await task_group.start(self.run)
        if failure is not None:
            raise StartFailed("failed to start", name=self.name) from failure
        if self.started_once:
            self.system.bus.emit("restarted", self.name)
        else:
            self.started_once = True
            self.system.bus.emit("started", self.name)

    async def stop(self, timeout: float) -> None:
        """
        Stop the running incarnation in order; cancel it after ``timeout`` seconds.

        Cancellation: if the caller is cancelled the incarnation is killed first.
        """
        if not self.running:
            return
        self.expected_exit = True
        deadline = anyio.current_time() + timeout if timeout != math.inf else math.inf
        self.request_stop(deadline)
        try:
            with anyio.move_on_after(timeout):
                await self.wait_ended()
        finally:
            if self.running:
                self.kill()
                with anyio.CancelScope(shield=True):
                    await self.wait_ended()

    def kill(self) -> None:
        """
        Cancel the running incarnation outright.
        """
        if self.kill_scope is not None:
            self.kill_scope.cancel()

    # Implemented by ActorCell and SupervisorCell.

    def prepare_start(self) -> None:
        """
        Get ready for a new incarnation (reopen the mailbox, settle the last crash).
        """
        raise NotImplementedError

    async def run(self, *, task_status: anyio.abc.TaskStatus[BaseException | None]) -> None:
        """
        Run one incarnation; report ``None`` or the start failure through task_status.
        """
        raise NotImplementedError

    def request_stop(self, deadline: float | None) -> None:
        """
        Ask the running incarnation to end in order by ``deadline``.
        """
        raise NotImplementedError

    def close(self, cause: BaseException | None) -> None:
        """
        Stop for good: fail whatever still waits, refuse new messages.
        """
        raise NotImplementedError

    def names(self) -> list[str]:
        """
        This child's name and the names of everything under it.
        """
        return [self.name]
