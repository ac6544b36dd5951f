"""
Rhetor's metrics, in the Prometheus text format (prometheus-client).

:class:`Metrics` holds every metric of one server; the edge records each
finished request into it (:meth:`Metrics.record`), samples what the actors
know now (:meth:`Metrics.sample`: provider availability, budget left,
mailboxes, restarts, ledger errors) and renders it for ``GET /metrics``.
Metric names follow the OpenTelemetry semantic conventions where one exists
(``gen_ai.client.token.usage`` is ``gen_ai_client_token_usage``, and so on,
with their attributes as labels); the rest are ``rhetor_*``. The table is in
``docs/observability.md``.

With ``PROMETHEUS_MULTIPROC_DIR`` set when the process starts, every worker
process writes its values to files in that directory and ``/metrics``, in
any worker, adds them up (prometheus-client's multiprocess mode); gauges say
how (``livesum``, ``mostrecent``). The directory must be empty when the
workers start, and whoever restarts a worker calls :func:`process_exited`.

Label values a client can choose (a component, a model name) are bounded:
past :data:`MAX_LABEL_VALUES` distinct values of one label, new ones are
counted as ``other``, so that no client can grow the metrics without bound.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from rhetor.observe._record import Observation

__all__ = [
    "CONTENT_TYPE",
    "MAX_LABEL_VALUES",
    "Metrics",
    "multiprocess_dir",
    "process_exited",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Distinct values one label may take before new ones count as "other".
MAX_LABEL_VALUES = 200
_MAX_LABEL_LENGTH = 100

# The OpenTelemetry GenAI conventions' advised buckets.
_DURATION_BUCKETS = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)
_TOKEN_BUCKETS = (
    1,
    4,
    16,
    64,
    256,
    1024,
    4096,
    16384,
    65536,
    262144,
    1048576,
    4194304,
    16777216,
    67108864,
)
# Rhetor's own share of a request is small: finer buckets.
_OVERHEAD_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 30, 60)

_GEN_AI = ("gen_ai_operation_name", "gen_ai_provider_name")


def multiprocess_dir() -> str | None:
    """The directory of prometheus-client's multiprocess mode, if this process uses it."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def process_exited(pid: int, directory: str | None = None) -> None:
    """
    Drop a dead worker's live gauges from ``directory`` (default: this process's).

    For the parent of the workers, when one exits; a no-op outside multiprocess mode.
    """
    directory = directory or multiprocess_dir()
    if directory is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


class _Bounded:
    """The values one label has taken; past the limit, new ones are ``other``."""

    __slots__ = ("_limit", "_seen")

    def __init__(self, limit: int = MAX_LABEL_VALUES) -> None:
        self._seen: set[str] = set()
        self._limit = limit

    def __call__(self, value: str | None) -> str:
        if value is None:
            return ""
        if value in self._seen:
            return value
        if len(self._seen) >= self._limit:
            return "other"
        value = value[:_MAX_LABEL_LENGTH]
        self._seen.add(value)
        return value


class _Children:
    """
    A metric's labelled children by their label values, looked up without prometheus-client's checks.

    ``metric.labels(...)`` checks and converts every value on each call (about
    a microsecond); a request records a dozen, so each child is looked up here
    once and kept (the values are bounded, see :class:`_Bounded`).
    """

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


