"""
What the HTTP edge's tests share: a served app with a client, SSE parsing, a failing provider.

``served()`` runs the real server (``tests.helpers.running_server``) with
``settings_for(tmp_path, **overrides)`` and yields it with an httpx client on
its base URL; ``runtime_kwargs`` go to the runtime (``backends``, ...).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx

from rhetor._errors import ProviderUnavailable, UpstreamConnectionError
from rhetor._types import ProviderReply, ProviderRequest, ProviderStatus, StreamEnd, TextDelta
from tests.helpers import ServerInfo, running_server, settings_for

__all__ = ["JSON", "BrokenBackend", "events", "served"]

JSON = {"Content-Type": "application/json"}


@asynccontextmanager
async def served(
    tmp_path: Path, runtime_kwargs: dict[str, Any] | None = None, **overrides: Any
) -> AsyncIterator[tuple[ServerInfo, httpx.AsyncClient]]:
    """The real server on ``settings_for(tmp_path, **overrides)``, and a client of it."""
    async with (
        running_server(settings_for(tmp_path, **overrides), **(runtime_kwargs or {})) as server,
        # verify=False: plain HTTP, and it skips loading CA certificates (20 ms a client).
        httpx.AsyncClient(base_url=server.base_url, timeout=5, verify=False) as client,
    ):
        yield server, client


def events(text: str) -> list[dict[str, Any]]:
    """The JSON of every ``data:`` event in an SSE body."""
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


def named_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """Every event of an SSE body whose events are named (Anthropic's): ``(event, its JSON)``."""
    blocks = [b.split("\n") for b in text.split("\n\n") if b.strip()]
    return [(b[0].removeprefix("event: "), json.loads(b[1].removeprefix("data: "))) for b in blocks]


@attrs.define
class BrokenBackend:
    """A provider that fails: before anything (``mid_stream=False``) or after one chunk."""

    name: str = "simulated"
    mid_stream: bool = False
    models: tuple[str, ...] = ("simulated-echo", "simulated-summary")

    async def check(self) -> ProviderStatus:
        return ProviderStatus(self.name, True, self.models, "")

    async def complete(self, request: ProviderRequest) -> ProviderReply:
        raise ProviderUnavailable("down for the test", provider=self.name, model=request.model)

    async def stream(self, request: ProviderRequest) -> AsyncIterator[TextDelta | StreamEnd]:
        if self.mid_stream:
            yield TextDelta("partial ")
            raise UpstreamConnectionError("dropped", provider=self.name, model=request.model)
        raise ProviderUnavailable("down for the test", provider=self.name, model=request.model)

    async def aclose(self) -> None:
        return None
