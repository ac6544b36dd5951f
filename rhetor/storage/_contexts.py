"""
ContextStore: the actor that owns conversation history, and the messages it answers.

History lives in a :class:`~rhetor.storage._interfaces.ContextHistory` (SQLite
today, see :mod:`rhetor.storage._history`), so it survives restarts.

Every LLM request with a ``context_id`` makes two asks: :class:`GetWindow`
before the provider call (the window arrives with its token cost) and
:class:`AppendTurns` after it (which also answers whether a summary is due).
A store call in a worker thread is a round trip that, under load, waits for
the busy event loop (and for the GIL at every SQLite step) far longer than
the query takes. So the actor keeps, for recently used contexts, what windows
and the summary check need (:class:`~rhetor.storage._interfaces.WindowState`),
and answers both from memory. The append is written on the loop's own thread
(:meth:`StoreActor.run_inline`): a SQLite commit in WAL mode at
``synchronous=NORMAL`` only appends to the log, which costs about half what
the thread hop did. The store is opened with ``autocheckpoint=False`` so that
no commit syncs the file; every 250 appends the actor checkpoints it in a
worker thread instead, as a message of its own, so no reply waits for it.

What is cached in memory, and why it is right: the window state of the
``cached_contexts`` most recently used contexts, each up to
``window_tokens`` of its newest messages. Writes go to the store first; the
cached state is updated only after an append succeeded, and dropped when an
append failed and before a summary or a delete (which then read the context
afresh). That is right only while this actor is the only writer of the
contexts it caches: the runtime holds the data directory's lock for it. Over
a store shared by several processes (PostgreSQL) the runtime turns the cache
off (``cached_contexts=0``: every window is read from the store), unless
something invalidates it when another process writes. A store whose writes
wait on a network (``inline_writes`` False) is appended to from a worker
thread, like every other call.
"""

from __future__ import annotations

import builtins
import logging
from collections import OrderedDict, deque
from collections.abc import Mapping
from typing import Any, ClassVar

import attrs

import actors
from rhetor._asks import Ask
from rhetor._tokens import MESSAGE_OVERHEAD, count_tokens
from rhetor._types import ChatMessage
from rhetor.storage._actor import StoreActor
from rhetor.storage._history import summary_cost, validate_context_id, window_of
from rhetor.storage._interfaces import (
    ContextHistory,
    ContextInfo,
    ContextRecord,
    ContextWindow,
    Entry,
    SearchHit,
    StoredMessage,
    WindowState,
)

__all__ = [
    "CHECKPOINT_EVERY",
    "AppendTurns",
    "Appended",
    "ContextStore",
    "DeleteContext",
    "GetContextInfo",
    "GetHistory",
    "GetWindow",
    "ListContexts",
    "NeedsSummary",
    "ReadContext",
    "SearchContexts",
    "SetSummary",
    "SharedContextStore",
]

log = logging.getLogger("rhetor.contexts")

# Appends between checkpoints of the store's write-ahead log: a few pages each,
# so the log stays near the 1,000 pages at which SQLite would checkpoint by itself.
CHECKPOINT_EVERY = 250

# -- messages ----------------------------------------------------------------------------


@attrs.frozen
class GetWindow(Ask[ContextWindow]):
    """
    The context's summary and newest messages within ``token_budget``, with their token cost.

    A context not yet written to has an empty window (no error), so a request
    can ask before its first append.
    """

    context_id: str
    token_budget: int


@attrs.frozen
class Appended:
    """
    What :class:`AppendTurns` did: the context's message count now, and whether it needs a summary.
    """

    count: int
    needs_summary: bool


@attrs.frozen
class AppendTurns(Ask[Appended]):
    """
    Add turns to a context (created if new), merging ``metadata`` into its own.

    Answered once the turns are durable. ``needs_summary`` in the answer says
    whether the unsummarised messages now cost more than ``summary_threshold``
    tokens (always False without a threshold).
    """

    context_id: str
    messages: tuple[ChatMessage, ...]
    metadata: Mapping[str, Any] | None = None
    summary_threshold: int | None = None


@attrs.frozen
class NeedsSummary(Ask[bool]):
    """
    Whether the context's unsummarised messages cost more than ``threshold_tokens``.
    """

    context_id: str
    threshold_tokens: int


@attrs.frozen
class GetHistory(Ask[builtins.list[StoredMessage]]):
    """
    The context's messages, oldest first (only the newest ``limit``); NotFound if unknown.
    """

    context_id: str
    limit: int | None = None


