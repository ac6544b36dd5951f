"""
Tool calls, images and structured output through the whole runtime, to each provider's fake upstream.

``rhetor.runtime.start()`` runs the default Anthropic, OpenAI and Ollama backends
against the fakes in :mod:`tests.fakes` over loopback; each fake speaks its
provider's real tool-call wire format, whole and streamed. A request carries tools,
images or a response format as Rhetor's internal model (:mod:`rhetor._content`), and
the tests read what reached each upstream and what came back.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest

import rhetor.runtime
from rhetor import Settings, ValidationError
from rhetor._content import (
    Image,
    Passthrough,
    ResponseFormat,
    Text,
    Tool,
    ToolCall,
    ToolChoice,
    ToolResult,
)
from rhetor._types import ChatMessage, Chunk
from rhetor.providers._anthropic_shapes import JSON_OBJECT_INSTRUCTION
from rhetor.runtime import Runtime
from tests.fakes import Call, Reply
from tests.fakes.anthropic import FakeAnthropic, fake_anthropic
from tests.fakes.ollama import FakeOllama, fake_ollama
from tests.fakes.openai import FakeOpenAI, fake_openai

HAIKU = "claude-haiku-4-5"
GPT_MINI = "gpt-4o-mini"
GPT_OLD = "gpt-3.5-turbo"
LLAMA = "llama3.2:latest"
MODEL_OF = {"anthropic": HAIKU, "openai": GPT_MINI, "ollama": LLAMA}
CAPABLE = ["general", "tools", "vision", "json_mode", "json_schema"]

TASKS = {
    "tasks": {
        "default": {"primary": HAIKU, "fallbacks": [GPT_MINI, LLAMA]},
        "chat": {"primary": GPT_OLD, "fallbacks": [LLAMA]},
    },
    "models": {
        HAIKU: {"provider": "anthropic", "tier": "low", "capabilities": CAPABLE},
        GPT_MINI: {"provider": "openai", "tier": "low", "capabilities": CAPABLE},
        GPT_OLD: {
            "provider": "openai",
            "tier": "low",
            "context_window": 400,
            "capabilities": ["general", "tools"],
        },
        LLAMA: {"provider": "ollama", "tier": "local", "capabilities": CAPABLE},
    },
}

WEATHER = Tool(
    "get_weather",
    "The weather now in a city.",
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
        "required": ["city"],
    },
)
CLOCK = Tool("get_time", None, {"type": "object", "properties": {}})
PARIS = {"city": "Paris", "unit": "c"}
PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=="
PROVIDERS = pytest.mark.parametrize("provider", ["anthropic", "openai", "ollama"])
STREAMED = pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])


@attrs.frozen
class Upstreams:
    anthropic: FakeAnthropic
    openai: FakeOpenAI
    ollama: FakeOllama

    def of(self, provider: str) -> FakeAnthropic | FakeOpenAI | FakeOllama:
        fake: FakeAnthropic | FakeOpenAI | FakeOllama = getattr(self, provider)
        return fake


@pytest.fixture
async def upstreams() -> AsyncIterator[Upstreams]:
    async with fake_anthropic() as anthropic, fake_openai() as openai, fake_ollama() as ollama:
        yield Upstreams(anthropic, openai, ollama)


@asynccontextmanager
async def running(tmp_path: Path, up: Upstreams, **overrides: Any) -> AsyncIterator[Runtime]:
    config = tmp_path / "tasks.json"
    config.write_text(json.dumps(TASKS))
    fields: dict[str, Any] = {
        "anthropic_api_key": "test",
        "anthropic_base_url": up.anthropic.base_url,
        "openai_api_key": "test",
        "openai_base_url": up.openai.base_url,
        "ollama_base_url": up.ollama.base_url,
        "simulated": "never",
        "data_dir": tmp_path / "data",
        "hermes_url": None,
        "task_config": config,
    } | overrides
    async with rhetor.runtime.start(Settings(**fields), health_interval=0) as rt:
        yield rt


@pytest.fixture
async def rt(tmp_path: Path, upstreams: Upstreams) -> AsyncIterator[Runtime]:
    async with running(tmp_path, upstreams) as runtime:
        yield runtime


async def read_all(chunks: AsyncGenerator[Chunk, None]) -> list[Chunk]:
    async with aclosing(chunks) as items:
        return [chunk async for chunk in items]


def body_of(up: Upstreams, provider: str) -> dict[str, Any]:
    """The JSON body of the last completion request the provider's fake received."""
    body: dict[str, Any] = up.of(provider).completions[-1].json
    return body


