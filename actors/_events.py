"""
Lifecycle events and counters: what tests and metrics watch.

The runtime never waits on a subscriber. Each subscription has a bounded buffer; when
it is full the oldest event is dropped and ``dropped`` counts it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from typing import Literal, TypeAlias

import anyio
import attrs

__all__ = ["ActorStats", "EventKind", "LifecycleEvent", "Subscription"]

EventKind: TypeAlias = Literal["started", "failed", "crashed", "restarted", "escalated", "stopped"]


@attrs.frozen
class LifecycleEvent:
    """
    One change in an actor's or supervisor's life.

    ``started``: first incarnation is running. ``failed``: a handler failed on one
    message with ``cause`` and the actor contained it (it keeps running). ``crashed``:
    an incarnation died of ``cause``. ``restarted``: a new incarnation is running. ``escalated``: a supervisor
    gave up (``cause`` is the last crash). ``stopped``: stopped for good (``cause`` is
    the crash that ended it, if one did).
    """

    kind: EventKind
    name: str
    cause: BaseException | None = None
    at: float = 0.0


@attrs.frozen
class ActorStats:
    """
    A snapshot of one actor's counters.

    ``failed`` counts the messages whose handler failed with an exception the actor
    contains (each answered ``HandlerFailed``); those never count as ``restarts``.
    """

    name: str
    mailbox_depth: int
    handled: int
    restarts: int
    alive: bool
    failed: int = 0


@attrs.define(eq=False)
class Subscription:
    """
    One subscriber's view of the event stream: an async iterator with a bounded buffer.
    """

    _maxlen: int
    _buffer: deque[LifecycleEvent] = attrs.field(init=False, factory=deque)
    _wakeup: anyio.Event | None = attrs.field(init=False, default=None)
    _closed: bool = attrs.field(init=False, default=False)
    # How many events were thrown away because this subscriber read too slowly.
    dropped: int = attrs.field(init=False, default=0)

    def push(self, event: LifecycleEvent) -> None:
        """
        Buffer ``event`` without ever blocking; drop the oldest when full.
        """
        if self._closed:
            return
        if len(self._buffer) >= self._maxlen:
            self._buffer.popleft()
            self.dropped += 1
        self._buffer.append(event)
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None

    def close(self) -> None:
        """
        End the iteration once the buffered events are read.
        """
        self._closed = True
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None

    def __aiter__(self) -> AsyncIterator[LifecycleEvent]:
        return self

    async def __anext__(self) -> LifecycleEvent:
        while not self._buffer:
            if self._closed:
                raise StopAsyncIteration
            self._wakeup = wakeup = anyio.Event()
            await wakeup.wait()
        return self._buffer.popleft()


@attrs.define(eq=False)
class EventBus:
    """
    Fans lifecycle events out to every current subscriber.
    """

    _subscribers: list[Subscription] = attrs.field(factory=list)

    def emit(self, kind: EventKind, name: str, cause: BaseException | None = None) -> None:
        """
        Record one event for every subscriber (a no-op when there are none).
        """
        if not self._subscribers:
            return
        event = LifecycleEvent(kind, name, cause, anyio.current_time())
        for subscriber in self._subscribers:
            subscriber.push(event)

    def subscribe(self, maxlen: int) -> Subscription:
        """
        Add a subscriber with a buffer of ``maxlen`` events.
        """
        subscription = Subscription(maxlen)
        self._subscribers.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """
        Remove a subscriber and end its iteration.
        """
        subscription.close()
        if subscription in self._subscribers:
            self._subscribers.remove(subscription)

    def close(self) -> None:
        """
        End every subscriber's iteration (the system is gone).
        """
        for subscriber in self._subscribers:
            subscriber.close()
        self._subscribers.clear()
