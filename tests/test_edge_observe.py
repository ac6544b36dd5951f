"""
Seeing inside a running Rhetor, over real sockets: request ids, the log, /metrics, traces, /ready.

Every test runs the real server (``tests.helpers.running_server``) and reads
what an operator would: the log lines as the configured formatter writes
them, the ``/metrics`` page, the exported spans, the response headers.
"""

from __future__ import annotations

import http.server
import io
import json
import logging
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import trio
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import open_websocket_url

import actors
import rhetor.runtime
from rhetor import observe
from rhetor.edge._server import serve
from rhetor.routing._plan import TaskConfig
from tests.fakes import Fail
from tests.fakes.openai import FakeOpenAI, fake_openai
from tests.helpers import ServerInfo, running_server, settings_for, simulated_backends

REPO = Path(__file__).resolve().parent.parent
GPT_MINI = "gpt-4o-mini"
SERVER_KEY = "rk-observe-server-key-0123456789"
UPSTREAM_KEY = "sk-observe-upstream-key-0123456789"
TASKS = {
    "tasks": {
        "default": {"primary": GPT_MINI, "fallbacks": []},
        "chat": {"primary": GPT_MINI, "fallbacks": []},
    },
    "models": {GPT_MINI: {"provider": "openai", "tier": "low"}},
}


# -- what an operator reads ----------------------------------------------------------------


@contextmanager
def log_lines(fmt: observe.LogFormat = "text") -> Iterator[io.StringIO]:
    """Every log record, at debug, as ``rhetor serve`` would write it in ``fmt``."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(observe.JSONFormatter() if fmt == "json" else observe.TextFormatter())
    handler.addFilter(observe.RequestIdFilter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def access(stream: io.StringIO) -> list[dict[str, Any]]:
    """The access-log lines of a JSON log."""
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    return [line for line in lines if line["logger"] == "rhetor.access"]


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels`` (0 if none)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


async def metrics_page(client: httpx.AsyncClient, **headers: str) -> str:
    response = await client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


@asynccontextmanager
async def served(
    tmp_path: Path, **overrides: Any
) -> AsyncIterator[tuple[ServerInfo, httpx.AsyncClient]]:
    async with (
        running_server(settings_for(tmp_path, **overrides)) as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=10) as client,
    ):
        yield server, client


@asynccontextmanager
async def behind_openai(
    tmp_path: Path, health_interval: float | None = None, **overrides: Any
) -> AsyncIterator[tuple[FakeOpenAI, ServerInfo, httpx.AsyncClient]]:
    """Rhetor with one real provider, OpenAI, reached over HTTP on a fake upstream; a server key."""
    config = tmp_path / "tasks.json"
    config.write_text(json.dumps(TASKS))
    async with fake_openai() as upstream:
        settings = settings_for(
            tmp_path,
            api_key=SERVER_KEY,
            openai_api_key=UPSTREAM_KEY,
            openai_base_url=upstream.base_url,
            simulated="never",
            task_config=config,
            **overrides,
        )
        factory = rhetor.runtime.default_backends(settings, TaskConfig.load(config))["openai"]
        runtime_kwargs = {} if health_interval is None else {"health_interval": health_interval}
        async with (
            running_server(settings, backends={"openai": factory}, **runtime_kwargs) as server,
            httpx.AsyncClient(
                base_url=server.base_url, timeout=10, headers={"X-API-Key": SERVER_KEY}
            ) as client,
        ):
            yield upstream, server, client


# -- request ids --------------------------------------------------------------------------


async def test_the_clients_request_id_comes_back_in_the_header_the_reply_and_the_log(
    tmp_path: Path,
) -> None:
    """X-Request-ID sent: the same id in the response header, the reply's request_id, the access line."""
    with log_lines("json") as log:
        async with served(tmp_path) as (_, client):
            response = await client.post(
                "/message", json={"message": "hi"}, headers={"X-Request-ID": "client-42.a"}
            )
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == "client-42.a"
    assert response.json()["request_id"] == "client-42.a"
    [line] = [a for a in access(log) if a.get("path") == "/message"]
    assert line["request_id"] == "client-42.a" and line["status"] == 200
    router_lines = [
        json.loads(x) for x in log.getvalue().splitlines() if '"logger": "rhetor.router"' in x
    ]
    assert all(x.get("request_id") == "client-42.a" for x in router_lines)


