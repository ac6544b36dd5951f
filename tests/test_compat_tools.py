"""
Tool calls, images and structured output through ``/v1``, with the official SDKs as clients.

Rhetor runs as a real server on an ephemeral port with its default Anthropic,
OpenAI and Ollama backends, each talking to its fake upstream (``tests.fakes``),
which speaks that provider's real tool-call wire format, whole and streamed. The
``openai`` SDK calls ``/v1/chat/completions`` and the ``anthropic`` SDK
``/v1/messages``; each is routed to each upstream by the exact model name, so every
test crosses a client's wire format and a provider's.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anthropic
import attrs
import httpx
import openai
import pydantic
import pytest

import rhetor.runtime
from rhetor.providers._anthropic_shapes import JSON_OBJECT_INSTRUCTION
from rhetor.routing._plan import TaskConfig
from tests.edge_helpers import named_events
from tests.fakes import Call, Reply
from tests.fakes.anthropic import FakeAnthropic, fake_anthropic
from tests.fakes.ollama import FakeOllama, fake_ollama
from tests.fakes.openai import FakeOpenAI, fake_openai
from tests.helpers import ServerInfo, running_server, settings_for
from tests.test_compat_openai import reads_sdk_stream

HAIKU = "claude-haiku-4-5"
GPT_MINI = "gpt-4o-mini"
GPT_OLD = "gpt-3.5-turbo"
LLAMA = "llama3.2:latest"
MODEL_OF = {"anthropic": HAIKU, "openai": GPT_MINI, "ollama": LLAMA}
CAPABLE = ["general", "tools", "vision", "json_mode", "json_schema"]
TASKS = {
    "tasks": {"default": {"primary": HAIKU, "fallbacks": [GPT_MINI, LLAMA]}},
    "models": {
        HAIKU: {"provider": "anthropic", "tier": "low", "capabilities": CAPABLE},
        GPT_MINI: {"provider": "openai", "tier": "low", "capabilities": CAPABLE},
        GPT_OLD: {"provider": "openai", "tier": "low", "capabilities": ["general", "tools"]},
        LLAMA: {"provider": "ollama", "tier": "local", "capabilities": CAPABLE},
    },
}

PARAMETERS = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}
OPENAI_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather now in a city.",
        "parameters": PARAMETERS,
    },
}
ANTHROPIC_TOOL: Any = {
    "name": "get_weather",
    "description": "The weather now in a city.",
    "input_schema": PARAMETERS,
}
PARIS = {"city": "Paris"}
QUESTION = "Weather in Paris?"
PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=="
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}

PROVIDERS = pytest.mark.parametrize("provider", ["anthropic", "openai", "ollama"])
CLIENTS = pytest.mark.parametrize("client", ["openai", "anthropic"])
STREAMED = pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])


@attrs.frozen
class Stack:
    """The three fake upstreams, Rhetor relaying to them, and both SDK clients pointed at it."""

    anthropic: FakeAnthropic
    openai: FakeOpenAI
    ollama: FakeOllama
    server: ServerInfo
    oai: openai.AsyncOpenAI
    ant: anthropic.AsyncAnthropic

    def fake(self, provider: str) -> FakeAnthropic | FakeOpenAI | FakeOllama:
        fake: FakeAnthropic | FakeOpenAI | FakeOllama = getattr(self, provider)
        return fake

    def sent(self, provider: str) -> dict[str, Any]:
        """The JSON body of the last completion request the provider's fake received."""
        body: dict[str, Any] = self.fake(provider).completions[-1].json
        return body


