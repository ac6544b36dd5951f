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

from rhetor._types import ChatMessage, StreamEnd, TextDelta
from tests.fakes._behaviours import Reply
from tests.fakes._server import ReceivedRequest

__all__ = ["HISTORY", "KEY", "READ_REPLIES", "SDK_STREAM_WARNINGS", "arrived", "collect"]

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
    stream: AsyncGenerator[TextDelta | StreamEnd, None],
) -> list[TextDelta | StreamEnd]:
    """
    Every item of a backend's stream, the stream closed after.
    """
    async with aclosing(stream) as items:
        return [item async for item in items]
