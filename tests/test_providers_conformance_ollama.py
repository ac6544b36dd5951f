"""
The official ``ollama`` client is the reference for the ``/api/chat`` wire format that
OllamaBackend speaks: the same requests through both to one fake upstream arrive
alike (method, path, headers that matter, JSON body), and both read the same replies,
whole and streamed, alike. See :mod:`tests.fakes.reference`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import ollama
import pytest

from rhetor._types import ProviderRequest, StreamEnd, TextDelta, ToolCallDelta
from rhetor.providers._ollama import OllamaBackend
from tests.fakes import ReceivedRequest, Reply
from tests.fakes.ollama import FakeOllama, fake_ollama
from tests.fakes.reference import (
    HISTORY,
    PIXEL,
    READ_REPLIES,
    SCHEMA,
    SDK_STREAM_WARNINGS,
    STRUCTURED,
    TOOL_HISTORY,
    TOOL_REPLIES,
    WEATHER,
    arrived,
    collect,
)

pytestmark = SDK_STREAM_WARNINGS

OLLAMA_HEADERS = ("content-type", "accept", "authorization")


@pytest.fixture
async def ollama_fake() -> AsyncIterator[FakeOllama]:
    async with fake_ollama() as fake:
        yield fake


@pytest.fixture
async def ollama_pair(
    ollama_fake: FakeOllama,
) -> AsyncIterator[tuple[ollama.AsyncClient, OllamaBackend]]:
    client = ollama.AsyncClient(host=ollama_fake.base_url)
    backend = OllamaBackend(ollama_fake.base_url)
    yield client, backend
    await client.close()
    await backend.aclose()


def ollama_arrived(request: ReceivedRequest) -> dict[str, Any]:
    """
    What Ollama reads of a request; the ollama client's ``"tools": []`` (no tools, which
    is what a body without ``tools`` means too) is left out.
    """
    seen = arrived(request, OLLAMA_HEADERS)
    if isinstance(seen["body"], dict) and seen["body"].get("tools") == []:
        del seen["body"]["tools"]
    return seen


OLLAMA_CASES = [
    pytest.param(
        ProviderRequest("llama3.2:latest", HISTORY[:1]),
        {"messages": [{"role": "user", "content": "Name a colour."}]},
        id="one-turn",
    ),
    pytest.param(
        ProviderRequest(
            "llama3.2:latest", HISTORY, system="Be brief.", temperature=0.5, max_tokens=9
        ),
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Name a colour."},
                {"role": "assistant", "content": "Blue."},
                {"role": "user", "content": HISTORY[2].content},
            ],
            "options": {"temperature": 0.5, "num_predict": 9},
        },
        id="history-system-options",
    ),
    pytest.param(
        ProviderRequest(
            "llama3.2:latest",
            TOOL_HISTORY,
            system="Be brief.",
            tools=(WEATHER,),
            response_format=STRUCTURED,
            stop=("END",),
            top_p=0.5,
            seed=7,
        ),
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Is it sunny where this is?", "images": [PIXEL]},
                {
                    "role": "assistant",
                    "content": "Checking.",
                    "tool_calls": [
                        {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
                    ],
                },
                {"role": "tool", "content": "Sunny, 21 C", "tool_name": "get_weather"},
                {"role": "user", "content": "Summarise it."},
            ],
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "description": "The weather now in a city.",
                        "parameters": WEATHER.parameters,
                    },
                }
            ],
            "format": SCHEMA,
            "options": {"top_p": 0.5, "seed": 7, "stop": ["END"]},
        },
        id="tools-image-results-format-options",
    ),
]


@pytest.mark.parametrize(("request_", "client_args"), OLLAMA_CASES)
@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_ollama_requests_arrive_as_the_client_sends_them(
    ollama_fake: FakeOllama,
    ollama_pair: tuple[ollama.AsyncClient, OllamaBackend],
    request_: ProviderRequest,
    client_args: dict[str, Any],
    streamed: bool,
) -> None:
    """A chat from the backend arrives as the ollama client's: method, path, headers, JSON body."""
    client, backend = ollama_pair
    if streamed:
        async for _ in await client.chat(model=request_.model, stream=True, **client_args):
            pass
        async with aclosing(backend.stream(request_)) as items:
            async for _ in items:
                pass
    else:
        await client.chat(model=request_.model, stream=False, **client_args)
        await backend.complete(request_)
    reference, ours = ollama_fake.completions
    assert ollama_arrived(ours) == ollama_arrived(reference)


