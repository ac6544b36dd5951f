"""The simulated provider: deterministic, useful replies with real token counts."""

from __future__ import annotations

import json

import pytest

from rhetor._content import (
    ResponseFormat,
    Tool,
    ToolCallAssembly,
    ToolCallDelta,
    ToolChoice,
    ToolResult,
)
from rhetor._errors import BadRequest
from rhetor._tokens import count_request_tokens
from rhetor._types import ChatMessage, ProviderRequest, StreamEnd, TextDelta
from rhetor.providers._simulated import SimulatedBackend, sample


def request(*contents: str, model: str = "simulated-echo", **kw: object) -> ProviderRequest:
    roles = ["user", "assistant"]
    msgs = tuple(ChatMessage(roles[i % 2], c) for i, c in enumerate(contents))  # type: ignore[arg-type]
    return ProviderRequest(model=model, messages=msgs, **kw)  # type: ignore[arg-type]


async def test_echo_reply_is_deterministic_and_counts_tokens() -> None:
    """The same prompt gives the same reply, with non-zero input and output token counts."""
    backend = SimulatedBackend()
    first = await backend.complete(request("Write a haiku"))
    second = await backend.complete(request("Write a haiku"))
    assert first == second
    assert "Write a haiku" in first.text
    assert first.usage.input_tokens > 0 and first.usage.output_tokens > 0


async def test_reply_says_how_much_history_it_saw() -> None:
    """Earlier turns are visible to the model, which makes context handling testable."""
    reply = await SimulatedBackend().complete(request("a", "b", "c"))
    assert "2 earlier messages" in reply.text


async def test_summary_model_summarises() -> None:
    """The summary model condenses the conversation."""
    reply = await SimulatedBackend().complete(
        request("One. Two. Three. Four. Five.", model="simulated-summary")
    )
    assert reply.text.startswith("Summary (5 sentences")


async def test_stream_yields_deltas_then_one_end_matching_complete() -> None:
    """Streamed deltas join to the plain reply, and exactly one StreamEnd closes the stream."""
    backend = SimulatedBackend()
    items = [item async for item in backend.stream(request("stream me please"))]
    assert isinstance(items[-1], StreamEnd)
    text = "".join(i.text for i in items if isinstance(i, TextDelta))
    plain = await backend.complete(request("stream me please"))
    assert text == plain.text and items[-1].usage == plain.usage


async def test_max_tokens_truncates_the_reply() -> None:
    """max_tokens bounds the output token count."""
    reply = await SimulatedBackend().complete(request("word " * 50, max_tokens=5))
    assert 0 < reply.usage.output_tokens <= 5


async def test_chunk_delay_spaces_chunks_in_time(autojump_clock: object) -> None:
    """The per-chunk delay applies to every chunk (on the mock clock)."""
    import trio

    backend = SimulatedBackend(chunk_delay=0.5)
    start = trio.current_time()
    items = [i async for i in backend.stream(request("one two three"))]
    count = sum(1 for i in items if isinstance(i, TextDelta))
    assert trio.current_time() - start == pytest.approx(0.5 * count)


async def test_unknown_model_is_a_bad_request() -> None:
    """Asking the simulator for a model it does not serve is a typed BadRequest."""
    with pytest.raises(BadRequest):
        await SimulatedBackend().complete(request("hi", model="gpt-4"))


# -- tools and structured output ---------------------------------------------------------

WEATHER = Tool(
    "get_weather",
    "The weather now.",
    {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer", "minimum": 3},
            "unit": {"enum": ["c", "f"]},
            "note": {"type": "string"},
        },
        "required": ["city", "days", "unit"],
    },
)
CLOCK = Tool("get_time")


async def test_a_required_tool_choice_calls_the_first_tool_deterministically() -> None:
    """tool_choice required: a call of the first tool, arguments an instance of its schema, the same each time."""
    ask = request("Paris please", tools=(WEATHER, CLOCK), tool_choice=ToolChoice("required"))
    first = await SimulatedBackend().complete(ask)
    assert first == await SimulatedBackend().complete(ask)
    [call] = first.tool_calls
    assert call.name == "get_weather" and call.id.startswith("call_sim_")
    assert call.input() == {"city": "Paris please", "days": 3, "unit": "c"}
    assert (first.text, first.finish_reason) == ("", "tool_calls")


