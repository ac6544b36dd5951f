"""
The OpenAI Responses API (rhetor/edge/_compat_responses.py), driven by the official ``openai`` SDK.

Rhetor runs as a real server on an ephemeral port with its OpenAI and Anthropic
providers talking to the fake upstreams over loopback; the SDK's
``client.responses.create`` (whole and ``stream=True``) and
``client.responses.stream`` are the clients, so every test crosses both wire
formats.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import openai
import pytest

import rhetor.runtime
from rhetor.routing._plan import TaskConfig
from tests.fakes import Call, Cut, Reply
from tests.fakes.anthropic import FakeAnthropic, fake_anthropic
from tests.fakes.openai import FakeOpenAI, fake_openai
from tests.helpers import ServerInfo, running_server, settings_for
from tests.test_compat_openai import reads_sdk_stream

HAIKU = "claude-haiku-5-5"
GPT = "gpt-4o-mini"
CAPABLE = ["general", "tools", "vision", "json_mode", "json_schema"]
TASKS = {
    "tasks": {"default": {"primary": GPT, "fallbacks": [HAIKU]}},
    "models": {
        HAIKU: {"provider": "anthropic", "tier": "low", "capabilities": CAPABLE},
        GPT: {"provider": "openai", "tier": "low", "capabilities": CAPABLE},
    },
}
MODEL_OF = {"openai": GPT, "anthropic": HAIKU}
PROVIDERS = pytest.mark.parametrize("provider", ["openai", "anthropic"])
WEATHER: dict[str, Any] = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather now in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
    "strict": False,
}
PARIS = {"city": "Paris"}


@attrs.frozen
class Served:
    openai: FakeOpenAI
    anthropic: FakeAnthropic
    server: ServerInfo
    client: openai.AsyncOpenAI

    def fake(self, provider: str) -> FakeOpenAI | FakeAnthropic:
        fake: FakeOpenAI | FakeAnthropic = getattr(self, provider)
        return fake

    def sent(self, provider: str) -> dict[str, Any]:
        """The JSON body of the last completion request ``provider``'s fake received."""
        body: dict[str, Any] = self.fake(provider).completions[-1].json
        return body


@asynccontextmanager
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    """Both fakes, Rhetor relaying to them, and an openai SDK client pointed at Rhetor."""
    config = tmp_path / "tasks.json"
    config.write_text(json.dumps(TASKS))
    async with fake_openai() as oai, fake_anthropic() as ant:
        settings = settings_for(
            tmp_path,
            openai_api_key="sk-upstream",
            openai_base_url=oai.base_url,
            anthropic_api_key="sk-ant-upstream",
            anthropic_base_url=ant.base_url,
            simulated="never",
            task_config=config,
        )
        every = rhetor.runtime.default_backends(settings, TaskConfig.load(config))
        chosen = {name: every[name] for name in ("openai", "anthropic")}
        async with (
            running_server(settings, backends=chosen, health_interval=0) as server,
            openai.AsyncOpenAI(
                base_url=f"{server.base_url}/v1",
                api_key="any",
                max_retries=0,
                timeout=5,
                http_client=openai.DefaultAsyncHttpxClient(verify=False),
            ) as client,
        ):
            yield Served(oai, ant, server, client)


# -- whole replies ------------------------------------------------------------------


@PROVIDERS
async def test_a_text_reply_is_a_completed_response_with_usage(
    tmp_path: Path, provider: str
) -> None:
    """A string input gets a completed response: one message with output_text, and the usage."""
    async with served(tmp_path) as s:
        s.fake(provider).script(Reply("Hi there", input_tokens=7, output_tokens=2))
        response = await s.client.responses.create(model=MODEL_OF[provider], input="Hello?")
    assert response.id.startswith("resp_")
    assert response.object == "response" and response.status == "completed"
    assert response.output_text == "Hi there"
    [item] = response.output
    assert item.type == "message" and item.role == "assistant"
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (7, 2)
    assert response.usage.total_tokens == 9
    assert response.model == MODEL_OF[provider]


