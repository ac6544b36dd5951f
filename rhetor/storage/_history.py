"""
Conversation contexts in one SQLite file: the SQLite :class:`~rhetor.storage._interfaces.ContextHistory`.

A :class:`SQLiteHistory` owns one connection and is synchronous: the context
actor calls it through ``anyio.to_thread.run_sync``, one call at a time. Only
one process opens the file (the runtime locks its data directory), but every
multi-statement call is still one transaction, as the interface asks.

Context ids come from clients. :func:`validate_context_id` bounds them to a
safe alphabet; they are only ever SQL parameters, never file paths.

Search is a case-insensitive (ASCII) substring match with ``LIKE``, with
``%``, ``_`` and the escape character escaped, so a query means its literal text.

Every value a caller passes is checked before SQLite sees it (see
:func:`rhetor.storage._sqlite.check_int`): a number SQLite cannot hold or a string that
is not valid Unicode is a :class:`ValidationError` naming the field.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import attrs

from rhetor._errors import NotFound, ValidationError
from rhetor._tokens import MESSAGE_OVERHEAD, count_tokens
from rhetor._types import ChatMessage, Role
from rhetor.storage._interfaces import (
    ContextInfo,
    ContextRecord,
    ContextWindow,
    Entry,
    SearchHit,
    StoredMessage,
    WindowState,
)
from rhetor.storage._sqlite import SQLiteStore, check_int, check_text, transaction

__all__ = [
    "SQLiteHistory",
    "newest_within",
    "summary_cost",
    "validate_context_id",
    "window_of",
]

_CONTEXT_ID = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")
_ROLES = frozenset({"system", "user", "assistant"})
_SNIPPET_RADIUS = 40


def validate_context_id(cid: str) -> str:
    """
    Return ``cid`` if it is a well-formed context id; raise ValidationError if not.

    1-128 characters of ``A-Z a-z 0-9 _ . : @ -``, not starting with ``.`` and
    without ``..`` (so it could never climb a directory even by mistake).
    """
    if not isinstance(cid, str) or not _CONTEXT_ID.fullmatch(cid):
        raise ValidationError("context_id", "must be 1-128 characters of A-Z a-z 0-9 _ . : @ -")
    if cid.startswith(".") or ".." in cid:
        raise ValidationError("context_id", "must not start with '.' or contain '..'")
    return cid


_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS contexts (
    id           TEXT PRIMARY KEY,
    created      REAL NOT NULL,
    updated      REAL NOT NULL,
    metadata     TEXT NOT NULL DEFAULT '{}',
    summary      TEXT,
    summary_upto INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS contexts_updated ON contexts (updated);
CREATE TABLE IF NOT EXISTS messages (
    context_id TEXT    NOT NULL REFERENCES contexts (id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    role       TEXT    NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
    content    TEXT    NOT NULL,
    ts         REAL    NOT NULL,
    tokens     INTEGER NOT NULL,
    PRIMARY KEY (context_id, seq)
);
"""

_INFO_QUERY = """
SELECT c.id, c.created, c.updated, c.summary, c.metadata,
       (SELECT COUNT(*) FROM messages m WHERE m.context_id = c.id)
FROM contexts c
"""


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _snippet(content: str, query: str) -> str:
    at = content.lower().find(query.lower())
    if at < 0:  # LIKE folded case where str.lower() did not; show the start.
        at = 0
    start = max(0, at - _SNIPPET_RADIUS)
    end = min(len(content), at + len(query) + _SNIPPET_RADIUS)
    return ("…" if start > 0 else "") + content[start:end] + ("…" if end < len(content) else "")


