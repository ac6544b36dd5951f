"""
Opening each store on either backend, for the tests that run on both.

``opener(backend, tmp_path, request)`` answers a function that opens the
store afresh on the same storage each time it is called (the same SQLite
file, or the run's PostgreSQL database, emptied once per test by the ``pg``
fixture), so a test can close a store and open it again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rhetor.budget._interfaces import BudgetLedger
from rhetor.budget._ledger import SQLiteLedger
from rhetor.budget._pg_ledger import PostgresLedger
from rhetor.storage._history import SQLiteHistory
from rhetor.storage._interfaces import ContextHistory
from rhetor.storage._library import SQLiteLibrary
from rhetor.storage._library_interfaces import Library
from rhetor.storage._pg import PgDatabase
from rhetor.storage._pg_history import PostgresHistory
from rhetor.storage._pg_library import PostgresLibrary

__all__ = ["backend_settings", "history_opener", "ledger_of", "ledger_opener", "library_opener"]


def _pg(request: pytest.FixtureRequest) -> PgDatabase:
    db: PgDatabase = request.getfixturevalue("pg")
    return db


def ledger_opener(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, **options: Any
) -> Callable[[], BudgetLedger]:
    """Opens the ledger: ``tmp_path/ledger.db``, or the run's PostgreSQL database."""
    if backend == "sqlite":
        return lambda: SQLiteLedger(tmp_path / "ledger.db", **options)
    db = _pg(request)
    return lambda: PostgresLedger(db)


def history_opener(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, **options: Any
) -> Callable[[], ContextHistory]:
    """Opens the context history: ``tmp_path/history.db``, or the run's PostgreSQL database."""
    if backend == "sqlite":
        return lambda: SQLiteHistory(tmp_path / "history.db", **options)
    db = _pg(request)
    clock = options.get("clock")
    return lambda: PostgresHistory(db) if clock is None else PostgresHistory(db, clock=clock)


def library_opener(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, **options: Any
) -> Callable[[], Library]:
    """Opens the template and prompt library: ``tmp_path/prompts.db``, or PostgreSQL."""
    if backend == "sqlite":
        return lambda: SQLiteLibrary(tmp_path / "prompts.db", **options)
    db = _pg(request)
    clock = options.get("clock")
    return lambda: PostgresLibrary(db) if clock is None else PostgresLibrary(db, clock=clock)


def backend_settings(backend: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    """The Settings fields that put a runtime's stores on ``backend`` (none for SQLite)."""
    if backend == "sqlite":
        return {}
    return {"database_url": _pg(request).url}


def ledger_of(settings: Any) -> BudgetLedger:
    """The ledger a runtime with ``settings`` writes, opened to inspect it (close it after)."""
    if settings.database_url is None:
        return SQLiteLedger(settings.data_dir / "ledger.db")
    return _Inspected(PgDatabase(settings.database_url).open())


class _Inspected(PostgresLedger):
    """A PostgreSQL ledger on a pool of its own, closed with it."""

    def close(self) -> None:
        self.db.close()