# -- tool calls back ---------------------------------------------------------------


@PROVIDERS
@STREAMED
async def test_a_tool_call_comes_back_normalised_from_each_provider(
    rt: Runtime, upstreams: Upstreams, provider: str, streamed: bool
) -> None:
    """Tools offered to each provider come back as one normalised tool call, finish reason tool_calls."""
    upstreams.of(provider).script(
        Reply("Let me look.", tool_calls=(Call("get_weather", PARIS, id="call_1"),))
    )
    options: dict[str, Any] = {"provider": provider, "tools": [WEATHER], "timeout": 5}
    if streamed:
        chunks = await read_all(rt.stream("Weather in Paris?", **options))
        reply = chunks[-1].reply
        assert reply is not None
        deltas = [d for c in chunks for d in c.tool_calls]
        assert deltas[0].id == "call_1" and deltas[0].name == "get_weather"
        assert json.loads("".join(d.arguments for d in deltas)) == PARIS
        assert "".join(c.text for c in chunks) == "Let me look."
    else:
        reply = await rt.message("Weather in Paris?", **options)
    assert reply.message == "Let me look."
    assert reply.finish_reason == "tool_calls"
    [call] = reply.tool_calls
    assert (call.id, call.name, json.loads(call.arguments)) == ("call_1", "get_weather", PARIS)


@PROVIDERS
@STREAMED
async def test_parallel_tool_calls_keep_their_order_and_arguments(
    rt: Runtime, upstreams: Upstreams, provider: str, streamed: bool
) -> None:
    """Two calls in one reply (no text) arrive in order, each with its own arguments, whole or streamed."""
    calls = (
        Call("get_weather", PARIS, id="call_a"),
        Call("get_weather", {"city": "Oslo"}, id="call_b", pieces=5),
    )
    upstreams.of(provider).script(Reply("", tool_calls=calls))
    options: dict[str, Any] = {"provider": provider, "tools": [WEATHER], "timeout": 5}
    if streamed:
        reply = (await read_all(rt.stream("Paris and Oslo?", **options)))[-1].reply
    else:
        reply = await rt.message("Paris and Oslo?", **options)
    assert reply is not None
    assert reply.message == ""
    assert [(c.id, json.loads(c.arguments)) for c in reply.tool_calls] == [
        ("call_a", PARIS),
        ("call_b", {"city": "Oslo"}),
    ]


async def test_ollama_calls_without_ids_are_given_ids(rt: Runtime, upstreams: Upstreams) -> None:
    """Ollama before 0.12 sends calls without ids: each gets a distinct one, so results can name it."""
    upstreams.ollama.script(Reply("", tool_calls=(Call("get_weather", PARIS), Call("get_time"))))
    reply = await rt.message("?", provider="ollama", tools=[WEATHER, CLOCK], timeout=5)
    ids = [c.id for c in reply.tool_calls]
    assert len(set(ids)) == 2 and all(i.startswith("call_") for i in ids)
    assert [c.name for c in reply.tool_calls] == ["get_weather", "get_time"]
    assert reply.finish_reason == "tool_calls"


# -- tools reaching each upstream ----------------------------------------------------


async def test_tools_and_a_named_choice_reach_openai_in_its_shape(
    rt: Runtime, upstreams: Upstreams
) -> None:
    """OpenAI gets function tools, a named tool_choice and parallel_tool_calls as it names them."""
    await rt.message(
        "Weather?",
        provider="openai",
        tools=[WEATHER],
        tool_choice=ToolChoice("tool", "get_weather", parallel=False),
        timeout=5,
    )
    body = body_of(upstreams, "openai")
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather now in a city.",
                "parameters": WEATHER.parameters,
            },
        }
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["parallel_tool_calls"] is False