@attrs.frozen
class ReadContext(Ask[ContextRecord]):
    """
    The context's description and messages (the newest ``limit``) in one read; NotFound if unknown.
    """

    context_id: str
    limit: int | None = None


@attrs.frozen
class GetContextInfo(Ask[ContextInfo | None]):
    """
    The context's description, or None if there is no such context.
    """

    context_id: str


@attrs.frozen
class ListContexts(Ask[builtins.list[ContextInfo]]):
    """
    Contexts, most recently updated first.
    """

    limit: int = 100
    offset: int = 0


@attrs.frozen
class DeleteContext(Ask[bool]):
    """
    Delete a context and its messages; answers whether it existed.
    """

    context_id: str


@attrs.frozen
class SearchContexts(Ask[builtins.list[SearchHit]]):
    """
    Messages whose content contains ``query`` literally, newest first.
    """

    query: str
    limit: int = 20


@attrs.frozen
class SetSummary(Ask[None]):
    """
    Record that ``summary`` stands for the messages up to ``upto_seq``.
    """

    context_id: str
    summary: str
    upto_seq: int


# -- the actor ---------------------------------------------------------------------------


@attrs.frozen
class _Checkpoint:
    """The actor's note to itself: checkpoint the store's log now."""


@attrs.define(eq=False)
class _Cached:
    """
    The window state of one context, kept current by the actor's own writes.

    Invariant: ``recent`` is the newest unsummarised messages, oldest first,
    with costs adding up to ``recent_cost`` <= the cache's cap; ``complete``
    says it holds every unsummarised message; ``unsummarised`` is the cost of
    all of them. An unknown context is cached as ``exists=False`` and empty.
    """

    exists: bool
    summary: str | None
    summary_cost: int
    unsummarised: int
    recent: deque[Entry]
    recent_cost: int
    complete: bool

    @classmethod
    def of(cls, state: WindowState | None) -> _Cached:
        if state is None:
            return cls(False, None, 0, 0, deque(), 0, True)
        return cls(
            True,
            state.summary,
            summary_cost(state.summary),
            state.unsummarised,
            deque(state.recent),
            sum(cost for _, _, cost in state.recent),
            state.complete,
        )

    def needs_summary(self, threshold: int) -> bool:
        """Whether the unsummarised messages cost more than ``threshold``."""
        return self.exists and self.unsummarised > threshold

    def add(self, count: int, messages: tuple[ChatMessage, ...], cap: int) -> None:
        """Count ``messages``, just appended and bringing the context to ``count``, in."""
        self.exists = True
        first = count - len(messages) + 1
        for seq, m in enumerate(messages, start=first):
            cost = count_tokens(m.content) + MESSAGE_OVERHEAD
            self.recent.append((seq, ChatMessage(m.role, m.content), cost))
            self.recent_cost += cost
            self.unsummarised += cost
        while self.recent_cost > cap:
            _, _, cost = self.recent.popleft()
            self.recent_cost -= cost
            self.complete = False


