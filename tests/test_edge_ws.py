"""Tests for the WebSocket edge and the Session actor (rhetor/edge/_app.py, rhetor/edge/_session.py)."""

from __future__ import annotations

import gc
import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from trio_websocket import ConnectionRejected, WebSocketConnection, open_websocket_url

from rhetor._errors import NotFound
from rhetor._types import ProviderRequest, StreamEnd, TextDelta
from rhetor.providers._simulated import SimulatedBackend
from tests.helpers import running_server, settings_for

LONG = " ".join(f"w{i}" for i in range(40))


async def send(ws: WebSocketConnection, frame: dict[str, Any] | str) -> None:
    await ws.send_message(frame if isinstance(frame, str) else json.dumps(frame))


async def receive(ws: WebSocketConnection) -> dict[str, Any]:
    with trio.fail_after(3):
        frame: dict[str, Any] = json.loads(await ws.get_message())
    return frame


async def until_response(ws: WebSocketConnection, frame_id: str) -> list[dict[str, Any]]:
    """Every frame up to and including the RESPONSE or ERROR for ``frame_id``."""
    frames = []
    while True:
        frame = await receive(ws)
        frames.append(frame)
        if frame["id"] == frame_id and frame["type"] in ("RESPONSE", "ERROR"):
            return frames


def llm(frame_id: str, message: str = "hello there", **payload: Any) -> dict[str, Any]:
    return {
        "type": "LLM_REQUEST",
        "id": frame_id,
        "source": "test",
        "payload": {"message": message, "context": "ws", **payload},
    }


@attrs.define
class WatchedBackend(SimulatedBackend):
    """The simulated provider, recording whether a stream was closed before its end."""

    closed_early: list[str] = attrs.field(factory=list)
    finished: list[str] = attrs.field(factory=list)
    ended: trio.Event = attrs.field(factory=trio.Event)

    async def stream(self, request: ProviderRequest) -> AsyncIterator[TextDelta | StreamEnd]:
        done = False
        try:
            async with aclosing(super().stream(request)) as items:
                async for item in items:
                    yield item
            done = True
        finally:
            (self.finished if done else self.closed_early).append(request.request_id)
            self.ended.set()


def slow(backend: WatchedBackend) -> dict[str, Any]:
    return {"backends": {"simulated": lambda: backend}}


# -- the protocol --------------------------------------------------------------------


async def test_register_is_acknowledged_with_its_id(tmp_path: Path) -> None:
    """REGISTER answers a RESPONSE acknowledgement echoing the frame id."""
    async with (
        running_server(settings_for(tmp_path)) as server,
        open_websocket_url(server.ws_url) as ws,
    ):
        await send(ws, {"type": "REGISTER", "id": "r1", "source": "UI"})
        frame = await receive(ws)
    assert frame["type"] == "RESPONSE" and frame["id"] == "r1"
    assert frame["payload"]["status"] == "registered"
    assert frame["target"] == "UI" and frame["source"] == "rhetor"
    assert {"timestamp", "payload"} <= frame.keys()


async def test_streamed_request_sends_typing_chunks_end_and_response(tmp_path: Path) -> None:
    """LLM_REQUEST streams: typing first, one UPDATE per chunk, typing off, then RESPONSE."""
    async with (
        running_server(settings_for(tmp_path)) as server,
        open_websocket_url(server.ws_url) as ws,
    ):
        await send(ws, llm("q1"))
        frames = await until_response(ws, "q1")
    assert all(f["id"] == "q1" for f in frames)
    assert frames[0]["payload"] == {"status": "typing", "isTyping": True, "context": "ws"}
    chunks = [f["payload"]["chunk"] for f in frames if "chunk" in f["payload"]]
    assert len(chunks) > 1
    assert frames[-2]["payload"]["isTyping"] is False
    reply = frames[-1]
    assert reply["type"] == "RESPONSE"
    assert reply["payload"]["message"] == "".join(chunks)
    assert {"model", "provider", "usage", "cost", "routing", "timestamp"} <= reply["payload"].keys()


async def test_unstreamed_request_sends_typing_then_response(tmp_path: Path) -> None:
    """With streaming false there are no chunk UPDATEs, only typing on and off."""
    async with (
        running_server(settings_for(tmp_path)) as server,
        open_websocket_url(server.ws_url) as ws,
    ):
        await send(ws, llm("q1", streaming=False))
        frames = await until_response(ws, "q1")
    assert [f["type"] for f in frames] == ["UPDATE", "UPDATE", "RESPONSE"]
    assert not any("chunk" in f["payload"] for f in frames)


