"""
The official ``openai`` SDK is the reference for the Chat Completions wire format that
OpenAIBackend speaks: the same requests through both to one fake upstream arrive
alike (method, path, headers that matter, JSON body), and both read the same replies,
whole and streamed, and the same error statuses, alike. See :mod:`tests.fakes.reference`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import openai
import pytest

from rhetor._content import ToolCallAssembly, ToolChoice
from rhetor._errors import (
    AuthenticationFailed,
    BadRequest,
    ContextTooLong,
    Overloaded,
    ProviderError,
    RateLimited,
    UpstreamServerError,
)
from rhetor._types import ProviderRequest, StreamEnd, TextDelta, ToolCallDelta
from rhetor.providers._openai import OpenAIBackend
from tests.fakes import Fail, Reply
from tests.fakes.openai import FakeOpenAI, fake_openai
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

# Headers whose meaning the upstream reads (the SDK's x-stainless-* telemetry and
# user-agent are its own; accept-encoding is left out on purpose: Rhetor reads
# uncompressed bodies, which every upstream sends unless asked otherwise).
OPENAI_HEADERS = ("authorization", "content-type", "accept", "openai-organization")


@pytest.fixture
async def openai_fake() -> AsyncIterator[FakeOpenAI]:
    async with fake_openai() as fake:
        yield fake


@pytest.fixture
async def openai_pair(
    openai_fake: FakeOpenAI,
) -> AsyncIterator[tuple[openai.AsyncOpenAI, OpenAIBackend]]:
    sdk = openai.AsyncOpenAI(
        api_key=KEY, base_url=openai_fake.base_url, organization="org-rhetor", max_retries=0
    )
    backend = OpenAIBackend(KEY, openai_fake.base_url, organization="org-rhetor")
    yield sdk, backend
    await sdk.close()
    await backend.aclose()


OPENAI_CASES = [
    pytest.param(
        ProviderRequest("gpt-4o-mini", HISTORY[:1]),
        {"messages": [{"role": "user", "content": "Name a colour."}]},
        id="one-turn",
    ),
    pytest.param(
        ProviderRequest("gpt-4o", HISTORY, system="Be brief.", temperature=0.25, max_tokens=40),
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Name a colour."},
                {"role": "assistant", "content": "Blue."},
                {"role": "user", "content": HISTORY[2].content},
            ],
            "temperature": 0.25,
            "max_completion_tokens": 40,
        },
        id="history-system-limits",
    ),
    pytest.param(
        ProviderRequest(
            "gpt-4o",
            TOOL_HISTORY,
            system="Be brief.",
            tools=(WEATHER,),
            tool_choice=ToolChoice("tool", "get_weather", parallel=False),
            response_format=STRUCTURED,
            stop=("END",),
            top_p=0.5,
            seed=7,
            user="user-1",
            metadata={"team": "a"},
        ),
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Is it sunny where this is?"},
                        {
                            "type": "image_url",
                            "image_url": {"url": f"data:image/png;base64,{PIXEL}"},
                        },
                    ],
                },
                {
                    "role": "assistant",
                    "content": "Checking.",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21 C"},
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
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "parallel_tool_calls": False,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "forecast", "schema": SCHEMA, "strict": True},
            },
            "stop": ["END"],
            "top_p": 0.5,
            "seed": 7,
            "user": "user-1",
            "metadata": {"team": "a"},
        },
        id="tools-image-results-format-sampling",
    ),
]


@pytest.mark.parametrize(("request_", "sdk_args"), OPENAI_CASES)
@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_openai_requests_arrive_as_the_sdk_sends_them(
    openai_fake: FakeOpenAI,
    openai_pair: tuple[openai.AsyncOpenAI, OpenAIBackend],
    request_: ProviderRequest,
    sdk_args: dict[str, Any],
    streamed: bool,
) -> None:
    """A chat completion from the backend arrives as the openai SDK's: method, path, headers, JSON body."""
    sdk, backend = openai_pair
    if streamed:
        stream = await sdk.chat.completions.create(
            model=request_.model,
            stream=True,
            stream_options={"include_usage": True},
            **sdk_args,
        )
        async for _ in stream:
            pass
        async with aclosing(backend.stream(request_)) as items:
            async for _ in items:
                pass
    else:
        await sdk.chat.completions.create(model=request_.model, **sdk_args)
        await backend.complete(request_)
    reference, ours = openai_fake.completions
    assert arrived(ours, OPENAI_HEADERS) == arrived(reference, OPENAI_HEADERS)


async def test_openai_models_listing_is_asked_as_the_sdk_asks(
    openai_fake: FakeOpenAI, openai_pair: tuple[openai.AsyncOpenAI, OpenAIBackend]
) -> None:
    """check() asks for the models listing as the openai SDK's models.list() does."""
    sdk, backend = openai_pair
    listed = [model.id async for model in sdk.models.list()]
    status = await backend.check()
    reference, ours = openai_fake.requests
    assert arrived(ours, OPENAI_HEADERS) == arrived(reference, OPENAI_HEADERS)
    assert set(listed) <= set(status.models)


