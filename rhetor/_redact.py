"""
Keeps secrets out of error messages and log lines.

:func:`redact` removes from text the keys Rhetor was configured with (registered
with :func:`register_secret`) and anything shaped like a credential: ``sk-...`` and
``sk-ant-...`` keys, ``Bearer``/``Basic`` tokens, ``x-api-key: ...`` or
``"authorization": "..."`` pairs, ``?key=...`` (and ``token=``, ``secret=``, ...)
in URLs, and the password of a ``scheme://user:password@host`` URL.

Two places apply it. Each provider backend's one error translation point
redacts every upstream message before it becomes a :class:`rhetor.RhetorError`
(an upstream that echoes the request's ``Authorization`` header into its error
body must not hand the key to Rhetor's client). :func:`install_log_redaction`
makes every log record of Rhetor's loggers (``rhetor``, ``actors``) and of the
libraries that see its keys and URLs (the SDKs, httpx, hypercorn) redacted as it
is created: its message with its arguments, its exception text and its stack.

Limits: a configured key shorter than :data:`MIN_SECRET_LENGTH` characters is not
searched for literally (it would blank ordinary words, and protects little), and a
key split or encoded (percent-, base64-) is not recognised unless its shape is.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from rhetor._errors import RhetorError

__all__ = [
    "MIN_SECRET_LENGTH",
    "REDACTED",
    "RedactingFilter",
    "install_log_redaction",
    "redact",
    "redact_error",
    "register_secret",
]

REDACTED = "[redacted]"
# Configured keys shorter than this are not searched for literally.
MIN_SECRET_LENGTH = 8

# The logger hierarchies whose records are redacted once the filter is installed:
# Rhetor's own, and those of the libraries that handle its keys and URLs.
LOGGERS = ("rhetor", "actors", "anthropic", "openai", "httpx", "httpx2", "httpcore", "hypercorn")

# Credential shapes, applied in order; each keeps its group 1 (the label) and
# replaces what follows. Key-like characters exclude quotes, spaces and separators.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # "x-api-key: ...", "'authorization': 'Bearer ...'", "api_key=...", as in
    # headers, dict reprs, JSON and query strings.
    (
        re.compile(
            r"""(\b[\w\-]*?(?:api[-_]?key|api[-_]?token|access[-_]token|authorization)"""
            r"""["']?\s*[:=]\s*["']?)"""
            # An absent key (JSON's null, Python's None) says no key is set: it stays.
            r"""(?!(?:null|None)(?:[\s"',;&<>)\]}]|$))"""
            r"""(?:(?:bearer|basic|token)\s+)?[^\s"',;&<>]+""",
            re.IGNORECASE,
        ),
        r"\1" + REDACTED,
    ),
    # "Bearer <token>" / "Basic <credentials>" on their own.
    (re.compile(r"(\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/=\-]+", re.IGNORECASE), r"\1" + REDACTED),
    # OpenAI (sk-..., sk-proj-...) and Anthropic (sk-ant-...) keys, masked ones included.
    (re.compile(r"(?<![A-Za-z0-9_\-])sk-[A-Za-z0-9_\-*]{8,}"), REDACTED),
    # Credentials in a URL's query: ?key=..., &token=..., &client_secret=..., &sig=...
    (
        re.compile(
            r"([?&;][A-Za-z0-9_.\-]*(?:key|token|secret|password|passwd|sig|signature)=)[^&\s#\"'<>]+",
            re.IGNORECASE,
        ),
        r"\1" + REDACTED,
    ),
    # A password in a URL: scheme://user:password@host.
    (
        re.compile(r"(\b[a-z][a-z0-9+.\-]*://[^/\s:@]+:)[^/\s@]+(?=@)", re.IGNORECASE),
        r"\1" + REDACTED,
    ),
)

# For each shape in _PATTERNS, strings (lower case) of which any match must hold one.
_TRIGGERS: tuple[tuple[str, ...], ...] = (
    ("api", "access-", "access_", "authorization"),
    ("bearer", "basic"),
    ("sk-",),
    ("?", "&", ";"),
    ("://",),
)
# Any trigger at all, in one scan.
_ANY_TRIGGER = re.compile("|".join(re.escape(t) for ts in _TRIGGERS for t in ts))

_lock = threading.Lock()
# Invariant: replaced whole under _lock, never mutated, so readers need no lock;
# longest first, so that a key containing another is removed whole.
_secrets: tuple[str, ...] = ()
_secret_pattern: re.Pattern[str] | None = None
_installed = False


def register_secret(*secrets: str | None) -> None:
    """
    Add configured keys to what :func:`redact` removes; None and short ones are ignored.
    """
    global _secrets, _secret_pattern
    fresh = {s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}
    with _lock:
        if fresh <= set(_secrets):
            return
        _secrets = tuple(sorted(set(_secrets) | fresh, key=len, reverse=True))
        _secret_pattern = re.compile("|".join(re.escape(s) for s in _secrets))


def redact(text: str) -> str:
    """
    ``text`` without the configured keys and without anything shaped like a credential.
    """
    pattern = _secret_pattern
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    low = text.lower()
    if _ANY_TRIGGER.search(low) is None:  # most lines: one scan, no shape searched
        return text
    for (shape, replacement), triggers in zip(_PATTERNS, _TRIGGERS, strict=True):
        # A shape is searched for only when text it needs is there: most log
        # lines hold none, and the search is what costs (tens of microseconds).
        if any(t in low for t in triggers):
            clean = shape.sub(replacement, text)
            if clean != text:
                text, low = clean, clean.lower()
    return text


_Error = TypeVar("_Error", bound=RhetorError)


def redact_error(error: _Error) -> _Error:
    """
    ``error`` itself, its message redacted (for errors built from an upstream's words).
    """
    clean = redact(error.message)
    if clean != error.message:
        error.message = clean
        error.args = (clean,)
    return error


class RedactingFilter(logging.Filter):
    """
    Redacts a log record in place (message and arguments, exception text, stack); keeps it.

    :func:`install_log_redaction` runs it on every record of :data:`LOGGERS` as the
    record is made; it can also be added to a handler. A record is rewritten only when
    redaction changes something, so ordinary records keep their ``args`` and
    ``exc_info``; one whose traceback held a secret keeps the redacted text in
    ``exc_text`` and loses ``exc_info``, which a formatter could otherwise print again.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: logging reports it when it emits
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and record.exc_info[0] is not None:
            text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            clean = redact(text)
            if clean != text:
                record.exc_text, record.exc_info = clean, None
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_FILTER = RedactingFilter()


def _covered(name: str) -> bool:
    return name.partition(".")[0] in LOGGERS


def install_log_redaction(*secrets: str | None) -> None:
    """
    Register ``secrets`` and redact every record of :data:`LOGGERS` from now on.

    A filter on the ``rhetor`` logger would miss ``rhetor.router``'s records (logging
    runs only the filters of the logger a record is made on, and of the handlers),
    and Rhetor does not own the handlers; so the filter runs in the log record
    factory, for the records of these hierarchies. Installing twice installs once.
    """
    global _installed
    register_secret(*secrets)
    with _lock:
        if _installed:
            return
        _installed = True
        make: Callable[..., logging.LogRecord] = logging.getLogRecordFactory()

        def redacted_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = make(*args, **kwargs)
            if _covered(record.name):
                _FILTER.filter(record)
            return record

        logging.setLogRecordFactory(redacted_record)
