"""
ProviderActor: one supervised actor per upstream provider.

It owns its backend (and so its HTTP client) and its health state. Requests
run concurrently inside the actor; a failed upstream call is an answer (a
:class:`rhetor.ProviderError`), not a crash.

The built-in backends check every upstream reply at their one translation point
(usage included). The actor still checks what any backend hands it, since
``runtime.start(backends=...)`` takes backends Rhetor did not write: a reply of the
wrong shape is that request's :class:`rhetor.UpstreamServerError`, token counts
that are not non-negative numbers are billed as unknown (``usage_valid=False``;
negative ones count as zero so that they can never credit the budget), fractions
are rounded, and a health check that raises or answers nonsense marks the provider unavailable.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, ClassVar

import anyio
import anyio.abc
import attrs

import actors
from rhetor._errors import ProviderError, ProviderUnavailable, UpstreamServerError
from rhetor._redact import redact
from rhetor._types import (
    CitationDelta,
    CitedText,
    ProviderReply,
    ProviderRequest,
    ProviderStatus,
    StreamEnd,
    TextDelta,
    Thinking,
    ThinkingDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from rhetor.providers._backend import ProviderBackend
from rhetor.providers._wire import preview, token_count

__all__ = [
    "CheckHealth",
    "Complete",
    "CountTokens",
    "GetStatus",
    "ProviderActor",
    "StreamCompletion",
]

log = logging.getLogger("rhetor.provider")


@attrs.frozen
class Complete:
    """Ask for a whole completion; answers a :class:`ProviderReply`."""

    request: ProviderRequest


@attrs.frozen
class StreamCompletion:
    """Stream a completion: :class:`TextDelta` and :class:`ToolCallDelta` items, then one :class:`StreamEnd`."""

    request: ProviderRequest


@attrs.frozen
class CountTokens:
    """
    Count a request's input tokens as the provider counts them; None when its backend cannot.
    """

    request: ProviderRequest


@attrs.frozen
class GetStatus:
    """Answer the last known :class:`ProviderStatus` without probing."""


@attrs.frozen
class CheckHealth:
    """Probe the upstream now; answers the fresh :class:`ProviderStatus`."""


@attrs.define(eq=False)
class ProviderActor(actors.Actor):
    """
    Serves completions from one backend and tracks whether it is up.

    ``backend_factory`` makes the backend (and so its HTTP client) afresh for each
    incarnation; ``health_interval`` is the seconds between probes (0: none after
    the first).

    Cancellation: cancelling an ask or leaving a stream early cancels the
    backend call, which closes the upstream HTTP request.

    Error handling: backend failures are :class:`ProviderError` answers; a
    failed call marks nothing down by itself (the router decides retries). A
    backend answer of the wrong shape is that request's ``UpstreamServerError``;
    a health check that fails in any way marks the provider unavailable.
    """

    max_concurrency: ClassVar[int] = 4096
    errors: ClassVar[tuple[type[BaseException], ...]] = (ProviderError,)
    contained: ClassVar[tuple[type[Exception], ...]] = (Exception,)

    _factory: Callable[[], ProviderBackend] = attrs.field(alias="backend_factory")
    _health_interval: float = attrs.field(default=30.0, kw_only=True, alias="health_interval")
    # Invariant: None until started(), then this incarnation's backend.
    _backend: ProviderBackend | None = attrs.field(init=False, default=None)
    _backend_closed: bool = attrs.field(init=False, default=False)
    # Invariant: reflects the latest probe; unavailable until the first one.
    _status: ProviderStatus = attrs.field(
        init=False, factory=lambda: ProviderStatus("unknown", False, (), "not checked yet")
    )

    @property
    def backend(self) -> ProviderBackend:
        """
        This incarnation's backend (made in :meth:`started`).
        """
        assert self._backend is not None, "used before started()"
        return self._backend

    async def started(self) -> None:
        """
        Make the backend, arrange for it to close at exit, and probe it once.
        """
        self._backend = self._factory()
        # The runtime skips stopping() when an incarnation crashes; this task's
        # cancellation closes the backend (its HTTP client and pooled sockets) anyway.
        await self.task_group.start(self._close_backend_at_exit)
        self._status = await self._checked_status()
        if self._health_interval > 0:
            self.task_group.start_soon(self._watch_health)

    async def stopping(self) -> None:
        """
        Close the backend and its pooled connections.
        """
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
        self._status = await self._checked_status()
        return self._status

    async def _checked_status(self) -> ProviderStatus:
        """
        The backend's status, probed within 5 s; unavailable when the probe fails in any way.

        Error handling: never raises (cancellation aside). A check() that raises, or
        answers something other than a status, is logged and means unavailable.
        """
        name = self.backend.name
        known = self._status.models
        with anyio.move_on_after(5.0):
            try:
                status: object = await self.backend.check()
            except Exception as exc:
                log.exception("%s health check raised; marked unavailable", name)
                reason = redact(f"health check failed: {exc!r:.200}")
                return ProviderStatus(name, False, known, reason)
            if not isinstance(status, ProviderStatus) or not _is_status(status):
                log.error("%s health check answered %r; marked unavailable", name, type(status))
                return ProviderStatus(name, False, known, "health check answered no status")
            return status
        return ProviderStatus(name, False, known, "health check timed out")

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
            try:
                reply = await self.backend.complete(message.request)
            except ProviderError as exc:
                self._failed(exc)
                raise
            return self._checked_reply(reply, message.request)
        if isinstance(message, CountTokens):
            count = getattr(self.backend, "count_tokens", None)
            if count is None:
                return None
            self._require_available(message.request)
            try:
                counted = await count(message.request)
            except ProviderError as exc:
                self._failed(exc)
                raise
            if type(counted) is not int or counted < 0:
                raise self._malformed(counted, message.request)
            return counted
        if isinstance(message, GetStatus):
            return self._status
        if isinstance(message, CheckHealth):
            return await self._probe()
        raise TypeError(f"ProviderActor cannot handle {type(message).__name__}")

    async def handle_stream(
        self, message: Any
    ) -> AsyncIterator[TextDelta | ToolCallDelta | ThinkingDelta | CitationDelta | StreamEnd]:
        if not isinstance(message, StreamCompletion):
            raise TypeError(f"ProviderActor cannot stream {type(message).__name__}")
        self._require_available(message.request)
        stream = self.backend.stream(message.request)
        try:
            async for item in stream:
                yield self._checked_item(item, message.request)
        except ProviderError as exc:
            self._failed(exc)
            raise
        finally:
            # Close the upstream at once, even when the reader left early.
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True), anyio.move_on_after(2.0):
                    await aclose()

    def _failed(self, exc: ProviderError) -> None:
        # The router decides what a failure means; this keeps the upstream's own
        # words (the cause chain) for whoever debugs it. Log redaction applies.
        log.debug("%s call failed: %s: %s", self.backend.name, exc.code, exc.message, exc_info=exc)

    def _checked_reply(self, reply: object, request: ProviderRequest) -> ProviderReply:
        """
        ``reply`` when it is a well-formed reply, its usage checked; else this request's error.
        """
        if (
            not isinstance(reply, ProviderReply)
            or not all(
                isinstance(field, str) for field in (reply.text, reply.model, reply.finish_reason)
            )
            or not isinstance(reply.tool_calls, tuple)
            or not all(_is_call(c) for c in reply.tool_calls)
            or not isinstance(reply.thinking, tuple)
            or not all(_is_thinking(t) for t in reply.thinking)
            or not isinstance(reply.cited, tuple)
            or not all(_is_cited(c) for c in reply.cited)
        ):
            raise self._malformed(reply, request)
        text = well_formed(reply.text)
        if text is not reply.text:
            reply = attrs.evolve(reply, text=text)
        calls = tuple(_mended_call(c) for c in reply.tool_calls)
        if any(a is not b for a, b in zip(calls, reply.tool_calls, strict=True)):
            reply = attrs.evolve(reply, tool_calls=calls)
        thinking = tuple(_mended_thinking(t) for t in reply.thinking)
        if any(a is not b for a, b in zip(thinking, reply.thinking, strict=True)):
            reply = attrs.evolve(reply, thinking=thinking)
        usage, valid = _checked_usage(self.backend.name, reply.usage)
        if usage is reply.usage:
            return reply
        return attrs.evolve(reply, usage=usage, usage_valid=valid and reply.usage_valid)

    def _checked_item(
        self, item: object, request: ProviderRequest
    ) -> TextDelta | ToolCallDelta | ThinkingDelta | CitationDelta | StreamEnd:
        """
        ``item`` when it is a well-formed stream item, usage checked; else this request's error.
        """
        if isinstance(item, TextDelta) and isinstance(item.text, str):
            text = well_formed(item.text)
            return item if text is item.text else TextDelta(text)
        if isinstance(item, ToolCallDelta):
            if not _is_delta(item):
                raise self._malformed(item, request)
            return _mended_delta(item)
        if isinstance(item, ThinkingDelta):
            if not _is_thinking_delta(item):
                raise self._malformed(item, request)
            return _mended_thinking_delta(item)
        if isinstance(item, CitationDelta):
            if not isinstance(item.citation, Mapping):
                raise self._malformed(item, request)
            return item
        if not isinstance(item, StreamEnd) or not all(
            isinstance(field, str) for field in (item.model, item.finish_reason)
        ):
            raise self._malformed(item, request)
        usage, valid = _checked_usage(self.backend.name, item.usage)
        if usage is item.usage:
            return item
        return attrs.evolve(item, usage=usage, usage_valid=valid and item.usage_valid)

    def _malformed(self, answer: object, request: ProviderRequest) -> UpstreamServerError:
        name = self.backend.name
        log.error("%s backend answered %r, not a reply; the request fails", name, type(answer))
        return UpstreamServerError(
            f"malformed reply from {name}: the backend answered {type(answer).__name__}",
            provider=name,
            model=request.model,
        )


def well_formed(text: str) -> str:
    """
    ``text`` itself when it is valid Unicode; else a copy with each lone surrogate as U+FFFD.

    JSON lets an upstream send an escaped lone surrogate (``"\\ud800"``). Such a
    string cannot be encoded as UTF-8, so it could be neither stored in a
    context nor sent to a client; the reply is billed by then, so it is mended
    here rather than refused later.
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def _is_call(call: object) -> bool:
    return isinstance(call, ToolCall) and all(
        isinstance(part, str) for part in (call.id, call.name, call.arguments)
    )


