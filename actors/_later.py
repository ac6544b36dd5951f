"""
Later: an answer that an actor gives after its handler returned.

A handler that would only wait for something its actor does anyway (a group
commit, a batch) can return a :class:`Later` instead of waiting in a task of
its own, and resolve or fail it when that happens. The message stays in flight
meanwhile: it counts against ``max_concurrency``, an orderly stop waits for it,
and if the incarnation ends first (a crash, a kill) its sender gets the
``ActorDied`` or ``ActorStopped`` that an interrupted handler's sender gets;
whatever the Later is told afterwards is ignored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._envelope import Envelope
    from ._serving import Serving, _Slots

__all__ = ["Later"]


class Later:
    """
    An answer to come: returned by a handler, then resolved (or failed) once.

    Only for actors with ``max_concurrency`` above 1. Resolving or failing it
    before the handler returns is allowed (the message is answered at once);
    only the first of ``resolve`` and ``fail`` counts. One Later answers one
    message.
    """

    __slots__ = ("_cell", "_envelope", "_error", "_in_flight", "_settled", "_slots", "_value")

    def __init__(self) -> None:
        self._settled = False
        self._value: Any = None
        self._error: BaseException | None = None
        # Set when the serving loop takes it as a message's answer (_bind).
        self._envelope: Envelope | None = None
        self._cell: Serving | None = None
        self._in_flight: set[Envelope] | None = None
        self._slots: _Slots | None = None

    @property
    def settled(self) -> bool:
        """Whether ``resolve`` or ``fail`` was called."""
        return self._settled

    def resolve(self, value: Any = None) -> None:
        """Answer the message with ``value`` (a second answer is ignored)."""
        self._answer(value, None)

    def fail(self, error: BaseException) -> None:
        """Answer the message with ``error``, raised in its sender's task (a second answer is ignored)."""
        self._answer(None, error)

    def _answer(self, value: Any, error: BaseException | None) -> None:
        if self._settled:
            return
        self._settled = True
        self._value = value
        self._error = error
        if self._envelope is not None:
            self._finish()

    def _bind(
        self, envelope: Envelope, cell: Serving, in_flight: set[Envelope], slots: _Slots
    ) -> None:
        """The serving loop's part: ``envelope`` (in ``in_flight``) is this Later's message."""
        if self._cell is not None:
            raise RuntimeError("a Later answers one message")
        self._envelope = envelope
        self._cell = cell
        self._in_flight = in_flight
        self._slots = slots
        if self._settled:
            self._finish()

    def _finish(self) -> None:
        envelope, in_flight = self._envelope, self._in_flight
        assert envelope is not None
        assert in_flight is not None
        assert self._slots is not None
        self._envelope = None
        if self._error is not None:
            envelope.fail(self._error)
        else:
            envelope.resolve(self._value)
        # An incarnation that ended meanwhile emptied its set (and failed the message).
        if envelope in in_flight:
            in_flight.discard(envelope)
            assert self._cell is not None
            self._cell.handled += 1
            self._slots.freed()
