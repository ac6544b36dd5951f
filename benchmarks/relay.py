"""
Benchmark the OpenAI relay: Rhetor's /v1/chat/completions against three baselines.

Run: ``python benchmarks/relay.py`` (about two and a half minutes). Subprocesses:

- the upstream, answering a canned chat completion at once: an nginx when one is
  installed (``apt-get install nginx-light``), as in the issue's measurements, else
  the lean Python upstream (``benchmarks/_upstream.py``, 300-400 us of CPU a call at
  one connection here, on the relay's critical path); ``--python-upstream`` forces
  the latter. The JSON line says which (``upstream``);
- Rhetor (``python -m rhetor serve``) with its OpenAI provider pointed at the
  upstream and the simulated provider on. It serves both measured routes:
  ``POST /v1/chat/completions`` (the relay: edge, router, budget keeper, ledger,
  provider actor, Rhetor's HTTP client, the upstream) and ``POST /message`` on the
  simulated provider (the same path with no upstream call);
- a minimal Quart-Trio relay through the ``openai`` SDK: no actors, routing, budget
  or storage;
- a bare h11 relay on trio: requests forwarded byte for byte over one upstream
  connection per client connection, no JSON, no framework (the floor of trio and h11);
- the Hypercorn floor: a bare ASGI app on Hypercorn (no Quart) relaying each body
  through Rhetor's own HTTP client (``rhetor.providers._http.HttpClient``), no JSON,
  with Rhetor's adjustments to Hypercorn (``rhetor.edge._hypercorn``): the most any
  relay served by Rhetor's Hypercorn with this client can do, Rhetor's own ceiling
  on its stack. The SDK relay runs on Hypercorn as released.

The load generator is ``wrk`` (``apt-get install wrk``; without it, a multiprocess
httpx client): requests per second at 32 connections and p50/p99 latency at 1
connection, the four targets alternating over three rounds, each result the median
of its rounds. The machine is shared; the runs' spread is printed.

The last line is JSON: relay_rps, simulated_rps, sdk_relay_rps, floor_rps,
hypercorn_floor_rps, relay_vs_simulated, relay_vs_sdk_relay, relay_vs_floor,
relay_vs_hypercorn_floor, hypercorn_floor_vs_sdk_relay (the most relay_vs_sdk_relay
could be on this stack), p50_ms (the relay's),
simulated_p50_ms, sdk_relay_p50_ms, floor_p50_ms, and the p99s. Targets:
relay_vs_simulated >= 0.6, relay_vs_sdk_relay >= 3, p50_ms within 0.5 ms of
simulated_p50_ms.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

import _load  # benchmarks/_load.py, beside this script
from _servers import free_port, started, stop

HERE = Path(__file__).resolve().parent
MODEL = "gpt-4o-mini"
RELAY_BODY = {"model": MODEL, "messages": [{"role": "user", "content": "Hello, relay!"}]}
SIMULATED_BODY = {"message": "Hello, relay!", "model": "simulated-echo"}
HEADERS = {"Authorization": "Bearer sk-bench"}
DURATION = 4
WARMUP = 2
# Runs alternate between the targets and each result is the median of its rounds,
# so a noisy neighbour on a small machine skews one round, not the comparison.
ROUNDS = 3


# -- the baselines on Hypercorn ---------------------------------------------------------


def serve_on_hypercorn(app: Any) -> None:
    """Serve ``app`` on Hypercorn's trio worker on a free port, saying where on stdout."""
    import trio
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    config.backlog = 2048

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(serve, app, config)
            print(f"serving on {binds[0]}", flush=True)

    trio.run(main)


