"""
Conversation contexts in PostgreSQL: the shared :class:`~rhetor.storage._interfaces.ContextHistory`.

A :class:`PostgresHistory` borrows a pooled connection of a
:class:`~rhetor.storage._pg.PgDatabase` per call, so it is safe from several
threads at once and shared by every process on the database. Its tables are
the SQLite ones (``contexts``, ``messages``) plus ``contexts.last_seq``: an
append raises it in the same statement that locks the context's row, so two
processes appending to one context at once get consecutive, distinct
``seq`` numbers. Reads of several statements (a window, a record) run in one
``REPEATABLE READ`` transaction, so they see one snapshot.

Text columns use the ``C`` collation: ordering is by code point, as in
SQLite, and search folds only ASCII letters (``ILIKE`` under ``C``), as
SQLite's ``LIKE`` does. PostgreSQL cannot store U+0000; it is stored as U+FFFD
(see :func:`~rhetor.storage._pg.pg_text`).

Error handling: the caller's bad values are :class:`ValidationError` or
:class:`NotFound` before anything is written; a database that cannot be
reached or answer in time is :class:`~rhetor.StorageUnavailable`.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import attrs
import psycopg

from rhetor._errors import NotFound, ValidationError
from rhetor._tokens import MESSAGE_OVERHEAD, count_tokens
from rhetor._types import ChatMessage
from rhetor.storage._history import (
    _ROLES,
    _entries,
    _escape_like,
    _metadata_json,
    _snippet,
    newest_within,
    validate_context_id,
    window_of,
)
from rhetor.storage._interfaces import (
    ContextInfo,
    ContextRecord,
    ContextWindow,
    SearchHit,
    StoredMessage,
    WindowState,
)
from rhetor.storage._pg import Migration, PgDatabase, pg_text
from rhetor.storage._sqlite import check_int, check_text

__all__ = ["HISTORY_MIGRATIONS", "PostgresHistory"]

HISTORY_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        "history",
        1,
        "contexts and their messages",
        (
            """
            CREATE TABLE contexts (
                id           TEXT COLLATE "C" PRIMARY KEY,
                created      DOUBLE PRECISION NOT NULL,
                updated      DOUBLE PRECISION NOT NULL,
                metadata     TEXT   NOT NULL DEFAULT '{}',
                summary      TEXT,
                summary_upto BIGINT NOT NULL DEFAULT 0,
                last_seq     BIGINT NOT NULL DEFAULT 0
            )
            """,
            "CREATE INDEX contexts_updated ON contexts (updated)",
            """
            CREATE TABLE messages (
                context_id TEXT COLLATE "C" NOT NULL REFERENCES contexts (id) ON DELETE CASCADE,
                seq        BIGINT NOT NULL,
                role       TEXT   NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
                content    TEXT COLLATE "C" NOT NULL,
                ts         DOUBLE PRECISION NOT NULL,
                tokens     BIGINT NOT NULL,
                PRIMARY KEY (context_id, seq)
            )
            """,
        ),
    ),
)

_INFO_QUERY = """
SELECT c.id, c.created, c.updated, c.summary, c.metadata,
       (SELECT count(*) FROM messages m WHERE m.context_id = c.id)
