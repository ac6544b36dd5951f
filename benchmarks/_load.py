"""
The HTTP load generators the benchmarks share.

``load()`` uses ``wrk`` (Debian's package; ``apt-get install wrk``) in its
own process when it is installed, and otherwise processes of httpx clients
(slower, but enough to compare two servers in the same run). Each answers
``{"rps", "p50_ms", "p99_ms"}`` for POSTing one JSON body. ``lean()`` is a
third, a keep-alive client on bare sockets in the calling process, for
benchmarks where the load generator must cost far less than the servers it
drives (about a tenth of httpx's CPU per request). With
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
from urllib.parse import urlsplit

__all__ = ["httpx_load", "lean", "load", "wrk"]

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)


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


def lean(url: str, body: Mapping[str, Any], connections: int, duration: float) -> dict[str, float]:
    """
    POST ``body`` to ``url`` over ``connections`` keep-alive sockets for ``duration`` seconds.

    One trio task per connection writes a prepared request and reads the
    answer's head and ``content-length`` bytes; anything but a 200 raises
    ``SystemExit``. Answers rps, p50_ms and p99_ms, like :func:`load`.
    """
    import trio

    target = urlsplit(url)
    data = json.dumps(body).encode()
    request = (
        f"POST {target.path or '/'} HTTP/1.1\r\nHost: {target.netloc}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    ).encode() + data
    latencies: list[float] = []

    async def connection(end: float) -> None:
        stream = await trio.open_tcp_stream(target.hostname or "127.0.0.1", target.port or 80)
        buffer = bytearray()
        async with stream:
            while time.perf_counter() < end:
                started = time.perf_counter()
                await stream.send_all(request)
                while (head_end := buffer.find(b"\r\n\r\n")) < 0:
                    buffer += await _some(stream, url)
                head = bytes(buffer[:head_end])
                if not head.startswith(b"HTTP/1.1 200"):
                    raise SystemExit(f"{url} answered {head[:80]!r}")
                length = _CONTENT_LENGTH.search(head)
                total = head_end + 4 + (int(length.group(1)) if length else 0)
                while len(buffer) < total:
                    buffer += await _some(stream, url)
                del buffer[:total]
                latencies.append(time.perf_counter() - started)

    async def main() -> None:
        end = time.perf_counter() + duration
        async with trio.open_nursery() as nursery:
            for _ in range(connections):
                nursery.start_soon(connection, end)

    started = time.perf_counter()
    trio.run(main)
    elapsed = time.perf_counter() - started
    latencies.sort()
    n = len(latencies)
    return {
        "rps": n / elapsed,
        "p50_ms": latencies[n // 2] * 1000,
        "p99_ms": latencies[min(n - 1, int(n * 0.99))] * 1000,
    }


async def _some(stream: Any, url: str) -> bytes:
    data: bytes = await stream.receive_some(65536)
    if not data:
        raise SystemExit(f"{url} closed a connection mid-answer")
    return data
