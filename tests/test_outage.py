"""
PostgreSQL out of reach mid-run: typed 503s under enforce, unrecorded spend kept under warn, recovery by itself.

The machine's PostgreSQL serves every other test, so it is never restarted:
Rhetor reaches the run's database through a TCP proxy the test cuts
(``tests/fakes/tcp_proxy.py``), which closes every connection and refuses
new ones, as a server restarting does.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import trio

import rhetor.runtime
from rhetor import Settings, StorageUnavailable
from rhetor._types import Reply
from rhetor.budget._pg_ledger import PostgresLedger
from rhetor.providers._simulated import SimulatedBackend
from rhetor.storage._pg import PgDatabase
from rhetor.storage._pg_breaker import Breaker
from tests.fakes.openai import fake_openai
from tests.fakes.tcp_proxy import CuttableProxy, cuttable_proxy, database_address, proxied_url
from tests.helpers import running_server
from tests.instances import instance_env, post, start, stop

PRICE = {"input_per_mtok": 1000.0, "output_per_mtok": 1000.0}


def settings(tmp_path: Path, url: str, policy: str, **overrides: Any) -> Settings:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"simulated-echo": PRICE, "simulated-summary": PRICE}))
    return Settings(
        port=0,
        data_dir=tmp_path / "data",
        hermes_url=None,
        database_url=url,
        budget_policy=policy,  # type: ignore[arg-type]
        daily_limit=100.0,
        price_overrides=prices,
        shutdown_grace=1.0,
        **overrides,
    )


@asynccontextmanager
async def behind_proxy(
    pg: PgDatabase, tmp_path: Path, policy: str
) -> AsyncIterator[tuple[CuttableProxy, rhetor.runtime.Runtime]]:
    """A runtime whose every database connection goes through a proxy the test can cut."""
    async with cuttable_proxy(*database_address(pg.url)) as proxy:
        config = settings(tmp_path, proxied_url(pg.url, proxy), policy)
        async with rhetor.runtime.start(
            config, backends={"simulated": lambda: SimulatedBackend()}
        ) as rt:
            yield proxy, rt


async def eventually_replies(rt: rhetor.runtime.Runtime, message: str, within: float) -> Reply:
    """Ask until a reply comes (the first asks after an outage may still fail fast)."""
    with trio.fail_after(within):
        while True:
            try:
                return await rt.message(message, max_tokens=20)
            except StorageUnavailable:
                await trio.sleep(0.1)


def charges(pg: PgDatabase) -> dict[str, Any]:
    return {e.request_id: e for e in PostgresLedger(pg).entries()}


@pytest.mark.slow
async def test_under_enforce_a_request_fails_fast_with_storage_unavailable_while_the_database_is_cut(
    pg: PgDatabase, tmp_path: Path
) -> None:
    """Cut off, an enforced request is a quick StorageUnavailable, never a hang; restored, requests succeed with nothing done by hand."""
    async with behind_proxy(pg, tmp_path, "enforce") as (proxy, rt):
        before = await rt.message("before", max_tokens=20)
        proxy.cut()
        failures = 0
        with trio.fail_after(8):
            for i in range(5):
                with pytest.raises(StorageUnavailable):
                    await rt.message(f"during {i}", max_tokens=20)
                failures += 1
        proxy.restore()
        after = await eventually_replies(rt, "after", within=10)
        status = await rt.budget()
    assert failures == 5
    ledger = charges(pg)
    assert {before.request_id, after.request_id} <= set(ledger)
    assert not any(key.startswith("during") for key in ledger)
    assert status["ledger_errors"]["pending_charges"] == 0


@pytest.mark.slow
async def test_under_warn_a_request_proceeds_while_the_database_is_cut_and_its_charge_is_written_later(
    pg: PgDatabase, tmp_path: Path
) -> None:
    """Cut off under warn, requests are answered and their charges kept; once restored the keeper writes them without help."""
    async with behind_proxy(pg, tmp_path, "warn") as (proxy, rt):
        await rt.message("before", max_tokens=20)
        proxy.cut()
        with trio.fail_after(8):
            during = [await rt.message(f"during {i}", max_tokens=20) for i in range(3)]
        proxy.restore()
        with trio.fail_after(15):
            while not {r.request_id for r in during} <= set(charges(pg)):
                await trio.sleep(0.2)
        status = await rt.budget()
    ledger = charges(pg)
    assert all(ledger[r.request_id].cost == pytest.approx(r.cost) for r in during)
    assert all(r.cost > 0 for r in during)
    assert status["ledger_errors"]["unrecorded_charges"] == 3
    assert status["ledger_errors"]["pending_charges"] == 0


@pytest.mark.slow
async def test_the_edge_answers_503_storage_unavailable_while_the_database_is_cut(
    pg: PgDatabase, tmp_path: Path
) -> None:
    """Over HTTP an enforced request cut off from its ledger is a 503 whose type is storage_unavailable."""
    async with cuttable_proxy(*database_address(pg.url)) as proxy:
        config = settings(tmp_path, proxied_url(pg.url, proxy), "enforce")
        async with (
            running_server(config) as server,
            httpx.AsyncClient(base_url=server.base_url, timeout=10) as client,
        ):
            assert (await client.post("/message", json={"message": "hi"})).status_code == 200
            proxy.cut()
            with trio.fail_after(5):
                response = await client.post("/message", json={"message": "hi"})
            proxy.restore()
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "storage_unavailable"
    assert response.headers["retry-after"] == "1"


def test_the_breaker_fails_calls_at_once_and_lets_one_probe_through_after_a_growing_wait() -> None:
    """During an outage only one probe at a time reaches the database, after 0.2 s, then 0.4 s; a probe that answers ends it."""
    import psycopg

    now = [0.0]
    breaker = Breaker(clock=lambda: now[0])
    lost = StorageUnavailable("lost")
    lost.__cause__ = psycopg.OperationalError("server closed the connection unexpectedly")
    assert breaker.admit() is False
    breaker.failed(lost, probe=False)
    with pytest.raises(StorageUnavailable, match="unreachable"):
        breaker.admit()
    now[0] = 0.2
    assert breaker.admit() is True
    with pytest.raises(StorageUnavailable):
        breaker.admit()  # one probe at a time
    breaker.failed(lost, probe=True)
    now[0] = 0.5
    with pytest.raises(StorageUnavailable):
        breaker.admit()  # the wait doubled: 0.4 s after the failed probe
    now[0] = 0.7
    assert breaker.admit() is True
    breaker.succeeded(probe=True)
    assert breaker.admit() is False
    assert (breaker.outages, breaker.down) == (1, False)


def test_errors_that_are_not_an_outage_leave_the_breaker_closed() -> None:
    """A statement timeout or a constraint is the statement's failure, not the database's."""
    import psycopg.errors

    breaker = Breaker()
    for cause in (psycopg.errors.QueryCanceled("timeout"), psycopg.errors.UniqueViolation("dup")):
        error = StorageUnavailable("x")
        error.__cause__ = cause
        breaker.failed(error, probe=False)
    assert breaker.admit() is False


def test_the_v1_apis_answer_storage_unavailable_as_a_retryable_503() -> None:
    """OpenAI's and Anthropic's shapes keep the 503 (their SDKs retry it) and say when to retry."""
    from rhetor.edge._compat_anthropic import anthropic_error
    from rhetor.edge._openai_wire import openai_error

    error = StorageUnavailable("the database is unreachable")
    openai = openai_error(error)
    anthropic = anthropic_error(error)
    assert (openai.status, openai.body["error"]["code"]) == (503, "storage_unavailable")
    assert openai.body["error"]["type"] == "server_error"
    assert (anthropic.status, anthropic.body["error"]["type"]) == (503, "api_error")
    assert openai.headers["retry-after"] == anthropic.headers["retry-after"] == "1"


@pytest.mark.slow
async def test_charges_kept_during_an_outage_survive_kill_9_and_are_written_by_the_next_start(
    pg: PgDatabase, tmp_path: Path
) -> None:
    """Under warn, replies answered while cut off have their charges synced to disk; killed, the next process on that data directory writes them."""
    data_dir = tmp_path / "data"
    async with (
        fake_openai() as fake,
        cuttable_proxy(*database_address(pg.url)) as proxy,
    ):
        env = instance_env(
            proxied_url(pg.url, proxy),
            RHETOR_BUDGET_POLICY="warn",
            RHETOR_BUDGET_DAILY_LIMIT="100",
            RHETOR_DATA_DIR=str(data_dir),
            OPENAI_API_KEY="sk-fake",
            OPENAI_BASE_URL=fake.base_url,
        )
        (first,) = await start(["first"], env, tmp_path)
        try:
            body = {"message": "hi", "model": "gpt-4o", "max_tokens": 20}
            assert (await post(first.url, "/message", body))[0] == 200
            proxy.cut()
            answered = []
            for _ in range(3):
                status, reply = await post(first.url, "/message", body)
                assert status == 200
                answered.append(reply["request_id"])
            first.kill()
        finally:
            await trio.to_thread.run_sync(stop, first)
        proxy.restore()
        assert not set(answered) & set(charges(pg))
        (second,) = await start(["second"], env, tmp_path)
        try:
            with trio.fail_after(10):
                while not set(answered) <= set(charges(pg)):
                    await trio.sleep(0.1)
        finally:
            await trio.to_thread.run_sync(stop, second)
    assert all(charges(pg)[r].status == "ok" for r in answered)
    assert not list((data_dir / "unrecorded").glob("*.jsonl"))


@pytest.mark.slow
async def test_a_start_waits_for_a_database_that_is_out_of_reach_and_then_serves(
    pg: PgDatabase, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A database that comes up after Rhetor (compose, a reboot) is waited for, each attempt logged."""
    async with cuttable_proxy(*database_address(pg.url)) as proxy:
        proxy.cut()
        config = settings(tmp_path, proxied_url(pg.url, proxy), "warn")

        async def restore_later() -> None:
            await trio.sleep(1.2)
            proxy.restore()

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(restore_later)
                async with rhetor.runtime.start(
                    config, backends={"simulated": lambda: SimulatedBackend()}
                ) as rt:
                    reply = await rt.message("after the wait", max_tokens=20)
    assert reply.message
    assert proxy.refused >= 2  # it tried while the database was out of reach
    waits = [r for r in caplog.records if "trying again in" in r.getMessage()]
    assert len(waits) >= 2 and all(r.levelname == "WARNING" for r in waits)
    assert "out of reach" in waits[0].getMessage()


