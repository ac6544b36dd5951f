"""
Each backend's reading of a 200 reply, fed hostile JSON: usage, whole bodies, stream events.

The translation points are pure functions of decoded JSON, so hypothesis can throw
arbitrary values at them. Usage must come out as non-negative integers or marked
invalid, never as an exception; a body or event that is not the provider's must
raise only what the backend's ``_translate_errors`` turns into a typed error.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rhetor._errors import ProviderError, UpstreamServerError
from rhetor._types import (
    ChatMessage,
    ProviderReply,
    ProviderRequest,
    StreamEnd,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from rhetor.providers import _anthropic_wire, _ollama_wire, _openai_wire
from rhetor.providers._calls import Translation, translate
from rhetor.providers._wire import MAX_TOKEN_COUNT, MalformedReply, StreamedError, token_count

# Hypothesis explores; the test machine is shared and slow, so no per-example deadline.
EXPLORE = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-5, max_value=10**10)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=8,
)

FIELDS = {
    "openai": ("prompt_tokens", "completion_tokens", "total_tokens"),
    "anthropic": (
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    ),
    "ollama": ("prompt_eval_count", "eval_count", "done"),
}
READERS: dict[str, Callable[[object, str], tuple[Usage, bool]]] = {
    "openai": _openai_wire.usage_of,
    "anthropic": _anthropic_wire.usage_of,
    "ollama": _ollama_wire.usage_of,
}
TRANSLATIONS: dict[str, Translation] = {
    "openai": _openai_wire.translated,
    "anthropic": _anthropic_wire.translated,
    "ollama": _ollama_wire.translated,
}


@contextmanager
def translating(provider: str) -> Iterator[None]:
    """
    Failures inside become Rhetor's errors as the backend's call driver makes them.
    """
    try:
        yield
    except Exception as exc:
        error = translate(exc, provider, "m", TRANSLATIONS[provider])
        if error is exc:
            raise
        raise error from exc


def usage_like(provider: str) -> st.SearchStrategy[Any]:
    """
    Objects with the provider's usage fields holding anything, or anything at all.
    """
    keys = st.sampled_from(FIELDS[provider]) | st.text(max_size=4)
    return st.dictionaries(keys, JSON, max_size=5) | JSON


def assert_counts(usage: Usage) -> None:
    for count in (usage.input_tokens, usage.output_tokens):
        assert type(count) is int
        assert count >= 0


@pytest.mark.slow
@pytest.mark.parametrize("provider", list(READERS))
def test_any_usage_reads_as_counts_or_as_invalid_never_raising(provider: str) -> None:
    """Whatever an upstream sends as usage, its reading is non-negative ints, valid or not; no exception."""
    read = READERS[provider]

    @EXPLORE
    @given(usage_like(provider))
    def check(raw: Any) -> None:
        usage, valid = read(raw, provider)
        assert_counts(usage)
        assert type(valid) is bool
        if valid:
            assert usage.total_tokens <= 4 * MAX_TOKEN_COUNT

    logging.disable(logging.WARNING)  # thousands of anomaly warnings are the point
    try:
        check()
    finally:
        logging.disable(logging.NOTSET)


@pytest.mark.parametrize(
    ("provider", "usage", "expected"),
    [
        ("openai", {"prompt_tokens": 12, "completion_tokens": 3}, (Usage(12, 3), True)),
        ("openai", {"prompt_tokens": 12.7, "completion_tokens": 3.0}, (Usage(13, 3), True)),
        ("openai", {"prompt_tokens": "abc", "completion_tokens": 3}, (Usage(0, 3), False)),
        ("openai", {"prompt_tokens": -4, "completion_tokens": 3}, (Usage(0, 3), False)),
        ("openai", {"prompt_tokens": True, "completion_tokens": 3}, (Usage(0, 3), False)),
        ("openai", {"prompt_tokens": math.inf, "completion_tokens": 1}, (Usage(0, 1), False)),
        ("openai", {"prompt_tokens": {"n": 1}, "completion_tokens": 1}, (Usage(0, 1), False)),
        ("openai", {"prompt_tokens": 10**12, "completion_tokens": 1}, (Usage(0, 1), False)),
        ("openai", None, (Usage(), False)),
        ("openai", [1, 2], (Usage(), False)),
        ("anthropic", {"input_tokens": 5, "output_tokens": 2}, (Usage(5, 2), True)),
        (
            "anthropic",
            {
                "input_tokens": 5,
                "output_tokens": 2,
                "cache_creation_input_tokens": 100,
                "cache_read_input_tokens": None,
            },
            (Usage(105, 2, cache_write_tokens=100), True),
        ),
        (
            "anthropic",
            {
                "input_tokens": 5,
                "output_tokens": 2,
                "cache_creation_input_tokens": 100,
                "cache_read_input_tokens": 20,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": 60,
                    "ephemeral_1h_input_tokens": 40,
                },
            },
            (Usage(125, 2, 20, cache_write_tokens=100, cache_write_1h_tokens=40), True),
        ),
        (
            "anthropic",
            {
                "input_tokens": 5,
                "output_tokens": 2,
                "cache_creation_input_tokens": 10,
                "cache_creation": {"ephemeral_1h_input_tokens": 99},
            },
            (Usage(15, 2, cache_write_tokens=10, cache_write_1h_tokens=10), True),
        ),
        ("anthropic", {}, (Usage(), False)),
        ("anthropic", {"input_tokens": 5, "output_tokens": None}, (Usage(5, 0), False)),
        (
            "anthropic",
            {"input_tokens": 5, "output_tokens": 2, "cache_read_input_tokens": "x"},
            (Usage(5, 2), False),
        ),
        ("ollama", {"prompt_eval_count": 7, "eval_count": 9, "done": True}, (Usage(7, 9), True)),
        ("ollama", {"eval_count": 9}, (Usage(0, 9), False)),
        ("ollama", {"prompt_eval_count": math.nan, "eval_count": 9}, (Usage(0, 9), False)),
        ("ollama", "done", (Usage(), False)),
    ],
)
def test_usage_reading_keeps_counts_rounds_floats_and_flags_the_rest(
    provider: str, usage: Any, expected: tuple[Usage, bool]
) -> None:
    """Counts pass, floats are rounded, anything else reads as zero and marks the usage invalid."""
    assert READERS[provider](usage, provider) == expected


def test_a_decoded_1e400_is_no_count() -> None:
    """JSON's 1e400 decodes as infinity, which is no token count."""
    assert token_count(json.loads("1e400")) is None
    assert token_count(json.loads("12.5")) == 12
    assert token_count(MAX_TOKEN_COUNT) == MAX_TOKEN_COUNT


