"""
Golden fixtures pin the stream readers: recorded-shape streams of each provider's tool
calls (``tests/golden``, see its README) read into the same deltas, calls, finish reason
and usage however the bytes are cut, over HTTP through each backend, and as each
official SDK reads them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import anthropic
import ollama
import openai
import pytest

from rhetor._content import ToolCallAssembly, ToolCallDelta
from rhetor._types import ChatMessage, ProviderRequest, StreamEnd, TextDelta
from rhetor.providers._anthropic import AnthropicBackend
from rhetor.providers._anthropic_wire import EventReading
from rhetor.providers._calls import StreamReading
from rhetor.providers._ollama import OllamaBackend
from rhetor.providers._ollama_wire import LineReading
from rhetor.providers._openai import OpenAIBackend
from rhetor.providers._openai_wire import ChunkReading
from tests.fakes import Recorded
from tests.fakes.anthropic import fake_anthropic
from tests.fakes.ollama import fake_ollama
from tests.fakes.openai import fake_openai
from tests.fakes.reference import KEY, SDK_STREAM_WARNINGS, collect

GOLDEN = Path(__file__).parent / "golden"
FIXTURES = sorted(p.name for p in GOLDEN.iterdir() if p.suffix in (".sse", ".ndjson"))
PROMPT = (ChatMessage("user", "Weather?"),)

Item = TextDelta | ToolCallDelta | StreamEnd


def golden(name: str) -> tuple[bytes, dict[str, Any]]:
    """A fixture's bytes and what reading it must give."""
    expected = json.loads((GOLDEN / name).with_suffix(".expected.json").read_text())
    return (GOLDEN / name).read_bytes(), expected


def reading(name: str) -> StreamReading:
    """A fresh reader for the fixture's provider."""
    if name.startswith("openai"):
        return ChunkReading("requested")
    if name.startswith("anthropic"):
        return EventReading("requested")
    return LineReading("requested", call_prefix="golden")


def cuts(data: bytes) -> Iterator[tuple[str, list[bytes]]]:
    """The bytes whole, a byte at a time, in 7-byte pieces, and at each line end."""
    yield "whole", [data]
    yield "bytes", [data[i : i + 1] for i in range(len(data))]
    yield "sevens", [data[i : i + 7] for i in range(0, len(data), 7)]
    yield "lines", data.splitlines(keepends=True)


def read(reader: StreamReading, pieces: Sequence[bytes]) -> list[Item]:
    """What a reader makes of a stream cut into ``pieces``, ending with its StreamEnd."""
    items: list[Item] = []
    for piece in [*pieces, None]:
        events = reader.feed(piece) if piece is not None else reader.flush()
        for event in events:
            if not reader.finished:
                items.extend(reader.take(event))
    items.append(reader.end())
    return items


def summary(items: Sequence[Item]) -> dict[str, Any]:
    """Items as the expected files write them."""
    deltas = [i for i in items if isinstance(i, ToolCallDelta)]
    assembly = ToolCallAssembly()
    for delta in deltas:
        assembly.add(delta)
    end = items[-1]
    assert isinstance(end, StreamEnd)
    return {
        "text": "".join(i.text for i in items if isinstance(i, TextDelta)),
        "deltas": [
            {"index": d.index, "id": d.id, "name": d.name, "arguments": d.arguments} for d in deltas
        ],
        "tool_calls": [
            {"id": c.id, "name": c.name, "arguments": json.loads(c.arguments)}
            for c in assembly.calls()
        ],
        "finish_reason": end.finish_reason,
        "usage": {
            "input_tokens": end.usage.input_tokens,
            "output_tokens": end.usage.output_tokens,
            "cached_input_tokens": end.usage.cached_input_tokens,
            "reasoning_tokens": end.usage.reasoning_tokens,
        },
        "model": end.model,
    }


@pytest.mark.parametrize("name", FIXTURES)
def test_each_golden_stream_reads_the_same_however_it_is_cut(name: str) -> None:
    """A recorded stream gives its expected deltas, calls, finish reason, usage and model, whatever the chunking."""
    data, expected = golden(name)
    for how, pieces in cuts(data):
        assert summary(read(reading(name), pieces)) == expected, how