@pytest.mark.parametrize("sent", ["x" * 200, "has spaces", "new\\nline"])
async def test_an_unsafe_request_id_is_replaced_by_a_generated_one(
    tmp_path: Path, sent: str
) -> None:
    """Too long or unsafe: ignored; the reply carries a fresh id, the same in header and body."""
    async with served(tmp_path) as (_, client):
        response = await client.post(
            "/message", json={"message": "hi"}, headers={"X-Request-ID": sent}
        )
    rid = response.headers["X-Request-ID"]
    assert rid != sent and observe.valid_request_id(rid) == rid
    assert response.json()["request_id"] == rid


async def test_every_api_familys_error_body_carries_the_request_id(tmp_path: Path) -> None:
    """Native, OpenAI-shaped and Anthropic-shaped errors each name the request id of the header."""
    async with served(tmp_path) as (_, client):
        native = await client.post("/message", json={"message": 5}, headers={"X-Request-ID": "n1"})
        missing = await client.get("/no/such/route", headers={"X-Request-ID": "n2"})
        openai = await client.post(
            "/v1/chat/completions", json={"model": 7}, headers={"X-Request-ID": "o1"}
        )
        anthropic = await client.post(
            "/v1/messages",
            json={"model": "rhetor/chat"},
            headers={"X-Request-ID": "a1", "anthropic-version": "2023-06-01"},
        )
    assert native.status_code == 422 and native.json()["error"]["request_id"] == "n1"
    assert missing.status_code == 404 and missing.json()["error"]["request_id"] == "n2"
    assert openai.status_code == 400
    assert set(openai.json()["error"]) == {"message", "type", "param", "code", "request_id"}
    assert openai.json()["error"]["request_id"] == "o1"
    assert anthropic.status_code == 400 and anthropic.json()["type"] == "error"
    assert anthropic.json()["request_id"] == "a1"
    for response, rid in ((native, "n1"), (missing, "n2"), (openai, "o1"), (anthropic, "a1")):
        assert response.headers["X-Request-ID"] == rid


async def test_schema_errors_and_the_documentation_routes_have_ids_lines_and_metrics(
    tmp_path: Path,
) -> None:
    """/budget/entries' query, /openapi.json and /docs: request_id in errors, access lines, counts."""
    with log_lines("json") as log:
        async with served(tmp_path) as (_, client):
            entries = await client.get(
                "/budget/entries", params={"limit": "many"}, headers={"X-Request-ID": "e1"}
            )
            listed = await client.get("/budget/entries", headers={"X-Request-ID": "e2"})
            document = await client.get("/openapi.json", headers={"X-Request-ID": "d1"})
            posted = await client.post("/openapi.json", headers={"X-Request-ID": "d2"})
            asset = await client.get("/docs/no-such-asset.js", headers={"X-Request-ID": "d3"})
            page = await metrics_page(client)
    assert entries.status_code == 422 and entries.json()["error"]["request_id"] == "e1"
    assert entries.json()["error"]["field"] == "limit"
    assert listed.status_code == 200 and document.status_code == 200
    assert posted.status_code == 405 and posted.json()["error"]["request_id"] == "d2"
    assert asset.status_code == 404 and asset.json()["error"]["request_id"] == "d3"
    for response, rid in ((listed, "e2"), (document, "d1"), (asset, "d3")):
        assert response.headers["X-Request-ID"] == rid and "Server-Timing" in response.headers
    lines = {a["request_id"]: a for a in access(log)}
    assert lines["e1"]["route"] == "/budget/entries" and lines["e1"]["status"] == 422
    assert lines["e1"]["error_type"] == "validation_error"
    assert lines["d1"]["route"] == "/openapi.json" and lines["d1"]["status"] == 200
    assert lines["d3"]["status"] == 404
    requests = "rhetor_requests_total"
    assert metric(page, requests, route="/budget/entries", status="422") == 1
    assert metric(page, requests, route="/budget/entries", status="200") == 1
    assert metric(page, requests, route="/openapi.json", status="200") == 1


async def test_a_refused_request_still_has_its_id_and_its_line(tmp_path: Path) -> None:
    """A 401 before any handler: the id is in the header and the error body, and the line is logged."""
    with log_lines("json") as log:
        async with served(tmp_path, api_key=SERVER_KEY) as (_, client):
            response = await client.get("/providers", headers={"X-Request-ID": "no-key"})
    assert response.status_code == 401
    assert response.json()["error"]["request_id"] == "no-key"
    [line] = [a for a in access(log) if a["request_id"] == "no-key"]
    assert line["status"] == 401 and line["error_type"] == "unauthorized"
    assert line["route"] == "/providers"


