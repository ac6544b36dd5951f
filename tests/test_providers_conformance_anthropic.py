"""
The official ``anthropic`` SDK is the reference for the Messages wire format that
AnthropicBackend speaks: the same requests through both to one fake upstream arrive
alike (method, path, headers that matter, JSON body), and both read the same replies,
whole and streamed, and the same error statuses, alike. See :mod:`tests.fakes.reference`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import anthropic
import pytest

from rhetor._content import Passthrough, Text, Thinking, ThinkingAssembly, ToolCall, ToolChoice
from rhetor._errors import (
    AuthenticationFailed,
    BadRequest,
    ContextTooLong,
    Overloaded,
    ProviderError,
    RateLimited,
    UpstreamServerError,
)
from rhetor._types import (
    ChatMessage,
    CitationDelta,
    ProviderRequest,
    StreamEnd,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
)
from rhetor.providers._anthropic import AnthropicBackend
from tests.fakes import Fail, Reply
from tests.fakes.anthropic import FakeAnthropic, fake_anthropic, signature
from tests.fakes.reference import (
    HISTORY,
    KEY,
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

# Headers whose meaning the upstream reads (the SDK's telemetry is its own).
ANTHROPIC_HEADERS = ("authorization", "x-api-key", "anthropic-version", "content-type", "accept")


@pytest.fixture
async def anthropic_fake() -> AsyncIterator[FakeAnthropic]:
    async with fake_anthropic() as fake:
        yield fake


@pytest.fixture
async def anthropic_pair(
    anthropic_fake: FakeAnthropic,
) -> AsyncIterator[tuple[anthropic.AsyncAnthropic, AnthropicBackend]]:
    sdk = anthropic.AsyncAnthropic(api_key=KEY, base_url=anthropic_fake.base_url, max_retries=0)
    backend = AnthropicBackend(KEY, anthropic_fake.base_url)
    yield sdk, backend
    await sdk.close()
    await backend.aclose()


THINKING = {"type": "enabled", "budget_tokens": 2048}

ANTHROPIC_CASES = [
    pytest.param(
        ProviderRequest("claude-haiku-5-5", HISTORY[:1]),
        {"max_tokens": 1024, "messages": [{"role": "user", "content": "Name a colour."}]},
        id="one-turn",
    ),
    pytest.param(
        ProviderRequest("claude-sonnet-5-5", HISTORY, system="Be brief.", max_tokens=40),
        {
            "max_tokens": 40,
            "system": "Be brief.",
            "messages": [
                {"role": "user", "content": "Name a colour."},
                {"role": "assistant", "content": "Blue."},
                {"role": "user", "content": HISTORY[2].content},
            ],
        },
        id="history-system-limit",
    ),
    pytest.param(
        ProviderRequest(
            "claude-sonnet-5-5",
            TOOL_HISTORY,
            system="Be brief.",
            tools=(WEATHER,),
            tool_choice=ToolChoice("required", parallel=False),
            response_format=STRUCTURED,
            stop=("END",),
            user="user-1",
        ),
        {
            "max_tokens": 1024,
            "system": "Be brief.",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Is it sunny where this is?"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": PIXEL},
                        },
                    ],
                },
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "Checking."},
                        {
                            "type": "tool_use",
                            "id": "call_1",
                            "name": "get_weather",
                            "input": {"city": "Paris"},
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "call_1", "content": "Sunny, 21 C"},
                        {"type": "text", "text": "Summarise it."},
                    ],
                },
            ],
            "tools": [
                {
                    "name": "get_weather",
                    "description": "The weather now in a city.",
                    "input_schema": WEATHER.parameters,
                }
            ],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
            "output_config": {"format": {"type": "json_schema", "schema": SCHEMA}},
            "stop_sequences": ["END"],
            "metadata": {"user_id": "user-1"},
        },
        id="tools-image-results-format-stop",
    ),
    pytest.param(
        ProviderRequest(
            "claude-sonnet-5-5",
            (
                ChatMessage("user", "Weather?"),
                ChatMessage(
                    "assistant",
                    blocks=(
                        Thinking("Call the tool.", signature("Call the tool.")),
                        Thinking(redacted="EncryptedBlob=="),
                        ToolCall("call_1", "get_weather", '{"city":"Paris"}'),
                    ),
                ),
                ChatMessage("user", blocks=(Text("Sunny."),)),
            ),
            max_tokens=4096,
            tools=(WEATHER,),
            passthrough=Passthrough("anthropic", {"thinking": THINKING}),
        ),
        {
            "max_tokens": 4096,
            "thinking": THINKING,
            "messages": [
                {"role": "user", "content": "Weather?"},
                {
                    "role": "assistant",
                    "content": [
                        {
                            "type": "thinking",
                            "thinking": "Call the tool.",
                            "signature": signature("Call the tool."),
                        },
                        {"type": "redacted_thinking", "data": "EncryptedBlob=="},
                        {
                            "type": "tool_use",
                            "id": "call_1",
                            "name": "get_weather",
                            "input": {"city": "Paris"},
                        },
                    ],
                },
                {"role": "user", "content": "Sunny."},
            ],
            "tools": [
                {
                    "name": "get_weather",
                    "description": "The weather now in a city.",
                    "input_schema": WEATHER.parameters,
                }
            ],
        },
        id="thinking-history",
    ),
]


@pytest.mark.parametrize(("request_", "sdk_args"), ANTHROPIC_CASES)
@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_anthropic_requests_arrive_as_the_sdk_sends_them(
    anthropic_fake: FakeAnthropic,
    anthropic_pair: tuple[anthropic.AsyncAnthropic, AnthropicBackend],
    request_: ProviderRequest,
    sdk_args: dict[str, Any],
    streamed: bool,
) -> None:
    """A message from the backend arrives as the anthropic SDK's: method, path, headers, JSON body."""
    sdk, backend = anthropic_pair
    if streamed:
        stream = await sdk.messages.create(model=request_.model, stream=True, **sdk_args)
        async for _ in stream:
            pass
        async with aclosing(backend.stream(request_)) as items:
            async for _ in items:
                pass
    else:
        await sdk.messages.create(model=request_.model, **sdk_args)
        await backend.complete(request_)
    reference, ours = anthropic_fake.completions
    assert arrived(ours, ANTHROPIC_HEADERS) == arrived(reference, ANTHROPIC_HEADERS)