@asynccontextmanager
async def stacked(tmp_path: Path) -> AsyncIterator[Stack]:
    config = tmp_path / "tasks.json"
    config.write_text(json.dumps(TASKS))
    async with fake_anthropic() as ant, fake_openai() as oai, fake_ollama() as oll:
        settings = settings_for(
            tmp_path,
            anthropic_api_key="sk-ant-upstream",
            anthropic_base_url=ant.base_url,
            openai_api_key="sk-upstream",
            openai_base_url=oai.base_url,
            ollama_base_url=oll.base_url,
            simulated="never",
            task_config=config,
        )
        every = rhetor.runtime.default_backends(settings, TaskConfig.load(config))
        chosen = {name: every[name] for name in ("anthropic", "openai", "ollama")}
        async with (
            running_server(settings, backends=chosen) as server,
            openai.AsyncOpenAI(
                base_url=f"{server.base_url}/v1",
                api_key="any",
                max_retries=0,
                timeout=5,
                http_client=openai.DefaultAsyncHttpxClient(verify=False),
            ) as oai_client,
            anthropic.AsyncAnthropic(
                base_url=server.base_url,
                api_key="any",
                max_retries=0,
                timeout=5,
                http_client=anthropic.DefaultAsyncHttpxClient(verify=False),
            ) as ant_client,
        ):
            yield Stack(ant, oai, oll, server, oai_client, ant_client)


@attrs.frozen
class Answer:
    """What a client read back: text, tool calls as (id, name, arguments), finish reason,
    and each call's arguments as the JSON text the client got (OpenAI's clients send it back)."""

    text: str
    calls: list[tuple[str, str, Any]]
    finish: str | None
    texts: list[str] = attrs.field(factory=list)


async def ask_openai(
    client: openai.AsyncOpenAI, model: str, messages: list[Any], streamed: bool, **extra: Any
) -> Answer:
    """A Chat Completions call; streamed, the deltas are put together as OpenAI's clients do."""
    if not streamed:
        completion = await client.chat.completions.create(model=model, messages=messages, **extra)
        message = completion.choices[0].message
        calls = [
            (c.id, c.function.name, json.loads(c.function.arguments))
            for c in message.tool_calls or []
            if isinstance(c, openai.types.chat.ChatCompletionMessageFunctionToolCall)
        ]
        texts = [
            c.function.arguments
            for c in message.tool_calls or []
            if isinstance(c, openai.types.chat.ChatCompletionMessageFunctionToolCall)
        ]
        return Answer(message.content or "", calls, completion.choices[0].finish_reason, texts)
    text, finish = "", None
    parts: dict[int, dict[str, str]] = {}
    stream = await client.chat.completions.create(
        model=model, messages=messages, stream=True, **extra
    )
    async for chunk in stream:
        for choice in chunk.choices:
            text += choice.delta.content or ""
            for delta in choice.delta.tool_calls or []:
                if delta.index not in parts:
                    # OpenAI's first delta of a call carries its id and name.
                    assert delta.id and delta.function and delta.function.name
                    parts[delta.index] = {"id": delta.id, "name": delta.function.name, "args": ""}
                assert delta.function is not None
                parts[delta.index]["args"] += delta.function.arguments or ""
            finish = choice.finish_reason or finish
    calls = [(p["id"], p["name"], json.loads(p["args"])) for _, p in sorted(parts.items())]
    texts = [p["args"] for _, p in sorted(parts.items())]
    return Answer(text, calls, finish, texts)


async def ask_anthropic(
    client: anthropic.AsyncAnthropic,
    model: str,
    messages: list[Any],
    streamed: bool,
    **extra: Any,
) -> Answer:
    """A Messages call; streamed, through the SDK's own accumulating stream helper."""
    if streamed:
        async with client.messages.stream(
            model=model, max_tokens=256, messages=messages, **extra
        ) as stream:
            message = await stream.get_final_message()
    else:
        message = await client.messages.create(
            model=model, max_tokens=256, messages=messages, **extra
        )
    text = "".join(b.text for b in message.content if b.type == "text")
    calls = [(b.id, b.name, b.input) for b in message.content if b.type == "tool_use"]
    return Answer(text, calls, message.stop_reason)


async def ask(
    stack: Stack, client: str, provider: str, messages: list[Any], streamed: bool, **extra: Any
) -> Answer:
    model = MODEL_OF[provider]
    if client == "openai":
        return await ask_openai(stack.oai, model, messages, streamed, **extra)
    return await ask_anthropic(stack.ant, model, messages, streamed, **extra)


def tools_for(client: str) -> dict[str, Any]:
    return {"tools": [OPENAI_TOOL if client == "openai" else ANTHROPIC_TOOL]}


