"""
Registration with Hermes, Tekton's service registry.

When ``settings.hermes_url`` is set, Rhetor registers itself at start with
the payload the seeds give (``POST {hermes}/api/register``), retrying in the
background with capped, jittered exponential backoff, and deregisters at
shutdown (``POST {hermes}/api/unregister`` with ``{"component_id": "rhetor"}``).
The seeds name the registration payload but not the paths; these are the
paths Tekton's Hermes serves its registration API under.

An absent Hermes costs one log line: start-up never waits for it or fails
because of it.
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

    Cancellation: :meth:`keep_registered` runs until cancelled;
    :meth:`deregister` shields itself and gives up after its deadline.

    Error handling: no network error escapes; each failure is logged once at
    most, then retried.
    """

    def __init__(
        self,
        hermes_url: str,
        payload: dict[str, Any],
        *,
        first_delay: float = 0.5,
        max_delay: float = 60.0,
        timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._base = hermes_url.rstrip("/")
        self._payload = payload
        self._first_delay = first_delay
        self._max_delay = max_delay
        self._timeout = timeout
        self._transport = transport
        self.registered = False
        self.attempts = 0

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=self._timeout, transport=self._transport)

    async def register_once(self) -> bool:
        """One registration attempt; True if Hermes accepted it."""
        self.attempts += 1
        try:
            async with self._client() as client:
                response = await client.post(self._base + REGISTER_PATH, json=self._payload)
        except httpx.HTTPError as exc:
            self._note_failure(f"{type(exc).__name__}: {exc}")
            return False
        if response.is_success:
            self.registered = True
            log.info("registered with Hermes at %s", self._base)
            return True
        self._note_failure(f"HTTP {response.status_code}")
        return False

    def _note_failure(self, why: str) -> None:
        # One line for an absent Hermes, not one per retry.
        if self.attempts == 1:
            log.warning(
                "Hermes at %s is unavailable (%s); retrying in the background", self._base, why
            )
        else:
            log.debug("Hermes registration attempt %d failed: %s", self.attempts, why)

    async def keep_registered(self) -> None:
        """Register, retrying with capped, jittered exponential backoff until it works."""
        delay = self._first_delay
        while not await self.register_once():
            await trio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, self._max_delay)

    async def deregister(self, deadline: float = 2.0) -> None:
        """Tell Hermes Rhetor is going away, if it was registered; shielded, bounded."""
        if not self.registered:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(deadline):
            try:
                async with self._client() as client:
                    await client.post(
                        self._base + UNREGISTER_PATH,
                        json={"component_id": COMPONENT_ID, "id": COMPONENT_ID},
                    )
                self.registered = False
                log.info("deregistered from Hermes")
            except httpx.HTTPError as exc:
                log.warning("could not deregister from Hermes: %s", exc)


@asynccontextmanager
async def hermes_registration(
    hermes_url: str | None, public_url: str, version: str, **options: Any
) -> AsyncIterator[Registration | None]:
    """
    Keep Rhetor registered with Hermes for the duration of the block.

    Yields None (and does nothing) when ``hermes_url`` is None.
    """
    if not hermes_url:
        yield None
        return
    registration = Registration(hermes_url, registration_payload(public_url, version), **options)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(registration.keep_registered)
        try:
            yield registration
        finally:
            nursery.cancel_scope.cancel()
            await registration.deregister()
