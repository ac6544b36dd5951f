"""
What every provider's wire format shares: JSON, retry hints, model lists, stream framing.
"""

from __future__ import annotations

import email.utils
import math
import time

import pytest

from rhetor.providers._wire import (
    LineSplitter,
    MalformedReply,
    ServerSentEvents,
    StreamedError,
    UpstreamStatus,
    decode_json,
    encode_json,
    merge_models,
    model_names,
    retry_after,
)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'{"a": [1, 2.5, null, true, "\\u00e9"]}', {"a": [1, 2.5, None, True, "\u00e9"]}),
        (b"123456789012345678901234567890", 123456789012345678901234567890),
        (b"1e400", math.inf),
        (b'"a\\ud800b"', "a\ud800b"),
    ],
    ids=["document", "big-int", "1e400", "lone-surrogate"],
)
def test_decode_json_reads_what_upstreams_write(data: bytes, expected: object) -> None:
    """JSON decodes as the standard library reads it, big integers exact, 1e400 and lone surrogates included."""
    assert decode_json(data) == expected


def test_decode_json_keeps_nan_for_the_checks_to_refuse() -> None:
    """NaN (no JSON, but upstreams write it) decodes as a float nan; token_count refuses it later."""
    value = decode_json(b'{"n": NaN}')["n"]
    assert isinstance(value, float) and math.isnan(value)


@pytest.mark.parametrize("data", [b"not json", b"[" * 100_000, b"\xff", b"{"])
def test_decode_json_refuses_what_is_no_document(data: bytes) -> None:
    """Bytes that are no JSON document, or nest past the decoder, are MalformedReply, never a crash."""
    with pytest.raises(MalformedReply, match="not JSON"):
        decode_json(data)


def test_encode_json_is_compact_utf8_and_escapes_lone_surrogates() -> None:
    """Request bodies are compact UTF-8 JSON; a lone surrogate (no UTF-8) is escaped, not an error."""
    assert encode_json({"a": ["\u00e9", 1, None]}) == '{"a":["\u00e9",1,null]}'.encode()
    assert encode_json({"text": "a\ud800b"}) == b'{"text":"a\\ud800b"}'


def test_an_error_status_reads_its_body_as_json_or_text() -> None:
    """An error status keeps its body: decoded when it is JSON, else as (bounded) text."""
    status = UpstreamStatus(503, {}, b'{"error": "busy"}')
    assert status.json() == {"error": "busy"}
    text = UpstreamStatus(502, {}, b"<html>bad gateway</html>" + b"x" * 5000)
    assert text.json() is None
    assert text.text().startswith("<html>bad gateway") and len(text.text()) == 500


def test_model_names_and_merge_keep_first_order_once() -> None:
    """Configured models become a tuple; merged lists keep each name once, first seen first."""
    assert model_names(iter(["a", "b"])) == ("a", "b")
    assert merge_models(("a", "b"), ["c", "a", "d"]) == ("a", "b", "c", "d")


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after-ms": "soon", "retry-after": "9"}, 9.0),
        ({"retry-after-ms": "-1", "retry-after": "2.5"}, 2.5),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "-3"}, None),
        ({"retry-after": "not a date"}, None),
        ({}, None),
    ],
)
def test_retry_after_reads_millis_then_seconds(
    headers: dict[str, str], expected: float | None
) -> None:
    """retry-after-ms wins when valid; otherwise retry-after in seconds; junk means no hint."""
    assert retry_after(headers) == expected


def test_retry_after_reads_an_http_date() -> None:
    """An HTTP date in retry-after is the seconds until then, never negative."""
    later = email.utils.formatdate(time.time() + 60, usegmt=True)
    earlier = email.utils.formatdate(time.time() - 60, usegmt=True)
    assert 55 <= (retry_after({"retry-after": later}) or 0) <= 60
    assert retry_after({"retry-after": earlier}) == 0.0


