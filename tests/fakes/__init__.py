"""
Fake upstream servers that speak each provider's real wire format over loopback.

Each ``fake_*()`` is an async context manager serving one fake on ``127.0.0.1`` at a
free port; script what the next requests get with ``fake.script(...)`` and the
behaviours below, and inspect ``fake.requests`` and ``fake.disconnected`` afterwards.
"""

import importlib
from typing import TYPE_CHECKING, Any

from tests.fakes._server import (
    UNSET,
    Behaviour,
    Call,
    Cut,
    Fail,
    FakeUpstream,
    Garbled,
    Hang,
    Raw,
    ReceivedRequest,
    Recorded,
    Reply,
    Stall,
    StreamError,
)

if TYPE_CHECKING:
    from tests.fakes.anthropic import FakeAnthropic, fake_anthropic
    from tests.fakes.ollama import FakeOllama, fake_ollama
    from tests.fakes.openai import FakeOpenAI, fake_openai

# The provider fakes load on first use, so that `python -m tests.fakes.openai` runs
# a module the package has not already imported.
_LAZY = {
    "FakeAnthropic": "anthropic",
    "fake_anthropic": "anthropic",
    "FakeOllama": "ollama",
    "fake_ollama": "ollama",
    "FakeOpenAI": "openai",
    "fake_openai": "openai",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"tests.fakes.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "UNSET",
    "Behaviour",
    "Call",
    "Cut",
    "Fail",
    "FakeAnthropic",
    "FakeOllama",
    "FakeOpenAI",
    "FakeUpstream",
    "Garbled",
    "Hang",
    "Raw",
    "ReceivedRequest",
    "Recorded",
    "Reply",
    "Stall",
    "StreamError",
    "fake_anthropic",
    "fake_ollama",
    "fake_openai",
]
