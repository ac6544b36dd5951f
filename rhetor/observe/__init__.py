"""
Seeing inside Rhetor: request ids, the access log, metrics and traces.

How it fits: the edge opens an :class:`Observation` for each request and
binds it to the serving task (:func:`bind`); the runtime hands it to the
router inside its ``Generate`` message, and the routing layer records into
:func:`current` what it learns (attempts, upstream time, first token, tokens,
cost). When the request ends the edge turns it into one access-log line
(:func:`access_line`), metrics (:class:`Metrics`) and, when tracing is on,
a span (:func:`configure_tracing`). It sits below every other layer but the
shared values, so any of them may record; it never imports them.
"""

from rhetor.observe._logging import (
    LOG_FORMATS,
    LOG_LEVELS,
    JSONFormatter,
    LogFormat,
    RequestIdFilter,
    TextFormatter,
    access_fields,
    access_line,
    configure_logging,
    effective_configuration,
    log_configuration,
    log_lifecycle,
)
from rhetor.observe._metrics import CONTENT_TYPE, Metrics, multiprocess_dir, process_exited
from rhetor.observe._record import (
    DISCARD,
    REQUEST_ID_HEADER,
    Attempt,
    Observation,
    bind,
    current,
    fresh_request_id,
    request_id,
    valid_request_id,
)
from rhetor.observe._tracing import (
    configure_tracing,
    end_request_span,
    shutdown_tracing,
    start_request_span,
    tracing_enabled,
)

__all__ = [
    "CONTENT_TYPE",
    "DISCARD",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "REQUEST_ID_HEADER",
    "Attempt",
    "JSONFormatter",
    "LogFormat",
    "Metrics",
    "Observation",
    "RequestIdFilter",
    "TextFormatter",
    "access_fields",
    "access_line",
    "bind",
    "configure_logging",
    "configure_tracing",
    "current",
    "effective_configuration",
    "end_request_span",
    "fresh_request_id",
    "log_configuration",
    "log_lifecycle",
    "multiprocess_dir",
    "process_exited",
    "request_id",
    "shutdown_tracing",
    "start_request_span",
    "tracing_enabled",
    "valid_request_id",
]
