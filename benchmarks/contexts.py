"""
Benchmark conversations: POST /message with a context_id vs the same without one.

Run: ``python benchmarks/contexts.py`` (about 40 s). One Rhetor subprocess
(simulated provider, zero chunk delay); the load generator is ``wrk`` in its
own process (``apt-get install wrk``) or, without it, httpx processes.

A request with a ``context_id`` costs two more ContextStore asks than one
without: ``GetWindow`` (the windowed history, with its token cost) before the
provider call, and ``AppendTurns`` (which also answers whether a summary is
due) after it. The appended turn must be stored before the reply goes out. The requests are
spread over 64 contexts, whose histories grow during the run (each stays
under the 8,000-token window, so no summaries run).

It reports requests per second at 32 connections for both kinds, alternating
over three rounds (medians), and p50/p99 at one connection for the context
requests. The last line is JSON: context_rps, plain_rps, rps_ratio,
context_p50_ms, context_p99_ms. There is no issue target. Before the
ContextStore answered windows from memory (three worker-thread round trips
per request instead of one) the ratio was about 0.24; about 0.5 with that
cache, and about 0.75 since appends commit on the event loop and the
Router asks twice instead of three times.
Context throughput falls from round to round as the histories, and so the
windows sent to the provider, grow.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time

import _load  # benchmarks/_load.py, beside this script
import edge  # the Rhetor subprocess helpers

BODY = {"message": "Hello, Rhetor!", "task_type": "chat"}
CONTEXTS = 64
DURATION = 4
ROUNDS = 3


def load(url: str, connections: int, *, contexts: bool) -> dict[str, float]:
    vary = ("context_id", CONTEXTS) if contexts else None
    return _load.load(url, BODY, connections, DURATION, threads=2, vary=vary)


def main() -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as data_dir:
        rhetor, base = edge.start_rhetor(data_dir)
        url = f"{base}/message"
        try:
            load(url, 8, contexts=False)  # warm up
            load(url, 8, contexts=True)
            ratios, with_context, plain = [], [], []
            for _ in range(ROUNDS):
                with_context.append(load(url, 32, contexts=True)["rps"])
                plain.append(load(url, 32, contexts=False)["rps"])
                ratios.append(with_context[-1] / plain[-1])
                print(f"  round: with context {with_context[-1]:.0f}, plain {plain[-1]:.0f} req/s")
            latency = load(url, 1, contexts=True)
        finally:
            edge.stop(rhetor)
    tool = "wrk" if _load.shutil.which("wrk") else "httpx (wrk not found)"
    print(f"load generator: {tool}; {DURATION}s per run; {CONTEXTS} contexts")
    print(
        f"POST /message, 32 connections: with context {statistics.median(with_context):.0f} "
        f"req/s, plain {statistics.median(plain):.0f} req/s"
    )
    print(
        f"with context, 1 connection: p50 {latency['p50_ms']:.2f} ms, "
        f"p99 {latency['p99_ms']:.2f} ms"
    )
    print(f"total {time.perf_counter() - started:.1f}s")
    result = {
        "context_rps": round(statistics.median(with_context), 1),
        "plain_rps": round(statistics.median(plain), 1),
        "rps_ratio": round(statistics.median(ratios), 3),
        "context_p50_ms": round(latency["p50_ms"], 3),
        "context_p99_ms": round(latency["p99_ms"], 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
