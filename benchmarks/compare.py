"""
Compare this checkout's relay (or ``/message``) with another git revision's, both up at once.

Run: ``python benchmarks/compare.py REV`` (about a minute and a half with the
defaults), e.g. ``python benchmarks/compare.py HEAD~1`` before landing a
performance change. ``python benchmarks/compare.py HEAD`` is the control: the
same code on both sides, which should read about 1.0; its spread is the
smallest change this machine can show.

Why: on a shared 2-core VM one server's throughput swings by several per cent
from one run to the next (identical code has read 1,161 and 1,507 req/s
eight-second runs apart), so measuring one version after the other hides any
change under about 5 %. Here both versions serve at once from their own
processes against one canned upstream (nginx when installed, as relay.py), and
short load runs (``--seconds``, 32 connections, ``wrk`` when installed)
alternate between them for ``--rounds`` rounds, the order swapped every round;
each side's result is the median of its rounds, so a slow moment costs both.
The revision is checked out into a temporary git worktree (removed at the
end) and served with its own code on ``PYTHONPATH``, in this checkout's
Python environment.

``--route message`` compares ``POST /message`` on the simulated provider
instead of the ``/v1/chat/completions`` relay. ``--env K=V`` and
``--base-env K=V`` set a variable for this checkout's or the base's server
only, e.g. ``--env RHETOR_METRICS=0`` to price the metrics on the same code.

Prints every round, then the medians; the last line is JSON: base, route,
rounds, seconds, base_rps, head_rps, ratio (head over base), base_cpu_us and
head_cpu_us (each server's CPU per request, medians, from ``/proc``). No
target: an instrument.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

import _load  # benchmarks/_load.py, beside this script
from _servers import REPO, started, stop
from relay import HEADERS, RELAY_BODY, SIMULATED_BODY, rhetor_env, start_upstream

CONNECTIONS = 32


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_rhetor_from(code: Path, upstream: str, extra: dict[str, str]) -> tuple[Any, str]:
    """``rhetor serve`` with ``code`` on PYTHONPATH (relay.py's settings, plus ``extra``)."""
    data_dir = tempfile.mkdtemp(prefix="rhetor-compare-")
    env = {**rhetor_env(data_dir, upstream), **extra}
    proc, url = started([sys.executable, "-m", "rhetor", "serve"], env, cwd=data_dir, code=code)
    return proc, url.removesuffix("/v1")


def measured(proc: Any, url: str, body: dict[str, Any], seconds: int) -> tuple[float, float]:
    """One load run: requests per second and the server's CPU microseconds a request."""
    before = cpu_seconds(proc.pid)
    result = _load.load(url, body, CONNECTIONS, seconds, headers=HEADERS)
    used = cpu_seconds(proc.pid) - before
    rps = result["rps"]
    return rps, (used / (rps * seconds) * 1e6) if rps else float("nan")


def pairs(values: list[str]) -> dict[str, str]:
    """``K=V`` strings as a dict."""
    out = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise SystemExit(f"not K=V: {value!r}")
        out[key] = val
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", help="the git revision to compare against (HEAD: the control)")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--route", choices=("relay", "message"), default="relay")
    parser.add_argument("--env", action="append", default=[], metavar="K=V")
    parser.add_argument("--base-env", action="append", default=[], metavar="K=V")
    args = parser.parse_args()
    began = time.perf_counter()
    worktree = Path(tempfile.mkdtemp(prefix="rhetor-base-")) / "checkout"
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(worktree), args.base],
        check=True,
    )
    path, body = (
        ("/v1/chat/completions", RELAY_BODY)
        if args.route == "relay"
        else ("/message", SIMULATED_BODY)
    )
    procs: list[Any] = []
    try:
        upstream, upstream_url = start_upstream(shutil.which("nginx") is not None)
        procs.append(upstream)
        sides = {}
        for side, code, extra in (
            ("base", worktree, pairs(args.base_env)),
            ("head", REPO, pairs(args.env)),
        ):
            proc, url = start_rhetor_from(code, upstream_url, extra)
            procs.append(proc)
            sides[side] = (proc, f"{url}{path}")
        for proc, url in sides.values():
            measured(proc, url, body, 2)  # warm-up
        runs: dict[str, list[tuple[float, float]]] = {"base": [], "head": []}
        for round_ in range(args.rounds):
            order = ("base", "head") if round_ % 2 == 0 else ("head", "base")
            for side in order:
                proc, url = sides[side]
                runs[side].append(measured(proc, url, body, args.seconds))
            print(
                f"round {round_ + 1:2}: base {runs['base'][-1][0]:6.0f} req/s,"
                f" head {runs['head'][-1][0]:6.0f} req/s",
                flush=True,
            )
    finally:
        for proc in reversed(procs):
            stop(proc)
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)], check=False
        )
        shutil.rmtree(worktree.parent, ignore_errors=True)
    rps = {side: median(r for r, _ in runs[side]) for side in runs}
    cpu = {side: median(c for _, c in runs[side]) for side in runs}
    ratio = rps["head"] / rps["base"]
    print(
        f"{args.route}: base ({args.base}) {rps['base']:.0f} req/s, {cpu['base']:.0f} us CPU a"
        f" request; head {rps['head']:.0f} req/s, {cpu['head']:.0f} us; head/base {ratio:.3f}"
        f" ({time.perf_counter() - began:.0f} s)"
    )
    print(
        json.dumps(
            {
                "base": args.base,
                "route": args.route,
                "rounds": args.rounds,
                "seconds": args.seconds,
                "base_rps": round(rps["base"], 1),
                "head_rps": round(rps["head"], 1),
                "ratio": round(ratio, 3),
                "base_cpu_us": round(cpu["base"]),
                "head_cpu_us": round(cpu["head"]),
            }
        )
    )


if __name__ == "__main__":
    main()
