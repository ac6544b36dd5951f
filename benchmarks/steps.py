"""
Count what one request costs at one connection: CPU, trio scheduler rounds, task steps.

Run: ``python benchmarks/steps.py`` (about fifteen seconds). Each server runs in its
own process with a trio Instrument counting scheduler rounds (``before_io_wait``),
task steps by task and tasks spawned; one keep-alive connection on a raw socket
sends the same request 600 times, the first 100 a warm-up, and the counts and the
server's CPU (``/proc``) cover the other 500. Targets, in this order:

- ``bare``: an ASGI app that answers at once, on Hypercorn as released;
- ``bare_adjusted``: the same app on Hypercorn with Rhetor's adjustments
  (``rhetor/edge/_hypercorn.py``);
- ``message``: Rhetor's ``POST /message`` on the simulated provider;
- ``relay``: Rhetor's ``POST /v1/chat/completions`` relayed to a canned upstream
  (nginx when installed, else ``benchmarks/_upstream.py``).

At one connection nothing is shared between requests, so every round and step
is that request's own, and its latency is about its CPU. The instrument itself
runs at every step, so the CPU figures are higher than uninstrumented ones:
compare them within one run. It shows where the
per-request machinery goes (see docs/providers.md), which the throughput
benchmarks only show in sum. The last line is JSON: per target ``*_cpu_us``,
``*_rounds``, ``*_steps`` and ``*_spawns`` a request, and the ratios
``message_vs_bare_cpu`` and ``adjusted_vs_bare_cpu``. No target: a measuring
instrument.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _servers import started, stop
from relay import rhetor_env as rhetor_env_for
from relay import start_upstream

HERE = Path(__file__).resolve().parent
WARMUP = 100
COUNTED = 500
_REPLY_BODY = b'{"model":"simulated-echo","message":"Hello"}'


# -- inside a measured server ------------------------------------------------------------


def _instrumented(out: str) -> None:
    """Make every later ``trio.run`` count rounds, steps and spawns; SIGUSR1 writes and resets."""
    import trio
    import trio.abc

    class Count(trio.abc.Instrument):
        def __init__(self) -> None:
            self.steps: collections.Counter[str] = collections.Counter()
            self.spawned = 0
            self.rounds = 0

        def before_task_step(self, task: trio.lowlevel.Task) -> None:
            self.steps[task.name.split(".<locals>")[0]] += 1

        def task_spawned(self, task: trio.lowlevel.Task) -> None:
            self.spawned += 1

        def before_io_wait(self, timeout: float) -> None:
            self.rounds += 1

    count = Count()

    def dump(*_: Any) -> None:
        Path(out).write_text(
            json.dumps(
                {"rounds": count.rounds, "spawned": count.spawned, "steps": dict(count.steps)}
            )
        )
        count.steps.clear()
        count.spawned = count.rounds = 0

    signal.signal(signal.SIGUSR1, dump)
    run = trio.run

    def counted_run(*args: Any, **kwargs: Any) -> Any:
        kwargs["instruments"] = [*kwargs.get("instruments", ()), count]
        return run(*args, **kwargs)

    trio.run = counted_run


def bare_server(adjusted: bool) -> None:
    """A bare ASGI app answering at once, on Hypercorn (adjusted as Rhetor adjusts it, or not)."""
    from relay import http_only, serve_on_hypercorn

    if adjusted:
        from rhetor.edge._hypercorn import adjust_hypercorn

        adjust_hypercorn()

    async def answer(scope: Any, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(_REPLY_BODY)),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": _REPLY_BODY})

    serve_on_hypercorn(http_only(answer))


# -- the driver ----------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _exchange(sock: socket.socket, request: bytes) -> None:
    sock.sendall(request)
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        data = sock.recv(65536)
        if not data:
            raise SystemExit("the server closed the connection")
        buffer += data
    head, _, rest = buffer.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"the server answered {head[:80]!r}")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(rest) < length:
        rest += sock.recv(65536)


def measure(proc: Any, url: str, path: str, body: dict[str, Any], out: Path) -> dict[str, Any]:
    """One connection, WARMUP + COUNTED requests; answer the counted ones' costs a request."""
    host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    data = json.dumps(body).encode()
    request = (
        f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\nauthorization: Bearer sk-bench\r\n"
        f"content-type: application/json\r\ncontent-length: {len(data)}\r\n\r\n"
    ).encode() + data
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(WARMUP):
            _exchange(sock, request)
        out.unlink(missing_ok=True)
        proc.send_signal(signal.SIGUSR1)  # reset the counts
        while not out.exists():
            time.sleep(0.01)
        cpu = _cpu_seconds(proc.pid)
        started_at = time.perf_counter()
        for _ in range(COUNTED):
            _exchange(sock, request)
        wall = time.perf_counter() - started_at
        cpu = _cpu_seconds(proc.pid) - cpu
        out.unlink()
        proc.send_signal(signal.SIGUSR1)
        while not out.exists():
            time.sleep(0.01)
        time.sleep(0.05)
    counts = json.loads(out.read_text())
    steps: dict[str, int] = counts["steps"]
    return {
        "cpu_us": round(cpu / COUNTED * 1e6),
        "wall_us": round(wall / COUNTED * 1e6),
        "rounds": round(counts["rounds"] / COUNTED, 1),
        "steps": round(sum(steps.values()) / COUNTED, 1),
        "spawns": round(counts["spawned"] / COUNTED, 1),
        "by_task": {
            name: round(n / COUNTED, 1)
            for name, n in sorted(steps.items(), key=lambda kv: -kv[1])
            if n >= COUNTED / 2
        },
    }