@PROVIDERS
async def test_a_function_tool_call_comes_back_as_a_function_call_item(
    tmp_path: Path, provider: str
) -> None:
    """A function tool reaches each upstream and the model's call is a function_call output item."""
    async with served(tmp_path) as s:
        s.fake(provider).script(
            Reply("Let me look.", tool_calls=(Call("get_weather", PARIS, id="call_1"),))
        )
        response = await s.client.responses.create(
            model=MODEL_OF[provider], input="Weather in Paris?", tools=[WEATHER]
        )
        sent = s.sent(provider)
    message, call = response.output
    assert message.type == "message" and response.output_text == "Let me look."
    assert call.type == "function_call"
    assert (call.call_id, call.name, json.loads(call.arguments)) == ("call_1", "get_weather", PARIS)
    names = (
        [t["function"]["name"] for t in sent["tools"]]
        if provider == "openai"
        else [t["name"] for t in sent["tools"]]
    )
    assert names == ["get_weather"]


@PROVIDERS
async def test_a_tool_conversation_sends_calls_and_outputs_to_each_upstream(
    tmp_path: Path, provider: str
) -> None:
    """function_call and function_call_output items reach each upstream as its call and result."""
    async with served(tmp_path) as s:
        s.fake(provider).script(Reply("It is sunny in Paris."))
        response = await s.client.responses.create(
            model=MODEL_OF[provider],
            instructions="Be brief.",
            input=[
                {"role": "user", "content": "Weather in Paris?"},
                {
                    "type": "function_call",
                    "call_id": "call_1",
                    "name": "get_weather",
                    "arguments": '{"city":"Paris"}',
                },
                {"type": "function_call_output", "call_id": "call_1", "output": "sunny, 21 C"},
            ],
            tools=[WEATHER],
        )
        sent = s.sent(provider)
    assert response.output_text == "It is sunny in Paris."
    if provider == "openai":
        roles = [m["role"] for m in sent["messages"]]
        assert roles == ["system", "user", "assistant", "tool"]
        assert sent["messages"][2]["tool_calls"][0]["id"] == "call_1"
        assert sent["messages"][3] == {
            "role": "tool",
            "tool_call_id": "call_1",
            "content": "sunny, 21 C",
        }
    else:
        assert "Be brief." in json.dumps(sent["system"])
        assistant, result = sent["messages"][1], sent["messages"][2]
        assert assistant["content"][0]["type"] == "tool_use"
        assert assistant["content"][0]["input"] == PARIS
        assert result["content"][0]["type"] == "tool_result"
        assert result["content"][0]["tool_use_id"] == "call_1"


async def test_sampling_limits_choice_and_json_schema_reach_openai(tmp_path: Path) -> None:
    """max_output_tokens, temperature, top_p, a named tool_choice and text.format reach OpenAI."""
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    async with served(tmp_path) as s:
        s.openai.script(Reply('{"ok":true}'))
        response = await s.client.responses.create(
            model=GPT,
            input="Is it ok?",
            max_output_tokens=50,
            temperature=0.2,
            top_p=0.5,
            tools=[WEATHER],
            tool_choice={"type": "function", "name": "get_weather"},
            text={"format": {"type": "json_schema", "name": "verdict", "schema": schema}},
        )
        sent = s.sent("openai")
    assert json.loads(response.output_text) == {"ok": True}
    assert 50 in (sent.get("max_tokens"), sent.get("max_completion_tokens"))
    assert (sent["temperature"], sent["top_p"]) == (pytest.approx(0.2), pytest.approx(0.5))
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["schema"] == schema
    assert response.text is not None and response.text.format is not None
    assert response.text.format.type == "json_schema"


async def test_an_input_image_reaches_anthropic_as_base64(tmp_path: Path) -> None:
    """An input_image part with a data URL reaches Anthropic as a base64 image block."""
    pixel = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=="
    async with served(tmp_path) as s:
        s.anthropic.script(Reply("A pixel."))
        response = await s.client.responses.create(
            model=HAIKU,
            input=[
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "What is this?"},
                        {
                            "type": "input_image",
                            "image_url": f"data:image/png;base64,{pixel}",
                            "detail": "auto",
                        },
                    ],
                }
            ],
        )
        sent = s.sent("anthropic")
    assert response.output_text == "A pixel."
    image = next(b for b in sent["messages"][-1]["content"] if b["type"] == "image")
    assert image["source"] == {"type": "base64", "media_type": "image/png", "data": pixel}