@pytest.mark.parametrize("name", FIXTURES)
async def test_each_golden_stream_reads_the_same_over_http(name: str) -> None:
    """The backend reading the recorded stream from a fake, in 5-byte pieces, gives the expected summary."""
    data, expected = golden(name)
    recorded = Recorded(
        data, "application/x-ndjson" if name.endswith(".ndjson") else "text/event-stream", 5
    )
    request = ProviderRequest("requested", PROMPT, request_id="golden")
    if name.startswith("openai"):
        async with fake_openai() as fake:
            fake.script(recorded)
            backend: Any = OpenAIBackend(KEY, fake.base_url)
            items = await collect(backend.stream(request))
    elif name.startswith("anthropic"):
        async with fake_anthropic() as fake:
            fake.script(recorded)
            backend = AnthropicBackend(KEY, fake.base_url)
            items = await collect(backend.stream(request))
    else:
        async with fake_ollama() as fake:
            fake.script(recorded)
            backend = OllamaBackend(fake.base_url)
            items = await collect(backend.stream(request))
    await backend.aclose()
    assert summary(items) == expected


# -- the official SDKs reading the same bytes -------------------------------------------


def calls_of(expected: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(c["name"], c["arguments"]) for c in expected["tool_calls"]]


@SDK_STREAM_WARNINGS
@pytest.mark.parametrize("name", [n for n in FIXTURES if n.startswith("openai")])
async def test_the_openai_sdk_reads_the_golden_streams_alike(name: str) -> None:
    """The openai SDK's chunks, accumulated by index, give the calls and text Rhetor reads."""
    data, expected = golden(name)
    async with fake_openai() as fake:
        fake.script(Recorded(data))
        async with openai.AsyncOpenAI(api_key=KEY, base_url=fake.base_url, max_retries=0) as sdk:
            stream = await sdk.chat.completions.create(
                model="requested", messages=[{"role": "user", "content": "Weather?"}], stream=True
            )
            text, calls, reason = [], {}, None
            async for chunk in stream:
                for choice in chunk.choices:
                    text.append(choice.delta.content or "")
                    reason = choice.finish_reason or reason
                    for call in choice.delta.tool_calls or []:
                        entry = calls.setdefault(call.index, {"id": None, "name": "", "args": ""})
                        entry["id"] = call.id or entry["id"]
                        if call.function is not None:
                            entry["name"] += call.function.name or ""
                            entry["args"] += call.function.arguments or ""
    assert "".join(text) == expected["text"]
    assert reason == expected["finish_reason"]
    assert [(c["name"], json.loads(c["args"])) for _, c in sorted(calls.items())] == calls_of(
        expected
    )
    assert [c["id"] for _, c in sorted(calls.items())] == [c["id"] for c in expected["tool_calls"]]


@SDK_STREAM_WARNINGS
@pytest.mark.parametrize("name", [n for n in FIXTURES if n.startswith("anthropic")])
async def test_the_anthropic_sdk_reads_the_golden_streams_alike(name: str) -> None:
    """The anthropic SDK's accumulated message has the tool_use blocks, text and usage Rhetor reads."""
    data, expected = golden(name)
    async with fake_anthropic() as fake:
        fake.script(Recorded(data))
        async with (
            anthropic.AsyncAnthropic(api_key=KEY, base_url=fake.base_url, max_retries=0) as sdk,
            sdk.messages.stream(
                model="requested", max_tokens=100, messages=[{"role": "user", "content": "x"}]
            ) as stream,
        ):
            message = await stream.get_final_message()
    text = "".join(b.text for b in message.content if b.type == "text")
    uses = [b for b in message.content if b.type == "tool_use"]
    assert text == expected["text"]
    assert [(b.name, b.input) for b in uses] == calls_of(expected)
    assert [b.id for b in uses] == [c["id"] for c in expected["tool_calls"]]
    assert message.stop_reason == "tool_use" and expected["finish_reason"] == "tool_calls"
    usage = message.usage
    assert usage.output_tokens == expected["usage"]["output_tokens"]
    assert (usage.cache_read_input_tokens or 0) == expected["usage"]["cached_input_tokens"]


@SDK_STREAM_WARNINGS
@pytest.mark.parametrize("name", [n for n in FIXTURES if n.startswith("ollama")])
async def test_the_ollama_client_reads_the_golden_streams_alike(name: str) -> None:
    """The ollama client's streamed messages carry the same calls (arguments as objects) and text."""
    data, expected = golden(name)
    async with fake_ollama() as fake:
        fake.script(Recorded(data, "application/x-ndjson"))
        client = ollama.AsyncClient(host=fake.base_url)
        text, calls, last = [], [], None
        try:
            async for part in await client.chat(
                model="requested", messages=[{"role": "user", "content": "x"}], stream=True
            ):
                text.append(part.message.content or "")
                calls += [
                    (c.function.name, dict(c.function.arguments))
                    for c in part.message.tool_calls or []
                ]
                last = part
        finally:
            await client.close()
    assert "".join(text) == expected["text"]
    assert calls == calls_of(expected)
    assert last is not None and last.eval_count == expected["usage"]["output_tokens"]