def _mended_call(call: ToolCall) -> ToolCall:
    """``call`` itself, or a copy with its strings made valid Unicode (see :func:`well_formed`)."""
    given = (call.id, call.name, call.arguments)
    parts = tuple(well_formed(p) for p in given)
    if all(a is b for a, b in zip(parts, given, strict=True)):
        return call
    return ToolCall(*parts)


def _is_cited(block: object) -> bool:
    return (
        isinstance(block, CitedText)
        and isinstance(block.text, str)
        and isinstance(block.citations, tuple)
        and all(isinstance(c, Mapping) for c in block.citations)
    )


def _is_thinking(block: object) -> bool:
    return isinstance(block, Thinking) and (
        isinstance(block.text, str)
        and isinstance(block.signature, str)
        and isinstance(block.redacted, str | None)
    )


def _mended_thinking(block: Thinking) -> Thinking:
    """``block`` itself, or a copy with its strings made valid Unicode (see :func:`well_formed`)."""
    text, signature = well_formed(block.text), well_formed(block.signature)
    redacted = None if block.redacted is None else well_formed(block.redacted)
    if text is block.text and signature is block.signature and redacted is block.redacted:
        return block
    return Thinking(text, signature, redacted)


def _is_thinking_delta(delta: ThinkingDelta) -> bool:
    return (
        type(delta.index) is int
        and delta.index >= 0
        and isinstance(delta.text, str)
        and isinstance(delta.signature, str)
        and isinstance(delta.redacted, str | None)
    )