async def test_an_input_file_reaches_openai_as_a_chat_file_part(tmp_path: Path) -> None:
    """input_file becomes the Chat Completions file part, relayed to OpenAI-compatible models only."""
    data = "data:application/pdf;base64,JVBERi0xLjQK"
    part = {"type": "input_file", "filename": "a.pdf", "file_data": data}
    turn = [{"role": "user", "content": [{"type": "input_text", "text": "Sum up."}, part]}]
    async with served(tmp_path) as s:
        s.openai.script(Reply("Short."))
        response = await s.client.responses.create(model=GPT, input=turn)
        sent = s.sent("openai")
        with pytest.raises(openai.BadRequestError) as caught:
            await s.client.responses.create(model=HAIKU, input=turn)
        with pytest.raises(openai.BadRequestError) as unsupported:
            await s.client.responses.create(
                model=GPT,
                input=[{"role": "user", "content": [{**part, "file_url": "https://x/a.pdf"}]}],
            )
    assert response.output_text == "Short."
    assert sent["messages"][-1]["content"] == [
        {"type": "text", "text": "Sum up."},
        {"type": "file", "file": {"file_data": data, "filename": "a.pdf"}},
    ]
    assert "messages" in str(caught.value)
    assert "file_url" in str(unsupported.value)


async def test_a_reply_cut_at_its_limit_is_incomplete(tmp_path: Path) -> None:
    """A reply that hit max_output_tokens is status incomplete, reason max_output_tokens."""
    async with served(tmp_path) as s:
        s.openai.script(Reply("Hi", finish_reason="length"))
        response = await s.client.responses.create(model=GPT, input="Hello?", max_output_tokens=1)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"


async def test_a_context_header_keeps_the_history_between_responses(tmp_path: Path) -> None:
    """With X-Rhetor-Context, the second response's upstream call carries the first exchange."""
    headers = {"X-Rhetor-Context": "responses-ctx"}
    async with served(tmp_path) as s:
        s.openai.script(Reply("Nice to meet you, Ada."), Reply("Your name is Ada."))
        await s.client.responses.create(model=GPT, input="I am Ada.", extra_headers=headers)
        await s.client.responses.create(model=GPT, input="Who am I?", extra_headers=headers)
        sent = s.sent("openai")
    contents = [m["content"] for m in sent["messages"]]
    assert contents[-3:] == ["I am Ada.", "Nice to meet you, Ada.", "Who am I?"]


# -- streams --------------------------------------------------------------------------


@PROVIDERS
@reads_sdk_stream
async def test_a_streamed_tool_call_is_the_sdks_event_sequence(
    tmp_path: Path, provider: str
) -> None:
    """stream=True gives the SDK's typed events in order, text then argument deltas, and completed."""
    async with served(tmp_path) as s:
        s.fake(provider).script(
            Reply("Let me look.", tool_calls=(Call("get_weather", PARIS, id="call_1"),))
        )
        stream = await s.client.responses.create(
            model=MODEL_OF[provider], input="Weather?", tools=[WEATHER], stream=True
        )
        events = [e async for e in stream]
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert kinds.index("response.output_text.delta") < kinds.index(
        "response.function_call_arguments.delta"
    )
    for kind in (
        "response.content_part.added",
        "response.output_text.done",
        "response.content_part.done",
        "response.function_call_arguments.done",
    ):
        assert kind in kinds
    assert (
        kinds.count("response.output_item.added") == kinds.count("response.output_item.done") == 2
    )
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    arguments = "".join(
        e.delta for e in events if e.type == "response.function_call_arguments.delta"
    )
    assert text == "Let me look." and json.loads(arguments) == PARIS
    final = events[-1].response
    assert final.status == "completed" and final.usage is not None
    call = final.output[1]
    assert call.type == "function_call" and call.call_id == "call_1"
    assert json.loads(call.arguments) == PARIS


@reads_sdk_stream
async def test_the_sdks_stream_helper_assembles_the_final_response(tmp_path: Path) -> None:
    """client.responses.stream accumulates the events into the same response as a whole reply."""
    async with served(tmp_path) as s:
        s.openai.script(Reply("Sunny.", tool_calls=(Call("get_weather", PARIS, id="call_9"),)))
        async with s.client.responses.stream(
            model=GPT, input="Weather?", tools=[WEATHER]
        ) as stream:
            async for _ in stream:
                pass
            final = await stream.get_final_response()
    assert final.output_text == "Sunny."
    call = final.output[1]
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == PARIS


@reads_sdk_stream
async def test_a_streamed_text_reply_ends_with_the_whole_text(tmp_path: Path) -> None:
    """A text stream's deltas add up to output_text.done's text and the completed response's."""
    async with served(tmp_path) as s:
        s.openai.script(Reply("one two three"))
        stream = await s.client.responses.create(model=GPT, input="Count.", stream=True)
        events = [e async for e in stream]
    done = next(e for e in events if e.type == "response.output_text.done")
    assert done.text == "one two three"
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "one two three"


