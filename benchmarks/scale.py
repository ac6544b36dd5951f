"""
Benchmark scaling: POST /message on one SQLite process, one PostgreSQL process and two PostgreSQL workers.

Run: ``python benchmarks/scale.py`` (about two and a half minutes). It needs
the PostgreSQL the tests use (``RHETOR_TEST_DATABASE_URL``, else
``postgresql://postgres@127.0.0.1:5432/postgres``), where it creates a
database of its own and drops it at the end. Every server is a real
``python -m rhetor serve`` subprocess (``--workers 2`` for the last) on the
simulated provider with a price (so every request reserves and settles in
the ledger) under ``enforce`` with a limit it never reaches. The load
generator is ``wrk`` when installed, else :func:`_load.lean` (bare
keep-alive sockets in this process).

Throughput is capacity: each setup is measured at 32 and at 96 connections
(``--connections 32,96``), and its throughput is the better of the two. At
32 connections two workers have 16 each, and a worker's requests all wait
on the same group commits at times, so neither core is full (about 1.7 of
2 busy); at 96 each group commit carries more requests and both are. One
process is full at either. Every level's figures are printed and in the
JSON line, so the fixed-concurrency numbers are there too. Each run also
reports how many of the machine's cores were busy (from ``/proc/stat``): on
a small machine Rhetor, PostgreSQL and the load generator share them, and a
second worker can only scale as far as idle cores allow.

It reports:

- requests per second of each setup, in alternating rounds (medians), and
  the ratios against the baseline measured in the same run: ``pg1_rps``
  against ``sqlite_rps`` (target >= 0.8) and ``pg2_rps`` against
  ``pg1_rps``, the scaling of two workers (target >= 1.6);
- overspend under contention: two workers and a limit that a tenth of a
  burst of requests already fills, then the ledger's total against it
  (target 0).

The ledger is emptied between setups, so that none of them sums the spend
of another. The last line is JSON: sqlite_rps, pg1_rps, pg2_rps (each at
its best), scaling_2w, scaling_bound (the machine's cores over the cores
busy while one worker runs: what two workers could reach at most, with every
core busy at one worker's machine CPU per request), pg1_vs_sqlite,
overspend, connections (the levels), and for each setup the level of its
best (``pg2_connections``), the cores busy and microseconds of CPU a request
in Rhetor's processes and in PostgreSQL's there (``pg2_cores``,
``pg2_rhetor_us``, ``pg2_postgres_us``), and its req/s at every level
(``pg2_rps_at_32``). On a shared machine the numbers swing; compare the
ratios of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import _load  # benchmarks/_load.py, beside this script
import attrs
import psycopg
from _servers import started, stop
from psycopg import sql

BODY = {"message": "Hello, Rhetor!", "max_tokens": 50}
PRICE = {"input_per_mtok": 1.0, "output_per_mtok": 1.0}
# The concurrencies each setup is measured at; its throughput is its best.
CONNECTIONS = (32, 96)
DURATION = 5
ROUNDS = 3
# The contention run: concurrent requests, and a limit a tenth of them fill.
BURST = 600
ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


# -- the database ------------------------------------------------------------------------


@contextmanager
def database() -> Iterator[str]:
    """A database of this run's own on the tests' server; answers its URL, drops it after."""
    admin = os.environ.get("RHETOR_TEST_DATABASE_URL") or ADMIN
    name = f"rhetor_bench_scale_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = urlunsplit(urlsplit(admin)._replace(path=f"/{name}"))
    try:
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def empty_ledger(url: str) -> None:
    """Forget every charge and reservation (the schema stays): the next setup starts even."""
    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('rhetor.entries') IS NOT NULL").fetchone()
        if exists and exists[0]:
            # spend_hours and spend_days are the rollups that triggers keep from
            # entries; TRUNCATE fires none.
            conn.execute(
                "TRUNCATE rhetor.entries, rhetor.reservations, rhetor.limits,"
                " rhetor.spend_hours, rhetor.spend_days"
            )


def spent(url: str) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT COALESCE(SUM(cost), 0) FROM rhetor.entries").fetchone()
    return float(row[0]) if row else 0.0


# -- servers as subprocesses ---------------------------------------------------------------


def start(
    workdir: str, prices: Path, limit: float, database_url: str | None, workers: int = 1
) -> tuple[subprocess.Popen[str], str]:
    """``rhetor serve`` (with ``--workers``) on a free port; answers the process and its URL."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RHETOR_", "OPENAI_", "ANTHROPIC_", "PROMETHEUS_"))
    }
    env.update(
        RHETOR_PORT="0",
        RHETOR_HOST_BIND="127.0.0.1",
        RHETOR_DATA_DIR=str(Path(workdir) / "data"),
        RHETOR_SIMULATED="always",
        RHETOR_SIMULATED_CHUNK_DELAY="0",
        RHETOR_PRICE_OVERRIDES=str(prices),
        RHETOR_BUDGET_POLICY="enforce",
        RHETOR_BUDGET_DAILY_LIMIT=repr(limit),
        HERMES_API_URL="",
        OLLAMA_BASE_URL="http://127.0.0.1:9",
    )
    if database_url:
        env["RHETOR_DATABASE_URL"] = database_url
    return started(
        [sys.executable, "-m", "rhetor", "serve", "--workers", str(workers)], env, cwd=workdir
    )


