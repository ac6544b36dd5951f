"""
Anthropic's extended thinking through ``/v1/messages``: the ``thinking`` parameter
reaches Anthropic, its ``thinking`` and ``redacted_thinking`` blocks come back whole
and streamed (read by the official SDK), and go back upstream with their signatures,
which a tool conversation with thinking needs (the fake refuses one without them,
as the API does). Other families never see thinking blocks.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from rhetor._content import Thinking, ToolCall
from rhetor._types import ChatMessage, Passthrough, ProviderRequest
from rhetor.providers._anthropic_wire import EventReading, messages_body
from rhetor.providers._wire import MalformedReply
from rhetor.storage._blocks import blocks_json, message_of
from tests.edge_helpers import named_events
from tests.fakes import Call, Recorded, Reply
from tests.fakes.anthropic import signature
from tests.test_compat_openai import reads_sdk_stream
from tests.test_compat_tools import (
    ANTHROPIC_TOOL,
    GPT_MINI,
    HAIKU,
    PARIS,
    QUESTION,
    STREAMED,
    Stack,
)

THINKING = {"type": "enabled", "budget_tokens": 2048}
THOUGHT = "The user wants the weather; I should call the tool."


async def ask(stack: Stack, messages: list[Any], streamed: bool, **extra: Any) -> Any:
    """A Messages call with thinking, through the SDK (streamed: its accumulating helper)."""
    params: dict[str, Any] = {
        "model": HAIKU,
        "max_tokens": 4096,
        "messages": messages,
        "thinking": THINKING,
        **extra,
    }
    if streamed:
        async with stack.ant.messages.stream(**params) as stream:
            return await stream.get_final_message()
    return await stack.ant.messages.create(**params)


@reads_sdk_stream
@STREAMED
async def test_thinking_reaches_anthropic_and_its_blocks_come_back_signed(
    stack: Stack, streamed: bool
) -> None:
    """The parameter goes up as given; thinking, redacted thinking and text come back in order."""
    stack.anthropic.script(
        Reply("It is sunny.", thinking=(THOUGHT,), redacted_thinking=("EncryptedBlob==",))
    )
    message = await ask(stack, [{"role": "user", "content": QUESTION}], streamed)
    assert stack.sent("anthropic")["thinking"] == THINKING
    assert [b.type for b in message.content] == ["thinking", "redacted_thinking", "text"]
    thought, redacted, text = message.content
    assert thought.thinking == THOUGHT
    assert thought.signature == signature(THOUGHT)
    assert redacted.data == "EncryptedBlob=="
    assert text.text == "It is sunny."


@reads_sdk_stream
@STREAMED
async def test_a_tool_conversation_with_thinking_sends_the_signed_thinking_back(
    stack: Stack, streamed: bool
) -> None:
    """The assistant turn the client sends back (thinking, then tool_use) reaches Anthropic intact."""
    stack.anthropic.script(
        Reply("", thinking=(THOUGHT,), tool_calls=(Call("get_weather", PARIS, id="toolu_1"),))
    )
    tools = {"tools": [ANTHROPIC_TOOL]}
    first = await ask(stack, [{"role": "user", "content": QUESTION}], streamed, **tools)
    assert [b.type for b in first.content] == ["thinking", "tool_use"]
    stack.anthropic.script(Reply("It is 18 degrees in Paris."))
    turns = [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "18"}],
        },
    ]
    final = await ask(stack, turns, streamed, **tools)
    assert [b.text for b in final.content if b.type == "text"] == ["It is 18 degrees in Paris."]
    sent = stack.sent("anthropic")["messages"][1]["content"]
    assert sent[0] == {"type": "thinking", "thinking": THOUGHT, "signature": signature(THOUGHT)}
    assert sent[1]["type"] == "tool_use"


async def test_a_tool_conversation_with_thinking_under_a_context_keeps_the_thinking(
    stack: Stack,
) -> None:
    """Under ``X-Rhetor-Context`` the stored call keeps its thinking, so the result alone suffices."""
    headers = {"X-Rhetor-Context": "thinking-tools"}
    stack.anthropic.script(
        Reply("", thinking=(THOUGHT,), tool_calls=(Call("get_weather", PARIS, id="toolu_2"),))
    )
    tools = {"tools": [ANTHROPIC_TOOL], "extra_headers": headers}
    await ask(stack, [{"role": "user", "content": QUESTION}], False, **tools)
    stack.anthropic.script(Reply("18 degrees."))
    result = [{"type": "tool_result", "tool_use_id": "toolu_2", "content": "18"}]
    final = await ask(stack, [{"role": "user", "content": result}], False, **tools)
    assert final.content[-1].text == "18 degrees."
    messages = stack.sent("anthropic")["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[1]["content"][0]["type"] == "thinking"
    assert messages[1]["content"][0]["signature"] == signature(THOUGHT)


async def test_a_resent_history_with_thinking_under_a_context_is_not_doubled(
    stack: Stack,
) -> None:
    """The whole conversation sent again (thinking included) matches the stored turns: each once."""
    headers = {"X-Rhetor-Context": "thinking-resent"}
    stack.anthropic.script(
        Reply("", thinking=(THOUGHT,), tool_calls=(Call("get_weather", PARIS, id="toolu_3"),))
    )
    tools = {"tools": [ANTHROPIC_TOOL], "extra_headers": headers}
    first = await ask(stack, [{"role": "user", "content": QUESTION}], False, **tools)
    stack.anthropic.script(Reply("18 degrees."))
    turns = [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_3", "content": "18"}],
        },
    ]
    await ask(stack, turns, False, **tools)
    messages = stack.sent("anthropic")["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert json.dumps(messages).count(THOUGHT) == 1


async def test_thinking_blocks_in_history_are_left_out_for_other_families(stack: Stack) -> None:
    """An OpenAI model gets the assistant turn's text and calls, never its thinking."""
    stack.openai.script(Reply("Done."))
    turns = [
        {"role": "user", "content": QUESTION},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": THOUGHT, "signature": signature(THOUGHT)},
                {"type": "redacted_thinking", "data": "EncryptedBlob=="},
                {"type": "text", "text": "Sunny."},
            ],
        },
        {"role": "user", "content": "And tomorrow?"},
    ]
    message = await stack.ant.messages.create(model=GPT_MINI, max_tokens=100, messages=turns)
    assert message.content[0].text == "Done."
    sent = stack.sent("openai")["messages"]
    assert {"role": "assistant", "content": "Sunny."} in sent
    assert "thinking" not in json.dumps(sent) and "Encrypted" not in json.dumps(sent)