async def test_tools_and_a_required_choice_reach_anthropic_in_its_shape(
    rt: Runtime, upstreams: Upstreams
) -> None:
    """Anthropic gets input_schema tools and tool_choice any, with disable_parallel_tool_use."""
    await rt.message(
        "Weather?",
        provider="anthropic",
        tools=[WEATHER, CLOCK],
        tool_choice=ToolChoice("required", parallel=False),
        timeout=5,
    )
    body = body_of(upstreams, "anthropic")
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "The weather now in a city.",
            "input_schema": WEATHER.parameters,
        },
        {"name": "get_time", "input_schema": CLOCK.parameters},
    ]
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}


async def test_tools_reach_ollama_and_a_none_choice_sends_none(
    rt: Runtime, upstreams: Upstreams
) -> None:
    """Ollama gets OpenAI-shaped function tools; with tool_choice none it gets no tools at all."""
    await rt.message("Weather?", provider="ollama", tools=[WEATHER], timeout=5)
    assert body_of(upstreams, "ollama")["tools"][0]["function"]["name"] == "get_weather"
    await rt.message(
        "Weather?", provider="ollama", tools=[WEATHER], tool_choice=ToolChoice("none"), timeout=5
    )
    assert "tools" not in body_of(upstreams, "ollama")


async def test_a_forced_tool_choice_is_not_sent_to_ollama(rt: Runtime) -> None:
    """Ollama cannot force a call: a required choice naming Ollama is a 400 naming tool_choice."""
    with pytest.raises(ValidationError) as caught:
        await rt.message(
            "Weather?",
            provider="ollama",
            tools=[WEATHER],
            tool_choice=ToolChoice("required"),
            timeout=5,
        )
    assert caught.value.field == "tool_choice"
    assert "forced tool choice" in caught.value.message


# -- a tool conversation -------------------------------------------------------------

CONVERSATION = (
    ChatMessage("user", "Weather in Paris?"),
    ChatMessage(
        "assistant",
        blocks=(Text("Let me look."), ToolCall("call_1", "get_weather", json.dumps(PARIS))),
    ),
    ChatMessage("user", blocks=(ToolResult("call_1", "18 degrees"), Text("And tomorrow?"))),
)


async def test_a_tool_result_reaches_openai_as_a_tool_message(
    rt: Runtime, upstreams: Upstreams
) -> None:
    """The call goes back as assistant tool_calls, the result as a tool message, then the user's text."""
    upstreams.openai.script(Reply("Sunny."))
    reply = await rt.chat(CONVERSATION, provider="openai", tools=[WEATHER], timeout=5)
    assert reply.message == "Sunny." and reply.finish_reason == "stop"
    assert body_of(upstreams, "openai")["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": json.dumps(PARIS)},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees"},
        {"role": "user", "content": "And tomorrow?"},
    ]


async def test_a_tool_result_reaches_anthropic_as_a_tool_result_block(
    rt: Runtime, upstreams: Upstreams
) -> None:
    """The call goes back as a tool_use block, the result as a tool_result block first in the user turn."""
    await rt.chat(CONVERSATION, provider="anthropic", tools=[WEATHER], timeout=5)
    assert body_of(upstreams, "anthropic")["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": PARIS},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18 degrees"},
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ]


async def test_a_tool_result_reaches_ollama_as_a_tool_message_naming_its_tool(
    rt: Runtime, upstreams: Upstreams
) -> None:
    """Ollama gets the call's arguments as an object, and the result as a tool message naming the tool."""
    await rt.chat(CONVERSATION, provider="ollama", tools=[WEATHER], timeout=5)
    assert body_of(upstreams, "ollama")["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": PARIS}}],
        },
        {"role": "tool", "content": "18 degrees", "tool_name": "get_weather"},
        {"role": "user", "content": "And tomorrow?"},
    ]


async def test_a_failed_tool_result_says_so_in_each_shape(
    rt: Runtime, upstreams: Upstreams
) -> None:
    """is_error is Anthropic's flag; OpenAI and Ollama, which have none, get the text marked Error:."""
    failed = (
        *CONVERSATION[:2],
        ChatMessage("user", blocks=(ToolResult("call_1", "no such city", is_error=True),)),
    )
    for provider in ("anthropic", "openai", "ollama"):
        await rt.chat(failed, provider=provider, tools=[WEATHER], timeout=5)
    anthropic = body_of(upstreams, "anthropic")["messages"][-1]["content"][0]
    assert anthropic["is_error"] is True and anthropic["content"] == "no such city"
    assert body_of(upstreams, "openai")["messages"][-1]["content"] == "Error: no such city"
    assert body_of(upstreams, "ollama")["messages"][-1]["content"] == "Error: no such city"


