"""
Caches across processes on one PostgreSQL: what one runtime changes, the others hear (LISTEN/NOTIFY).

Two runtimes share the run's database, as two processes would. The default
prompts a PromptLibrary caches, and the active model the Router heads its
chains with, follow the other runtime's writes within the feed's bound; a
feed cut off from the database stops trusting the cache and listens again
by itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

import rhetor.runtime
from rhetor import Settings
from rhetor._asks import ask
from rhetor.providers._simulated import SimulatedBackend
from rhetor.storage._changes import GetFeedStatus
from rhetor.storage._pg import PgDatabase
from rhetor.storage._prompts import GetDefaultPrompt
from tests.fakes.tcp_proxy import cuttable_proxy, database_address, proxied_url

pytestmark = pytest.mark.slow

MODELS = ("simulated-echo", "simulated-summary")


@asynccontextmanager
async def runtime(url: str, tmp_path: Path) -> AsyncIterator[rhetor.runtime.Runtime]:
    settings = Settings(data_dir=tmp_path / "data", hermes_url=None, database_url=url)
    async with rhetor.runtime.start(
        settings, backends={"simulated": lambda: SimulatedBackend(models=MODELS)}
    ) as rt:
        yield rt


async def soon(check: Callable[[], Any], within: float = 3.0) -> None:
    """Wait until ``await check()`` is true, failing after ``within`` seconds."""
    with trio.fail_after(within):
        while not await check():
            await trio.sleep(0.02)


async def default_of(rt: rhetor.runtime.Runtime, component: str) -> str | None:
    prompt = await ask(rt.prompts, GetDefaultPrompt(component))
    return None if prompt is None else prompt.content


async def test_a_default_prompt_set_by_one_runtime_is_used_by_the_other(
    pg: PgDatabase, tmp_path: Path
) -> None:
    """The second runtime cached "no default"; the first stores one, and the second answers it within the bound."""
    async with runtime(pg.url, tmp_path) as first, runtime(pg.url, tmp_path) as second:
        await soon(lambda: _live(second))
        assert await default_of(second, "athena") is None
        created = await first.create_prompt("a", "athena", "You are Athena.", is_default=True)

        async def heard() -> bool:
            return await default_of(second, "athena") == "You are Athena."

        await soon(heard)
        await first.update_prompt(created.id, content="You are Athena, v2.")

        async def heard_again() -> bool:
            return await default_of(second, "athena") == "You are Athena, v2."

        await soon(heard_again)


async def test_the_active_model_chosen_through_one_runtime_heads_the_others_chains(
    pg: PgDatabase, tmp_path: Path
) -> None:
    """POST /provider on one process is what the other routes by, without a restart."""
    async with runtime(pg.url, tmp_path) as first, runtime(pg.url, tmp_path) as second:
        await soon(lambda: _live(second))
        before = await second.providers()
        assert before["active_model"] == "simulated-echo"
        await first.set_provider("simulated", "simulated-summary")

        async def heard() -> bool:
            return (await second.providers())["active_model"] == "simulated-summary"

        await soon(heard)
        reply = await second.message("hello")
    assert reply.model == "simulated-summary"


async def test_a_feed_cut_off_stops_trusting_the_cache_and_hears_changes_again_once_back(
    pg: PgDatabase, tmp_path: Path
) -> None:
    """While cut off nothing stale is served as fresh; once the proxy is back the feed listens again by itself."""
    async with (
        cuttable_proxy(*database_address(pg.url)) as proxy,
        runtime(pg.url, tmp_path) as writer,
        runtime(proxied_url(pg.url, proxy), tmp_path) as reader,
    ):
        await soon(lambda: _live(reader))
        assert await default_of(reader, "hermes") is None
        proxy.cut()
        await soon(lambda: _deaf(reader))
        # Written while the reader hears nothing.
        await writer.create_prompt("h", "hermes", "You are Hermes.", is_default=True)
        proxy.restore()
        await soon(lambda: _live(reader), within=10)

        async def fresh() -> bool:
            try:
                return await default_of(reader, "hermes") == "You are Hermes."
            except rhetor.StorageUnavailable:
                return False

        await soon(fresh, within=5)
        await writer.create_prompt("h2", "hermes", "You are Hermes, v2.", is_default=True)

        async def heard() -> bool:
            return await default_of(reader, "hermes") == "You are Hermes, v2."

        await soon(heard)


async def _live(rt: rhetor.runtime.Runtime) -> bool:
    return (await ask(rt.system.ref("changes"), GetFeedStatus())).live


async def _deaf(rt: rhetor.runtime.Runtime) -> bool:
    return not await _live(rt)
