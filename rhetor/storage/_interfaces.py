"""
What Rhetor stores about conversations, and the interfaces of the stores that keep it.

The stores are ``typing.Protocol`` classes named for what they hold:

- :class:`Store`: what every store is to its actor, something to check and to close;
- :class:`ContextHistory`: conversation contexts (their messages, summary and metadata);
- the prompt library's (:class:`~rhetor.storage._library_interfaces.TemplateLibrary`,
  :class:`~rhetor.storage._library_interfaces.SystemPrompts` and
  :class:`~rhetor.storage._library_interfaces.Library`) are in
  :mod:`rhetor.storage._library_interfaces`.

(The budget ledger's interface, :class:`rhetor.budget.BudgetLedger`, lives
beside the ledger in ``rhetor.budget``, since its rows are the budget's.)

Each has a SQLite implementation for one process
(:class:`~rhetor.storage._history.SQLiteHistory`,
:class:`~rhetor.storage._library.SQLiteLibrary`) and a PostgreSQL one shared
by any number of processes (:class:`~rhetor.storage._pg_history.PostgresHistory`,
:class:`~rhetor.storage._pg_library.PostgresLibrary`). A store is synchronous
and used by one actor, one call at a time, from a worker thread; each call is
one transaction. The contracts below hold for a database that several processes
share: no method relies on its caller being the only writer. What a caller
may cache in memory is its own decision, and each actor says which it makes
(see ``docs/architecture.md``, "What is cached in memory").

Error handling, for every store: a value the store cannot hold or an unknown
id is the caller's :class:`~rhetor.ValidationError` or
:class:`~rhetor.NotFound`, raised before anything is written. Any other
exception is a failure of the database, and the store's :meth:`Store.broken`
then says whether its connection can serve another call.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol

import attrs

from rhetor._types import ChatMessage, Role
from rhetor.storage._blocks import message_of

__all__ = [
    "ContextHistory",
    "ContextInfo",
    "ContextRecord",
    "ContextWindow",
    "Entry",
    "SearchHit",
    "Store",
    "StoredMessage",
    "WindowState",
]

# -- conversation contexts -------------------------------------------------------------


@attrs.frozen
class StoredMessage:
    """
    One stored message of a context; ``seq`` counts from 1 within the context.
    """

    context_id: str
    seq: int
    role: Role
    content: str
    ts: float
    tokens: int
    # A rich turn's blocks in the native shape (text, image, tool_call,
    # tool_result); None for a plain-text turn (``content`` is then all of it).
    blocks: tuple[dict[str, Any], ...] | None = None

    @property
    def message(self) -> ChatMessage:
        """
        The message as a provider would take it.
        """
        return message_of(self.role, self.content, self.blocks)


@attrs.frozen
class ContextInfo:
    """
    A context's description, without its messages.
    """

    id: str
    created: float
    updated: float
    message_count: int
    summary: str | None
    metadata: Mapping[str, Any]


@attrs.frozen
class ContextRecord:
    """
    A context's description and its messages (oldest first), read together.
    """

    info: ContextInfo
    messages: builtins.list[StoredMessage]


@attrs.frozen
class ContextWindow:
    """
    What a request sends of a context: its summary and newest messages, with their token cost.

    ``messages`` are the newest unsummarised messages, oldest first, that fit
    the budget the window was asked with after the summary's share.
    ``tokens`` is what the messages cost (each one's estimate plus the
    per-message overhead, as :func:`rhetor._tokens.count_message_tokens`
    counts them); ``summary_tokens`` what the summary cost the budget (0
    without one). So nobody counts a window's tokens twice.
    """

    summary: str | None
    messages: tuple[ChatMessage, ...]
    tokens: int
    summary_tokens: int = 0


Entry = tuple[int, ChatMessage, int]
"""One message for windowing: ``(seq, message, cost)``, cost = tokens + overhead."""


@attrs.frozen
class WindowState:
    """
    What a cache needs to answer windows of one context without the database.

    ``recent`` is the newest unsummarised messages, oldest first, as
    ``(seq, message, cost)`` with cost = tokens + per-message overhead, as many
    as fit in the ``cap`` it was loaded with; ``complete`` says whether that
    is all of them. ``unsummarised`` is the exact cost of every unsummarised
    message.
    """

    summary: str | None
    summary_upto: int
    unsummarised: int
    recent: tuple[Entry, ...]
    complete: bool


@attrs.frozen
class SearchHit:
    """
    A message whose content matched a search, with the text around the match.
    """

    context_id: str
    seq: int
    role: Role
    snippet: str


class Store(Protocol):
    """
    What every store is to the actor that owns it: something to check and to close.
    """

    def broken(self) -> str | None:
        """
        Why the store cannot serve another call (its owner should reopen it), or None.
        """
        ...

    def close(self) -> None:
        """
        Release the connection; safe to call twice.
        """
        ...


class ContextHistory(Store, Protocol):
    """
    Every conversation context: messages, summaries and metadata.

    Context ids are checked by :func:`rhetor.storage._history.validate_context_id`
    (ValidationError on ``context_id``). Shared by several processes, a store
    keeps these promises: an append is atomic and its messages get the next
    consecutive ``seq`` numbers even when another process appends to the same
    context at once; a window, a window state or a record is read from one
    consistent snapshot.

    The ContextStore calls :meth:`append` on the event loop's own thread when
    the store's ``inline_writes`` says so (a SQLite commit there costs less
    than a thread hop), and everything else from a worker thread; a store
    whose writes wait on a network (PostgreSQL) says ``inline_writes = False``
    and is called from worker threads only.
    """

    # Whether append may run on the event loop's own thread (see above).
    inline_writes: ClassVar[bool]

    def checkpoint(self) -> None:
        """
        Housekeeping the owner runs in a worker thread every few hundred appends.

        SQLite copies its write-ahead log into the database file; a store with
        nothing to do does nothing.
        """
        ...

    def append(
        self,
        context_id: str,
        messages: Sequence[ChatMessage],
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> int:
        """
        Add messages to a context (created if new), merge ``metadata`` into its
        own (new keys win), and answer the context's message count after them.
        """
        ...

    def append_checked(
        self,
        context_id: str,
        messages: Sequence[ChatMessage],
        *,
        metadata: Mapping[str, Any] | None = None,
        summary_threshold: int | None = None,
    ) -> tuple[int, bool]:
        """
        :meth:`append`, and whether the unsummarised messages now cost more than
        ``summary_threshold`` (False without one), in one call.
        """
        ...

    def history(self, context_id: str, *, limit: int | None = None) -> builtins.list[StoredMessage]:
        """
        A context's messages, oldest first; with ``limit``, only the newest that many.

        Error handling: NotFound for an unknown context.
        """
        ...

    def record(self, context_id: str, *, limit: int | None = None) -> ContextRecord:
        """
        A context's description and messages (as :meth:`history`) in one read.

        Error handling: NotFound for an unknown context.
        """
        ...

    def window(self, context_id: str, token_budget: int) -> ContextWindow:
        """
        The summary and the newest unsummarised messages within ``token_budget``.

        Messages are contiguous: the oldest are dropped first, and the first
        that does not fit ends the window. The summary counts first, but is
        returned even if it alone is over. An unknown context has an empty window.
        """
        ...

    def window_state(self, context_id: str, cap: int) -> WindowState | None:
        """
        The state behind :meth:`window` for a cache holding up to ``cap`` of the newest messages.

        None for an unknown context.
        """
        ...

    def get(self, context_id: str) -> ContextInfo | None:
        """
        A context's description, or None if there is no such context.
        """
        ...

    def list(self, limit: int = 100, offset: int = 0) -> builtins.list[ContextInfo]:
        """
        Contexts, most recently updated first.
        """
        ...

    def delete(self, context_id: str) -> bool:
        """
        Delete a context and its messages; True if it existed.
        """
        ...

    def search(self, query: str, limit: int = 20) -> builtins.list[SearchHit]:
        """
        Messages whose content contains ``query`` literally (ASCII case folded), newest first.
        """
        ...

    def set_summary(self, context_id: str, summary: str, upto_seq: int) -> None:
        """
        Record that ``summary`` stands for the messages up to ``upto_seq``.

        Those messages stay stored but leave the window. Error handling:
        NotFound for an unknown context, ValidationError on ``upto_seq`` past
        the context's last message.
        """
        ...

    def needs_summary(self, context_id: str, threshold_tokens: int) -> bool:
        """
        Whether the unsummarised messages cost more than ``threshold_tokens``; False if unknown.
        """
        ...


# -- templates and system prompts ------------------------------------------------------