# -- tool calls, whole and streamed, each client to each upstream -------------------------


@reads_sdk_stream
@CLIENTS
@PROVIDERS
@STREAMED
async def test_a_tool_call_reaches_each_client_in_its_own_shape(
    stack: Stack, client: str, provider: str, streamed: bool
) -> None:
    """Each SDK, routed to each upstream, reads the upstream's tool call in its own API's shape."""
    stack.fake(provider).script(Reply("Let me look.", tool_calls=(Call("get_weather", PARIS),)))
    answer = await ask(
        stack,
        client,
        provider,
        [{"role": "user", "content": QUESTION}],
        streamed,
        **tools_for(client),
    )
    assert answer.text == "Let me look."
    [(ident, name, arguments)] = answer.calls
    assert (name, arguments) == ("get_weather", PARIS)
    assert ident
    assert answer.finish == ("tool_calls" if client == "openai" else "tool_use")
    sent = stack.sent(provider)
    names = [t.get("name") or t["function"]["name"] for t in sent["tools"]]
    assert names == ["get_weather"]


@reads_sdk_stream
@CLIENTS
@PROVIDERS
async def test_parallel_streamed_calls_keep_their_order_and_arguments(
    stack: Stack, client: str, provider: str
) -> None:
    """Two calls streamed in one reply (no text) reach each SDK in order, each with its own arguments."""
    calls = (
        Call("get_weather", PARIS, id="call_a"),
        Call("get_weather", {"city": "Oslo"}, id="call_b", pieces=5),
    )
    stack.fake(provider).script(Reply("", tool_calls=calls))
    answer = await ask(
        stack, client, provider, [{"role": "user", "content": "Both?"}], True, **tools_for(client)
    )
    assert answer.text == ""
    assert [arguments for _, _, arguments in answer.calls] == [PARIS, {"city": "Oslo"}]
    if provider != "ollama":  # Ollama before 0.12 names no calls; Rhetor gives them ids
        assert [ident for ident, _, _ in answer.calls] == ["call_a", "call_b"]


async def test_openai_streamed_tool_deltas_are_as_openai_sends_them(stack: Stack) -> None:
    """A raw stream: the first delta of a call has index, id, type and name; the rest add arguments."""
    stack.anthropic.script(Reply("", tool_calls=(Call("get_weather", PARIS, id="toolu_1"),)))
    body = {
        "model": HAIKU,
        "messages": [{"role": "user", "content": QUESTION}],
        "tools": [OPENAI_TOOL],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with httpx.AsyncClient(base_url=stack.server.base_url) as raw:
        response = await raw.post("/v1/chat/completions", json=body)
    events = [
        line.removeprefix("data: ")
        for line in response.text.splitlines()
        if line.startswith("data: ")
    ]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    deltas = [d for c in chunks for ch in c["choices"] for d in ch["delta"].get("tool_calls", [])]
    assert deltas[0] == {
        "index": 0,
        "id": "toolu_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": deltas[0]["function"]["arguments"]},
    }
    assert all(set(d) == {"index", "function"} for d in deltas[1:])
    assert json.loads("".join(d["function"]["arguments"] for d in deltas)) == PARIS
    finishes = [ch["finish_reason"] for c in chunks for ch in c["choices"] if ch["finish_reason"]]
    assert finishes == ["tool_calls"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0


async def test_anthropic_streamed_tool_use_is_as_anthropic_sends_it(stack: Stack) -> None:
    """A raw stream: a text block, then a tool_use block start (id, name, empty input) and input_json_delta events."""
    stack.openai.script(Reply("Looking.", tool_calls=(Call("get_weather", PARIS, id="call_9"),)))
    body = {
        "model": GPT_MINI,
        "max_tokens": 100,
        "messages": [{"role": "user", "content": QUESTION}],
        "tools": [ANTHROPIC_TOOL],
        "stream": True,
    }
    async with httpx.AsyncClient(base_url=stack.server.base_url) as raw:
        response = await raw.post("/v1/messages", json=body)
    events = named_events(response.text)
    starts = [data for kind, data in events if kind == "content_block_start"]
    assert [s["content_block"]["type"] for s in starts] == ["text", "tool_use"]
    assert starts[1] == {
        "type": "content_block_start",
        "index": 1,
        "content_block": {"type": "tool_use", "id": "call_9", "name": "get_weather", "input": {}},
    }
    partial = [
        data["delta"]["partial_json"]
        for kind, data in events
        if kind == "content_block_delta" and data["delta"]["type"] == "input_json_delta"
    ]
    assert len(partial) > 1 and json.loads("".join(partial)) == PARIS
    [delta] = [data for kind, data in events if kind == "message_delta"]
    assert delta["delta"]["stop_reason"] == "tool_use"
    assert [kind for kind, _ in events][-1] == "message_stop"


# -- a multi-step tool conversation ---------------------------------------------------


def second_turn(client: str, ident: str, arguments: str | None = None) -> list[Any]:
    """
    The conversation after a call: the question, the call, and its result, as each client
    sends it; ``arguments`` is the call's JSON text as the OpenAI client got it.
    """
    if client == "openai":
        return [
            {"role": "user", "content": QUESTION},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": ident,
                        "type": "function",
                        "function": {
                            "name": "get_weather",
                            "arguments": arguments or json.dumps(PARIS),
                        },
                    }
                ],
            },
            {"role": "tool", "tool_call_id": ident, "content": "18 degrees"},
        ]
    return [
        {"role": "user", "content": QUESTION},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": ident, "name": "get_weather", "input": PARIS}],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": ident, "content": "18 degrees"}],
        },
    ]


