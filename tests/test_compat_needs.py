"""
Content a provider's wire format cannot carry is refused before any model is tried.

An image inside a tool result cannot reach OpenAI (its ``tool`` messages carry
text only), and a tool call whose arguments are not a JSON object cannot reach
Anthropic or Ollama (their calls' arguments are objects). The Router counts both
among a request's needs (``rhetor.routing._needs``), so such a request skips the
models that cannot take it, and with none left is a 400 naming ``messages`` and
the models tried, in each client's error shape, rather than a provider failure.
The official SDKs are the clients of a real server over loopback, relaying to the
fake upstreams (the stack of ``tests.test_compat_tools``).
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pytest

from rhetor._content import Image, Text, ToolCall, ToolResult
from rhetor._types import ChatMessage, LLMRequest
from rhetor.routing._needs import lacking, needs_of
from tests.test_compat_tools import (
    GPT_MINI,
    HAIKU,
    LLAMA,
    PIXEL,
    Stack,
    ask_anthropic,
    ask_openai,
)

WEATHER_TOOL: Any = {
    "name": "get_weather",
    "description": "A picture of the sky in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
PICTURED_RESULT: list[Any] = [
    {"role": "user", "content": "Show me the sky in Paris."},
    {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "P"}}
        ],
    },
    {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "toolu_1",
                "content": [
                    {"type": "text", "text": "the sky:"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PIXEL},
                    },
                ],
            }
        ],
    },
]


def loose_call(arguments: str) -> list[Any]:
    """An openai-SDK conversation whose assistant call has ``arguments`` as its text."""
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": arguments}}
    return [
        {"role": "user", "content": "Go."},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "done"},
    ]


def test_tool_result_images_and_loose_arguments_are_needs_of_the_wire_format() -> None:
    """Only OpenAI lacks images in tool results; only OpenAI has calls whose arguments are not an object."""
    pictured = ToolResult("c", (Text("sky"), Image(data=PIXEL, media_type="image/png")))
    messages = (
        ChatMessage("assistant", blocks=(ToolCall("c", "f", "[1, 2]"),)),
        ChatMessage("user", blocks=(pictured,)),
    )
    needs = {need.capability: need for need in needs_of(LLMRequest(message="go"), messages)}
    image, loose = needs["tool_result_image"], needs["loose_tool_arguments"]
    assert image.field == loose.field == "messages"
    assert lacking((image,), "openai", "openai", None) == image
    assert lacking((image,), "anthropic", "anthropic", None) is None
    assert lacking((image,), "ollama", "ollama", None) is None
    assert lacking((loose,), "openai", "openai", None) is None
    assert lacking((loose,), "anthropic", "anthropic", None) == loose
    assert lacking((loose,), "ollama", "ollama", None) == loose
    # Arguments that parse as an object, or a result of text only, need nothing.
    plain = (
        ChatMessage("assistant", blocks=(ToolCall("c", "f", '{"a": 1}'),)),
        ChatMessage("user", blocks=(ToolResult("c", "ok"),)),
    )
    assert [n.capability for n in needs_of(LLMRequest(message="go"), plain)] == ["tools"]


async def test_an_image_in_a_tool_result_for_openai_is_the_anthropic_clients_400(
    stack: Stack,
) -> None:
    """The anthropic SDK's tool result with an image, for an OpenAI model: a 400 naming messages and the model."""
    with pytest.raises(anthropic.BadRequestError) as caught:
        await ask_anthropic(stack.ant, GPT_MINI, PICTURED_RESULT, False, tools=[WEATHER_TOOL])
    error = caught.value.body["error"]  # type: ignore[index]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("messages: ")
    assert "images in tool results" in error["message"]
    assert f"openai/{GPT_MINI}" in error["message"]
    assert stack.openai.completions == []


async def test_an_image_in_a_tool_result_reaches_anthropic_and_ollama(stack: Stack) -> None:
    """The same conversation is carried to the providers whose tool results hold images."""
    await ask_anthropic(stack.ant, HAIKU, PICTURED_RESULT, False, tools=[WEATHER_TOOL])
    [result] = stack.sent("anthropic")["messages"][-1]["content"]
    assert result["type"] == "tool_result" and result["content"][1]["type"] == "image"
    await ask_anthropic(stack.ant, LLAMA, PICTURED_RESULT, False, tools=[WEATHER_TOOL])
    tool = stack.sent("ollama")["messages"][-1]
    assert tool["role"] == "tool" and tool["images"] == [PIXEL]


async def test_an_image_in_a_function_output_for_openai_is_the_responses_clients_400(
    stack: Stack,
) -> None:
    """A Responses function_call_output holding an input_image, for an OpenAI model: BadRequestError on messages."""
    items: Any = [
        {"role": "user", "content": "Show me the sky."},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"},
        {
            "type": "function_call_output",
            "call_id": "call_1",
            "output": [
                {"type": "input_image", "image_url": f"data:image/png;base64,{PIXEL}"},
            ],
        },
    ]
    with pytest.raises(openai.BadRequestError) as caught:
        await stack.oai.responses.create(model=GPT_MINI, input=items)
    assert caught.value.status_code == 400 and caught.value.param == "messages"
    assert "images in tool results" in caught.value.message
    assert f"openai/{GPT_MINI}" in caught.value.message
    assert stack.openai.completions == []


@pytest.mark.parametrize("model", [HAIKU, LLAMA])
async def test_loose_tool_arguments_for_anthropic_or_ollama_are_the_openai_clients_400(
    stack: Stack, model: str
) -> None:
    """A call whose arguments are not a JSON object, for a model whose calls take objects: a 400, nothing sent."""
    with pytest.raises(openai.BadRequestError) as caught:
        await ask_openai(stack.oai, model, loose_call("[1, 2]"), False)
    assert caught.value.status_code == 400 and caught.value.param == "messages"
    assert "not a JSON object" in caught.value.message and model in caught.value.message
    assert stack.anthropic.completions == [] and stack.ollama.completions == []


async def test_loose_tool_arguments_reach_openai_as_written(stack: Stack) -> None:
    """OpenAI keeps a call's arguments as text, so it gets them exactly as the client wrote them."""
    await ask_openai(stack.oai, GPT_MINI, loose_call("not json"), False)
    [call] = stack.sent("openai")["messages"][1]["tool_calls"]
    assert call["function"]["arguments"] == "not json"


async def test_a_routed_request_skips_the_model_that_cannot_carry_it(stack: Stack) -> None:
    """Through task routing, the models lacking a wire feature are skipped and a capable one answers."""
    completion = await stack.oai.chat.completions.with_raw_response.create(
        model="rhetor/default", messages=loose_call("[1, 2]")
    )
    parsed = completion.parse()
    # The primary (Anthropic) is skipped; OpenAI, the first fallback, answers.
    assert completion.headers["X-Rhetor-Provider"] == "openai"
    assert parsed.choices[0].message.content is not None
    assert stack.anthropic.completions == []
    assert json.loads(
        stack.sent("openai")["messages"][1]["tool_calls"][0]["function"]["arguments"]
    ) == [1, 2]
