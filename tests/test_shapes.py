"""
The API families' shapes <-> the internal model (rhetor.providers._openai_shapes and
_anthropic_shapes): round trips (hypothesis), a client's JSON read field by field with
errors naming the field, and replies written as each official SDK parses them.
"""

from __future__ import annotations

import base64
import json
import string
from typing import Any

import anthropic
import anthropic.types
import openai.types.chat
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rhetor import ValidationError
from rhetor._content import (
    Image,
    Passthrough,
    ResponseFormat,
    Text,
    Thinking,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolResult,
    Verbatim,
)
from rhetor._types import ChatMessage, Chunk, LLMRequest, Reply, Usage
from rhetor.providers._anthropic_replies import AnthropicEvents, message_to_anthropic
from rhetor.providers._anthropic_shapes import (
    fields_from_anthropic,
    messages_from_anthropic,
    messages_to_anthropic,
    response_format_from_anthropic,
    response_format_to_anthropic,
    system_from_anthropic,
    tool_choice_from_anthropic,
    tool_choice_to_anthropic,
    tools_from_anthropic,
    tools_to_anthropic,
)
from rhetor.providers._openai_replies import OpenAIChunks, completion_to_openai
from rhetor.providers._openai_shapes import (
    fields_from_openai,
    messages_from_openai,
    messages_to_openai,
    response_format_from_openai,
    response_format_to_openai,
    stop_from_openai,
    tool_choice_from_openai,
    tool_choice_to_openai,
    tools_from_openai,
    tools_to_openai,
)
from rhetor.providers._shapes import Untranslatable, compact_json
from tests.fakes import Recorded
from tests.fakes.anthropic import fake_anthropic
from tests.fakes.reference import KEY, SDK_STREAM_WARNINGS

# -- strategies: canonical internal conversations ---------------------------------------

# Text with something besides whitespace: Anthropic's shape drops blank turns (its API refuses them).
texts = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=20).filter(
    str.strip
)
names = st.from_regex(r"[A-Za-z0-9_-]{1,16}", fullmatch=True)
ids = st.from_regex(r"(call|toolu)_[A-Za-z0-9]{1,12}", fullmatch=True)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
arguments = st.dictionaries(texts, json_values, max_size=4).map(compact_json)


@st.composite
def images(draw: st.DrawFn, *, detail: bool) -> Image:
    level = draw(st.sampled_from([None, "low", "high", "auto"])) if detail else None
    if draw(st.booleans()):
        path = draw(st.text(string.ascii_lowercase, min_size=1, max_size=8))
        return Image(url=f"https://example.com/{path}.png", detail=level)
    data = base64.b64encode(draw(st.binary(min_size=1, max_size=24))).decode()
    media = draw(st.sampled_from(["image/png", "image/jpeg", "image/gif", "image/webp"]))
    return Image(data=data, media_type=media, detail=level)


@st.composite
def results(draw: st.DrawFn, *, images_inside: bool, errors: bool) -> ToolResult:
    parts: list[Text | Image] = []
    if draw(st.booleans()):
        parts.append(Text(draw(texts)))
    if images_inside and draw(st.booleans()):
        parts.append(draw(images(detail=False)))
    return ToolResult(draw(ids), parts, draw(st.booleans()) if errors else False)


@st.composite
def verbatim_blocks(draw: st.DrawFn, *, openai: bool) -> Verbatim:
    """A block relayed as it came: an OpenAI file part, or an Anthropic document."""
    if openai:
        data = base64.b64encode(draw(st.binary(min_size=1, max_size=24))).decode()
        file = {
            "filename": f"{draw(names)}.pdf",
            "file_data": f"data:application/pdf;base64,{data}",
        }
        return Verbatim("openai", {"type": "file", "file": file})
    source = {"type": "text", "media_type": "text/plain", "data": draw(texts)}
    return Verbatim("anthropic", {"type": "document", "source": source, "title": draw(texts)})


