"""
Registration with Hermes, Tekton's service registry.

When ``settings.hermes_url`` is set, Rhetor registers itself at start with
the payload the seeds give (``POST {hermes}/api/register``), retrying in the
background with capped, jittered exponential backoff, and deregisters at
shutdown (``POST {hermes}/api/unregister`` with ``{"component_id": "rhetor"}``).
The seeds name the registration payload but not the paths; these are the
paths Tekton's Hermes serves its registration API under.

Hermes keeps its registry in memory, so a Hermes that restarts forgets
Rhetor. The seeds give Hermes no heartbeat for Rhetor to send, so Rhetor
registers again every ``refresh`` seconds (30 by default, jittered): a
registration names Rhetor by id, so repeating it is harmless, and a restarted
Hermes hears of Rhetor again within one interval. A refresh that fails falls
back to the backoff loop until Hermes answers.

An absent Hermes costs one log line: start-up never waits for it or fails
because of it. Losing and regaining Hermes costs one line each.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import trio

__all__ = ["Registration", "hermes_registration", "registration_payload"]

log = logging.getLogger("rhetor.hermes")

COMPONENT_ID = "rhetor"
CAPABILITIES = ("llm_management", "prompt_engineering", "context_management", "model_selection")
REGISTER_PATH = "/api/register"
UNREGISTER_PATH = "/api/unregister"


def registration_payload(public_url: str, version: str) -> dict[str, Any]:
    """The seeds' registration payload for a Rhetor reachable at ``public_url``."""
    base = public_url.rstrip("/")
    ws = "ws" + base[4:] if base.startswith("http") else base
    return {
        "id": COMPONENT_ID,
        "name": "Rhetor",
        "description": "LLM Management System for Tekton",
        "version": version,
        "url": base,
        "capabilities": list(CAPABILITIES),
        "endpoints": {"http": base, "ws": f"{ws}/ws"},
    }


class Registration:
    """
    The state of Rhetor's registration with one Hermes.

    Cancellation: :meth:`keep_registered` runs until cancelled; every request
    it makes is bounded by ``timeout``. :meth:`deregister` shields itself and
    gives up after its deadline.

    Error handling: no network error escapes; a failure is logged once when
    Hermes becomes unreachable (at start, or after it had answered), then
    retried quietly.
    """

    def __init__(
        self,
        hermes_url: str,
        payload: dict[str, Any],
        *,
        first_delay: float = 0.5,
        max_delay: float = 60.0,
        refresh: float = 30.0,
        timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._base = hermes_url.rstrip("/")
        self._payload = payload
        self._first_delay = first_delay
        self._max_delay = max_delay
        self._refresh = refresh
        self._timeout = timeout
        self._transport = transport
        # Invariant: True from Hermes accepting a registration until a
        # deregistration; a later failed refresh does not clear it, as Hermes
        # may still hold the earlier one.
        self.registered = False
        # Invariant: True while an attempt may have reached Hermes without its
        # answer being seen (in flight, timed out or cancelled after sending).
        self._uncertain = False
        # Invariant: True while the last attempt failed (logged once per outage).
        self._failing = False
        self.attempts = 0

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=self._timeout, transport=self._transport)

    async def register_once(self) -> bool:
        """
        One registration attempt; True if Hermes accepted it.

        Cancellation: a cancelled attempt counts as one Hermes may have
        accepted, so :meth:`deregister` still runs.
        """
        self.attempts += 1
        self._uncertain = True
        try:
            with trio.fail_after(self._timeout):
                async with self._client() as client:
                    response = await client.post(self._base + REGISTER_PATH, json=self._payload)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            # Never connected: Hermes cannot have seen this attempt.
            self._uncertain = False
            self._note_failure(f"{type(exc).__name__}: {exc}")
            return False
        except (httpx.HTTPError, trio.TooSlowError) as exc:
            self._note_failure(f"{type(exc).__name__}: {exc}")
            return False
        self._uncertain = False
        if response.is_success:
            if not self.registered or self._failing:
                log.info("registered with Hermes at %s", self._base)
            self.registered = True
            self._failing = False
            return True
        self._note_failure(f"HTTP {response.status_code}")
        return False

    def _note_failure(self, why: str) -> None:
        # One line per outage, not one per retry.
        if not self._failing:
            self._failing = True
            if self.registered:
                log.warning(
                    "Hermes at %s stopped answering (%s); registering again in the background",
                    self._base,
                    why,
                )
            else:
                log.warning(
                    "Hermes at %s is unavailable (%s); retrying in the background", self._base, why
                )
        else:
            log.debug("Hermes registration attempt %d failed: %s", self.attempts, why)

    async def _register_until_accepted(self) -> None:
        """Register, retrying with capped, jittered exponential backoff until it works."""
        delay = self._first_delay
        while not await self.register_once():
            await trio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, self._max_delay)

    async def keep_registered(self) -> None:
        """
        Register, then register again every ``refresh`` seconds, until cancelled.

        A Hermes that restarted (and so forgot Rhetor) is told again at the
        next refresh; a refresh that fails goes back to the backoff loop.
        """
        while True:
            await self._register_until_accepted()
            await trio.sleep(self._refresh * random.uniform(0.9, 1.1))

    async def deregister(self, deadline: float = 2.0) -> None:
        """
        Tell Hermes Rhetor is going away, if it may be registered; shielded, bounded.

        "May be": Hermes accepted a registration, or an attempt was cut off
        (by shutdown or a timeout) after it may have reached Hermes.
        """
        if not self.registered and not self._uncertain:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(deadline) as scope:
            try:
                async with self._client() as client:
                    await client.post(
                        self._base + UNREGISTER_PATH,
                        json={"component_id": COMPONENT_ID, "id": COMPONENT_ID},
                    )
                self.registered = self._uncertain = False
                log.info("deregistered from Hermes")
            except httpx.HTTPError as exc:
                self._note_lost_deregistration(str(exc))
        if scope.cancelled_caught:
            self._note_lost_deregistration(f"no answer in {deadline:g}s")

    def _note_lost_deregistration(self, why: str) -> None:
        # Only a registration Hermes accepted is worth a warning; an attempt
        # that was merely cut off most likely never reached an absent Hermes.
        level = logging.WARNING if self.registered else logging.DEBUG
        log.log(level, "could not deregister from Hermes: %s", why)


@asynccontextmanager
async def hermes_registration(
    hermes_url: str | None, public_url: str, version: str, **options: Any
) -> AsyncIterator[Registration | None]:
    """
    Keep Rhetor registered with Hermes for the duration of the block.

    Yields None (and does nothing) when ``hermes_url`` is None.

    Cancellation: leaving the block (or cancelling it) first stops the
    background registration and waits for it to end, so no registration can
    be in flight behind the deregistration, which then runs shielded.
    """
    if not hermes_url:
        yield None
        return
    registration = Registration(hermes_url, registration_payload(public_url, version), **options)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(registration.keep_registered)
            try:
                yield registration
            finally:
                nursery.cancel_scope.cancel()
    finally:
        await registration.deregister()