def result_sent(provider: str, body: dict[str, Any], ident: str) -> None:
    """Assert the upstream got the call and then its result, paired by id, in its own shape."""
    messages = body["messages"]
    if provider == "anthropic":
        assert messages[-2]["content"][-1] == {
            "type": "tool_use",
            "id": ident,
            "name": "get_weather",
            "input": PARIS,
        }
        assert messages[-1]["content"] == [
            {"type": "tool_result", "tool_use_id": ident, "content": "18 degrees"}
        ]
    elif provider == "openai":
        assert messages[-2]["tool_calls"][0]["id"] == ident
        assert messages[-1] == {"role": "tool", "tool_call_id": ident, "content": "18 degrees"}
    else:
        assert messages[-2]["tool_calls"][0]["function"]["name"] == "get_weather"
        assert messages[-1]["role"] == "tool" and messages[-1]["content"] == "18 degrees"


@reads_sdk_stream
@CLIENTS
@PROVIDERS
async def test_a_tool_conversation_call_result_answer(
    stack: Stack, client: str, provider: str
) -> None:
    """A call, its result sent back, the final answer: the upstream gets call and result paired."""
    fake = stack.fake(provider)
    fake.script(Reply("", tool_calls=(Call("get_weather", PARIS, id="call_1"),)))
    first = await ask(
        stack, client, provider, [{"role": "user", "content": QUESTION}], False, **tools_for(client)
    )
    [(ident, _, _)] = first.calls
    fake.script(Reply("It is 18 degrees in Paris."))
    final = await ask(
        stack, client, provider, second_turn(client, ident, *first.texts), True, **tools_for(client)
    )
    assert final.text == "It is 18 degrees in Paris."
    assert final.finish == ("stop" if client == "openai" else "end_turn")
    result_sent(provider, stack.sent(provider), ident)


@CLIENTS
@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_a_tool_conversation_under_a_context_keeps_call_and_result_paired(
    stack: Stack, client: str, provider: str
) -> None:
    """Under ``X-Rhetor-Context`` the stored call and the new result reach the upstream once each, paired."""
    headers = {"X-Rhetor-Context": f"tools-{client}-{provider}"}
    fake = stack.fake(provider)
    fake.script(Reply("", tool_calls=(Call("get_weather", PARIS, id="call_7"),)))
    first = await ask(
        stack,
        client,
        provider,
        [{"role": "user", "content": QUESTION}],
        False,
        extra_headers=headers,
        **tools_for(client),
    )
    [(ident, _, _)] = first.calls
    fake.script(Reply("18 degrees."))
    final = await ask(
        stack,
        client,
        provider,
        second_turn(client, ident, *first.texts),
        False,
        extra_headers=headers,
        **tools_for(client),
    )
    assert final.text == "18 degrees."
    body = stack.sent(provider)
    result_sent(provider, body, ident)
    questions = [m for m in body["messages"] if m["role"] == "user" and QUESTION in json.dumps(m)]
    assert len(questions) == 1


