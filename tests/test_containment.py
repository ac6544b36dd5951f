"""
Containment: one request's bad data or a bug met with it never crashes a shared actor.

Everything here runs the whole runtime (``rhetor.runtime.start()``) on the real clock:
its stores work in threads, which a mock clock would jump past. No test waits on time
for its result; waits are for conditions, each under a deadline.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio.testing

import actors
import rhetor.runtime
from rhetor import (
    AllProvidersFailed,
    BudgetExceeded,
    InternalError,
    NotFound,
    RhetorError,
    Settings,
    ValidationError,
)
from rhetor._types import ProviderReply, ProviderRequest, ProviderStatus, StreamEnd, TextDelta
from rhetor.budget._keeper import Reserve
from rhetor.providers._simulated import SimulatedBackend
from rhetor.routing._router import Router
from rhetor.storage._actor import StoreActor
from rhetor.storage._contexts import DeleteContext, ListContexts
from tests.helpers import running_server, settings_for

HUGE = 10**24  # 24 digits: past SQLite's 64-bit INTEGER
LONE = "a\ud800b"  # a lone surrogate: valid in Python and JSON, not in UTF-8

TASKS = {
    "tasks": {"default": {"primary": "alpha-1", "fallbacks": ["beta-1"], "temperature": 0.5}},
    "models": {
        "alpha-1": {"provider": "alpha", "tier": "high", "capabilities": ["general"]},
        "beta-1": {"provider": "beta", "tier": "low", "capabilities": ["general"]},
        "simulated-echo": {"provider": "simulated", "tier": "local"},
        "simulated-summary": {"provider": "simulated", "tier": "local"},
    },
}


@attrs.define(eq=False)
class GatedBackend:
    """A test upstream: every call waits for ``gate``; the prompt "bug" meets a bug in it."""

    name: str
    models: tuple[str, ...]
    gate: trio.Event = attrs.Factory(trio.Event)
    waiting: int = 0

    async def check(self) -> ProviderStatus:
        return ProviderStatus(self.name, True, self.models)

    async def _wait(self, request: ProviderRequest) -> None:
        if request.messages[-1].content == "bug":
            raise RuntimeError("a bug in the backend, met with this request only")
        self.waiting += 1
        try:
            await self.gate.wait()
        finally:
            self.waiting -= 1

    async def complete(self, request: ProviderRequest) -> ProviderReply:
        await self._wait(request)
        return await SimulatedBackend(name=self.name, models=self.models).complete(request)

    async def stream(self, request: ProviderRequest) -> AsyncIterator[TextDelta | StreamEnd]:
        await self._wait(request)
        inner = SimulatedBackend(name=self.name, models=self.models).stream(request)
        async with aclosing(inner) as items:  # type: ignore[type-var]
            async for item in items:
                yield item

    async def aclose(self) -> None:
        return None


def two_providers(
    tmp_path: Path, alpha: GatedBackend, **overrides: Any
) -> tuple[Settings, dict[str, Callable[[], Any]]]:
    """Settings routing to alpha, then beta; beta answers at once."""
    config = tmp_path / "tasks.json"
    config.write_text(json.dumps(TASKS))
    settings = Settings(
        data_dir=tmp_path / "data", task_config=config, hermes_url=None, **overrides
    )
    return settings, {
        "alpha": lambda: alpha,
        "beta": lambda: SimulatedBackend(name="beta", models=("beta-1",)),
        "simulated": lambda: SimulatedBackend(),
    }


def simulated_only() -> dict[str, Callable[[], Any]]:
    return {"simulated": lambda: SimulatedBackend()}


def plain(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(data_dir=tmp_path / "data", hermes_url=None, **overrides)


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Wait (polling) until ``condition()`` holds; fail after ``seconds``."""
    with trio.fail_after(seconds):
        while not condition():
            await trio.sleep(0.005)


