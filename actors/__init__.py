"""
A generic supervised-actor runtime on anyio (fast paths on trio).

How the layers fit: ``_specs`` and ``_events`` are plain values; ``_envelope`` is one
message and its reply slot; ``_ref`` sends envelopes; ``_cell`` owns an actor's mailbox
and runs its incarnations, and ``_serving`` serves that mailbox; ``_supervisor`` restarts cells; ``_system`` holds the root
supervisor inside one task group (``open_system``). ``_faults`` lets tests break actors
on purpose. Only the names below are public.
"""

from ._actor import Actor
from ._errors import (
    ActorDied,
    ActorError,
    ActorStopped,
    AskTimeout,
    DuplicateName,
    EscalationError,
    HandlerFailed,
    InjectedCrash,
    InvalidSpec,
    InvariantBroken,
    NoSuchActor,
    NotStreaming,
    PoisonMessage,
    StartFailed,
)
from ._events import ActorStats, LifecycleEvent, Subscription
from ._faults import Faults
from ._later import Later
from ._ref import Ref, StreamReader
from ._specs import ChildSpec, SupervisorSpec
from ._supervisor import SupervisorRef
from ._system import System, open_system

__all__ = [
    "Actor",
    "ActorDied",
    "ActorError",
    "ActorStats",
    "ActorStopped",
    "AskTimeout",
    "ChildSpec",
    "DuplicateName",
    "EscalationError",
    "Faults",
    "HandlerFailed",
    "InjectedCrash",
    "InvalidSpec",
    "InvariantBroken",
    "Later",
    "LifecycleEvent",
    "NoSuchActor",
    "NotStreaming",
    "PoisonMessage",
    "Ref",
    "StartFailed",
    "StreamReader",
    "Subscription",
    "SupervisorRef",
    "SupervisorSpec",
    "System",
    "open_system",
]
