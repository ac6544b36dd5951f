"""
Hostile requests against the real server: what the edge refuses before any actor sees it.

Each test here is the regression test of a defect found by fuzzing or by a
cross-site page (issue 11): the request used to crash an actor, answer 500,
stall its connection, or change state from another site. Every answer must be
a typed error, and no actor may have crashed or restarted afterwards.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

import rhetor.runtime
from tests.helpers import ServerInfo, running_server, settings_for

JSON = {"Content-Type": "application/json"}
BIG = "9" * 400  # a whole number no float holds
DEEP = "[" * 100_000 + "]" * 100_000


@asynccontextmanager
async def served(
    tmp_path: Path, **overrides: Any
) -> AsyncIterator[tuple[ServerInfo, httpx.AsyncClient]]:
    async with (
        running_server(settings_for(tmp_path, **overrides)) as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=5, verify=False) as client,
    ):
        yield server, client


def assert_no_actor_restarted(runtime: rhetor.runtime.Runtime) -> None:
    """Every long-lived actor is alive and was never restarted."""
    refs = [runtime.router, runtime.budget_keeper, runtime.contexts, runtime.prompts]
    for ref in [*refs, *runtime.providers_refs.values()]:
        stats = ref.stats()
        assert stats.alive and stats.restarts == 0, stats


# -- bodies and query strings: a 4xx naming the field, never a 500 or a crash ---------


@pytest.mark.parametrize(
    ("path", "body", "status", "field"),
    [
        ("/message", f'{{"message": "hi", "temperature": {BIG}}}', 422, "temperature"),
        ("/message", f'{{"message": "hi", "max_tokens": {BIG}}}', 422, "max_tokens"),
        ("/message", '{"message": "hi", "max_tokens": 1e300}', 422, "max_tokens"),
        ("/message", '{"message": "hi", "timeout": 1e400}', 422, "timeout"),
        ("/message", '{"message": "hi", "temperature": NaN}', 400, None),
        ("/message", '{"message": "hi", "temperature": -Infinity}', 400, None),
        (
            "/message",
            '{"message": "hi", "routing_parameters": {"required_capabilities": true}}',
            422,
            "routing_parameters.required_capabilities",
        ),
        (
            "/message",
            '{"message": "hi", "routing_parameters": {"max_cost": 1e999}}',
            422,
            "routing_parameters.max_cost",
        ),
        ("/message", '{"message": "a\\ud800b"}', 422, "message"),
        ("/message", '{"message": "hi", "component": "a\\ud800b"}', 422, "component"),
        ("/message", '{"message": "hi", "context_id": "a\\udfffb"}', 422, "context_id"),
        ("/message", '{"message": "hi", "metadata": {"k\\ud800": 1}}', 422, "metadata"),
        (
            "/chat",
            '{"messages": [{"role": "user", "content": "\\ud800"}]}',
            422,
            "messages[0].content",
        ),
        ("/message", DEEP, 422, "body"),
        ("/message", "[" * 70 + "]" * 70, 422, "body[0]"),
        ("/templates", '{"name": "a\\ud800b", "content": "x"}', 422, "name"),
        (
            "/templates",
            '{"name": "t", "content": "x", "required": ["\\udc00"]}',
            422,
            "required[0]",
        ),
        ("/prompts", '{"name": "p", "component": "a\\ud800b", "content": "x"}', 422, "component"),
        ("/budget/limit", f'{{"period": "daily", "limit": {BIG}}}', 422, "limit"),
        ("/budget/estimate", f'{{"prompt": "hi", "max_tokens": {BIG}}}', 422, "max_tokens"),
        (
            "/evaluate",
            '{"prompt": "p", "response": "r", "criteria": ["\\ud800"]}',
            422,
            "criteria[0]",
        ),
    ],
)
async def test_a_hostile_body_is_a_typed_4xx_naming_the_field(
    tmp_path: Path, path: str, body: str, status: int, field: str | None
) -> None:
    """Huge or non-finite numbers, lone surrogates, wrong types and deep nesting are 4xx, not 500."""
    async with served(tmp_path) as (server, client):
        response = await client.post(path, content=body.encode(), headers=JSON)
        again = await client.post("/message", json={"message": "still serving"})
        assert_no_actor_restarted(server.runtime)
    error = response.json()["error"]
    assert response.status_code == status
    assert error["type"] == ("invalid_json" if status == 400 else "validation_error")
    assert error.get("field") == field
    assert again.status_code == 200


@pytest.mark.parametrize(
    ("path", "field"),
    [
        (f"/contexts?limit={'9' * 24}", "limit"),
        (f"/contexts?offset={'9' * 24}", "offset"),
        (f"/contexts/search?q=x&limit={'9' * 24}", "limit"),
        (f"/contexts/c?limit={'9' * 24}", "limit"),
        (f"/templates/t?version={'9' * 24}", "version"),
        ("/contexts?limit=-1", "limit"),
        ("/contexts?offset=ten", "offset"),
    ],
)
async def test_an_out_of_range_query_number_is_a_422(tmp_path: Path, path: str, field: str) -> None:
    """A 24-digit limit or offset is a 422 naming it, not a storage actor's crash."""
    async with served(tmp_path) as (server, client):
        responses = [await client.get(path) for _ in range(4)]  # once crashed the store each time
        listed = await client.get("/contexts")
        assert_no_actor_restarted(server.runtime)
    assert {r.status_code for r in responses} == {422}
    assert responses[0].json()["error"]["field"] == field
    assert listed.status_code == 200


