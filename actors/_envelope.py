"""
Envelopes: one message in a mailbox, with the way back to whoever sent it.

An ask does not open a reply stream. Its envelope is the reply slot: the asker parks on
it and the actor fills it in. On trio the asker parks with ``wait_task_rescheduled`` and
the actor wakes it with ``reschedule`` (no Event, no channel); on other backends it
waits on one ``anyio.Event``.

Every envelope ends exactly once: answered (``resolve``), failed (``fail``) or given up
by its sender (``abandon``). Whatever comes second is ignored, so a late reply can
never reach anybody.

Deadlines on trio do not use a cancel scope per ask (entering and leaving one costs
about as much as a whole context switch). A pending ask is linked into a
``DeadlineWatch`` list, one list per timeout value, so each list is in deadline order
and linking and unlinking are O(1); one watcher task per system sleeps until the
earliest deadline and expires what is due.
"""

from __future__ import annotations

import math
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
    "ITEMS_CLOSED",
    "ITEMS_EMPTY",
    "ITEMS_ENDED",
    "PENDING",
    "STREAM",
    "TELL",
    "Envelope",
    "wait_generic",
    "wait_trio",
]

# A stream's item channel is trio's own memory channel on trio (about half the cost
# per item of anyio's memory object stream) and anyio's elsewhere; these are the
# exceptions of either: the other side is gone, the producer finished, nothing waiting.
ITEMS_CLOSED: tuple[type[Exception], ...] = (anyio.BrokenResourceError, anyio.ClosedResourceError)
ITEMS_ENDED: tuple[type[Exception], ...] = (anyio.EndOfStream, anyio.ClosedResourceError)
ITEMS_EMPTY: tuple[type[Exception], ...] = (anyio.WouldBlock,)
if trio is not None:
    ITEMS_CLOSED += (trio.BrokenResourceError, trio.ClosedResourceError)
    ITEMS_ENDED += (trio.EndOfChannel, trio.ClosedResourceError)
    ITEMS_EMPTY += (trio.WouldBlock,)

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
        "deadline",
        "delivered",
        "earlier",
        "error",
        "items",
        "kind",
        "later",
        "line",
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
    # The cancel scope (anyio's, or trio's on the fast path) its handler runs in, while
    # it runs; abandon cancels it.
    scope: Any
    # STREAM only: where items go, and whether any reached the reader yet.
    items: MemoryObjectSendStream[Any] | trio.MemorySendChannel[Any]
    delivered: bool
    # While linked into a DeadlineWatch: its list and neighbours, and when it is due.
    line: _Line | None
    earlier: Envelope | None
    later: Envelope | None
    deadline: float

    def __init__(self, message: Any, kind: int) -> None:
        self.message = message
        self.kind = kind
        self.state = PENDING
        self.attempts = 0
        self.waiter = None
        self.error = None
        self.scope = None
        self.line = None

    def resolve(self, value: Any) -> None:
        """
        Answer the sender with ``value`` (a stream: end it normally).
        """
        if self.state:
            return
        self.state = DONE
        self.value = value
        if self.line is not None:
            self.line.unlink(self)
        self._wake()

    def fail(self, error: BaseException) -> None:
        """
        Answer the sender with ``error``, raised in its task.
        """
        if self.state:
            return
        self.state = DONE
        self.error = error
        if self.line is not None:
            self.line.unlink(self)
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
        if self.line is not None:
            self.line.unlink(self)
        if self.scope is not None:
            self.scope.cancel()

    def expire(self) -> None:
        """
        The deadline passed: give the ask up and wake its sender (it raises AskTimeout).
        """
        if self.line is not None:
            self.line.unlink(self)
        self.abandon()
        self._wake()

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


async def wait_trio(
    envelope: Envelope, deadline: float, timeout: float, watch: DeadlineWatch
) -> bool:
    """
    Park the current trio task until ``envelope`` ends or ``deadline`` passes.

    Returns False when the deadline passed first (the envelope is then abandoned).

    Cancellation: a cancelled caller abandons the envelope, which cancels its handler
    if the actor is running it, and the cancellation propagates.
    """
    if envelope.state:
        await trio.lowlevel.checkpoint()
        return envelope.state == DONE
    task: Task = current_task()
    envelope.waiter = task

    def abort(raise_cancel: Any) -> Abort:
        # Once this returns, trio has scheduled the task with its Cancelled; forget it
        # at once, or a reply or expiry in the same tick would reschedule it twice.
        # The rest of the cleanup happens in the asker (below), so this callback never
        # touches another task's cancel scope.
        envelope.waiter = None
        return Abort.SUCCEEDED

    if deadline != math.inf:
        watch.add(envelope, deadline, timeout)
    try:
        await wait_task_rescheduled(abort)
    except BaseException:
        envelope.waiter = None
        envelope.abandon()
        raise
    return envelope.state == DONE


class _Line:
    """
    The pending asks of one timeout value, earliest deadline first.
    """

    __slots__ = ("head", "tail")

    def __init__(self) -> None:
        self.head: Envelope | None = None
        self.tail: Envelope | None = None

    def unlink(self, envelope: Envelope) -> None:
        earlier, later = envelope.earlier, envelope.later
        if earlier is None:
            self.head = later
        else:
            earlier.later = later
        if later is None:
            self.tail = earlier
        else:
            later.earlier = earlier
        envelope.line = envelope.earlier = envelope.later = None


class DeadlineWatch:
    """
    Expires trio asks whose deadline passed; one watcher task per system.
    """

    def __init__(self) -> None:
        # Keyed by deadline minus now at link time, i.e. the ask's timeout: deadlines
        # of one timeout arrive in order, so appending keeps each line sorted.
        self._lines: dict[float, _Line] = {}
        # The deadline the watcher sleeps until, and the scope that sleep is in.
        self._target = math.inf
        self._sleep: trio.CancelScope | None = None

    def add(self, envelope: Envelope, deadline: float, timeout: float) -> None:
        """
        Link a pending ask; wake the watcher if it is due before anything else.
        """
        line = self._lines.get(timeout)
        if line is None:
            line = self._lines[timeout] = _Line()
        envelope.deadline = deadline
        envelope.line = line
        earlier = line.tail
        # Almost always appended at the tail; an ask that first waited for mailbox
        # room can be due before asks linked while it waited, so walk back.
        while earlier is not None and earlier.deadline > deadline:
            earlier = earlier.earlier
        later = line.head if earlier is None else earlier.later
        envelope.earlier = earlier
        envelope.later = later
        if earlier is None:
            line.head = envelope
        else:
            earlier.later = envelope
        if later is None:
            line.tail = envelope
        else:
            later.earlier = envelope
        if deadline < self._target and self._sleep is not None:
            self._target = -math.inf
            self._sleep.cancel()

    async def run(self) -> None:
        """
        The watcher task: sleep until the earliest deadline, expire what is due.

        Cancellation: runs until cancelled by the system closing.
        """
        while True:
            now = trio.current_time()
            earliest = math.inf
            for timeout, line in list(self._lines.items()):
                while line.head is not None and line.head.deadline <= now:
                    line.head.expire()
                if line.head is None:
                    del self._lines[timeout]
                elif line.head.deadline < earliest:
                    earliest = line.head.deadline
            self._target = earliest
            with trio.CancelScope(deadline=earliest) as self._sleep:
                await trio.sleep_forever()
            self._sleep = None


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
