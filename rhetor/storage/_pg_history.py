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
import functools
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
# A context's summary and every unsummarised message, newest first (none: no context).
_WINDOW = """
SELECT c.summary, c.summary_upto, %s::bigint, m.seq, m.role, m.content, m.tokens
FROM contexts c LEFT JOIN messages m ON m.context_id = c.id AND m.seq > c.summary_upto
WHERE c.id = %s ORDER BY m.seq DESC
"""
# A context's summary, the cost of its unsummarised messages, and the newest of
# them whose running cost (newest first) stays within the cap.
_WINDOW_STATE = """
SELECT c.summary, c.summary_upto,
       (SELECT COALESCE(sum(m.tokens + %(overhead)s), 0) FROM messages m
        WHERE m.context_id = c.id AND m.seq > c.summary_upto),
       w.seq, w.role, w.content, w.tokens
FROM contexts c LEFT JOIN LATERAL (
    SELECT seq, role, content, tokens FROM (
        SELECT seq, role, content, tokens,
               sum(tokens + %(overhead)s) OVER (ORDER BY seq DESC) AS running
        FROM messages WHERE context_id = c.id AND seq > c.summary_upto
    ) AS newest WHERE running <= %(cap)s
) AS w ON TRUE
WHERE c.id = %(id)s ORDER BY w.seq DESC
"""


@functools.lru_cache(maxsize=32)
def _append_sql(count: int) -> str:
    """
    The one statement of an append of ``count`` messages (see ``append_checked``).

    Parameters, in order: the context's id, created, updated, metadata and
    count; with messages, the id, the count, the time, then (i, role,
    content, tokens) per message; last the per-message overhead and the id.
    """
    sql = (
        "WITH ctx AS (INSERT INTO contexts (id, created, updated, metadata, last_seq)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE"
        " SET updated = excluded.updated, last_seq = contexts.last_seq + excluded.last_seq"
        " RETURNING metadata, last_seq, summary_upto)"
    )
    if count:
        rows = ", ".join(["(%s::bigint, %s, %s, %s::bigint)"] * count)
        sql += (
            ", added AS (INSERT INTO messages (context_id, seq, role, content, ts, tokens)"
            " SELECT %s, ctx.last_seq - %s + v.i, v.role, v.content, %s::float8, v.tokens"
            f" FROM ctx, (VALUES {rows}) AS v (i, role, content, tokens))"
        )
    return sql + (
        " SELECT ctx.metadata, ctx.last_seq, (SELECT COALESCE(sum(m.tokens + %s), 0)"
        " FROM messages m WHERE m.context_id = %s AND m.seq > ctx.summary_upto) FROM ctx"
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
        """Add messages to a context, creating it if new; answers its message count."""
        count, _ = self.append_checked(context_id, messages, metadata=metadata)
        return count

    def append_checked(
        self,
        context_id: str,
        messages: Sequence[ChatMessage],
        *,
        metadata: Mapping[str, Any] | None = None,
        summary_threshold: int | None = None,
    ) -> tuple[int, bool]:
        """
        Append (see :meth:`append`) and answer whether a summary is due, in one transaction.

        One statement does the work: the upsert of the context locks its row
        and raises ``last_seq`` by the number of messages (so a concurrent
        append to the same context, from any process, waits and numbers after
        these), the messages are inserted under those numbers, and the cost
        of the unsummarised messages before them comes back with the stored
        metadata. ``BEGIN`` goes out with it (pipeline mode); ``COMMIT``, with
        the metadata's update when the merge changes it, is the second and
        last round trip.

        The summary check counts the messages committed before this statement
        began; an append committed by another process while this one waited
        for the row is counted by the next check.
        """
        validate_context_id(context_id)
        for i, m in enumerate(messages):
            if m.role not in _ROLES:
                raise ValidationError(f"messages[{i}].role", "must be system, user or assistant")
            check_text(f"messages[{i}].content", m.content)
        if metadata is not None and not isinstance(metadata, Mapping):
            raise ValidationError("metadata", "must be an object")
        given = _metadata_json(metadata or {})
        count = len(messages)
        now = self._clock()
        costs = [count_tokens(m.content) for m in messages]
        values: list[Any] = [context_id, now, now, given, count]
        if count:
            values += [context_id, count, now]
            for i, (m, tokens) in enumerate(zip(messages, costs, strict=True), start=1):
                values += [i, m.role, pg_text(m.content), tokens]
        values += [MESSAGE_OVERHEAD, context_id]
        with self.db.transaction("written", pipeline=True) as conn:
            row = conn.execute(_append_sql(count), values).fetchone()
            assert row is not None, "an upsert returns its row"
            stored, last, before = row
            if metadata and stored != given:
                merged = json.loads(stored)
                merged.update(metadata)
                if merged != json.loads(stored):
                    conn.execute(
                        "UPDATE contexts SET metadata = %s WHERE id = %s",
                        (_metadata_json(merged), context_id),
                    )
        unsummarised = int(before) + sum(tokens + MESSAGE_OVERHEAD for tokens in costs)
        due = summary_threshold is not None and unsummarised > summary_threshold
        return int(last), due

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

        See :meth:`~rhetor.storage._history.SQLiteHistory.window`. One statement
        (one snapshot): the context's summary with its unsummarised messages.
        """
        validate_context_id(context_id)
        with self.db.connection("read") as conn:
            rows = conn.execute(_WINDOW, (MESSAGE_OVERHEAD, context_id)).fetchall()
        if not rows:
            return ContextWindow(None, (), 0)
        summary = rows[0][0]
        messages = [row[3:] for row in rows if row[3] is not None]
        return window_of(summary, _entries(messages), token_budget)

    def window_state(self, context_id: str, cap: int) -> WindowState | None:
        """
        The state behind :meth:`window` for a cache (see :class:`WindowState`); None if unknown.

        One statement: the server sums the unsummarised messages and sends
        only the newest whose running cost stays within ``cap``.
        """
        validate_context_id(context_id)
        with self.db.connection("read") as conn:
            rows = conn.execute(
                _WINDOW_STATE,
                {"overhead": MESSAGE_OVERHEAD, "cap": cap, "id": context_id},
            ).fetchall()
        if not rows:
            return None
        summary, upto, unsummarised = rows[0][:3]
        recent = list(_entries(row[3:] for row in rows if row[3] is not None))
        recent.reverse()
        return WindowState(summary, upto, int(unsummarised), tuple(recent), unsummarised <= cap)

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
