"""
The provider backend protocol: what a ProviderActor asks of the upstream it owns.

The built-in backends (:mod:`rhetor.providers._anthropic`, :mod:`rhetor.providers._openai`,
:mod:`rhetor.providers._ollama`, :mod:`rhetor.providers._simulated`) implement it, and
``rhetor.runtime.start(backends=...)`` takes any object that does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from rhetor._types import (
    CitationDelta,
    ProviderReply,
    ProviderRequest,
    ProviderStatus,
    StreamEnd,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
)

__all__ = ["ProviderBackend"]


class ProviderBackend(Protocol):
    """
    One upstream, reached over its own wire protocol.

    A backend translates its transport's and its upstream's failures into
    :mod:`rhetor._errors` in exactly one place. Cancelling a call closes the
    upstream request.
    """

    name: str

    async def check(self) -> ProviderStatus:
        """Probe availability and list models; never raises for an unreachable upstream."""
        ...

    async def complete(self, request: ProviderRequest) -> ProviderReply:
        """One whole completion; raises a :class:`rhetor.ProviderError` subclass on failure."""
        ...

    def stream(
        self, request: ProviderRequest
    ) -> AsyncIterator[TextDelta | ToolCallDelta | ThinkingDelta | CitationDelta | StreamEnd]:
        """
        Stream text and tool-call deltas, ending with exactly one :class:`StreamEnd` (an async generator).
        """
        ...

    async def aclose(self) -> None:
        """Close the HTTP client and its pooled connections."""
        ...