@st.composite
def user_turns(draw: st.DrawFn, *, openai: bool, rich: bool = False) -> ChatMessage:
    found = draw(st.lists(results(images_inside=not openai, errors=not openai), max_size=2))
    rest: list[Text | Image | Verbatim] = []
    if draw(st.booleans()) or not found:
        rest.append(Text(draw(texts)))
    rest += draw(st.lists(images(detail=openai), max_size=2))
    if rich:
        rest += draw(st.lists(verbatim_blocks(openai=openai), max_size=2))
    return ChatMessage("user", blocks=(*found, *rest))


thoughts = st.builds(Thinking, texts, texts) | st.builds(Thinking, redacted=texts)


@st.composite
def assistant_turns(draw: st.DrawFn, *, thinking: bool = False) -> ChatMessage:
    calls = draw(st.lists(st.builds(ToolCall, ids, names, arguments), max_size=2))
    text = draw(texts) if draw(st.booleans()) or not calls else ""
    thought = draw(st.lists(thoughts, max_size=2)) if thinking else []
    return ChatMessage("assistant", blocks=(*thought, Text(text), *calls))


@st.composite
def conversations(draw: st.DrawFn, *, openai: bool, rich: bool = False) -> tuple[ChatMessage, ...]:
    """
    Turns alternating from the user's, each non-empty, results first in a user turn;
    ``rich`` adds what only the family itself carries (its verbatim blocks, and for
    Anthropic thinking).
    """
    count = draw(st.integers(1, 5))
    turns = []
    for i in range(count):
        if i % 2 == 0:
            turns.append(draw(user_turns(openai=openai, rich=rich)))
        else:
            turns.append(draw(assistant_turns(thinking=rich and not openai)))
    return tuple(turns)


tools = st.builds(
    Tool,
    names,
    st.none() | texts,
    st.fixed_dictionaries({"type": st.just("object"), "properties": st.just({})}),
)


# -- round trips ------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(conversations(openai=True, rich=True))
def test_openai_messages_round_trip(turns: tuple[ChatMessage, ...]) -> None:
    """Internal turns written as Chat Completions messages read back as the same turns."""
    written = messages_to_openai(turns)
    assert messages_from_openai(json.loads(json.dumps(written))) == turns


@settings(max_examples=200, deadline=None)
@given(conversations(openai=False, rich=True))
def test_anthropic_messages_round_trip(turns: tuple[ChatMessage, ...]) -> None:
    """Internal turns written as Messages API messages read back as the same turns."""
    written = messages_to_anthropic(turns)
    assert messages_from_anthropic(json.loads(json.dumps(written))) == turns


@settings(max_examples=100, deadline=None)
@given(conversations(openai=True))
def test_openai_to_anthropic_and_back_keeps_the_conversation(
    turns: tuple[ChatMessage, ...],
) -> None:
    """An OpenAI client's conversation crosses to Anthropic's shape and back unchanged (no image detail)."""
    turns = tuple(
        ChatMessage(
            t.role,
            t.content if not t.blocks else "",
            tuple(
                Image(b.url, b.data, b.media_type) if isinstance(b, Image) else b for b in t.blocks
            ),
        )
        for t in turns
    )
    openai_json = json.loads(json.dumps(messages_to_openai(turns)))
    anthropic_json = json.loads(
        json.dumps(messages_to_anthropic(messages_from_openai(openai_json)))
    )
    assert messages_to_openai(messages_from_anthropic(anthropic_json)) == openai_json


@given(st.lists(tools, max_size=3, unique_by=lambda t: t.name))
def test_tools_round_trip_through_both_families(offered: list[Tool]) -> None:
    """Tool definitions read back from each family's shape as they were written."""
    assert list(tools_from_openai(tools_to_openai(offered))) == offered
    assert list(tools_from_anthropic(tools_to_anthropic(offered))) == offered


@pytest.mark.parametrize(
    "choice",
    [
        ToolChoice("auto"),
        ToolChoice("none"),
        ToolChoice("required"),
        ToolChoice("tool", "get_weather"),
        ToolChoice("required", parallel=False),
        ToolChoice("tool", "get_weather", parallel=True),
    ],
)
def test_tool_choices_round_trip_through_both_families(choice: ToolChoice) -> None:
    """auto, none, required (Anthropic's any) and a named tool, with parallel calls, both ways."""
    fields = tool_choice_to_openai(choice)
    assert (
        tool_choice_from_openai(fields.get("tool_choice"), fields.get("parallel_tool_calls"))
        == choice
    )
    back = tool_choice_from_anthropic(tool_choice_to_anthropic(choice))
    assert back == (ToolChoice("none") if choice.mode == "none" else choice)


