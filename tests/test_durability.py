"""
Budget durability across restarts: of the BudgetKeeper, of the storage subtree, and of the process (kill -9).

The promises: under ``enforce`` no restart reopens headroom a request already
holds, every reply acknowledged to a client has its charge in the ledger, and
a process that dies leaves no reservation unbilled. Runtime settings changed
through the API (limits, policy, active provider) survive a restart too.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

import rhetor.runtime
from rhetor import BudgetExceeded, RhetorError, Settings
from rhetor._types import ProviderReply, ProviderRequest, ProviderStatus, StreamEnd, TextDelta
from rhetor.budget._ledger import SQLiteLedger
from rhetor.providers._simulated import SimulatedBackend
from tests.stores import backend_settings, ledger_of

ROOT = Path(__file__).resolve().parent.parent
# A price for the simulated models, so that they cost money and enforce has work to do.
PRICE = {"input_per_mtok": 1000.0, "output_per_mtok": 1000.0}


def priced(tmp_path: Path) -> Path:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"simulated-echo": PRICE, "simulated-summary": PRICE}))
    return path


def enforced(tmp_path: Path, limit: float, **overrides: Any) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        hermes_url=None,
        budget_policy="enforce",
        daily_limit=limit,
        price_overrides=priced(tmp_path),
        **overrides,
    )


@attrs.define(eq=False)
class GatedBackend:
    """The simulated provider, holding every completion until the test opens the gate."""

    name: str = "simulated"
    models: tuple[str, ...] = ("simulated-echo", "simulated-summary")
    gate: trio.Event = attrs.Factory(trio.Event)
    waiting: int = 0

    async def check(self) -> ProviderStatus:
        return ProviderStatus(self.name, True, self.models)

    async def complete(self, request: ProviderRequest) -> ProviderReply:
        self.waiting += 1
        try:
            await self.gate.wait()
        finally:
            self.waiting -= 1
        return await SimulatedBackend(models=self.models).complete(request)

    async def stream(self, request: ProviderRequest) -> AsyncIterator[TextDelta | StreamEnd]:
        await self.gate.wait()
        async for item in SimulatedBackend(models=self.models).stream(request):
            yield item

    async def aclose(self) -> None:
        return None


async def restart_keeper(rt: rhetor.runtime.Runtime) -> None:
    """Crash the BudgetKeeper once; its supervisor starts a new incarnation."""
    rt.system.faults.crash_next("budget")
    await rt.budget()  # crashes it, then is answered by the next incarnation
    assert rt.budget_keeper.stats().restarts == 1


async def restart_storage(rt: rhetor.runtime.Runtime) -> None:
    """Crash the ContextStore six times in a row: the whole storage subtree restarts."""
    restarts = rt.budget_keeper.stats().restarts
    for _ in range(6):
        rt.system.faults.crash_next("contexts")
        with contextlib.suppress(RhetorError):  # the store was down at that moment
            await rt.list_contexts()
    with trio.fail_after(10):
        while not rt.budget_keeper.alive or rt.budget_keeper.stats().restarts == restarts:
            await trio.sleep(0.01)
        # The subtree's own restart, not only the keeper's incarnation.
        await rt.budget()


@pytest.fixture
def stores(backend: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    """The settings that put the runtime's stores on the backend (SQLite or PostgreSQL)."""
    return backend_settings(backend, request)


@pytest.mark.parametrize("restart", [restart_keeper, restart_storage])
async def test_a_restart_under_enforce_does_not_reopen_held_headroom(
    tmp_path: Path, restart: Callable[[rhetor.runtime.Runtime], Any], stores: dict[str, Any]
) -> None:
    """Requests hold the whole limit; a keeper or storage restart keeps it held, so no extra request passes."""
    backend = GatedBackend()
    # Each request reserves about $0.074 (its padded prompt plus 50 tokens at $1000/Mtok).
    settings = enforced(tmp_path, limit=0.3, **stores)
    outcomes: list[str] = []
    async with rhetor.runtime.start(settings, backends={"simulated": lambda: backend}) as rt:

        async def one(i: int) -> None:
            try:
                await rt.message(f"request {i}", max_tokens=50)
                outcomes.append("ok")
            except BudgetExceeded:
                outcomes.append("refused")

        async with trio.open_nursery() as nursery:
            for i in range(4):
                nursery.start_soon(one, i)
            with trio.fail_after(10):
                while backend.waiting < 4:
                    await trio.sleep(0.01)
            held = (await rt.budget())["periods"]["daily"]["reserved"]
            await restart(rt)
            assert (await rt.budget())["periods"]["daily"]["reserved"] == pytest.approx(held)
            with pytest.raises(BudgetExceeded):
                await rt.message("one request too many", max_tokens=50)
            backend.gate.set()
        status = await rt.budget()
    assert outcomes == ["ok"] * 4
    assert status["periods"]["daily"]["reserved"] == 0.0
    assert 0 < status["periods"]["daily"]["spent"] <= 0.3
    ledger = ledger_of(settings)
    try:
        assert [e.status for e in ledger.entries()] == ["ok"] * 4
        assert ledger.reservations() == []
    finally:
        ledger.close()


