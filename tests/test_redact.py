"""
Redaction: configured keys and credential shapes leave text, error messages and log records.
"""

from __future__ import annotations

import logging

import pytest

from rhetor._errors import BadRequest
from rhetor._redact import (
    REDACTED,
    RedactingFilter,
    install_log_redaction,
    redact,
    redact_error,
    register_secret,
)

CONFIGURED = "configured-secret-7d1e0c55"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Incorrect API key provided: sk-proj-abcdefghijkl1234.",
            "Incorrect API key provided: [redacted].",
        ),
        ("key sk-ant-api03-AbC_dEf-123456789 rejected", "key [redacted] rejected"),
        ("masked sk-abc*********************wxyz", "masked [redacted]"),
        ("authorization: Bearer abc.def-ghi", "authorization: [redacted]"),
        ("sent Bearer eyJhbGciOi.x.y today", "sent Bearer [redacted] today"),
        ('{"x-api-key": "whatever-it-is"}', '{"x-api-key": "[redacted]"}'),
        ("{'Authorization': 'Basic dXNlcjpwYXNz'}", "{'Authorization': '[redacted]'}"),
        ("OPENAI_API_KEY=abc123 is set", "OPENAI_API_KEY=[redacted] is set"),
        ("GET http://h/v1?key=AIzaXYZ&x=1", "GET http://h/v1?key=[redacted]&x=1"),
        ("wss://h/ws?api_key=abc&token=t#f", "wss://h/ws?api_key=[redacted]&token=[redacted]#f"),
        ("http://user:pw@host:11434/api", "http://user:[redacted]@host:11434/api"),
        ("api_key=null-but-a-key-really", "api_key=[redacted]"),
        ('{"api_key": "None.of.your.business"}', '{"api_key": "[redacted]"}'),
    ],
)
def test_credential_shapes_are_redacted(text: str, expected: str) -> None:
    """Keys, tokens, key headers, key query parameters and URL passwords become [redacted]."""
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "invalid x-api-key",
        "ANTHROPIC_API_KEY not set",
        "task-management-system and desk-organizer-tips",
        "the model's maximum context length is 128000 tokens",
        "http://localhost:11434/api/chat",
        '{"anthropic_api_key": null, "api_key": null}',
        "Settings(api_key=None)",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    """Text that only names a key (or says it is absent), or merely contains 'sk-', is unchanged."""
    assert redact(text) == text


def test_configured_keys_are_redacted_whatever_their_shape() -> None:
    """A registered key is removed literally; a key too short to tell from words is not."""
    register_secret(CONFIGURED, None, "short")
    assert redact(f"echo {CONFIGURED}!") == f"echo {REDACTED}!"
    assert redact("a short word") == "a short word"


def test_redact_error_rewrites_the_message_and_args() -> None:
    """An error built from an upstream's words keeps its type and fields, its message redacted."""
    error = BadRequest("echo: Bearer abcdefgh", provider="openai", model="m")
    assert redact_error(error) is error
    assert error.message == error.args[0] == f"echo: Bearer {REDACTED}"
    assert error.to_dict()["provider"] == "openai"


def record(msg: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("rhetor.test", logging.ERROR, __file__, 1, msg, args, info)


def test_filter_redacts_message_arguments_and_traceback() -> None:
    """The filter redacts the formatted message and an exception's text; the record is kept."""
    try:
        raise RuntimeError(f"upstream said {CONFIGURED}")
    except RuntimeError as exc:
        caught = exc
    register_secret(CONFIGURED)
    entry = record("got %s from %s", "Bearer abcdefgh", "openai", exc=caught)
    assert RedactingFilter().filter(entry)
    assert entry.getMessage() == f"got Bearer {REDACTED} from openai"
    assert entry.exc_info is None
    assert entry.exc_text is not None
    assert CONFIGURED not in entry.exc_text and "RuntimeError" in entry.exc_text


def test_filter_leaves_a_clean_record_untouched() -> None:
    """A record with nothing to hide keeps its args and exc_info for other tools."""
    try:
        raise ValueError("nothing secret")
    except ValueError as exc:
        entry = record("value %d", 3, exc=exc)
    assert RedactingFilter().filter(entry)
    assert entry.args == (3,)
    assert entry.exc_info is not None and entry.exc_info[1] is not None


def test_installed_redaction_covers_child_loggers(caplog: pytest.LogCaptureFixture) -> None:
    """Once installed, records of rhetor.* and actors.* loggers are redacted; others are not."""
    install_log_redaction(CONFIGURED)
    install_log_redaction()  # installing again adds nothing
    caplog.set_level(logging.INFO)
    logging.getLogger("rhetor.some.child").info("key %s", CONFIGURED)
    logging.getLogger("actors._cell").info("x-api-key: %s", "plain-value")
    logging.getLogger("elsewhere").info("key %s", CONFIGURED)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [f"key {REDACTED}", f"x-api-key: {REDACTED}", f"key {CONFIGURED}"]
    assert logging.getLogRecordFactory().__name__ == "redacted_record"


def test_every_trigger_of_every_shape_still_leads_to_its_search() -> None:
    """The one-scan precheck lets through every line that a shape's trigger is in."""
    from rhetor._redact import _ANY_TRIGGER, _TRIGGERS

    for triggers in _TRIGGERS:
        for trigger in triggers:
            assert _ANY_TRIGGER.search(f"plain text {trigger} more") is not None
    assert _ANY_TRIGGER.search("post /v1/chat/completions 200 status=200") is None