def test_server_sent_events_split_across_chunks() -> None:
    """Events complete only at their blank line, whatever the chunking, UTF-8 included."""
    events = ServerSentEvents()
    body = "event: delta\ndata: h\xe9\ndata: llo\r\n\r\n: a comment\ndata: [DONE]\n\n".encode()
    seen = [event for i in range(len(body)) for event in events.feed(body[i : i + 1])]
    assert seen == [("delta", "h\xe9\nllo"), ("message", "[DONE]")]


def test_server_sent_events_without_data() -> None:
    """An event without data is dropped, unless keep_dataless asks for its type."""
    body = b"event: ping\n\nevent: message_stop\ndata:\n\n"
    assert ServerSentEvents().feed(body) == [("message_stop", "")]
    assert ServerSentEvents(keep_dataless=True).feed(body) == [
        ("ping", ""),
        ("message_stop", ""),
    ]


def test_streamed_error_keeps_message_and_body() -> None:
    """A streamed error reads as the upstream's detail and keeps the decoded body."""
    body = {"error": {"message": "busy"}}
    exc = StreamedError("busy", body)
    assert str(exc) == "busy"
    assert exc.body is body


def test_a_line_past_its_limit_is_malformed_however_it_arrives() -> None:
    """A line longer than the limit is MalformedReply, whole in one chunk or growing across many."""
    with pytest.raises(MalformedReply, match="a line ran past 10 bytes"):
        LineSplitter(10).feed(b"x" * 11 + b"\n")
    lines = LineSplitter(10)
    assert lines.feed(b"x" * 6) == []
    with pytest.raises(MalformedReply):
        lines.feed(b"x" * 6)
    assert LineSplitter(10).feed(b"x" * 10 + b"\n") == [b"x" * 10]


def test_an_event_past_its_limit_is_malformed() -> None:
    """An event whose data lines add up past the limit is MalformedReply, each line short."""
    events = ServerSentEvents(limit=20)
    assert events.feed(b"data: 0123456789\n") == []
    with pytest.raises(MalformedReply, match="an event ran past 20 bytes"):
        events.feed(b"data: 0123456789\n")


def test_line_splitter_cuts_at_newlines_only() -> None:
    """Lines end at \\n (a \\r before it dropped); other line breaks and a split \\r\\n are kept right."""
    lines = LineSplitter()
    assert lines.feed(b"a\r") == []
    assert lines.feed(b"\nb\xc2\x85c\xe2\x80\xa8d\n\ne") == [b"a", "b\x85c\u2028d".encode(), b""]
    assert lines.rest() == b"e"
    assert lines.rest() == b""


MB = 1 << 20


@pytest.mark.parametrize("piece", [1, 1024, 64 * 1024], ids=["1B", "1KB", "64KB"])
def test_a_multi_megabyte_event_is_read_in_linear_work(piece: int) -> None:
    """A multi-megabyte event, however it is chunked, is searched once and copied a few times."""
    # Byte by byte, 64 KB is plenty to show the shape (and keeps the test fast).
    size = 4 * MB if piece > 1 else 64 * 1024
    body = b"data: " + b"x" * size + b"\n\n"
    events = ServerSentEvents()
    seen = [e for i in range(0, len(body), piece) for e in events.feed(body[i : i + piece])]
    assert seen == [("message", "x" * size)]
    # A rescan per chunk would search about len(body)**2 / (2 * piece) bytes.
    assert events.lines.scanned == len(body)
    assert events.lines.copied <= 3 * len(body)


def test_many_events_in_one_chunk_are_read_in_linear_work() -> None:
    """A 1 MB chunk of 65,536 small events is cut once per chunk, not once per line."""
    body = b'data: {"n": 1}\n\n' * (MB // 16)
    events = ServerSentEvents()
    assert len(events.feed(body)) == MB // 16
    assert events.lines.scanned == len(body)
    # Re-slicing the buffer after each line would copy about len(body)**2 / 32 bytes.
    assert events.lines.copied <= 3 * len(body)