# -- images ---------------------------------------------------------------------------


def picture(client: str) -> list[Any]:
    if client == "openai":
        return [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
                ],
            }
        ]
    return [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": PIXEL},
                },
            ],
        }
    ]


@CLIENTS
async def test_an_image_reaches_each_vision_model_in_its_providers_shape(
    stack: Stack, client: str
) -> None:
    """A base64 image from either client reaches OpenAI as a data URL, Anthropic as a base64 source, Ollama in images."""
    for provider in ("anthropic", "openai", "ollama"):
        await ask(stack, client, provider, picture(client), False)
    assert stack.sent("openai")["messages"][-1]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": f"data:image/png;base64,{PIXEL}"},
    }
    assert stack.sent("anthropic")["messages"][-1]["content"][1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": PIXEL},
    }
    assert stack.sent("ollama")["messages"][-1]["images"] == [PIXEL]


async def test_an_image_url_reaches_anthropic_from_an_openai_client_as_a_url_source(
    stack: Stack,
) -> None:
    """An https image URL from the openai SDK is a url source for Anthropic; Rhetor fetches nothing."""
    url = "https://example.com/cat.png"
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]
    await ask_openai(stack.oai, HAIKU, messages, False)
    assert stack.sent("anthropic")["messages"][-1]["content"] == [
        {"type": "image", "source": {"type": "url", "url": url}}
    ]


async def test_an_image_for_a_text_only_model_is_refused_by_each_client(stack: Stack) -> None:
    """An image for a model without vision is each SDK's BadRequestError naming messages and the model."""
    with pytest.raises(openai.BadRequestError) as oai:
        await ask_openai(stack.oai, GPT_OLD, picture("openai"), False)
    assert oai.value.param == "messages"
    assert f"openai/{GPT_OLD}" in oai.value.message and "image input" in oai.value.message
    with pytest.raises(anthropic.BadRequestError) as ant:
        await ask_anthropic(stack.ant, GPT_OLD, picture("anthropic"), False)
    error = ant.value.body["error"]  # type: ignore[index]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("messages: ") and f"openai/{GPT_OLD}" in error["message"]
    assert stack.openai.completions == []


async def test_an_image_url_for_ollama_is_refused_naming_why(stack: Stack) -> None:
    """Ollama takes base64 images only: an image URL routed there is a 400 naming messages."""
    messages = [
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "https://example.com/c.png"}}],
        }
    ]
    with pytest.raises(openai.BadRequestError) as caught:
        await ask_openai(stack.oai, LLAMA, messages, False)
    assert caught.value.param == "messages" and "images given by URL" in caught.value.message
    assert stack.ollama.completions == []


async def test_a_json_schema_for_a_model_without_it_is_refused_naming_response_format(
    stack: Stack,
) -> None:
    """A json_schema response format for a model the catalogue gives none is a 400 naming the field and the model."""
    with pytest.raises(openai.BadRequestError) as caught:
        await ask_openai(
            stack.oai,
            GPT_OLD,
            [{"role": "user", "content": QUESTION}],
            False,
            response_format={"type": "json_schema", "json_schema": {"name": "w", "schema": SCHEMA}},
        )
    assert caught.value.param == "response_format"
    assert f"openai/{GPT_OLD}" in caught.value.message


# -- structured output ------------------------------------------------------------------


async def test_a_json_schema_reaches_openai_as_is(stack: Stack) -> None:
    """The openai SDK's response_format json_schema (strict) reaches OpenAI exactly as sent."""
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "weather", "schema": SCHEMA, "strict": True},
    }
    stack.openai.script(Reply('{"city":"Paris"}'))
    answer = await ask_openai(
        stack.oai, GPT_MINI, [{"role": "user", "content": QUESTION}], False, response_format=fmt
    )
    assert json.loads(answer.text) == PARIS
    assert stack.sent("openai")["response_format"] == fmt