def main(python_upstream: bool) -> None:
    t0 = time.perf_counter()
    nginx = not python_upstream and shutil.which("nginx") is not None
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as where:
        out = Path(where) / "counts.json"
        env = {**os.environ, "STEPS_OUT": str(out)}
        me = [sys.executable, __file__]
        for name, flags in (("bare", ["--bare"]), ("bare_adjusted", ["--bare", "--adjusted"])):
            proc, url = started([*me, *flags], env)
            try:
                results[name] = measure(proc, url, "/x", {"a": 1}, out)
            finally:
                stop(proc)
        upstream, upstream_url = start_upstream(nginx)
        data_dir = Path(where) / "data"
        data_dir.mkdir()
        rhetor_env = {**rhetor_env_for(str(data_dir), upstream_url), "STEPS_OUT": str(out)}
        try:
            rhetor, rhetor_url = started([*me, "--rhetor"], rhetor_env, cwd=str(data_dir))
            try:
                results["message"] = measure(
                    rhetor,
                    rhetor_url,
                    "/message",
                    {"message": "Hello, relay!", "model": "simulated-echo"},
                    out,
                )
                results["relay"] = measure(
                    rhetor,
                    rhetor_url,
                    "/v1/chat/completions",
                    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]},
                    out,
                )
            finally:
                stop(rhetor)
        finally:
            stop(upstream)
    print(f"one connection, {COUNTED} requests each; upstream: {'nginx' if nginx else 'python'}")
    for name, r in results.items():
        print(
            f"{name:14} {r['cpu_us']:5d} us CPU ({r['wall_us']} us wall), {r['rounds']} rounds,"
            f" {r['steps']} task steps, {r['spawns']} spawns a request"
        )
        for task, n in r["by_task"].items():
            print(f"{'':16}{n:5.1f}  {task}")
    print(f"total {time.perf_counter() - t0:.1f}s")
    summary: dict[str, Any] = {"upstream": "nginx" if nginx else "python"}
    for name, r in results.items():
        for key in ("cpu_us", "rounds", "steps", "spawns"):
            summary[f"{name}_{key}"] = r[key]
    summary["message_vs_bare_cpu"] = round(
        results["message"]["cpu_us"] / results["bare"]["cpu_us"], 3
    )
    summary["adjusted_vs_bare_cpu"] = round(
        results["bare_adjusted"]["cpu_us"] / results["bare"]["cpu_us"], 3
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1] if __doc__ else None)
    parser.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--adjusted", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rhetor", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--python-upstream", action="store_true", help="the Python upstream even if nginx is here"
    )
    args = parser.parse_args()
    if args.bare or args.rhetor:
        # This folder's actors.py must not hide the actors package: it goes last.
        sys.path.remove(str(HERE))
        sys.path.append(str(HERE))
        _instrumented(os.environ["STEPS_OUT"])
    if args.bare:
        bare_server(args.adjusted)
    elif args.rhetor:
        from rhetor.__main__ import main as rhetor_main

        sys.argv = ["rhetor", "serve"]
        rhetor_main()
    else:
        main(args.python_upstream)