def _mended_thinking_delta(delta: ThinkingDelta) -> ThinkingDelta:
    block = _mended_thinking(Thinking(delta.text, delta.signature, delta.redacted))
    given = (delta.text, delta.signature, delta.redacted)
    if all(
        a is b for a, b in zip((block.text, block.signature, block.redacted), given, strict=True)
    ):
        return delta
    return ThinkingDelta(delta.index, block.text, block.signature, block.redacted)


def _is_delta(delta: ToolCallDelta) -> bool:
    return (
        type(delta.index) is int
        and delta.index >= 0
        and all(isinstance(p, str | None) for p in (delta.id, delta.name))
        and isinstance(delta.arguments, str)
    )


def _mended_delta(delta: ToolCallDelta) -> ToolCallDelta:
    parts = [None if p is None else well_formed(p) for p in (delta.id, delta.name)]
    arguments = well_formed(delta.arguments)
    if parts[0] is delta.id and parts[1] is delta.name and arguments is delta.arguments:
        return delta
    return ToolCallDelta(delta.index, parts[0], parts[1], arguments)


def _is_status(status: object) -> bool:
    return (
        isinstance(status, ProviderStatus)
        and isinstance(status.name, str)
        and isinstance(status.available, bool)
        and isinstance(status.reason, str)
        and isinstance(status.models, tuple)
        and all(isinstance(m, str) for m in status.models)
    )


def _checked_usage(provider: str, usage: object) -> tuple[Usage, bool]:
    """
    The usage to bill for what a backend reported, and whether it was a valid report.

    Two whole counts pass as they are (the same object). Finite non-negative
    floats are rounded (12.7 is 13 tokens) and still valid. Anything else keeps
    what is a count and counts the rest as zero, negative counts included (a
    hostile upstream must never be priced at a negative cost and credit the
    budget); the reply then says ``usage_valid=False``.
    """
    counts = (getattr(usage, "input_tokens", None), getattr(usage, "output_tokens", None))
    whole = tuple(token_count(n) for n in counts)
    details = (
        getattr(usage, "cached_input_tokens", None),
        getattr(usage, "reasoning_tokens", None),
        getattr(usage, "cache_write_tokens", None),
        getattr(usage, "cache_write_1h_tokens", None),
    )
    parts = tuple(token_count(n) or 0 for n in details)
    if isinstance(usage, Usage) and None not in whole:
        if (
            all(type(n) is int for n in (*counts, *details))
            and parts == details
            and parts[0] <= usage.input_tokens
            and parts[1] <= usage.output_tokens
            and parts[2] <= usage.input_tokens
            and parts[3] <= parts[2]
        ):
            return usage, True
        inputs, outputs = (n or 0 for n in whole)
        written = min(parts[2], inputs)
        checked = Usage(
            inputs,
            outputs,
            min(parts[0], inputs),
            min(parts[1], outputs),
            written,
            min(parts[3], written),
        )
        return checked, True
    log.warning("%s backend reported token usage %s; billed as unknown", provider, preview(usage))
    return Usage(*(n or 0 for n in whole)), False
