"""
Rhetor's log: its configuration, its two formats, the access-log line and lifecycle events.

:func:`configure_logging` is what ``rhetor serve`` calls: one handler on
stderr, the level and the format (``text`` or ``json``) of the settings,
each line with a UTC timestamp and, while a request is served, its request
id. Every line is redacted as it is formatted (:func:`rhetor._redact.redact`),
whatever logger wrote it, on top of the redaction of Rhetor's own records.

:func:`access_line` writes the one line a request ends with (logger
``rhetor.access``); :func:`log_lifecycle` logs the actor runtime's events
(crashes with their traceback, restarts, escalations).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import attrs

from rhetor._redact import REDACTED, redact
from rhetor._settings import LOG_FORMATS, LOG_LEVELS, LogFormat, Settings
from rhetor._types import utc_second
from rhetor.observe._record import current

if TYPE_CHECKING:
    import actors
    from rhetor.observe._record import Observation

__all__ = [
    "LOG_FORMATS",
    "LOG_LEVELS",
    "JSONFormatter",
    "LogFormat",
    "RequestIdFilter",
    "TextFormatter",
    "access_fields",
    "access_line",
    "configure_logging",
    "effective_configuration",
    "log_configuration",
    "log_lifecycle",
]

access_log = logging.getLogger("rhetor.access")
lifecycle_log = logging.getLogger("rhetor.lifecycle")

# The attribute of a record that holds an access line's fields.
_FIELDS = "rhetor_fields"
# Which worker process this is, when several serve one port (set by their parent).
_WORKER = os.environ.get("RHETOR_WORKER_INDEX") or None
# The access line's source, as its records give it.
_HERE = __file__


def _timestamp(created: float) -> str:
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return f"{utc_second(seconds)}.{millis:03d}Z"


class RequestIdFilter(logging.Filter):
    """Stamps a record with the id of the request the logging task serves (``request_id``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            observation = current()
            record.request_id = observation.request_id or None
        return True


_NEEDS_QUOTES = frozenset(' "=\n\t\\')


def _logfmt_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = value if isinstance(value, str) else json.dumps(value)
    if not text or not _NEEDS_QUOTES.isdisjoint(text):
        return json.dumps(text)
    return text


def _logfmt_fields(parts: list[str], fields: Mapping[str, Any]) -> None:
    """Append ``key=value`` to ``parts`` for each field that is not None (as _logfmt_value)."""
    for key, value in fields.items():
        if value is None:
            continue
        kind = type(value)
        if kind is str:  # most: the common case written out
            if value and _NEEDS_QUOTES.isdisjoint(value):
                parts.append(f"{key}={value}")
            else:
                parts.append(f"{key}={json.dumps(value)}")
        elif kind is int or kind is float:
            parts.append(f"{key}={value!r}")
        else:
            parts.append(f"{key}={_logfmt_value(value)}")


@attrs.frozen
class LogLine:
    """What a line says before its traceback: when, how grave, whose, which request, what."""

    created: float
    level: str
    name: str
    request_id: str | None
    message: str
    fields: Mapping[str, Any] | None

    @classmethod
    def of(cls, record: logging.LogRecord) -> LogLine:
        return cls(
            record.created,
            record.levelname,
            record.name,
            getattr(record, "request_id", None),
            record.getMessage(),
            getattr(record, _FIELDS, None),
        )


class TextFormatter(logging.Formatter):
    """
    ``2025-05-01T12:00:00.123Z INFO rhetor.access [request_id] message key=value...``, redacted.
    """

    def format(self, record: logging.LogRecord) -> str:
        line = self.line(LogLine.of(record))
        if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line = f"{line}\n{record.exc_text}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return redact(line)

    def line(self, line: LogLine) -> str:
        """``line`` as text, not yet redacted."""
        parts = [_timestamp(line.created), line.level, line.name]
        if line.request_id:
            parts.append(f"[{line.request_id}]")
        parts.append(line.message)
        if line.fields:
            _logfmt_fields(parts, line.fields)
        return " ".join(parts)


class JSONFormatter(logging.Formatter):
    """One JSON object a line: ``ts``, ``level``, ``logger``, ``message``, ``request_id``, fields, ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        body = self.body(LogLine.of(record))
        if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            body["exc"] = record.exc_text
        if record.stack_info:
            body["stack"] = self.formatStack(record.stack_info)
        return redact(json.dumps(body, default=str))

    def body(self, line: LogLine) -> dict[str, Any]:
        """``line`` as a JSON object."""
        body: dict[str, Any] = {
            "ts": _timestamp(line.created),
            "level": line.level,
            "logger": line.name,
            "message": line.message,
        }
        if line.request_id:
            body["request_id"] = line.request_id
        if line.fields:
            body.update((k, v) for k, v in line.fields.items() if v is not None and k not in body)
        return body

    def line(self, line: LogLine) -> str:
        """``line`` as JSON text, not yet redacted."""
        return json.dumps(self.body(line), default=str)


def configure_logging(
    level: str = "info", fmt: LogFormat = "text", stream: TextIO | None = None
) -> logging.Handler:
    """
    Send every log record at ``level`` or above to ``stream`` (stderr) in format ``fmt``.

    Replaces the handlers the root logger had, so calling it twice does not
    duplicate lines; answers the handler it installed.
    """
    global _handler
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    _handler = handler
    root.setLevel(level.upper())
    # Hypercorn's error log propagates to the root handler, in the same format.
    logging.getLogger("hypercorn.error").propagate = True
    return handler


# Settings that hold a secret: logged as "[redacted]" when set.
_SECRET_SETTINGS = frozenset({"api_key", "anthropic_api_key", "openai_api_key"})


def effective_configuration(settings: Settings) -> dict[str, Any]:
    """``settings`` as JSON values for the start-up line, every secret replaced by ``[redacted]``."""
    shown: dict[str, Any] = {}
    for field in attrs.fields(type(settings)):
        value = getattr(settings, field.name)
        if field.name in _SECRET_SETTINGS:
            value = None if value is None else REDACTED
        elif isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, str):
            value = redact(value)  # a password in a URL
        shown[field.name] = value
    return shown


def log_configuration(settings: Settings) -> None:
    """Log the effective configuration Rhetor starts with (secrets redacted)."""
    lifecycle_log.info(
        "starting with configuration %s",
        json.dumps(effective_configuration(settings), sort_keys=True),
    )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def access_fields(observation: Observation) -> dict[str, Any]:
    """The fields of ``observation``'s access-log line, in order (None: not known)."""
    o = observation
    ended = o.ended if o.ended is not None else time.perf_counter()
    total = ended - o.started
    tried = [
        f"{a.provider}/{a.model}:{a.outcome if a.error_type is None else a.error_type}"
        for a in o.attempts
    ]
    return {
        "method": o.method,
        "route": o.route,
        "path": o.path or None,
        "status": o.status,
        "request_id": o.request_id,
        "socket": o.socket,
        "client": o.client,
        "worker": _WORKER,
        "component": o.component,
        "task_type": o.task_type,
        "context": o.context_id,
        "provider": o.provider,
        "model": o.model,
        "attempts": len(o.attempts) if o.attempts else None,
        "tried": ",".join(tried) or None,
        "retries": o.retries or None,
        "input_tokens": o.input_tokens if o.attempts else None,
        "output_tokens": o.output_tokens if o.attempts else None,
        "cached_input_tokens": o.cached_input_tokens or None,
        "cost_usd": round(o.cost, 10) if o.attempts else None,
        "total_ms": _ms(total),
        "ttft_ms": _ms(None if o.first_token is None else o.first_token - o.started),
        "upstream_ms": _ms(o.upstream) if o.attempts else None,
        "overhead_ms": _ms(max(0.0, total - o.upstream)),
        "budget": o.budget_warning,
        "error_type": o.error_type,
        "error": o.error,
    }


# The handler configure_logging installed last (None: never called in this process).
_handler: logging.StreamHandler[Any] | None = None


def _sole_handler(level: int) -> logging.StreamHandler[Any] | None:
    """
    configure_logging's handler when an access record would reach it alone, unchanged.

    That is: no logger from ``rhetor.access`` up to the root has a filter
    or a handler of its own, the root's only handler is that one, its only
    filter the request id's, and it takes ``level``. Then the line can be
    written straight to its stream; anything else (a test's capture, an
    embedder's handler or filter) gets a log record.
    """
    handler = _handler
    if handler is None or handler.level > level:
        return None
    logger: Any = access_log
    while logger is not None:
        if logger.filters:
            return None
        if logger.parent is None:  # the root
            handlers = logger.handlers
            if len(handlers) != 1 or handlers[0] is not handler:
                return None
            break
        if logger.handlers or not logger.propagate:
            return None
        logger = logger.parent
    filters = handler.filters
    if len(filters) != 1 or type(filters[0]) is not RequestIdFilter:
        return None
    formatter = handler.formatter
    if type(formatter) is not TextFormatter and type(formatter) is not JSONFormatter:
        return None
    return handler


def access_line(observation: Observation) -> None:
    """Write ``observation``'s access-log line (``rhetor.access``, info; warning for a 5xx)."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    fields = access_fields(observation)
    fields.pop("request_id")  # every line about a request carries it already
    level = logging.WARNING if observation.status >= 500 else logging.INFO
    handler = _sole_handler(level)
    if handler is not None:
        # What the handler would write for the record, without making one:
        # a request's line costs a fraction of the logging machinery's.
        formatter: Any = handler.formatter
        message = (
            f"{observation.method} {observation.path or observation.route} {observation.status}"
        )
        line = formatter.line(
            LogLine(
                time.time(),
                logging.getLevelName(level),
                access_log.name,
                observation.request_id,
                message,
                fields,
            )
        )
        try:
            handler.acquire()
            try:
                handler.stream.write(redact(line) + handler.terminator)
                handler.flush()
            finally:
                handler.release()
            return
        except Exception:  # a broken stream: the logging path reports it as logging does
            pass
    # Made and handled as Logger.log would, without its search of the stack
    # for the caller (which no format prints): one a request adds up.
    record = access_log.makeRecord(
        access_log.name,
        level,
        _HERE,
        0,
        "%s %s %d",
        (observation.method, observation.path or observation.route, observation.status),
        None,
        extra={_FIELDS: fields, "request_id": observation.request_id},
    )
    access_log.handle(record)


async def log_lifecycle(events: actors.Subscription) -> None:
    """
    Log the actor runtime's lifecycle events until the subscription ends.

    A crash is an error with its traceback; a restart a warning; an
    escalation (a supervisor gave up) an error with the last crash's
    traceback; an actor stopped by a crash an error. A contained failure
    (``failed``) is logged by the runtime itself, with its traceback, so it
    is only a debug line here; ``started`` and clean stops are debug lines.
    """
    async for event in events:
        cause = event.cause
        exc_info = (type(cause), cause, cause.__traceback__) if cause is not None else None
        if event.kind == "crashed":
            lifecycle_log.error("actor %s crashed", event.name, exc_info=exc_info)
        elif event.kind == "restarted":
            lifecycle_log.warning("actor %s restarted", event.name)
        elif event.kind == "escalated":
            lifecycle_log.error(
                "supervisor %s gave up (too many restarts) and escalated",
                event.name,
                exc_info=exc_info,
            )
        elif event.kind == "stopped" and cause is not None:
            lifecycle_log.error("actor %s stopped after a crash", event.name)
        else:
            lifecycle_log.debug("actor %s %s", event.name, event.kind)
    if events.dropped:
        lifecycle_log.warning("%d lifecycle events were dropped unlogged", events.dropped)
