"""
ContextStore: the actor that owns conversation history.

History lives in SQLite (see :mod:`rhetor.storage._history`), so it survives restarts.

Every LLM request with a ``context_id`` asks for the context's window before
the provider call and appends the new turns after it (then asks whether the
context needs a summary). Each store call is a round trip to a worker thread,
and under load such a round trip waits for the busy event loop (and for the
GIL at every SQLite step) for far longer than the query takes. So the actor
keeps, for recently used contexts, what the windows and the summary check
need (:class:`~rhetor.storage._history.WindowState`), and answers those two from
memory. Writes still go to SQLite in the worker thread first; the cached state
is updated only after a write succeeded, and dropped when a write may have
happened without the actor seeing its result (an error or cancellation).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import attrs

from rhetor._tokens import MESSAGE_OVERHEAD, count_tokens
from rhetor._types import ChatMessage
from rhetor.storage._actor import StoreActor
from rhetor.storage._history import (
    Entry,
    HistoryStore,
    WindowState,
    newest_within,
    summary_cost,
    validate_context_id,
)

__all__ = ["ContextStore"]


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


class ContextStore(StoreActor):
    """
    Answers :class:`rhetor.storage._actor.StoreCall` for the history store's operations.

    ``window`` and ``needs_summary`` are answered from memory for the
    ``cached_contexts`` most recently used contexts, holding up to
    ``window_tokens`` of each one's newest messages (windows asked with a
    larger budget read the database).
    """

    allowed: ClassVar[frozenset[str]] = frozenset(
        {
            "append",
            "history",
            "window",
            "get",
            "list",
            "delete",
            "search",
            "set_summary",
            "needs_summary",
        }
    )

    def __init__(
        self, path: Path, *, window_tokens: int = 8000, cached_contexts: int = 256
    ) -> None:
        super().__init__(lambda: HistoryStore(path))
        self._cap = window_tokens
        self._max_cached = cached_contexts
        # Least recently used first.
        self._cache: OrderedDict[str, _Cached] = OrderedDict()

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if method == "window":
            return await self._window(*args, **kwargs)
        if method == "needs_summary":
            return await self._needs_summary(*args, **kwargs)
        if method == "append":
            return await self._append(*args, **kwargs)
        if method in ("delete", "set_summary"):
            return await self._forget_then(method, *args, **kwargs)
        return await super().call(method, *args, **kwargs)

    async def _forget_then(self, method: str, context_id: str, *args: Any, **kwargs: Any) -> Any:
        # Rare writes: forget the context, and read it afresh next time.
        self._cache.pop(context_id, None)
        return await super().call(method, context_id, *args, **kwargs)

    async def _cached(self, context_id: str) -> _Cached:
        cached = self._cache.get(context_id)
        if cached is not None:
            self._cache.move_to_end(context_id)
            return cached
        state = await super().call("window_state", context_id, self._cap)
        cached = self._cache[context_id] = _Cached.of(state)
        if len(self._cache) > self._max_cached:
            self._cache.popitem(last=False)
        return cached

    async def _window(
        self, context_id: str, token_budget: int
    ) -> tuple[str | None, list[ChatMessage]]:
        # HistoryStore.window's walk (newest_within), over the cached messages.
        validate_context_id(context_id)
        cached = await self._cached(context_id)
        remaining = token_budget - cached.summary_cost
        if not cached.complete and remaining > self._cap:
            return await super().call("window", context_id, token_budget)  # type: ignore[no-any-return]
        kept, _ = newest_within(reversed(cached.recent), remaining)
        return cached.summary, [m for _, m, _ in reversed(kept)]

    async def _needs_summary(self, context_id: str, threshold_tokens: int) -> bool:
        validate_context_id(context_id)
        cached = await self._cached(context_id)
        return cached.exists and cached.unsummarised > threshold_tokens

    async def _append(
        self,
        context_id: str,
        messages: Sequence[ChatMessage],
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> int:
        try:
            count: int = await super().call("append", context_id, messages, metadata=metadata)
        except BaseException:
            # The store refused it (nothing was written) or the wait was
            # interrupted: forget the context rather than guess what it holds.
            self._cache.pop(context_id, None)
            raise
        cached = self._cache.get(context_id)
        if cached is not None:
            cached.exists = True
            first = count - len(messages) + 1
            for seq, m in enumerate(messages, start=first):
                cost = count_tokens(m.content) + MESSAGE_OVERHEAD
                cached.recent.append((seq, ChatMessage(m.role, m.content), cost))
                cached.recent_cost += cost
                cached.unsummarised += cost
            while cached.recent_cost > self._cap:
                _, _, cost = cached.recent.popleft()
                cached.recent_cost -= cost
                cached.complete = False
        return count