async def test_a_json_schema_reaches_anthropic_as_output_config(stack: Stack) -> None:
    """The openai SDK's json_schema reaches Anthropic as ``output_config.format`` with the schema as given."""
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "weather", "schema": SCHEMA, "strict": True},
    }
    await ask_openai(
        stack.oai, HAIKU, [{"role": "user", "content": QUESTION}], False, response_format=fmt
    )
    body = stack.sent("anthropic")
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": SCHEMA}}
    assert "response_format" not in body


async def test_json_object_reaches_anthropic_as_an_instruction(stack: Stack) -> None:
    """``json_object`` has no Anthropic equivalent: it becomes the documented system instruction."""
    await ask_openai(
        stack.oai,
        HAIKU,
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTION}],
        False,
        response_format={"type": "json_object"},
    )
    system = stack.sent("anthropic")["system"]
    text = system if isinstance(system, str) else "".join(b["text"] for b in system)
    assert text.startswith("Be brief.") and JSON_OBJECT_INSTRUCTION in text


async def test_an_anthropic_output_config_reaches_openai_as_response_format(stack: Stack) -> None:
    """The anthropic SDK's ``output_config.format`` reaches OpenAI as a strict json_schema response_format."""
    await ask_anthropic(
        stack.ant,
        GPT_MINI,
        [{"role": "user", "content": QUESTION}],
        False,
        extra_body={"output_config": {"format": {"type": "json_schema", "schema": SCHEMA}}},
    )
    fmt = stack.sent("openai")["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["schema"] == SCHEMA and fmt["json_schema"]["strict"] is True


# -- other fields, unknown parameters ---------------------------------------------------


async def test_sampling_fields_and_tool_choice_from_openai_reach_anthropic(stack: Stack) -> None:
    """stop, user, a named tool_choice and parallel_tool_calls from the openai SDK reach Anthropic under its names."""
    await ask_openai(
        stack.oai,
        HAIKU,
        [{"role": "user", "content": QUESTION}],
        False,
        tools=[OPENAI_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
        stop=["END"],
        user="user-1",
    )
    body = stack.sent("anthropic")
    assert body["tool_choice"] == {
        "type": "tool",
        "name": "get_weather",
        "disable_parallel_tool_use": True,
    }
    assert body["stop_sequences"] == ["END"]
    assert body["metadata"] == {"user_id": "user-1"}


async def test_sampling_fields_and_tool_choice_from_anthropic_reach_openai(stack: Stack) -> None:
    """stop_sequences, top_p, metadata.user_id and tool_choice any from the anthropic SDK reach OpenAI under its names."""
    await ask_anthropic(
        stack.ant,
        GPT_MINI,
        [{"role": "user", "content": QUESTION}],
        False,
        tools=[ANTHROPIC_TOOL],
        tool_choice={"type": "any"},
        stop_sequences=["END"],
        metadata={"user_id": "user-2"},
        # The SDK (API 2026-10-21) has no sampling parameters; older clients still send top_p.
        extra_body={"top_p": 0.5},
    )
    body = stack.sent("openai")
    assert body["tool_choice"] == "required"
    assert body["stop"] == ["END"]
    assert body["top_p"] == 0.5
    assert body["user"] == "user-2"
    assert body["tools"][0]["function"]["parameters"] == PARAMETERS


async def test_an_unknown_parameter_passes_through_within_a_family(stack: Stack) -> None:
    """An openai client's parameter Rhetor does not know reaches OpenAI untouched; an anthropic client's reaches Anthropic."""
    await ask_openai(
        stack.oai,
        GPT_MINI,
        [{"role": "user", "content": QUESTION}],
        False,
        extra_body={
            "logit_bias": {"50256": -100},
            "prediction": {"type": "content", "content": "x"},
        },
    )
    body = stack.sent("openai")
    assert body["logit_bias"] == {"50256": -100}
    assert body["prediction"] == {"type": "content", "content": "x"}
    await ask_anthropic(
        stack.ant,
        HAIKU,
        [{"role": "user", "content": QUESTION}],
        False,
        extra_body={"container": "c-1"},
    )
    assert stack.sent("anthropic")["container"] == "c-1"


async def test_an_unknown_parameter_across_families_is_a_400_naming_it(stack: Stack) -> None:
    """A parameter with no equivalent, sent to another family's model, is refused naming it; nothing is sent."""
    with pytest.raises(openai.BadRequestError) as oai:
        await ask_openai(
            stack.oai,
            HAIKU,
            [{"role": "user", "content": QUESTION}],
            False,
            extra_body={"logit_bias": {"50256": -100}},
        )
    assert oai.value.param == "logit_bias"
    assert f"anthropic/{HAIKU}" in oai.value.message
    with pytest.raises(anthropic.BadRequestError) as ant:
        await ask_anthropic(
            stack.ant,
            GPT_MINI,
            [{"role": "user", "content": QUESTION}],
            False,
            extra_body={"container": "c-1"},
        )
    assert ant.value.status_code == 400
    assert "container" in ant.value.body["error"]["message"]  # type: ignore[index]
    assert stack.anthropic.completions == [] and stack.openai.completions == []


async def test_a_harmless_parameter_across_families_is_left_behind(stack: Stack) -> None:
    """A parameter on the harmless list (``reasoning_effort``) does not stop an openai client reaching Anthropic."""
    answer = await ask_openai(
        stack.oai,
        HAIKU,
        [{"role": "user", "content": QUESTION}],
        False,
        reasoning_effort="low",
        service_tier="auto",
    )
    assert answer.text
    body = stack.sent("anthropic")
    assert "reasoning_effort" not in body


async def test_usage_reports_cached_and_reasoning_tokens_to_each_client(stack: Stack) -> None:
    """Cached input tokens reach the openai SDK's prompt_tokens_details and the anthropic SDK's cache_read_input_tokens."""
    stack.openai.script(
        Reply("Hi", input_tokens=40, output_tokens=20, cached_tokens=30, reasoning_tokens=5)
    )
    completion = await stack.oai.chat.completions.create(
        model=GPT_MINI, messages=[{"role": "user", "content": "Hi"}]
    )
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 30
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 5
    stack.openai.script(Reply("Hi", input_tokens=40, cached_tokens=30))
    message = await stack.ant.messages.create(
        model=GPT_MINI, max_tokens=50, messages=[{"role": "user", "content": "Hi"}]
    )
    assert message.usage.cache_read_input_tokens == 30
    assert message.usage.input_tokens == 10


async def test_a_null_parameter_is_left_out_not_refused(stack: Stack) -> None:
    """A parameter sent as null (as clients on the SDKs do) is absent: neither relayed nor refused across families."""
    await ask_openai(
        stack.oai,
        HAIKU,
        [{"role": "user", "content": QUESTION}],
        False,
        extra_body={"logit_bias": None, "tools": None, "stop": None},
    )
    body = stack.sent("anthropic")
    assert "logit_bias" not in body and "tools" not in body and "stop_sequences" not in body


# -- hostile input ------------------------------------------------------------------------

OPENAI_BAD: list[tuple[dict[str, Any], str]] = [
    (
        {"tools": [{"type": "function", "function": {"name": "no spaces"}}]},
        "tools[0].function.name",
    ),
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    (
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": [1]}}]},
        "tools[0].function.parameters",
    ),
    ({"tool_choice": "always"}, "tool_choice"),
    ({"tool_choice": {"type": "function", "function": {}}}, "tool_choice.function.name"),
    ({"parallel_tool_calls": "yes"}, "parallel_tool_calls"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    (
        {"response_format": {"type": "json_schema", "json_schema": {}}},
        "response_format.json_schema.name",
    ),
    ({"response_format": {"type": "yaml"}}, "response_format.type"),
    ({"stop": [1, 2]}, "stop[0]"),
    ({"top_p": 1.5}, "top_p"),
    ({"seed": 1.5}, "seed"),
    ({"seed": 2**64}, "seed"),
    ({"metadata": {"k": 1}}, "metadata"),
    (
        {
            "messages": [
                {"role": "user", "content": QUESTION},
                {"role": "assistant", "tool_calls": [{"id": "c", "type": "function"}]},
            ]
        },
        "messages[1].tool_calls[0].function",
    ),
    (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}
                    ],
                }
            ]
        },
        "messages[0].content[0].image_url.url",
    ),
    (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image_url",
                            "image_url": {"url": "https://x/y.png", "detail": "max"},
                        }
                    ],
                }
            ]
        },
        "messages[0].content[0].image_url.detail",
    ),
]