@reads_sdk_stream
async def test_an_upstream_broken_mid_stream_ends_with_an_error_event(tmp_path: Path) -> None:
    """After the first events, a failure is one typed error event, numbered after the rest, and last."""
    async with served(tmp_path) as s:
        s.openai.script(Cut(after=1))
        stream = await s.client.responses.create(model=GPT, input="Hello?", stream=True)
        events = [e async for e in stream]
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert "response.output_text.delta" in kinds
    assert kinds[-1] == "error" and "response.completed" not in kinds
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].message


# -- refusals -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"background": True}, "background"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"reasoning": {"effort": "high"}}, "reasoning"),
        ({"input": [{"type": "reasoning", "summary": []}]}, "input[0].type"),
        ({"input": [{"type": "input_file"}]}, "input[0].type"),
        ({"text": {"format": {"type": "xml"}}}, "text.format.type"),
        ({"tool_choice": "sometimes"}, "tool_choice"),
    ],
)
async def test_what_rhetor_cannot_honour_is_a_400_naming_it(
    tmp_path: Path, extra: dict[str, Any], param: str
) -> None:
    """Stored responses, built-in tools and bad items are 400s naming the field."""
    async with served(tmp_path) as s:
        with pytest.raises(openai.BadRequestError) as caught:
            await s.client.responses.create(model=GPT, input="Hello?", extra_body=extra)
        calls = len(s.openai.completions)
    error = caught.value.body
    assert isinstance(error, dict) and error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert calls == 0


async def test_unknown_parameters_reach_an_openai_upstream_untouched(tmp_path: Path) -> None:
    """Parameters Rhetor does not read are relayed as sent to an OpenAI upstream, as for Chat Completions."""
    extra = {"logit_bias": {"50256": -100}, "made_up": {"deep": [1, "two"]}}
    async with served(tmp_path) as s:
        s.openai.script(Reply("Hi"))
        response = await s.client.responses.create(model=GPT, input="Hello?", extra_body=extra)
        sent = s.sent("openai")
    assert response.output_text == "Hi"
    assert sent["logit_bias"] == extra["logit_bias"] and sent["made_up"] == extra["made_up"]
    assert sent["messages"] == [{"role": "user", "content": "Hello?"}]


async def test_unknown_parameters_keep_the_request_from_other_families(tmp_path: Path) -> None:
    """To Anthropic an unknown parameter is a 400 naming it and the model; a harmless one is left behind."""
    async with served(tmp_path) as s:
        with pytest.raises(openai.BadRequestError) as caught:
            await s.client.responses.create(model=HAIKU, input="Hello?", extra_body={"made_up": 1})
        refused_calls = len(s.anthropic.completions)
        s.anthropic.script(Reply("Hi"))
        response = await s.client.responses.create(
            model=HAIKU, input="Hello?", extra_body={"frequency_penalty": 0.5}
        )
        sent = s.sent("anthropic")
    assert caught.value.param == "made_up" and f"anthropic/{HAIKU}" in caught.value.message
    assert refused_calls == 0
    assert response.output_text == "Hi" and "frequency_penalty" not in sent


async def test_harmless_parameters_are_accepted(tmp_path: Path) -> None:
    """store, service_tier, truncation and the defaults of refused fields change nothing."""
    async with served(tmp_path) as s:
        s.openai.script(Reply("Hi"))
        response = await s.client.responses.create(
            model=GPT,
            input="Hello?",
            store=False,
            service_tier="auto",
            truncation="disabled",
            background=False,
            include=[],
        )
    assert response.output_text == "Hi"


async def test_an_unknown_model_alias_is_openais_404(tmp_path: Path) -> None:
    """A rhetor/ alias no task has is a NotFoundError in OpenAI's shape."""
    async with served(tmp_path) as s:
        with pytest.raises(openai.NotFoundError) as caught:
            await s.client.responses.create(model="rhetor/nothing", input="Hello?")
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "model"


async def test_a_body_of_the_wrong_shape_is_a_400(tmp_path: Path) -> None:
    """A missing input and a non-object body are 400s in OpenAI's error shape."""
    async with served(tmp_path) as s, httpx.AsyncClient(base_url=s.server.base_url) as http:
        missing = await http.post("/v1/responses", json={"model": GPT})
        wrong = await http.post("/v1/responses", json=["no"])
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "input"
    assert wrong.status_code == 400 and "error" in wrong.json()