@pytest.mark.parametrize("reply", READ_REPLIES)
async def test_ollama_replies_read_as_the_client_reads_them(
    ollama_fake: FakeOllama,
    ollama_pair: tuple[ollama.AsyncClient, OllamaBackend],
    reply: Reply,
) -> None:
    """The same whole and streamed replies read alike: text, pieces, counts, done reason, model."""
    client, backend = ollama_pair
    ollama_fake.script(reply, reply, reply, reply)
    request = ProviderRequest("llama3.2:latest", HISTORY[:1])
    messages = [{"role": "user", "content": "Name a colour."}]

    response = await client.chat(model="llama3.2:latest", messages=messages, stream=False)
    ours = await backend.complete(request)
    assert (ours.text, ours.usage.input_tokens, ours.usage.output_tokens) == (
        response.message.content,
        response.prompt_eval_count,
        response.eval_count,
    )
    assert (ours.finish_reason, ours.model) == (response.done_reason, response.model)

    pieces: list[str] = []
    last = None
    async for part in await client.chat(model="llama3.2:latest", messages=messages, stream=True):
        if part.message.content:
            pieces.append(part.message.content)
        last = part
    items = await collect(backend.stream(request))
    assert [item.text for item in items if isinstance(item, TextDelta)] == pieces
    end = items[-1]
    assert isinstance(end, StreamEnd) and last is not None and last.done
    assert (end.usage.input_tokens, end.usage.output_tokens, end.finish_reason) == (
        last.prompt_eval_count,
        last.eval_count,
        last.done_reason,
    )


@pytest.mark.parametrize("reply", TOOL_REPLIES)
async def test_ollama_tool_calls_read_as_the_client_reads_them(
    ollama_fake: FakeOllama,
    ollama_pair: tuple[ollama.AsyncClient, OllamaBackend],
    reply: Reply,
) -> None:
    """message.tool_calls read alike, whole and streamed: names, arguments (JSON text of the object), ids."""
    client, backend = ollama_pair
    ollama_fake.script(reply, reply, reply, reply)
    request = ProviderRequest("llama3.2:latest", HISTORY[:1], tools=(WEATHER,))
    messages = [{"role": "user", "content": "Name a colour."}]

    def read(calls: Any) -> list[tuple[str, dict[str, Any]]]:
        return [(c.function.name, dict(c.function.arguments)) for c in calls or []]

    response = await client.chat(model="llama3.2:latest", messages=messages, stream=False)
    ours = await backend.complete(request)
    assert [(c.name, c.input()) for c in ours.tool_calls] == read(response.message.tool_calls)
    assert [c.id for c in ours.tool_calls] == [c.id for c in reply.tool_calls]
    assert ours.finish_reason == "tool_calls" and response.done_reason == "stop"

    streamed: list[tuple[str, dict[str, Any]]] = []
    async for part in await client.chat(model="llama3.2:latest", messages=messages, stream=True):
        streamed += read(part.message.tool_calls)
    items = await collect(backend.stream(request))
    deltas = [i for i in items if isinstance(i, ToolCallDelta)]
    assert [(d.name, json.loads(d.arguments)) for d in deltas] == streamed
    assert [d.index for d in deltas] == list(range(len(streamed)))


async def test_ollama_tags_are_asked_as_the_client_asks(
    ollama_fake: FakeOllama, ollama_pair: tuple[ollama.AsyncClient, OllamaBackend]
) -> None:
    """check() asks /api/tags as the ollama client's list() does, and finds the same models."""
    client, backend = ollama_pair
    listed = await client.list()
    status = await backend.check()
    reference, ours = ollama_fake.requests
    assert (ours.method, ours.path) == (reference.method, reference.path)
    assert status.models == tuple(model.model for model in listed.models)