# -- images ------------------------------------------------------------------------


def picture(image: Image) -> ChatMessage:
    return ChatMessage("user", blocks=(Text("What is this?"), image))


async def test_images_reach_each_vision_model_in_its_shape(
    rt: Runtime, upstreams: Upstreams
) -> None:
    """A base64 image reaches OpenAI as a data URL part, Anthropic as a base64 source, Ollama in images."""
    image = Image(data=PIXEL, media_type="image/png")
    for provider in ("anthropic", "openai", "ollama"):
        await rt.chat([picture(image)], provider=provider, timeout=5)
    assert body_of(upstreams, "openai")["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
    ]
    assert body_of(upstreams, "anthropic")["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL}},
    ]
    assert body_of(upstreams, "ollama")["messages"][0] == {
        "role": "user",
        "content": "What is this?",
        "images": [PIXEL],
    }


async def test_an_image_url_reaches_openai_and_anthropic_as_a_url(
    rt: Runtime, upstreams: Upstreams
) -> None:
    """An image URL is an image_url part for OpenAI (with its detail) and a url source for Anthropic."""
    image = Image(url="https://example.com/cat.png", detail="low")
    await rt.chat([picture(image)], provider="openai", timeout=5)
    await rt.chat([picture(image)], provider="anthropic", timeout=5)
    assert body_of(upstreams, "openai")["messages"][0]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "https://example.com/cat.png", "detail": "low"},
    }
    assert body_of(upstreams, "anthropic")["messages"][0]["content"][1] == {
        "type": "image",
        "source": {"type": "url", "url": "https://example.com/cat.png"},
    }


async def test_an_image_for_a_text_only_model_is_refused_naming_it(
    rt: Runtime, upstreams: Upstreams
) -> None:
    """An image sent to a model without vision is a 400 on messages naming the model; nothing is sent."""
    image = Image(data=PIXEL, media_type="image/png")
    with pytest.raises(ValidationError) as caught:
        await rt.chat([picture(image)], model=GPT_OLD, timeout=5)
    assert caught.value.field == "messages"
    assert f"openai/{GPT_OLD}" in caught.value.message and "image input" in caught.value.message
    assert upstreams.openai.completions == []


async def test_an_image_url_is_not_sent_to_ollama(rt: Runtime, upstreams: Upstreams) -> None:
    """Ollama takes base64 images only: an image URL routed there is refused, never fetched by Rhetor."""
    with pytest.raises(ValidationError) as caught:
        await rt.chat([picture(Image(url="https://example.com/cat.png"))], provider="ollama")
    assert caught.value.field == "messages" and "images given by URL" in caught.value.message
    assert upstreams.ollama.completions == []


async def test_routing_skips_a_model_without_vision_and_says_so(
    rt: Runtime, upstreams: Upstreams
) -> None:
    """The chat task's text-only primary is skipped for an image; the routing explanation says why."""
    image = Image(data=PIXEL, media_type="image/png")
    reply = await rt.chat([picture(image)], task_type="chat", timeout=5)
    assert (reply.provider, reply.model) == ("ollama", LLAMA)
    assert f"skipped openai/{GPT_OLD} (no image input)" in reply.routing
    assert upstreams.openai.completions == []


async def test_tools_no_candidate_can_use_are_a_400_naming_the_field_and_models(
    tmp_path: Path, upstreams: Upstreams
) -> None:
    """When no model of the chain has tool use, the request is refused naming tools and every model tried."""
    tasks = json.loads(json.dumps(TASKS))
    for info in tasks["models"].values():
        info["capabilities"] = ["general"]
    (tmp_path / "plain.json").write_text(json.dumps(tasks))
    async with running(tmp_path, upstreams, task_config=tmp_path / "plain.json") as rt:
        with pytest.raises(ValidationError) as caught:
            await rt.message("Weather?", tools=[WEATHER], timeout=5)
    assert caught.value.field == "tools"
    for model in (f"anthropic/{HAIKU}", f"openai/{GPT_MINI}", f"ollama/{LLAMA}"):
        assert model in caught.value.message
    assert [up.completions for up in (upstreams.anthropic, upstreams.openai)] == [[], []]