async def test_websocket_frames_carry_the_request_id_of_their_request(tmp_path: Path) -> None:
    """The handshake echoes X-Request-ID; every frame of a request, and its ERROR, carries its id."""
    with log_lines("json") as log:
        async with (
            running_server(settings_for(tmp_path)) as server,
            open_websocket_url(server.ws_url, extra_headers=[(b"X-Request-ID", b"sock-1")]) as ws,
        ):
            headers = dict(ws.handshake_headers)
            frame = {"type": "LLM_REQUEST", "id": "f1", "payload": {"message": "hello there"}}
            await ws.send_message(json.dumps(frame))
            frames = []
            with trio.fail_after(5):
                while not frames or frames[-1]["type"] != "RESPONSE":
                    frames.append(json.loads(await ws.get_message()))
            await ws.send_message(json.dumps({"type": "LLM_REQUEST", "id": "f2", "payload": {}}))
            with trio.fail_after(5):
                error = json.loads(await ws.get_message())
    assert headers[b"x-request-id"] == b"sock-1"
    rid = frames[-1]["payload"]["request_id"]
    assert all(f["request_id"] == rid for f in frames)
    assert error["type"] == "ERROR" and error["request_id"] == error["payload"]["request_id"]
    lines = {a["request_id"]: a for a in access(log)}
    assert lines[rid]["method"] == "WS" and lines[rid]["route"] == "LLM_REQUEST"
    assert lines[rid]["socket"] == "sock-1" and lines[rid]["status"] == 200
    assert lines[rid]["provider"] == "simulated"
    refused = lines[error["request_id"]]
    assert refused["status"] == 422 and refused["error_type"] == "validation_error"


# -- the access log -------------------------------------------------------------------------


async def test_a_streamed_request_has_one_access_line_with_every_field(tmp_path: Path) -> None:
    """An SSE request's line: method, route, status, id, component, task, model, tokens, cost, timings."""
    with log_lines("json") as log:
        async with served(tmp_path, simulated_chunk_delay=0.01) as (_, client):
            response = await client.post(
                "/stream",
                json={"message": "tell me a story", "component": "ergon", "task_type": "chat"},
            )
    assert response.status_code == 200
    [line] = [a for a in access(log) if a.get("path") == "/stream"]
    assert line["method"] == "POST" and line["route"] == "/stream" and line["status"] == 200
    assert line["component"] == "ergon" and line["task_type"] == "chat"
    assert line["provider"] == "simulated" and line["model"] == "simulated-echo"
    assert line["attempts"] == 1 and line["tried"] == "simulated/simulated-echo:ok"
    assert line["input_tokens"] > 0 and line["output_tokens"] > 0 and line["cost_usd"] == 0
    assert 0 < line["ttft_ms"] < line["total_ms"]
    assert line["upstream_ms"] > 0 and line["overhead_ms"] >= 0
    assert abs(line["total_ms"] - line["upstream_ms"] - line["overhead_ms"]) < 0.01


async def test_the_text_log_has_timestamps_and_key_value_fields(tmp_path: Path) -> None:
    """The text format: timestamp, level, logger, [request id], then key=value fields."""
    with log_lines("text") as log:
        async with served(tmp_path) as (_, client):
            await client.get("/health", headers={"X-Request-ID": "t-1"})
    [line] = [x for x in log.getvalue().splitlines() if " rhetor.access [t-1] " in x]
    assert line.split(" ")[0].endswith("Z")
    assert "GET /health 200 method=GET route=/health" in line and "total_ms=" in line


# -- lifecycle -------------------------------------------------------------------------------


async def test_an_actor_crash_is_logged_with_its_traceback_and_its_restart(tmp_path: Path) -> None:
    """A crash injected into the ContextStore: an error line with the traceback, then the restart."""
    with log_lines("text") as log:
        async with served(tmp_path) as (server, client):
            crash = actors.InvariantBroken("injected for the log test", name="contexts")
            server.runtime.system.faults.crash_next("contexts", crash)
            await client.get("/contexts")
            with trio.fail_after(5):
                while "actor contexts restarted" not in log.getvalue():
                    await trio.sleep(0.01)
    text = log.getvalue()
    crashed = text.index("ERROR rhetor.lifecycle actor contexts crashed")
    assert "Traceback (most recent call last)" in text[crashed:]
    assert "InvariantBroken" in text[crashed:] and "injected for the log test" in text[crashed:]
    assert "WARNING rhetor.lifecycle actor contexts restarted" in text