async def drain(stream: AsyncGenerator[Any, None]) -> None:
    """Read a stream to its end, closing it whatever happens."""
    async with aclosing(stream) as items:
        async for _ in items:
            pass


def storage_refs(rt: rhetor.runtime.Runtime) -> dict[str, actors.Ref]:
    return {"budget": rt.budget_keeper, "contexts": rt.contexts, "prompts": rt.prompts}


def restarts(rt: rhetor.runtime.Runtime) -> dict[str, int]:
    return {name: ref.stats().restarts for name, ref in storage_refs(rt).items()}


# -- storage: what SQLite cannot take is the request's own ValidationError -------------

BAD_STORAGE_CALLS: list[tuple[str, Callable[[rhetor.runtime.Runtime], Any], str]] = [
    ("list limit", lambda rt: rt.list_contexts(limit=HUGE), "limit"),
    ("list offset", lambda rt: rt.list_contexts(offset=HUGE), "offset"),
    ("history limit", lambda rt: rt.get_context("known", limit=HUGE), "limit"),
    ("search limit", lambda rt: rt.search_contexts("hello", limit=HUGE), "limit"),
    ("search query", lambda rt: rt.search_contexts(LONE), "query"),
    ("template name", lambda rt: rt.create_template(LONE, "Hi {name}"), "name"),
    ("template lookup", lambda rt: rt.get_template(LONE), "template"),
    ("template version", lambda rt: rt.get_template("greet", version=HUGE), "version"),
    ("template content", lambda rt: rt.create_template("t2", LONE), "content"),
    ("prompt component", lambda rt: rt.create_prompt("p", LONE, "You help."), "component"),
    ("prompt list", lambda rt: rt.list_prompts(component=LONE), "component"),
    ("prompt id", lambda rt: rt.get_prompt(LONE), "prompt_id"),
    ("request component", lambda rt: rt.message("hi", component=LONE), "component"),
]


async def seed(rt: rhetor.runtime.Runtime) -> None:
    """What the bad calls refer to: a context "known" and a template "greet"."""
    await rt.message("hello", context_id="known")
    await rt.create_template("greet", "Hi {name}")


async def refusals(rt: rhetor.runtime.Runtime) -> list[str]:
    """Make every bad call; describe each one not refused as a ValidationError naming its field."""
    wrong = []
    for name, call, field in BAD_STORAGE_CALLS:
        try:
            await call(rt)
            wrong.append(f"{name}: accepted")
        except ValidationError as exc:
            if exc.field != field:
                wrong.append(f"{name}: field {exc.field!r}, not {field!r}")
        except RhetorError as exc:
            wrong.append(f"{name}: {exc.code}: {exc.message}")
    return wrong


async def test_values_sqlite_cannot_take_are_validation_errors_and_storage_never_restarts(
    tmp_path: Path,
) -> None:
    """A 24-digit limit/offset/version or a lone surrogate is a ValidationError naming the field; no store fails or restarts."""
    async with rhetor.runtime.start(plain(tmp_path), backends=simulated_only()) as rt:
        await seed(rt)
        assert await refusals(rt) == []
        assert restarts(rt) == {"budget": 0, "contexts": 0, "prompts": 0}
        assert [ref.stats().failed for ref in storage_refs(rt).values()] == [0, 0, 0]
        # Still serving, with its data.
        assert (await rt.get_template("greet")).content == "Hi {name}"
        assert len((await rt.get_context("known"))["messages"]) == 2