@pytest.mark.parametrize(("fields", "param"), OPENAI_BAD)
async def test_bad_tool_image_and_format_fields_are_openai_400s_naming_them(
    stack: Stack, fields: dict[str, Any], param: str
) -> None:
    """Each bad new field is the openai SDK's BadRequestError naming it; nothing reaches an upstream."""
    body: dict[str, Any] = {"model": GPT_MINI, "messages": [{"role": "user", "content": QUESTION}]}
    async with httpx.AsyncClient(base_url=stack.server.base_url) as raw:
        response = await raw.post("/v1/chat/completions", json=body | fields)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["type"]) == (param, "invalid_request_error")
    assert stack.openai.completions == []


ANTHROPIC_BAD: list[tuple[dict[str, Any], str]] = [
    ({"tools": [{"name": "f"}]}, "tools[0].input_schema"),
    ({"tools": [{"name": "no spaces", "input_schema": {}}]}, "tools[0].name"),
    ({"tool_choice": {"type": "some"}}, "tool_choice.type"),
    ({"tool_choice": {"type": "tool"}}, "tool_choice.name"),
    ({"stop_sequences": "END"}, "stop_sequences"),
    ({"top_p": -1}, "top_p"),
    ({"output_config": {"format": {"type": "json_schema"}}}, "output_config.format.schema"),
    (
        {
            "messages": [
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t", "name": "f", "input": [1]}],
                }
            ]
        },
        "messages[0].content[0].input",
    ),
    (
        {"messages": [{"role": "user", "content": [{"type": "tool_result", "content": "x"}]}]},
        "messages[0].content[0].tool_use_id",
    ),
    (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image", "source": {"type": "base64", "data": PIXEL}}],
                }
            ]
        },
        "messages[0].content[0].source.media_type",
    ),
    (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/tiff", "data": PIXEL},
                        }
                    ],
                }
            ]
        },
        "messages[0].content[0].source",
    ),
    (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}],
                }
            ]
        },
        "messages[0].content[0].type",
    ),
]


