"""
Child and supervisor specs: frozen values that say what to start and how to restart it.

Specs are checked when they are built, so a spec that makes no sense fails with
``InvalidSpec`` at the line that wrote it, not later inside a supervisor.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import attrs

from ._errors import InvalidSpec

if TYPE_CHECKING:
    from ._actor import Actor

__all__ = ["ChildSpec", "Restart", "Strategy", "SupervisorSpec"]

Restart: TypeAlias = Literal["permanent", "transient", "temporary"]
Strategy: TypeAlias = Literal["one_for_one", "one_for_all", "rest_for_one"]

# Shared by every spec without kwargs: read-only, so one empty mapping serves all.
NO_KWARGS: Mapping[str, Any] = MappingProxyType({})

_RESTARTS = ("permanent", "transient", "temporary")
_STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")


def check_timeout(value: object, what: str, *, name: str | None = None) -> float:
    """
    Return ``value`` as a float if it is a usable timeout (0 or more, may be inf).
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidSpec(f"{what} must be a number, not {value!r}", name=name)
    if math.isnan(value) or value < 0:
        raise InvalidSpec(f"{what} must be 0 or more, not {value!r}", name=name)
    return float(value)


def check_mailbox_size(value: object, *, name: str | None = None) -> int:
    """
    Return ``value`` if it is a usable mailbox size (a positive int).
    """
    # A mailbox of 0 would be a rendezvous; the runtime's wake-up protocol relies on the
    # buffer holding at least one message, so it is refused here rather than hanging.
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidSpec(f"mailbox_size must be an int of 1 or more, not {value!r}", name=name)
    return value


@attrs.frozen
class ChildSpec:
    """
    What a supervisor starts: an actor (class or factory) or a nested supervisor.
    """

    name: str
    factory: Callable[..., Actor] | type[Actor] | SupervisorSpec
    restart: Restart = "permanent"
    shutdown_timeout: float = 5.0
    mailbox_size: int | None = None
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = attrs.field(factory=lambda: NO_KWARGS)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InvalidSpec(f"a child needs a non-empty str name, not {self.name!r}")
        if not (isinstance(self.factory, SupervisorSpec) or callable(self.factory)):
            raise InvalidSpec(
                f"factory must be an Actor class, a callable or a SupervisorSpec, "
                f"not {self.factory!r}",
                name=self.name,
            )
        if self.restart not in _RESTARTS:
            raise InvalidSpec(
                f"restart must be one of {_RESTARTS}, not {self.restart!r}", name=self.name
            )
        check_timeout(self.shutdown_timeout, "shutdown_timeout", name=self.name)
        if self.mailbox_size is not None:
            check_mailbox_size(self.mailbox_size, name=self.name)
        if not isinstance(self.args, tuple):
            raise InvalidSpec(f"args must be a tuple, not {self.args!r}", name=self.name)
        if not isinstance(self.kwargs, Mapping):
            raise InvalidSpec(f"kwargs must be a mapping, not {self.kwargs!r}", name=self.name)
        if isinstance(self.factory, SupervisorSpec) and (self.args or self.kwargs):
            raise InvalidSpec("a supervisor child takes no args or kwargs", name=self.name)


@attrs.frozen
class SupervisorSpec:
    """
    How a supervisor runs its children: which, in what order, and how it restarts them.

    A spec with ``children=()`` is a dynamic set: children are added at run time with
    ``SupervisorRef.start_child``.
    """

    children: Sequence[ChildSpec] = ()
    strategy: Strategy = "one_for_one"
    intensity: int = 3
    period: float = 5.0

    def __attrs_post_init__(self) -> None:
        if self.strategy not in _STRATEGIES:
            raise InvalidSpec(f"strategy must be one of {_STRATEGIES}, not {self.strategy!r}")
        if isinstance(self.intensity, bool) or not isinstance(self.intensity, int):
            raise InvalidSpec(f"intensity must be an int, not {self.intensity!r}")
        if self.intensity < 0:
            raise InvalidSpec(f"intensity must be 0 or more, not {self.intensity!r}")
        period = check_timeout(self.period, "period")
        if period == 0:
            raise InvalidSpec("period must be more than 0")
        if isinstance(self.children, str | bytes) or not isinstance(self.children, Sequence):
            raise InvalidSpec(f"children must be a sequence of ChildSpec, not {self.children!r}")
        seen: set[str] = set()
        for child in self.children:
            if not isinstance(child, ChildSpec):
                raise InvalidSpec(f"children must be ChildSpec values, not {child!r}")
            if child.name in seen:
                raise InvalidSpec("two children have the same name", name=child.name)
            seen.add(child.name)
