"""
Benchmark the OpenAI relay: Rhetor's /v1/chat/completions vs a minimal Quart-Trio relay.

Run: ``python benchmarks/relay.py`` (about 70 s). Three subprocesses:

- the fake OpenAI upstream (``tests/fakes/openai.py``), answering at once;
- Rhetor (``python -m rhetor serve``) with only its OpenAI provider available,
  relaying ``POST /v1/chat/completions`` through the router, budget keeper,
  pricer and provider actor to the fake;
- a minimal Quart-Trio app on Hypercorn that relays the same request through
  the same ``openai`` SDK: no actors, routing, budget or storage.

The load generator is ``wrk`` in its own process (``apt-get install wrk``), or,
without it, a multiprocess httpx client. It measures requests per second at 32
connections and p50/p99 latency at 1 connection, alternating between the two
relays over three rounds and reporting each one's median.

The last line is JSON: rhetor_rps, minimal_rps, rps_ratio, rhetor_p50_ms,
minimal_p50_ms (plus the p99s). Targets: rps_ratio >= 0.85 and Rhetor's p50
within 1 ms of the minimal relay's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

import _load  # benchmarks/_load.py, beside this script

REPO = Path(__file__).resolve().parent.parent
MODEL = "gpt-4o-mini"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "Hello, relay!"}]}
DURATION = 4
WARMUP = 2
# Runs alternate between the relays and each result is the median of its rounds,
# so a noisy neighbour on a small machine skews one round, not the comparison.
ROUNDS = 3


# -- the minimal relay -------------------------------------------------------------------


def minimal_server(upstream: str) -> None:
    """Quart-Trio on Hypercorn relaying /v1/chat/completions through the openai SDK."""
    import openai
    import trio
    from hypercorn.config import Config
    from hypercorn.trio import serve
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


# -- subprocesses ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _started(args: list[str], env: dict[str, str], cwd: str | None = None) -> tuple[Any, str]:
    """Start a server subprocess; answer it and the URL from its first output line."""
    proc = subprocess.Popen(
        args,
        cwd=cwd,
        env={**env, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "serving" not in line:
        proc.kill()
        raise SystemExit(f"{args} did not start: {line!r}")
    return proc, line.split()[-1]


def start_fake() -> tuple[Any, str]:
    """The fake OpenAI upstream; its URL ends in /v1."""
    return _started([sys.executable, "-m", "tests.fakes.openai"], dict(os.environ), str(REPO))


def start_rhetor(data_dir: str, upstream: str) -> tuple[Any, str]:
    env = {
        **os.environ,
        "RHETOR_PORT": "0",
        "RHETOR_HOST_BIND": "127.0.0.1",
        "RHETOR_DATA_DIR": data_dir,
        "RHETOR_SIMULATED": "never",
        "OPENAI_API_KEY": "sk-bench",
        "OPENAI_BASE_URL": upstream,
        "HERMES_API_URL": "",
        "OLLAMA_BASE_URL": f"http://127.0.0.1:{_free_port()}",
    }
    for key in ("ANTHROPIC_API_KEY", "RHETOR_API_KEY", "RHETOR_PRICE_OVERRIDES"):
        env.pop(key, None)
    return _started([sys.executable, "-m", "rhetor", "serve"], env, data_dir)


def start_minimal(upstream: str) -> tuple[Any, str]:
    return _started([sys.executable, __file__, "--minimal-server", upstream], dict(os.environ))


def stop(proc: Any) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.stdout.close()


# -- load ----------------------------------------------------------------------------------


def load(url: str, connections: int, duration: int = DURATION) -> dict[str, float]:
    return _load.load(
        url, BODY, connections, duration, headers={"Authorization": "Bearer sk-bench"}
    )


# -- main ----------------------------------------------------------------------------------


def check_reply(url: str) -> None:
    """One request first: both relays must answer a real chat completion."""
    import httpx

    r = httpx.post(url, json=BODY, headers={"Authorization": "Bearer sk-bench"}, timeout=10)
    r.raise_for_status()
    body = r.json()
    assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"], body


def main() -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as data_dir:
        fake, upstream = start_fake()
        rhetor, rhetor_url = start_rhetor(data_dir, upstream)
        minimal, minimal_url = start_minimal(upstream)
        urls = {
            "rhetor": f"{rhetor_url}/v1/chat/completions",
            "minimal": f"{minimal_url}/v1/chat/completions",
        }
        try:
            for url in urls.values():
                check_reply(url)
                load(url, 32, WARMUP)
            runs: dict[tuple[str, int], list[dict[str, float]]] = {}
            for i in range(ROUNDS):
                order = list(urls.items()) if i % 2 == 0 else list(urls.items())[::-1]
                for connections in (32, 1):
                    for name, url in order:
                        runs.setdefault((name, connections), []).append(load(url, connections))
            results = {
                name: {
                    "rps": median(r["rps"] for r in runs[(name, 32)]),
                    "p50_ms": median(r["p50_ms"] for r in runs[(name, 1)]),
                    "p99_ms": median(r["p99_ms"] for r in runs[(name, 1)]),
                    "rps_runs": [round(r["rps"]) for r in runs[(name, 32)]],
                }
                for name in urls
            }
        finally:
            stop(minimal)
            stop(rhetor)
            stop(fake)
    tool = "wrk" if shutil.which("wrk") else "httpx (wrk not found)"
    print(f"load generator: {tool}; {ROUNDS} rounds of {DURATION}s runs; {os.cpu_count()} CPUs")
    for name in urls:
        r = results[name]
        print(
            f"{name:8} 32 connections {r['rps']:6.0f} req/s (runs {r['rps_runs']});"
            f" 1 connection p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms"
        )
    print(f"total {time.perf_counter() - started:.1f}s")
    rh, mi = results["rhetor"], results["minimal"]
    summary = {
        "rhetor_rps": round(rh["rps"], 1),
        "minimal_rps": round(mi["rps"], 1),
        "rps_ratio": round(rh["rps"] / mi["rps"], 3),
        "rhetor_p50_ms": round(rh["p50_ms"], 3),
        "minimal_p50_ms": round(mi["p50_ms"], 3),
        "rhetor_p99_ms": round(rh["p99_ms"], 3),
        "minimal_p99_ms": round(mi["p99_ms"], 3),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--minimal-server", metavar="UPSTREAM", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.minimal_server:
        minimal_server(args.minimal_server)
    else:
        main()