def test_response_formats_cross_families() -> None:
    """json_schema reads back from OpenAI whole; Anthropic's output_config keeps the schema, strict."""
    fmt = ResponseFormat("json_schema", {"type": "object"}, "answer", "An answer.", True)
    assert response_format_from_openai(response_format_to_openai(fmt)) == fmt
    fields, instruction = response_format_to_anthropic(fmt)
    assert instruction is None
    assert response_format_from_anthropic(fields["output_config"]) == ResponseFormat(
        "json_schema", {"type": "object"}, strict=True
    )
    assert response_format_from_openai({"type": "json_object"}) == ResponseFormat("json_object")
    assert response_format_to_anthropic(ResponseFormat("json_object"))[0] == {}


# -- reading a client's JSON ---------------------------------------------------------------


def test_openai_tool_messages_and_a_following_user_message_are_one_user_turn() -> None:
    """Consecutive tool messages, and the user message after them, are one user turn, results first."""
    turns = messages_from_openai(
        [
            {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "a", "type": "function", "function": {"name": "w", "arguments": "{}"}},
                    {"id": "b", "type": "function", "function": {"name": "w", "arguments": "{}"}},
                ],
            },
            {"role": "tool", "tool_call_id": "a", "content": "sun"},
            {"role": "tool", "tool_call_id": "b", "content": [{"type": "text", "text": "rain"}]},
            {"role": "user", "content": "Thanks."},
        ]
    )
    assert turns == (
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "Weather?"),
        ChatMessage("assistant", blocks=(ToolCall("a", "w"), ToolCall("b", "w"))),
        ChatMessage(
            "user", blocks=(ToolResult("a", "sun"), ToolResult("b", "rain"), Text("Thanks."))
        ),
    )


def test_a_data_url_image_becomes_base64_data() -> None:
    """An image_url part with a data: URL is base64 data with its media type; its detail is kept."""
    [turn] = messages_from_openai(
        [
            {
                "role": "user",
                "content": [
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"},
                    }
                ],
            }
        ]
    )
    assert turn.blocks == (Image(data="AAAA", media_type="image/png", detail="low"),)