def http_only(handler: Any) -> Any:
    """An ASGI app that answers the lifespan itself and hands each HTTP request to ``handler``."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await handler(scope, receive, send)

    return app


# -- the minimal SDK relay ---------------------------------------------------------------


def sdk_relay_server(upstream: str) -> None:
    """Quart-Trio on Hypercorn relaying /v1/chat/completions through the openai SDK."""
    import openai
    from quart import Response, request
    from quart_trio import QuartTrio

    app = QuartTrio("minimal")
    client = openai.AsyncOpenAI(base_url=upstream, api_key="sk-bench", max_retries=0)

    @app.post("/v1/chat/completions")
    async def relay() -> Response:
        body = json.loads(await request.get_data())
        completion = await client.chat.completions.create(
            model=body["model"], messages=body["messages"]
        )
        return Response(completion.model_dump_json(), content_type="application/json")

    serve_on_hypercorn(app)


# -- the bare h11 relay (the floor) ------------------------------------------------------


def floor_server(upstream: str) -> None:
    """h11 on trio: each client connection relayed over its own upstream connection."""
    import urllib.parse
    from functools import partial

    import h11
    import trio

    target = urllib.parse.urlsplit(upstream)
    assert target.hostname is not None and target.port is not None

    async def next_event(conn: h11.Connection, stream: trio.SocketStream) -> Any:
        while (event := conn.next_event()) is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
        return event

    async def relay(client: trio.SocketStream) -> None:
        inbound = h11.Connection(h11.SERVER)
        upstream_stream = await trio.open_tcp_stream(target.hostname, target.port)
        try:
            while True:
                outbound = h11.Connection(h11.CLIENT)
                head = await next_event(inbound, client)
                if not isinstance(head, h11.Request):
                    return
                body = bytearray()
                while isinstance(event := await next_event(inbound, client), h11.Data):
                    body += event.data
                headers = [(k, v) for k, v in head.headers if k not in (b"host", b"content-length")]
                headers += [
                    (b"host", target.netloc.encode()),
                    (b"content-length", b"%d" % len(body)),
                ]
                data = outbound.send(
                    h11.Request(method=head.method, target=head.target, headers=headers)
                )
                data += outbound.send(h11.Data(data=bytes(body))) + outbound.send(
                    h11.EndOfMessage()
                )
                await upstream_stream.send_all(data)
                reply = await next_event(outbound, upstream_stream)
                chunks = bytearray()
                while isinstance(event := await next_event(outbound, upstream_stream), h11.Data):
                    chunks += event.data
                out = inbound.send(
                    h11.Response(
                        status_code=reply.status_code,
                        headers=[
                            (b"content-type", b"application/json"),
                            (b"content-length", b"%d" % len(chunks)),
                        ],
                    )
                )
                out += inbound.send(h11.Data(data=bytes(chunks))) + inbound.send(h11.EndOfMessage())
                await client.send_all(out)
                inbound.start_next_cycle()
        except (trio.BrokenResourceError, h11.ProtocolError):
            return
        finally:
            await trio.aclose_forcefully(upstream_stream)
            await trio.aclose_forcefully(client)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, relay, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            print(f"serving on http://127.0.0.1:{port}", flush=True)

    trio.run(main)


# -- the Hypercorn floor: bare ASGI through Rhetor's HTTP client ----------------------------


def hypercorn_floor_server(upstream: str) -> None:
    """A bare ASGI app on Hypercorn: each body forwarded with ``HttpClient``, the reply returned."""
    import trio

    from rhetor.edge._hypercorn import adjust_hypercorn
    from rhetor.providers._http import HttpClient

    adjust_hypercorn()
    client = HttpClient(upstream)
    headers = [("authorization", "Bearer sk-bench"), ("content-type", "application/json")]

    async def relay(scope: Any, receive: Any, send: Any) -> None:
        parts = []
        while True:
            event = await receive()
            parts.append(event.get("body", b""))
            if not event.get("more_body"):
                break
        response = await client.request(
            "POST",
            scope["path"],
            headers,
            b"".join(parts),
            deadline=trio.current_time() + 30,
            whole=True,
        )
        body = await response.read()
        response.close()
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", b"%d" % len(body)),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    serve_on_hypercorn(http_only(relay))


# -- subprocesses ------------------------------------------------------------------------


def _started(args: list[str], env: dict[str, str], cwd: str | None = None) -> tuple[Any, str]:
    """Start a server subprocess; answer it and its URL (without ``/v1``)."""
    proc, url = started(args, env, cwd=cwd)
    return proc, url.removesuffix("/v1")


def start_upstream(nginx: bool) -> tuple[Any, str]:
    """The canned upstream (nginx, or the Python one); its URL without /v1."""
    flags = ["--nginx"] if nginx else []
    return _started([sys.executable, str(HERE / "_upstream.py"), *flags], dict(os.environ))


def rhetor_env(data_dir: str, upstream: str) -> dict[str, str]:
    """Rhetor's environment: its OpenAI provider on ``upstream`` (no /v1), the simulated one on."""
    env = {
        **os.environ,
        "RHETOR_PORT": "0",
        "RHETOR_HOST_BIND": "127.0.0.1",
        "RHETOR_DATA_DIR": data_dir,
        "RHETOR_SIMULATED": "always",
        "OPENAI_API_KEY": "sk-bench",
        "OPENAI_BASE_URL": f"{upstream}/v1",
        "HERMES_API_URL": "",
        "OLLAMA_BASE_URL": f"http://127.0.0.1:{free_port()}",
    }
    for key in ("ANTHROPIC_API_KEY", "RHETOR_API_KEY", "RHETOR_PRICE_OVERRIDES"):
        env.pop(key, None)
    return env


