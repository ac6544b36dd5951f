"""
Several Rhetor processes on one PostgreSQL: zero overspend, nothing acknowledged lost, recovery by itself.

Real ``python -m rhetor serve`` processes on ephemeral ports share the run's
database, in front of a fake OpenAI upstream (``tests/fakes/openai.py``)
whose model has a price (gpt-4o). Each test drives them over real sockets:

- two and then four instances take 1,000 concurrent requests against a
  small enforced daily limit: the ledger's total stays within it, every
  acknowledged reply has its charge, and the usage the upstream reported
  is exactly what the ledger holds;
- one of two instances is killed with SIGKILL mid-load: the other keeps
  serving, and after a restart no acknowledged charge or context message
  is lost and the dead one's open reservations are billed ``interrupted``;
- the database is cut off mid-load (a TCP proxy between Rhetor and
  PostgreSQL, never the machine's server), and a PostgreSQL server of the
  test's own (started from the installed binaries) is stopped as a crash
  would and started again mid-load: clients get successes or typed 503s,
  never a hang, and the instances recover with nothing done by hand.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from rhetor.budget._pg_ledger import PostgresLedger
from rhetor.storage._pg import PgDatabase
from rhetor.storage._pg_history import PostgresHistory
from tests.fakes._behaviours import Reply
from tests.fakes.openai import FakeOpenAI, fake_openai
from tests.fakes.tcp_proxy import cuttable_proxy, database_address, proxied_url
from tests.instances import Instance, instance_env, instances, post, start, stop
from tests.pg_server import Throwaway

pytestmark = pytest.mark.slow

MODEL = "gpt-4o"
# What the fake reports for every completion (input, output tokens).
USAGE = (12, 4)
MAX_TOKENS = 64


def env_for(url: str, fake: FakeOpenAI, limit: float) -> dict[str, str]:
    return instance_env(
        url,
        RHETOR_BUDGET_POLICY="enforce",
        RHETOR_BUDGET_DAILY_LIMIT=repr(limit),
        OPENAI_API_KEY="sk-fake",
        OPENAI_BASE_URL=fake.base_url,
    )


def body(text: str, **extra: Any) -> dict[str, Any]:
    return {"message": text, "model": MODEL, "max_tokens": MAX_TOKENS, **extra}


async def burst(servers: list[Instance], total: int) -> list[tuple[int, dict[str, Any]]]:
    """``total`` requests at once, spread over the servers in turn; answers (status, body) of each."""
    results: list[tuple[int, dict[str, Any]]] = []

    async def one(i: int) -> None:
        results.append(await post(servers[i % len(servers)].url, "/message", body(f"request {i}")))

    async with trio.open_nursery() as nursery:
        for i in range(total):
            nursery.start_soon(one, i)
    return results


def ledger(pg: PgDatabase) -> PostgresLedger:
    return PostgresLedger(pg)


@pytest.mark.parametrize("count", [2, 4])
async def test_instances_on_one_database_never_overspend_and_account_for_every_reply(
    pg: PgDatabase, tmp_path: Path, count: int
) -> None:
    """1,000 concurrent requests over 2 (then 4) processes against a small limit: 0 overspend, every reply charged, usage matched."""
    limit = 0.02
    reply = Reply(text="Hello from the fake.", input_tokens=USAGE[0])
    async with fake_openai() as fake:
        fake.default = reply
        async with instances(count, env_for(pg.url, fake, limit), tmp_path) as servers:
            results = await burst(servers, 1000)
    statuses = Counter(status for status, _ in results)
    assert set(statuses) <= {200, 402}, statuses
    acknowledged = [b["request_id"] for status, b in results if status == 200]
    assert statuses[200] > 20 and statuses[402] > 100, statuses
    assert all(b["error"]["type"] == "budget_exceeded" for s, b in results if s == 402)
    entries = ledger(pg).entries()
    spent = sum(e.cost for e in entries)
    assert spent <= limit + 1e-12, f"overspent by {spent - limit}"
    charged = Counter(e.request_id for e in entries)
    assert set(acknowledged) == set(charged) and max(charged.values()) == 1
    assert ledger(pg).reservations() == []
    # The usage the upstream reported, summed, is the ledger's.
    served = len(fake.completions)
    assert served == len(acknowledged)
    assert sum(e.input_tokens for e in entries) == served * USAGE[0]
    assert sum(e.output_tokens for e in entries) == served * reply.completion_tokens


def _load(
    url: str, worker: int, acknowledged: list[tuple[str, str, str]], stop: threading.Event
) -> None:
    """One client thread: requests with a context each, until ``stop`` or the server is gone."""
    with httpx.Client(base_url=url, timeout=30) as client:
        for i in itertools.count():
            if stop.is_set():
                return
            text = f"turn {worker}-{i}"
            context = f"ctx-{worker}"
            try:
                response = client.post("/message", json=body(text, context_id=context))
            except httpx.TransportError:
                return  # the process was killed
            assert response.status_code == 200, response.text
            acknowledged.append((response.json()["request_id"], context, text))


async def test_a_killed_instance_loses_nothing_acknowledged_and_its_reservations_are_billed(
    pg: PgDatabase, tmp_path: Path
) -> None:
    """kill -9 one of two mid-load: the other serves on; after a restart every acknowledged charge and turn is there, and the dead one's reservations are interrupted charges."""
    async with fake_openai() as fake:
        # Slow enough that requests are in flight when the process dies.
        fake.default = Reply(text="Hello from the fake.", input_tokens=USAGE[0], delay=0.2)
        env = env_for(pg.url, fake, 100.0)
        victim, survivor = await start(["victim", "survivor"], env, tmp_path)
        restarted: list[Instance] = []
        try:
            on_victim: list[tuple[str, str, str]] = []
            on_survivor: list[tuple[str, str, str]] = []
            done = threading.Event()
            async with trio.open_nursery() as nursery:
                for w in range(12):
                    nursery.start_soon(
                        trio.to_thread.run_sync, _load, victim.url, w, on_victim, done
                    )
                for w in range(12, 20):
                    nursery.start_soon(
                        trio.to_thread.run_sync, _load, survivor.url, w, on_survivor, done
                    )
                dead = f"{victim.process.pid}-"

                def victims_open() -> set[int]:
                    return {r.id for r in ledger(pg).reservations() if r.owner.startswith(dead)}

                with trio.fail_after(30):
                    while len(on_victim) < 40:
                        await trio.sleep(0.01)
                    # The clients move in waves (each request waits out the upstream's
                    # delay, all at once): kill while a wave is in its upstream calls,
                    # not in the moment between a wave's settles and the next reserves.
                    while not victims_open():
                        await trio.sleep(0.005)
                victim.kill()
                open_at_kill = victims_open()
                served_before = len(on_survivor)
                with trio.fail_after(30):
                    while len(on_survivor) < served_before + 20:
                        await trio.sleep(0.01)
                done.set()
            restarted = await start(["victim-again"], env, tmp_path)
            with trio.fail_after(15):
                while ledger(pg).reservations():
                    await trio.sleep(0.1)
        finally:
            for instance in (victim, survivor, *restarted):
                await trio.to_thread.run_sync(stop, instance)
    assert open_at_kill, "the kill should find requests in flight"
    entries = ledger(pg).entries()
    ok = {e.request_id for e in entries if e.status == "ok"}
    acknowledged = on_victim + on_survivor
    missing = {r for r, _, _ in acknowledged} - ok
    assert not missing, f"{len(missing)} acknowledged charges lost"
    interrupted = [e for e in entries if e.status == "interrupted"]
    assert open_at_kill <= {e.reservation_id for e in interrupted}
    assert all(e.billed == "worst_case" and e.cost > 0 for e in interrupted)
    assert not {e.request_id for e in interrupted} & ok
    assert max(Counter(e.request_id for e in entries).values()) == 1
    history = PostgresHistory(pg)
    stored = {
        context: {m.content for m in history.history(context)}
        for context in {c for _, c, _ in acknowledged}
    }
    lost = [(c, t) for _, c, t in acknowledged if t not in stored[c]]
    assert not lost, f"{len(lost)} acknowledged turns lost"


