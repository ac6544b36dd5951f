"""
OpenTelemetry traces: one span per request, child spans for its parts, exported over OTLP.

Tracing is on only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set when
:func:`configure_tracing` runs (``rhetor serve`` calls it), or when a test
hands it an exporter. Off, nothing of OpenTelemetry is imported and each
request pays one check of a module global: :attr:`Observation.span` stays
None, and :meth:`Observation.traced` yields None without a span.

Spans carry the OpenTelemetry semantic conventions' attributes: HTTP ones on
the request's span (``http.request.method``, ``http.route``,
``http.response.status_code``), GenAI ones on a provider attempt
(``gen_ai.operation.name``, ``gen_ai.provider.name``, ``gen_ai.request.model``,
``gen_ai.response.model``, ``gen_ai.usage.input_tokens``,
``gen_ai.usage.output_tokens``, ``error.type``) and on the request's span
once it is answered.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

    from rhetor.observe._record import Observation

__all__ = [
    "child_span",
    "configure_tracing",
    "end_request_span",
    "start_request_span",
    "tracing_enabled",
]

# The tracer while tracing is on; None (the default) costs requests nothing.
_tracer: Any = None
_provider: Any = None


def tracing_enabled() -> bool:
    """Whether requests are traced now."""
    return _tracer is not None


def configure_tracing(
    env: Mapping[str, str] | None = None, *, exporter: SpanExporter | None = None
) -> bool:
    """
    Turn tracing on when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, or with ``exporter``.

    The OTLP/HTTP exporter sends to ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, or
    to ``OTEL_EXPORTER_OTLP_ENDPOINT`` plus ``/v1/traces``, reads the other
    standard ``OTEL_EXPORTER_OTLP_*`` variables (headers, timeout) itself and
    sends in batches from its own thread; an
    ``exporter`` given here (a test's in-memory one) gets each span as it
    ends. Answers whether tracing is on. Calling it again replaces the
    previous configuration (flushing it); with neither, tracing goes off.

    Error handling: with the endpoint set and the optional packages missing
    (``pip install 'rhetor[otel]'``), ``ImportError`` says which.
    """
    global _tracer, _provider
    env = os.environ if env is None else env
    shutdown_tracing()
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if exporter is None and not endpoint:
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        if not env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
            # The base endpoint's traces path, as the OTLP/HTTP specification has it.
            endpoint = f"{str(endpoint).rstrip('/')}/v1/traces"
        processor: Any = BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint))
    else:
        processor = SimpleSpanProcessor(exporter)
    service = env.get("OTEL_SERVICE_NAME") or "rhetor"
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(processor)
    _provider = provider
    _tracer = provider.get_tracer("rhetor")
    return True


def shutdown_tracing() -> None:
    """Flush and stop the tracing configured now, if any; tracing is off afterwards."""
    global _tracer, _provider
    provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        provider.shutdown()


def start_request_span(observation: Observation) -> None:
    """Open the request's span (a server span) on ``observation`` if tracing is on."""
    tracer = _tracer
    if tracer is None:
        return
    from opentelemetry.trace import SpanKind

    observation.span = tracer.start_span(
        f"{observation.method} {observation.route}",
        kind=SpanKind.SERVER,
        attributes={
            "http.request.method": observation.method,
            "url.path": observation.path,
            "rhetor.request_id": observation.request_id,
        },
    )


def end_request_span(observation: Observation) -> None:
    """Close the request's span with what it came to: route, status, model, tokens, cost, error."""
    span = observation.span
    if span is None:
        return
    from opentelemetry.trace import Status, StatusCode

    span.update_name(f"{observation.method} {observation.route}")
    attributes: dict[str, Any] = {
        "http.route": observation.route,
        "http.response.status_code": observation.status,
        "rhetor.attempts": len(observation.attempts),
        "rhetor.cost_usd": observation.cost,
        "rhetor.upstream_seconds": observation.upstream,
    }
    optional = {
        "rhetor.component": observation.component,
        "rhetor.task_type": observation.task_type,
        "gen_ai.provider.name": observation.provider,
        "gen_ai.response.model": observation.model,
        "error.type": observation.error_type,
    }
    attributes.update((k, v) for k, v in optional.items() if v is not None)
    if observation.provider is not None:
        attributes["gen_ai.operation.name"] = "chat"
        attributes["gen_ai.usage.input_tokens"] = observation.input_tokens
        attributes["gen_ai.usage.output_tokens"] = observation.output_tokens
    span.set_attributes(attributes)
    if observation.status >= 500 or (observation.status == 0 and observation.error_type):
        span.set_status(Status(StatusCode.ERROR, observation.error_type or ""))
    span.end()
    observation.span = None


@contextmanager
def child_span(parent: Any, name: str, attributes: Mapping[str, Any] | None) -> Iterator[Any]:
    """
    A span under ``parent`` for the block; an exception leaving it marks it failed.

    The span is never made current (no context is attached), so it cannot
    leak into another task's traces.
    """
    tracer = _tracer
    if tracer is None:
        yield None
        return
    from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

    kind = SpanKind.CLIENT if name.startswith("chat ") else SpanKind.INTERNAL
    span = tracer.start_span(
        name,
        context=set_span_in_context(parent),
        kind=kind,
        attributes={k: v for k, v in (attributes or {}).items() if v is not None},
    )
    try:
        yield span
    except BaseException as exc:
        code = getattr(exc, "code", None) or type(exc).__name__
        span.set_attribute("error.type", code)
        span.set_status(Status(StatusCode.ERROR, code))
        raise
    finally:
        span.end()