def start_rhetor(data_dir: str, upstream: str) -> tuple[Any, str]:
    return _started(
        [sys.executable, "-m", "rhetor", "serve"], rhetor_env(data_dir, upstream), data_dir
    )


def start_sdk_relay(upstream: str) -> tuple[Any, str]:
    return _started(
        [sys.executable, __file__, "--sdk-relay-server", f"{upstream}/v1"], dict(os.environ)
    )


def start_floor(upstream: str) -> tuple[Any, str]:
    return _started([sys.executable, __file__, "--floor-server", upstream], dict(os.environ))


def start_hypercorn_floor(upstream: str) -> tuple[Any, str]:
    return _started(
        [sys.executable, __file__, "--hypercorn-floor-server", upstream], dict(os.environ)
    )


# -- main ----------------------------------------------------------------------------------


def check_reply(url: str, body: dict[str, Any]) -> None:
    """One request first: every target must answer with a real reply."""
    import httpx

    r = httpx.post(url, json=body, headers=HEADERS, timeout=10)
    r.raise_for_status()
    answer = r.json()
    if "messages" in body:
        assert answer["object"] == "chat.completion", answer
        assert answer["choices"][0]["message"]["content"], answer
    else:
        assert answer["model"] == "simulated-echo" and answer["message"], answer