async def test_start_availability_and_shutdown_are_logged(tmp_path: Path) -> None:
    """serve(): the configuration (keys redacted), each provider's availability, the stop."""
    settings = settings_for(tmp_path, api_key=SERVER_KEY)
    stop = trio.Event()
    with log_lines("text") as log:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                partial(
                    serve,
                    settings,
                    handle_signals=False,
                    shutdown_trigger=stop.wait,
                    backends=simulated_backends(settings),
                )
            )
            async with httpx.AsyncClient() as client:
                await client.get(f"http://127.0.0.1:{port}/health")
            stop.set()
    text = log.getvalue()
    assert "INFO rhetor.lifecycle starting with configuration {" in text
    assert '"api_key": "[redacted]"' in text and SERVER_KEY not in text
    assert "INFO rhetor.providers provider simulated is available" in text
    assert "INFO rhetor.server Rhetor serving on http://127.0.0.1:" in text
    assert "INFO rhetor.server Rhetor stopped serving" in text
    assert "INFO rhetor.server Rhetor stopped" in text.rsplit("stopped serving", 1)[1]


async def test_a_provider_going_down_and_coming_back_is_logged_once_each_way(
    tmp_path: Path,
) -> None:
    """The upstream starts refusing the key: one warning with the reason; answering again: one info."""
    with log_lines("text") as log:
        async with behind_openai(tmp_path, health_interval=0.05) as (upstream, _, _):
            text = log.getvalue
            assert "INFO rhetor.providers provider openai is available" in text()
            upstream.models_failure = Fail(401, "invalid_api_key")
            with trio.fail_after(10):
                while "provider openai became unavailable" not in text():
                    await trio.sleep(0.05)
            upstream.models_failure = None
            with trio.fail_after(10):
                while text().count("provider openai is available") < 2:
                    await trio.sleep(0.05)
    lines = log.getvalue().splitlines()
    [down] = [line for line in lines if "provider openai became unavailable" in line]
    assert " WARNING rhetor.providers " in down and down.endswith("answered 401: invalid_api_key")
    assert sum("provider openai is available" in line for line in lines) == 2
    assert UPSTREAM_KEY not in log.getvalue()


# -- secrets ----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["text", "json"])
async def test_no_secret_reaches_any_log_line(tmp_path: Path, fmt: observe.LogFormat) -> None:
    """Server and provider keys, sent right, wrong, in a query or echoed by the upstream: never logged."""
    with log_lines(fmt) as log:
        async with behind_openai(tmp_path) as (upstream, server, client):
            observe.log_configuration(server.settings)
            await client.post("/message", json={"message": "hi", "model": GPT_MINI})
            upstream.script(*[Fail(500, "server_error", echo_key=True)] * 3)
            await client.post("/message", json={"message": "hi", "model": GPT_MINI})
            await client.get(f"/providers?api_key={SERVER_KEY}", headers={"X-API-Key": "wrong"})
            await client.post(
                "/message",
                json={"message": "hi", "component": SERVER_KEY},
                headers={"Authorization": f"Bearer {SERVER_KEY}"},
            )
            async with open_websocket_url(f"{server.ws_url}?api_key={SERVER_KEY}") as ws:
                await ws.send_message(json.dumps({"type": "STATUS", "id": "s"}))
                with trio.fail_after(5):
                    await ws.get_message()
    text = log.getvalue()
    assert "rhetor.access" in text and "upstream_server_error" in text
    assert SERVER_KEY not in text and UPSTREAM_KEY not in text
    assert SERVER_KEY[:-4] not in text and UPSTREAM_KEY[-12:] not in text


