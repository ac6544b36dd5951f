"""
Which stores a runtime uses (rhetor/_stores.py), and PostgreSQL's schema migrations (rhetor/storage/_pg.py).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.lowlevel

import rhetor.runtime
from rhetor import BudgetExceeded, Settings, StorageUnavailable, ValidationError
from rhetor._stores import (
    MIGRATIONS,
    database_password,
    database_status,
    open_database,
    upgrade_database,
)
from rhetor.providers._simulated import SimulatedBackend
from rhetor.storage._pg import Migration, PgDatabase, migrate, migration_status

BACKENDS = {"simulated": lambda: SimulatedBackend()}


@pytest.fixture
def scratch(pg_url: str) -> Iterator[PgDatabase]:
    """A pool on the run's database whose search path is a schema of its own, dropped after."""
    schema = f"scratch_{uuid.uuid4().hex[:10]}"
    with PgDatabase(pg_url, schema=schema) as db:
        yield db
        with db.connection("written") as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def test_ledger_step_6_fills_the_daily_rollup_from_the_charges_and_its_triggers_keep_it(
    scratch: PgDatabase,
) -> None:
    """A database at ledger step 5 with charges: step 6 sums them per day, and later charges add to it."""
    before = tuple(m for m in MIGRATIONS if (m.part, m.version) != ("ledger", 6))
    assert len(before) == len(MIGRATIONS) - 1
    migrate(scratch, before)
    charge = (
        "INSERT INTO entries (ts, request_id, provider, model, component, input_tokens,"
        " output_tokens, cost, status, billed, charge_id)"
        " SELECT g * 3000.0 + %s, 'r' || g || %s, 'p' || (g %% 3), 'm', 'c' || (g %% 2), 1, 1,"
        " 0.001 * (g %% 7), 'ok', 'usage', 'c' || g || %s FROM generate_series(1, %s) g"
    )
    days = (
        "SELECT day, provider, component, round(cost::numeric, 9) FROM spend_days"
        " WHERE round(cost::numeric, 9) <> 0 ORDER BY 1, 2, 3"
    )
    summed = (
        "SELECT floor(ts / 86400) * 86400, provider, component, round(sum(cost)::numeric, 9)"
        " FROM entries GROUP BY 1, 2, 3 HAVING round(sum(cost)::numeric, 9) <> 0 ORDER BY 1, 2, 3"
    )
    with scratch.connection("written") as conn:
        conn.execute(charge, (0.0, "a", "a", 500))
    assert [(m.part, m.version) for m in migrate(scratch, MIGRATIONS)] == [("ledger", 6)]
    with scratch.connection("written") as conn:
        filled = conn.execute(days).fetchall()
        assert len(filled) > 30 and filled == conn.execute(summed).fetchall()
        conn.execute(charge, (1.0, "b", "b", 500))
        conn.execute("DELETE FROM entries WHERE request_id LIKE '%7a'")
        assert conn.execute(days).fetchall() == conn.execute(summed).fetchall()


def test_migrations_started_together_apply_each_step_once(scratch: PgDatabase) -> None:
    """Four instances starting at once: every step runs once, under the advisory lock; later runs apply nothing."""
    applied: list[list[Migration]] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            applied.append(migrate(scratch, MIGRATIONS))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(len(done) for done in applied) == [0, 0, 0, len(MIGRATIONS)]
    states = migration_status(scratch, MIGRATIONS)
    assert [(s.part, s.version) for s in states] == [(m.part, m.version) for m in MIGRATIONS]
    assert all(s.applied is not None for s in states)


def test_status_lists_pending_steps_before_the_first_upgrade(scratch: PgDatabase) -> None:
    """A database Rhetor never opened has every step pending, and no table yet."""
    assert [s.applied for s in migration_status(scratch, MIGRATIONS)] == [None] * len(MIGRATIONS)


def test_a_schema_newer_than_this_rhetor_is_refused(scratch: PgDatabase) -> None:
    """A step this Rhetor does not know (written by a newer one) stops the start rather than be misread."""
    migrate(scratch, MIGRATIONS)
    with scratch.connection("written") as conn:
        conn.execute(
            "INSERT INTO schema_migrations (part, version, name) VALUES ('ledger', 99, 'future')"
        )
    with pytest.raises(StorageUnavailable) as info:
        migrate(scratch, MIGRATIONS)
    assert "newer than this Rhetor knows" in info.value.message