async def test_chat_request_answers_the_messages(tmp_path: Path) -> None:
    """CHAT_REQUEST takes ``messages`` and answers a RESPONSE."""
    async with (
        running_server(settings_for(tmp_path)) as server,
        open_websocket_url(server.ws_url) as ws,
    ):
        messages = [{"role": "user", "content": "yo"}]
        await send(ws, {"type": "CHAT_REQUEST", "id": "c1", "payload": {"messages": messages}})
        frames = await until_response(ws, "c1")
    assert frames[-1]["payload"]["message"].startswith("[simulated] You said: yo")


async def test_status_answers_providers_and_budget(tmp_path: Path) -> None:
    """STATUS answers a RESPONSE holding providers and budget."""
    async with (
        running_server(settings_for(tmp_path)) as server,
        open_websocket_url(server.ws_url) as ws,
    ):
        await send(ws, {"type": "STATUS", "id": 7})
        frame = await receive(ws)
    assert frame["id"] == 7 and frame["type"] == "RESPONSE"
    assert "simulated" in frame["payload"]["providers"]["providers"]
    assert "periods" in frame["payload"]["budget"]


async def test_a_frame_without_an_id_gets_one_echoed(tmp_path: Path) -> None:
    """A client frame with no id is answered with a fresh id, the same on every frame."""
    async with (
        running_server(settings_for(tmp_path)) as server,
        open_websocket_url(server.ws_url) as ws,
    ):
        await send(ws, {"type": "LLM_REQUEST", "payload": {"message": "hi"}})
        first = await receive(ws)
        frames = [first, *(await until_response(ws, first["id"]))]
    assert first["id"] and len({f["id"] for f in frames}) == 1


async def test_two_requests_on_one_socket_run_concurrently(tmp_path: Path) -> None:
    """Two LLM_REQUESTs on one socket interleave and each completes under its own id."""
    backend = WatchedBackend(chunk_delay=0.005)
    async with (
        running_server(settings_for(tmp_path), **slow(backend)) as server,
        open_websocket_url(server.ws_url) as ws,
    ):
        await send(ws, llm("a", "alpha " * 10))
        await send(ws, llm("b", "beta " * 10))
        frames: list[dict[str, Any]] = []
        done: set[str] = set()
        while done != {"a", "b"}:
            frame = await receive(ws)
            frames.append(frame)
            if frame["type"] == "RESPONSE":
                done.add(frame["id"])
    order = [f["id"] for f in frames if "chunk" in f["payload"]]
    first_b, last_a = order.index("b"), len(order) - 1 - order[::-1].index("a")
    assert first_b < last_a, "the second request should stream while the first still does"
    replies = {f["id"]: f["payload"]["message"] for f in frames if f["type"] == "RESPONSE"}
    assert "alpha" in replies["a"] and "beta" in replies["b"]


async def test_cancel_stops_one_request_and_leaves_the_other(tmp_path: Path) -> None:
    """CANCEL ends its target with ERROR cancelled and closes the provider stream."""
    backend = WatchedBackend(chunk_delay=0.01)
    async with (
        running_server(settings_for(tmp_path), **slow(backend)) as server,
        open_websocket_url(server.ws_url) as ws,
    ):
        await send(ws, llm("slow", LONG))
        await send(ws, llm("other", "short one"))
        while (await receive(ws))["payload"].get("chunk") is None:
            pass
        await send(ws, {"type": "CANCEL", "id": "x", "payload": {"id": "slow"}})
        frames: dict[str, list[dict[str, Any]]] = {"slow": [], "other": [], "x": []}
        while not (
            frames["x"]
            and any(f["type"] == "ERROR" for f in frames["slow"])
            and any(f["type"] == "RESPONSE" for f in frames["other"])
        ):
            frame = await receive(ws)
            frames[frame["id"]].append(frame)
        await send(ws, {"type": "CANCEL", "id": "y", "payload": {"id": "slow"}})
        again = await receive(ws)
    assert frames["x"][0]["payload"] == {"id": "slow", "cancelled": True}
    assert frames["slow"][-1]["payload"]["type"] == "cancelled"
    assert not any(f["type"] == "RESPONSE" for f in frames["slow"])
    assert any(f["payload"].get("isTyping") is False for f in frames["slow"])
    assert again["payload"] == {"id": "slow", "cancelled": False}
    assert len(backend.closed_early) == 1 and len(backend.finished) == 1