async def test_a_database_password_never_reaches_the_log_even_when_the_start_fails(
    tmp_path: Path,
) -> None:
    """serve() on an unreachable PostgreSQL URL with a password: the start line and the failure hide it."""
    settings = settings_for(
        tmp_path, database_url="postgresql://user:secret@127.0.0.1:1/db", database_start_timeout=1.0
    )
    with log_lines("text") as log, pytest.RaisesGroup(Exception, flatten_subgroups=True) as caught:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                await nursery.start(
                    partial(
                        serve,
                        settings,
                        handle_signals=False,
                        shutdown_trigger=trio.sleep_forever,
                        backends=simulated_backends(settings),
                    )
                )
    text = log.getvalue()
    assert '"database_url": "postgresql://user:[redacted]@127.0.0.1:1/db"' in text
    assert "secret" not in text and "secret" not in repr(caught.value)
    assert "cannot be reached" in repr(caught.value)
    assert "trying again in" in text  # the waits for the database are logged, password hidden


# -- metrics ------------------------------------------------------------------------------------


async def test_metrics_count_requests_tokens_latency_and_sessions(tmp_path: Path) -> None:
    """After two replies and a 404, the counts, token sums and histograms moved by exactly that."""
    async with served(tmp_path) as (_, client):
        before = await metrics_page(client)
        for _ in range(2):
            reply = await client.post("/message", json={"message": "hi", "component": "m"})
        await client.get("/nowhere")
        after = await metrics_page(client)
    usage = reply.json()["usage"]

    def moved(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    ok = {"route": "/message", "status": "200", "component": "m", "provider": "simulated"}
    assert moved("rhetor_requests_total", **ok) == 2
    assert moved("rhetor_requests_total", route="(unmatched)", status="404") == 1
    assert moved("http_server_request_duration_seconds_count", route="/message") == 2
    assert moved("rhetor_request_overhead_seconds_count", route="/message") == 2
    assert moved("gen_ai_server_time_to_first_token_seconds_count") == 2
    tokens = {"component": "m", "gen_ai_provider_name": "simulated"}
    assert moved("gen_ai_client_token_usage_sum", gen_ai_token_type="input", **tokens) == (
        2 * usage["input_tokens"]
    )
    assert moved("gen_ai_client_token_usage_sum", gen_ai_token_type="output", **tokens) == (
        2 * usage["output_tokens"]
    )
    assert moved("gen_ai_client_operation_duration_seconds_count") == 2
    # The scrape itself is the one request in flight.
    assert metric(after, "http_server_active_requests") == 1
    assert metric(after, "rhetor_provider_available", provider="simulated") == 1
    assert metric(after, "rhetor_actor_mailbox_depth", actor="router") == 0
    assert metric(after, "rhetor_actor_restarts", actor="contexts") == 0
    assert "rhetor_ledger_errors" in after


@pytest.mark.parametrize("path", ["/message", "/chat"])
async def test_a_client_that_gives_up_is_a_499_not_a_server_error(
    tmp_path: Path, path: str
) -> None:
    """
    A client that leaves before its reply (``/message``: the direct route; ``/chat``: a
    Quart view) is logged and counted as status 499, error type ``cancelled``.
    """
    words = "a b c"
    body: dict[str, Any] = (
        {"message": words}
        if path == "/message"
        else {"messages": [{"role": "user", "content": words}]}
    )
    with log_lines("json") as log:
        # A whole simulated reply takes the chunk delay: far longer than the client waits.
        async with served(tmp_path, simulated_chunk_delay=5) as (_, client):
            with pytest.raises(httpx.ReadTimeout):
                await client.post(path, json=body, timeout=0.3)
            with trio.fail_after(5):
                while not [a for a in access(log) if a.get("path") == path]:
                    await trio.sleep(0.05)
            page = await metrics_page(client)
    [line] = [a for a in access(log) if a.get("path") == path]
    assert line["status"] == 499 and line["error_type"] == "cancelled"
    assert metric(page, "rhetor_requests_total", route=path, status="499") == 1
    assert metric(page, "rhetor_requests_total", route=path, status="500") == 0


async def test_websocket_sessions_are_a_gauge(tmp_path: Path) -> None:
    """An open WebSocket counts in rhetor_websocket_sessions until it closes."""
    async with served(tmp_path) as (server, client):
        async with open_websocket_url(server.ws_url) as ws:
            await ws.send_message(json.dumps({"type": "REGISTER", "id": "r"}))
            await ws.get_message()
            during = metric(await metrics_page(client), "rhetor_websocket_sessions")
        with trio.fail_after(5):
            while metric(await metrics_page(client), "rhetor_websocket_sessions") != 0:
                await trio.sleep(0.01)
    assert during == 1


async def test_budget_remaining_is_a_gauge_per_period(tmp_path: Path) -> None:
    """With a daily limit, rhetor_budget_remaining_usd{period="daily"} is the limit minus spend."""
    async with served(tmp_path, daily_limit=5.0) as (_, client):
        page = await metrics_page(client)
    assert metric(page, "rhetor_budget_remaining_usd", period="daily", provider="") == 5.0


async def test_metrics_need_the_api_key_unless_made_public(tmp_path: Path) -> None:
    """/metrics is 401 without the key; with RHETOR_METRICS_PUBLIC it is open, the API still is not."""
    async with served(tmp_path / "a", api_key=SERVER_KEY) as (_, client):
        refused = await client.get("/metrics")
        allowed = await client.get("/metrics", headers={"X-API-Key": SERVER_KEY})
    async with served(tmp_path / "b", api_key=SERVER_KEY, metrics_public=True) as (_, client):
        public = await client.get("/metrics")
        api = await client.get("/providers")
    assert refused.status_code == 401 and allowed.status_code == 200
    assert public.status_code == 200 and api.status_code == 401


async def test_metrics_turned_off_are_not_served(tmp_path: Path) -> None:
    """RHETOR_METRICS=0: /metrics is a 404; request ids and Server-Timing stay."""
    async with served(tmp_path, metrics=False) as (_, client):
        page = await client.get("/metrics", headers={"X-Request-ID": "m-off"})
        reply = await client.post("/message", json={"message": "hi"})
    assert page.status_code == 404 and page.json()["error"]["request_id"] == "m-off"
    assert reply.status_code == 200 and "upstream;dur=" in reply.headers["Server-Timing"]


async def test_every_reply_carries_server_timing_with_overhead_and_upstream(tmp_path: Path) -> None:
    """Server-Timing on a reply, an error and a stream: rhetor (overhead) and upstream, in ms."""
    async with served(tmp_path) as (_, client):
        replies = [
            await client.post("/message", json={"message": "hi"}),
            await client.get("/health"),
            await client.get("/nowhere"),
            await client.post("/stream", json={"message": "hi"}),
        ]
    for response in replies:
        rhetor_part, upstream_part = response.headers["Server-Timing"].split(", ")
        assert rhetor_part.startswith('rhetor;desc="overhead";dur=')
        assert upstream_part.startswith("upstream;dur=")
        assert float(rhetor_part.rsplit("=", 1)[1]) >= 0
    assert float(replies[0].headers["Server-Timing"].rsplit("=", 1)[1]) > 0
    assert replies[1].headers["Server-Timing"].endswith("upstream;dur=0.000")


async def test_server_timing_is_on_console_files_docs_metrics_404s_and_405s(tmp_path: Path) -> None:
    """Every kind of HTTP reply outside the LLM routes carries Server-Timing and X-Request-ID too."""
    async with served(tmp_path) as (_, client):
        replies = [
            await client.get("/ui"),
            await client.get("/ui/"),
            await client.get("/ui/index.html"),
            await client.get("/ui/no-such-file.js"),
            await client.get("/docs"),
            await client.get("/docs/redoc.standalone.js"),
            await client.get("/openapi.json"),
            await client.get("/metrics"),
            await client.delete("/health"),
            await client.post(
                "/message", content=b"{not json", headers={"Content-Type": "application/json"}
            ),
            await client.post("/message", content=b"{}"),
        ]
    statuses = [r.status_code for r in replies]
    assert statuses == [308, 200, 200, 404, 200, 200, 200, 200, 405, 400, 415]
    for response in replies:
        assert response.headers["X-Request-ID"]
        rhetor_part, upstream_part = response.headers["Server-Timing"].split(", ")
        assert rhetor_part.startswith('rhetor;desc="overhead";dur=')
        assert upstream_part == "upstream;dur=0.000"


# -- /ready ---------------------------------------------------------------------------------------


async def test_ready_is_200_when_stores_answer_and_a_provider_can(tmp_path: Path) -> None:
    """/ready: 200 with every store reachable and the providers; open even with an API key."""
    async with served(tmp_path, api_key=SERVER_KEY) as (_, client):
        response = await client.get("/ready")
        health = await client.get("/health")
    assert response.status_code == 200 and health.status_code == 200
    body = response.json()
    assert body["status"] == "ready" and body["reasons"] == []
    assert body["stores"] == {
        name: {"reachable": True, "reason": None} for name in ("budget", "contexts", "prompts")
    }
    assert body["providers"] == {"simulated": True}


async def test_ready_is_503_with_the_reason_when_no_provider_can_answer(tmp_path: Path) -> None:
    """No provider up (the simulated one forbidden): 503, naming why; /health still answers."""
    async with served(tmp_path, simulated="never") as (_, client):
        response = await client.get("/ready")
        health = await client.get("/health")
    assert response.status_code == 503 and health.status_code == 200
    body = response.json()
    assert body["status"] == "not_ready"
    assert body["reasons"] == ["no provider can answer: simulated"]


@pytest.mark.slow
async def test_ready_names_a_store_that_does_not_answer(tmp_path: Path) -> None:
    """A hung ContextStore: not ready, the contexts store named unreachable, the others fine."""
    async with running_server(settings_for(tmp_path)) as server:
        server.runtime.system.faults.hang("contexts")
        readiness = await server.runtime.ready(timeout=0.2)
        server.runtime.system.faults.clear("contexts")
    assert readiness["status"] == "not_ready"
    assert readiness["stores"]["contexts"]["reachable"] is False
    assert readiness["stores"]["budget"]["reachable"] is True
    assert readiness["reasons"] == [
        "the contexts store is unreachable: contexts did not answer in 0.2s"
    ]


# -- traces ---------------------------------------------------------------------------------------


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    observe.configure_tracing({}, exporter=exporter)
    try:
        yield exporter
    finally:
        observe.shutdown_tracing()


@pytest.mark.slow
async def test_a_request_is_one_span_with_its_parts_as_children(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    """Context read, reservation, the provider attempt and settling are children of the request's span."""
    async with served(tmp_path, daily_limit=5.0) as (_, client):
        response = await client.post(
            "/message", json={"message": "hi", "context_id": "c1", "component": "t"}
        )
    assert response.status_code == 200
    finished = {s.name: s for s in spans.get_finished_spans()}
    root = finished["POST /message"]
    assert root.parent is None
    assert root.attributes["http.route"] == "/message"
    assert root.attributes["http.response.status_code"] == 200
    assert root.attributes["gen_ai.provider.name"] == "simulated"
    assert root.attributes["rhetor.request_id"] == response.json()["request_id"]
    children = ["rhetor.context.read", "rhetor.budget.reserve", "chat simulated-echo"]
    children.append("rhetor.budget.settle")
    for name in children:
        span = finished[name]
        assert span.parent is not None and span.parent.span_id == root.context.span_id, name
        assert span.context.trace_id == root.context.trace_id
    call = finished["chat simulated-echo"]
    assert call.attributes["gen_ai.operation.name"] == "chat"
    assert call.attributes["gen_ai.provider.name"] == "simulated"
    assert call.attributes["gen_ai.request.model"] == "simulated-echo"
    assert call.attributes["gen_ai.usage.output_tokens"] > 0


class _Collector(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP trace collector: keeps every span name it is sent."""

    names: ClassVar[list[str]] = []
    paths: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        type(self).paths.append(self.path)
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                type(self).names.extend(span.name for span in scope.spans)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.mark.slow
async def test_spans_are_exported_over_otlp_http_to_the_endpoint(tmp_path: Path) -> None:
    """OTEL_EXPORTER_OTLP_ENDPOINT set: the request's spans reach a collector at /v1/traces."""
    collector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=collector.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{collector.server_address[1]}"
    try:
        assert observe.configure_tracing({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint})
        try:
            async with served(tmp_path) as (_, client):
                assert (await client.post("/message", json={"message": "hi"})).status_code == 200
        finally:
            await trio.to_thread.run_sync(observe.shutdown_tracing)
    finally:
        collector.shutdown()
        collector.server_close()
    assert set(_Collector.paths) == {"/v1/traces"}
    assert {"POST /message", "chat simulated-echo"} <= set(_Collector.names)


@pytest.mark.slow
def test_without_an_otlp_endpoint_tracing_imports_nothing(tmp_path: Path) -> None:
    """Unset OTEL_EXPORTER_OTLP_ENDPOINT: a served request loads no OpenTelemetry module at all."""
    script = f"""
import sys, trio, httpx
from rhetor import observe
from tests.helpers import running_server, settings_for
from pathlib import Path
assert observe.configure_tracing({{}}) is False

async def main():
    async with running_server(settings_for(Path({str(tmp_path)!r}))) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            assert (await client.post("/message", json={{"message": "hi"}})).status_code == 200

trio.run(main)
loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
assert not loaded, loaded
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    assert result.stdout.strip() == "ok", result.stderr


# -- the bar ------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_the_log_alone_and_the_metrics_alone_tell_who_asked_what_and_what_came_of_it(
    tmp_path: Path,
) -> None:
    """
    A success, a budget refusal and an upstream failure: from the access log
    alone, and from /metrics alone, an operator can tell who asked (the
    component), what (route and task), which model answered, what it cost and
    why it failed.
    """
    with log_lines("json") as log:
        async with behind_openai(tmp_path) as (upstream, server, client):
            ok = await client.post(
                "/message",
                json={
                    "message": "hi",
                    "model": GPT_MINI,
                    "component": "alice",
                    "task_type": "chat",
                },
            )
            await server.runtime.set_limit("daily", 1e-9)
            await server.runtime.set_policy("enforce")
            refused = await client.post(
                "/message", json={"message": "hi", "model": GPT_MINI, "component": "bob"}
            )
            await server.runtime.set_policy("warn")
            warned = await client.post(
                "/message", json={"message": "hi", "model": GPT_MINI, "component": "dave"}
            )
            await server.runtime.set_policy("ignore")
            upstream.script(*[Fail.server_error()] * 3)
            failed = await client.post(
                "/message", json={"message": "hi", "model": GPT_MINI, "component": "carol"}
            )
            page = await metrics_page(client)
    assert (ok.status_code, refused.status_code, warned.status_code) == (200, 402, 200)
    assert failed.status_code >= 500
    cost = ok.json()["cost"]
    assert cost > 0

    # From the log alone.
    lines = {line["component"]: line for line in access(log) if line.get("component")}
    alice, bob, carol = lines["alice"], lines["bob"], lines["carol"]
    assert (alice["route"], alice["task_type"], alice["status"]) == ("/message", "chat", 200)
    assert (alice["provider"], alice["model"]) == ("openai", GPT_MINI)
    assert alice["cost_usd"] == pytest.approx(cost) and alice["input_tokens"] == 12
    assert (bob["status"], bob["error_type"]) == (402, "budget_exceeded")
    assert "daily budget" in bob["error"] and bob["tried"] == f"openai/{GPT_MINI}:budget_exceeded"
    assert bob.get("provider") is None and bob["cost_usd"] == 0
    assert carol["status"] == failed.status_code
    assert carol["error_type"] == "all_providers_failed"
    assert carol["tried"].split(",") == [f"openai/{GPT_MINI}:upstream_server_error"] * 3
    assert carol["retries"] == 2 and carol.get("provider") is None
    dave = lines["dave"]
    assert dave["status"] == 200 and dave["budget"] == warned.json()["budget_warning"]
    records = [json.loads(x) for x in log.getvalue().splitlines() if x.startswith("{")]
    warnings = {
        (r["request_id"], r["message"].split(": ")[1])
        for r in records
        if r["level"] == "WARNING" and r["logger"] == "rhetor.router"
    }
    assert (bob["request_id"], "the budget refused openai/gpt-4o-mini") in warnings
    assert (dave["request_id"], "budget warning") in warnings

    # From /metrics alone.
    def requests(**labels: str) -> float:
        return metric(page, "rhetor_requests_total", route="/message", **labels)

    assert requests(component="alice", task_type="chat", status="200", provider="openai") == 1
    assert requests(component="alice", model=GPT_MINI, error_type="") == 1
    assert metric(page, "rhetor_spend_usd_total", component="alice", model=GPT_MINI) == (
        pytest.approx(cost)
    )
    assert requests(component="bob", status="402", error_type="budget_exceeded") == 1
    refusals = {"event": "refused", "component": "bob", "model": GPT_MINI}
    assert metric(page, "rhetor_budget_events_total", **refusals) == 1
    assert requests(component="carol", error_type="all_providers_failed") == 1
    errors = {"provider": "openai", "model": GPT_MINI, "error_type": "upstream_server_error"}
    assert metric(page, "rhetor_provider_errors_total", **errors) == 3
    assert metric(page, "rhetor_provider_retries_total", provider="openai") == 2
    assert metric(page, "rhetor_spend_usd_total", component="bob") == 0
    assert metric(page, "rhetor_spend_usd_total", component="carol") == 0
    assert metric(page, "rhetor_budget_events_total", event="warned", component="dave") == 1