def _metadata_json(metadata: Mapping[str, Any]) -> str:
    # allow_nan=False: NaN and Infinity are not JSON, and would come back out in
    # replies. ASCII output escapes lone surrogates, so any string is storable.
    try:
        return json.dumps(dict(metadata), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValidationError("metadata", f"must be JSON-serialisable: {exc}") from exc


def summary_cost(summary: str | None) -> int:
    """What a stored summary costs a window (nothing without one)."""
    return count_tokens(summary) + MESSAGE_OVERHEAD if summary else 0


def newest_within(newest_first: Iterable[Entry], budget: int) -> tuple[builtins.list[Entry], bool]:
    """
    The leading entries (newest first) whose costs add up to at most ``budget``,
    and whether that was all of them.

    It stops at the first entry that does not fit, so a window is contiguous:
    the oldest messages are the ones dropped. This is the one windowing rule,
    used by the store and by the ContextStore's cache alike.
    """
    kept: builtins.list[Entry] = []
    spent = 0
    for entry in newest_first:
        spent += entry[2]
        if spent > budget:
            return kept, False
        kept.append(entry)
    return kept, True


def window_of(
    summary: str | None, newest_first: Iterable[Entry], token_budget: int
) -> ContextWindow:
    """
    The window of a context with ``summary`` whose unsummarised messages, newest
    first, are ``newest_first``; see :meth:`SQLiteHistory.window`.
    """
    summary_tokens = summary_cost(summary)
    kept, _ = newest_within(newest_first, token_budget - summary_tokens)
    kept.reverse()
    return ContextWindow(
        summary, tuple(m for _, m, _ in kept), sum(cost for _, _, cost in kept), summary_tokens
    )


def _entries(rows: Iterable[tuple[int, Role, str, int]]) -> Iterator[Entry]:
    for seq, role, content, tokens in rows:
        yield seq, ChatMessage(role, content), tokens + MESSAGE_OVERHEAD


@attrs.define(eq=False)
class SQLiteHistory(SQLiteStore):
    """
    Every conversation context, in one SQLite file (a :class:`ContextHistory`).

    Not safe for concurrent use: one owner calls it, one call at a time. A
    read of several statements needs no transaction to be consistent: no
    write can come between them, since this connection is the file's only
    one. Writes of several statements are one transaction each.
    """

    SCHEMA: ClassVar[str] = _SCHEMA
    SCHEMA_VERSION: ClassVar[int] = _SCHEMA_VERSION
    # A commit in WAL mode costs less on the loop than a thread hop (see ContextStore).
    inline_writes: ClassVar[bool] = True

    # Seconds since the epoch; replaceable so tests can order contexts exactly.
    _clock: Callable[[], float] = attrs.field(default=time.time, alias="clock")

    def append(
        self,
        context_id: str,
        messages: Sequence[ChatMessage],
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> int:
        """
        Add messages to a context, creating it if new; return its message count.

        ``metadata`` is merged into the context's (new keys win). All of it is
        one transaction.
        """
        validate_context_id(context_id)
        for i, m in enumerate(messages):
            if m.role not in _ROLES:
                raise ValidationError(f"messages[{i}].role", "must be system, user or assistant")
            check_text(f"messages[{i}].content", m.content)
        if metadata is not None and not isinstance(metadata, Mapping):
            raise ValidationError("metadata", "must be an object")
        now = self._clock()
        with transaction(self._conn) as conn:
            row = conn.execute(
                "SELECT metadata FROM contexts WHERE id = ?", (context_id,)
            ).fetchone()
            merged = json.loads(row[0]) if row else {}
            merged.update(metadata or {})
            meta = _metadata_json(merged)
            if row is None:
                conn.execute(
                    "INSERT INTO contexts (id, created, updated, metadata) VALUES (?, ?, ?, ?)",
                    (context_id, now, now, meta),
                )
            else:
                conn.execute(
                    "UPDATE contexts SET updated = ?, metadata = ? WHERE id = ?",
                    (now, meta, context_id),
                )
            (last,) = conn.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM messages WHERE context_id = ?", (context_id,)
            ).fetchone()
            conn.executemany(
                "INSERT INTO messages (context_id, seq, role, content, ts, tokens)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (context_id, last + i, m.role, m.content, now, count_tokens(m.content))
                    for i, m in enumerate(messages, start=1)
                ],
            )
        return int(last) + len(messages)

    def append_checked(
        self,
        context_id: str,
        messages: Sequence[ChatMessage],
        *,
        metadata: Mapping[str, Any] | None = None,
        summary_threshold: int | None = None,
    ) -> tuple[int, bool]:
        """
        :meth:`append`, then whether the unsummarised messages cost more than ``summary_threshold``.
        """
        count = self.append(context_id, messages, metadata=metadata)
        if summary_threshold is None:
            return count, False
        return count, self.needs_summary(context_id, summary_threshold)

    def history(self, context_id: str, *, limit: int | None = None) -> builtins.list[StoredMessage]:
        """
        A context's messages, oldest first; with ``limit``, only the newest that many.

        Error handling: an unknown context raises :class:`NotFound`.
        """
        if limit is not None:
            check_int("limit", limit)
        self._require(context_id)
        rows = self._conn.execute(
            "SELECT context_id, seq, role, content, ts, tokens FROM messages"
            " WHERE context_id = ? ORDER BY seq DESC LIMIT ?",
            (context_id, -1 if limit is None else limit),
        ).fetchall()
        return [StoredMessage(*row) for row in reversed(rows)]

    def record(self, context_id: str, *, limit: int | None = None) -> ContextRecord:
        """
        A context's description and messages (as :meth:`history`) in one call.

        Error handling: an unknown context raises :class:`NotFound`.
        """
        info = self.get(context_id)
        if info is None:
            # The id is a path's, not a field's: GET /contexts/<id> names no field.
            raise NotFound("context", context_id)
        return ContextRecord(info, self.history(context_id, limit=limit))

    def window(self, context_id: str, token_budget: int) -> ContextWindow:
        """
        The summary and the newest unsummarised messages that fit in ``token_budget``.

        Messages stay in order and are contiguous: the oldest are dropped first.
        The summary's tokens count against the budget first, but the summary is
        returned even if it alone is over. An unknown context has an empty
        window, so callers can build one before the first append.
        """
        validate_context_id(context_id)
        row = self._conn.execute(
            "SELECT summary, summary_upto FROM contexts WHERE id = ?", (context_id,)
        ).fetchone()
        if row is None:
            return ContextWindow(None, (), 0)
        summary, upto = row
        with contextlib.closing(self._unsummarised_newest_first(context_id, upto)) as rows:
            return window_of(summary, _entries(rows), token_budget)

    def _unsummarised_newest_first(self, context_id: str, upto: int) -> sqlite3.Cursor:
        return self._conn.execute(
            "SELECT seq, role, content, tokens FROM messages WHERE context_id = ? AND seq > ?"
            " ORDER BY seq DESC",
            (context_id, upto),
        )

    def window_state(self, context_id: str, cap: int) -> WindowState | None:
        """
        The state behind :meth:`window` for a cache (see :class:`WindowState`).

        ``recent`` holds the newest unsummarised messages whose costs add up to
        at most ``cap``. None for an unknown context.
        """
        validate_context_id(context_id)
        with transaction(self._conn) as conn:
            row = conn.execute(
                "SELECT summary, summary_upto FROM contexts WHERE id = ?", (context_id,)
            ).fetchone()
            if row is None:
                return None
            summary, upto = row
            (unsummarised,) = conn.execute(
                "SELECT TOTAL(tokens + ?) FROM messages WHERE context_id = ? AND seq > ?",
                (MESSAGE_OVERHEAD, context_id, upto),
            ).fetchone()
            with contextlib.closing(self._unsummarised_newest_first(context_id, upto)) as rows:
                recent, complete = newest_within(_entries(rows), cap)
        recent.reverse()
        return WindowState(summary, upto, int(unsummarised), tuple(recent), complete)

    def get(self, context_id: str) -> ContextInfo | None:
        """
        A context's description, or None if there is no such context.
        """
        validate_context_id(context_id)
        row = self._conn.execute(_INFO_QUERY + " WHERE c.id = ?", (context_id,)).fetchone()
        return None if row is None else self._info(row)

    def list(self, limit: int = 100, offset: int = 0) -> builtins.list[ContextInfo]:
        """
        Contexts, most recently updated first.
        """
        check_int("limit", limit)
        check_int("offset", offset)
        rows = self._conn.execute(
            _INFO_QUERY + " ORDER BY c.updated DESC, c.id LIMIT ? OFFSET ?", (limit, offset)
        ).fetchall()
        return [self._info(row) for row in rows]

    def delete(self, context_id: str) -> bool:
        """
        Delete a context and its messages; True if it existed.
        """
        validate_context_id(context_id)
        with transaction(self._conn) as conn:
            conn.execute("DELETE FROM messages WHERE context_id = ?", (context_id,))
            cursor = conn.execute("DELETE FROM contexts WHERE id = ?", (context_id,))
        return bool(cursor.rowcount > 0)

    def search(self, query: str, limit: int = 20) -> builtins.list[SearchHit]:
        """
        Messages whose content contains ``query`` literally, newest first.
        """
        if not check_text("query", query):
            raise ValidationError("query", "must be a non-empty string")
        check_int("limit", limit)
        rows = self._conn.execute(
            "SELECT context_id, seq, role, content FROM messages"
            " WHERE content LIKE ? ESCAPE '\\' ORDER BY ts DESC, context_id, seq DESC LIMIT ?",
            (f"%{_escape_like(query)}%", limit),
        ).fetchall()
        return [
            SearchHit(context_id, seq, role, _snippet(content, query))
            for context_id, seq, role, content in rows
        ]

    def set_summary(self, context_id: str, summary: str, upto_seq: int) -> None:
        """
        Record that ``summary`` stands for the messages up to ``upto_seq``.

        Those messages stay stored (history shows them) but leave the window.
        """
        check_text("summary", summary)
        check_int("upto_seq", upto_seq)
        validate_context_id(context_id)
        with transaction(self._conn) as conn:
            # Checked in the write's own transaction: no append can come between.
            self._require(context_id)
            (last,) = conn.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM messages WHERE context_id = ?", (context_id,)
            ).fetchone()
            if not 0 <= upto_seq <= last:
                raise ValidationError("upto_seq", f"must be between 0 and {last}")
            conn.execute(
                "UPDATE contexts SET summary = ?, summary_upto = ? WHERE id = ?",
                (summary, upto_seq, context_id),
            )

    def needs_summary(self, context_id: str, threshold_tokens: int) -> bool:
        """
        Whether the unsummarised messages are over ``threshold_tokens``; False if unknown.
        """
        validate_context_id(context_id)
        row = self._conn.execute(
            "SELECT (SELECT TOTAL(m.tokens + ?) FROM messages m"
            " WHERE m.context_id = c.id AND m.seq > c.summary_upto) FROM contexts c WHERE c.id = ?",
            (MESSAGE_OVERHEAD, context_id),
        ).fetchone()
        return row is not None and bool(row[0] > threshold_tokens)

    def _require(self, context_id: str) -> None:
        validate_context_id(context_id)
        found = self._conn.execute("SELECT 1 FROM contexts WHERE id = ?", (context_id,)).fetchone()
        if found is None:
            raise NotFound("context", context_id, field="context_id")

    @staticmethod
    def _info(row: tuple[Any, ...]) -> ContextInfo:
        id_, created, updated, summary, metadata, count = row
        return ContextInfo(id_, created, updated, count, summary, json.loads(metadata))