def test_malformed_usage_is_logged_with_the_provider(caplog: pytest.LogCaptureFixture) -> None:
    """A malformed usage is logged as unusable, naming the provider and what it sent."""
    _openai_wire.usage_of({"prompt_tokens": "abc"}, "openai")
    [entry] = caplog.records
    assert entry.levelno == logging.WARNING
    assert "openai sent unusable usage" in entry.getMessage() and "'abc'" in entry.getMessage()


# -- whole bodies and stream events -----------------------------------------------------

REQUEST = ProviderRequest("m", (ChatMessage("user", "Hi"),))


def whole(provider: str, body: object) -> ProviderReply:
    """
    A decoded 200 body read as the provider's reply, errors translated as the backend does.
    """
    parse = {
        "openai": _openai_wire.completion,
        "anthropic": _anthropic_wire.message,
        "ollama": _ollama_wire.reply,
    }[provider]
    with translating(provider):
        return parse(body, REQUEST, provider)


def body_like(provider: str) -> st.SearchStrategy[Any]:
    """
    Bodies near the provider's shape (its keys, nested) holding anything, or anything.
    """
    keys = {
        "openai": [
            "choices",
            "message",
            "delta",
            "content",
            "usage",
            "model",
            "finish_reason",
            "index",
            "tool_calls",
            "function",
            "arguments",
            "name",
            "id",
        ],
        "anthropic": [
            "content",
            "content_block",
            "delta",
            "type",
            "text",
            "usage",
            "model",
            "stop_reason",
            "index",
            "tool_use",
            "id",
            "name",
            "input",
            "partial_json",
            "thinking",
            "signature",
            "redacted_thinking",
            "data",
            "thinking_delta",
            "signature_delta",
            "citations",
            "citations_delta",
            "citation",
        ],
        "ollama": [
            "message",
            "content",
            "done",
            "model",
            "error",
            "eval_count",
            "tool_calls",
            "function",
            "arguments",
            "name",
            "id",
        ],
    }[provider]
    near = st.recursive(
        SCALARS | st.just("text"),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.sampled_from(keys) | st.text(max_size=3), inner, max_size=4)
        ),
        max_leaves=10,
    )
    return near