@pytest.fixture
def cluster() -> Iterator[Throwaway]:
    """A PostgreSQL server of the test's own, from the installed binaries, to restart at will."""
    found = Throwaway.find()
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI needs the PostgreSQL binaries to restart a server of the test's own")
        pytest.skip("no PostgreSQL binaries to start a server of the test's own")
    found.start()
    try:
        yield found
    finally:
        found.stop()


async def test_a_database_cut_mid_load_gives_successes_or_typed_503s_and_heals_by_itself(
    pg: PgDatabase, tmp_path: Path
) -> None:
    """PostgreSQL out of reach for 3 s under load: every answer is a 200 or a 503 storage_unavailable, then 200s again with nothing done by hand."""
    async with (
        fake_openai() as fake,
        cuttable_proxy(*database_address(pg.url)) as proxy,
    ):

        async def outage() -> None:
            proxy.cut()
            await trio.sleep(3.0)
            proxy.restore()

        env = env_for(proxied_url(pg.url, proxy), fake, 100.0)
        await _load_through(outage, env, fake, lambda: contextlib.nullcontext(pg), tmp_path)


async def test_a_postgresql_restart_mid_load_gives_successes_or_typed_503s_and_heals_by_itself(
    cluster: Throwaway, tmp_path: Path
) -> None:
    """
    The server itself stopped as a crash would (every session, lock and prepared statement
    gone) and started again 3 s later, under load: the same as a cut, with nothing by hand.
    """

    async def outage() -> None:
        await trio.to_thread.run_sync(cluster.halt)
        await trio.sleep(3.0)
        await trio.to_thread.run_sync(cluster.resume)

    async with fake_openai() as fake:
        env = env_for(cluster.url, fake, 100.0)
        # The test's own reads open their pool after the restart.
        await _load_through(outage, env, fake, lambda: PgDatabase(cluster.url), tmp_path)


