"""
Property tests: arbitrary JSON thrown at every endpoint's body and at the WebSocket frame parser.

One real server (simulated provider) takes every example over real sockets.
Hypothesis runs in a worker thread and hands each example to the test's trio
run (``trio.from_thread.run``), where the server and the clients live. The
examples mix plausible requests with hostile values: deep nesting, 400-digit
and non-finite numbers, lone surrogates, wrong types, garbage bytes.

The property: every answer is a 2xx, or a typed 4xx in the error shape of its
API family (Rhetor's, OpenAI's or Anthropic's), or the 504 ``upstream_timeout``
that a request with a tiny ``timeout`` of its own asked for; a WebSocket frame is answered
with typed frames; never a 500 or ``internal_error``, never a crashed or
restarted actor. The example budget is small and fixed (derandomized), so
the test is quick and deterministic; ``RHETOR_FUZZ_EXAMPLES=3000`` digs
deeper with fresh random examples (3,000 of each passed before this landed).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trio_websocket import WebSocketConnection, open_websocket_url

import actors
import rhetor.runtime
from tests.helpers import running_server, settings_for

# RHETOR_FUZZ_EXAMPLES=3000 searches further, with fresh random examples each run.
_FUZZ = os.environ.get("RHETOR_FUZZ_EXAMPLES")
EXAMPLES = int(_FUZZ) if _FUZZ else 100
# Hypothesis runs in a worker thread; these settings keep it quick and repeatable.
PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=_FUZZ is None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Every field name some endpoint reads, so that examples reach past "unknown field".
FIELDS = [
    "message", "messages", "context_id", "context", "task_type", "component", "provider",
    "model", "temperature", "max_tokens", "system_prompt", "routing_parameters", "timeout",
    "streaming", "stream", "name", "content", "description", "category", "required",
    "optional", "defaults", "metadata", "variables", "tags", "is_default", "task", "format",
    "period", "limit", "policy", "prompt", "response", "criteria", "role", "n", "system",
    "max_completion_tokens", "stream_options", "include_usage", "complexity",
    "required_capabilities", "max_cost", "type", "text", "id", "payload", "source",
]  # fmt: skip
WORDS = [
    "", "hi", "user", "assistant", "system", "developer", "text", "image", "daily", "weekly",
    "enforce", "ignore", "warn", "chat", "code", "simulated", "simulated-echo", "rhetor/chat",
    "low", "high", "vision", "instruction", "few_shot", "t1", "c1", "gpt-4o-mini",
]  # fmt: skip

_short_text = st.text(max_size=8)
_surrogate = st.builds(
    lambda a, code, b: a + chr(code) + b, _short_text, st.integers(0xD800, 0xDFFF), _short_text
)
_strings = st.sampled_from(WORDS) | _short_text | _surrogate
_numbers = (
    st.integers(-10, 100)
    | st.integers(-(10**30), 10**30)
    | st.sampled_from([10**400, -(10**400), 2**63, 2**53, 0.5, 1e308, 5e-324])
    | st.floats(allow_nan=True, allow_infinity=True)
)
_scalars = st.none() | st.booleans() | _numbers | _strings
_keys = st.sampled_from(FIELDS) | _strings
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=10,
)
_objects = st.dictionaries(_keys, _values, max_size=6)


def _deep(depth: int, opener: str) -> str:
    closer = {"[": "]", '{"a": ': "}"}[opener]
    return opener * depth + "0" + closer * depth


def _raw(bodies: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """JSON text of ``bodies`` (NaN and lone surrogates escaped as JSON allows), or worse."""
    encoded = bodies.map(lambda body: json.dumps(body, allow_nan=True).encode())
    deep = st.builds(_deep, st.integers(60, 20_000), st.sampled_from(["[", '{"a": ']))
    return st.one_of(
        encoded,
        encoded,
        encoded,
        _values.map(lambda body: json.dumps(body, allow_nan=True).encode()),
        deep.map(str.encode),
        st.binary(max_size=16),
    )


def _body_for(base: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A plausible body (``base``) with hostile fields over it, or hostile fields alone."""
    return st.one_of(_objects.map(lambda extra: {**base, **extra}), _objects)


