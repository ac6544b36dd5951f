"""
Other processes' writes, heard through PostgreSQL's ``LISTEN``/``NOTIFY``: what keeps shared caches right.

Several Rhetor processes on one database each keep a few things in memory
that another process may change: the budget's policy, limits and active
model (the BudgetKeeper and the Router), and each component's default
system prompt (the PromptLibrary). The database tells them:
:data:`CHANGES_MIGRATIONS` puts a trigger on the tables they come from
(``settings``, ``limits``, ``prompts``) that calls ``pg_notify`` with the
kind of change (``settings`` or ``prompts``) on the channel
``rhetor_<schema>``. A notification is sent when its transaction commits,
so whoever writes (a Rhetor process, ``psql``, a migration) is heard, and
a write rolled back is not.

:class:`ChangeFeed` is the actor that listens. It holds one connection of
its own (outside the pool) in a worker thread, waiting for notifications
with a heartbeat every second (``SELECT 1``; the connection's TCP timeout
is 3 s, so a silent network failure is noticed within about 4 s). It hands
each change to its ``on_change`` callback as a :class:`Change`. When the
connection is lost it says so (``live=False``, every kind: whatever was
cached may have changed unheard), and reconnects by itself with a backoff
(0.5 s, doubling up to 5 s); once it listens again it says so (``live=True``,
every kind: what changed meanwhile was not heard). The callback decides
what each cache does (see ``rhetor._tree``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.from_thread
import attrs
import psycopg
from psycopg import sql

import actors
from rhetor._asks import Ask
from rhetor._errors import StorageUnavailable
from rhetor.storage._pg import Migration, PgDatabase, unavailable

__all__ = [
    "CHANGES_MIGRATIONS",
    "KINDS",
    "Change",
    "ChangeFeed",
    "FeedStatus",
    "GetFeedStatus",
    "channel",
]

log = logging.getLogger("rhetor.storage")

# What a notification can name: the budget's settings (policy, limits, active
# model) or the prompts (default prompts).
KINDS = frozenset({"settings", "prompts"})

CHANGES_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        "changes",
        1,
        "notify listeners of changes to settings, limits and prompts",
        (
            """
            CREATE FUNCTION notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM pg_notify('rhetor_' || TG_TABLE_SCHEMA, TG_ARGV[0]);
                RETURN NULL;
            END
            $$
            """,
            "CREATE TRIGGER settings_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE"
            " ON settings FOR EACH STATEMENT EXECUTE FUNCTION notify_change('settings')",
            "CREATE TRIGGER limits_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE"
            " ON limits FOR EACH STATEMENT EXECUTE FUNCTION notify_change('settings')",
            "CREATE TRIGGER prompts_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE"
            " ON prompts FOR EACH STATEMENT EXECUTE FUNCTION notify_change('prompts')",
        ),
    ),
)

# Seconds between heartbeats of the listening connection.
_HEARTBEAT = 1.0
# Milliseconds the listening connection's sent data may stay unacknowledged
# before the kernel drops it (libpq's tcp_user_timeout), and its keepalives.
_LISTEN_TCP = {
    "tcp_user_timeout": 3000,
    "keepalives": 1,
    "keepalives_idle": 1,
    "keepalives_interval": 1,
    "keepalives_count": 2,
}
_FIRST_RETRY = 0.5
_LONGEST_RETRY = 5.0


def channel(schema: str) -> str:
    """The channel the triggers notify for the tables of ``schema``."""
    return f"rhetor_{schema}"


@attrs.frozen
class Change:
    """
    What may have changed (``kinds``), and whether the feed is listening (``live``).

    ``live=False``: the feed lost its connection and hears nothing until it
    is back, so a cache it keeps right cannot be trusted meanwhile.
    """

    kinds: frozenset[str]
    live: bool = True


@attrs.frozen
class FeedStatus:
    """Whether the feed listens now, how often it connected, and how many notifications it heard."""

    live: bool
    connects: int
    heard: int


@attrs.frozen
class GetFeedStatus(Ask[FeedStatus]):
    """Answers the feed's :class:`FeedStatus`."""


@attrs.define(eq=False)
class ChangeFeed(actors.Actor):
    """
    Listens for other processes' changes and hands each to ``on_change``, reconnecting by itself.

    Cancellation: stopping the actor stops the listening thread within one
    heartbeat; its connection is closed there.

    Error handling: a lost or refused connection is logged once, reported
    as a :class:`Change` with ``live=False``, and retried with a backoff; an
    exception from ``on_change`` is logged and the feed goes on.
    """

    _db: PgDatabase = attrs.field(alias="db")
    _on_change: Callable[[Change], Awaitable[None]] = attrs.field(alias="on_change")
    _heartbeat: float = attrs.field(default=_HEARTBEAT, alias="heartbeat", kw_only=True)
    _stop: threading.Event = attrs.field(init=False, factory=threading.Event)
    # Invariant: True while the listening connection is up and LISTENing.
    live: bool = attrs.field(init=False, default=False)
    connects: int = attrs.field(init=False, default=0)
    heard: int = attrs.field(init=False, default=0)

    async def started(self) -> None:
        self.task_group.start_soon(self._listen_forever)

    async def stopping(self) -> None:
        self._stop.set()

    async def handle(self, message: Any) -> Any:
        if isinstance(message, GetFeedStatus):
            return FeedStatus(self.live, self.connects, self.heard)
        raise TypeError(f"ChangeFeed cannot handle {type(message).__name__}")

    async def _listen_forever(self) -> None:
        wait = _FIRST_RETRY
        first = True
        while not self._stop.is_set():
            try:
                await anyio.to_thread.run_sync(self._listen, abandon_on_cancel=True)
            except StorageUnavailable as exc:
                if self.live or first:
                    log.warning("not hearing other processes' changes (retrying): %s", exc)
            if self.live or first:
                # It was listening (or never did): what is cached may change unheard.
                self.live = False
                await self._tell(Change(KINDS, live=False))
                wait = _FIRST_RETRY
            else:
                wait = min(_LONGEST_RETRY, wait * 2)
            first = False
            await anyio.sleep(wait)

    def _listen(self) -> None:
        """In a worker thread: connect, LISTEN, and hand on notifications until the connection fails."""
        with unavailable("reached"):
            conn = psycopg.connect(
                self._db.url, **{**self._db.conninfo_kwargs(), **_LISTEN_TCP}, autocommit=True
            )
        try:
            with unavailable("read"):
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel(self._db.schema))))
            self.connects += 1
            if self.connects > 1:
                log.warning("hearing other processes' changes again")
            self.live = True
            # Whatever changed while nobody listened was not heard.
            anyio.from_thread.run(self._tell, Change(KINDS, live=True))
            while not self._stop.is_set():
                heard = False
                with unavailable("read"):
                    for notification in conn.notifies(timeout=self._heartbeat):
                        heard = True
                        self.heard += 1
                        kinds = frozenset({notification.payload}) & KINDS
                        anyio.from_thread.run(self._tell, Change(kinds))
                    if not heard:
                        conn.execute("SELECT 1")
        finally:
            conn.close()

    async def _tell(self, change: Change) -> None:
        try:
            await self._on_change(change)
        except Exception:
            log.exception("handling a change of %s failed", ", ".join(sorted(change.kinds)))
