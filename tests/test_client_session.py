"""
The client's WebSocket Session, against a real server, under asyncio and trio.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import anyio
import pytest
import trio

from rhetor.client import (
    Chunk,
    Completed,
    NotFound,
    RequestCancelled,
    RhetorClient,
    SessionEvent,
    TypingStarted,
    TypingStopped,
    ValidationError,
)
from tests.helpers import ServerInfo, settings_for
from tests.server_thread import ServerThread

T = TypeVar("T")
Run = Callable[[Callable[[], Awaitable[T]]], T]

# A prompt whose simulated reply is ~60 chunks: at 20 ms a chunk, over a second.
LONG_PROMPT = " ".join(f"word{i}" for i in range(60))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerInfo]:
    """A server whose simulated provider sends a chunk every 20 ms."""
    settings = settings_for(tmp_path_factory.mktemp("session"), simulated_chunk_delay=0.02)
    with ServerThread(settings) as info:
        yield info


@pytest.fixture(params=["asyncio", "trio"])
def run(request: pytest.FixtureRequest) -> Run[Any]:
    """Run an async function to completion under asyncio, then under trio."""
    if request.param == "asyncio":
        return lambda fn: asyncio.run(fn())  # type: ignore[arg-type]
    return lambda fn: trio.run(fn)


def _client(server: ServerInfo) -> RhetorClient:
    return RhetorClient("127.0.0.1", server.port)


async def _in_flight(session: Any, expected: int) -> int:
    """Poll STATUS until ``expected`` LLM requests are in flight (or 2 s pass); answer the count."""
    count = -1
    with anyio.move_on_after(2.0):
        while (count := (await session.status())["in_flight"]) != expected:
            await anyio.sleep(0.02)
    return count


def test_a_session_registers_and_reports_status(
    server: ServerInfo, run: Run[dict[str, Any]]
) -> None:
    """Opening a session registers it; status() answers providers and budget."""

    async def main() -> dict[str, Any]:
        async with _client(server) as client, client.session(source="tests") as session:
            assert session.source == "tests"
            return await session.status()

    status = run(main)
    assert status["providers"]["providers"]["simulated"]["available"] is True
    assert set(status["budget"]["periods"]) == {"daily", "weekly", "monthly"}


def test_send_message_yields_typing_then_chunks_then_typing_stopped_then_completed(
    server: ServerInfo, run: Run[list[SessionEvent]]
) -> None:
    """A streamed request's events come in protocol order and carry its id and context."""

    async def main() -> list[SessionEvent]:
        async with _client(server) as client, client.session() as session:
            request = session.send_message("Hello there", context="ws-order", task_type="chat")
            events = [event async for event in request]
            assert all(e.request_id == request.id for e in events)
            return events

    events = run(main)
    assert isinstance(events[0], TypingStarted)
    assert events[0].context == "ws-order"
    chunks = [e for e in events if isinstance(e, Chunk)]
    assert events[1 : 1 + len(chunks)] == chunks
    assert isinstance(events[-2], TypingStopped)
    assert isinstance(events[-1], Completed)
    text = "".join(c.text for c in chunks)
    assert text == events[-1].reply.text
    assert text.startswith("[simulated] You said: Hello there")


@pytest.mark.slow
def test_a_session_keeps_context_between_messages(server: ServerInfo, run: Run[str]) -> None:
    """Two messages in one context: the second reply sees the first exchange."""

    async def main() -> str:
        context = f"ws:{uuid.uuid4().hex}"
        async with _client(server) as client, client.session() as session:
            await session.send_message("one", context=context).reply()
            return (await session.send_message("two", context=context).reply()).text

    assert "I can see 2 earlier messages" in run(main)


def test_a_non_streaming_request_still_ends_with_the_whole_reply(
    server: ServerInfo, run: Run[list[SessionEvent]]
) -> None:
    """With streaming off there are no chunks, only typing and the completed reply."""

    async def main() -> list[SessionEvent]:
        async with _client(server) as client, client.session() as session:
            return [e async for e in session.send_message("quiet", streaming=False)]

    events = run(main)
    assert [type(e) for e in events] == [TypingStarted, TypingStopped, Completed]


