"""
The direct routes (rhetor/edge/_direct.py): POST /message and /v1/chat/completions answered on ASGI.

What a client gets from them must be what the Quart views answer: the same
status, body and headers, errors included. Each comparison sends one request
over a real socket (the direct route) and the same one to the Quart app of
the same runtime through Quart's test client (the view).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import h11
import httpx
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

import rhetor.edge._direct
from rhetor.edge._app import create_app
from rhetor.edge._hypercorn import CoalescingH11Protocol
from tests.edge_helpers import JSON, events, served
from tests.test_edge_properties import PROPERTY, _body_for, _raw

# Ids and times that differ between any two replies.
VOLATILE = {"request_id", "id", "created", "timestamp", "latency_ms", "elapsed"}
MESSAGE = {"message": "hello direct", "model": "simulated-echo"}
COMPLETION = {"model": "simulated-echo", "messages": [{"role": "user", "content": "hello"}]}


def _stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


CASES = [
    pytest.param("/message", MESSAGE, id="message-ok"),
    pytest.param("/message", {}, id="message-empty"),
    pytest.param("/message", {"message": 3}, id="message-wrong-type"),
    pytest.param("/message", {"message": "x", "temperature": 9}, id="message-out-of-range"),
    pytest.param("/message", {"message": "x", "model": "no-such-model"}, id="message-no-model"),
    pytest.param("/message", [1, 2], id="message-not-an-object"),
    pytest.param("/v1/chat/completions", COMPLETION, id="openai-ok"),
    pytest.param("/v1/chat/completions", {"model": "x"}, id="openai-no-messages"),
    pytest.param(
        "/v1/chat/completions", {**COMPLETION, "model": "rhetor/nope"}, id="openai-bad-alias"
    ),
    pytest.param(
        "/v1/chat/completions", {**COMPLETION, "max_tokens": -1}, id="openai-bad-max-tokens"
    ),
]


@pytest.fixture
async def both(
    tmp_path: Path,
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """A client of the real server (direct routes) and Quart's test client of its app."""
    async with served(tmp_path) as (server, client):
        app = create_app(server.runtime, server.settings)
        async with app.test_app() as test_app:
            yield client, test_app.test_client()


@pytest.mark.parametrize(("path", "body"), CASES)
async def test_a_direct_route_answers_what_its_quart_view_answers(
    both: tuple[httpx.AsyncClient, Any], path: str, body: Any
) -> None:
    """Status, content type, Rhetor's headers and the JSON body (ids aside) are the same."""
    client, quart = both
    direct = await client.post(path, json=body)
    viewed = await quart.post(path, json=body)
    assert direct.status_code == viewed.status_code
    assert direct.headers["content-type"] == viewed.headers["content-type"]
    rhetor_headers = {
        k.lower() for k, _ in viewed.headers.items() if k.lower().startswith("x-rhetor-")
    }
    assert rhetor_headers == {k for k in direct.headers if k.startswith("x-rhetor-")}
    assert _stable(direct.json()) == _stable(await viewed.get_json())
    # The direct reply is observed like any other: it carries its request id.
    assert direct.headers["x-request-id"]
    if direct.status_code >= 400:
        assert direct.json()["error"]["request_id"] == direct.headers["x-request-id"]


async def test_invalid_json_is_refused_as_the_view_refuses_it(
    both: tuple[httpx.AsyncClient, Any],
) -> None:
    """A body that is not JSON gets the same typed 400 on both paths."""
    client, quart = both
    for path in ("/message", "/v1/chat/completions"):
        direct = await client.post(path, content=b"{not json", headers=JSON)
        viewed = await quart.post(path, data=b"{not json", headers=JSON)
        assert direct.status_code == viewed.status_code == 400
        assert _stable(direct.json()) == _stable(await viewed.get_json())