async def test_a_prompt_longer_than_a_models_window_skips_it_or_is_refused(
    rt: Runtime, upstreams: Upstreams
) -> None:
    """A prompt over gpt-3.5's stated window (400 here) goes to the next model; named, it is refused."""
    long = " ".join(["word"] * 600)
    reply = await rt.message(long, task_type="chat", timeout=5)
    assert reply.provider == "ollama"
    assert f"skipped openai/{GPT_OLD} (400 tokens)" in reply.routing
    with pytest.raises(ValidationError) as caught:
        await rt.message(long, model=GPT_OLD, timeout=5)
    assert caught.value.field == "messages" and "context window" in caught.value.message
    assert upstreams.openai.completions == []


# -- structured output ---------------------------------------------------------------

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "degrees": {"type": "number"}},
    "required": ["city", "degrees"],
    "additionalProperties": False,
}
STRUCTURED = ResponseFormat("json_schema", SCHEMA, "weather", strict=True)


async def test_a_json_schema_reaches_openai_as_is(rt: Runtime, upstreams: Upstreams) -> None:
    """OpenAI gets response_format json_schema with its name, schema and strict flag unchanged."""
    await rt.message("Paris?", provider="openai", response_format=STRUCTURED, timeout=5)
    assert body_of(upstreams, "openai")["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "weather", "schema": SCHEMA, "strict": True},
    }


async def test_a_json_schema_reaches_anthropic_as_output_config(
    rt: Runtime, upstreams: Upstreams
) -> None:
    """Anthropic gets the schema as output_config.format (structured outputs), the system prompt untouched."""
    await rt.message(
        "Paris?",
        provider="anthropic",
        response_format=STRUCTURED,
        system_prompt="Be brief.",
        timeout=5,
    )
    body = body_of(upstreams, "anthropic")
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": SCHEMA}}
    assert body["system"] == "Be brief."


async def test_a_json_object_format_reaches_anthropic_as_an_instruction(
    rt: Runtime, upstreams: Upstreams
) -> None:
    """Anthropic has no JSON mode: json_object is an instruction after the system prompt."""
    await rt.message(
        "Paris?",
        provider="anthropic",
        response_format=ResponseFormat("json_object"),
        system_prompt="Be brief.",
        timeout=5,
    )
    body = body_of(upstreams, "anthropic")
    assert body["system"] == f"Be brief.\n\n{JSON_OBJECT_INSTRUCTION}"
    assert "output_config" not in body


async def test_response_formats_reach_ollama_as_format(rt: Runtime, upstreams: Upstreams) -> None:
    """Ollama's format is "json" for json_object and the schema itself for json_schema."""
    await rt.message("?", provider="ollama", response_format=ResponseFormat("json_object"))
    assert body_of(upstreams, "ollama")["format"] == "json"
    await rt.message("?", provider="ollama", response_format=STRUCTURED)
    assert body_of(upstreams, "ollama")["format"] == SCHEMA


# -- sampling, tags, passthrough -------------------------------------------------------


async def test_sampling_fields_reach_each_provider_under_its_names(
    rt: Runtime, upstreams: Upstreams
) -> None:
    """stop, top_p, seed, user and metadata: OpenAI's own names; Anthropic's stop_sequences and user_id; Ollama's options."""
    fields: dict[str, Any] = {
        "stop": ["END"],
        "top_p": 0.5,
        "seed": 7,
        "user": "user-1",
        "metadata": {"team": "a"},
        "timeout": 5,
    }
    for provider in ("anthropic", "openai", "ollama"):
        await rt.message("Hi", provider=provider, **fields)
    openai = body_of(upstreams, "openai")
    assert {k: openai[k] for k in ("stop", "top_p", "seed", "user", "metadata")} == {
        "stop": ["END"],
        "top_p": 0.5,
        "seed": 7,
        "user": "user-1",
        "metadata": {"team": "a"},
    }
    anthropic = body_of(upstreams, "anthropic")
    assert anthropic["stop_sequences"] == ["END"]
    assert anthropic["metadata"] == {"user_id": "user-1"}
    assert not {"top_p", "seed", "stop", "user"} & anthropic.keys()
    options = body_of(upstreams, "ollama")["options"]
    assert {k: options[k] for k in ("stop", "top_p", "seed")} == {
        "stop": ["END"],
        "top_p": 0.5,
        "seed": 7,
    }


