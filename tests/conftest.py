"""
Shared fixtures: the mock clock, the two storage backends every store test runs on, and
the ``/v1`` compat stack (``stack``: the three fake upstreams, Rhetor relaying to them,
and both SDK clients; built by ``tests.test_compat_tools.stacked``).

PostgreSQL: the run uses ``RHETOR_TEST_DATABASE_URL`` when set, else the server
at 127.0.0.1:5432 (user ``postgres``, trust auth). When neither answers it
says so in one line and starts a throwaway cluster from the PostgreSQL
binaries, if installed. The run creates a database of its own (a unique
name) and drops it at the end; the schema's migrations are applied once, and
each test starts from empty tables (``TRUNCATE``). Without any server the
PostgreSQL cases are skipped, except in CI (``CI=true``), where they must run.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio.testing

from rhetor._stores import MIGRATIONS
from rhetor.storage._pg import PgDatabase, migrate
from tests.pg_server import Throwaway, admin_url, create_database, drop_database, reachable

if TYPE_CHECKING:
    from tests.test_compat_tools import Stack

# Every table the migrations create, emptied before each PostgreSQL test.
_TABLES = (
    "entries, spend_hours, spend_days, reservations, limits, settings, owners, contexts, messages,"
    " templates, template_versions, prompts"
)


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    """A mock clock that jumps ahead whenever every task is blocked: timeouts cost no real time."""
    return trio.testing.MockClock(autojump_threshold=0)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """The URL of this run's own PostgreSQL database (created now, dropped at the end)."""
    admin = admin_url()
    cluster: Throwaway | None = None
    why = reachable(admin)
    if why is not None:
        cluster = Throwaway.find()
        print(
            f"\nno PostgreSQL at {admin} ({why});"
            + (
                f" starting a throwaway cluster from {cluster.bin_dir}"
                if cluster
                else " no PostgreSQL binaries to start one"
            ),
            file=sys.stderr,
        )
        if cluster is None:
            if os.environ.get("CI") == "true":
                pytest.fail("CI needs PostgreSQL: no server answers and none can be started")
            pytest.skip("no PostgreSQL server, and no binaries to start one")
        admin = cluster.start()
    url = create_database(admin)
    try:
        yield url
    finally:
        drop_database(admin, url)
        if cluster is not None:
            cluster.stop()


@pytest.fixture(scope="session")
def pg_database(pg_url: str) -> Iterator[PgDatabase]:
    """The run's database, migrated, as one pool the PostgreSQL stores share."""
    with PgDatabase(pg_url, max_size=16) as db:
        migrate(db, MIGRATIONS)
        yield db


@pytest.fixture
def pg(pg_database: PgDatabase) -> PgDatabase:
    """The run's database with every table empty (as a fresh install has them)."""
    with pg_database.connection("written") as conn:
        conn.execute(f"TRUNCATE {_TABLES} RESTART IDENTITY")
        conn.execute("UPDATE reservation_ids SET last = 0")
    return pg_database


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    """Each storage backend in turn: a store test runs once on SQLite, once on PostgreSQL."""
    return str(request.param)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    """The ``/v1`` compat stack (imported here, so that only the tests using it load the SDKs)."""
    from tests.test_compat_tools import stacked

    async with stacked(tmp_path) as running:
        yield running