async def test_disconnect_mid_stream_cancels_the_provider_call(tmp_path: Path) -> None:
    """
    Closing the socket mid-stream closes the provider stream, bills it partially,
    stores no turn, and stops the session cleanly (a frame it emits after the
    socket went away is not a crash).
    """
    backend = WatchedBackend(chunk_delay=0.01)
    async with (
        running_server(settings_for(tmp_path), **slow(backend)) as server,
        server.runtime.system.events() as events,
    ):
        async with open_websocket_url(server.ws_url) as ws:
            await send(ws, llm("q", LONG, component="watcher"))
            while (await receive(ws))["payload"].get("chunk") is None:
                pass
        with trio.fail_after(2):
            await backend.ended.wait()
        rows = await server.runtime.budget_usage("daily", "component")
        with pytest.raises(NotFound):
            await server.runtime.get_context("ws")
        session_events = []
        with trio.fail_after(2):
            async for event in events:
                if event.name.startswith("session:"):
                    session_events.append(event.kind)
                    if event.kind == "stopped":
                        break
    assert backend.finished == []
    assert rows[0]["key"] == "watcher" and rows[0]["requests"] == 1
    assert 0 < rows[0]["output_tokens"] < 40
    assert session_events == ["started", "stopped"]


# -- bad input -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "error_type", "field"),
    [
        ("not json", "invalid_json", None),
        ("[1, 2]", "validation_error", "frame"),
        ('{"id": "1"}', "validation_error", "type"),
        ('{"type": "DANCE", "id": "1"}', "validation_error", "type"),
        ('{"type": "LLM_REQUEST", "id": "1", "payload": {}}', "validation_error", "message"),
        ('{"type": "LLM_REQUEST", "id": "1", "payload": []}', "validation_error", "payload"),
        ('{"type": "LLM_REQUEST", "id": true}', "validation_error", "id"),
        ('{"type": "CANCEL", "id": "1", "payload": {}}', "validation_error", "payload.id"),
        (
            '{"type": "LLM_REQUEST", "id": "1", "payload": {"message": "x", "max_tokens": "9"}}',
            "validation_error",
            "max_tokens",
        ),
        (
            '{"type": "LLM_REQUEST", "id": "1", "payload": {"message": "x", "temperature": %s}}'
            % ("9" * 400),
            "validation_error",
            "payload.temperature",
        ),
        (
            '{"type": "LLM_REQUEST", "id": "1", "payload": {"message": "x",'
            ' "routing_parameters": {"required_capabilities": true}}}',
            "validation_error",
            "routing_parameters.required_capabilities",
        ),
        (
            '{"type": "LLM_REQUEST", "id": "1", "payload": {"message": "a\\ud800b"}}',
            "validation_error",
            "payload.message",
        ),
        ('{"type": "LLM_REQUEST", "id": "1", "payload": {"message": NaN}}', "invalid_json", None),
        ("[" * 100_000 + "]" * 100_000, "validation_error", "frame"),
    ],
)
async def test_bad_frame_is_an_error_frame_and_the_socket_stays_open(
    tmp_path: Path, raw: str, error_type: str, field: str | None
) -> None:
    """A bad frame answers ERROR naming the problem, and the socket keeps working."""
    async with (
        running_server(settings_for(tmp_path)) as server,
        open_websocket_url(server.ws_url) as ws,
    ):
        await send(ws, raw)
        error = await receive(ws)
        await send(ws, {"type": "REGISTER", "id": "after"})
        after = await receive(ws)
    assert error["type"] == "ERROR"
    assert error["payload"]["type"] == error_type
    assert error["payload"].get("field") == field
    assert after["id"] == "after" and after["type"] == "RESPONSE"


@pytest.mark.slow
async def test_a_bad_frame_fails_alone_while_other_requests_on_the_socket_complete(
    tmp_path: Path,
) -> None:
    """
    Frames with a mistyped routing hint or a 400-digit temperature get an ERROR for
    their own id; a request already streaming on the socket still gets its RESPONSE.
    """
    backend = WatchedBackend(chunk_delay=0.01)
    bad_routing = llm("caps", routing_parameters={"required_capabilities": True})
    huge = '{"type": "LLM_REQUEST", "id": "temp", "payload": {"message": "x", "temperature": %s}}'
    async with (
        running_server(settings_for(tmp_path), **slow(backend)) as server,
        open_websocket_url(server.ws_url) as ws,
    ):
        await send(ws, llm("good", LONG))
        await send(ws, bad_routing)
        await send(ws, huge % ("9" * 400))
        ends: dict[str, dict[str, Any]] = {}
        while len(ends) < 3:
            frame = await receive(ws)
            if frame["type"] in ("RESPONSE", "ERROR"):
                ends[frame["id"]] = frame
        await send(ws, {"type": "REGISTER", "id": "after"})
        after = await receive(ws)
    assert ends["good"]["type"] == "RESPONSE"
    assert ends["caps"]["type"] == ends["temp"]["type"] == "ERROR"
    assert ends["caps"]["payload"]["field"] == "routing_parameters.required_capabilities"
    assert ends["temp"]["payload"]["field"] == "payload.temperature"
    assert after["type"] == "RESPONSE" and after["payload"]["status"] == "registered"
    assert backend.finished and not backend.closed_early