def busy_cores() -> tuple[float, float]:
    """The machine's busy CPU time and wall time so far, in seconds (from /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK"), time.monotonic()


def process_cpu(rhetor_pid: int) -> dict[str, float]:
    """
    CPU seconds so far of Rhetor (the process ``rhetor_pid`` and its children:
    the workers) and of PostgreSQL (every process named ``postgres``), from /proc.
    """
    tick = os.sysconf("SC_CLK_TCK")
    totals = {"rhetor": 0.0, "postgres": 0.0}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        pid, parent = int(entry.name), int(fields[1])
        seconds = (int(fields[11]) + int(fields[12])) / tick
        if rhetor_pid in (pid, parent):
            totals["rhetor"] += seconds
        elif name.startswith("postgres"):
            totals["postgres"] += seconds
    return totals


def load(url: str, connections: int, duration: float = DURATION) -> float:
    if shutil.which("wrk"):
        return _load.wrk(url, BODY, connections, max(1, round(duration)), threads=2)["rps"]
    return _load.lean(url, BODY, connections, duration)["rps"]


# -- the setups ---------------------------------------------------------------------------

SETUPS = ("sqlite", "pg1", "pg2")


@attrs.define
class Level:
    """One setup at one concurrency: each round's req/s, cores busy and CPU a request."""

    rps: list[float] = attrs.Factory(list)
    cores: list[float] = attrs.Factory(list)
    # Microseconds of CPU a request: Rhetor's processes', PostgreSQL's.
    cpu: list[tuple[float, float]] = attrs.Factory(list)

    def measure(self, url: str, connections: int, pid: int) -> None:
        cpu, wall = busy_cores()
        own = process_cpu(pid)
        self.rps.append(load(url, connections))
        own_after = process_cpu(pid)
        cpu_after, wall_after = busy_cores()
        self.cores.append((cpu_after - cpu) / (wall_after - wall))
        served = self.rps[-1] * (wall_after - wall)
        self.cpu.append(
            (
                (own_after["rhetor"] - own["rhetor"]) / served * 1e6,
                (own_after["postgres"] - own["postgres"]) / served * 1e6,
            )
        )

    def summary(self) -> dict[str, float]:
        return {
            "rps": statistics.median(self.rps),
            "cores": statistics.median(self.cores),
            "rhetor_us": statistics.median(c[0] for c in self.cpu),
            "postgres_us": statistics.median(c[1] for c in self.cpu),
        }


def throughput(
    workdir: str, prices: Path, url: str, levels: list[int]
) -> dict[str, dict[int, dict[str, float]]]:
    """
    Each setup at each concurrency, in alternating rounds (one server a setup
    a round, measured at every level in turn); answers the medians, by setup
    and level.
    """
    setups = {"sqlite": (None, 1), "pg1": (url, 1), "pg2": (url, 2)}
    runs = {name: {level: Level() for level in levels} for name in setups}
    for round_number in range(ROUNDS):
        for name, (database_url, workers) in setups.items():
            empty_ledger(url)
            with tempfile.TemporaryDirectory(dir=workdir) as own:
                proc, base = start(own, prices, 1e9, database_url, workers)
                try:
                    load(f"{base}/message", 8, 1.0)  # warm up
                    for level in levels:
                        runs[name][level].measure(f"{base}/message", level, proc.pid)
                finally:
                    stop(proc, grace=30)  # workers take longer to stop than one process
        print(
            f"  round {round_number + 1}: "
            + "; ".join(
                f"{name} "
                + ", ".join(
                    f"{runs[name][level].rps[-1]:.0f} req/s at {level}"
                    f" ({runs[name][level].cores[-1]:.2f} cores busy)"
                    for level in levels
                )
                for name in setups
            ),
            flush=True,
        )
    return {name: {level: runs[name][level].summary() for level in levels} for name in setups}


def contention(workdir: str, prices: Path, url: str) -> tuple[float, float, int]:
    """Two workers, a burst, a small limit: answers (spent, limit, replies granted)."""
    empty_ledger(url)
    # What a reply costs here, measured, so that the limit is a tenth of the burst.
    with tempfile.TemporaryDirectory(dir=workdir) as own:
        proc, base = start(own, prices, 1e9, url, 2)
        try:
            burst(f"{base}/message", 20)
        finally:
            stop(proc, grace=30)  # workers take longer to stop than one process
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT AVG(cost) FROM rhetor.entries").fetchone()
    per_reply = float(row[0]) if row and row[0] else 1e-4
    limit = per_reply * BURST / 10
    empty_ledger(url)
    with tempfile.TemporaryDirectory(dir=workdir) as own:
        proc, base = start(own, prices, limit, url, 2)
        try:
            granted = burst(f"{base}/message", BURST)
        finally:
            stop(proc, grace=30)  # workers take longer to stop than one process
    return spent(url), limit, granted