def main(python_upstream: bool = False) -> None:
    started = time.perf_counter()
    nginx = not python_upstream and shutil.which("nginx") is not None
    with tempfile.TemporaryDirectory() as data_dir:
        upstream, upstream_url = start_upstream(nginx)
        rhetor, rhetor_url = start_rhetor(data_dir, upstream_url)
        sdk_relay, sdk_url = start_sdk_relay(upstream_url)
        floor, floor_url = start_floor(upstream_url)
        hypercorn_floor, hypercorn_url = start_hypercorn_floor(upstream_url)
        targets = {
            "relay": (f"{rhetor_url}/v1/chat/completions", RELAY_BODY),
            "simulated": (f"{rhetor_url}/message", SIMULATED_BODY),
            "sdk_relay": (f"{sdk_url}/v1/chat/completions", RELAY_BODY),
            "floor": (f"{floor_url}/v1/chat/completions", RELAY_BODY),
            "hypercorn_floor": (f"{hypercorn_url}/v1/chat/completions", RELAY_BODY),
        }
        try:
            for url, body in targets.values():
                check_reply(url, body)
                _load.load(url, body, 32, WARMUP, headers=HEADERS)
            runs: dict[tuple[str, int], list[dict[str, float]]] = {}
            for i in range(ROUNDS):
                order = list(targets.items())
                order = order if i % 2 == 0 else order[::-1]
                for connections in (32, 1):
                    for name, (url, body) in order:
                        result = _load.load(url, body, connections, DURATION, headers=HEADERS)
                        runs.setdefault((name, connections), []).append(result)
        finally:
            for proc in (hypercorn_floor, floor, sdk_relay, rhetor, upstream):
                stop(proc)
    results = {
        name: {
            "rps": median(r["rps"] for r in runs[(name, 32)]),
            "p50_ms": median(r["p50_ms"] for r in runs[(name, 1)]),
            "p99_ms": median(r["p99_ms"] for r in runs[(name, 1)]),
            "rps_runs": [round(r["rps"]) for r in runs[(name, 32)]],
            "p50_runs": [round(r["p50_ms"], 2) for r in runs[(name, 1)]],
        }
        for name in targets
    }
    tool = "wrk" if shutil.which("wrk") else "httpx (wrk not found)"
    print(
        f"load generator: {tool}; upstream: {'nginx' if nginx else 'python'};"
        f" {ROUNDS} rounds of {DURATION}s runs; {os.cpu_count()} CPUs"
    )
    for name in targets:
        r = results[name]
        print(
            f"{name:15} 32 connections {r['rps']:6.0f} req/s (runs {r['rps_runs']});"
            f" 1 connection p50 {r['p50_ms']:.2f} ms (runs {r['p50_runs']}), p99 {r['p99_ms']:.2f} ms"
        )
    print(f"total {time.perf_counter() - started:.1f}s")
    relay, simulated = results["relay"], results["simulated"]
    sdk, floor_ = results["sdk_relay"], results["floor"]
    hypercorn_ = results["hypercorn_floor"]
    summary = {
        "upstream": "nginx" if nginx else "python",
        "relay_rps": round(relay["rps"], 1),
        "simulated_rps": round(simulated["rps"], 1),
        "sdk_relay_rps": round(sdk["rps"], 1),
        "floor_rps": round(floor_["rps"], 1),
        "hypercorn_floor_rps": round(hypercorn_["rps"], 1),
        "relay_vs_simulated": round(relay["rps"] / simulated["rps"], 3),
        "relay_vs_sdk_relay": round(relay["rps"] / sdk["rps"], 3),
        "relay_vs_floor": round(relay["rps"] / floor_["rps"], 3),
        "relay_vs_hypercorn_floor": round(relay["rps"] / hypercorn_["rps"], 3),
        "hypercorn_floor_vs_sdk_relay": round(hypercorn_["rps"] / sdk["rps"], 3),
        "p50_ms": round(relay["p50_ms"], 3),
        "simulated_p50_ms": round(simulated["p50_ms"], 3),
        "sdk_relay_p50_ms": round(sdk["p50_ms"], 3),
        "floor_p50_ms": round(floor_["p50_ms"], 3),
        "hypercorn_floor_p50_ms": round(hypercorn_["p50_ms"], 3),
        "p99_ms": round(relay["p99_ms"], 3),
        "simulated_p99_ms": round(simulated["p99_ms"], 3),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1] if __doc__ else None)
    parser.add_argument("--sdk-relay-server", metavar="UPSTREAM", help=argparse.SUPPRESS)
    parser.add_argument("--floor-server", metavar="UPSTREAM", help=argparse.SUPPRESS)
    parser.add_argument("--hypercorn-floor-server", metavar="UPSTREAM", help=argparse.SUPPRESS)
    parser.add_argument(
        "--python-upstream", action="store_true", help="the Python upstream even if nginx is here"
    )
    args = parser.parse_args()
    if args.sdk_relay_server:
        sdk_relay_server(args.sdk_relay_server)
    elif args.floor_server:
        floor_server(args.floor_server)
    elif args.hypercorn_floor_server:
        hypercorn_floor_server(args.hypercorn_floor_server)
    else:
        main(args.python_upstream)