async def test_ten_bad_storage_requests_leave_the_budget_keepers_reservations_intact(
    tmp_path: Path,
) -> None:
    """Ten bad requests in a row: no storage actor restarts, the keeper's open reservation stays held."""
    settings = plain(tmp_path, budget_policy="enforce", daily_limit=1.0)
    async with (
        rhetor.runtime.start(settings, backends=simulated_only()) as rt,
        rt.system.events() as events,
    ):
        await seed(rt)
        held = await rt.budget_keeper.ask(Reserve("open-request", "simulated", "m", 0.5))
        assert held.amount == 0.5
        assert len(BAD_STORAGE_CALLS) >= 10
        wrong = await refusals(rt)
        status = await rt.budget()
        assert status["periods"]["daily"]["reserved"] == 0.5
        assert restarts(rt) == {"budget": 0, "contexts": 0, "prompts": 0}
        assert wrong == []
        # Nothing crashed anywhere: the only events are the actors starting.
        seen: list[actors.LifecycleEvent] = []
        with trio.move_on_after(0.05):
            async for event in events:
                seen.append(event)
        assert {event.kind for event in seen} <= {"started"}
        # The headroom the reservation holds is still refused to others.
        with pytest.raises(BudgetExceeded):
            await rt.budget_keeper.ask(Reserve("another", "simulated", "m", 0.6))


async def test_an_unexpected_storage_error_fails_that_request_as_internal_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A store exception that is no refusal (a disk error) fails only its request, logged; the store keeps serving."""
    caplog.set_level(logging.ERROR, logger="actors")
    async with rhetor.runtime.start(plain(tmp_path), backends=simulated_only()) as rt:
        await rt.message("hello", context_id="c1")
        rt.system.faults.crash_next("contexts", sqlite3.OperationalError("disk I/O error"))
        with pytest.raises(InternalError) as info:
            await rt.list_contexts()
        assert info.value.message == "internal error in contexts (OperationalError)"
        assert info.value.code == "internal_error" and info.value.status == 500
        assert [c.id for c in await rt.list_contexts()] == ["c1"]
        stats = rt.contexts.stats()
        assert (stats.restarts, stats.failed) == (0, 1)
    assert "disk I/O error" in caplog.text and "Traceback" in caplog.text


async def test_a_store_left_broken_by_a_failed_call_is_restarted(tmp_path: Path) -> None:
    """Only a broken connection (a transaction left open) crashes a store actor, which reopens it."""
    opened: list[BreakableStore] = []

    class BreakableStore:
        def __init__(self) -> None:
            self.conn = sqlite3.connect(":memory:", isolation_level=None)
            opened.append(self)

        def strand(self) -> None:
            # A failure after BEGIN that nothing rolled back.
            self.conn.execute("BEGIN")
            raise sqlite3.OperationalError("disk I/O error")

        def fail(self) -> None:
            raise sqlite3.OperationalError("database is locked")

        def ping(self) -> str:
            return "pong"

        def broken(self) -> str | None:
            return "a transaction was left open" if self.conn.in_transaction else None

        def close(self) -> None:
            self.conn.close()

    @attrs.frozen
    class Strand:
        """Leave a transaction open, then fail."""

    @attrs.frozen
    class Fail:
        """Fail with the connection left usable."""

    @attrs.frozen
    class Ping:
        """Answer "pong"."""

    @attrs.define(eq=False)
    class Breakable(StoreActor[BreakableStore]):
        async def handle(self, message: Any) -> Any:
            match message:
                case Strand():
                    return await self.run(lambda s: s.strand(), "Strand")
                case Fail():
                    return await self.run(lambda s: s.fail(), "Fail")
                case Ping():
                    return await self.run(lambda s: s.ping(), "Ping")
            return await super().handle(message)

    async with actors.open_system() as system:
        ref = await system.spawn(lambda: Breakable(BreakableStore), name="store")
        with pytest.raises(actors.HandlerFailed):
            await ref.ask(Fail())
        assert (ref.stats().restarts, len(opened)) == (0, 1)
        with pytest.raises(actors.PoisonMessage) as info:
            await ref.ask(Strand())
        assert isinstance(info.value.__cause__, actors.InvariantBroken)
        assert await ref.ask(Ping()) == "pong"
        assert (ref.stats().restarts, len(opened)) == (2, 3)


# -- router: a bug met with one request fails that request alone -----------------------


async def test_a_bug_in_one_router_request_fails_it_alone_while_20_in_flight_succeed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An unexpected exception in one Router request is internal_error for it; 20 requests in flight all succeed."""
    caplog.set_level(logging.ERROR, logger="actors")
    alpha = GatedBackend("alpha", ("alpha-1",))
    settings, backends = two_providers(tmp_path, alpha)
    replies: list[str] = []
    async with rhetor.runtime.start(settings, backends=backends) as rt:

        async def one(i: int) -> None:
            replies.append((await rt.message(f"request {i}")).provider)

        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(one, i)
            await until(lambda: alpha.waiting == 20)
            rt.system.faults.crash_next("router", KeyError("a bug in the router"))
            with pytest.raises(InternalError) as info:
                await rt.message("the unlucky one")
            alpha.gate.set()
        assert info.value.message == "internal error in router (KeyError)"
        assert replies == ["alpha"] * 20
        stats = rt.router.stats()
        assert (stats.restarts, stats.failed) == (0, 1)
    assert "a bug in the router" in caplog.text and "Traceback" in caplog.text