def test_send_chat_streams_a_conversation_reply(server: ServerInfo, run: Run[str]) -> None:
    """A CHAT_REQUEST of several turns answers like chat() over HTTP."""

    async def main() -> str:
        async with _client(server) as client, client.session() as session:
            reply = await session.send_chat(
                [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
            ).reply()
            return reply.text

    assert run(main) == "[simulated] You said: Hi (System prompt: Be brief.)"


@pytest.mark.slow
def test_two_requests_at_once_on_one_session_each_get_their_own_events(
    server: ServerInfo, run: Run[dict[str, str]]
) -> None:
    """Concurrent requests on one socket are demultiplexed by id, chunks never crossing."""

    async def main() -> dict[str, str]:
        texts: dict[str, str] = {}
        async with _client(server) as client, client.session() as session:

            async def follow(word: str) -> None:
                parts = []
                async for event in session.send_message(" ".join([word] * 15)):
                    if isinstance(event, Chunk):
                        parts.append(event.text)
                texts[word] = "".join(parts)

            async with anyio.create_task_group() as tg:
                tg.start_soon(follow, "alpha")
                tg.start_soon(follow, "beta")
        return texts

    texts = run(main)
    assert texts["alpha"] == "[simulated] You said: " + " ".join(["alpha"] * 15)
    assert texts["beta"] == "[simulated] You said: " + " ".join(["beta"] * 15)


def test_cancel_stops_the_request_on_the_server_and_raises_request_cancelled(
    server: ServerInfo, run: Run[int]
) -> None:
    """Session.cancel() ends the local iteration with RequestCancelled and the server's work."""

    async def main() -> int:
        async with _client(server) as client, client.session() as session:
            request = session.send_message(LONG_PROMPT)

            async def follow() -> None:
                async for event in request:
                    if isinstance(event, Chunk):
                        await session.cancel(request.id)

            with pytest.raises(RequestCancelled):
                await follow()
            return await _in_flight(session, 0)

    assert run(main) == 0


def test_leaving_a_request_early_cancels_it_on_the_server(
    server: ServerInfo, run: Run[int]
) -> None:
    """Breaking out of a request inside ``async with`` sends CANCEL; nothing stays in flight."""

    async def main() -> int:
        async with _client(server) as client, client.session() as session:
            async with session.send_message(LONG_PROMPT) as request:
                async for event in request:
                    if isinstance(event, Chunk):
                        break
            return await _in_flight(session, 0)

    assert run(main) == 0


def test_a_failed_request_raises_its_typed_error_and_the_session_carries_on(
    server: ServerInfo, run: Run[str]
) -> None:
    """An ERROR frame raises the matching client error; the next request still works."""

    async def main() -> str:
        async with _client(server) as client, client.session() as session:
            with pytest.raises((NotFound, ValidationError)):
                await session.send_message("hi", model="no-such-model").reply()
            with pytest.raises(ValidationError) as caught:
                await session.send_message("hi", task_type="chat", max_tokens=0).reply()
            assert caught.value.field == "max_tokens"
            return (await session.send_message("still here").reply()).text

    assert run(main) == "[simulated] You said: still here"


def test_an_exception_in_the_session_block_comes_out_as_itself(
    server: ServerInfo, run: Run[None]
) -> None:
    """A user exception leaving ``async with client.session()`` is not wrapped in a group."""

    class Boom(Exception):
        pass

    async def main() -> None:
        async with _client(server) as client:
            with pytest.raises(Boom):
                async with client.session():
                    raise Boom

    run(main)


def test_a_server_that_goes_silent_raises_timeout_instead_of_hanging(
    tmp_path_factory: pytest.TempPathFactory, run: Run[Any]
) -> None:
    """Waiting longer than the client's timeout for the next frame raises Timeout."""
    from rhetor.client import Timeout

    settings = settings_for(tmp_path_factory.mktemp("silent"), simulated_chunk_delay=5.0)
    with ServerThread(settings) as info:

        async def go() -> list[type[SessionEvent]]:
            seen: list[type[SessionEvent]] = []

            async def follow(session: Any) -> None:
                async for event in session.send_message("hello there"):
                    seen.append(type(event))

            async with (
                RhetorClient("127.0.0.1", info.port, timeout=0.5) as client,
                client.session(source="silent") as session,
            ):
                with pytest.raises(Timeout):
                    await follow(session)
            return seen

        assert run(go) == [TypingStarted]