@pytest.mark.parametrize(
    ("messages", "field"),
    [
        ([{"role": "function", "content": "x"}], "messages[0].role"),
        ([{"role": "user", "content": [{"type": "video_url"}]}], "messages[0].content[0].type"),
        ([{"role": "user", "content": [{"type": "text"}]}], "messages[0].content[0].text"),
        (
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "data:text/plain;base64,AAAA"}}
                    ],
                }
            ],
            "messages[0].content[0].image_url.url",
        ),
        (
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@"}}
                    ],
                }
            ],
            "messages[0].content[0].image_url.url",
        ),
        ([{"role": "tool", "content": "x"}], "messages[0].tool_call_id"),
        (
            [{"role": "assistant", "tool_calls": [{"id": "a", "type": "custom", "custom": {}}]}],
            "messages[0].tool_calls[0].type",
        ),
        (
            [{"role": "assistant", "tool_calls": [{"id": "a", "function": {"arguments": "{}"}}]}],
            "messages[0].tool_calls[0].function.name",
        ),
        (
            [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            "messages[0].content[0].type",
        ),
        ("not a list", "messages"),
        ([5], "messages[0]"),
    ],
)
def test_bad_openai_messages_name_their_field(messages: Any, field: str) -> None:
    """Each bad part of an OpenAI conversation is a ValidationError naming its exact path."""
    with pytest.raises(ValidationError) as caught:
        messages_from_openai(messages)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("messages", "field"),
    [
        ([{"role": "system", "content": "x"}], "messages[0].role"),
        (
            [{"role": "user", "content": [{"type": "container_upload"}]}],
            "messages[0].content[0].type",
        ),
        ([{"role": "user", "content": [{"type": "document"}]}], "messages[0].content[0].source"),
        (
            [{"role": "user", "content": [{"type": "document", "source": {"type": "zip"}}]}],
            "messages[0].content[0].source.type",
        ),
        (
            [{"role": "user", "content": [{"type": "document", "source": {"type": "url"}}]}],
            "messages[0].content[0].source.type",
        ),
        (
            [{"role": "user", "content": [{"type": "document", "source": {"type": "base64"}}]}],
            "messages[0].content[0].source.media_type",
        ),
        (
            [{"role": "user", "content": [{"type": "tool_use", "id": "a", "name": "b"}]}],
            "messages[0].content[0].type",
        ),
        ([{"role": "assistant", "content": [{"type": "image"}]}], "messages[0].content[0].type"),
        (
            [
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "a", "name": "b", "input": [1]}],
                }
            ],
            "messages[0].content[0].input",
        ),
        (
            [
                {
                    "role": "user",
                    "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}],
                }
            ],
            "messages[0].content[0].source.type",
        ),
        (
            [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/bmp", "data": "AA"},
                        }
                    ],
                }
            ],
            "messages[0].content[0].source",
        ),
        (
            [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "a",
                            "content": [{"type": "document"}],
                        }
                    ],
                }
            ],
            "messages[0].content[0].content[0].type",
        ),
    ],
)
def test_bad_anthropic_messages_name_their_field(messages: Any, field: str) -> None:
    """Each bad block of an Anthropic conversation is a ValidationError naming its exact path."""
    with pytest.raises(ValidationError) as caught:
        messages_from_anthropic(messages)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("read", "raw", "field"),
    [
        (tools_from_openai, [{"type": "custom", "custom": {}}], "tools[0].type"),
        (
            tools_from_openai,
            [{"type": "function", "function": {"name": "a b"}}],
            "tools[0].function.name",
        ),
        (tools_from_anthropic, [{"type": "web_search_20250305", "name": "web"}], "tools[0].type"),
        (tools_from_anthropic, [{"name": "a"}], "tools[0].input_schema"),
        (tool_choice_from_openai, {"type": "allowed_tools"}, "tool_choice.type"),
        (tool_choice_from_anthropic, {"type": "sometimes"}, "tool_choice.type"),
        (response_format_from_openai, {"type": "json_schema"}, "response_format.json_schema"),
        (response_format_from_openai, {"type": "grammar"}, "response_format.type"),
        (stop_from_openai, ["a", 1], "stop"),
        (system_from_anthropic, [{"type": "image"}], "system[0].type"),
    ],
)
def test_bad_tools_choices_and_formats_name_their_field(read: Any, raw: Any, field: str) -> None:
    """Tools, tool choices, response formats, stop and system: a bad value names its field."""
    with pytest.raises(ValidationError) as caught:
        read(raw)
    assert caught.value.field == field


def test_what_a_family_cannot_carry_is_untranslatable() -> None:
    """An image in a tool result for OpenAI, or tool arguments that are not an object for Anthropic."""
    with pytest.raises(Untranslatable) as caught:
        messages_to_openai(
            [ChatMessage("user", blocks=(ToolResult("a", [Image(url="https://x/y.png")]),))]
        )
    assert caught.value.field == "messages[0].content[0]"
    with pytest.raises(Untranslatable):
        messages_to_anthropic(
            [
                ChatMessage("user", "hi"),
                ChatMessage("assistant", blocks=(ToolCall("a", "b", "[1, 2]"),)),
            ]
        )


# -- replies written for clients, as the official SDKs parse them ---------------------------

REPLY = Reply(
    message="Checking.",
    model="m",
    provider="p",
    context=None,
    usage=Usage(100, 20, cached_input_tokens=60, reasoning_tokens=5),
    cost=0.0,
    routing="r",
    request_id="req1",
    task_type="default",
    finish_reason="tool_calls",
    tool_calls=(ToolCall("call_1", "get_weather", '{"city":"Paris"}'),),
)


def test_a_reply_as_a_chat_completion_parses_with_the_openai_sdk() -> None:
    """completion_to_openai is a valid ChatCompletion: tool calls, finish reason, usage details."""
    completion = openai.types.chat.ChatCompletion.model_validate(completion_to_openai(REPLY, 1))
    message = completion.choices[0].message
    assert message.tool_calls is not None
    [call] = message.tool_calls
    assert call.type == "function"
    assert (call.id, call.function.name, call.function.arguments) == (
        "call_1",
        "get_weather",
        '{"city":"Paris"}',
    )
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.usage is not None and completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 60


