"""
The one SSE helper (rhetor/edge/_sse.py): framing, refusals, error events, disconnects.

Each test serves a small Quart-Trio app on Hypercorn over a loopback socket,
whose one route streams chunks a test scripts, so the helper is exercised as
the blueprints use it (the body is sent after the handler returned, outside
its request context) without a runtime behind it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import attrs
import httpx
import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from quart import Response
from quart_trio import QuartTrio

from rhetor._errors import BudgetExceeded, StreamBroken
from rhetor._types import Chunk, Reply, Usage
from rhetor.edge._http import error_response, rhetor_error
from rhetor.edge._messages import native_error_event, native_events
from rhetor.edge._sse import data, event, sse_response

REPLY = Reply(
    message="one two",
    model="m",
    provider="p",
    context="c",
    usage=Usage(3, 2),
    cost=0.0,
    routing="test",
    request_id="r1",
    task_type="default",
)


def text(piece: str) -> Chunk:
    return Chunk(piece, "m", "p", "c")


DONE = Chunk("", "m", "p", "c", done=True, reply=REPLY)


@attrs.define
class Script:
    """Chunks to stream, then a failure or a wait; records how the stream ended."""

    chunks: list[Chunk]
    fail: BaseException | None = None
    hang: bool = False
    closed: trio.Event = attrs.field(factory=trio.Event)
    finished: bool = False

    async def stream(self) -> AsyncGenerator[Chunk, None]:
        try:
            for chunk in self.chunks:
                yield chunk
            if self.fail is not None:
                raise self.fail
            if self.hang:
                await trio.sleep_forever()
            self.finished = True
        finally:
            self.closed.set()


@asynccontextmanager
async def streaming(script: Script) -> AsyncIterator[httpx.AsyncClient]:
    """Serve ``GET /stream`` (the script's chunks as native events) and yield a client of it."""
    app = QuartTrio("sse-test")

    @app.get("/stream")
    async def stream() -> Response:
        return await sse_response(
            script.stream(), native_events("c"), native_error_event("c"), name="r1"
        )

    @app.errorhandler(Exception)
    async def on_error(exc: Exception) -> Response:
        return error_response(rhetor_error(exc))

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(serve, app, config))  # type: ignore[arg-type]
        async with httpx.AsyncClient(base_url=binds[0], timeout=5) as client:
            yield client
        nursery.cancel_scope.cancel()


def events_of(body: str) -> list[dict[str, object]]:
    return [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]


def test_events_are_framed_as_data_lines_or_named_events() -> None:
    """``data`` frames JSON or a bare string; ``event`` adds the event's name."""
    assert data({"a": 1}) == b'data: {"a":1}\n\n'
    assert data("[DONE]") == b"data: [DONE]\n\n"
    assert event("ping", {"b": [2]}) == b'event: ping\ndata: {"b":[2]}\n\n'


def test_a_value_json_cannot_hold_is_refused_not_framed() -> None:
    """NaN is not JSON: framing it is a ValueError (a bug), never an invalid event."""
    with pytest.raises(ValueError, match="not JSON compliant"):
        data({"cost": float("nan")})


async def test_a_stream_sends_every_chunk_then_the_reply_and_ends() -> None:
    """Each chunk is one event, the done chunk carries the reply, and the source runs out."""
    script = Script([text("one "), text("two"), DONE])
    async with streaming(script) as client:
        response = await client.get("/stream")
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["cache-control"] == "no-cache"
    sent = events_of(response.text)
    assert [e["chunk"] for e in sent] == ["one ", "two", ""]
    assert sent[-1]["done"] is True and sent[-1]["message"] == "one two"
    assert script.finished


async def test_a_stream_refused_before_its_first_chunk_is_a_json_error_and_is_closed() -> None:
    """A refusal before any chunk answers its own status as JSON, and the source is closed."""
    script = Script(
        [], fail=BudgetExceeded("over the daily limit", period="daily", limit=1.0, spent=1.0)
    )
    async with streaming(script) as client:
        response = await client.get("/stream")
    assert response.status_code == 402
    assert response.json()["error"]["type"] == "budget_exceeded"
    assert script.closed.is_set()


async def test_a_failure_after_the_first_chunk_is_the_last_event() -> None:
    """A Rhetor error mid-stream ends the stream with one done event carrying the error."""
    script = Script([text("partial ")], fail=StreamBroken("dropped", provider="p", model="m"))
    async with streaming(script) as client:
        response = await client.get("/stream")
    sent = events_of(response.text)
    assert response.status_code == 200
    assert sent[0]["chunk"] == "partial "
    assert sent[-1] == {"chunk": "", "context": "c", "done": True, "error": sent[-1]["error"]}
    assert sent[-1]["error"]["type"] == "stream_broken"


async def test_a_bug_after_the_first_chunk_is_an_internal_error_event_logged_by_stream(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """
    An unexpected exception mid-stream (no request context is left by then) is
    logged with the stream's name and its traceback, and ends the stream with
    an internal_error event that shows no detail.
    """
    script = Script([text("partial ")], fail=RuntimeError("secret detail"))
    with caplog.at_level(logging.ERROR, logger="rhetor.edge"):
        async with streaming(script) as client:
            response = await client.get("/stream")
    last = events_of(response.text)[-1]
    assert last["error"] == {
        "type": "internal_error",
        "message": "internal error; see the server log",
    }
    assert "secret" not in response.text
    [record] = [r for r in caplog.records if r.name == "rhetor.edge"]
    assert "stream r1" in record.getMessage() and record.exc_info is not None


async def test_a_client_that_leaves_mid_stream_closes_the_source() -> None:
    """Closing the connection after the first event closes the chunks (the provider call)."""
    script = Script([text("first ")], hang=True)
    async with streaming(script) as client:
        url = httpx.URL(str(client.base_url))
        assert url.port is not None
        stream = await trio.open_tcp_stream("127.0.0.1", url.port)
        async with stream:
            await stream.send_all(b"GET /stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            received = b""
            with trio.fail_after(2):
                while b"data: " not in received:
                    received += await stream.receive_some()
        with trio.fail_after(2):
            await script.closed.wait()
    assert b'"chunk":"first "' in received
    assert not script.finished