@pytest.mark.slow
async def test_keeper_crashes_under_load_never_overspend_or_lose_an_acknowledged_charge(
    tmp_path: Path, stores: dict[str, Any]
) -> None:
    """200 concurrent priced requests while the keeper crashes three times: no overspend, every reply's charge recorded."""
    limit = 0.5
    settings = enforced(tmp_path, limit=limit, **stores)
    acknowledged: list[str] = []
    async with rhetor.runtime.start(
        settings, backends={"simulated": lambda: SimulatedBackend(chunk_delay=0.005)}
    ) as rt:

        async def one(i: int) -> None:
            try:
                reply = await rt.message(f"request number {i}", max_tokens=50)
            except BudgetExceeded:
                return
            acknowledged.append(reply.request_id)

        async with trio.open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(one, i)
                if i in (40, 90, 150):
                    rt.system.faults.crash_next("budget")
                await trio.sleep(0.001)
        status = await rt.budget()
        assert rt.budget_keeper.stats().restarts >= 1
    assert acknowledged
    assert status["periods"]["daily"]["reserved"] == 0.0
    ledger = ledger_of(settings)
    try:
        entries = ledger.entries()
        assert ledger.reservations() == []
    finally:
        ledger.close()
    charged = {e.request_id for e in entries if e.status == "ok"}
    assert set(acknowledged) <= charged
    assert sum(e.cost for e in entries) <= limit + 1e-9


async def test_limits_policy_and_the_active_model_set_through_the_api_survive_a_restart(
    tmp_path: Path, stores: dict[str, Any]
) -> None:
    """Limits, policy and the active provider/model chosen at run time are there after a restart, over the environment."""
    settings = Settings(data_dir=tmp_path / "data", hermes_url=None, budget_policy="warn", **stores)
    backends = {"simulated": lambda: SimulatedBackend()}
    async with rhetor.runtime.start(settings, backends=backends) as rt:
        assert (await rt.providers())["active_model"] == "simulated-echo"
        await rt.set_provider("simulated", "simulated-summary")
        await rt.set_limit("weekly", 2.5)
        await rt.set_policy("enforce")
    async with rhetor.runtime.start(settings, backends=backends) as rt:
        info = await rt.providers()
        status = await rt.budget()
        reply = await rt.message("One. Two.")
    assert (info["active_provider"], info["active_model"]) == ("simulated", "simulated-summary")
    assert reply.model == "simulated-summary"
    assert status["policy"] == "enforce"  # the API's choice, not the environment's warn
    assert status["periods"]["weekly"]["limit"] == 2.5


async def test_a_stored_active_model_no_longer_served_is_ignored(
    tmp_path: Path, stores: dict[str, Any]
) -> None:
    """An active model whose provider is gone at the next start is not restored; routing goes by task."""
    settings = Settings(data_dir=tmp_path / "data", hermes_url=None, **stores)
    settings.data_dir.mkdir(parents=True)
    ledger = ledger_of(settings)
    ledger.set_active("gone", "gone-1")
    ledger.close()
    async with rhetor.runtime.start(
        settings, backends={"simulated": lambda: SimulatedBackend()}
    ) as rt:
        info = await rt.providers()
    assert (info["active_provider"], info["active_model"]) == ("simulated", "simulated-echo")


