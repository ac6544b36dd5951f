"""
One request's observation: what the access log, the metrics and the trace are made of.

The edge opens an :class:`Observation` for every HTTP request and every
WebSocket request, and binds it to the task that serves it (a context
variable, so every log line written while serving it carries its request
id). The router's task is another task: the runtime hands it the
observation inside its ``Generate`` message, and the router binds it again.
The parts below the edge then write what they learn into it (the attempts,
their upstream time, the first token, tokens and cost, budget refusals),
and the edge turns it into one access-log line, metrics and a span when the
request ends.

Nothing here does I/O. Without an observation bound (``rhetor.runtime`` used
in-process), :func:`current` answers :data:`DISCARD`, whose methods do
nothing, so the recording code never needs to ask.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from contextvars import ContextVar
from typing import Any, Literal

import attrs

from rhetor._types import new_request_id

__all__ = [
    "CLIENT_CLOSED",
    "DISCARD",
    "REQUEST_ID_HEADER",
    "Attempt",
    "AttemptOutcome",
    "Observation",
    "bind",
    "current",
    "fresh_request_id",
    "request_id",
    "valid_request_id",
]

REQUEST_ID_HEADER = "X-Request-ID"
# The status of a request whose client went away before it was answered (nginx's).
CLIENT_CLOSED = 499
# A client's X-Request-ID is used only when it is this shape: bounded, and made
# of characters that need no quoting in a header, a log line or a metric.
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+=\-]{0,127}")

# What traced() gives while tracing is off: a block that gets None (reusable).
_NO_SPAN: AbstractContextManager[None] = nullcontext()

# How an attempt ended: answered, failed, cut short (a stream, or cancelled), or refused by the budget.
AttemptOutcome = Literal["ok", "failed", "partial", "refused"]


def valid_request_id(raw: str | bytes | None) -> str | None:
    """``raw`` as a request id if it is one Rhetor may echo (1-128 safe characters), else None."""
    if raw is None:
        return None
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("ascii")
        except UnicodeDecodeError:
            return None
    return raw if _REQUEST_ID.fullmatch(raw) else None


@attrs.define(eq=False, slots=True)
class Attempt:
    """One provider call (or one budget refusal) made for a request."""

    provider: str
    model: str
    outcome: AttemptOutcome
    # The error's code (``upstream_server_error``, ``budget_exceeded``...) when it did not answer.
    error_type: str | None = None
    # Seconds the provider call took (0 for a refusal).
    seconds: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cost: float = 0.0
    # The retry it was (0: the candidate's first call).
    retry: int = 0


@attrs.define(eq=False, slots=True)
class Observation:
    """
    Everything one request's access-log line, metrics and span need.

    Times are ``time.perf_counter()`` readings. ``upstream`` is the time
    spent in provider calls; Rhetor's overhead is the total minus it.
    """

    request_id: str
    # "GET", "POST"...; "WS" for a request made over a WebSocket.
    method: str
    # The route's rule ("/contexts/<context_id>"), or the WebSocket frame type.
    route: str
    path: str = ""
    client: str | None = None
    started: float = attrs.field(factory=time.perf_counter)
    status: int = 0
    component: str | None = None
    task_type: str | None = None
    context_id: str | None = None
    # The provider and model that answered.
    provider: str | None = None
    model: str | None = None
    attempts: list[Attempt] = attrs.field(factory=list)
    # Seconds spent in provider calls that ended; plus the one in progress, if any.
    upstream: float = 0.0
    call_started: float | None = None
    first_token: float | None = None
    ended: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cost: float = 0.0
    budget_warning: str | None = None
    downgraded: bool = False
    error_type: str | None = None
    error: str | None = None
    # Seconds each durable ledger write (a reservation, a charge) took, as the router waited for it.
    ledger_writes: list[float] = attrs.field(factory=list)
    # The request's OpenTelemetry span while tracing is on; None otherwise.
    span: Any = None
    # The socket a WebSocket request came on (its own request id).
    socket: str | None = None

    # -- what the routing layer records --------------------------------------------

    def call_begins(self) -> float:
        """A provider call starts now; answers the reading to give :meth:`call_ends`."""
        now = time.perf_counter()
        self.call_started = now
        return now

    def call_ends(self, began: float) -> float:
        """The provider call begun at ``began`` ended; answers its seconds."""
        seconds = time.perf_counter() - began
        self.upstream += seconds
        self.call_started = None
        return seconds

    def token_arrived(self) -> None:
        """Text (a stream's first piece, or a whole reply) is ready for the caller."""
        if self.first_token is None:
            self.first_token = time.perf_counter()

    def attempted(self, attempt: Attempt) -> None:
        """One provider call, or one budget refusal, is over."""
        self.attempts.append(attempt)
        self.cost += attempt.cost
        self.input_tokens += attempt.input_tokens
        self.output_tokens += attempt.output_tokens
        self.cached_input_tokens += attempt.cached_input_tokens

    def answered(self, provider: str, model: str) -> None:
        """``provider``/``model`` answered the request."""
        self.provider, self.model = provider, model

    def asked(self, component: str | None, task_type: str, context_id: str | None) -> None:
        """Who asked, and for what: the request's component, task type and context."""
        self.component, self.task_type, self.context_id = component, task_type, context_id

    def budget_noted(self, warning: str, *, downgraded: bool) -> None:
        """The reply carries a budget warning; ``downgraded``: a cheaper model stood in."""
        self.budget_warning, self.downgraded = warning, downgraded

    def routed(self, route: str) -> None:
        """The request matched ``route`` (a rule such as ``/contexts/<context_id>``)."""
        self.route = route

    def ledger_written(self, seconds: float) -> None:
        """A reservation or a charge became durable after ``seconds``."""
        self.ledger_writes.append(seconds)

    def client_left(self) -> None:
        """
        The client went away before any reply started: status 499, error type ``cancelled``.

        What a WebSocket request its client cancels is logged as, so that a
        client that gives up is not counted as a server error (a 500).
        """
        if self.status == 0:
            self.status = CLIENT_CLOSED
            if self.error_type is None:
                self.error_type, self.error = "cancelled", "the client went away before the reply"

    def failed(self, error: BaseException) -> None:
        """The request failed with ``error`` (the first failure recorded is kept)."""
        if self.error_type is None:
            self.error_type = getattr(error, "code", None) or type(error).__name__
            self.error = str(getattr(error, "message", None) or error)[:300]

    def traced(
        self, name: str, attributes: Mapping[str, Any] | None = None
    ) -> AbstractContextManager[Any]:
        """
        A child span of the request's span while tracing is on; nothing otherwise.

        Its block gets the span (or None), so that the caller may add attributes to it.
        """
        if self.span is None:
            return _NO_SPAN
        from rhetor.observe._tracing import child_span  # only imported when tracing is on

        return child_span(self.span, name, attributes)

    # -- what the edge reads ---------------------------------------------------------

    def upstream_so_far(self, now: float) -> float:
        """Seconds in provider calls by ``now``, counting the call in progress."""
        running = 0.0 if self.call_started is None else now - self.call_started
        return self.upstream + running

    @property
    def retries(self) -> int:
        return sum(1 for a in self.attempts if a.retry > 0)

    @property
    def fallbacks(self) -> int:
        """How many candidates were left for another (a failure or a refusal, then another tried)."""
        candidates: list[tuple[str, str]] = []
        for a in self.attempts:
            key = (a.provider, a.model)
            if not candidates or candidates[-1] != key:
                candidates.append(key)
        return max(0, len(candidates) - 1)


class _Discarded(Observation):
    """The observation of a request nobody observes: every record is dropped."""

    __slots__ = ()

    def call_begins(self) -> float:
        return time.perf_counter()

    def call_ends(self, began: float) -> float:
        return time.perf_counter() - began

    def token_arrived(self) -> None:
        return None

    def attempted(self, attempt: Attempt) -> None:
        return None

    def answered(self, provider: str, model: str) -> None:
        return None

    def asked(self, component: str | None, task_type: str, context_id: str | None) -> None:
        return None

    def budget_noted(self, warning: str, *, downgraded: bool) -> None:
        return None

    def routed(self, route: str) -> None:
        return None

    def ledger_written(self, seconds: float) -> None:
        return None

    def client_left(self) -> None:
        return None

    def failed(self, error: BaseException) -> None:
        return None


DISCARD: Observation = _Discarded("", "", "")
_current: ContextVar[Observation] = ContextVar("rhetor_observation", default=DISCARD)


def current() -> Observation:
    """The observation of the request this task serves (:data:`DISCARD` when none)."""
    return _current.get()


def request_id() -> str | None:
    """The id of the request this task serves, or None."""
    observation = _current.get()
    return observation.request_id or None


def bind(observation: Observation | None) -> None:
    """
    Make ``observation`` this task's (None: none).

    For a task that serves one request and ends with it: tasks it starts
    inherit it, and it is gone with the task.
    """
    _current.set(DISCARD if observation is None else observation)


def fresh_request_id() -> str:
    """A new request id (this process's prefix and a counter)."""
    return new_request_id()
