"""
The official clients are the reference for the wire formats Rhetor's backends speak.

For each provider the same request goes through the official client (``openai``,
``anthropic``, ``ollama``) and through Rhetor's backend to the same fake upstream,
and what arrives is compared: method, path, query, the headers that matter and the
JSON body. Then both read the same scripted replies, whole and streamed, and what
each makes of them is compared: text, token counts, finish reason, model. The
clients are driven the way their own documentation shows; nothing of Rhetor's is
used to build their input.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import anthropic
import ollama
import openai
import pytest

from rhetor._errors import (
    AuthenticationFailed,
    BadRequest,
    ContextTooLong,
    Overloaded,
    ProviderError,
    RateLimited,
    UpstreamServerError,
)
from rhetor._types import ChatMessage, ProviderRequest, StreamEnd, TextDelta
from rhetor.providers._anthropic import AnthropicBackend
from rhetor.providers._ollama import OllamaBackend
from rhetor.providers._openai import OpenAIBackend
from tests.fakes import Fail, ReceivedRequest, Reply
from tests.fakes.anthropic import FakeAnthropic, fake_anthropic
from tests.fakes.ollama import FakeOllama, fake_ollama
from tests.fakes.openai import FakeOpenAI, fake_openai

# The SDKs' own streams leave their inner async generators unfinished once they have
# read [DONE] or message_stop (encode/httpx#3686), which trio reports when they are
# collected. That is the reference clients' flaw, not what is compared here; Rhetor's
# own generators are named rhetor.* and stay under the error filter.
pytestmark = pytest.mark.filterwarnings(
    r"ignore:Async generator '(openai|anthropic|httpx2|httpcore2)\.:ResourceWarning"
)

KEY = "sk-conformance-0123456789"
HISTORY = (
    ChatMessage("user", "Name a colour."),
    ChatMessage("assistant", "Blue."),
    ChatMessage("user", "Another, in \u00e9l\u00e9gant French \U0001f3a8."),
)
# Headers whose meaning the upstream reads (the SDKs' x-stainless-* telemetry and
# user-agent are theirs alone; accept-encoding is left out on purpose: Rhetor reads
# uncompressed bodies, which every upstream sends unless asked otherwise).
OPENAI_HEADERS = ("authorization", "content-type", "accept", "openai-organization")
ANTHROPIC_HEADERS = ("authorization", "x-api-key", "anthropic-version", "content-type", "accept")
OLLAMA_HEADERS = ("content-type", "accept", "authorization")


def arrived(request: ReceivedRequest, headers: tuple[str, ...]) -> dict[str, Any]:
    """What an upstream reads of a request: method, path, query, headers that matter, body."""
    return {
        "method": request.method,
        "path": request.path,
        "query": request.query,
        "headers": {name: request.headers.get(name) for name in headers},
        "body": request.json,
    }


# -- OpenAI ----------------------------------------------------------------------------


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


READ_REPLIES = [
    pytest.param(Reply("Hello there", input_tokens=7, output_tokens=3), id="stop"),
    pytest.param(
        Reply(
            "Caf\u00e9 \u2014 \U0001f600",
            chunks=("Caf\u00e9 ", "\u2014 ", "\U0001f600"),
            finish_reason="length",
            input_tokens=1,
            output_tokens=5,
        ),
        id="length-unicode",
    ),
]


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
    items = await _collect(backend.stream(request))
    assert [item.text for item in items if isinstance(item, TextDelta)] == pieces
    end = items[-1]
    assert isinstance(end, StreamEnd) and usage is not None
    assert (end.usage.input_tokens, end.usage.output_tokens, end.finish_reason) == (
        usage.prompt_tokens,
        usage.completion_tokens,
        finish,
    )


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


# -- Anthropic -------------------------------------------------------------------------


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
STOP_REASONS = {"end_turn": "stop", "max_tokens": "length"}


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
    items = await _collect(backend.stream(request))
    assert [item.text for item in items if isinstance(item, TextDelta)] == pieces
    end = items[-1]
    assert isinstance(end, StreamEnd) and stop_reason is not None
    assert (end.usage.input_tokens, end.usage.output_tokens, end.finish_reason) == (
        input_tokens,
        output_tokens,
        STOP_REASONS[stop_reason],
    )


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


# -- Ollama ----------------------------------------------------------------------------


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
    items = await _collect(backend.stream(request))
    assert [item.text for item in items if isinstance(item, TextDelta)] == pieces
    end = items[-1]
    assert isinstance(end, StreamEnd) and last is not None and last.done
    assert (end.usage.input_tokens, end.usage.output_tokens, end.finish_reason) == (
        last.prompt_eval_count,
        last.eval_count,
        last.done_reason,
    )


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


async def _collect(stream: Any) -> list[TextDelta | StreamEnd]:
    async with aclosing(stream) as items:
        return [item async for item in items]