async def test_a_named_tool_choice_calls_that_tool() -> None:
    """A named tool choice calls the named tool, whatever the user said."""
    ask = request("Paris", tools=(WEATHER, CLOCK), tool_choice=ToolChoice("tool", "get_time"))
    reply = await SimulatedBackend().complete(ask)
    assert [(c.name, c.input()) for c in reply.tool_calls] == [("get_time", {})]


async def test_auto_calls_a_tool_the_user_names_and_answers_its_result_in_text() -> None:
    """auto: a call when the last user turn names a tool, plain text when it does not or sends results."""
    backend = SimulatedBackend()
    named = await backend.complete(request("use get_time now", tools=(WEATHER, CLOCK)))
    assert [c.name for c in named.tool_calls] == ["get_time"]
    plain = await backend.complete(request("hello", tools=(WEATHER, CLOCK)))
    assert plain.tool_calls == () and plain.finish_reason == "stop"
    answered = ProviderRequest(
        "simulated-echo",
        (
            ChatMessage("user", "use get_time now"),
            ChatMessage("assistant", blocks=(named.tool_calls[0],)),
            ChatMessage("user", blocks=(ToolResult(named.tool_calls[0].id, "12:00"),)),
        ),
        tools=(WEATHER, CLOCK),
    )
    final = await backend.complete(answered)
    assert final.tool_calls == () and f"{named.tool_calls[0].id}: 12:00" in final.text
    none = await backend.complete(
        request("use get_time now", tools=(CLOCK,), tool_choice=ToolChoice("none"))
    )
    assert none.tool_calls == ()


async def test_a_streamed_tool_call_arrives_as_deltas_that_assemble_to_the_whole_one() -> None:
    """Streamed: a header delta (id, name), argument fragments, then an end saying tool_calls."""
    backend = SimulatedBackend()
    ask = request("Oslo", tools=(WEATHER,), tool_choice=ToolChoice("required"))
    items = [item async for item in backend.stream(ask)]
    deltas = [i for i in items if isinstance(i, ToolCallDelta)]
    assert deltas[0].id is not None and deltas[0].name == "get_weather" and len(deltas) > 2
    assembly = ToolCallAssembly()
    for delta in deltas:
        assembly.add(delta)
    whole = await backend.complete(ask)
    assert assembly.calls() == whole.tool_calls
    end = items[-1]
    assert isinstance(end, StreamEnd) and end.finish_reason == "tool_calls"


async def test_a_json_schema_format_gets_an_instance_of_the_schema() -> None:
    """response_format json_schema: the reply is JSON matching the schema; json_object an object."""
    fmt = ResponseFormat("json_schema", WEATHER.parameters)
    reply = await SimulatedBackend().complete(request("Rome", response_format=fmt))
    assert json.loads(reply.text) == {"city": "Rome", "days": 3, "unit": "c"}
    loose = await SimulatedBackend().complete(
        request("Rome", response_format=ResponseFormat("json_object"))
    )
    assert json.loads(loose.text) == {"reply": "[simulated] You said: Rome"}


async def test_tools_count_in_the_simulated_input_tokens() -> None:
    """The simulated usage counts the tools offered, as the token rule does."""
    bare = await SimulatedBackend().complete(request("hi"))
    tooled = await SimulatedBackend().complete(request("hi", tools=(WEATHER,)))
    assert tooled.usage.input_tokens == bare.usage.input_tokens + count_request_tokens([WEATHER])


@pytest.mark.parametrize(
    ("schema", "value"),
    [
        ({"type": "array", "items": {"type": "boolean"}}, [True]),
        ({"type": ["null", "number"], "maximum": 0.5}, 0.5),
        ({"anyOf": [{"const": 7}, {"type": "string"}]}, 7),
        ({"type": "object", "properties": {"a": {"type": "null"}}}, {"a": None}),
        ({"$ref": "#/$defs/x"}, "text"),
        ("not a schema", None),
    ],
)
def test_sample_is_an_instance_of_simple_schemas(schema: object, value: object) -> None:
    """sample() answers an instance for arrays, type lists, branches, consts and nulls."""
    assert sample(schema, "text") == value