@attrs.define(eq=False)
class ContextStore(StoreActor[ContextHistory]):
    """
    Answers the messages above from a :class:`ContextHistory`, windows from memory.

    Windows and summary checks are answered from memory for the
    ``cached_contexts`` most recently used contexts, holding up to
    ``window_tokens`` of each one's newest messages (windows asked with a
    larger budget read the store). ``cached_contexts=0`` turns the cache off.
    """

    _cap: int = attrs.field(default=8000, alias="window_tokens", kw_only=True)
    _max_cached: int = attrs.field(default=256, alias="cached_contexts", kw_only=True)
    # Invariant: at most _max_cached contexts, least recently used first; each
    # entry is what the store holds (see _Cached).
    _cache: OrderedDict[str, _Cached] = attrs.field(init=False, factory=OrderedDict)
    # Invariant: appends since the last checkpoint (or since a _Checkpoint was sent).
    _appends: int = attrs.field(init=False, default=0)

    async def handle(self, message: Any) -> Any:
        match message:
            case GetWindow():
                return await self._window(message.context_id, message.token_budget)
            case AppendTurns():
                return await self._append(message)
            case NeedsSummary():
                validate_context_id(message.context_id)
                cached = await self._cached(message.context_id)
                return cached.needs_summary(message.threshold_tokens)
            case GetHistory():
                return await self.run(
                    lambda s: s.history(message.context_id, limit=message.limit), "GetHistory"
                )
            case ReadContext():
                return await self.run(
                    lambda s: s.record(message.context_id, limit=message.limit), "ReadContext"
                )
            case GetContextInfo():
                return await self.run(lambda s: s.get(message.context_id), "GetContextInfo")
            case ListContexts():
                return await self.run(
                    lambda s: s.list(message.limit, message.offset), "ListContexts"
                )
            case SearchContexts():
                return await self.run(
                    lambda s: s.search(message.query, message.limit), "SearchContexts"
                )
            case DeleteContext():
                # Rare writes: forget the context, and read it afresh next time.
                self._cache.pop(message.context_id, None)
                return await self.run(lambda s: s.delete(message.context_id), "DeleteContext")
            case SetSummary():
                self._cache.pop(message.context_id, None)
                await self.run(
                    lambda s: s.set_summary(message.context_id, message.summary, message.upto_seq),
                    "SetSummary",
                )
                return None
            case _Checkpoint():
                await self._checkpoint()
                return None
        return await super().handle(message)

    async def _checkpoint(self) -> None:
        """The store's housekeeping, in a worker thread; a failure is logged, and retried later."""
        try:
            await self.run(lambda s: s.checkpoint(), "checkpoint")
        except actors.InvariantBroken:
            raise
        except Exception as exc:
            log.warning("context store checkpoint failed (the next one retries): %s", exc)

    async def _cached(self, context_id: str) -> _Cached:
        cached = self._cache.get(context_id)
        if cached is not None:
            self._cache.move_to_end(context_id)
            return cached
        cap = self._cap
        state = await self.run(lambda s: s.window_state(context_id, cap), "GetWindow")
        cached = self._cache[context_id] = _Cached.of(state)
        if len(self._cache) > self._max_cached:
            self._cache.popitem(last=False)
        return cached

    async def _window(self, context_id: str, token_budget: int) -> ContextWindow:
        # SQLiteHistory.window's walk (window_of), over the cached messages.
        validate_context_id(context_id)
        cached = await self._cached(context_id)
        if not cached.complete and token_budget - cached.summary_cost > self._cap:
            return await self.run(lambda s: s.window(context_id, token_budget), "GetWindow")
        return window_of(cached.summary, reversed(cached.recent), token_budget)

    async def _append(self, message: AppendTurns) -> Appended:
        context_id, messages, threshold = (
            message.context_id,
            message.messages,
            message.summary_threshold,
        )
        inline = self.store.inline_writes
        if not inline:
            # A store on a network is written in a worker thread: forget the
            # context first, so no window is answered from a cache the write changes.
            self._cache.pop(context_id, None)
        cached = self._cache.get(context_id)
        # An uncached context answers its summary check in the same store call.
        check = threshold is not None and cached is None

        def append(store: ContextHistory) -> tuple[int, bool]:
            return store.append_checked(
                context_id,
                messages,
                metadata=message.metadata,
                summary_threshold=threshold if check else None,
            )

        try:
            if inline:
                # On the loop's thread: nothing can interrupt it between the write
                # and the cache's update below.
                count, needs_summary = self.run_inline(append, "AppendTurns")
            else:
                count, needs_summary = await self.run(append, "AppendTurns")
        except Exception:
            # The store refused it, so nothing was written; forget the context
            # anyway rather than guess what it holds.
            self._cache.pop(context_id, None)
            raise
        self._appends += 1
        if self._appends >= CHECKPOINT_EVERY and self.ref.try_tell(_Checkpoint()):
            self._appends = 0
        cached = self._cache.get(context_id)
        if cached is not None:
            cached.add(count, messages, self._cap)
            if threshold is not None:
                needs_summary = cached.needs_summary(threshold)
        return Appended(count, needs_summary)


@attrs.define(eq=False)
class SharedContextStore(ContextStore):
    """
    A ContextStore over a store other processes write too (PostgreSQL): no cache, calls at once.

    With nothing cached, the actor holds no state its calls could race on, and
    the store is safe from many threads (each call borrows a pooled
    connection; the database keeps appends to one context in order). So it
    answers up to ``max_concurrency`` messages at once instead of one at a
    time, each waiting on the network in a worker thread of its own.
    """

    max_concurrency: ClassVar[int] = 64

    def __attrs_post_init__(self) -> None:
        self._max_cached = 0