# (method, path, API family, a plausible body)
ENDPOINTS: list[tuple[str, str, str, dict[str, Any]]] = [
    ("POST", "/message", "rhetor", {"message": "hi"}),
    ("POST", "/stream", "rhetor", {"message": "hi"}),
    ("POST", "/chat", "rhetor", {"messages": [{"role": "user", "content": "hi"}]}),
    ("POST", "/provider", "rhetor", {"provider": "simulated"}),
    ("POST", "/templates", "rhetor", {"name": "n", "content": "Hi {name}"}),
    ("PUT", "/templates/t1", "rhetor", {"content": "Hello {name}"}),
    ("POST", "/templates/t1/render", "rhetor", {"variables": {"name": "Ada"}}),
    ("POST", "/prompts", "rhetor", {"name": "p", "component": "c", "content": "x"}),
    ("PUT", "/prompts/{prompt}", "rhetor", {"content": "You are C."}),
    ("POST", "/prompts/generate", "rhetor", {"task": "sort", "context": {"a": 1}}),
    ("POST", "/budget/limit", "rhetor", {"period": "daily", "limit": 5}),
    ("POST", "/budget/policy", "rhetor", {"policy": "warn"}),
    ("POST", "/budget/estimate", "rhetor", {"prompt": "hi", "max_tokens": 5}),
    ("POST", "/evaluate", "rhetor", {"prompt": "p", "response": "r"}),
    (
        "POST",
        "/v1/chat/completions",
        "openai",
        {"model": "rhetor/chat", "messages": [{"role": "user", "content": "hi"}]},
    ),
    (
        "POST",
        "/v1/messages",
        "anthropic",
        {
            "model": "rhetor/chat",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}],
        },
    ),
]
_requests = st.sampled_from(range(len(ENDPOINTS))).flatmap(
    lambda i: st.tuples(st.just(ENDPOINTS[i]), _raw(_body_for(ENDPOINTS[i][3])))
)


def assert_typed(family: str, response: httpx.Response) -> None:
    """A 2xx, or a typed 4xx in ``family``'s error shape (see the module docstring)."""
    status = response.status_code
    if status < 300:
        return
    body = response.json()
    if status == 504 and family == "rhetor" and body["error"]["type"] == "upstream_timeout":
        return  # the body's own ``timeout`` was too short to finish in: its typed answer
    assert 400 <= status < 500, (status, response.text)
    request_id = response.headers["X-Request-ID"]
    if family == "rhetor":
        error = body["error"]
        assert isinstance(error["type"], str) and isinstance(error["message"], str)
        assert error["request_id"] == request_id
    elif family == "openai":
        assert set(body["error"]) == {"message", "type", "param", "code", "request_id"}
        assert body["error"]["request_id"] == request_id
    else:
        assert body["type"] == "error"
        assert isinstance(body["error"]["type"], str)
        assert body["request_id"] == request_id


def assert_no_actor_crashed(runtime: rhetor.runtime.Runtime, crashes: list[str]) -> None:
    refs = [runtime.router, runtime.budget_keeper, runtime.contexts, runtime.prompts]
    for ref in [*refs, *runtime.providers_refs.values()]:
        stats = ref.stats()
        assert stats.alive and stats.restarts == 0, stats
    assert crashes == []


async def _watch_crashes(system: actors.System, crashes: list[str]) -> None:
    async with system.events() as events:
        async for event in events:
            if event.kind in ("crashed", "escalated"):
                crashes.append(f"{event.name}: {event.cause!r}")


def _run_property(test: Callable[[], None]) -> Callable[[], Any]:
    """Run a Hypothesis test in a worker thread; its examples come back to this trio run."""
    return lambda: trio.to_thread.run_sync(test)