async def test_anthropic_models_listing_is_asked_as_the_sdk_asks(
    anthropic_fake: FakeAnthropic,
    anthropic_pair: tuple[anthropic.AsyncAnthropic, AnthropicBackend],
) -> None:
    """check() asks for the models listing as the anthropic SDK's models.list(limit=100) does."""
    sdk, backend = anthropic_pair
    listed = [model.id async for model in sdk.models.list(limit=100)]
    status = await backend.check()
    reference, ours = anthropic_fake.requests
    assert arrived(ours, ANTHROPIC_HEADERS) == arrived(reference, ANTHROPIC_HEADERS)
    assert set(listed) <= set(status.models)


# Anthropic's stop reasons in Rhetor's words, as docs/providers.md states them.
STOP_REASONS = {"end_turn": "stop", "max_tokens": "length", "tool_use": "tool_calls"}


@pytest.mark.parametrize("reply", READ_REPLIES)
async def test_anthropic_replies_read_as_the_sdk_reads_them(
    anthropic_fake: FakeAnthropic,
    anthropic_pair: tuple[anthropic.AsyncAnthropic, AnthropicBackend],
    reply: Reply,
) -> None:
    """The same whole and streamed replies read alike: text, pieces, usage, stop reason, model."""
    sdk, backend = anthropic_pair
    anthropic_fake.script(reply, reply, reply, reply)
    request = ProviderRequest("claude-haiku-5-5", HISTORY[:1])
    args: dict[str, Any] = {
        "model": "claude-haiku-5-5",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Name a colour."}],
    }

    message = await sdk.messages.create(**args)
    ours = await backend.complete(request)
    text = "".join(block.text for block in message.content if block.type == "text")
    assert (ours.text, ours.usage.input_tokens, ours.usage.output_tokens) == (
        text,
        message.usage.input_tokens,
        message.usage.output_tokens,
    )
    assert message.stop_reason is not None
    assert (ours.finish_reason, ours.model) == (STOP_REASONS[message.stop_reason], message.model)

    pieces: list[str] = []
    input_tokens = output_tokens = 0
    stop_reason = None
    async for event in await sdk.messages.create(stream=True, **args):
        if event.type == "message_start":
            input_tokens = event.message.usage.input_tokens
        elif event.type == "content_block_delta" and event.delta.type == "text_delta":
            pieces.append(event.delta.text)
        elif event.type == "message_delta":
            output_tokens = event.usage.output_tokens
            stop_reason = event.delta.stop_reason
    items = await collect(backend.stream(request))
    assert [item.text for item in items if isinstance(item, TextDelta)] == pieces
    end = items[-1]
    assert isinstance(end, StreamEnd) and stop_reason is not None
    assert (end.usage.input_tokens, end.usage.output_tokens, end.finish_reason) == (
        input_tokens,
        output_tokens,
        STOP_REASONS[stop_reason],
    )


