"""
The public surface of the ``rhetor`` package: its names, and how little importing it costs.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

import rhetor
import rhetor.runtime


def test_public_names_are_exactly_the_documented_ones() -> None:
    """rhetor.__all__ lists the errors, the value objects the API takes and returns (content blocks, tools and formats too), Settings, and nothing else."""
    assert sorted(rhetor.__all__) == [
        "AllProvidersFailed",
        "AuthenticationFailed",
        "BadRequest",
        "BudgetExceeded",
        "ChatMessage",
        "Chunk",
        "ContextTooLong",
        "Forbidden",
        "Image",
        "InternalError",
        "InvalidJSON",
        "LLMRequest",
        "NotFound",
        "Overloaded",
        "Passthrough",
        "PayloadTooLarge",
        "ProviderError",
        "ProviderUnavailable",
        "RateLimited",
        "Reply",
        "ResponseFormat",
        "RhetorError",
        "RoutingParameters",
        "ServiceUnavailable",
        "Settings",
        "StorageUnavailable",
        "StreamBroken",
        "Text",
        "Thinking",
        "ThinkingDelta",
        "Tool",
        "ToolCall",
        "ToolCallDelta",
        "ToolChoice",
        "ToolResult",
        "Unauthorized",
        "UnsupportedMediaType",
        "UpstreamConnectionError",
        "UpstreamServerError",
        "UpstreamTimeout",
        "Usage",
        "ValidationError",
        "Verbatim",
        "__version__",
    ]


def test_every_public_name_is_importable() -> None:
    """Each name in __all__ is an attribute of the package."""
    for name in rhetor.__all__:
        assert getattr(rhetor, name) is not None


def test_what_the_runtime_returns_is_the_public_type() -> None:
    """The request and reply types the runtime uses are the ones rhetor exports, not copies."""
    assert rhetor.runtime.LLMRequest is rhetor.LLMRequest
    assert rhetor.runtime.Reply is rhetor.Reply
    assert rhetor.runtime.Chunk is rhetor.Chunk


@pytest.mark.slow  # a fresh interpreter
def test_importing_rhetor_pulls_in_no_server_stack() -> None:
    """In a fresh interpreter, importing rhetor's value objects loads no actor runtime, Quart, HTTP or SDK."""
    probe = (
        "import sys\n"
        "from rhetor import Chunk, LLMRequest, Reply, RoutingParameters\n"
        "heavy = ('actors', 'quart', 'hypercorn', 'httpx', 'anyio', 'trio', 'anthropic', 'openai',"
        " 'genai_prices', 'rhetor.routing', 'rhetor.runtime', 'rhetor.budget', 'rhetor.storage',"
        " 'rhetor.providers', 'rhetor.edge')\n"
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    assert loaded == "[]"