@pytest.mark.parametrize(("fields", "param"), ANTHROPIC_BAD)
async def test_bad_tool_image_and_format_fields_are_anthropic_400s_naming_them(
    stack: Stack, fields: dict[str, Any], param: str
) -> None:
    """Each bad new field is the anthropic SDK's BadRequestError, its message naming the field; nothing is sent."""
    body: dict[str, Any] = {
        "model": HAIKU,
        "max_tokens": 10,
        "messages": [{"role": "user", "content": QUESTION}],
    }
    async with httpx.AsyncClient(base_url=stack.server.base_url) as raw:
        response = await raw.post("/v1/messages", json=body | fields)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith(f"{param}:"), error["message"]
    assert stack.anthropic.completions == []


async def test_the_openai_sdks_parse_helper_gets_typed_output_from_anthropic(stack: Stack) -> None:
    """``chat.completions.parse`` with a pydantic model, routed to Anthropic: its schema reaches
    ``output_config`` and the SDK reads the JSON reply back as the model."""

    class Weather(pydantic.BaseModel):
        city: str
        degrees: int

    stack.anthropic.script(Reply('{"city": "Paris", "degrees": 18}'))
    completion = await stack.oai.chat.completions.parse(
        model=HAIKU, messages=[{"role": "user", "content": QUESTION}], response_format=Weather
    )
    assert completion.choices[0].message.parsed == Weather(city="Paris", degrees=18)
    schema = stack.sent("anthropic")["output_config"]["format"]["schema"]
    assert schema["required"] == ["city", "degrees"]
