"""
ProviderActor: one supervised actor per upstream provider.

It owns its backend (and so its HTTP client) and its health state. Requests
run concurrently inside the actor; a failed upstream call is an answer (a
:class:`rhetor.ProviderError`), not a crash.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar

import anyio
import anyio.abc
import attrs

import actors
from rhetor._errors import ProviderError, ProviderUnavailable
from rhetor._types import (
    ProviderBackend,
    ProviderRequest,
    ProviderStatus,
    StreamEnd,
    TextDelta,
    Usage,
)

__all__ = ["CheckHealth", "Complete", "GetStatus", "ProviderActor", "StreamCompletion"]

log = logging.getLogger("rhetor.provider")


@attrs.frozen
class Complete:
    """Ask for a whole completion; answers a :class:`ProviderReply`."""

    request: ProviderRequest


@attrs.frozen
class StreamCompletion:
    """Stream a completion: :class:`TextDelta` items, then one :class:`StreamEnd`."""

    request: ProviderRequest


@attrs.frozen
class GetStatus:
    """Answer the last known :class:`ProviderStatus` without probing."""


@attrs.frozen
class CheckHealth:
    """Probe the upstream now; answers the fresh :class:`ProviderStatus`."""


class ProviderActor(actors.Actor):
    """
    Serves completions from one backend and tracks whether it is up.

    Cancellation: cancelling an ask or leaving a stream early cancels the
    backend call, which closes the upstream HTTP request.

    Error handling: backend failures are :class:`ProviderError` answers; a
    failed call marks nothing down by itself (the router decides retries), but
    connection-level failures refresh the health probe.
    """

    max_concurrency: ClassVar[int] = 4096
    errors: ClassVar[tuple[type[BaseException], ...]] = (ProviderError,)
    contained: ClassVar[tuple[type[Exception], ...]] = (Exception,)

    def __init__(
        self,
        backend_factory: Callable[[], ProviderBackend],
        *,
        health_interval: float = 30.0,
    ) -> None:
        self._factory = backend_factory
        self._health_interval = health_interval
        self._backend: ProviderBackend | None = None
        self._backend_closed = False
        # Invariant: reflects the latest probe; unavailable until the first one.
        self._status = ProviderStatus("unknown", False, (), "not checked yet")

    @property
    def backend(self) -> ProviderBackend:
        assert self._backend is not None, "used before started()"
        return self._backend

    async def started(self) -> None:
        self._backend = self._factory()
        # The runtime skips stopping() when an incarnation crashes; this task's
        # cancellation closes the backend (its HTTP client and pooled sockets) anyway.
        await self.task_group.start(self._close_backend_at_exit)
        with anyio.move_on_after(5.0):
            self._status = await self._backend.check()
        if self._status.name == "unknown":
            self._status = ProviderStatus(self._backend.name, False, (), "health check timed out")
        if self._health_interval > 0:
            self.task_group.start_soon(self._watch_health)

    async def stopping(self) -> None:
        await self._close_backend()

    async def _close_backend(self) -> None:
        if self._backend is None or self._backend_closed:
            return
        self._backend_closed = True
        with anyio.move_on_after(2.0, shield=True):
            await self._backend.aclose()

    async def _close_backend_at_exit(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            task_status.started()
            await anyio.sleep_forever()
        finally:
            await self._close_backend()

    async def _watch_health(self) -> None:
        while True:
            await anyio.sleep(self._health_interval)
            await self._probe()

    async def _probe(self) -> ProviderStatus:
        with anyio.move_on_after(5.0):
            self._status = await self.backend.check()
            return self._status
        self._status = ProviderStatus(
            self.backend.name, False, self._status.models, "health check timed out"
        )
        return self._status

    def _require_available(self, request: ProviderRequest) -> None:
        if not self._status.available:
            raise ProviderUnavailable(
                f"{self.backend.name} is unavailable: {self._status.reason}",
                provider=self.backend.name,
                model=request.model,
            )

    async def handle(self, message: Any) -> Any:
        if isinstance(message, Complete):
            self._require_available(message.request)
            reply = await self.backend.complete(message.request)
            if _has_negative(reply.usage):
                reply = attrs.evolve(reply, usage=_clamped(reply.usage))
            return reply
        if isinstance(message, GetStatus):
            return self._status
        if isinstance(message, CheckHealth):
            return await self._probe()
        raise TypeError(f"ProviderActor cannot handle {type(message).__name__}")

    async def handle_stream(self, message: Any) -> AsyncIterator[TextDelta | StreamEnd]:
        if not isinstance(message, StreamCompletion):
            raise TypeError(f"ProviderActor cannot stream {type(message).__name__}")
        self._require_available(message.request)
        stream = self.backend.stream(message.request)
        try:
            async for item in stream:
                if isinstance(item, StreamEnd) and _has_negative(item.usage):
                    item = attrs.evolve(item, usage=_clamped(item.usage))
                yield item
        finally:
            # Close the upstream at once, even when the reader left early.
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True), anyio.move_on_after(2.0):
                    await aclose()


def _has_negative(usage: Usage) -> bool:
    return usage.input_tokens < 0 or usage.output_tokens < 0


def _clamped(usage: Usage) -> Usage:
    """
    Negative token counts from an upstream, as zero.

    No real provider reports them, but a buggy or hostile upstream that did
    would otherwise be priced at a negative cost and credit the budget.
    """
    log.warning("upstream reported negative token usage %s; counted as zero", usage)
    return Usage(max(0, usage.input_tokens), max(0, usage.output_tokens))