@pytest.mark.parametrize("reply", TOOL_REPLIES)
async def test_anthropic_tool_calls_read_as_the_sdk_reads_them(
    anthropic_fake: FakeAnthropic,
    anthropic_pair: tuple[anthropic.AsyncAnthropic, AnthropicBackend],
    reply: Reply,
) -> None:
    """tool_use blocks read alike: whole, and streamed as the SDK's accumulated message has them."""
    sdk, backend = anthropic_pair
    anthropic_fake.script(reply, reply, reply, reply)
    request = ProviderRequest("claude-haiku-5-5", HISTORY[:1], tools=(WEATHER,))
    args: dict[str, Any] = {
        "model": "claude-haiku-5-5",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Name a colour."}],
        "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
    }
    message = await sdk.messages.create(**args)
    ours = await backend.complete(request)
    uses = [(b.id, b.name, b.input) for b in message.content if b.type == "tool_use"]
    assert [(c.id, c.name, c.input()) for c in ours.tool_calls] == uses
    assert message.stop_reason is not None
    assert ours.finish_reason == STOP_REASONS[message.stop_reason]

    async with sdk.messages.stream(**args) as stream:
        final = await stream.get_final_message()
    items = await collect(backend.stream(request))
    deltas = [i for i in items if isinstance(i, ToolCallDelta)]
    uses_streamed = [b for b in final.content if b.type == "tool_use"]
    # Calls are numbered among the tool_use blocks, not by content block index.
    starts = [(d.index, d.id, d.name) for d in deltas if d.id is not None]
    assert starts == [(n, b.id, b.name) for n, b in enumerate(uses_streamed)]
    by_call: dict[int, str] = {}
    for d in deltas:
        by_call[d.index] = by_call.get(d.index, "") + d.arguments
    assert [json.loads(by_call[n] or "{}") for n in sorted(by_call)] == [
        b.input for b in uses_streamed
    ]
    text = "".join(i.text for i in items if isinstance(i, TextDelta))
    assert text == "".join(b.text for b in final.content if b.type == "text")


