"""
Schemathesis fuzzes every route from the served ``/openapi.json``, on a live server over real sockets.

The server (simulated provider) runs in its own thread (``tests.server_thread``);
schemathesis reads the document it serves and, for every operation, sends
requests generated from the schemas: positive examples (what the schema
allows) and negative ones (what it does not), a fixed number of each,
derandomized so that every run sends the same requests and the time stays
bounded. ``RHETOR_FUZZ_OPENAPI_EXAMPLES=200`` digs deeper, with fresh random
examples each run.

The bar: no answer with a status of 500 or above; every answer's status,
content type and body as the document says (errors in their API family's
shape); every request the schema refuses is refused with a 4xx; the server
still answers ``/health`` afterwards, with no actor crashed or restarted.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.helpers import settings_for
from tests.server_thread import ServerThread

_DEEPER = os.environ.get("RHETOR_FUZZ_OPENAPI_EXAMPLES")
# Examples per operation and mode: about 40 operations, two modes.
EXAMPLES = int(_DEEPER) if _DEEPER else 12
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=_DEEPER is None,
    database=None,
    deadline=None,
    # Each example is reported, not shrunk: one run lists every failure it met.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
CHECKS: list[Any] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
# The LLM routes whose bodies must be both accepted and refused by the fuzz.
LLM_ROUTES = ("POST /message", "POST /chat", "POST /v1/chat/completions", "POST /v1/messages")


def _label(case: Any) -> str:
    return f"{case.operation.method.upper()} {case.operation.path}"


def _fuzz(
    operation: Any, mode: GenerationMode, base_url: str, session: requests.Session
) -> tuple[Counter[int], list[str]]:
    """
    Run ``operation``'s examples in ``mode``; the statuses seen and the failures met.

    Positive runs start with the schema's own examples (a body made of each
    field's ``examples``), so that every route is also called as documented.
    """
    statuses: Counter[int] = Counter()
    failures: list[str] = []

    def call(case: Any) -> None:
        response = case.call(base_url=base_url, session=session, timeout=30)
        statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except (Exception, BaseExceptionGroup) as exc:  # a check's failure, or a group: recorded
            failures.append(
                f"{_label(case)} ({mode.value}) -> {response.status_code}: {exc}\n"
                f"  {case.as_curl_command()}\n  {response.text[:300]}"
            )

    strategies = [operation.as_strategy(generation_mode=mode)]
    if mode is GenerationMode.POSITIVE:
        strategies += operation.schema.get_strategies_from_examples(operation)
    for strategy in reversed(strategies):  # the examples first
        try:
            FUZZ(given(strategy)(call))()
        except Unsatisfiable:
            # Nothing in the operation can be made invalid (no body, no typed parameter).
            assert mode is GenerationMode.NEGATIVE, operation.label
    return statuses, failures


@pytest.mark.slow
def test_every_route_answers_fuzzed_requests_as_its_schema_says(tmp_path: Path) -> None:
    """No 5xx, every answer as documented, bad data refused; the server stays healthy after."""
    thread = ServerThread(settings_for(tmp_path))
    with thread as server, requests.Session() as session:
        schema = schemathesis.openapi.from_url(f"{server.base_url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        seen: dict[tuple[str, GenerationMode], Counter[int]] = {}
        failures: list[str] = []
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                statuses, failed = _fuzz(operation, mode, server.base_url, session)
                seen[(f"{operation.method.upper()} {operation.path}", mode)] = statuses
                failures.extend(failed)
        health = session.get(f"{server.base_url}/health", timeout=10)
        stats = thread.call(_actor_stats, server.runtime)
    assert failures == [], "\n\n".join(failures[:20])
    assert health.status_code == 200 and health.json()["status"] == "healthy"
    assert all(alive and restarts == 0 for alive, restarts in stats.values()), stats
    assert len(operations) >= 30
    for route in LLM_ROUTES:
        accepted = seen[(route, GenerationMode.POSITIVE)]
        refused = seen[(route, GenerationMode.NEGATIVE)]
        assert sum(n for status, n in accepted.items() if status < 300) > 0, (route, accepted)
        assert sum(n for status, n in refused.items() if status in (400, 422)) > 0, (route, refused)


async def _actor_stats(runtime: Any) -> dict[str, tuple[bool, int]]:
    refs = [runtime.router, runtime.budget_keeper, runtime.contexts, runtime.prompts]
    refs += list(runtime.providers_refs.values())
    return {ref.name: (ref.stats().alive, ref.stats().restarts) for ref in refs}
