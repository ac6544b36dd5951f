"""
Errors raised by the actor runtime: one hierarchy, every error names its actor.

The whole tree::

    ActorError                    base of everything the runtime raises
    ├── ActorDied                 the actor died before answering; __cause__ is why
    │   ├── ActorStopped          the actor (or the system) is stopped for good
    │   └── StartFailed           the actor's started() hook raised
    ├── PoisonMessage             the message crashed its actor twice and was dropped
    ├── HandlerFailed             the handler failed on this one message; the actor contained it
    ├── AskTimeout                no answer before the ask's deadline (also TimeoutError)
    ├── NoSuchActor               no actor or supervisor has that name (also LookupError)
    ├── DuplicateName             the name is already taken in this system
    ├── InvalidSpec               a spec or argument makes no sense (also ValueError)
    ├── NotStreaming              the actor was asked to stream but has no handle_stream
    ├── EscalationError           a supervisor exceeded its restart intensity and gave up
    └── InvariantBroken           raised by an actor whose own state is broken: never contained
        └── InjectedCrash         the crash made on purpose by ``Faults.crash_next``

``ActorStopped`` is an ``ActorDied`` so that ``except ActorDied`` covers every way a
callee can be gone. Errors an actor lists in ``Actor.errors`` are answers, not crashes:
they reach the asker with their own type and are not part of this tree.

``InvariantBroken`` is the one error here that actors raise themselves rather than the
runtime: it says "my state is wrong, restart me", so it crashes the actor even when
its ``contained`` types would cover it (so does ``AssertionError``).
"""

from __future__ import annotations

__all__ = [
    "ActorDied",
    "ActorError",
    "ActorStopped",
    "AskTimeout",
    "DuplicateName",
    "EscalationError",
    "HandlerFailed",
    "InjectedCrash",
    "InvalidSpec",
    "InvariantBroken",
    "NoSuchActor",
    "NotStreaming",
    "PoisonMessage",
    "StartFailed",
]


class ActorError(Exception):
    """
    Base of every error the actor runtime raises; ``name`` is the actor concerned.
    """

    def __init__(self, message: str, *, name: str | None = None) -> None:
        super().__init__(message if name is None else f"{name}: {message}")
        self.name = name


class ActorDied(ActorError):
    """
    Raised to a caller whose callee died before answering; ``__cause__`` is the crash.
    """


class ActorStopped(ActorDied):
    """
    Raised when sending to an actor that is stopped for good, or was stopped mid-ask.
    """


class StartFailed(ActorDied):
    """
    Raised by spawn or start_child when the actor's ``started()`` hook raised.
    """


class PoisonMessage(ActorError):
    """
    Raised to the sender of a message that crashed its actor twice; it was dropped.
    """


class HandlerFailed(ActorError):
    """
    Raised to the sender of one message whose handler failed with an exception the
    actor contains (``Actor.contained``); the actor keeps running.

    ``__cause__`` is the handler's exception, with its traceback, and ``boxed_type``
    its type, so callers can tell failures apart without unwrapping.
    """

    def __init__(
        self, message: str, *, name: str | None = None, boxed_type: type[BaseException]
    ) -> None:
        super().__init__(message, name=name)
        self.boxed_type = boxed_type


class AskTimeout(ActorError, TimeoutError):
    """
    Raised when an ask (or one item of a stream) has no answer before its deadline.
    """


class NoSuchActor(ActorError, LookupError):
    """
    Raised when looking up a name that no running actor or supervisor has.
    """


class DuplicateName(ActorError):
    """
    Raised when spawning or starting a child under a name that is already taken.
    """


class InvalidSpec(ActorError, ValueError):
    """
    Raised for a child spec, supervisor spec or argument (a negative timeout) that makes
    no sense.
    """


class NotStreaming(ActorError):
    """
    Raised to a stream reader when the actor does not implement ``handle_stream``.
    """


class EscalationError(ActorError):
    """
    Raised when a supervisor restarted too often and gave up; ``__cause__`` is the last
    crash.
    """


class InvariantBroken(ActorError):
    """
    Raised by an actor's own code when its state is broken (a connection left in a
    transaction, a total that went negative): it always crashes the actor, so its
    supervisor restarts it with fresh state, whatever the actor contains.
    """


class InjectedCrash(InvariantBroken):
    """
    The crash ``Faults.crash_next`` makes an actor raise when no exception was given;
    an invariant break on purpose, so it crashes even an actor that contains failures.
    """