async def test_percent_encoded_bad_utf8_in_a_path_or_query_is_served(tmp_path: Path) -> None:
    """Invalid UTF-8 in a URL is decoded with replacement characters, never a lone surrogate."""
    async with served(tmp_path) as (server, client):
        template = await client.get("/templates/a%ED%A0%80b")
        prompts = await client.get("/prompts?component=%ED%A0%80")
        deleted = await client.delete("/contexts/%ED%A0%80")
        assert_no_actor_restarted(server.runtime)
    assert template.status_code == 404 and template.json()["error"]["type"] == "not_found"
    assert prompts.status_code == 200
    assert deleted.status_code == 422 and deleted.json()["error"]["field"] == "context_id"


# -- a reply sent before the body was read closes the connection ------------------------


def _raw_exchange(port: int, request_head: str, body: bytes) -> tuple[bytes, bytes]:
    """Send a request and, right behind it, ``GET /health`` on one socket; answer what came back."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        head = f"{request_head}Host: 127.0.0.1:{port}\r\nContent-Length: {len(body)}\r\n\r\n"
        follow = f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
        received = b""
        # The server may close early; what it sent before is still readable.
        with contextlib.suppress(OSError):
            sock.sendall(head.encode() + body + follow)
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass  # closing with the body unread resets; the answer came before it
        except TimeoutError:
            return received, b"timed out"
    return received, b"closed"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("request_head", "overrides", "status"),
    [
        ("POST /message HTTP/1.1\r\nContent-Type: application/json\r\n", {}, 413),
        (
            "POST /nowhere HTTP/1.1\r\nContent-Type: application/json\r\n",
            {"max_body_bytes": 8 << 20},
            404,
        ),
        (
            "PUT /message HTTP/1.1\r\nContent-Type: application/json\r\n",
            {"max_body_bytes": 8 << 20},
            405,
        ),
        (
            "POST /message HTTP/1.1\r\nContent-Type: text/plain\r\n",
            {"max_body_bytes": 8 << 20},
            415,
        ),
        (
            "POST /message HTTP/1.1\r\nContent-Type: application/json\r\n",
            {"max_body_bytes": 8 << 20, "api_key": "k"},
            401,
        ),
    ],
)
async def test_a_reply_before_the_body_was_read_closes_the_connection(
    tmp_path: Path, request_head: str, overrides: dict[str, Any], status: int
) -> None:
    """
    An early refusal of a large body says Connection: close and closes at once,
    so the next request on a kept-alive connection never hangs (it used to, for good).
    """
    body = b'{"message": "' + b"x" * (4 << 20) + b'"}'
    async with served(tmp_path, **overrides) as (server, _):
        for _ in range(3):  # the stall depended on timing; three tries hit it reliably
            with trio.fail_after(10):
                received, end = await trio.to_thread.run_sync(
                    _raw_exchange, server.port, request_head, body
                )
            head = received.partition(b"\r\n\r\n")[0].lower()
            assert head.startswith(f"http/1.1 {status} ".encode())
            assert b"connection: close" in head
            assert end == b"closed"
            assert received.count(b"HTTP/1.1 ") == 1  # the GET behind the body is not misread


async def test_a_small_body_read_in_full_keeps_the_connection_alive(tmp_path: Path) -> None:
    """A normal request keeps its connection: only a reply that left the body unread closes."""
    async with served(tmp_path) as (_, client):
        first = await client.post("/message", json={"message": "hi"})
        second = await client.post("/message", json={"message": "again"})
    assert "close" not in first.headers.get("connection", "")
    assert second.status_code == 200


# -- cross-site requests and DNS rebinding ------------------------------------------------


async def test_a_text_plain_post_cannot_change_the_budget_policy(tmp_path: Path) -> None:
    """A body a cross-site form or fetch may send without preflight (text/plain) is a 415."""
    async with served(tmp_path) as (_, client):
        sneaky = await client.post(
            "/budget/policy",
            content=b'{"policy": "ignore"}',
            headers={"Content-Type": "text/plain;charset=UTF-8"},
        )
        untyped = await client.post("/budget/policy", content=b'{"policy": "ignore"}')
        form = await client.post("/budget/policy", data={"policy": "ignore"})
        policy = (await client.get("/budget")).json()["policy"]
    for response in (sneaky, untyped, form):
        assert response.status_code == 415
        assert response.json()["error"]["type"] == "unsupported_media_type"
    assert policy == "warn"


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"]
)
async def test_json_content_types_are_accepted(tmp_path: Path, content_type: str) -> None:
    """application/json, with or without parameters, in any case, is a JSON body."""
    async with served(tmp_path) as (_, client):
        response = await client.post(
            "/budget/policy",
            content=b'{"policy": "enforce"}',
            headers={"Content-Type": content_type},
        )
    assert response.status_code == 200 and response.json()["policy"] == "enforce"


async def test_a_post_without_a_body_needs_no_content_type(tmp_path: Path) -> None:
    """A bodiless POST (summarize) is not refused for its missing Content-Type."""
    async with served(tmp_path) as (_, client):
        await client.post("/message", json={"message": "hi", "context_id": "c"})
        response = await client.post("/contexts/c/summarize")
    assert response.status_code == 200


async def test_a_state_change_from_a_foreign_origin_is_403(tmp_path: Path) -> None:
    """A page on another site cannot change state, even with a JSON body; reads stay open."""
    async with served(tmp_path) as (server, client):
        foreign = await client.post(
            "/budget/policy",
            json={"policy": "ignore"},
            headers={"Origin": "http://evil.example"},
        )
        null = await client.post(
            "/budget/policy", json={"policy": "ignore"}, headers={"Origin": "null"}
        )
        same = await client.post(
            "/budget/policy",
            json={"policy": "enforce"},
            headers={"Origin": f"http://127.0.0.1:{server.port}"},
        )
        read = await client.get("/budget", headers={"Origin": "http://evil.example"})
    assert foreign.status_code == 403 and null.status_code == 403
    assert foreign.json()["error"] == {
        "type": "forbidden",
        "message": foreign.json()["error"]["message"],
        "field": "Origin",
        "request_id": foreign.headers["X-Request-ID"],
    }
    assert same.status_code == 200
    assert read.status_code == 200 and read.json()["policy"] == "enforce"
    assert "access-control-allow-origin" not in read.headers


async def test_a_configured_cors_origin_may_change_state(tmp_path: Path) -> None:
    """An origin listed in RHETOR_CORS_ORIGINS is allowed to POST."""
    origin = "http://ui.example"
    async with served(tmp_path, cors_origins=(origin,)) as (_, client):
        response = await client.post(
            "/budget/policy", json={"policy": "ignore"}, headers={"Origin": origin}
        )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == origin


async def test_a_foreign_host_header_is_refused_before_anything_runs(tmp_path: Path) -> None:
    """A DNS-rebinding request (Host: the attacker's name) is a 403 on every route."""
    async with served(tmp_path) as (server, client):
        evil = {"Host": "evil.example:8300"}
        posted = await client.post("/budget/policy", json={"policy": "ignore"}, headers=evil)
        read = await client.get("/budget", headers=evil)
        unknown = await client.get("/nowhere", headers=evil)
        compat = await client.get("/v1/models", headers=evil)
        local = await client.get("/health", headers={"Host": f"localhost:{server.port}"})
        policy = (await client.get("/budget")).json()["policy"]
    for response in (posted, read, unknown):
        assert response.status_code == 403
        assert response.json()["error"]["type"] == "forbidden"
        assert response.json()["error"]["field"] == "Host"
    assert compat.status_code == 403 and compat.json()["error"]["type"] == "permission_error"
    assert local.status_code == 200
    assert policy == "warn"


async def test_allowed_hosts_lists_extra_names_and_star_allows_any(tmp_path: Path) -> None:
    """RHETOR_ALLOWED_HOSTS replaces the defaults; ``*`` turns the check off."""
    async with served(tmp_path / "a", allowed_hosts=("rhetor.internal",)) as (_, client):
        named = await client.get("/health", headers={"Host": "rhetor.internal:8300"})
        loopback = await client.get("/health")
    async with served(tmp_path / "b", allowed_hosts=("*",)) as (_, client):
        anything = await client.get("/health", headers={"Host": "whatever.example"})
    assert named.status_code == 200
    assert loopback.status_code == 403
    assert anything.status_code == 200


async def test_a_websocket_with_a_foreign_host_is_refused(tmp_path: Path) -> None:
    """The Host allow-list holds for /ws too: a rebinding page gets no socket (403)."""
    async with running_server(settings_for(tmp_path)) as server:
        refused = await _websocket_handshake(server.port, host="evil.example")
        accepted = await _websocket_handshake(server.port)
        await accepted.aclose()
    assert refused.startswith(b"HTTP/1.1 403")
    body = refused[refused.index(b"{") : refused.rindex(b"}") + 1]  # inside the chunked framing
    assert json.loads(body)["error"]["field"] == "Host"


# -- WebSocket protocol errors end with the close frame RFC 6455 asks for ----------------


async def _websocket_handshake(port: int, host: str | None = None) -> Any:
    """
    Open ``/ws`` over a raw socket: the open stream once upgraded (101),
    else the whole refusal as bytes.
    """
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(
        (
            "GET /ws HTTP/1.1\r\n"
            f"Host: {host or f'127.0.0.1:{port}'}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    received = b""
    with trio.fail_after(5):
        while b"\r\n\r\n" not in received:
            received += await stream.receive_some(4096)
        if received.startswith(b"HTTP/1.1 101"):
            return stream
        async with stream:
            while chunk := await stream.receive_some(4096):
                received += chunk
    return received


async def _raw_websocket(port: int) -> trio.SocketStream:
    stream = await _websocket_handshake(port)
    assert isinstance(stream, trio.SocketStream), stream
    return stream


def _client_frame(first_byte: int, payload: bytes) -> bytes:
    """One masked client frame (payloads under 126 bytes)."""
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([first_byte, 0x80 | len(payload)]) + mask + masked


async def _close_code(stream: trio.SocketStream) -> int | None:
    """The code of the close frame the server sends before closing, or None if it sent none."""
    received = b""
    with trio.fail_after(5):
        while chunk := await stream.receive_some(4096):
            received += chunk
    while received:
        opcode, length = received[0] & 0x0F, received[1] & 0x7F
        if opcode == 0x8:
            return int.from_bytes(received[2:4], "big")
        received = received[2 + length :]
    return None


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (_client_frame(0x81, b'{"type": "\xff\xfe"}'), 1007),  # text frame, invalid UTF-8
        (_client_frame(0x83, b"x"), 1002),  # opcode 3 is reserved
        (_client_frame(0x88, (999).to_bytes(2, "big")), 1002),  # close code 999 is invalid
        (_client_frame(0xC1, b"{}"), 1002),  # RSV1 set without an extension
        (bytes([0x81, 2]) + b"{}", 1002),  # a client frame must be masked
    ],
    ids=["invalid-utf8", "reserved-opcode", "bad-close-code", "reserved-bit", "unmasked"],
)
async def test_a_websocket_protocol_error_ends_with_the_rfc_6455_close_frame(
    tmp_path: Path, frame: bytes, code: int
) -> None:
    """Invalid UTF-8 is closed with 1007, a protocol error with 1002, not a bare TCP close."""
    async with running_server(settings_for(tmp_path)) as server:
        stream = await _raw_websocket(server.port)
        async with stream:
            await stream.send_all(frame)
            assert await _close_code(stream) == code
        assert_no_actor_restarted(server.runtime)
