"""
Benchmarks for the provider-side stream readers (a script, not a test).

Times how long one ``feed`` keeps the event loop busy, the thing a hostile or simply
verbose upstream controls, for Rhetor's readers and for a baseline: the quadratic
server-sent-event parser Rhetor used before (kept here verbatim), and httpx's
``LineDecoder`` (what ``aiter_lines`` used to read Ollama's NDJSON with).

Cases, each at two sizes so the growth shows (linear: twice the size, about twice
the time; on a shared machine expect noise of a few tens of percent):

- ``one chunk of many events``: 765 KB and 1.5 MB of small SSE events in one chunk
  (the issue measured 458 ms for 765 KB with the old parser);
- ``one event in 4 KB chunks``: a 2 MB and a 4 MB ``data:`` line, chunked;
- ``NDJSON in 4 KB chunks``: 765 KB and 1.5 MB of Ollama lines.

Times are the best of five runs, so that a noisy neighbour inflates none of them.
The deterministic proof of linearity is in ``tests/test_upstream.py``, which counts
the bytes searched and copied.

Prints a table, then as its last line one JSON object with the headline numbers.

Run: ``python benchmarks/streams.py`` (about 30 s; the old parser is the slow part).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx._decoders

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# The repository root has to be on sys.path before this import.
from rhetor.providers._wire import LineSplitter, ServerSentEvents

KB = 1024
REPEATS = 5


class QuadraticEvents:
    """
    The server-sent-event parser Rhetor had before, verbatim: the baseline.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._event = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[tuple[str, str]]:
        self._buffer += chunk
        events: list[tuple[str, str]] = []
        while (end := self._buffer.find(b"\n")) >= 0:
            line = self._buffer[:end].rstrip(b"\r").decode()
            self._buffer = self._buffer[end + 1 :]
            if not line:
                if self._data:
                    events.append((self._event or "message", "\n".join(self._data)))
                self._event, self._data = "", []
            elif not line.startswith(":"):
                field, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if field == "event":
                    self._event = value
                elif field == "data":
                    self._data.append(value)
        return events


def many_events(size: int) -> list[bytes]:
    event = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
    return [event * (size // len(event))]


def one_event(size: int) -> list[bytes]:
    body = b"data: " + b"x" * size + b"\n\n"
    return [body[i : i + 4 * KB] for i in range(0, len(body), 4 * KB)]


def ndjson(size: int) -> list[bytes]:
    line = b'{"model":"llama3.2","message":{"role":"assistant","content":"hi"},"done":false}\n'
    body = line * (size // len(line))
    return [body[i : i + 4 * KB] for i in range(0, len(body), 4 * KB)]


def worst_feed(make: Callable[[], Callable[[bytes], object]], chunks: list[bytes]) -> float:
    """
    The longest single feed, in ms (the longest the event loop is blocked), best of REPEATS.
    """
    best = float("inf")
    for _ in range(REPEATS):
        feed = make()
        worst = 0.0
        for chunk in chunks:
            start = time.perf_counter()
            feed(chunk)
            worst = max(worst, time.perf_counter() - start)
        best = min(best, worst)
    return best * 1000


def total(make: Callable[[], Callable[[bytes], object]], chunks: list[bytes]) -> float:
    """
    All feeds together, in ms, best of REPEATS.
    """
    best = float("inf")
    for _ in range(REPEATS):
        feed = make()
        start = time.perf_counter()
        for chunk in chunks:
            feed(chunk)
        best = min(best, time.perf_counter() - start)
    return best * 1000


def ndjson_baseline() -> Callable[[bytes], object]:
    decoder = httpx._decoders.LineDecoder()
    text = httpx._decoders.TextDecoder()
    return lambda chunk: [json.loads(line) for line in decoder.decode(text.decode(chunk))]


def ndjson_rhetor() -> Callable[[bytes], object]:
    lines = LineSplitter()
    return lambda chunk: [json.loads(line) for line in lines.feed(chunk)]


def main() -> None:
    cases: list[tuple[str, str, Callable[[int], list[bytes]], int, int, Callable[..., float]]] = [
        ("one chunk of many events", "sse_chunk", many_events, 765 * KB, 1530 * KB, worst_feed),
        ("one event in 4 KB chunks", "sse_event", one_event, 2048 * KB, 4096 * KB, total),
        ("NDJSON in 4 KB chunks", "ndjson", ndjson, 765 * KB, 1530 * KB, total),
    ]
    readers: dict[str, tuple[Callable[[], Callable[[bytes], object]], ...]] = {
        "sse_chunk": (lambda: QuadraticEvents().feed, lambda: ServerSentEvents().feed),
        "sse_event": (lambda: QuadraticEvents().feed, lambda: ServerSentEvents().feed),
        "ndjson": (ndjson_baseline, ndjson_rhetor),
    }
    results: dict[str, float] = {}
    print(f"{'case':<28} {'size':>7} {'baseline ms':>12} {'rhetor ms':>10} {'speed-up':>9}")
    for title, key, make_chunks, small, large, measure in cases:
        baseline, rhetor = readers[key]
        times = {}
        for label, size in (("small", small), ("large", large)):
            chunks = make_chunks(size)
            old, new = measure(baseline, chunks), measure(rhetor, chunks)
            times[label] = (old, new)
            print(f"{title:<28} {size // KB:>5}KB {old:>12.1f} {new:>10.1f} {old / new:>8.1f}x")
        growth_old = times["large"][0] / times["small"][0]
        growth_new = times["large"][1] / times["small"][1]
        ratio = large / small
        print(
            f"{'':<28} growth for x{ratio:.0f} size: baseline x{growth_old:.1f}, rhetor x{growth_new:.1f}"
        )
        results[f"{key}_baseline_ms"] = round(times["small"][0], 2)
        results[f"{key}_rhetor_ms"] = round(times["small"][1], 2)
        results[f"{key}_speedup"] = round(times["small"][0] / times["small"][1], 1)
        results[f"{key}_rhetor_growth"] = round(growth_new, 2)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
