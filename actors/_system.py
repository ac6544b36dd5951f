"""
The actor system: one task group holding a root supervisor and everything under it.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, cast

import anyio
import sniffio

from ._actor import Actor
from ._cell import ActorCell
from ._child import Child, ChildGroup
from ._envelope import DeadlineWatch
from ._errors import ActorStopped, DuplicateName, EscalationError, InvalidSpec, NoSuchActor
from ._events import EventBus, Subscription
from ._faults import Faults
from ._ref import Ref
from ._specs import NO_KWARGS, ChildSpec, Restart, SupervisorSpec, check_mailbox_size
from ._supervisor import SupervisorCell, SupervisorRef

__all__ = ["System", "open_system"]


class System:
    """
    A running actor system: spawn actors and supervisors, look them up, watch them.

    Made by ``open_system``; everything it runs ends when that block ends.
    """

    def __init__(self, name: str, mailbox_size: int, *, fast: bool) -> None:
        self.name = name
        self.mailbox_size = mailbox_size
        # True on trio: refs and cells use trio's low-level parking (see _envelope).
        self.fast = fast
        self.bus = EventBus()
        self._registry: dict[str, Child] = {}
        self.faults = Faults(self._actor_cell)
        self.root: SupervisorCell | None = None
        self.escalation: EscalationError | None = None
        self._cancel_scope: anyio.CancelScope | None = None
        self._stopped = False
        # Trio only: expires asks without a cancel scope each (see _envelope).
        self.deadlines = DeadlineWatch()

    def __repr__(self) -> str:
        return f"<System {self.name!r} actors={len(self._registry)}>"

    # ---- registry -------------------------------------------------------------------

    def ensure_free(self, name: str) -> None:
        """
        Error handling: ``DuplicateName`` if ``name`` is taken.
        """
        if name in self._registry or name == self.name:
            raise DuplicateName("the name is already taken", name=name)

    def register(self, child: Child) -> None:
        """
        Take ``child``'s name. Error handling: ``DuplicateName``.
        """
        self.ensure_free(child.name)
        self._registry[child.name] = child

    def unregister(self, child: Child) -> None:
        """
        Free the names of ``child`` and of everything under it.
        """
        for name in child.names():
            self._registry.pop(name, None)

    def _actor_cell(self, name: str) -> ActorCell | None:
        child = self._registry.get(name)
        return child if isinstance(child, ActorCell) else None

    # ---- public API -----------------------------------------------------------------

    def ref(self, name: str) -> Ref:
        """
        The Ref of the actor ``name``. Error handling: ``NoSuchActor``.
        """
        cell = self._actor_cell(name)
        if cell is None:
            raise NoSuchActor("no actor has this name", name=name)
        return cell.ref

    def supervisor(self, name: str) -> SupervisorRef:
        """
        The SupervisorRef of the supervisor ``name`` (the root is the system's name).

        Error handling: ``NoSuchActor``.
        """
        root = self.root
        if root is not None and name == root.name:
            return root.ref
        child = self._registry.get(name)
        if not isinstance(child, SupervisorCell):
            raise NoSuchActor("no supervisor has this name", name=name)
        return child.ref

    async def spawn(
        self,
        actor: type[Actor] | Callable[..., Actor],
        *,
        name: str,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
        restart: Restart = "permanent",
        mailbox_size: int | None = None,
        shutdown_timeout: float = 5.0,
    ) -> Ref:
        """
        Start an actor under the root supervisor (one_for_one) and return its Ref.

        Error handling: ``DuplicateName``, ``InvalidSpec``, ``StartFailed`` (its
        ``started()`` raised), ``ActorStopped`` (the system is stopping).
        """
        if isinstance(actor, SupervisorSpec):
            raise InvalidSpec("use start_supervisor for a SupervisorSpec", name=name)
        spec = ChildSpec(
            name=name,
            factory=actor,
            restart=restart,
            shutdown_timeout=shutdown_timeout,
            mailbox_size=mailbox_size,
            args=args,
            kwargs=dict(kwargs) if kwargs else NO_KWARGS,
        )
        return await self._root().start_child(spec)

    async def start_supervisor(
        self,
        spec: SupervisorSpec,
        *,
        name: str,
        restart: Restart = "permanent",
        shutdown_timeout: float = math.inf,
    ) -> SupervisorRef:
        """
        Start a supervisor (and its children, in order) under the root supervisor.

        Error handling: as ``spawn``.
        """
        if not isinstance(spec, SupervisorSpec):
            raise InvalidSpec(f"start_supervisor takes a SupervisorSpec, not {spec!r}", name=name)
        child_spec = ChildSpec(
            name=name, factory=spec, restart=restart, shutdown_timeout=shutdown_timeout
        )
        return await self._root().start_supervisor_child(child_spec)

    @asynccontextmanager
    async def events(self, *, buffer: int = 1000) -> AsyncIterator[Subscription]:
        """
        Subscribe to lifecycle events for the duration of the block.

        The subscription never blocks the runtime: past ``buffer`` unread events the
        oldest are dropped and counted in ``subscription.dropped``.
        """
        if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 1:
            raise InvalidSpec(f"buffer must be an int of 1 or more, not {buffer!r}")
        subscription = self.bus.subscribe(buffer)
        try:
            yield subscription
        finally:
            self.bus.unsubscribe(subscription)

    async def stop(self) -> None:
        """
        Stop every actor and supervisor, children before parents, in reverse order.

        Cancellation: the stop runs shielded; each child still gets its own shutdown
        timeout, after which it is cancelled.
        """
        self._stopped = True
        root = self.root
        if root is not None:
            with anyio.CancelScope(shield=True):
                await root.stop(math.inf)

    # ---- internals ------------------------------------------------------------------

    def _root(self) -> SupervisorRef:
        if self._stopped or self.root is None or not self.root.alive:
            raise ActorStopped("the system is stopped", name=self.name)
        return self.root.ref

    def child_exited(self, child: Child, incarnation: int, cause: BaseException | None) -> None:
        """
        The root supervisor ended; if it escalated, fail the whole system.
        """
        if cause is not None and not self._stopped:
            if isinstance(cause, EscalationError):
                self.escalation = cause
            else:
                escalation = EscalationError("the root supervisor crashed", name=self.name)
                escalation.__cause__ = cause
                self.escalation = escalation
            if self._cancel_scope is not None:
                self._cancel_scope.cancel()


async def _watch_deadlines(watch: DeadlineWatch, scope: anyio.CancelScope) -> None:
    with scope:
        await watch.run()


@asynccontextmanager
async def open_system(
    *,
    name: str = "system",
    mailbox_size: int = 1024,
    intensity: int = 100,
    period: float = 1.0,
) -> AsyncIterator[System]:
    """
    Run an actor system for the duration of the block.

    ``mailbox_size`` is the default for every actor; ``intensity`` and ``period``
    bound the root supervisor's restarts.

    Cancellation: leaving the block, by any route, stops every actor (each within its
    shutdown timeout, then cancelled); no task outlives it.

    Error handling: if the root supervisor escalates, the block is cancelled and
    ``EscalationError`` (cause: the last crash) is raised out of it.
    """
    check_mailbox_size(mailbox_size)
    root_spec = SupervisorSpec((), "one_for_one", intensity, period)
    fast = sniffio.current_async_library() == "trio"
    system = System(name, mailbox_size, fast=fast)
    root = SupervisorCell(
        ChildSpec(name=name, factory=root_spec, shutdown_timeout=math.inf),
        root_spec,
        system,
        system,
    )
    system.root = root
    body_error: BaseException | None = None
    try:
        async with anyio.create_task_group() as task_group:
            system._cancel_scope = task_group.cancel_scope
            watcher = anyio.CancelScope()
            if fast:
                task_group.start_soon(_watch_deadlines, system.deadlines, watcher)
            await root.start(cast(ChildGroup, task_group))
            try:
                yield system
            except BaseException as exc:
                # Re-raised below, outside the task group, so that a failing body keeps
                # its own exception type rather than coming out wrapped in a group.
                body_error = exc
            finally:
                await system.stop()
                watcher.cancel()
    finally:
        system.bus.close()
    if system.escalation is not None:
        raise system.escalation from system.escalation.__cause__
    if body_error is not None:
        raise body_error