async def test_oversized_frame_is_an_error_frame(tmp_path: Path) -> None:
    """A frame over max_body_bytes answers ERROR payload_too_large; the socket stays open."""
    async with (
        running_server(settings_for(tmp_path, max_body_bytes=1000)) as server,
        open_websocket_url(server.ws_url) as ws,
    ):
        await send(ws, llm("big", "x" * 2000))
        error = await receive(ws)
        await send(ws, {"type": "REGISTER", "id": "after"})
        after = await receive(ws)
    assert error["payload"]["type"] == "payload_too_large"
    assert after["type"] == "RESPONSE"


async def test_a_duplicate_running_id_is_refused(tmp_path: Path) -> None:
    """A second request reusing the id of one still running answers ERROR naming ``id``."""
    backend = WatchedBackend(chunk_delay=0.01)
    async with (
        running_server(settings_for(tmp_path), **slow(backend)) as server,
        open_websocket_url(server.ws_url) as ws,
    ):
        await send(ws, llm("same", LONG))
        await send(ws, llm("same", "again"))
        frames = await until_response(ws, "same")
    assert frames[-1]["type"] == "ERROR" and frames[-1]["payload"]["field"] == "id"


async def test_failed_request_is_an_error_frame(tmp_path: Path) -> None:
    """A request the runtime refuses (unknown provider) answers ERROR with its type."""
    async with (
        running_server(settings_for(tmp_path)) as server,
        open_websocket_url(server.ws_url) as ws,
    ):
        await send(ws, llm("q", provider="nope"))
        frames = await until_response(ws, "q")
    assert frames[-1]["type"] == "ERROR"
    assert frames[-1]["payload"]["type"] in ("not_found", "all_providers_failed")


# -- auth ----------------------------------------------------------------------------

# trio-websocket's client leaves its socket to the garbage collector when the
# handshake is rejected; that ResourceWarning is the client's, not the server's.
client_leaks_on_reject = pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning"
)


@client_leaks_on_reject
async def test_ws_with_an_api_key_refuses_a_client_without_one(tmp_path: Path) -> None:
    """With api_key set, a WebSocket without a key is refused with 401."""
    async with running_server(settings_for(tmp_path, api_key="k")) as server:
        with pytest.raises(ConnectionRejected) as caught:
            async with open_websocket_url(server.ws_url):
                pass
    status = caught.value.status_code
    del caught  # its traceback holds the client's leaked socket
    gc.collect()  # so that the socket warns here, where the warning is ignored
    assert status == 401


async def test_ws_accepts_the_key_as_query_parameter_or_header(tmp_path: Path) -> None:
    """With api_key set, ``?api_key=`` and ``X-API-Key`` both open the socket."""
    async with running_server(settings_for(tmp_path, api_key="k")) as server:
        async with open_websocket_url(server.ws_url + "?api_key=k") as ws:
            await send(ws, {"type": "REGISTER", "id": "1"})
            assert (await receive(ws))["type"] == "RESPONSE"
        headers = [("X-API-Key", "k")]
        async with open_websocket_url(server.ws_url, extra_headers=headers) as ws:
            await send(ws, {"type": "REGISTER", "id": "2"})
            assert (await receive(ws))["type"] == "RESPONSE"


@client_leaks_on_reject
async def test_ws_from_a_foreign_origin_is_refused(tmp_path: Path) -> None:
    """A browser WebSocket from an origin not allowed by CORS is refused with 403."""
    async with running_server(settings_for(tmp_path)) as server:
        headers = [("Origin", "http://evil.example")]
        with pytest.raises(ConnectionRejected) as caught:
            async with open_websocket_url(server.ws_url, extra_headers=headers):
                pass
    status = caught.value.status_code
    del caught  # its traceback holds the client's leaked socket
    gc.collect()  # so that the socket warns here, where the warning is ignored
    assert status == 403


async def test_session_actor_stops_when_the_socket_closes(tmp_path: Path) -> None:
    """Each socket is one child of the sessions supervisor, gone after disconnect."""
    async with running_server(settings_for(tmp_path)) as server:
        async with open_websocket_url(server.ws_url) as ws:
            await send(ws, {"type": "REGISTER", "id": "1"})
            name = (await receive(ws))["payload"]["session"]
            session = server.runtime.system.ref(name)
            assert session.alive
        for _ in range(200):  # the stop is asynchronous; give it up to 2 s
            if not session.alive:
                break
            await trio.sleep(0.01)
        assert not session.alive
