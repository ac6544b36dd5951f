"""
The database's outage gate: calls fail at once while PostgreSQL is unreachable, one probe at a time.

Without it, every call made while PostgreSQL is down (restarting, cut off)
would wait for the pool's deadline (``pool_timeout``, seconds) before it
failed, and a budget check under ``warn`` that is meant to proceed would
hold its request that long. :class:`Breaker` notes the first failure that
says the database is out of reach (a connection refused or lost, the
server shutting down, no connection free in time), and from then on
refuses every call with :class:`~rhetor.StorageUnavailable` at once, except
one *probe* at a time, let through after a short wait that doubles while
the probes fail (0.2 s up to 2 s). The first probe that succeeds closes the
gate: the database is reachable again, with no restart and nothing done by
hand. A probe first opens a connection of its own (which fails at once
while the server refuses, where the pool would wait out its deadline), then
has the pool check its idle connections, so those the outage broke are
replaced rather than failing one call each.

Failures that are not about reaching the database (a constraint, a
statement timeout, a lock wait) do not trip it.

:meth:`Breaker.admit`, :meth:`Breaker.failed` and :meth:`Breaker.succeeded`
are called around each use of a pooled connection
(:meth:`~rhetor.storage._pg.PgDatabase.connection`), from any thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import attrs
import psycopg
import psycopg_pool

from rhetor._errors import StorageUnavailable

__all__ = ["Breaker", "out_of_reach"]

log = logging.getLogger("rhetor.storage")

# SQLSTATEs that mean the server is going away or not yet there:
# admin_shutdown, crash_shutdown, cannot_connect_now.
_SHUTTING_DOWN = frozenset({"57P01", "57P02", "57P03"})


def out_of_reach(error: BaseException) -> bool:
    """
    Whether ``error`` (psycopg's, or Rhetor's with psycopg's as its cause) says the database is out of reach.

    A connection refused, lost or closed (SQLSTATE class 08, or none at all:
    libpq's own), the server shutting down, or no pooled connection in time.
    """
    cause = error if isinstance(error, psycopg.Error) else error.__cause__
    if isinstance(cause, psycopg_pool.PoolTimeout | psycopg.InterfaceError):
        return True
    if isinstance(cause, psycopg.OperationalError):
        state = cause.sqlstate
        return state is None or state.startswith("08") or state in _SHUTTING_DOWN
    return False


@attrs.define(eq=False)
class Breaker:
    """
    Refuses calls at once while the database is out of reach; lets one probe through at a time.

    Thread-safe. ``first_wait`` and ``longest_wait`` bound the pause before
    each probe, in seconds (it doubles while probes fail).
    """

    first_wait: float = 0.2
    longest_wait: float = 2.0
    _clock: Callable[[], float] = attrs.field(default=time.monotonic, alias="clock")
    _lock: threading.Lock = attrs.field(init=False, factory=threading.Lock)
    # Invariant: None while the database is reachable; else when the outage was noticed.
    _down_since: float | None = attrs.field(init=False, default=None)
    _last_error: str = attrs.field(init=False, default="")
    # The driver's error that tripped the gate: the cause of every refusal meanwhile.
    _last_cause: BaseException | None = attrs.field(init=False, default=None)
    _wait: float = attrs.field(init=False, default=0.0)
    _next_probe: float = attrs.field(init=False, default=0.0)
    # Invariant: True while one probe is out (no second one is let through).
    _probing: bool = attrs.field(init=False, default=False)
    outages: int = attrs.field(init=False, default=0)
    refused: int = attrs.field(init=False, default=0)

    @property
    def down(self) -> bool:
        """Whether the last word on the database is that it is out of reach."""
        return self._down_since is not None

    def admit(self) -> bool:
        """
        Let a call through; answers whether it is the probe of an outage.

        Error handling: :class:`StorageUnavailable` at once during an outage,
        unless this call is the probe.
        """
        with self._lock:
            if self._down_since is None:
                return False
            now = self._clock()
            if not self._probing and now >= self._next_probe:
                self._probing = True
                return True
            self.refused += 1
            down_for = now - self._down_since
            error, cause = self._last_error, self._last_cause
        raise StorageUnavailable(
            f"the database is unreachable (for {down_for:.1f}s; retrying): {error}"
        ) from cause

    def failed(self, error: BaseException, probe: bool) -> None:
        """
        A call let through by :meth:`admit` failed with ``error``; trips the gate if it says so.
        """
        reach = out_of_reach(error)
        with self._lock:
            if probe:
                self._probing = False
            if not reach:
                if probe:
                    # It reached the database, and failed for a reason of its own.
                    self._close()
                return
            now = self._clock()
            self._last_error = _first_line(error)
            self._last_cause = error.__cause__ if isinstance(error, StorageUnavailable) else error
            if self._down_since is None:
                self._down_since = now
                self._wait = self.first_wait
                self.outages += 1
                log.error(
                    "the database is unreachable; failing calls at once and probing: %s",
                    self._last_error,
                )
            elif probe:
                self._wait = min(self.longest_wait, self._wait * 2)
            self._next_probe = now + self._wait

    def succeeded(self, probe: bool) -> None:
        """A call let through by :meth:`admit` reached the database."""
        if not probe and self._down_since is None:
            return
        with self._lock:
            if probe:
                self._probing = False
            self._close()

    def abandoned(self, probe: bool) -> None:
        """A call let through ended without a verdict (cancelled): the next probe may go."""
        if probe:
            with self._lock:
                self._probing = False

    def _close(self) -> None:
        """The database answered: the outage (if any) is over. Called under the lock."""
        if self._down_since is not None:
            log.warning(
                "the database is reachable again after %.1fs", self._clock() - self._down_since
            )
        self._down_since = None
        self._wait = 0.0


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