async def test_a_reply_goes_out_only_after_its_charge_is_in_the_ledger(
    tmp_path: Path, autojump_clock: object
) -> None:
    """With a slow BudgetKeeper the reply waits: the moment it arrives, its charge is already on disk."""
    settings = Settings(data_dir=tmp_path / "data", hermes_url=None)
    async with rhetor.runtime.start(
        settings, backends={"simulated": lambda: SimulatedBackend()}
    ) as rt:
        rt.system.faults.slow("budget", 2.0)
        reply = await rt.message("hello")
        # Read at once, with no checkpoint in between: nothing can be written meanwhile.
        with SQLiteLedger(settings.data_dir / "ledger.db") as ledger:
            recorded = [e.request_id for e in ledger.entries()]
        rt.system.faults.clear("budget")
    assert recorded == [reply.request_id]


# -- kill -9 ---------------------------------------------------------------------------


def _serve(data_dir: Path, prices: Path, limit: float) -> tuple[subprocess.Popen[str], str]:
    """Start ``python -m rhetor serve`` on a free port; answers the process and its URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RHETOR_")}
    for key in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY"):
        env.pop(key, None)
    env.update(
        RHETOR_PORT="0",
        RHETOR_HOST_BIND="127.0.0.1",
        RHETOR_DATA_DIR=str(data_dir),
        RHETOR_BUDGET_POLICY="enforce",
        RHETOR_BUDGET_DAILY_LIMIT=str(limit),
        RHETOR_PRICE_OVERRIDES=str(prices),
        # Long enough that many requests are in flight when the process dies.
        RHETOR_SIMULATED_CHUNK_DELAY="0.2",
        RHETOR_SIMULATED="always",
        HERMES_API_URL="",
        OLLAMA_BASE_URL="http://127.0.0.1:9",
        PYTHONPATH=str(ROOT),
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "rhetor", "serve"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if "serving on" not in line:
        process.kill()
        raise AssertionError(f"rhetor did not start: {line!r}")
    return process, line.split()[-1]


@pytest.mark.slow
async def test_kill_9_mid_load_loses_no_acknowledged_charge_and_bills_open_reservations(
    tmp_path: Path,
) -> None:
    """A server killed with SIGKILL under load: every 200 has its ledger row; its open reservations are billed interrupted on restart."""
    data_dir = tmp_path / "data"
    limit = 50.0
    process, url = _serve(data_dir, priced(tmp_path), limit)
    acknowledged: list[str] = []

    def worker(w: int) -> None:
        # Blocking clients in threads: an async client's request stream cut
        # by the kill would be left unfinished for the garbage collector.
        with httpx.Client(base_url=url, timeout=30) as client:
            for i in range(1000):
                try:
                    response = client.post(
                        "/message", json={"message": f"request {w}-{i}", "max_tokens": 50}
                    )
                except httpx.TransportError:
                    return  # the process died
                assert response.status_code == 200, response.text
                acknowledged.append(response.json()["request_id"])

    try:
        async with trio.open_nursery() as nursery:
            for w in range(30):
                nursery.start_soon(trio.to_thread.run_sync, worker, w)
            with trio.fail_after(30):
                while len(acknowledged) < 150:
                    await trio.sleep(0.005)
            # Mid-load: replies are being acknowledged and 30 more are in flight.
            process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.communicate()
    assert len(acknowledged) >= 60
    with SQLiteLedger(data_dir / "ledger.db") as ledger:
        left_open = len(ledger.reservations())
    assert left_open > 0, f"the kill should find requests in flight ({len(acknowledged)} done)"
    # Restart on the same data directory: the sweeper bills what the dead process held.
    async with rhetor.runtime.start(
        Settings(data_dir=data_dir, hermes_url=None, budget_policy="enforce", daily_limit=limit),
        backends={"simulated": lambda: SimulatedBackend()},
    ) as rt:
        status = await rt.budget()
    with SQLiteLedger(data_dir / "ledger.db") as ledger:
        entries = ledger.entries()
        assert ledger.reservations() == []
    charged = {e.request_id for e in entries if e.status == "ok"}
    missing = set(acknowledged) - charged
    assert not missing, f"{len(missing)} acknowledged charges lost"
    interrupted = [e for e in entries if e.status == "interrupted"]
    assert len(interrupted) == left_open
    assert all(e.billed == "worst_case" and e.cost > 0 for e in interrupted)
    # No request is billed twice, and the dead process's spend stays within the limit.
    assert not {e.request_id for e in interrupted} & charged
    assert status["periods"]["daily"]["spent"] == pytest.approx(sum(e.cost for e in entries))
    assert status["periods"]["daily"]["spent"] <= limit