@pytest.mark.parametrize("reply", READ_REPLIES)
async def test_openai_replies_read_as_the_sdk_reads_them(
    openai_fake: FakeOpenAI,
    openai_pair: tuple[openai.AsyncOpenAI, OpenAIBackend],
    reply: Reply,
) -> None:
    """The same whole and streamed replies read alike: text, pieces, usage, finish reason, model."""
    sdk, backend = openai_pair
    openai_fake.script(reply, reply, reply, reply)
    request = ProviderRequest("gpt-4o-mini", HISTORY[:1])
    messages: list[Any] = [{"role": "user", "content": "Name a colour."}]

    completion = await sdk.chat.completions.create(model="gpt-4o-mini", messages=messages)
    ours = await backend.complete(request)
    assert completion.usage is not None
    assert (ours.text, ours.usage.input_tokens, ours.usage.output_tokens) == (
        completion.choices[0].message.content,
        completion.usage.prompt_tokens,
        completion.usage.completion_tokens,
    )
    assert (ours.finish_reason, ours.model) == (
        completion.choices[0].finish_reason,
        completion.model,
    )

    pieces: list[str] = []
    usage = None
    finish = None
    stream = await sdk.chat.completions.create(
        model="gpt-4o-mini", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    async for chunk in stream:
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            finish = choice.finish_reason or finish
        usage = chunk.usage or usage
    items = await collect(backend.stream(request))
    assert [item.text for item in items if isinstance(item, TextDelta)] == pieces
    end = items[-1]
    assert isinstance(end, StreamEnd) and usage is not None
    assert (end.usage.input_tokens, end.usage.output_tokens, end.finish_reason) == (
        usage.prompt_tokens,
        usage.completion_tokens,
        finish,
    )


@pytest.mark.parametrize("reply", TOOL_REPLIES)
async def test_openai_tool_calls_read_as_the_sdk_reads_them(
    openai_fake: FakeOpenAI,
    openai_pair: tuple[openai.AsyncOpenAI, OpenAIBackend],
    reply: Reply,
) -> None:
    """Tool calls read alike: the message's tool_calls whole, and the deltas by index streamed."""
    sdk, backend = openai_pair
    openai_fake.script(reply, reply, reply, reply)
    request = ProviderRequest("gpt-4o", HISTORY[:1], tools=(WEATHER,))
    args: dict[str, Any] = {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "Name a colour."}],
        "tools": [{"type": "function", "function": {"name": "get_weather"}}],
    }
    completion = await sdk.chat.completions.create(**args)
    ours = await backend.complete(request)
    message = completion.choices[0].message
    assert message.tool_calls is not None
    assert [(c.id, c.name, c.arguments) for c in ours.tool_calls] == [
        (c.id, c.function.name, c.function.arguments)
        for c in message.tool_calls
        if c.type == "function"
    ]
    assert (ours.text, ours.finish_reason) == (
        message.content or "",
        completion.choices[0].finish_reason,
    )

    deltas: list[tuple[int, str | None, str | None, str]] = []
    finish = None
    async for chunk in await sdk.chat.completions.create(stream=True, **args):
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for call in choice.delta.tool_calls or []:
                function = call.function
                name = function.name if function is not None else None
                arguments = (function.arguments if function is not None else None) or ""
                deltas.append((call.index, call.id, name, arguments))
    items = await collect(backend.stream(request))
    streamed = [i for i in items if isinstance(i, ToolCallDelta)]
    assert [(d.index, d.id, d.name, d.arguments) for d in streamed] == deltas
    assembly = ToolCallAssembly()
    for delta in streamed:
        assembly.add(delta)
    assert assembly.calls() == ours.tool_calls
    end = items[-1]
    assert isinstance(end, StreamEnd) and end.finish_reason == finish == "tool_calls"


@pytest.mark.parametrize(
    ("failure", "sdk_error", "ours"),
    [
        (Fail.unauthorized(), openai.AuthenticationError, AuthenticationFailed),
        (Fail.forbidden(), openai.PermissionDeniedError, AuthenticationFailed),
        (Fail.rate_limited(), openai.RateLimitError, RateLimited),
        (Fail.bad_request(), openai.BadRequestError, BadRequest),
        (Fail.context_too_long(), openai.BadRequestError, ContextTooLong),
        (Fail.not_found(), openai.NotFoundError, BadRequest),
        (Fail.server_error(), openai.InternalServerError, UpstreamServerError),
        (Fail.overloaded(), openai.InternalServerError, Overloaded),
    ],
)
async def test_openai_error_statuses_read_as_the_sdk_reads_them(
    openai_fake: FakeOpenAI,
    openai_pair: tuple[openai.AsyncOpenAI, OpenAIBackend],
    failure: Fail,
    sdk_error: type[Exception],
    ours: type[ProviderError],
) -> None:
    """Each error status is the SDK's error class and Rhetor's matching type, with the same message."""
    sdk, backend = openai_pair
    openai_fake.script(failure, failure)
    with pytest.raises(sdk_error) as reference:
        await sdk.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(ours) as caught:
        await backend.complete(ProviderRequest("gpt-4o-mini", HISTORY[:1]))
    body = getattr(reference.value, "body", None)
    assert isinstance(body, dict) and body["message"] in caught.value.message