async def test_anthropic_thinking_reads_as_the_sdk_reads_it(
    anthropic_fake: FakeAnthropic,
    anthropic_pair: tuple[anthropic.AsyncAnthropic, AnthropicBackend],
) -> None:
    """thinking and redacted_thinking blocks read alike: whole, and streamed as the SDK accumulates them."""
    sdk, backend = anthropic_pair
    reply = Reply("Blue.", thinking=("A colour, then.",), redacted_thinking=("EncryptedBlob==",))
    anthropic_fake.script(reply, reply, reply, reply)
    passthrough = Passthrough("anthropic", {"thinking": THINKING})
    request = ProviderRequest("claude-haiku-5-5", HISTORY[:1], passthrough=passthrough)
    args: dict[str, Any] = {
        "model": "claude-haiku-5-5",
        "max_tokens": 1024,
        "thinking": THINKING,
        "messages": [{"role": "user", "content": "Name a colour."}],
    }

    def blocks_of(message: Any) -> list[Thinking]:
        return [
            Thinking(b.thinking, b.signature) if b.type == "thinking" else Thinking(redacted=b.data)
            for b in message.content
            if b.type in ("thinking", "redacted_thinking")
        ]

    message = await sdk.messages.create(**args)
    ours = await backend.complete(request)
    assert list(ours.thinking) == blocks_of(message) and len(ours.thinking) == 2

    async with sdk.messages.stream(**args) as stream:
        final = await stream.get_final_message()
    assembly = ThinkingAssembly()
    for item in await collect(backend.stream(request)):
        if isinstance(item, ThinkingDelta):
            assembly.add(item)
    assert list(assembly.blocks()) == blocks_of(final)


async def test_anthropic_citations_read_as_the_sdk_reads_them(
    anthropic_fake: FakeAnthropic,
    anthropic_pair: tuple[anthropic.AsyncAnthropic, AnthropicBackend],
) -> None:
    """A cited text block reads alike: whole (text and citations), and streamed (the citations)."""
    sdk, backend = anthropic_pair
    citation = {
        "type": "char_location",
        "cited_text": "Blue.",
        "document_index": 0,
        "document_title": "Colours",
        "start_char_index": 0,
        "end_char_index": 5,
    }
    reply = Reply("Blue.", citations=(citation,))
    anthropic_fake.script(reply, reply, reply, reply)
    request = ProviderRequest("claude-haiku-5-5", HISTORY[:1])
    args: dict[str, Any] = {
        "model": "claude-haiku-5-5",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Name a colour."}],
    }
    message = await sdk.messages.create(**args)
    ours = await backend.complete(request)
    [block] = message.content
    assert block.type == "text"
    sdk_cites = [c.model_dump(exclude_none=True) for c in block.citations or []]
    assert [(b.text, list(b.citations)) for b in ours.cited] == [(block.text, sdk_cites)]

    async with sdk.messages.stream(**args) as stream:
        final = await stream.get_final_message()
    items = await collect(backend.stream(request))
    streamed = [dict(i.citation) for i in items if isinstance(i, CitationDelta)]
    [final_block] = final.content
    assert final_block.type == "text"
    assert streamed == [c.model_dump(exclude_none=True) for c in final_block.citations or []]


@pytest.mark.parametrize(
    ("failure", "sdk_error", "ours"),
    [
        (Fail.unauthorized(), anthropic.AuthenticationError, AuthenticationFailed),
        (Fail.forbidden(), anthropic.PermissionDeniedError, AuthenticationFailed),
        (Fail.rate_limited(), anthropic.RateLimitError, RateLimited),
        (Fail.bad_request(), anthropic.BadRequestError, BadRequest),
        (Fail.context_too_long(), anthropic.BadRequestError, ContextTooLong),
        (Fail.not_found(), anthropic.NotFoundError, BadRequest),
        (Fail.server_error(), anthropic.InternalServerError, UpstreamServerError),
        (Fail.overloaded(), anthropic.InternalServerError, Overloaded),
    ],
)
async def test_anthropic_error_statuses_read_as_the_sdk_reads_them(
    anthropic_fake: FakeAnthropic,
    anthropic_pair: tuple[anthropic.AsyncAnthropic, AnthropicBackend],
    failure: Fail,
    sdk_error: type[Exception],
    ours: type[ProviderError],
) -> None:
    """Each error status is the SDK's error class and Rhetor's matching type, with the same message."""
    sdk, backend = anthropic_pair
    anthropic_fake.script(failure, failure)
    with pytest.raises(sdk_error) as reference:
        await sdk.messages.create(
            model="claude-haiku-5-5", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(ours) as caught:
        await backend.complete(ProviderRequest("claude-haiku-5-5", HISTORY[:1]))
    body = getattr(reference.value, "body", None)
    assert isinstance(body, dict) and body["error"]["message"] in caught.value.message