async def test_an_openai_clients_unknown_parameters_reach_openai_untouched(
    rt: Runtime, upstreams: Upstreams
) -> None:
    """Parameters Rhetor does not translate pass to an upstream of the client's own family as they came."""
    extra = Passthrough("openai", {"logit_bias": {"50256": -100}, "store": True, "model": "x"})
    reply = await rt.message("Hi", passthrough=extra, timeout=5)
    assert reply.provider == "openai"
    body = body_of(upstreams, "openai")
    assert body["logit_bias"] == {"50256": -100} and body["store"] is True
    assert body["model"] == GPT_MINI  # Rhetor's own fields are never overridden
    assert f"skipped anthropic/{HAIKU} (no openai's own parameters)" in reply.routing


async def test_an_untranslatable_parameter_across_families_is_a_400_naming_it(
    rt: Runtime, upstreams: Upstreams
) -> None:
    """An OpenAI-only parameter sent to an Anthropic model is refused naming the parameter."""
    extra = Passthrough("openai", {"store": True, "logprobs": True})
    with pytest.raises(ValidationError) as caught:
        await rt.message("Hi", model=HAIKU, passthrough=extra, timeout=5)
    assert caught.value.field == "logprobs"
    assert upstreams.anthropic.completions == []


async def test_an_anthropic_clients_parameters_merge_into_what_rhetor_sets(
    rt: Runtime, upstreams: Upstreams
) -> None:
    """A relayed object Rhetor also sets (output_config) is merged, Rhetor's keys winning."""
    extra = Passthrough(
        "anthropic", {"output_config": {"effort": "low"}, "thinking": {"type": "adaptive"}}
    )
    await rt.message("Hi", model=HAIKU, response_format=STRUCTURED, passthrough=extra, timeout=5)
    body = body_of(upstreams, "anthropic")
    assert body["output_config"] == {
        "effort": "low",
        "format": {"type": "json_schema", "schema": SCHEMA},
    }
    assert body["thinking"] == {"type": "adaptive"}


async def test_harmless_parameters_are_left_behind_across_families(
    rt: Runtime, upstreams: Upstreams
) -> None:
    """Documented harmless parameters (store, service_tier) do not keep a request from Anthropic."""
    extra = Passthrough("openai", {"store": True, "service_tier": "auto"})
    reply = await rt.message("Hi", passthrough=extra, timeout=5)
    assert reply.provider == "anthropic"
    assert not {"store", "service_tier"} & body_of(upstreams, "anthropic").keys()


# -- usage and finish reasons ------------------------------------------------------------


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
@STREAMED
async def test_cached_and_reasoning_tokens_are_reported(
    rt: Runtime, upstreams: Upstreams, provider: str, streamed: bool
) -> None:
    """Cached prompt tokens and reasoning tokens the upstream reports reach the reply's usage."""
    upstreams.of(provider).script(
        Reply("ok", input_tokens=100, output_tokens=40, cached_tokens=64, reasoning_tokens=30)
    )
    if streamed:
        reply = (await read_all(rt.stream("Hi", provider=provider, timeout=5)))[-1].reply
    else:
        reply = await rt.message("Hi", provider=provider, timeout=5)
    assert reply is not None
    usage = reply.usage
    assert (usage.input_tokens, usage.output_tokens) == (100, 40)
    assert (usage.cached_input_tokens, usage.reasoning_tokens) == (64, 30)


@pytest.mark.parametrize(
    ("provider", "sent", "normalised"),
    [
        ("anthropic", "content_filter", "content_filter"),
        ("anthropic", "length", "length"),
        ("openai", "content_filter", "content_filter"),
        ("ollama", "length", "length"),
    ],
)
async def test_stop_reasons_are_normalised(
    rt: Runtime, upstreams: Upstreams, provider: str, sent: str, normalised: str
) -> None:
    """Anthropic's refusal and max_tokens, OpenAI's content_filter, Ollama's length: one vocabulary."""
    upstreams.of(provider).script(Reply("x", finish_reason=sent))
    reply = await rt.message("Hi", provider=provider, timeout=5)
    assert reply.finish_reason == normalised