@pytest.mark.slow
async def test_arbitrary_json_bodies_get_a_typed_answer_and_crash_nothing(tmp_path: Path) -> None:
    """Every endpoint answers any body with a 2xx or a typed 4xx; no actor crashes or restarts."""
    async with (
        running_server(settings_for(tmp_path)) as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=10, verify=False) as client,
        trio.open_nursery() as nursery,
    ):
        crashes: list[str] = []
        nursery.start_soon(_watch_crashes, server.runtime.system, crashes)
        await client.post("/templates", json={"name": "t1", "content": "Hi {name}"})
        prompt = await client.post("/prompts", json={"name": "p", "component": "c", "content": "x"})
        prompt_id = prompt.json()["id"]

        async def exchange(endpoint: tuple[str, str, str, dict[str, Any]], raw: bytes) -> None:
            method, path, family, _ = endpoint
            response = await client.request(
                method,
                path.format(prompt=prompt_id),
                content=raw,
                headers={"Content-Type": "application/json"},
            )
            assert_typed(family, response)

        @PROPERTY
        @given(_requests)
        def body_property(example: tuple[tuple[str, str, str, dict[str, Any]], bytes]) -> None:
            trio.from_thread.run(exchange, *example)

        await _run_property(body_property)()
        assert (await client.get("/health")).json()["status"] == "healthy"
        assert_no_actor_crashed(server.runtime, crashes)
        nursery.cancel_scope.cancel()


_frame_types = (
    st.sampled_from(["LLM_REQUEST", "CHAT_REQUEST", "STATUS", "CANCEL", "REGISTER"]) | _strings
)
_llm_payload = _body_for({"message": "hi", "streaming": False})
_frames = st.one_of(
    st.fixed_dictionaries(
        {"type": _frame_types, "payload": _llm_payload},
        optional={"id": _scalars, "source": _scalars},
    ),
    _objects,
)
_legacy_frames = _body_for({"prompt": "hi", "stream": False})
_socket_examples = st.one_of(
    st.tuples(st.just("ws"), _raw(_frames)), st.tuples(st.just("legacy"), _raw(_legacy_frames))
)


async def _receive(ws: WebSocketConnection) -> dict[str, Any]:
    with trio.fail_after(10):
        frame: dict[str, Any] = json.loads(await ws.get_message())
    return frame


def _assert_typed_frame(frame: dict[str, Any]) -> None:
    assert frame["type"] in ("UPDATE", "RESPONSE", "ERROR"), frame
    if frame["type"] == "ERROR":
        assert isinstance(frame["payload"]["type"], str)
        assert frame["payload"]["type"] != "internal_error", frame


def _assert_typed_legacy(message: dict[str, Any]) -> bool:
    """Check one legacy message; True if it ends a request."""
    assert message["type"] in ("content_chunk", "content_complete", "error"), message
    if message["type"] == "error":
        assert message["error_type"] != "internal_error", message
    return message["type"] != "content_chunk"


@pytest.mark.slow
async def test_arbitrary_frames_get_typed_frames_and_crash_nothing(tmp_path: Path) -> None:
    """/ws and the legacy socket answer any frame with typed frames; the sockets stay open."""
    async with (
        running_server(settings_for(tmp_path)) as server,
        open_websocket_url(server.ws_url) as ws,
        open_websocket_url(server.ws_url + "/rhetor/streaming") as legacy,
        trio.open_nursery() as nursery,
    ):
        crashes: list[str] = []
        nursery.start_soon(_watch_crashes, server.runtime.system, crashes)
        probes = iter(range(1_000_000))

        async def exchange(socket: str, raw: bytes) -> None:
            if socket == "legacy":
                await legacy.send_message(raw.decode("utf-8", "replace"))
                while not _assert_typed_legacy(await _receive(legacy)):
                    pass
                return
            # A text frame must be UTF-8 (the protocol checks it): undecodable
            # bytes go as a binary frame, which the session parses the same way.
            try:
                await ws.send_message(raw.decode("utf-8"))
            except UnicodeDecodeError:
                await ws.send_message(raw)
            probe = f"probe-{next(probes)}"
            await ws.send_message(json.dumps({"type": "REGISTER", "id": probe}))
            while True:
                frame = await _receive(ws)
                _assert_typed_frame(frame)
                if frame["id"] == probe:
                    break

        @PROPERTY
        @given(_socket_examples)
        def frame_property(example: tuple[str, bytes]) -> None:
            trio.from_thread.run(exchange, *example)

        await _run_property(frame_property)()
        # Requests still streaming on /ws finish with typed frames too.
        while True:
            await ws.send_message(json.dumps({"type": "STATUS", "id": "last"}))
            frame = await _receive(ws)
            while frame["id"] != "last":
                _assert_typed_frame(frame)
                frame = await _receive(ws)
            if frame["payload"]["in_flight"] == 0:
                break
        assert_no_actor_crashed(server.runtime, crashes)
        nursery.cancel_scope.cancel()