def test_a_failed_step_rolls_every_step_back(scratch: PgDatabase) -> None:
    """Steps apply in one transaction: a step that fails leaves no table and no record behind."""
    steps = (
        Migration("demo", 1, "a table", ("CREATE TABLE demo (x INTEGER)",)),
        Migration("demo", 2, "a mistake", ("CREATE TABLE demo (x INTEGER)",)),
    )
    with pytest.raises(StorageUnavailable):
        migrate(scratch, steps)
    assert [s.applied for s in migration_status(scratch, steps)] == [None, None]
    with pytest.raises(ValueError, match="expected version 2"):
        migrate(scratch, (steps[0], Migration("demo", 3, "a gap", ())))


def test_a_database_that_does_not_answer_is_storage_unavailable() -> None:
    """Nothing listens: opening fails at once with the reason, as StorageUnavailable, never a hang."""
    with pytest.raises(StorageUnavailable) as info:
        PgDatabase("postgresql://postgres@127.0.0.1:9/none", connect_timeout=1.0).open()
    assert "cannot be reached" in info.value.message and "refused" in info.value.message


def test_the_password_of_a_database_url_is_known_to_redaction() -> None:
    """The password in RHETOR_DATABASE_URL is what log redaction hides; the URL never shows in repr."""
    url = "postgresql://rhetor:s3cret@db.internal:5432/rhetor"
    assert database_password(url) == "s3cret"
    assert database_password("postgresql://rhetor@db/rhetor") is None
    assert database_password(None) is None
    assert "s3cret" not in repr(Settings(database_url=url))


def test_the_pool_holds_at_most_rhetor_database_pool_size_connections(pg_url: str) -> None:
    """RHETOR_DATABASE_POOL_SIZE bounds each process's pool (8 by default)."""
    for size in (3, 8):
        settings = Settings.from_env(
            {"RHETOR_DATABASE_URL": pg_url, "RHETOR_DATABASE_POOL_SIZE": str(size)}
        )
        db = open_database(settings)
        try:
            assert db.pool.max_size == size
        finally:
            db.close()


def test_upgrade_and_status_by_hand(pg_url: str, pg: PgDatabase) -> None:
    """rhetor db upgrade applies nothing on a migrated database; status shows every step applied."""
    settings = Settings(database_url=pg_url)
    assert upgrade_database(settings) == []
    assert all(s.applied is not None for s in database_status(settings))


async def test_with_postgresql_two_runtimes_share_the_stores_and_no_data_directory(
    tmp_path: Path, pg: PgDatabase
) -> None:
    """Two runtimes on one database at once: no data directory, one budget, each other's contexts."""
    settings = Settings(
        data_dir=tmp_path / "unused",
        hermes_url=None,
        budget_policy="enforce",
        database_url=pg.url,
    )
    async with (
        rhetor.runtime.start(settings, backends=BACKENDS) as one,
        rhetor.runtime.start(settings, backends=BACKENDS) as two,
    ):
        await one.message("hello", context_id="shared")
        detail = await two.get_context("shared")
        await two.set_limit("daily", 0.000001)
        await one.create_prompt("p", "ergon", "You write code.", is_default=True)
        prompts = await two.list_prompts("ergon")
        status = await one.budget()
    assert detail["messages"][0].content == "hello"
    assert not settings.data_dir.exists()
    assert [p.name for p in prompts] == ["p"]
    assert status["periods"]["daily"]["limit"] == 0.000001


async def test_with_postgresql_a_limit_set_by_one_runtime_refuses_in_the_other(
    tmp_path: Path, pg: PgDatabase
) -> None:
    """The check is the database's: a limit set through one runtime binds the other's next request."""
    prices = tmp_path / "prices.json"
    prices.write_text('{"simulated-echo": {"input_per_mtok": 1000, "output_per_mtok": 1000}}')
    settings = Settings(
        data_dir=tmp_path / "unused",
        hermes_url=None,
        budget_policy="enforce",
        database_url=pg.url,
        price_overrides=prices,
    )
    async with (
        rhetor.runtime.start(settings, backends=BACKENDS) as one,
        rhetor.runtime.start(settings, backends=BACKENDS) as two,
    ):
        assert (await two.message("first", max_tokens=50)).cost > 0
        await one.set_limit("daily", 0.0001)
        with pytest.raises(BudgetExceeded):
            await two.message("second", max_tokens=50)


async def test_with_sqlite_a_second_runtime_on_the_data_directory_is_refused(
    tmp_path: Path,
) -> None:
    """Unset, the stores are SQLite files under the data directory, which one runtime holds."""
    settings = Settings(data_dir=tmp_path / "data", hermes_url=None)
    async with rhetor.runtime.start(settings, backends=BACKENDS):
        with pytest.raises(ValidationError) as info:
            async with rhetor.runtime.start(settings, backends=BACKENDS):
                await trio.lowlevel.checkpoint()  # pragma: no cover - refused before
    assert info.value.field == "data_dir"
    assert (settings.data_dir / "ledger.db").exists()