async def test_a_bug_in_one_streamed_router_request_fails_that_stream_alone(
    tmp_path: Path,
) -> None:
    """A streamed request that meets a router bug ends with internal_error; 20 streams in flight complete."""
    alpha = GatedBackend("alpha", ("alpha-1",))
    settings, backends = two_providers(tmp_path, alpha)
    finished: list[str] = []
    async with rhetor.runtime.start(settings, backends=backends) as rt:

        async def one(i: int) -> None:
            async with aclosing(rt.stream(f"request {i}")) as chunks:
                async for chunk in chunks:
                    if chunk.done:
                        assert chunk.reply is not None
                        finished.append(chunk.reply.provider)

        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(one, i)
            await until(lambda: alpha.waiting == 20)
            rt.system.faults.crash_next("router", ZeroDivisionError("a bug in the router"))
            with pytest.raises(InternalError) as info:
                await drain(rt.stream("the unlucky one"))
            assert info.value.message == "internal error in router (ZeroDivisionError)"
            alpha.gate.set()
        assert finished == ["alpha"] * 20
        assert (rt.router.stats().restarts, rt.router.stats().failed) == (0, 1)


async def test_summarize_of_a_context_deleted_midway_is_not_found(tmp_path: Path) -> None:
    """A context deleted between the router's two reads is NotFound for that summary; the router stays up."""
    outcome: list[BaseException] = []
    async with rhetor.runtime.start(plain(tmp_path), backends=simulated_only()) as rt:
        await rt.message("hello", context_id="doomed")

        async def summarize() -> None:
            try:
                await rt.summarize_context("doomed")
            except RhetorError as exc:
                outcome.append(exc)

        async with trio.open_nursery() as nursery:
            # Hold the store on a hung message, so the router's first read waits in
            # the mailbox; queue the delete behind it, then let the store go on: the
            # delete runs after the first read and before the second.
            rt.system.faults.hang("contexts")
            holder = trio.CancelScope()

            async def hold() -> None:
                with holder:
                    await rt.contexts.ask(ListContexts(), timeout=math.inf)

            nursery.start_soon(hold)
            await trio.testing.wait_all_tasks_blocked()
            assert rt.contexts.stats().mailbox_depth == 0  # the store took it and hangs
            nursery.start_soon(summarize)
            await until(lambda: rt.contexts.stats().mailbox_depth == 1)
            await rt.contexts.tell(DeleteContext("doomed"))
            rt.system.faults.clear("contexts")
            holder.cancel()
        [error] = outcome
        assert isinstance(error, NotFound) and error.field == "context_id"
        stats = rt.router.stats()
        assert (stats.restarts, stats.failed) == (0, 0)
        assert await rt.list_contexts() == []


