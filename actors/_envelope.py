"""
Envelopes: one message in a mailbox, with the way back to whoever sent it.

An ask does not open a reply stream. Its envelope is the reply slot: the asker parks on
it and the actor fills it in. On trio the asker parks with ``wait_task_rescheduled`` and
the actor wakes it with ``reschedule`` (no Event, no channel); on other backends it
waits on one ``anyio.Event``.

Every envelope ends exactly once: answered (``resolve``), failed (``fail``) or given up
by its sender (``abandon``). Whatever comes second is ignored, so a late reply can
never reach anybody.
"""

from __future__ import annotations

from typing import Any, Final

import anyio
from anyio.streams.memory import MemoryObjectSendStream

try:
    import trio
    from trio.lowlevel import Abort, Task, current_task, reschedule, wait_task_rescheduled
except ImportError:  # pragma: no cover - trio is optional; anyio's generic path is used
    trio = None  # type: ignore[assignment]

__all__ = [
    "ABANDONED",
    "ASK",
    "DONE",
    "DROPPED",
    "PENDING",
    "STREAM",
    "TELL",
    "Envelope",
    "wait_generic",
    "wait_trio",
]

# Kinds. Invariant: TELL is falsy, so `if env.kind:` means "somebody waits for this".
TELL: Final[int] = 0
ASK: Final[int] = 1
STREAM: Final[int] = 2

# States. Invariant: PENDING is falsy, so `if env.state:` means "already ended".
PENDING: Final[int] = 0
DONE: Final[int] = 1
ABANDONED: Final[int] = 2
# Swallowed by an injected fault: never answered, so its asker meets its deadline.
DROPPED: Final[int] = 3


class Envelope:
    """
    One message on its way to an actor, and the reply slot of its sender.
    """

    # A plain slotted class rather than attrs: one is made per message, on the hot path.
    __slots__ = (
        "attempts",
        "delivered",
        "error",
        "items",
        "kind",
        "message",
        "scope",
        "state",
        "value",
        "waiter",
    )

    message: Any
    kind: int
    # Invariant: PENDING until exactly one of resolve, fail or abandon ends it.
    state: int
    # How many incarnations crashed while handling it (2 makes it a poison message).
    attempts: int
    # The parked asker: a trio Task, an anyio Event, or None.
    waiter: Any
    value: Any
    error: BaseException | None
    # The cancel scope its handler runs in, while it runs; abandon cancels it.
    scope: anyio.CancelScope | None
    # STREAM only: where items go, and whether any reached the reader yet.
    items: MemoryObjectSendStream[Any]
    delivered: bool

    def __init__(self, message: Any, kind: int) -> None:
        self.message = message
        self.kind = kind
        self.state = PENDING
        self.attempts = 0
        self.waiter = None
        self.error = None
        self.scope = None

    def resolve(self, value: Any) -> None:
        """
        Answer the sender with ``value`` (a stream: end it normally).
        """
        if self.state:
            return
        self.state = DONE
        self.value = value
        self._wake()

    def fail(self, error: BaseException) -> None:
        """
        Answer the sender with ``error``, raised in its task.
        """
        if self.state:
            return
        self.state = DONE
        self.error = error
        self._wake()

    def abandon(self) -> None:
        """
        The sender gave up (deadline, cancellation, left the stream): skip or cancel it.
        """
        if self.kind == STREAM:
            self.items.close()
        if self.state:
            return
        self.state = ABANDONED
        if self.scope is not None:
            self.scope.cancel()

    def _wake(self) -> None:
        if self.kind == STREAM:
            # Closing the item channel ends the reader's iteration; it then looks at
            # `error` to tell a clean end from a failure.
            self.items.close()
            return
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if isinstance(waiter, anyio.Event):
                waiter.set()
            else:
                reschedule(waiter)


def _abort_wait(raise_cancel: Any) -> Abort:
    # Cleanup happens in the asker once the Cancelled reaches it (see wait_trio), so the
    # abort callback never touches another task's cancel scope.
    return Abort.SUCCEEDED


async def wait_trio(envelope: Envelope, deadline: float) -> bool:
    """
    Park the current trio task until ``envelope`` ends or ``deadline`` passes.

    Returns False when the deadline passed first (the envelope is then abandoned).

    Cancellation: a cancelled caller abandons the envelope, which cancels its handler
    if the actor is running it, and the cancellation propagates.
    """
    if envelope.state:
        await trio.lowlevel.checkpoint()
        return True
    task: Task = current_task()
    envelope.waiter = task
    with trio.CancelScope(deadline=deadline):
        try:
            await wait_task_rescheduled(_abort_wait)
        except BaseException:
            envelope.waiter = None
            envelope.abandon()
            raise
    return envelope.state == DONE


async def wait_generic(envelope: Envelope, deadline: float) -> bool:
    """
    Wait (any anyio backend) until ``envelope`` ends or ``deadline`` passes.

    Returns False when the deadline passed first (the envelope is then abandoned).

    Cancellation: as ``wait_trio``.
    """
    if envelope.state:
        await anyio.lowlevel.checkpoint()
        return True
    event = anyio.Event()
    envelope.waiter = event
    with anyio.CancelScope(deadline=deadline):
        try:
            await event.wait()
        except BaseException:
            envelope.waiter = None
            envelope.abandon()
            raise
    return envelope.state == DONE
