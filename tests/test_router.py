"""
The Router actor itself (rhetor/routing/_router.py): its state, its messages, and what it asks of others.

The parts beside it have their own tests: the attempt loop test_attempts.py,
plans test_plan.py and test_planning.py, contexts test_conversations.py, and
billing test_billing.py. These run the whole runtime on the simulated
provider and speak to the Router's ref.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import attrs
import pytest
import trio

import actors
import rhetor.runtime
from rhetor import InternalError, Settings
from rhetor.providers._simulated import SimulatedBackend
from rhetor.routing._router import BudgetModeChanged, Router


def settings(tmp_path: Path, **overrides: object) -> Settings:
    """Only the simulated provider, data under tmp_path, no Hermes."""
    return Settings(data_dir=tmp_path / "data", hermes_url=None, **overrides)  # type: ignore[arg-type]


SIMULATED = {"simulated": lambda: SimulatedBackend()}


def test_the_router_is_an_attrs_actor_whose_state_is_private() -> None:
    """Router is an attrs class built from keyword arguments, and every field of it is private."""
    assert attrs.has(Router) and issubclass(Router, actors.Actor)
    fields = attrs.fields(Router)
    assert all(f.name.startswith("_") for f in fields)
    assert all(f.kw_only for f in fields if f.init)


async def test_a_bug_in_the_budget_keeper_on_a_reservation_is_internal_error_for_that_request(
    tmp_path: Path,
) -> None:
    """A keeper bug answering a reserve reaches the caller as internal_error, named, like any actor's bug."""
    async with rhetor.runtime.start(settings(tmp_path), backends=SIMULATED) as rt:
        await rt.set_limit("daily", 10.0)  # reservations are now required
        rt.system.faults.crash_next("budget", KeyError("a bug in the keeper"))
        with pytest.raises(InternalError) as caught:
            await rt.message("hello")
        assert caught.value.message == "internal error in budget keeper (KeyError)"
        assert (await rt.message("hello again")).provider == "simulated"
        assert rt.budget_keeper.stats().restarts == 0


async def test_without_a_limit_no_reservation_is_asked_for_until_one_is_set(
    tmp_path: Path,
) -> None:
    """With no limit a request costs the keeper one message (its charge); after BudgetModeChanged, two."""
    async with rhetor.runtime.start(settings(tmp_path), backends=SIMULATED) as rt:
        keeper = rt.budget_keeper

        async def keeper_messages_for_one_request() -> int:
            before = keeper.stats().handled
            await rt.message("hello")
            return keeper.stats().handled - before

        assert await keeper_messages_for_one_request() == 1
        await rt.router.ask(BudgetModeChanged(reservations_required=True))
        assert await keeper_messages_for_one_request() == 2
        await rt.router.ask(BudgetModeChanged(reservations_required=False))
        assert await keeper_messages_for_one_request() == 1


async def test_the_active_model_is_restored_when_the_router_restarts(tmp_path: Path) -> None:
    """A model set active survives a crash of the Router: its next incarnation reads it back."""
    async with rhetor.runtime.start(settings(tmp_path), backends=SIMULATED) as rt:
        await rt.set_provider("simulated", "simulated-summary")
        rt.system.faults.crash_next("router", actors.InjectedCrash("restart it"))
        # The crash restarts the Router, and the message is redelivered to its next incarnation.
        reply = await rt.message("hello")
        assert rt.router.stats().restarts == 1
        assert reply.model == "simulated-summary"
        providers = await rt.providers()
        assert (providers["active_provider"], providers["active_model"]) == (
            "simulated",
            "simulated-summary",
        )


async def test_a_whole_reply_and_a_stream_of_one_prompt_are_billed_alike(tmp_path: Path) -> None:
    """The same prompt asked whole and streamed gets the same usage and cost, each charged once as ok."""
    prices = tmp_path / "prices.json"
    prices.write_text(
        json.dumps({"simulated-echo": {"input_per_mtok": 3.0, "output_per_mtok": 15.0}})
    )
    async with rhetor.runtime.start(
        settings(tmp_path, price_overrides=prices), backends=SIMULATED
    ) as rt:
        whole = await rt.message("Tell me about routing", model="simulated-echo")
        chunks = [c async for c in rt.stream("Tell me about routing", model="simulated-echo")]
        [row] = await rt.budget_usage("daily", "model")
    streamed = chunks[-1].reply
    assert streamed is not None
    assert streamed.message == whole.message
    assert (streamed.usage, streamed.cost) == (whole.usage, whole.cost) and whole.cost > 0
    assert (row["key"], row["requests"]) == ("simulated-echo", 2)
    assert row["cost"] == pytest.approx(2 * whole.cost)


async def test_a_context_gets_one_background_summary_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests that find a context too long while its summary runs start no second one."""
    started: list[str] = []
    gate = trio.Event()

    async def held_summary(self: Router, context_id: str, keep_recent: int = 0) -> None:
        started.append(context_id)
        await gate.wait()

    # The one way to observe the background summaries that no message reaches.
    monkeypatch.setattr(Router, "_summarize", held_summary)
    async with rhetor.runtime.start(
        settings(tmp_path, context_token_budget=40), backends=SIMULATED
    ) as rt:
        long_turn = "This turn is long enough on its own to outgrow a forty token window, surely."
        for _ in range(10):
            if started:
                break
            await rt.message(long_turn, context_id="long")
        assert started == ["long"]
        async with trio.open_nursery() as nursery:
            for i in range(8):
                nursery.start_soon(partial(rt.message, f"{long_turn} {i}", context_id="long"))
        assert started == ["long"]
        gate.set()
