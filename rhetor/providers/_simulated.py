"""
The simulated provider: Rhetor's embedded default when no real provider is set.

It answers deterministically, so the whole request path (routing, budget,
context, streaming) runs end to end with no keys and no network. Its token
counts are real counts of what it read and wrote; its price is zero unless a
price override says otherwise.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence

import anyio
import attrs

from rhetor._errors import BadRequest, ProviderUnavailable
from rhetor._tokens import count_message_tokens, count_tokens
from rhetor._types import (
    ChatMessage,
    ProviderReply,
    ProviderRequest,
    ProviderStatus,
    StreamEnd,
    TextDelta,
    Usage,
)

__all__ = ["SimulatedBackend"]

_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_CHUNK = re.compile(r"\S+\s*")


def _summarise(text: str, max_sentences: int = 3) -> str:
    sentences = [s.strip() for s in _SENTENCE.split(text.strip()) if s.strip()]
    if not sentences:
        return "Nothing to summarise."
    head = " ".join(sentences[:max_sentences])
    return f"Summary ({len(sentences)} sentences, {count_tokens(text)} tokens): {head}"


def compose_reply(model: str, messages: Sequence[ChatMessage], system: str | None) -> str:
    """
    The simulated model's deterministic answer to a conversation.

    ``*-summary`` models summarise the whole conversation; the others echo the
    last user turn and say how much history and which system prompt they saw,
    which makes context and prompt handling visible in tests and demos.
    """
    last = next((m.content for m in reversed(messages) if m.role == "user"), "")
    if model.endswith("summary"):
        return _summarise("\n".join(m.content for m in messages))
    earlier = len(messages) - 1
    parts = [f"[simulated] You said: {last}"]
    if earlier > 0:
        parts.append(f"(I can see {earlier} earlier message{'s' if earlier != 1 else ''}.)")
    if system:
        parts.append(f"(System prompt: {system[:80]})")
    return " ".join(parts)


@attrs.define(eq=False)
class SimulatedBackend:
    """
    A :class:`rhetor._types.ProviderBackend` that needs nothing outside the process.
    """

    name: str = "simulated"
    models: tuple[str, ...] = ("simulated-echo", "simulated-summary")
    chunk_delay: float = 0.0
    available: bool = True

    async def check(self) -> ProviderStatus:
        return ProviderStatus(
            self.name, self.available, self.models, "" if self.available else "disabled"
        )

    def _validate(self, request: ProviderRequest) -> None:
        if not self.available:
            raise ProviderUnavailable("simulated provider is disabled", provider=self.name)
        if request.model not in self.models:
            raise BadRequest(
                f"unknown model {request.model!r}", provider=self.name, model=request.model
            )

    def _reply_text(self, request: ProviderRequest) -> tuple[str, Usage]:
        text = compose_reply(request.model, request.messages, request.system)
        output = count_tokens(text)
        if request.max_tokens is not None and output > request.max_tokens:
            kept: list[str] = []
            output = 0
            for word in _CHUNK.findall(text):
                cost = count_tokens(word)
                if output + cost > request.max_tokens:
                    break
                kept.append(word)
                output += cost
            text = "".join(kept)
        usage = Usage(count_message_tokens(request.messages, request.system), output)
        return text, usage

    async def complete(self, request: ProviderRequest) -> ProviderReply:
        self._validate(request)
        text, usage = self._reply_text(request)
        if self.chunk_delay > 0:
            await anyio.sleep(self.chunk_delay)
        return ProviderReply(text=text, model=request.model, usage=usage)

    async def stream(self, request: ProviderRequest) -> AsyncIterator[TextDelta | StreamEnd]:
        self._validate(request)
        text, usage = self._reply_text(request)
        produced: list[str] = []
        for piece in _CHUNK.findall(text):
            if self.chunk_delay > 0:
                await anyio.sleep(self.chunk_delay)
            produced.append(piece)
            yield TextDelta(piece)
        yield StreamEnd(usage=usage, model=request.model)

    async def aclose(self) -> None:
        return None