async def _load_through(
    outage: Callable[[], Awaitable[None]],
    env: dict[str, str],
    fake: FakeOpenAI,
    database: Callable[[], AbstractContextManager[PgDatabase]],
    tmp_path: Path,
) -> None:
    """
    Two instances under 40 clients' load through ``outage``: every answer a 200 or a 503
    storage_unavailable, both alive, 200s only once one came back, every acknowledged
    reply charged.
    """
    fake.default = Reply(text="Hello from the fake.", input_tokens=USAGE[0], delay=0.05)
    async with instances(2, env, tmp_path) as servers:
        results: list[tuple[float, int, dict[str, Any]]] = []

        async def client_loop(n: int, stop: trio.Event) -> None:
            for i in itertools.count():
                if stop.is_set():
                    return
                url = servers[n % len(servers)].url
                status, answer = await post(url, "/message", body(f"r {n}-{i}"), timeout=20)
                results.append((trio.current_time(), status, answer))

        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            for n in range(40):
                nursery.start_soon(client_loop, n, stop)
            await trio.sleep(1.0)
            await outage()
            restored = trio.current_time()
            with trio.fail_after(15):
                while not any(t > restored + 0.5 and s == 200 for t, s, _ in results):
                    await trio.sleep(0.1)
            recovered = trio.current_time()
            await trio.sleep(1.5)
            stop.set()
        alive = [s.process.poll() is None for s in servers]
        with database() as pg:
            with trio.fail_after(15):
                while ledger(pg).reservations() or await trio.to_thread.run_sync(_pending, servers):
                    await trio.sleep(0.2)
            charged = {e.request_id for e in ledger(pg).entries() if e.status == "ok"}
    statuses = Counter(status for _, status, _ in results)
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[503] > 0 and statuses[200] > 0, statuses
    assert all(b["error"]["type"] == "storage_unavailable" for _, s, b in results if s == 503)
    assert alive == [True, True]
    # Once one request succeeded again, every later one does.
    tail = [s for t, s, _ in results if t > recovered + 0.5]
    assert tail and set(tail) == {200}
    acknowledged = {b["request_id"] for _, s, b in results if s == 200}
    assert acknowledged <= charged


def _pending(servers: list[Instance]) -> bool:
    """Whether any server still holds charges the database could not take."""
    for server in servers:
        status = httpx.get(f"{server.url}/budget", timeout=5).json()
        if status["ledger_errors"]["pending_charges"]:
            return True
    return False