async def test_a_thinking_block_without_its_signature_is_a_400_naming_it(stack: Stack) -> None:
    """The edge checks the block's shape before anything goes upstream."""
    turns = [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": THOUGHT}]},
        {"role": "user", "content": "Go on."},
    ]
    body = {"model": HAIKU, "max_tokens": 100, "messages": turns}
    async with httpx.AsyncClient(base_url=stack.server.base_url) as raw:
        response = await raw.post("/v1/messages", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and "signature" in error["message"]
    assert stack.anthropic.completions == []


async def test_a_raw_thinking_stream_is_as_anthropic_sends_it(stack: Stack) -> None:
    """Block starts with empty thinking and signature, thinking_delta events, one signature_delta."""
    stack.anthropic.script(Reply("Sunny.", thinking=(THOUGHT,)))
    body = {
        "model": HAIKU,
        "max_tokens": 4096,
        "thinking": THINKING,
        "messages": [{"role": "user", "content": QUESTION}],
        "stream": True,
    }
    async with httpx.AsyncClient(base_url=stack.server.base_url) as raw:
        response = await raw.post("/v1/messages", json=body)
    events = named_events(response.text)
    starts = [data for kind, data in events if kind == "content_block_start"]
    assert starts[0] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "thinking", "thinking": "", "signature": ""},
    }
    assert starts[1]["index"] == 1 and starts[1]["content_block"]["type"] == "text"
    deltas = [data["delta"] for kind, data in events if kind == "content_block_delta"]
    thought = "".join(d["thinking"] for d in deltas if d["type"] == "thinking_delta")
    assert thought == THOUGHT
    assert [d for d in deltas if d["type"] == "signature_delta"] == [
        {"type": "signature_delta", "signature": signature(THOUGHT)}
    ]
    stops = [data["index"] for kind, data in events if kind == "content_block_stop"]
    assert stops == [0, 1]


