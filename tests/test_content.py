"""
The internal content model (rhetor._content, and ChatMessage and LLMRequest in rhetor._types):
blocks and how a turn normalises them, tools, tool choices, formats, the request's checks,
finish reasons, the assembly of streamed tool calls, and the token rule.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rhetor import ChatMessage, LLMRequest, Reply, Usage, ValidationError
from rhetor._content import (
    Image,
    Passthrough,
    ResponseFormat,
    Text,
    Tool,
    ToolCall,
    ToolCallAssembly,
    ToolCallDelta,
    ToolChoice,
    ToolResult,
    finish_reason,
)
from rhetor._tokens import (
    BLOCK_OVERHEAD,
    IMAGE_TOKENS,
    LOW_DETAIL_IMAGE_TOKENS,
    MESSAGE_OVERHEAD,
    TOOL_OVERHEAD,
    count_message_tokens,
    count_request_tokens,
    count_tokens,
)

PNG = Image(data="AAAA", media_type="image/png")


# -- turns ------------------------------------------------------------------------------


def test_a_plain_string_turn_is_unchanged() -> None:
    """ChatMessage(role, text) stays what it was: content the text, no blocks."""
    turn = ChatMessage("user", "hi")
    assert (turn.content, turn.blocks, turn.parts) == ("hi", (), (Text("hi"),))


def test_text_blocks_alone_are_a_plain_text_turn() -> None:
    """Text blocks side by side are one text, and a turn of only text equals the plain turn."""
    assert ChatMessage("user", blocks=(Text("a"), Text("b"))) == ChatMessage("user", "ab")
    assert ChatMessage("assistant", blocks=(Text(""),)) == ChatMessage("assistant", "")


def test_a_turn_with_more_than_text_keeps_its_blocks_and_its_text() -> None:
    """An image turn keeps its blocks in order; content is its text; tool calls and results are found."""
    call = ToolCall("c1", "lookup", '{"q":"x"}')
    asked = ChatMessage("assistant", blocks=(Text("Let me see. "), call))
    assert asked.content == "Let me see. " and asked.tool_calls == (call,)
    answer = ChatMessage("user", blocks=(ToolResult("c1", [Text("found"), PNG]), Text("and?"), PNG))
    assert answer.content == "and?"
    assert answer.tool_results[0].text == "found"
    assert answer.images == (PNG, PNG)


@pytest.mark.parametrize(
    ("role", "block"),
    [
        ("assistant", PNG),
        ("assistant", ToolResult("c1", "x")),
        ("user", ToolCall("c1", "f")),
        ("system", PNG),
    ],
)
def test_a_block_its_role_cannot_hold_is_refused(role: Any, block: Any) -> None:
    """Images and results belong to the user, calls to the assistant, only text to the system."""
    with pytest.raises(ValidationError) as caught:
        ChatMessage(role, blocks=(Text("x"), block))
    assert caught.value.field == "content[1]"


def test_text_given_both_as_content_and_as_blocks_must_agree() -> None:
    """content beside blocks is refused unless it is the blocks' own text."""
    assert ChatMessage("user", "a", (Text("a"), PNG)).content == "a"
    with pytest.raises(ValidationError):
        ChatMessage("user", "other", (Text("a"), PNG))


@given(st.lists(st.text(max_size=5), max_size=6))
def test_text_runs_always_merge_into_one(pieces: list[str]) -> None:
    """However text is cut into blocks, a text-only turn is its joined text."""
    assert ChatMessage("user", blocks=[Text(p) for p in pieces]) == ChatMessage(
        "user", "".join(pieces)
    )


# -- images, tools, choices, formats ----------------------------------------------------


def test_an_image_is_a_url_or_typed_base64_data() -> None:
    """Exactly one of url or data; data needs an image media type every API takes."""
    for bad in (
        {},
        {"url": "https://x", "data": "AAAA", "media_type": "image/png"},
        {"data": "AAAA"},
        {"data": "AAAA", "media_type": "image/bmp"},
        {"url": "https://x", "detail": "ultra"},
    ):
        with pytest.raises(ValidationError):
            Image(**bad)
    assert Image.from_url("https://example.com/a.png").as_url() == "https://example.com/a.png"
    data = Image.from_url("data:image/jpeg;base64,/9j/4AAQ")
    assert (data.data, data.media_type, data.as_url()) == (
        "/9j/4AAQ",
        "image/jpeg",
        "data:image/jpeg;base64,/9j/4AAQ",
    )
    with pytest.raises(ValidationError):
        Image.from_url("data:image/png,not-base64")


def test_tool_arguments_read_as_an_object() -> None:
    """A call's arguments are JSON text; input() reads an object, {} for none, and refuses others."""
    assert ToolCall("c", "f", '{"a": 1}').input() == {"a": 1}
    assert ToolCall("c", "f", "").input() == {}
    with pytest.raises(ValueError, match="not a JSON object"):
        ToolCall("c", "f", "[1]").input()


