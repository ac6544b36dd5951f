"""
Fault injection: make a named actor crash, hang, answer slowly or drop messages.

Faults are keyed by name, so they can be set before the actor exists and survive its
restarts. An actor with no fault set pays one attribute check per message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio
import attrs

from ._errors import InjectedCrash, InvalidSpec
from ._specs import check_timeout

if TYPE_CHECKING:
    from ._cell import ActorCell

__all__ = ["Fault", "Faults"]


@attrs.define(eq=False)
class Fault:
    """
    The faults currently set on one actor name.
    """

    name: str
    # One-shot: the next message raises this, then it is cleared.
    crash: BaseException | None = None
    # Persistent until cleared: every message blocks until its handler is cancelled.
    hang: bool = False
    # Persistent until cleared: every message waits this long before it is handled.
    slow: float = 0.0
    # How many of the next messages are dropped unhandled (asks then time out).
    drop: int = 0

    @property
    def empty(self) -> bool:
        """
        True when no fault is left.
        """
        return self.crash is None and not self.hang and self.slow == 0.0 and self.drop == 0

    def take_drop(self) -> bool:
        """
        Consume one drop; True if the current message must be dropped.
        """
        if self.drop > 0:
            self.drop -= 1
            return True
        return False

    async def apply(self) -> None:
        """
        Act out the faults on the message about to be handled (inside its handler scope).
        """
        if self.crash is not None:
            crash, self.crash = self.crash, None
            raise crash
        if self.slow:
            await anyio.sleep(self.slow)
        if self.hang:
            await anyio.sleep_forever()


@attrs.define(eq=False)
class Faults:
    """
    The system's fault switchboard; deterministic, set and cleared by name.
    """

    _lookup: Callable[[str], ActorCell | None]
    _faults: dict[str, Fault] = attrs.field(init=False, factory=dict)

    def crash_next(self, name: str, exc: BaseException | None = None) -> None:
        """
        Make the actor ``name`` raise ``exc`` (default ``InjectedCrash``) on its next
        message.
        """
        self._fault(name).crash = (
            exc if exc is not None else InjectedCrash("injected crash", name=name)
        )
        self._publish(name)

    def hang(self, name: str) -> None:
        """
        Make every message to ``name`` block until its handler is cancelled (by the
        asker's deadline or a shutdown), until ``clear(name)``.
        """
        self._fault(name).hang = True
        self._publish(name)

    def slow(self, name: str, seconds: float) -> None:
        """
        Make ``name`` wait ``seconds`` before handling each message, until cleared.
        """
        self._fault(name).slow = check_timeout(seconds, "seconds", name=name)
        self._publish(name)

    def drop(self, name: str, count: int = 1) -> None:
        """
        Make ``name`` silently drop its next ``count`` messages.
        """
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise InvalidSpec(f"count must be an int of 1 or more, not {count!r}", name=name)
        self._fault(name).drop += count
        self._publish(name)

    def clear(self, name: str) -> None:
        """
        Remove every fault set on ``name``.
        """
        self._faults.pop(name, None)
        self._publish(name)

    def for_name(self, name: str) -> Fault | None:
        """
        The faults set on ``name``, or None (used when an actor is created).
        """
        return self._faults.get(name)

    def settle(self, name: str) -> None:
        """
        Forget ``name``'s fault record once a one-shot fault used it up.
        """
        fault = self._faults.get(name)
        if fault is not None and fault.empty:
            self.clear(name)

    def _fault(self, name: str) -> Fault:
        fault = self._faults.get(name)
        if fault is None:
            fault = self._faults[name] = Fault(name)
        return fault

    def _publish(self, name: str) -> None:
        cell = self._lookup(name)
        if cell is not None:
            cell.fault = self._faults.get(name)
