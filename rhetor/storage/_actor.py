"""
StoreActor: an actor that owns one synchronous SQLite-backed store.

The store's methods run in a worker thread, one at a time, so the event loop
never blocks on disk and the connection is never shared.

Containment: one call's failure is that call's alone. A :class:`RhetorError`
(a refusal such as a ValidationError) is the caller's answer; any other
exception is a bug met with this one call, contained by the runtime (logged
with its traceback, answered ``actors.HandlerFailed``, which the caller sees as
``InternalError``). Only a broken connection crashes the actor, so its
supervisor reopens the store.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol

import anyio
import attrs

import actors
from rhetor._errors import RhetorError

__all__ = ["Closeable", "StoreActor", "StoreCall"]


class Closeable(Protocol):
    """What a store is: something the actor closes when it stops."""

    def close(self) -> None: ...


@attrs.frozen
class StoreCall:
    """
    Call one of the store's allowed methods; answers what the method returns.
    """

    method: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = attrs.field(factory=dict)


class StoreActor(actors.Actor):
    """
    Runs :class:`StoreCall` messages against a store opened in ``started()``.

    Error handling: a :class:`RhetorError` from the store is an answer; any
    other exception (a bug, a disk error) fails only that call (contained). A
    failed call that leaves the store ``broken()`` (a transaction left open, the
    connection closed) raises ``actors.InvariantBroken``: the actor crashes and
    its supervisor restarts it with a fresh connection.
    """

    errors: ClassVar[tuple[type[BaseException], ...]] = (RhetorError,)
    contained: ClassVar[tuple[type[Exception], ...]] = (Exception,)
    # The store methods callers may reach; anything else is refused.
    allowed: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, open_store: Any) -> None:
        self._open_store = open_store
        self._store: Any = None

    async def started(self) -> None:
        self._store = await anyio.to_thread.run_sync(self._open_store)

    async def stopping(self) -> None:
        if self._store is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._store.close)

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """
        Run one store method in a worker thread.

        Error handling: what the method raises, unless the failure broke the
        store's connection: then ``actors.InvariantBroken`` (a crash) from it.
        """
        fn = functools.partial(getattr(self._store, method), *args, **kwargs)
        try:
            return await anyio.to_thread.run_sync(fn)
        except RhetorError:
            raise
        except Exception as exc:
            broken = getattr(self._store, "broken", None)
            why = broken() if broken is not None else None
            if why is not None:
                raise actors.InvariantBroken(
                    f"store broken by a failed {method}: {why}", name=self.name
                ) from exc
            raise

    async def handle(self, message: Any) -> Any:
        if isinstance(message, StoreCall):
            if message.method not in self.allowed:
                raise TypeError(f"{type(self).__name__} has no operation {message.method!r}")
            return await self.call(message.method, *message.args, **message.kwargs)
        return await self.handle_other(message)

    async def handle_other(self, message: Any) -> Any:
        raise TypeError(f"{type(self).__name__} cannot handle {type(message).__name__}")