@pytest.mark.slow
async def test_a_start_gives_up_on_an_unreachable_database_after_its_start_timeout(
    pg: PgDatabase, tmp_path: Path
) -> None:
    async with cuttable_proxy(*database_address(pg.url)) as proxy:
        proxy.cut()
        config = settings(tmp_path, proxied_url(pg.url, proxy), "warn", database_start_timeout=1.0)
        began = trio.current_time()
        with trio.fail_after(20), pytest.raises(StorageUnavailable):
            async with rhetor.runtime.start(
                config, backends={"simulated": lambda: SimulatedBackend()}
            ):
                pass
        assert trio.current_time() - began < 5
        assert proxy.refused >= 2


async def test_a_database_that_does_not_exist_fails_the_start_at_once_without_waiting(
    pg: PgDatabase, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    parts = urlsplit(pg.url)
    missing = urlunsplit(parts._replace(path="/rhetor_no_such_database"))
    config = settings(tmp_path, missing, "warn")  # the default start timeout: 60 s
    began = trio.current_time()
    with trio.fail_after(20), pytest.raises(StorageUnavailable, match="does not exist"):
        async with rhetor.runtime.start(config, backends={"simulated": lambda: SimulatedBackend()}):
            pass
    assert trio.current_time() - began < 5
    assert not [r for r in caplog.records if "trying again in" in r.getMessage()]


@pytest.mark.parametrize(
    ("message", "waits"),
    [
        ('connection to server at "db", port 5432 failed: Connection refused', True),
        ("server closed the connection unexpectedly", True),
        ("failed: FATAL:  the database system is starting up", True),
        ("failed: FATAL:  the database system is shutting down", True),
        ("failed: FATAL:  sorry, too many clients already", True),
        ('failed: FATAL:  password authentication failed for user "rhetor"', False),
        ('failed: FATAL:  database "nope" does not exist', False),
        ('failed: FATAL:  no pg_hba.conf entry for host "10.0.0.9"', False),
    ],
)
def test_a_start_waits_for_an_outage_or_a_server_not_ready_never_for_a_refusal(
    message: str, waits: bool
) -> None:
    import psycopg

    from rhetor._stores import worth_waiting_for

    error = StorageUnavailable(f"the database cannot be reached: {message}")
    error.__cause__ = psycopg.OperationalError(f"connection failed: {message}")
    assert worth_waiting_for(error) is waits
    refused = StorageUnavailable("the database cannot be written: UniqueViolation")
    refused.__cause__ = psycopg.errors.UniqueViolation("duplicate key")
    assert worth_waiting_for(refused) is False
