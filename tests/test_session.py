"""The Session actor on its own: one WebSocket client's frames, without a socket."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest
import trio

import actors
import rhetor.runtime
from rhetor import Settings
from rhetor.edge._session import EMIT_TIMEOUT, Inbound, Session
from rhetor.providers._simulated import SimulatedBackend


def frame(kind: str, frame_id: str, **payload: Any) -> Inbound:
    return Inbound(json.dumps({"type": kind, "id": frame_id, "source": "t", "payload": payload}))


async def test_a_client_that_stops_reading_has_its_requests_dropped(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Frames that wait past the emit deadline drop the client's requests instead of waiting forever."""
    settings = Settings(data_dir=tmp_path, hermes_url=None, simulated_chunk_delay=1.0)
    backends = {"simulated": lambda: SimulatedBackend(chunk_delay=1.0)}
    async with rhetor.runtime.start(settings, backends=backends) as rt:
        outbox, frames = anyio.create_memory_object_stream[dict[str, Any]](0)
        spec = actors.ChildSpec("session:t", partial(Session, rt, outbox), restart="temporary")
        ref = await rt.sessions.start_child(spec)
        await ref.tell(frame("LLM_REQUEST", "slow", message="one two three four five"))
        # Nobody reads: the typing frame waits for room until the deadline.
        await trio.sleep(EMIT_TIMEOUT + 1)
        with frames:
            await ref.tell(frame("STATUS", "status"))
            with trio.fail_after(10):
                answer = await frames.receive()
        assert answer["id"] == "status"
        assert answer["payload"]["in_flight"] == 0
        await rt.sessions.stop_child("session:t")


async def test_a_socket_gone_mid_request_drops_its_requests_without_a_crash(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """
    When the edge's outbox reader is gone (trio's channel, as the edge uses), the next
    frame the session emits drops its requests; the session does not crash and stays
    stoppable.
    """
    settings = Settings(data_dir=tmp_path, hermes_url=None, simulated_chunk_delay=1.0)
    backends = {"simulated": lambda: SimulatedBackend(chunk_delay=1.0)}
    async with (
        rhetor.runtime.start(settings, backends=backends) as rt,
        rt.system.events() as events,
    ):
        outbox, frames = trio.open_memory_channel[dict[str, Any]](8)
        spec = actors.ChildSpec("session:t", partial(Session, rt, outbox), restart="temporary")
        ref = await rt.sessions.start_child(spec)
        await ref.tell(frame("LLM_REQUEST", "q", message="one two three four five"))
        with trio.fail_after(10):
            first = await frames.receive()  # typing starts
        assert first["payload"].get("isTyping") is True
        frames.close()  # the socket went away; the next chunk cannot be delivered
        await trio.sleep(3)
        assert ref.alive
        await rt.sessions.stop_child("session:t")
        kinds = []
        with trio.fail_after(1):
            async for event in events:
                if event.name == "session:t":
                    kinds.append(event.kind)
                    if event.kind == "stopped":
                        break
    assert kinds == ["started", "stopped"]


class FaultyRuntime:
    """The real runtime, except that STATUS and the message "explode" meet a bug."""

    def __init__(self, real: rhetor.runtime.Runtime) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def providers(self) -> dict[str, Any]:
        raise RuntimeError("a bug while reading the providers")

    def request(self, message: str | None = None, **options: Any) -> Any:
        if message == "explode":
            raise RuntimeError("a bug while building the request")
        return self._real.request(message, **options)


async def test_a_bug_in_one_frame_or_request_is_its_internal_error_and_the_rest_go_on(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """
    An unexpected exception while handling one frame, or inside one request's
    task, answers ERROR internal_error for that id alone (logged with its
    traceback); the socket's other requests complete and the session lives on.
    """
    settings = Settings(data_dir=tmp_path, hermes_url=None)
    backends = {"simulated": lambda: SimulatedBackend(chunk_delay=0.1)}
    async with (
        rhetor.runtime.start(settings, backends=backends) as rt,
        rt.system.events() as events,
    ):
        outbox, frames = trio.open_memory_channel[dict[str, Any]](64)
        faulty = FaultyRuntime(rt)
        spec = actors.ChildSpec("session:t", partial(Session, faulty, outbox), restart="temporary")
        ref = await rt.sessions.start_child(spec)
        await ref.tell(frame("LLM_REQUEST", "good", message="one two three"))
        await ref.tell(frame("STATUS", "status"))
        await ref.tell(frame("LLM_REQUEST", "bad", message="explode"))
        ends: dict[str, dict[str, Any]] = {}
        with trio.fail_after(30):
            while len(ends) < 3:
                sent = await frames.receive()
                if sent["type"] in ("RESPONSE", "ERROR"):
                    ends[sent["id"]] = sent
        assert ends["good"]["type"] == "RESPONSE"
        for bad in ("status", "bad"):
            assert ends[bad]["type"] == "ERROR"
            assert ends[bad]["payload"] == {
                "type": "internal_error",
                "message": "internal error; see the server log",
            }
        assert ref.alive
        await ref.tell(frame("REGISTER", "after"))
        with trio.fail_after(5):
            assert (await frames.receive())["id"] == "after"
        await rt.sessions.stop_child("session:t")
        kinds = []
        with trio.fail_after(1):
            async for event in events:
                if event.name == "session:t":
                    kinds.append(event.kind)
                    if event.kind == "stopped":
                        break
    assert kinds == ["started", "stopped"]
    logged = [r for r in caplog.records if r.name == "rhetor.session"]
    assert len(logged) == 2 and all(r.exc_info for r in logged)
    assert "a bug while" in caplog.text


def test_a_session_keeps_its_state_private_and_each_instance_starts_afresh() -> None:
    """
    Session is an attrs actor built from a runtime and an outbox (and, at the
    edge, its observer and socket id): its state is private, compared by
    identity, and a new instance holds no requests, no cancellations and no
    registered name.
    """
    fields = attrs.fields(Session)
    assert all(f.name.startswith("_") for f in fields)
    assert [f.alias for f in fields if f.init] == ["runtime", "outbox", "observer", "socket"]
    runtime: Any = object()  # never called: nothing here sends a frame
    outbox, frames = trio.open_memory_channel[dict[str, Any]](8)
    with outbox, frames:
        one, other = Session(runtime, outbox), Session(runtime, outbox)
        assert one != other
        assert attrs.asdict(one, recurse=False) == {
            "_runtime": runtime,
            "_outbox": outbox,
            "_observer": None,
            "_socket": None,
            "_source": None,
            "_in_flight": {},
            "_cancelled": set(),
        }