@pytest.mark.slow
@pytest.mark.parametrize("provider", ["openai", "anthropic", "ollama"])
def test_any_whole_body_is_a_reply_or_a_typed_error(provider: str) -> None:
    """A 200 body of any JSON shape reads as a well-formed reply or raises a ProviderError."""

    @EXPLORE
    @given(body_like(provider))
    def check(body: Any) -> None:
        try:
            reply = whole(provider, body)
        except ProviderError:
            return
        assert isinstance(reply.text, str) and isinstance(reply.finish_reason, str)
        assert isinstance(reply.model, str)
        assert_counts(reply.usage)
        for call in reply.tool_calls:
            assert all(isinstance(part, str) for part in (call.id, call.name, call.arguments))
        for block in reply.cited:
            assert isinstance(block.text, str)
            assert all(isinstance(c, Mapping) for c in block.citations)
        for thought in reply.thinking:
            assert isinstance(thought.text, str) and isinstance(thought.signature, str)
            assert thought.redacted is None or isinstance(thought.redacted, str)

    logging.disable(logging.WARNING)
    try:
        check()
    finally:
        logging.disable(logging.NOTSET)


@pytest.mark.slow
@pytest.mark.parametrize("provider", ["openai", "anthropic", "ollama"])
def test_any_stream_event_is_text_or_a_typed_error(provider: str) -> None:
    """A stream event of any JSON shape adds text, ends the stream well-formed, or raises typed."""

    @EXPLORE
    @given(st.lists(body_like(provider), min_size=1, max_size=3), st.sampled_from(EVENT_KINDS))
    def check(events: list[Any], kind: str) -> None:
        reading = _stream_reading(provider)
        try:
            for event in events:
                with translating(provider):
                    text = reading(kind, json.dumps(event))
                assert text is None or isinstance(text, str)
        except ProviderError:
            return

    logging.disable(logging.WARNING)
    try:
        check()
    finally:
        logging.disable(logging.NOTSET)


EVENT_KINDS = [
    "message_start",
    "content_block_start",
    "content_block_delta",
    "message_delta",
    "message_stop",
    "ping",
]


def _stream_reading(provider: str) -> Callable[[str, str], str | None]:
    """
    A fresh stream reader for ``provider``: (event kind, data) to the text it adds.

    Each reader's end (the StreamEnd) is checked too after each event: well-formed,
    or a typed error when the stream could not end there.
    """
    reading: Any = {
        "openai": _openai_wire.ChunkReading("m", provider),
        "anthropic": _anthropic_wire.EventReading("m", provider),
        "ollama": _ollama_wire.LineReading("m", provider),
    }[provider]

    def take(kind: str, payload: str) -> str | None:
        event = payload.encode() if provider == "ollama" else (kind, payload)
        items = reading.take(event)
        try:
            with translating(provider):
                assert_end(reading.end())
        except ProviderError:
            pass
        for item in items:
            if isinstance(item, ToolCallDelta):
                assert type(item.index) is int and item.index >= 0
                assert isinstance(item.arguments, str)
                assert all(isinstance(p, str | None) for p in (item.id, item.name))
            else:
                assert isinstance(item, TextDelta)
        return "".join(item.text for item in items if isinstance(item, TextDelta)) or None

    return take


def assert_end(end: StreamEnd) -> None:
    assert isinstance(end.finish_reason, str) and isinstance(end.model, str)
    assert_counts(end.usage)


