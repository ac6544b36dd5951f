"""
StoreActor: the base of an actor that owns one synchronous store.

The store's methods run in a worker thread, one at a time, so the event loop
never waits on a read and the connection is never shared; a short write on a
request's path may run on the loop itself (:meth:`StoreActor.run_inline`),
where it costs less than the thread hop. Each subclass
answers one frozen message class per store operation (an
:class:`~rhetor._asks.Ask` with its reply type), defined beside it, and runs
the operation with :meth:`StoreActor.run`.

Containment: one call's failure is that call's alone. A :class:`RhetorError`
(a refusal such as a ValidationError) is the caller's answer; any other
exception is a bug met with this one call, contained by the runtime (logged
with its traceback, answered ``actors.HandlerFailed``, which the caller sees as
``InternalError``). Only a broken connection crashes the actor, so its
supervisor reopens the store.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Generic, TypeVar

import anyio
import attrs

import actors
from rhetor._errors import RhetorError
from rhetor.storage._interfaces import Store

__all__ = ["StoreActor"]

S = TypeVar("S", bound=Store)
T = TypeVar("T")


@attrs.define(eq=False)
class StoreActor(actors.Actor, Generic[S]):
    """
    Runs operations against a store that ``open_store`` opens in ``started()``.

    Error handling: a :class:`RhetorError` from the store is an answer; any
    other exception (a bug, a disk error) fails only that call (contained). A
    failed call that leaves the store ``broken()`` (a transaction left open, the
    connection closed) raises ``actors.InvariantBroken``: the actor crashes and
    its supervisor restarts it with a fresh connection.
    """

    errors: ClassVar[tuple[type[BaseException], ...]] = (RhetorError,)
    contained: ClassVar[tuple[type[Exception], ...]] = (Exception,)

    _open_store: Callable[[], S] = attrs.field(alias="open_store")
    # Invariant: open from started() until stopping(), used by one call at a time.
    _store: S | None = attrs.field(init=False, default=None)

    async def started(self) -> None:
        self._store = await anyio.to_thread.run_sync(self._open_store)

    async def stopping(self) -> None:
        if self._store is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._store.close)

    async def run(self, operation: Callable[[S], T], what: str) -> T:
        """
        Run ``operation(store)`` in a worker thread; ``what`` names it in a crash.

        Error handling: what the operation raises, unless the failure broke the
        store's connection: then ``actors.InvariantBroken`` (a crash) from it.
        """
        store = self.store
        try:
            return await anyio.to_thread.run_sync(operation, store)
        except RhetorError:
            raise
        except Exception as exc:
            self._crash_if_broken(store, exc, what)
            raise

    def run_inline(self, operation: Callable[[S], T], what: str) -> T:
        """
        Run ``operation(store)`` on the event loop's own thread, as :meth:`run` does in a worker.

        Only for short writes of a store opened with ``autocheckpoint=False``,
        whose thread hop would cost more than the write: no checkpoint comes
        between its start and its end, so nothing can interrupt it.
        """
        store = self.store
        try:
            return operation(store)
        except RhetorError:
            raise
        except Exception as exc:
            self._crash_if_broken(store, exc, what)
            raise

    @property
    def store(self) -> S:
        """The open store. Invariant: only used between started() and stopping()."""
        assert self._store is not None, "used before started()"
        return self._store

    def _crash_if_broken(self, store: S, exc: Exception, what: str) -> None:
        why = store.broken()
        if why is not None:
            raise actors.InvariantBroken(
                f"store broken by a failed {what}: {why}", name=self.name
            ) from exc

    async def handle(self, message: Any) -> Any:
        """
        What subclasses fall back to for a message they do not know: a TypeError (contained).
        """
        raise TypeError(f"{type(self).__name__} cannot handle {type(message).__name__}")
