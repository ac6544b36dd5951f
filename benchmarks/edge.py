"""
Benchmark the edge: POST /message on Rhetor vs a bare Quart-Trio app, and WebSocket memory.

Run: ``python benchmarks/edge.py`` (about a minute). Both servers run as
subprocesses on Hypercorn's trio worker; the load generator is ``wrk`` in its
own process (``apt-get install wrk``), or, if wrk is missing, a multiprocess
httpx client. It reports:

- requests per second at 32 connections, Rhetor's POST /message (simulated
  provider, zero chunk delay) and a bare app that parses the same JSON, in
  three alternating rounds (medians; the ratio is the median of the rounds');
- p50 and p99 latency of Rhetor's POST /message at 1 connection;
- server memory per idle WebSocket session, as the RSS growth of the Rhetor
  process after 2,000 sessions (each REGISTERed, so its Session actor runs).

The last line is JSON: message_rps, bare_rps, rps_ratio, p50_ms, p99_ms,
ws_bytes_per_session. Targets: rps_ratio >= 0.75, ws_bytes_per_session <= 40,000.

``--observability`` measures what seeing inside Rhetor costs instead: two
Rhetor servers in the same run, one with logging at info (an access-log
line per request, written to a file) and metrics on, one with logging at
warning and ``RHETOR_METRICS=0``, each against the bare app in alternating
rounds (the two Rhetors in alternating order). Its JSON line: observed_rps,
plain_rps, bare_rps, observed_ratio, plain_ratio (each over the bare app),
observed_vs_plain (the median of the rounds' observed/plain throughput;
target >= 0.9), cpu_per_request_ratio (the observed server's CPU time per
request over the plain one's, read from /proc, the median of the rounds':
steadier than throughput on a busy machine), access_lines and metrics_requests (proof that the observed
server logged and counted every request).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _load  # benchmarks/_load.py, beside this script
from _servers import free_port, started, stop

BODY = {"message": "Hello, Rhetor!", "task_type": "chat"}
DURATION = 5
ROUNDS = 3
# --observability: more rounds, its servers' gap being smaller than the machine's noise.
OBSERVABILITY_ROUNDS = 5
SESSIONS = 2000


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


# -- the bare app ------------------------------------------------------------------


def bare_server() -> None:
    """A Quart-Trio app on Hypercorn that parses the same JSON and answers a small reply."""
    import trio
    from hypercorn.config import Config
    from hypercorn.trio import serve
    from quart import Response, request
    from quart_trio import QuartTrio

    app = QuartTrio("bare")

    @app.post("/message")
    async def message() -> Response:
        body = json.loads(await request.get_data())
        reply = {"message": body["message"], "model": "bare", "finished": True}
        return Response(json.dumps(reply), content_type="application/json")

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(serve, app, config)
            print(f"serving on {binds[0]}", flush=True)

    trio.run(main)


# -- servers as subprocesses ---------------------------------------------------------


def start_rhetor(
    data_dir: str, extra_env: dict[str, str] | None = None, stderr: Any = subprocess.DEVNULL
) -> tuple[subprocess.Popen[str], str]:
    env = {
        **os.environ,
        "RHETOR_PORT": "0",
        "RHETOR_HOST_BIND": "127.0.0.1",
        "RHETOR_DATA_DIR": data_dir,
        "RHETOR_SIMULATED_CHUNK_DELAY": "0",
        "HERMES_API_URL": "",
        "OLLAMA_BASE_URL": f"http://127.0.0.1:{free_port()}",
        **(extra_env or {}),
    }
    for key in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "RHETOR_API_KEY"):
        env.pop(key, None)
    return started(
        [sys.executable, "-m", "rhetor", "serve"],
        env,
        cwd=data_dir,
        stderr=stderr,
        preexec_fn=_raise_fd_limit,
    )


def start_bare() -> tuple[subprocess.Popen[str], str]:
    return started([sys.executable, __file__, "--bare-server"], os.environ)


# -- load ----------------------------------------------------------------------------


def load(url: str, connections: int) -> dict[str, float]:
    return _load.load(url, BODY, connections, DURATION, threads=4)


# -- WebSocket memory ------------------------------------------------------------------


def ws_clients(url: str, count: int) -> None:
    """Open ``count`` WebSockets, REGISTER each, print 'ready', hold them until stdin closes."""
    import trio
    from trio_websocket import open_websocket_url

    _raise_fd_limit()

    async def hold(ready: trio.Semaphore, done: trio.Event) -> None:
        async with open_websocket_url(url) as ws:
            await ws.send_message('{"type": "REGISTER", "id": "r", "source": "bench"}')
            await ws.get_message()
            ready.release()
            await done.wait()

    async def main() -> None:
        ready = trio.Semaphore(0, max_value=count)
        done = trio.Event()
        async with trio.open_nursery() as nursery:
            for i in range(count):
                nursery.start_soon(hold, ready, done)
                if i % 100 == 99:
                    await trio.sleep(0.02)  # do not overrun the listen backlog
            for _ in range(count):
                await ready.acquire()
            print("ready", flush=True)
            await trio.to_thread.run_sync(sys.stdin.read)
            done.set()

    trio.run(main)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def ws_memory(proc: subprocess.Popen[str], base_url: str, count: int = SESSIONS) -> float:
    ws_url = base_url.replace("http://", "ws://") + "/ws"
    # Warm up: one session first, so one-off imports and caches are not counted.
    warm = subprocess.Popen(
        [sys.executable, __file__, "--ws-clients", ws_url, "20"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert warm.stdout is not None and warm.stdin is not None
    warm.stdout.readline()
    warm.stdin.close()
    warm.wait()
    time.sleep(0.5)
    before = rss_bytes(proc.pid)
    clients = subprocess.Popen(
        [sys.executable, __file__, "--ws-clients", ws_url, str(count)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert clients.stdout is not None and clients.stdin is not None
    line = clients.stdout.readline()
    if line.strip() != "ready":
        raise SystemExit(f"WebSocket clients failed: {line!r}")
    time.sleep(0.5)
    after = rss_bytes(proc.pid)
    clients.stdin.close()
    clients.wait(timeout=30)
    clients.stdout.close()
    return (after - before) / count


# -- main ------------------------------------------------------------------------------


def main() -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as data_dir:
        rhetor, rhetor_url = start_rhetor(data_dir)
        bare, bare_url = start_bare()
        try:
            load(f"{rhetor_url}/message", 8)  # warm up both
            load(f"{bare_url}/message", 8)
            # Alternate the two servers and take medians: on a shared 2-core
            # machine a single run of either swings by 20 % or more.
            ratios, rhetor_runs, bare_runs = [], [], []
            for _ in range(ROUNDS):
                rhetor_runs.append(load(f"{rhetor_url}/message", 32)["rps"])
                bare_runs.append(load(f"{bare_url}/message", 32)["rps"])
                ratios.append(rhetor_runs[-1] / bare_runs[-1])
                print(f"  round: rhetor {rhetor_runs[-1]:.0f}, bare {bare_runs[-1]:.0f} req/s")
            message = {"rps": statistics.median(rhetor_runs)}
            bare_result = {"rps": statistics.median(bare_runs)}
            latency = load(f"{rhetor_url}/message", 1)
            per_session = ws_memory(rhetor, rhetor_url)
        finally:
            stop(bare)
            stop(rhetor)
    tool = "wrk" if shutil.which("wrk") else "httpx (wrk not found)"
    print(f"load generator: {tool}; {DURATION}s per run")
    print(
        f"POST /message, 32 connections: rhetor {message['rps']:.0f} req/s, "
        f"bare {bare_result['rps']:.0f} req/s"
    )
    print(
        f"POST /message, 1 connection: p50 {latency['p50_ms']:.2f} ms, "
        f"p99 {latency['p99_ms']:.2f} ms"
    )
    print(f"idle WebSocket session: {per_session:.0f} bytes of server RSS each ({SESSIONS})")
    print(f"total {time.perf_counter() - started:.1f}s")
    result = {
        "message_rps": round(message["rps"], 1),
        "bare_rps": round(bare_result["rps"], 1),
        "rps_ratio": round(statistics.median(ratios), 3),
        "p50_ms": round(latency["p50_ms"], 3),
        "p99_ms": round(latency["p99_ms"], 3),
        "ws_bytes_per_session": round(per_session),
    }
    print(json.dumps(result))


def observability() -> None:
    """Rhetor with logging at info and metrics on, against Rhetor with neither, in one run."""
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory() as on_dir,
        tempfile.TemporaryDirectory() as off_dir,
        open(Path(on_dir) / "rhetor.log", "w") as log,
    ):
        on_env = {"RHETOR_LOG_LEVEL": "info", "RHETOR_METRICS": "1"}
        off_env = {"RHETOR_LOG_LEVEL": "warning", "RHETOR_METRICS": "0"}
        observed, observed_url = start_rhetor(on_dir, on_env, stderr=log)
        plain, plain_url = start_rhetor(off_dir, off_env)
        bare, bare_url = start_bare()
        try:
            for url in (observed_url, plain_url, bare_url):
                load(f"{url}/message", 8)  # warm up all three
            on_runs, off_runs, bare_runs, on_ratios, off_ratios = [], [], [], [], []
            pairs, on_cpu, off_cpu = [], [], []
            for i in range(OBSERVABILITY_ROUNDS):
                # Alternate which Rhetor goes first: a busy machine drifts within a round.
                order = [(observed, observed_url), (plain, plain_url)]
                runs: dict[int, tuple[float, float]] = {}
                for proc, url in order if i % 2 == 0 else order[::-1]:
                    runs[proc.pid] = _cpu_per_request(proc, url)
                bare_runs.append(load(f"{bare_url}/message", 32)["rps"])
                (on_rps, on_us), (off_rps, off_us) = runs[observed.pid], runs[plain.pid]
                on_runs.append(on_rps)
                off_runs.append(off_rps)
                on_cpu.append(on_us)
                off_cpu.append(off_us)
                on_ratios.append(on_rps / bare_runs[-1])
                off_ratios.append(off_rps / bare_runs[-1])
                pairs.append(on_rps / off_rps)
                print(
                    f"  round: observed {on_rps:.0f} req/s ({on_us:.0f} us CPU each), "
                    f"plain {off_rps:.0f} ({off_us:.0f} us), bare {bare_runs[-1]:.0f} req/s"
                )
            page = _metrics_page(observed_url)
        finally:
            stop(bare)
            stop(plain)
            stop(observed)
        log.flush()
        access_lines = sum(
            " rhetor.access " in line and " POST /message " in line
            for line in (Path(on_dir) / "rhetor.log").read_text().splitlines()
        )
    requests = sum(
        float(line.rsplit(" ", 1)[1])
        for line in page.splitlines()
        if line.startswith("rhetor_requests_total{") and 'route="/message"' in line
    )
    on_ratio, off_ratio = statistics.median(on_ratios), statistics.median(off_ratios)
    cpu_ratio = statistics.median(on / off for on, off in zip(on_cpu, off_cpu, strict=True))
    print(f"load generator: {'wrk' if shutil.which('wrk') else 'httpx'}; {DURATION}s per run")
    print(
        f"POST /message, 32 connections: observed {statistics.median(on_runs):.0f} req/s "
        f"(ratio {on_ratio:.3f}), plain {statistics.median(off_runs):.0f} req/s "
        f"(ratio {off_ratio:.3f}), bare {statistics.median(bare_runs):.0f} req/s"
    )
    print(
        f"server CPU per request: observed {statistics.median(on_cpu):.0f} us, "
        f"plain {statistics.median(off_cpu):.0f} us (x{cpu_ratio:.3f})"
    )
    print(f"access-log lines written: {access_lines}; /message requests counted: {requests:.0f}")
    print(f"total {time.perf_counter() - started:.1f}s")
    result = {
        "observed_rps": round(statistics.median(on_runs), 1),
        "plain_rps": round(statistics.median(off_runs), 1),
        "bare_rps": round(statistics.median(bare_runs), 1),
        "observed_ratio": round(on_ratio, 3),
        "plain_ratio": round(off_ratio, 3),
        "observed_vs_plain": round(statistics.median(pairs), 3),
        "cpu_per_request_ratio": round(cpu_ratio, 3),
        "access_lines": access_lines,
        "metrics_requests": round(requests),
    }
    print(json.dumps(result))


def _cpu_seconds(pid: int) -> float:
    """The process's user and system CPU time so far, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_per_request(proc: subprocess.Popen[str], url: str) -> tuple[float, float]:
    """One load run: requests per second, and the server's CPU microseconds per request."""
    before = _cpu_seconds(proc.pid)
    rps = load(f"{url}/message", 32)["rps"]
    used = _cpu_seconds(proc.pid) - before
    return rps, used / max(1.0, rps * DURATION) * 1e6


def _metrics_page(base_url: str) -> str:
    import httpx

    return httpx.get(f"{base_url}/metrics", timeout=10).text


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--bare-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ws-clients", nargs=2, metavar=("URL", "N"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--observability",
        action="store_true",
        help="compare Rhetor with logging at info and metrics on against neither",
    )
    args = parser.parse_args()
    if args.bare_server:
        bare_server()
    elif args.observability:
        observability()
    elif args.ws_clients:
        ws_clients(args.ws_clients[0], int(args.ws_clients[1]))
    else:
        main()
