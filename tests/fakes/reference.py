"""
What the conformance tests share: the conversation both sides send, the replies both
read, and what an upstream reads of a request.

The official clients (``openai``, ``anthropic``, ``ollama``) are the reference for
the wire formats Rhetor's backends speak; ``tests/test_providers_conformance_*.py``
send the same requests through each and through Rhetor's backend to one fake, and
compare what arrives and how each reads the same replies.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import pytest

from rhetor._content import Image, ResponseFormat, Text, Tool, ToolCall, ToolResult
from rhetor._types import ChatMessage, StreamEnd, TextDelta, ToolCallDelta
from tests.fakes._behaviours import Call, Reply
from tests.fakes._server import ReceivedRequest

__all__ = [
    "HISTORY",
    "KEY",
    "PIXEL",
    "READ_REPLIES",
    "SCHEMA",
    "SDK_STREAM_WARNINGS",
    "STRUCTURED",
    "TOOL_HISTORY",
    "TOOL_REPLIES",
    "WEATHER",
    "arrived",
    "collect",
]

# The SDKs' own streams leave their inner async generators unfinished once they have
# read [DONE] or message_stop (encode/httpx#3686), which trio reports when they are
# collected. That is the reference clients' flaw, not what is compared; Rhetor's
# own generators are named rhetor.* and stay under the error filter.
SDK_STREAM_WARNINGS = pytest.mark.filterwarnings(
    r"ignore:Async generator '(openai|anthropic|httpx2|httpcore2)\.:ResourceWarning"
)

KEY = "sk-conformance-0123456789"
HISTORY = (
    ChatMessage("user", "Name a colour."),
    ChatMessage("assistant", "Blue."),
    ChatMessage("user", "Another, in \u00e9l\u00e9gant French \U0001f3a8."),
)

# A tool conversation: a question with an image, a call, its result and a follow-up.
PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=="
WEATHER = Tool(
    "get_weather",
    "The weather now in a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
SCHEMA = {
    "type": "object",
    "properties": {"summary": {"type": "string"}},
    "required": ["summary"],
    "additionalProperties": False,
}
STRUCTURED = ResponseFormat("json_schema", SCHEMA, "forecast", strict=True)
TOOL_HISTORY = (
    ChatMessage(
        "user",
        blocks=(Text("Is it sunny where this is?"), Image(data=PIXEL, media_type="image/png")),
    ),
    ChatMessage(
        "assistant",
        blocks=(Text("Checking."), ToolCall("call_1", "get_weather", '{"city":"Paris"}')),
    ),
    ChatMessage("user", blocks=(ToolResult("call_1", "Sunny, 21 C"), Text("Summarise it."))),
)

# Replies that call tools: after text, and alone in parallel.
TOOL_REPLIES = [
    pytest.param(
        Reply("Checking.", tool_calls=(Call("get_weather", {"city": "Paris"}, id="call_9"),)),
        id="text-then-call",
    ),
    pytest.param(
        Reply(
            "",
            tool_calls=(
                Call("get_weather", {"city": "Paris"}, id="call_a"),
                Call("get_weather", {"city": "Oslo", "days": [1, 2]}, id="call_b", pieces=6),
            ),
            input_tokens=30,
            output_tokens=12,
        ),
        id="parallel-calls",
    ),
]

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


def arrived(request: ReceivedRequest, headers: tuple[str, ...]) -> dict[str, Any]:
    """
    What an upstream reads of a request: method, path, query, headers that matter, body.
    """
    return {
        "method": request.method,
        "path": request.path,
        "query": request.query,
        "headers": {name: request.headers.get(name) for name in headers},
        "body": request.json,
    }


async def collect(
    stream: AsyncGenerator[TextDelta | ToolCallDelta | StreamEnd, None],
) -> list[TextDelta | ToolCallDelta | StreamEnd]:
    """
    Every item of a backend's stream, the stream closed after.
    """
    async with aclosing(stream) as items:
        return [item async for item in items]