class Metrics:
    """
    Every metric of one Rhetor server, in its own registry (or the multiprocess directory).
    """

    def __init__(self) -> None:
        self.multiprocess = multiprocess_dir() is not None
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._component = _Bounded()
        self._model = _Bounded()
        self._route = _Bounded()
        self._other = _Bounded()

        self.requests = Counter(
            "rhetor_requests",
            "Requests answered (HTTP and WebSocket), by who asked, what, which model answered and how it ended.",
            [
                "method",
                "route",
                "status",
                "component",
                "task_type",
                "provider",
                "model",
                "error_type",
            ],
            registry=r,
        )
        self.duration = Histogram(
            "http_server_request_duration_seconds",
            "Total time of a request, from its arrival to its last byte (a WebSocket request: to its answer).",
            ["method", "route", "status"],
            buckets=_HTTP_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            "rhetor_request_overhead_seconds",
            "Rhetor's own share of a request: its total time minus the time spent in provider calls.",
            ["method", "route"],
            buckets=_OVERHEAD_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "gen_ai_server_time_to_first_token_seconds",
            "Time from a request's arrival to its first text (a whole reply: to the reply).",
            [*_GEN_AI, "gen_ai_response_model"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.operation = Histogram(
            "gen_ai_client_operation_duration_seconds",
            "Duration of each call Rhetor made to a provider (every attempt and retry).",
            [*_GEN_AI, "gen_ai_request_model", "error_type"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.tokens = Histogram(
            "gen_ai_client_token_usage",
            "Tokens of each provider call, by type (input, output, cached) and the component billed.",
            [*_GEN_AI, "gen_ai_response_model", "gen_ai_token_type", "component"],
            buckets=_TOKEN_BUCKETS,
            registry=r,
        )
        self.spend = Counter(
            "rhetor_spend_usd",
            "US dollars billed, by provider, model and component.",
            ["provider", "model", "component"],
            registry=r,
        )
        self.budget_events = Counter(
            "rhetor_budget_events",
            "Budget refusals of a candidate, downgrades to a cheaper model, and warnings.",
            ["event", "provider", "model", "component"],
            registry=r,
        )
        self.retries = Counter(
            "rhetor_provider_retries",
            "Provider calls repeated after a transient error.",
            ["provider", "model"],
            registry=r,
        )
        self.fallbacks = Counter(
            "rhetor_provider_fallbacks",
            "Candidates given up for the next one (failed, or refused by the budget).",
            ["provider", "model"],
            registry=r,
        )
        self.errors = Counter(
            "rhetor_provider_errors",
            "Provider calls that failed, by error type.",
            ["provider", "model", "error_type"],
            registry=r,
        )
        self.ledger_write = Histogram(
            "rhetor_ledger_write_seconds",
            "Time until a reservation or a charge was durable in the ledger, as the router waited.",
            buckets=_OVERHEAD_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "http_server_active_requests",
            "HTTP requests being served now.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.websockets = Gauge(
            "rhetor_websocket_sessions",
            "WebSocket sessions open now.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.provider_available = Gauge(
            "rhetor_provider_available",
            "1 when a provider answered its last health check and its actor runs, else 0.",
            ["provider"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.budget_remaining = Gauge(
            "rhetor_budget_remaining_usd",
            "US dollars left before a limit, per period (provider empty: the global limit).",
            ["period", "provider"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.budget_spent = Gauge(
            "rhetor_budget_spent_usd",
            "US dollars spent in the current period.",
            ["period"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.mailbox = Gauge(
            "rhetor_actor_mailbox_depth",
            "Messages waiting in an actor's mailbox.",
            ["actor"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.restarts = Gauge(
            "rhetor_actor_restarts",
            "Times an actor was restarted since the process started.",
            ["actor"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.actor_failures = Gauge(
            "rhetor_actor_failed_messages",
            "Messages whose handler failed and was contained, since the process started.",
            ["actor"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.ledger_errors = Gauge(
            "rhetor_ledger_errors",
            "Ledger writes that failed, and charges billed at their worst case as invalid, since the keeper started.",
            ["kind"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.ledger_commits = Gauge(
            "rhetor_ledger_group_commits",
            "The budget keeper's group commits that wrote anything, since it started.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.ledger_commit_writes = Gauge(
            "rhetor_ledger_group_commit_writes",
            "Reservations, charges and releases those group commits carried, since the keeper started.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.ledger_commit_seconds = Gauge(
            "rhetor_ledger_group_commit_seconds",
            "Seconds those group commits took in all, since the keeper started.",
            registry=r,
            multiprocess_mode="livesum",
        )

        # The per-request metrics' children, cached (see _Children).
        self._requests = _Children(self.requests)
        self._duration = _Children(self.duration)
        self._overhead = _Children(self.overhead)
        self._ttft = _Children(self.ttft)
        self._operation = _Children(self.operation)
        self._tokens = _Children(self.tokens)
        self._spend = _Children(self.spend)

    # -- recording ----------------------------------------------------------------------

    def record(self, o: Observation) -> None:
        """Count one finished request: its line in every per-request metric."""
        ended = o.ended if o.ended is not None else time.perf_counter()
        total = ended - o.started
        route = self._route(o.route)
        status = str(o.status)
        component = self._component(o.component)
        self._requests(
            o.method,
            route,
            status,
            component,
            self._other(o.task_type),
            self._other(o.provider),
            self._model(o.model),
            o.error_type or "",
        ).inc()
        self._duration(o.method, route, status).observe(total)
        self._overhead(o.method, route).observe(max(0.0, total - o.upstream))
        if o.first_token is not None and o.provider is not None:
            self._ttft("chat", o.provider, self._model(o.model)).observe(o.first_token - o.started)
        if o.attempts:
            self._attempts(o, component)
        for seconds in o.ledger_writes:
            self.ledger_write.observe(seconds)

    def _attempts(self, o: Observation, component: str) -> None:
        previous: tuple[str, str] | None = None
        for a in o.attempts:
            provider, model = self._other(a.provider), self._model(a.model)
            if previous is not None and previous != (provider, model):
                self.fallbacks.labels(*previous).inc()
            previous = (provider, model)
            if a.outcome == "refused":
                self.budget_events.labels("refused", provider, model, component).inc()
                continue
            self._operation("chat", provider, model, a.error_type or "").observe(a.seconds)
            if a.retry:
                self.retries.labels(provider, model).inc()
            if a.error_type is not None:
                self.errors.labels(provider, model, a.error_type).inc()
            if a.outcome != "failed":
                for kind, count in (
                    ("input", a.input_tokens),
                    ("output", a.output_tokens),
                    ("cached", a.cached_input_tokens),
                ):
                    if count or kind != "cached":
                        self._tokens("chat", provider, model, kind, component).observe(count)
            if a.cost:
                self._spend(provider, model, component).inc(a.cost)
        if o.provider is not None and o.budget_warning:
            event = "downgraded" if o.downgraded else "warned"
            answered = (self._other(o.provider), self._model(o.model))
            self.budget_events.labels(event, *answered, component).inc()

    # -- sampling -----------------------------------------------------------------------

    def sample(
        self,
        *,
        providers: Mapping[str, bool] | None = None,
        budget: Mapping[str, Any] | None = None,
        actors: Iterable[Any] = (),
    ) -> None:
        """
        Set the gauges of what the actors know now.

        ``providers``: each provider's availability; ``budget``: the
        BudgetKeeper's status (``GET /budget``); ``actors``: ``ActorStats``.
        """
        for name, available in (providers or {}).items():
            self.provider_available.labels(name).set(1 if available else 0)
        if budget is not None:
            for period, status in budget.get("periods", {}).items():
                self.budget_spent.labels(period).set(status.get("spent", 0.0))
                if status.get("remaining") is not None:
                    self.budget_remaining.labels(period, "").set(status["remaining"])
                for provider, spend in status.get("providers", {}).items():
                    self.budget_remaining.labels(period, provider).set(spend["remaining"])
            errors = budget.get("ledger_errors", {})
            for kind in ("failed_writes", "invalid_charges"):
                self.ledger_errors.labels(kind).set(errors.get(kind, 0))
            commits = budget.get("ledger_commits")
            if commits is not None:
                self.ledger_commits.set(commits.get("commits", 0))
                self.ledger_commit_writes.set(commits.get("writes", 0))
                self.ledger_commit_seconds.set(commits.get("seconds", 0.0))
        for stats in actors:
            self.mailbox.labels(stats.name).set(stats.mailbox_depth)
            self.restarts.labels(stats.name).set(stats.restarts)
            self.actor_failures.labels(stats.name).set(stats.failed)

    # -- rendering ----------------------------------------------------------------------

    def render(self) -> bytes:
        """Every metric in the Prometheus text format; in multiprocess mode, every worker's summed."""
        if not self.multiprocess:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