async def test_a_streamed_request_on_a_direct_route_is_answered_by_quart_in_full(
    tmp_path: Path,
) -> None:
    """``streaming``/``stream`` hands the request on, its body replayed: SSE comes back."""
    async with served(tmp_path) as (_, client):
        native = await client.post("/message", json={**MESSAGE, "streaming": True})
        openai = await client.post("/v1/chat/completions", json={**COMPLETION, "stream": True})
    assert native.headers["content-type"].startswith("text/event-stream")
    assert events(native.text)[-1]["done"] is True
    assert openai.headers["content-type"].startswith("text/event-stream")
    assert openai.text.rstrip().endswith("data: [DONE]")


async def test_with_anthropic_version_a_chat_completions_error_keeps_anthropics_shape(
    tmp_path: Path,
) -> None:
    """The /v1 blueprint answers such a request's errors in Anthropic's format; so it goes to Quart."""
    async with served(tmp_path) as (_, client):
        response = await client.post(
            "/v1/chat/completions", json={"model": "x"}, headers={"anthropic-version": "2023-06-01"}
        )
    assert response.status_code == 400
    assert response.json()["type"] == "error"


async def test_a_chunked_body_over_the_limit_is_refused_and_the_server_goes_on(
    tmp_path: Path,
) -> None:
    """No Content-Length to refuse it early: the read stops at the limit, answers 413 and closes."""
    chunks = [b'{"message": "', *([b"x" * 500] * 8)]
    async with served(tmp_path, max_body_bytes=1000) as (_, client):
        # Over a raw socket: httpx drops its own wrapper of a streamed body
        # unfinished when the server closes first, and trio warns of that
        # generator at random (a flaky ResourceWarning, not the server's doing).
        url = client.base_url
        stream = await trio.open_tcp_stream(str(url.host), int(url.port or 80))
        conn = h11.Connection(h11.CLIENT)
        head = h11.Request(
            method="POST",
            target="/message",
            headers=[
                ("host", f"{url.host}:{url.port}"),
                ("content-type", "application/json"),
                ("transfer-encoding", "chunked"),
            ],
        )
        try:
            with trio.fail_after(10):
                data = conn.send(head) or b""
                for chunk in chunks:
                    data += conn.send(h11.Data(data=chunk)) or b""
                data += conn.send(h11.EndOfMessage()) or b""
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await stream.send_all(data)
                got: list[Any] = []
                while not got or not isinstance(got[-1], h11.EndOfMessage):
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await stream.receive_some(65536))
                    else:
                        got.append(event)
        finally:
            await stream.aclose()
        after = await client.post("/message", json=MESSAGE)
    reply = got[0]
    assert isinstance(reply, h11.Response) and reply.status_code == 413
    body = b"".join(e.data for e in got if isinstance(e, h11.Data))
    assert json.loads(body)["error"]["type"] == "payload_too_large"
    assert (b"connection", b"close") in list(reply.headers)
    assert after.status_code == 200