def test_tools_choices_and_formats_check_themselves() -> None:
    """Tool names as every API accepts them, schemas as objects, choices and formats well formed."""
    for bad in ("", "a b", "x" * 65, "naïve"):
        with pytest.raises(ValidationError):
            Tool(bad)
    with pytest.raises(ValidationError):
        Tool("f", parameters=[])  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        ToolChoice("tool")
    with pytest.raises(ValidationError):
        ToolChoice("auto", "f")
    with pytest.raises(ValidationError):
        ToolChoice("sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        ResponseFormat("json_schema")
    with pytest.raises(ValidationError):
        ResponseFormat("json_object", {"type": "object"})
    assert ToolChoice("required").forces and not ToolChoice("auto").forces


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"tools": [Tool("f"), Tool("f")]}, "tools[1].name"),
        ({"tools": [Tool("f")], "tool_choice": ToolChoice("tool", "g")}, "tool_choice"),
        ({"tool_choice": ToolChoice("required")}, "tool_choice"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_p": True}, "top_p"),
        ({"seed": 2**63}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"stop": ["", "x"]}, "stop"),
        ({"metadata": {"a": 1}}, "metadata"),
        ({"user": 5}, "user"),
    ],
)
def test_a_request_refuses_inconsistent_fields_naming_them(
    fields: dict[str, Any], field: str
) -> None:
    """Duplicate tools, a choice naming no tool, a forced choice without tools, out-of-range sampling."""
    with pytest.raises(ValidationError) as caught:
        LLMRequest(message="hi", **fields)
    assert caught.value.field == field


def test_a_request_offers_tools_unless_its_choice_is_none() -> None:
    """offers_tools: tools given and a choice other than none."""
    assert LLMRequest(message="x", tools=[Tool("f")]).offers_tools
    assert not LLMRequest(
        message="x", tools=[Tool("f")], tool_choice=ToolChoice("none")
    ).offers_tools
    assert not LLMRequest(message="x", passthrough=Passthrough("openai", {"n": 1})).offers_tools
    assert LLMRequest(message="x", stop="END").stop == ("END",)


# -- replies ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "calls", "normalised"),
    [
        ("end_turn", False, "stop"),
        ("stop_sequence", False, "stop"),
        ("max_tokens", False, "length"),
        ("model_context_window_exceeded", False, "length"),
        ("tool_use", False, "tool_calls"),
        ("function_call", False, "tool_calls"),
        ("refusal", False, "content_filter"),
        ("content_filter", False, "content_filter"),
        ("stop", True, "tool_calls"),
        ("length", True, "length"),
        (None, False, "stop"),
        ("something_new", False, "stop"),
        (5, False, "stop"),
    ],
)
def test_finish_reasons_are_normalised(raw: object, calls: bool, normalised: str) -> None:
    """Every upstream's reason is one of stop, length, tool_calls, content_filter."""
    assert finish_reason(raw, tool_calls=calls) == normalised


def test_tool_call_deltas_assemble_by_index() -> None:
    """Deltas of interleaved calls assemble in index order; a call without arguments has {}."""
    assembly = ToolCallAssembly()
    assert not assembly
    for delta in (
        ToolCallDelta(1, "b", "g"),
        ToolCallDelta(0, "a", "f"),
        ToolCallDelta(0, arguments='{"x"'),
        ToolCallDelta(0, arguments=":1}"),
    ):
        assembly.add(delta)
    assert assembly.calls() == (ToolCall("a", "f", '{"x":1}'), ToolCall("b", "g", "{}"))
    assert assembly.produced() == 'f{"x":1}g'


def test_a_reply_says_its_tool_calls_and_detailed_usage() -> None:
    """to_dict has the tool calls and the cached and reasoning tokens."""
    reply = Reply(
        message="",
        model="m",
        provider="p",
        context=None,
        usage=Usage(10, 5, 4, 2),
        cost=0.0,
        routing="",
        request_id="r",
        task_type="default",
        finish_reason="tool_calls",
        tool_calls=(ToolCall("a", "f", "{}"),),
    )
    body = reply.to_dict()
    assert body["tool_calls"] == [{"id": "a", "name": "f", "arguments": "{}"}]
    assert body["usage"] == {
        "input_tokens": 10,
        "output_tokens": 5,
        "total_tokens": 15,
        "cached_input_tokens": 4,
        "reasoning_tokens": 2,
    }
    assert (Usage(1, 1, 1, 0) + Usage(1, 1, 0, 1)) == Usage(2, 2, 1, 1)


# -- the token rule ---------------------------------------------------------------------


def test_the_token_rule_counts_images_calls_and_results() -> None:
    """Images a flat 1,600 (85 at low detail); calls their name and arguments; results their content."""
    images = ChatMessage("user", blocks=(Text("see"), PNG, Image(url="https://x", detail="low")))
    assert count_message_tokens([images]) == (
        MESSAGE_OVERHEAD + count_tokens("see") + IMAGE_TOKENS + LOW_DETAIL_IMAGE_TOKENS
    )
    call = ToolCall("c", "lookup", '{"q":"x"}')
    asked = ChatMessage("assistant", blocks=(call,))
    assert count_message_tokens([asked]) == (
        MESSAGE_OVERHEAD + BLOCK_OVERHEAD + count_tokens("lookup") + count_tokens('{"q":"x"}')
    )
    result = ChatMessage("user", blocks=(ToolResult("c", "found it"),))
    assert count_message_tokens([result]) == MESSAGE_OVERHEAD + BLOCK_OVERHEAD + count_tokens(
        "found it"
    )


def test_the_token_rule_counts_tool_definitions_and_response_schemas() -> None:
    """Each tool its overhead, name, description and schema JSON; a JSON schema format its schema."""
    tool = Tool("lookup", "Find it.", {"type": "object"})
    assert count_request_tokens([tool]) == (
        TOOL_OVERHEAD
        + count_tokens("lookup")
        + count_tokens("Find it.")
        + count_tokens('{"type":"object"}')
    )
    fmt = ResponseFormat("json_schema", {"type": "object"})
    assert count_request_tokens(response_format=fmt) == TOOL_OVERHEAD + count_tokens(
        '{"type":"object"}'
    )
    assert count_request_tokens(response_format=ResponseFormat("json_object")) == 0
    bigger = Tool("lookup", "Find it.", {"type": "object", "properties": {"q": {"type": "string"}}})
    assert count_request_tokens([bigger]) > count_request_tokens([tool])
