"""
Benchmark the foundations of an upstream HTTP client: one call's cost on each.

Run: ``python benchmarks/transport.py`` (about 40 s). The lean upstream
(``benchmarks/_upstream.py``) runs in its own process and answers a canned chat
completion at once; each client here POSTs the same JSON body over keep-alive,
on trio:

- ``raw``: the request's bytes written and the reply read to its length on a
  trio socket stream (no HTTP library: the floor);
- ``h11``: h11 on a trio socket stream, one connection, reused;
- ``httpcore``: ``httpcore.AsyncConnectionPool`` used directly;
- ``httpx``: ``httpx.AsyncClient``;
- ``rhetor``: Rhetor's own pool (``rhetor.providers._http.HttpClient``), h11 on
  trio streams with timeouts, a bounded pool and stale-connection checks;
- ``openai_sdk``: ``openai.AsyncOpenAI().chat.completions.create``, for scale.

Each is measured sequentially (microseconds per call) and with 16 concurrent
callers (calls per second), over alternating rounds (medians). The last line is
JSON: each client's ``*_us`` and ``*_cps``, and ``rhetor_vs_h11`` and
``rhetor_vs_httpcore`` (ratios of calls per second at 16 callers).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from statistics import median

import trio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

BODY = json.dumps(
    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello, relay!"}]}
).encode()
SEQUENTIAL = 1500
CONCURRENT = 16
PER_TASK = 200
ROUNDS = 3

Call = Callable[[], Awaitable[bytes]]


async def raw_client(host: str, port: int) -> tuple[Call, Callable[[], Awaitable[None]]]:
    stream = await trio.open_tcp_stream(host, port)
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}:{port}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY
    buffer = bytearray()

    async def call() -> bytes:
        await stream.send_all(request)
        while (end := buffer.find(b"\r\n\r\n")) < 0:
            buffer.extend(await stream.receive_some(65536))
        head = bytes(buffer[:end]).lower()
        length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
        while len(buffer) < end + 4 + length:
            buffer.extend(await stream.receive_some(65536))
        body = bytes(buffer[end + 4 : end + 4 + length])
        del buffer[: end + 4 + length]
        return body

    return call, stream.aclose


async def h11_client(host: str, port: int) -> tuple[Call, Callable[[], Awaitable[None]]]:
    import h11

    stream = await trio.open_tcp_stream(host, port)
    conn = h11.Connection(h11.CLIENT)
    headers = [
        ("host", f"{host}:{port}"),
        ("content-type", "application/json"),
        ("content-length", str(len(BODY))),
    ]

    async def call() -> bytes:
        data = conn.send(h11.Request(method="POST", target="/v1/chat/completions", headers=headers))
        data += conn.send(h11.Data(data=BODY)) + conn.send(h11.EndOfMessage())
        await stream.send_all(data)
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
        conn.start_next_cycle()
        return bytes(body)

    return call, stream.aclose


async def httpcore_client(host: str, port: int) -> tuple[Call, Callable[[], Awaitable[None]]]:
    import httpcore

    pool = httpcore.AsyncConnectionPool(max_connections=CONCURRENT)
    url = f"http://{host}:{port}/v1/chat/completions"
    headers = [("content-type", "application/json")]

    async def call() -> bytes:
        response = await pool.request("POST", url, headers=headers, content=BODY)
        return response.content

    return call, pool.aclose


async def httpx_client(host: str, port: int) -> tuple[Call, Callable[[], Awaitable[None]]]:
    import httpx

    client = httpx.AsyncClient(limits=httpx.Limits(max_connections=CONCURRENT))
    url = f"http://{host}:{port}/v1/chat/completions"
    headers = {"content-type": "application/json"}

    async def call() -> bytes:
        response = await client.post(url, content=BODY, headers=headers)
        return response.content

    return call, client.aclose


async def rhetor_client(host: str, port: int) -> tuple[Call, Callable[[], Awaitable[None]]]:
    from rhetor.providers._http import HttpClient

    client = HttpClient(f"http://{host}:{port}/v1", max_connections=CONCURRENT)
    headers = (("content-type", "application/json"),)

    async def call() -> bytes:
        response = await client.request("POST", "/chat/completions", headers, BODY)
        return await response.read()

    return call, client.aclose


async def sdk_client(host: str, port: int) -> tuple[Call, Callable[[], Awaitable[None]]]:
    import openai

    client = openai.AsyncOpenAI(base_url=f"http://{host}:{port}/v1", api_key="k", max_retries=0)
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [
        {"role": "user", "content": "Hello, relay!"}
    ]

    async def call() -> bytes:
        completion = await client.chat.completions.create(model="gpt-4o-mini", messages=messages)
        return (completion.choices[0].message.content or "").encode()

    return call, client.close


CLIENTS = {
    "raw": raw_client,
    "h11": h11_client,
    "httpcore": httpcore_client,
    "httpx": httpx_client,
    "rhetor": rhetor_client,
    "openai_sdk": sdk_client,
}


async def measure(
    make: Callable[..., Awaitable[tuple[Call, Callable[[], Awaitable[None]]]]], port: int
) -> tuple[float, float]:
    """Microseconds per sequential call, and calls per second with concurrent callers."""
    call, close = await make("127.0.0.1", port)
    try:
        for _ in range(100):
            assert b"bench" in await call()
        started = time.perf_counter()
        for _ in range(SEQUENTIAL):
            await call()
        sequential = (time.perf_counter() - started) / SEQUENTIAL * 1e6
    finally:
        await close()
    if make is raw_client or make is h11_client:
        # One connection each: open one per caller.
        calls = [await make("127.0.0.1", port) for _ in range(CONCURRENT)]
    else:
        # One pooled client shared by every caller.
        calls = [await make("127.0.0.1", port)] * CONCURRENT

    async def caller(one: Call) -> None:
        for _ in range(PER_TASK):
            await one()

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for one, _ in calls:
            nursery.start_soon(caller, one)
    cps = CONCURRENT * PER_TASK / (time.perf_counter() - started)
    for _, closing in {id(c): c for c in calls}.values():
        await closing()
    return sequential, cps


def main() -> None:
    upstream = subprocess.Popen(
        [sys.executable, str(REPO / "benchmarks" / "_upstream.py")],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert upstream.stdout is not None
    port = int(upstream.stdout.readline().rsplit(":", 1)[1].split("/")[0])
    chosen = sys.argv[1:] or list(CLIENTS)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in chosen}
    try:
        for round_ in range(ROUNDS):
            names = chosen if round_ % 2 == 0 else chosen[::-1]
            for name in names:
                results[name].append(trio.run(measure, CLIENTS[name], port))
    finally:
        upstream.terminate()
        upstream.wait()
    summary: dict[str, float] = {}
    for name, runs in results.items():
        us = median(r[0] for r in runs)
        cps = median(r[1] for r in runs)
        print(
            f"{name:11} {us:7.0f} us/call sequential (runs {[round(r[0]) for r in runs]});"
            f" {cps:6.0f} calls/s at {CONCURRENT} callers"
        )
        summary[f"{name}_us"] = round(us, 1)
        summary[f"{name}_cps"] = round(cps, 1)
    if {"rhetor", "h11", "httpcore"} <= results.keys():
        summary["rhetor_vs_h11"] = round(summary["rhetor_cps"] / summary["h11_cps"], 3)
        summary["rhetor_vs_httpcore"] = round(summary["rhetor_cps"] / summary["httpcore_cps"], 3)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
