"""
Fake upstream servers that speak each provider's real wire format over loopback.

Each ``fake_*()`` is an async context manager serving one fake on ``127.0.0.1`` at a
free port; script what the next requests get with ``fake.script(...)`` and the
behaviours below, and inspect ``fake.requests`` and ``fake.disconnected`` afterwards.
"""

from tests.fakes._server import (
    Behaviour,
    Cut,
    Fail,
    FakeUpstream,
    Hang,
    ReceivedRequest,
    Reply,
    Stall,
    StreamError,
)
from tests.fakes.anthropic import FakeAnthropic, fake_anthropic
from tests.fakes.ollama import FakeOllama, fake_ollama
from tests.fakes.openai import FakeOpenAI, fake_openai

__all__ = [
    "Behaviour",
    "Cut",
    "Fail",
    "FakeAnthropic",
    "FakeOllama",
    "FakeOpenAI",
    "FakeUpstream",
    "Hang",
    "ReceivedRequest",
    "Reply",
    "Stall",
    "StreamError",
    "fake_anthropic",
    "fake_ollama",
    "fake_openai",
]
