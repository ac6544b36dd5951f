"""
The HTTP load generators the benchmarks share.

``load()`` uses ``wrk`` (Debian's package; ``apt-get install wrk``) in its
own process when it is installed, and otherwise processes of httpx clients
(slower, but enough to compare two servers in the same run). Each answers
``{"rps", "p50_ms", "p99_ms"}`` for POSTing one JSON body. With
``vary=(field, n)`` each request sets ``field`` to one of ``n`` values in
turn (``"v0"`` ... ``"v{n-1}"``), e.g. to spread requests over contexts.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from typing import Any

__all__ = ["httpx_load", "load", "wrk"]


def load(
    url: str,
    body: Mapping[str, Any],
    connections: int,
    duration: int,
    *,
    headers: Mapping[str, str] | None = None,
    threads: int = 1,
    vary: tuple[str, int] | None = None,
) -> dict[str, float]:
    """POST ``body`` to ``url`` from ``connections`` connections for ``duration`` seconds."""
    if shutil.which("wrk"):
        return wrk(url, body, connections, duration, headers=headers, threads=threads, vary=vary)
    return httpx_load(url, body, connections, duration, headers=headers, vary=vary)


def wrk(
    url: str,
    body: Mapping[str, Any],
    connections: int,
    duration: int,
    *,
    headers: Mapping[str, str] | None = None,
    threads: int = 1,
    vary: tuple[str, int] | None = None,
) -> dict[str, float]:
    """Run wrk against POST url; answers rps, p50_ms, p99_ms."""
    lines = [
        'wrk.method = "POST"',
        f"wrk.body = {json.dumps(json.dumps(body))}",
        'wrk.headers["Content-Type"] = "application/json"',
        *(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in (headers or {}).items()),
    ]
    if vary is not None:
        # The body with the field last, so each request only appends its value.
        field, n = vary
        head = json.dumps({k: v for k, v in body.items() if k != field})[:-1]
        lines += [
            "counter = 0",
            "request = function()",
            "  counter = counter + 1",
            f"  local value = 'v' .. (counter % {int(n)})",
            f"  local b = {json.dumps(head)} .. ', \"{field}\": \"' .. value .. '\"}}'",
            "  return wrk.format(nil, nil, nil, b)",
            "end",
        ]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write("\n".join(lines) + "\n")
    try:
        out = subprocess.run(
            [
                "wrk",
                f"-t{min(threads, connections)}",
                f"-c{connections}",
                f"-d{duration}s",
                "--latency",
                "-s",
                script.name,
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(script.name)
    if "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk saw errors against {url}:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(p: str) -> float:
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        assert m is not None, out
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    return {"rps": rps, "p50_ms": pct("50"), "p99_ms": pct("99")}


def _httpx_worker(
    url: str,
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    connections: int,
    duration: float,
    out: Any,
    vary: tuple[str, int] | None = None,
) -> None:
    import httpx
    import trio

    latencies: list[float] = []
    counter = itertools.count()

    async def one(client: httpx.AsyncClient, end: float) -> None:
        while time.perf_counter() < end:
            t = time.perf_counter()
            payload = dict(body)
            if vary is not None:
                payload[vary[0]] = f"v{next(counter) % vary[1]}"
            r = await client.post(url, json=payload, headers=headers)
            r.raise_for_status()
            latencies.append(time.perf_counter() - t)

    async def main() -> None:
        limits = httpx.Limits(max_connections=connections)
        async with httpx.AsyncClient(limits=limits, verify=False) as client:
            end = time.perf_counter() + duration
            async with trio.open_nursery() as nursery:
                for _ in range(connections):
                    nursery.start_soon(one, client, end)

    trio.run(main)
    out.put(latencies)


def httpx_load(
    url: str,
    body: Mapping[str, Any],
    connections: int,
    duration: int,
    *,
    headers: Mapping[str, str] | None = None,
    vary: tuple[str, int] | None = None,
) -> dict[str, float]:
    """The fallback load generator: processes of httpx clients (slower than wrk)."""
    procs = max(1, min(4, connections // 8))
    queue: Any = multiprocessing.Queue()
    args = (url, dict(body), dict(headers or {}), max(1, connections // procs), duration, queue)
    args += (vary,)
    workers = [multiprocessing.Process(target=_httpx_worker, args=args) for _ in range(procs)]
    for w in workers:
        w.start()
    latencies = sorted(x for _ in workers for x in queue.get())
    for w in workers:
        w.join()
    n = len(latencies)
    return {
        "rps": n / duration,
        "p50_ms": latencies[n // 2] * 1000,
        "p99_ms": latencies[min(n - 1, int(n * 0.99))] * 1000,
    }