def burst(url: str, count: int) -> int:
    """``count`` requests at once, each on its own connection; answers how many got a 200."""
    import trio

    target = urlsplit(url)
    data = json.dumps(BODY).encode()
    request = (
        f"POST {target.path} HTTP/1.1\r\nHost: {target.netloc}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    ).encode() + data
    statuses: list[bytes] = []

    async def one() -> None:
        stream = await trio.open_tcp_stream(target.hostname or "127.0.0.1", target.port or 80)
        async with stream:
            await stream.send_all(request)
            answer = b""
            # The head is enough: its status is all this counts.
            while b"\r\n\r\n" not in answer:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                answer += chunk
        statuses.append(answer[9:12])

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(count):
                nursery.start_soon(one)

    trio.run(main)
    unexpected = {s for s in statuses if s not in (b"200", b"402")}
    if unexpected:
        raise SystemExit(f"the burst got answers other than 200 and 402: {unexpected}")
    return statuses.count(b"200")


# -- main ----------------------------------------------------------------------------------


def main(levels: list[int]) -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir, database() as url:
        prices = Path(workdir) / "prices.json"
        prices.write_text(json.dumps({"simulated-echo": PRICE, "simulated-summary": PRICE}))
        measured = throughput(workdir, prices, url, levels)
        total, limit, granted = contention(workdir, prices, url)
    tool = "wrk" if shutil.which("wrk") else "lean sockets (wrk not found)"
    # Each setup's throughput is its best over the concurrencies: its capacity.
    best = {
        name: max(by_level.values(), key=lambda m: m["rps"]) for name, by_level in measured.items()
    }
    at = {
        name: next(level for level, m in by_level.items() if m is best[name])
        for name, by_level in measured.items()
    }
    rps = {name: best[name]["rps"] for name in SETUPS}
    scaling = rps["pg2"] / rps["pg1"]
    # What two workers could reach at most on this machine: every core busy
    # at one worker's machine CPU (Rhetor, PostgreSQL, wrk) per request.
    cores = os.cpu_count() or 1
    pg1_cores = best["pg1"]["cores"]
    bound = cores / pg1_cores if pg1_cores else float("inf")
    pg_vs_sqlite = rps["pg1"] / rps["sqlite"]
    overspend = max(0.0, total - limit)
    print(f"load generator: {tool}; {', '.join(map(str, levels))} connections, {DURATION}s per run")
    print(f"machine: {cores} cores")
    for name in SETUPS:
        print(
            f"{name}: "
            + "; ".join(
                f"{level} connections {m['rps']:.0f} req/s, {m['cores']:.2f} cores busy"
                f" (everything: Rhetor, PostgreSQL, the load generator), CPU a request"
                f" {m['rhetor_us']:.0f} us Rhetor / {m['postgres_us']:.0f} us PostgreSQL"
                for level, m in measured[name].items()
            )
        )
    print(
        f"POST /message, each setup at its best: sqlite {rps['sqlite']:.0f} (at {at['sqlite']}),"
        f" pg1 {rps['pg1']:.0f} (at {at['pg1']}), pg2 {rps['pg2']:.0f} (at {at['pg2']}) req/s"
    )
    print(
        f"pg1 / sqlite {pg_vs_sqlite:.2f} (target >= 0.8); pg2 / pg1 {scaling:.2f} (target >= 1.6;"
        f" at most {bound:.2f} here: {cores} cores over the {pg1_cores:.2f} one worker keeps busy)"
    )
    print(
        f"contention: {BURST} requests at once on two workers, limit ${limit:.6f}:"
        f" {granted} answered, spent ${total:.6f}, overspend ${overspend:.6f} (target 0)"
    )
    if granted == 0:
        # A burst the limit refused whole proves nothing about overspend.
        print("warning: the contention run granted no request; its overspend of 0 is vacuous")
    print(f"total {time.perf_counter() - started:.1f}s")
    result: dict[str, object] = {
        "sqlite_rps": round(rps["sqlite"], 1),
        "pg1_rps": round(rps["pg1"], 1),
        "pg2_rps": round(rps["pg2"], 1),
        "scaling_2w": round(scaling, 3),
        "scaling_bound": round(bound, 3),
        "pg1_vs_sqlite": round(pg_vs_sqlite, 3),
        "overspend": round(overspend, 9),
        "contention_granted": granted,
        "cores": cores,
        "connections": levels,
    }
    for name in SETUPS:
        result[f"{name}_connections"] = at[name]
        result[f"{name}_cores"] = round(best[name]["cores"], 3)
        result[f"{name}_rhetor_us"] = round(best[name]["rhetor_us"])
        result[f"{name}_postgres_us"] = round(best[name]["postgres_us"])
        for level, m in measured[name].items():
            result[f"{name}_rps_at_{level}"] = round(m["rps"], 1)
    print(json.dumps(result))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument(
        "--connections",
        default=",".join(map(str, CONNECTIONS)),
        help="the concurrencies to measure at, comma-separated (default: %(default)s)",
    )
    arguments = parser.parse_args()
    main([int(level) for level in arguments.connections.split(",")])