def _sse(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


async def test_a_stream_cut_while_thinking_bills_the_thinking_as_output(stack: Stack) -> None:
    """The upstream ends the stream mid-thought: the partial charge counts the thought's tokens."""
    thought = "considering the weather " * 200
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_cut",
            "type": "message",
            "role": "assistant",
            "model": HAIKU,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": 1},
        },
    }
    block = {"type": "thinking", "thinking": "", "signature": ""}
    delta = {"type": "thinking_delta", "thinking": thought}
    stack.anthropic.script(
        Recorded(
            _sse("message_start", start)
            + _sse(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": block},
            )
            + _sse(
                "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
            )
        )
    )
    body = {
        "model": HAIKU,
        "max_tokens": 4096,
        "thinking": THINKING,
        "messages": [{"role": "user", "content": QUESTION}],
        "stream": True,
    }
    async with httpx.AsyncClient(base_url=stack.server.base_url) as raw:
        response = await raw.post("/v1/messages", json=body)
        assert "event: error" in response.text
        [entry] = (await raw.get("/budget/entries")).json()["entries"]
    assert entry["status"] == "partial"
    assert entry["output_tokens"] >= 600  # 800 words of thought; nothing else was sent


# -- the wire format alone -----------------------------------------------------------------


def _request(max_tokens: int, thinking: dict[str, Any]) -> ProviderRequest:
    return ProviderRequest(
        model=HAIKU,
        messages=(ChatMessage("user", "Hi"),),
        max_tokens=max_tokens,
        passthrough=Passthrough("anthropic", {"thinking": thinking}),
    )


def test_a_thinking_budget_shrinks_below_a_clamped_max_tokens() -> None:
    """Under enforce max_tokens may shrink; the thinking budget follows while the API's least fits."""
    assert messages_body(_request(2048, {"type": "enabled", "budget_tokens": 5000}), stream=False)[
        "thinking"
    ] == {"type": "enabled", "budget_tokens": 2047}
    # Below the least budget (1024) the call goes as asked, and Anthropic's 400 says why.
    assert messages_body(_request(1000, {"type": "enabled", "budget_tokens": 5000}), stream=False)[
        "thinking"
    ] == {"type": "enabled", "budget_tokens": 5000}
    assert messages_body(_request(2048, {"type": "disabled"}), stream=False)["thinking"] == {
        "type": "disabled"
    }


def _events(reading: EventReading, *events: dict[str, Any]) -> list[Any]:
    items: list[Any] = []
    for event in events:
        items += reading.take((event["type"], json.dumps(event)))
    return items


def test_a_stream_reads_thinking_and_redacted_blocks_as_numbered_deltas() -> None:
    reading = EventReading("claude")
    items = _events(
        reading,
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "Hm"},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "signature_delta", "signature": "s1"},
        },
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "redacted_thinking", "data": "xyz"},
        },
    )
    assert [(i.index, i.text, i.signature, i.redacted) for i in items] == [
        (0, "Hm", "", None),
        (0, "", "s1", None),
        (1, "", "", "xyz"),
    ]


@pytest.mark.parametrize(
    "event",
    [
        {
            "type": "content_block_delta",
            "index": 3,
            "delta": {"type": "signature_delta", "signature": "s"},
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "redacted_thinking"}},
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": 7, "signature": ""},
        },
    ],
    ids=["signature-for-no-block", "redacted-without-data", "thinking-not-text"],
)
def test_a_malformed_thinking_event_is_a_malformed_reply(event: dict[str, Any]) -> None:
    with pytest.raises(MalformedReply):
        _events(EventReading("claude"), event)


def test_thinking_blocks_are_stored_and_read_back_exactly() -> None:
    turn = ChatMessage(
        "assistant",
        blocks=(Thinking("Hm", "sig"), Thinking(redacted="xyz"), ToolCall("t1", "get_weather")),
    )
    stored = blocks_json(turn)
    assert stored is not None
    assert message_of("assistant", turn.content, stored) == turn
