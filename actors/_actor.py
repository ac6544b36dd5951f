"""
The Actor base class: subclass it and write ``handle`` (and maybe ``handle_stream``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, ClassVar

from ._errors import NotStreaming

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from ._cell import ActorCell
    from ._ref import Ref
    from ._system import System

__all__ = ["Actor"]


class Actor:
    """
    Base class of every actor; the runtime makes a fresh instance per incarnation.

    The runtime sets ``ref``, ``name``, ``system`` and ``task_group`` before
    ``started()`` runs. ``task_group`` is an anyio task group bounded by this
    incarnation's life: tasks started in it are cancelled when the actor stops or
    crashes, and one of them crashing crashes the actor.
    """

    # More than 1: each message is handled in its own task, at most this many at once.
    # 1: messages are handled inline, one after the other, in order.
    max_concurrency: ClassVar[int] = 1
    # Exceptions that are answers, not crashes: raised back to the asker as they are,
    # and the actor keeps running.
    errors: ClassVar[tuple[type[BaseException], ...]] = ()
    # Exceptions that fail only the message being handled: logged with their traceback,
    # emitted as a "failed" event, counted in stats().failed and answered to that sender
    # alone as HandlerFailed; the actor keeps running with its state. Only Exception
    # subclasses; InvariantBroken (InjectedCrash too) and AssertionError always crash.
    contained: ClassVar[tuple[type[Exception], ...]] = ()
    # Message types that ``handle_now`` answers in the serving loop itself, with no
    # task of their own (only where max_concurrency > 1; elsewhere ``handle`` gets them).
    # While a fault is injected into the actor, ``handle`` gets them too.
    immediate: ClassVar[tuple[type, ...]] = ()

    ref: Ref
    name: str
    system: System
    task_group: TaskGroup
    _cell: ActorCell

    async def started(self) -> None:
        """
        Run once per incarnation before any message; may open resources.

        Error handling: raising here fails the start (``spawn`` raises
        ``StartFailed``; during a restart the supervisor counts it as a crash).
        """

    async def handle(self, message: Any) -> Any:
        """
        Handle one message from ``tell`` or ``ask``; the return value answers an ask.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement handle()")

    def handle_now(self, message: Any) -> Any:
        """
        Handle one message of an ``immediate`` type without awaiting anything.

        The return value answers an ask, as ``handle``'s does; a :class:`Later`
        answers it when the actor resolves it. Errors are treated as ``handle``'s.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement handle_now()")

    def handle_stream(self, message: Any) -> AsyncIterator[Any]:
        """
        Produce the items of a ``ref.stream`` ask; override as an async generator.
        """
        raise NotStreaming(f"{type(self).__name__} does not stream", name=self.name)

    async def stopping(self) -> None:
        """
        Run on an orderly stop, shielded, within the shutdown timeout.
        """

    def request_stop(self) -> None:
        """
        End this incarnation normally once the current message is handled.

        A permanent actor is restarted afterwards; transient and temporary ones are not.
        """
        self._cell.request_stop(None)