def test_a_reply_as_a_message_parses_with_the_anthropic_sdk() -> None:
    """message_to_anthropic is a valid Message: text, then a tool_use block; fresh and cache-read input apart."""
    message = anthropic.types.Message.model_validate(message_to_anthropic(REPLY))
    assert [b.type for b in message.content] == ["text", "tool_use"]
    use = message.content[1]
    assert use.type == "tool_use" and use.input == {"city": "Paris"}
    assert message.stop_reason == "tool_use"
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (40, 60)


def stream_chunks() -> list[Chunk]:
    return [
        Chunk("Check", "m", "p", None),
        Chunk("ing.", "m", "p", None),
        Chunk("", "m", "p", None, tool_calls=(ToolCallDelta(0, "call_1", "get_weather"),)),
        Chunk("", "m", "p", None, tool_calls=(ToolCallDelta(0, arguments='{"city":'),)),
        Chunk("", "m", "p", None, tool_calls=(ToolCallDelta(0, arguments='"Paris"}'),)),
        Chunk("", "m", "p", None, tool_calls=(ToolCallDelta(1, "call_2", "get_time"),)),
    ]


def test_a_stream_as_chat_completion_chunks_parses_with_the_openai_sdk() -> None:
    """OpenAIChunks' chunks are valid ChatCompletionChunks whose deltas rebuild the calls."""
    writer = OpenAIChunks("chatcmpl-1", 1)
    written = [writer.first("m")]
    for chunk in stream_chunks():
        written += writer.of(chunk)
    written += writer.last(REPLY, include_usage=True)
    parsed = [openai.types.chat.ChatCompletionChunk.model_validate(c) for c in written]
    calls: dict[int, list[str]] = {}
    for chunk in parsed:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                entry = calls.setdefault(call.index, ["", "", ""])
                entry[0] = call.id or entry[0]
                if call.function is not None:
                    entry[1] += call.function.name or ""
                    entry[2] += call.function.arguments or ""
    assert calls == {
        0: ["call_1", "get_weather", '{"city":"Paris"}'],
        1: ["call_2", "get_time", ""],
    }
    assert parsed[-2].choices[0].finish_reason == "tool_calls"
    assert parsed[-1].usage is not None and parsed[-1].usage.total_tokens == 120


@SDK_STREAM_WARNINGS
async def test_a_stream_as_anthropic_events_builds_the_message_the_sdk_accumulates() -> None:
    """AnthropicEvents' events, served as SSE to the anthropic SDK, build text then tool_use blocks."""
    writer = AnthropicEvents("msg_1")
    events = writer.first("m", 100)
    for chunk in stream_chunks():
        events += writer.of(chunk)
    events += writer.last(REPLY)
    body = "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events)
    async with fake_anthropic() as fake:
        fake.script(Recorded(body.encode()))
        async with (
            anthropic.AsyncAnthropic(api_key=KEY, base_url=fake.base_url, max_retries=0) as sdk,
            sdk.messages.stream(
                model="m", max_tokens=10, messages=[{"role": "user", "content": "x"}]
            ) as stream,
        ):
            message = await stream.get_final_message()
    assert [b.type for b in message.content] == ["text", "tool_use", "tool_use"]
    text, first, second = message.content
    assert text.type == "text" and text.text == "Checking."
    assert first.type == "tool_use"
    assert (first.id, first.name, first.input) == ("call_1", "get_weather", {"city": "Paris"})
    assert second.type == "tool_use" and (second.name, second.input) == ("get_time", {})
    assert message.stop_reason == "tool_use"
    assert (message.usage.output_tokens, message.usage.cache_read_input_tokens) == (20, 60)


# -- the edge's entry points: a client's whole body ------------------------------------------