async def test_a_bug_in_a_background_summary_is_logged_and_the_router_stays_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An automatic summary that meets a bug logs it with its traceback; the router keeps serving and retries later."""
    caplog.set_level(logging.ERROR, logger="rhetor.router")
    attempts: list[str] = []

    async def buggy_summarize(self: Router, context_id: str, keep_recent: int = 0) -> None:
        attempts.append(context_id)
        raise LookupError("a bug in the summary")

    # The one way to plant a bug in a background task that no message reaches.
    monkeypatch.setattr(Router, "_summarize", buggy_summarize)
    settings = plain(tmp_path, context_token_budget=80)
    async with rhetor.runtime.start(settings, backends=simulated_only()) as rt:
        for i in range(6):
            await rt.message(f"Turn {i} talks about topic {i} at some length.", context_id="long")
        await until(lambda: "summarising context long failed" in caplog.text)
        assert "a bug in the summary" in caplog.text and "Traceback" in caplog.text
        tried = len(attempts)
        await rt.message("one more turn", context_id="long")
        await until(lambda: len(attempts) > tried)
        assert rt.router.stats().restarts == 0


# -- providers: a bug met with one call fails that call alone ----------------------------


async def test_a_bug_in_a_provider_call_fails_that_call_alone_and_the_router_falls_back(
    tmp_path: Path,
) -> None:
    """A provider actor that meets a bug with one call keeps its 20 other calls; that one falls back."""
    alpha = GatedBackend("alpha", ("alpha-1",))
    settings, backends = two_providers(tmp_path, alpha)
    replies: list[str] = []
    async with rhetor.runtime.start(settings, backends=backends) as rt:

        async def one(i: int) -> None:
            replies.append((await rt.message(f"request {i}")).provider)

        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(one, i)
            await until(lambda: alpha.waiting == 20)
            unlucky = await rt.message("bug")
            streamed = [chunk async for chunk in rt.stream("bug")]
            alpha.gate.set()
        assert (unlucky.provider, streamed[-1].provider) == ("beta", "beta")
        assert "alpha/alpha-1 failed (provider_error)" in unlucky.routing
        assert replies == ["alpha"] * 20
        stats = rt.providers_refs["alpha"].stats()
        assert (stats.restarts, stats.failed) == (0, 2)


async def test_a_provider_bug_on_the_last_candidate_lists_it_as_that_candidates_failure(
    tmp_path: Path,
) -> None:
    """With no fallback left, a provider's bug is one attempt of all_providers_failed, not "actor is down"."""
    alpha = GatedBackend("alpha", ("alpha-1",))
    settings, backends = two_providers(tmp_path, alpha)
    async with rhetor.runtime.start(settings, backends=backends) as rt:
        with pytest.raises(AllProvidersFailed) as info:
            await rt.message("bug", provider="alpha", model="alpha-1")
    [(provider, model, error)] = info.value.attempts
    assert (provider, model, error.code) == ("alpha", "alpha-1", "provider_error")
    assert error.message == "alpha met an internal error on this call (RuntimeError)"


# -- over HTTP: internal_error is typed JSON, never a traceback --------------------------


@pytest.mark.slow
async def test_internal_error_reaches_http_as_typed_json_without_a_traceback(
    tmp_path: Path,
) -> None:
    """A contained bug is a 500 whose body is typed JSON naming the actor, with no traceback."""
    async with running_server(settings_for(tmp_path)) as server:
        server.runtime.system.faults.crash_next("contexts", RuntimeError("secret detail"))
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            failed = await client.get("/contexts")
            after = await client.get("/contexts")
    assert failed.status_code == 500
    assert failed.json() == {
        "error": {
            "type": "internal_error",
            "message": "internal error in contexts (RuntimeError)",
            "request_id": failed.headers["X-Request-ID"],
        }
    }
    assert "secret detail" not in failed.text and "Traceback" not in failed.text
    assert after.status_code == 200