FROM contexts c
"""
_UNSUMMARISED_NEWEST_FIRST = (
    "SELECT seq, role, content, tokens FROM messages WHERE context_id = %s AND seq > %s"
    " ORDER BY seq DESC"
)


@attrs.define(eq=False)
class PostgresHistory:
    """
    Every conversation context, in PostgreSQL (a :class:`ContextHistory` shared by processes).

    Every call, reads included, waits on the network: the ContextStore calls
    it from worker threads only (``inline_writes`` is False).
    """

    # Appends wait on a network: never on the event loop's thread.
    inline_writes: ClassVar[bool] = False

    db: PgDatabase
    # Seconds since the epoch; replaceable so tests can order contexts exactly.
    _clock: Callable[[], float] = attrs.field(default=time.time, alias="clock")

    def broken(self) -> str | None:
        """Never: a broken connection goes back to the pool, which replaces it."""
        return None

    def close(self) -> None:
        """Nothing to release: the pool belongs to the runtime."""

    def checkpoint(self) -> None:
        """Nothing to do: PostgreSQL checkpoints by itself."""

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[psycopg.Connection[Any]]:
        """A read-only transaction that sees one snapshot for all its statements."""
        with self.db.transaction("read") as conn:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield conn

    def append(
        self,
        context_id: str,
        messages: Sequence[ChatMessage],
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> int:
        """
        Add messages to a context, creating it if new; answers its message count.

        One transaction: the upsert of the context locks its row and raises
        ``last_seq`` by the number of messages, so a concurrent append to the
        same context (from any process) waits and numbers after these.
        """
        validate_context_id(context_id)
        for i, m in enumerate(messages):
            if m.role not in _ROLES:
                raise ValidationError(f"messages[{i}].role", "must be system, user or assistant")
            check_text(f"messages[{i}].content", m.content)
        if metadata is not None and not isinstance(metadata, Mapping):
            raise ValidationError("metadata", "must be an object")
        if metadata:
            _metadata_json(metadata)  # refuse what is not JSON before anything is written
        count = len(messages)
        now = self._clock()
        with self.db.transaction("written") as conn:
            row = conn.execute(
                "INSERT INTO contexts (id, created, updated, last_seq) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (id) DO UPDATE"
                " SET updated = excluded.updated, last_seq = contexts.last_seq + excluded.last_seq"
                " RETURNING metadata, last_seq",
                (context_id, now, now, count),
            ).fetchone()
            assert row is not None, "an upsert returns its row"
            stored, last = row
            if metadata:
                merged = json.loads(stored)
                merged.update(metadata)
                conn.execute(
                    "UPDATE contexts SET metadata = %s WHERE id = %s",
                    (_metadata_json(merged), context_id),
                )
            if count:
                first = last - count + 1
                values: list[Any] = []
                for seq, m in enumerate(messages, start=first):
                    content = pg_text(m.content)
                    values += [context_id, seq, m.role, content, now, count_tokens(m.content)]
                rows = ", ".join(["(%s, %s, %s, %s, %s, %s)"] * count)
                conn.execute(
                    "INSERT INTO messages (context_id, seq, role, content, ts, tokens)"
                    f" VALUES {rows}",
                    values,
                )
        return int(last)

    def history(self, context_id: str, *, limit: int | None = None) -> builtins.list[StoredMessage]:
        """
        A context's messages, oldest first; with ``limit``, only the newest that many.

        Error handling: an unknown context raises :class:`NotFound`.
        """
        if limit is not None:
            check_int("limit", limit)
        validate_context_id(context_id)
        with self._snapshot() as conn:
            self._require(conn, context_id)
            return self._history(conn, context_id, limit)

    @staticmethod
    def _history(
        conn: psycopg.Connection[Any], context_id: str, limit: int | None
    ) -> builtins.list[StoredMessage]:
        rows = conn.execute(
            "SELECT context_id, seq, role, content, ts, tokens FROM messages"
            " WHERE context_id = %s ORDER BY seq DESC LIMIT %s",
            (context_id, limit),
        ).fetchall()
        return [StoredMessage(*row) for row in reversed(rows)]

    def record(self, context_id: str, *, limit: int | None = None) -> ContextRecord:
        """
        A context's description and messages (as :meth:`history`) in one snapshot.

        Error handling: an unknown context raises :class:`NotFound`.
        """
        if limit is not None:
            check_int("limit", limit)
        validate_context_id(context_id)
        with self._snapshot() as conn:
            row = conn.execute(_INFO_QUERY + " WHERE c.id = %s", (context_id,)).fetchone()
            if row is None:
                raise NotFound("context", context_id)
            return ContextRecord(_info(row), self._history(conn, context_id, limit))

    def window(self, context_id: str, token_budget: int) -> ContextWindow:
        """
        The summary and the newest unsummarised messages that fit in ``token_budget``.

        See :meth:`~rhetor.storage._history.SQLiteHistory.window`.
        """
        validate_context_id(context_id)
        with self._snapshot() as conn:
            row = conn.execute(
                "SELECT summary, summary_upto FROM contexts WHERE id = %s", (context_id,)
            ).fetchone()
            if row is None:
                return ContextWindow(None, (), 0)
            summary, upto = row
            cursor = conn.execute(_UNSUMMARISED_NEWEST_FIRST, (context_id, upto))
            return window_of(summary, _entries(cursor), token_budget)

    def window_state(self, context_id: str, cap: int) -> WindowState | None:
        """
        The state behind :meth:`window` for a cache (see :class:`WindowState`); None if unknown.
        """
        validate_context_id(context_id)
        with self._snapshot() as conn:
            row = conn.execute(
                "SELECT c.summary, c.summary_upto, (SELECT COALESCE(sum(m.tokens + %s), 0)"
                " FROM messages m WHERE m.context_id = c.id AND m.seq > c.summary_upto)"
                " FROM contexts c WHERE c.id = %s",
                (MESSAGE_OVERHEAD, context_id),
            ).fetchone()
            if row is None:
                return None
            summary, upto, unsummarised = row
            cursor = conn.execute(_UNSUMMARISED_NEWEST_FIRST, (context_id, upto))
            recent, complete = newest_within(_entries(cursor), cap)
        recent.reverse()
        return WindowState(summary, upto, int(unsummarised), tuple(recent), complete)

    def get(self, context_id: str) -> ContextInfo | None:
        """A context's description, or None if there is no such context."""
        validate_context_id(context_id)
        with self.db.connection("read") as conn:
            row = conn.execute(_INFO_QUERY + " WHERE c.id = %s", (context_id,)).fetchone()
        return None if row is None else _info(row)

    def list(self, limit: int = 100, offset: int = 0) -> builtins.list[ContextInfo]:
        """Contexts, most recently updated first."""
        check_int("limit", limit)
        check_int("offset", offset)
        with self.db.connection("read") as conn:
            rows = conn.execute(
                _INFO_QUERY + " ORDER BY c.updated DESC, c.id LIMIT %s OFFSET %s", (limit, offset)
            ).fetchall()
        return [_info(row) for row in rows]

    def delete(self, context_id: str) -> bool:
        """Delete a context and its messages (one statement, by cascade); True if it existed."""
        validate_context_id(context_id)
        with self.db.connection("written") as conn:
            cursor = conn.execute("DELETE FROM contexts WHERE id = %s", (context_id,))
            return cursor.rowcount > 0

    def search(self, query: str, limit: int = 20) -> builtins.list[SearchHit]:
        """Messages whose content contains ``query`` literally (ASCII case folded), newest first."""
        if not check_text("query", query):
            raise ValidationError("query", "must be a non-empty string")
        check_int("limit", limit)
        with self.db.connection("read") as conn:
            rows = conn.execute(
                "SELECT context_id, seq, role, content FROM messages"
                " WHERE content ILIKE %s ESCAPE '\\'"
                " ORDER BY ts DESC, context_id, seq DESC LIMIT %s",
                (f"%{_escape_like(pg_text(query))}%", limit),
            ).fetchall()
        return [
            SearchHit(context_id, seq, role, _snippet(content, query))
            for context_id, seq, role, content in rows
        ]

    def set_summary(self, context_id: str, summary: str, upto_seq: int) -> None:
        """
        Record that ``summary`` stands for the messages up to ``upto_seq``.

        Checked against the context's last message in the write's own
        transaction, with the context's row locked: no append comes between.
        """
        check_text("summary", summary)
        check_int("upto_seq", upto_seq)
        validate_context_id(context_id)
        with self.db.transaction("written") as conn:
            row = conn.execute(
                "SELECT last_seq FROM contexts WHERE id = %s FOR UPDATE", (context_id,)
            ).fetchone()
            if row is None:
                raise NotFound("context", context_id, field="context_id")
            (last,) = row
            if not 0 <= upto_seq <= last:
                raise ValidationError("upto_seq", f"must be between 0 and {last}")
            conn.execute(
                "UPDATE contexts SET summary = %s, summary_upto = %s WHERE id = %s",
                (pg_text(summary), upto_seq, context_id),
            )

    def needs_summary(self, context_id: str, threshold_tokens: int) -> bool:
        """Whether the unsummarised messages are over ``threshold_tokens``; False if unknown."""
        validate_context_id(context_id)
        with self.db.connection("read") as conn:
            row = conn.execute(
                "SELECT (SELECT COALESCE(sum(m.tokens + %s), 0) FROM messages m"
                " WHERE m.context_id = c.id AND m.seq > c.summary_upto) FROM contexts c"
                " WHERE c.id = %s",
                (MESSAGE_OVERHEAD, context_id),
            ).fetchone()
        return row is not None and bool(row[0] > threshold_tokens)

    @staticmethod
    def _require(conn: psycopg.Connection[Any], context_id: str) -> None:
        found = conn.execute("SELECT 1 FROM contexts WHERE id = %s", (context_id,)).fetchone()
        if found is None:
            raise NotFound("context", context_id, field="context_id")


def _info(row: tuple[Any, ...]) -> ContextInfo:
    id_, created, updated, summary, metadata, count = row
    return ContextInfo(id_, created, updated, int(count), summary, json.loads(metadata))