@pytest.mark.parametrize(
    ("provider", "body", "why"),
    [
        ("openai", {"choices": []}, "no choices"),
        ("openai", {"choices": [{"message": {"content": {"a": 1}}}]}, "not a string"),
        ("openai", [1, 2], "not a chat completion"),
        ("anthropic", {"content": "text"}, "not a list"),
        ("anthropic", {"content": [{"type": "text", "text": 5}]}, "not a string"),
        ("ollama", {"message": {"content": ["a"]}}, "not a string"),
        ("ollama", "hello", "not an object"),
        (
            "openai",
            {"choices": [{"message": {"tool_calls": [{"id": 5, "function": {"name": "f"}}]}}]},
            "tool_calls[0].id",
        ),
        ("openai", {"choices": [{"message": {"tool_calls": "all"}}]}, "must be an array"),
        (
            "anthropic",
            {"content": [{"type": "tool_use", "id": "a", "name": "f", "input": [1]}]},
            "input",
        ),
        ("anthropic", {"content": [{"type": "tool_use", "name": "f"}]}, "id"),
        ("ollama", {"message": {"tool_calls": {"a": 1}}}, "not a list"),
        (
            "ollama",
            {"message": {"tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}},
            "not an object",
        ),
        ("ollama", {"message": {"tool_calls": [{"id": "x"}]}}, "no function"),
    ],
)
def test_malformed_body_is_an_upstream_server_error_saying_why(
    provider: str, body: object, why: str
) -> None:
    """A body of the wrong shape is UpstreamServerError 'malformed reply from <provider>: ...why'."""
    with pytest.raises(UpstreamServerError) as caught:
        whole(provider, body)
    assert caught.value.message.startswith(f"malformed reply from {provider}: ")
    assert why in caught.value.message
    assert isinstance(caught.value.__cause__, MalformedReply)


@pytest.mark.parametrize("payload", ["not json", "[" * 100_000, "1e400", '"text"', "[]"])
def test_stream_data_that_is_no_event_is_malformed(payload: str) -> None:
    """Stream data that is not JSON, nested past the decoder, or not an object, is malformed."""
    with pytest.raises(UpstreamServerError), translating("openai"):
        _openai_wire.ChunkReading("m").take(("message", payload))
    with pytest.raises(UpstreamServerError), translating("anthropic"):
        _anthropic_wire.EventReading("m").take(("content_block_delta", payload))
    with pytest.raises(UpstreamServerError), translating("ollama"):
        _ollama_wire.LineReading("m").take(payload.encode())


@pytest.mark.parametrize(
    ("provider", "events", "why"),
    [
        ("openai", [{"choices": [{"delta": {"tool_calls": "x"}}]}], "not a list"),
        ("openai", [{"choices": [{"delta": {"tool_calls": [{"index": -1}]}}]}], "index"),
        ("openai", [{"choices": [{"delta": {"tool_calls": [{"index": True}]}}]}], "index"),
        ("openai", [{"choices": [{"delta": {"tool_calls": [{"function": 3}]}}]}], "function"),
        ("openai", [{"choices": [{"delta": {"tool_calls": [{"id": 3}]}}]}], "not a string"),
        (
            "anthropic",
            [("content_block_start", {"index": 1, "content_block": {"type": "tool_use"}})],
            "no id or name",
        ),
        (
            "anthropic",
            [("content_block_delta", {"index": 4, "delta": {"type": "input_json_delta"}})],
            "no tool_use block",
        ),
        (
            "anthropic",
            [
                (
                    "content_block_start",
                    {"index": "1", "content_block": {"type": "tool_use", "id": "a", "name": "f"}},
                )
            ],
            "index",
        ),
        ("anthropic", [("content_block_start", {"index": 0})], "no content_block"),
        ("ollama", [{"message": {"tool_calls": [{"function": {"arguments": {}}}]}}], "no name"),
    ],
)
def test_malformed_tool_call_events_are_upstream_server_errors(
    provider: str, events: list[Any], why: str
) -> None:
    """A tool-call delta of the wrong shape in a stream is UpstreamServerError saying why."""
    reading: Any = {
        "openai": _openai_wire.ChunkReading("m"),
        "anthropic": _anthropic_wire.EventReading("m"),
        "ollama": _ollama_wire.LineReading("m"),
    }[provider]
    wire = []
    for event in events:
        if provider == "anthropic":
            kind, data = event
            wire.append((kind, json.dumps({"type": kind, **data})))
        elif provider == "openai":
            wire.append(("message", json.dumps(event)))
        else:
            wire.append(json.dumps(event).encode())

    def take_all() -> None:
        with translating(provider):
            for item in wire:
                reading.take(item)

    with pytest.raises(UpstreamServerError) as caught:
        take_all()
    assert why in caught.value.message


def test_anthropic_stream_usage_merges_its_events() -> None:
    """message_start's input counts and message_delta's output count make one usage; nulls keep."""
    reading = _anthropic_wire.EventReading("m")
    start = {"message": {"model": "claude", "usage": {"input_tokens": 9, "output_tokens": 1}}}
    reading.take(("message_start", json.dumps(start)))
    delta = {
        "delta": {"stop_reason": "end_turn"},
        "usage": {"output_tokens": 4, "input_tokens": None},
    }
    reading.take(("message_delta", json.dumps(delta)))
    ended = attrs.evolve(reading, finished=True)
    assert ended.end() == StreamEnd(Usage(9, 4), "stop", "claude")
    reading.take(("message_delta", json.dumps({"usage": "lots"})))
    reading.take(("message_delta", json.dumps({"usage": {"output_tokens": 5}})))
    reading.take(("message_stop", ""))
    assert reading.end().usage_valid is False


def test_streamed_error_objects_are_raised_as_such() -> None:
    """An error object in a stream is the upstream's error, not a malformed reply."""
    with pytest.raises(StreamedError):
        _openai_wire.ChunkReading("m").take(("message", '{"error": {"message": "busy"}}'))
    with pytest.raises(StreamedError):
        _anthropic_wire.EventReading("m").take(("error", '{"error": {"message": "busy"}}'))
    with pytest.raises(StreamedError):
        _ollama_wire.LineReading("m").take(b'{"error": "busy"}')