def test_an_openai_body_reads_as_request_fields_with_the_rest_relayed() -> None:
    """fields_from_openai: the conversation, tools, choice, format, sampling, tags, and a passthrough."""
    fields = fields_from_openai(
        {
            "model": "rhetor/chat",
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": "required",
            "parallel_tool_calls": False,
            "response_format": {"type": "json_object"},
            "stop": "END",
            "top_p": 0.5,
            "seed": 3,
            "user": "u",
            "metadata": {"k": "v"},
            "temperature": 0.2,
            "logit_bias": {"1": 2},
            "store": True,
        }
    )
    assert fields["messages"] == (ChatMessage("user", "hi"),)
    assert fields["tools"] == (Tool("f"),)
    assert fields["tool_choice"] == ToolChoice("required", parallel=False)
    assert fields["response_format"] == ResponseFormat("json_object")
    assert (fields["stop"], fields["top_p"], fields["seed"]) == (("END",), 0.5, 3)
    assert (fields["user"], fields["metadata"]) == ("u", {"k": "v"})
    assert fields["passthrough"] == Passthrough("openai", {"logit_bias": {"1": 2}, "store": True})
    LLMRequest(**fields)


def test_an_anthropic_body_reads_as_request_fields_with_the_rest_relayed() -> None:
    """fields_from_anthropic: system, tools, choice, output_config's format, stop_sequences, user_id; the rest relayed."""
    fields = fields_from_anthropic(
        {
            "model": "rhetor/chat",
            "max_tokens": 10,
            "system": [{"type": "text", "text": "Be brief."}],
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"name": "f", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "tool", "name": "f"},
            "output_config": {
                "format": {"type": "json_schema", "schema": {"type": "object"}},
                "effort": "low",
            },
            "stop_sequences": ["END"],
            "metadata": {"user_id": "u"},
            "thinking": {"type": "adaptive"},
            "top_k": 5,
        }
    )
    assert fields["system_prompt"] == "Be brief."
    assert fields["tool_choice"] == ToolChoice("tool", "f")
    assert fields["response_format"] == ResponseFormat(
        "json_schema", {"type": "object"}, strict=True
    )
    assert (fields["stop"], fields["user"]) == (("END",), "u")
    assert fields["passthrough"] == Passthrough(
        "anthropic",
        {"thinking": {"type": "adaptive"}, "top_k": 5, "output_config": {"effort": "low"}},
    )
    LLMRequest(**fields)


@pytest.mark.parametrize(
    ("read", "body", "field"),
    [
        (fields_from_openai, {"messages": [], "top_p": 2}, "top_p"),
        (fields_from_openai, {"messages": [], "seed": "7"}, "seed"),
        (fields_from_openai, {"messages": [], "user": 5}, "user"),
        (fields_from_openai, {"messages": [], "metadata": {"a": 1}}, "metadata"),
        (fields_from_openai, {"messages": [], "parallel_tool_calls": "no"}, "parallel_tool_calls"),
        (fields_from_anthropic, {"messages": [], "stop_sequences": [1]}, "stop_sequences"),
        (fields_from_anthropic, {"messages": [], "metadata": {"user_id": 5}}, "metadata.user_id"),
    ],
)
def test_bad_body_fields_name_themselves(read: Any, body: dict[str, Any], field: str) -> None:
    """Each bad field of a whole body is a ValidationError naming it."""
    with pytest.raises(ValidationError) as caught:
        read(body)
    assert caught.value.field == field


def test_replies_with_nothing_or_odd_arguments_are_still_valid_for_anthropic_clients() -> None:
    """An empty reply streams one empty text block; arguments that are no object are kept under arguments."""
    empty = Reply("", "m", "p", None, Usage(1, 0), 0.0, "r", "req", "default")
    writer = AnthropicEvents("msg_2")
    events = [name for name, _ in (*writer.first("m"), *writer.last(empty))]
    assert events == [
        "message_start",
        "content_block_start",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    odd = Reply(
        "",
        "m",
        "p",
        None,
        Usage(1, 1),
        0.0,
        "r",
        "req",
        "default",
        finish_reason="tool_calls",
        tool_calls=(ToolCall("c", "f", "[1, 2]"),),
    )
    message = anthropic.types.Message.model_validate(message_to_anthropic(odd))
    [use] = message.content
    assert use.type == "tool_use" and use.input == {"arguments": "[1, 2]"}
