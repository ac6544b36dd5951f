"""Registration with Hermes (rhetor/edge/_hermes.py): restarts, outages, shutdown races, bounded waits."""

from __future__ import annotations

import json
import logging
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio.testing

from rhetor.edge._hermes import hermes_registration

HERMES = "http://hermes.test:8100"


@attrs.define(eq=False)
class FakeHermes(httpx.AsyncBaseTransport):
    """
    Tekton's Hermes registry, in memory, behind httpx's transport interface.

    It serves ``/api/register`` and ``/api/unregister`` as Hermes does, keeping
    its registry in memory (so :meth:`restart` forgets it). ``up = False``
    refuses connections. A request to a path in ``held`` is acted on at once,
    but its answer waits for ``release`` (an answer still on the way).
    """

    registry: dict[str, Any] = attrs.field(factory=dict)
    requests: list[tuple[str, Any]] = attrs.field(factory=list)
    up: bool = True
    held: frozenset[str] = frozenset()
    release: trio.Event = attrs.field(factory=trio.Event)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not self.up:
            raise httpx.ConnectError("connection refused", request=request)
        body = json.loads(await request.aread())
        path = request.url.path
        self.requests.append((path, body))
        if path == "/api/register":
            self.registry[body["id"]] = body
        elif path == "/api/unregister":
            self.registry.pop(body["component_id"], None)
        else:
            return httpx.Response(404, json={"detail": "Not Found"})
        if path in self.held:
            await self.release.wait()
        return httpx.Response(200, json={"success": True})

    def restart(self) -> None:
        """Hermes restarts: its registry is empty again."""
        self.registry.clear()

    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]


def registration(hermes: FakeHermes, **options: Any) -> Any:
    return hermes_registration(
        HERMES, "http://127.0.0.1:8300", "0.1.0", transport=hermes, **options
    )


async def test_a_restarted_hermes_hears_of_rhetor_again_within_one_refresh(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Rhetor registers again every refresh interval, so a Hermes that forgot it learns again."""
    hermes = FakeHermes()
    async with registration(hermes, refresh=30.0):
        await trio.sleep(1)
        assert "rhetor" in hermes.registry
        hermes.restart()
        await trio.sleep(34)  # one refresh, jitter included
        assert hermes.registry["rhetor"]["endpoints"]["ws"] == "ws://127.0.0.1:8300/ws"
    assert hermes.paths() == ["/api/register", "/api/register", "/api/unregister"]
    assert "rhetor" not in hermes.registry


async def test_losing_and_regaining_hermes_costs_one_line_each(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A Hermes that goes away is retried quietly with backoff, and registered with again when back."""
    hermes = FakeHermes()
    with caplog.at_level(logging.INFO, logger="rhetor.hermes"):
        async with registration(hermes, refresh=30.0, max_delay=10.0) as state:
            await trio.sleep(1)
            hermes.up = False
            hermes.restart()
            await trio.sleep(300)
            assert "rhetor" not in hermes.registry
            attempts = state.attempts
            hermes.up = True
            await trio.sleep(15)  # the capped backoff, jitter included
            assert "rhetor" in hermes.registry
    assert attempts > 10
    lines = [r.getMessage() for r in caplog.records if r.name == "rhetor.hermes"]
    assert len(lines) == 4, lines
    assert lines[0].startswith("registered with Hermes")
    assert "stopped answering" in lines[1]
    assert lines[2].startswith("registered with Hermes")
    assert lines[3] == "deregistered from Hermes"


async def test_shutdown_during_an_unanswered_registration_still_deregisters(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A registration Hermes accepted but had not answered when shutdown cancelled it is undone."""
    hermes = FakeHermes(held=frozenset({"/api/register"}))
    with trio.fail_after(1):
        async with registration(hermes):
            while not hermes.requests:
                await trio.sleep(0.01)
            assert "rhetor" in hermes.registry  # accepted; the answer is still on the way
    assert hermes.paths() == ["/api/register", "/api/unregister"]
    assert "rhetor" not in hermes.registry


async def test_every_wait_on_a_hanging_hermes_is_bounded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A Hermes that never answers costs each registration attempt its timeout, and shutdown 2 s."""
    hermes = FakeHermes(held=frozenset({"/api/register", "/api/unregister"}))
    async with registration(hermes, timeout=5.0) as state:
        await trio.sleep(20)
        assert state.attempts >= 2 and not state.registered
        leaving = trio.current_time()
    assert trio.current_time() - leaving <= 2.0 + 1e-6
    assert hermes.paths()[-1] == "/api/unregister"


async def test_an_absent_hermes_is_never_sent_a_deregistration(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Attempts that never connected leave nothing to undo at shutdown."""
    hermes = FakeHermes(up=False)
    async with registration(hermes) as state:
        await trio.sleep(30)
        assert state.attempts >= 3
        hermes.up = True
        hermes.restart()
        hermes.requests.clear()
        # Leave before the next attempt: nothing reached Hermes, nothing to undo.
    assert hermes.requests == []