async def test_a_body_that_stops_arriving_is_answered_408(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that announces a body and never sends it all gets request_timeout, not a hang."""
    monkeypatch.setattr(rhetor.edge._direct, "BODY_TIMEOUT", 0.3)
    async with served(tmp_path) as (server, _):
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            await stream.send_all(
                b"POST /message HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
            )
            received = b""
            with trio.fail_after(5):
                while b"\r\n\r\n" not in received or b"}" not in received.split(b"\r\n\r\n")[1]:
                    received += await stream.receive_some(4096)
    assert received.startswith(b"HTTP/1.1 408")
    assert b'"request_timeout"' in received


async def test_a_body_that_arrives_in_parts_after_a_pause_is_read_whole(tmp_path: Path) -> None:
    """Part of the body queued with its request, the rest later: the route waits for it and answers."""
    body = json.dumps(MESSAGE).encode()
    async with served(tmp_path) as (server, _):
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            await stream.send_all(
                b"POST /message HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body[:10])
            )
            await trio.sleep(0.3)
            await stream.send_all(body[10:])
            received = b""
            with trio.fail_after(5):
                while b"\r\n\r\n" not in received or not received.rstrip().endswith(b"}"):
                    received += await stream.receive_some(65536)
    assert received.startswith(b"HTTP/1.1 200")
    assert "hello direct" in json.loads(received.split(b"\r\n\r\n", 1)[1])["message"]


async def test_an_allowed_origin_gets_cors_headers_from_a_direct_route(tmp_path: Path) -> None:
    """CORS applies to the direct routes as to every other: the allowed origin, and no other."""
    origin = "http://ui.example"
    async with served(tmp_path, cors_origins=(origin,)) as (_, client):
        allowed = await client.post("/message", json=MESSAGE, headers={"Origin": origin})
        other = await client.post(
            "/v1/chat/completions", json=COMPLETION, headers={"Origin": "http://evil.example"}
        )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == origin
    assert allowed.headers["vary"] == "Origin"
    assert other.status_code == 403
    assert "access-control-allow-origin" not in other.headers


@pytest.mark.slow
async def test_for_arbitrary_bodies_a_direct_route_and_its_view_answer_alike(
    both: tuple[httpx.AsyncClient, Any],
) -> None:
    """
    Hostile JSON (the property tests' strategies: wrong types, deep nesting, huge and
    non-finite numbers, lone surrogates, garbage bytes) gets the same status and body
    from the direct route as from the Quart view.
    """
    client, quart = both
    routes = [
        ("/message", {"message": "hi"}),
        ("/v1/chat/completions", {"model": "rhetor/chat", "messages": [{"role": "user", "content": "hi"}]}),
    ]  # fmt: skip
    examples = st.sampled_from(routes).flatmap(
        lambda route: st.tuples(st.just(route[0]), _raw(_body_for(route[1])))
    )

    async def compare(path: str, raw: bytes) -> None:
        direct = await client.post(path, content=raw, headers=JSON)
        viewed = await quart.post(path, data=raw, headers=JSON)
        if b'"timeout"' in raw and 504 in (direct.status_code, viewed.status_code):
            return  # a body's own tiny timeout: whether it expires is a race
        assert direct.status_code == viewed.status_code, (raw, direct.text)
        assert _stable(direct.json()) == _stable(await viewed.get_json()), raw

    @PROPERTY
    @given(examples)
    def parity(example: tuple[str, bytes]) -> None:
        trio.from_thread.run(compare, *example)

    await trio.to_thread.run_sync(parity)


async def test_a_direct_route_on_rhetors_protocol_starts_no_task_to_watch_for_the_client(
    tmp_path: Path,
) -> None:
    """Rhetor's HTTP/1.1 protocol cancels the request when its stream closes: no watcher task."""
    spawned: list[str] = []

    class Spawns(trio.abc.Instrument):
        def task_spawned(self, task: trio.lowlevel.Task) -> None:
            spawned.append(task.name)

    instrument = Spawns()
    async with served(tmp_path) as (_, client):
        trio.lowlevel.add_instrument(instrument)
        try:
            for _ in range(5):
                response = await client.post("/message", json=MESSAGE)
                assert response.status_code == 200
        finally:
            trio.lowlevel.remove_instrument(instrument)
    assert spawned  # the requests' own tasks were seen
    assert not [name for name in spawned if name.endswith("_cancel_on_disconnect")]


@pytest.mark.parametrize(
    ("path", "body"), [("/message", MESSAGE), ("/v1/chat/completions", COMPLETION)]
)
async def test_a_direct_route_sends_its_reply_as_one_whole_reply_message_with_rhetors_headers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str, body: Any
) -> None:
    """On Rhetor's HTTP/1.1 protocol the reply is one message; the observer still adds its headers."""
    sent: list[int] = []
    original = CoalescingH11Protocol._send_whole

    async def counted(self: CoalescingH11Protocol, event: Any) -> None:
        sent.append(event.status_code)
        await original(self, event)

    monkeypatch.setattr(CoalescingH11Protocol, "_send_whole", counted)
    async with served(tmp_path) as (_, client):
        ok = await client.post(path, json=body)
        refused = await client.post(path, json={"model": 3})
    assert sent == [200, refused.status_code] and refused.status_code >= 400
    for response in (ok, refused):
        assert response.headers["x-request-id"]
        assert response.headers["server-timing"].startswith("rhetor;")
        assert int(response.headers["content-length"]) == len(response.content)
    assert ok.json()
