"""
``rhetor serve --workers N``: one port, N processes on one PostgreSQL, supervised by a parent.

The parent binds the port and runs the children on the inherited socket; a
child that dies is restarted (the cause logged), SIGTERM stops them all and
the parent exits 0, and a parent killed outright takes its children with it.
With SQLite more than one worker is refused before anything starts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from rhetor._errors import ValidationError
from rhetor._settings import Settings
from rhetor.edge._workers import check_workers, exit_cause
from rhetor.storage._pg import PgDatabase
from tests.instances import ROOT, Instance, instance_env, post, start, stop


def children_of(pid: int) -> list[int]:
    """The pids whose parent is ``pid`` (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def environment_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def gone(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return True
    return fields[0] == "Z"


async def until(check: object, within: float) -> None:
    with trio.fail_after(within):
        while not check():  # type: ignore[operator]
            await trio.sleep(0.05)


async def all_answer(server: Instance, count: int) -> None:
    for i in range(count):
        status, _ = await post(server.url, "/message", {"message": f"hello {i}"}, timeout=20)
        assert status == 200


def test_more_than_one_worker_on_sqlite_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    """Without RHETOR_DATABASE_URL, --workers 2 exits 1 saying PostgreSQL is needed; nothing serves."""
    env = instance_env("", RHETOR_DATA_DIR=str(tmp_path / "data"))
    del env["RHETOR_DATABASE_URL"]
    done = subprocess.run(
        [sys.executable, "-m", "rhetor", "serve", "--workers", "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "workers" in done.stderr and "PostgreSQL" in done.stderr
    assert not (tmp_path / "data").exists()


def test_the_worker_count_is_checked_before_anything_starts() -> None:
    """Below 1 is refused; above 1 needs a database URL; 1 is the embedded default."""
    with pytest.raises(ValidationError, match="at least 1"):
        check_workers(Settings(), 0)
    with pytest.raises(ValidationError, match="PostgreSQL"):
        check_workers(Settings(), 3)
    check_workers(Settings(), 1)
    check_workers(Settings(database_url="postgresql://h/db"), 3)


def test_a_childs_exit_cause_names_its_signal_or_status() -> None:
    """What the parent logs when a child dies."""
    assert exit_cause(-signal.SIGKILL) == "killed by SIGKILL"
    assert exit_cause(1) == "exited with status 1"


@pytest.mark.slow
async def test_workers_share_a_port_a_dead_one_is_restarted_and_sigterm_stops_all_cleanly(
    pg: PgDatabase, tmp_path: Path
) -> None:
    """Two children serve one port with their index and a metrics directory; one killed is restarted and logged; SIGTERM ends all with status 0."""
    env = instance_env(pg.url, RHETOR_SIMULATED="always")
    (parent,) = await start(["parent"], env, tmp_path, ("--workers", "2"))
    try:
        await until(lambda: len(children_of(parent.process.pid)) == 2, 10)
        first = children_of(parent.process.pid)
        envs = [environment_of(pid) for pid in first]
        assert sorted(e["RHETOR_WORKER_INDEX"] for e in envs) == ["0", "1"]
        metrics = {e["PROMETHEUS_MULTIPROC_DIR"] for e in envs}
        assert len(metrics) == 1 and await trio.Path(metrics.pop()).is_dir()
        await all_answer(parent, 20)
        os.kill(first[0], signal.SIGKILL)
        await until(lambda: len(set(children_of(parent.process.pid)) - set(first)) == 1, 20)
        await all_answer(parent, 20)
        metrics_dir = envs[0]["PROMETHEUS_MULTIPROC_DIR"]
        status = await trio.to_thread.run_sync(stop, parent)
    finally:
        await trio.to_thread.run_sync(stop, parent)
    assert status == 0
    assert all(gone(pid) for pid in first)
    assert not await trio.Path(metrics_dir).exists()
    logged = parent.logged()
    assert f"(pid {first[0]}) killed by SIGKILL" in logged and "restarting it" in logged


@pytest.mark.slow
async def test_workers_stop_when_their_parent_is_killed(pg: PgDatabase, tmp_path: Path) -> None:
    """kill -9 of the parent: its children see the pipe close and stop by themselves."""
    (parent,) = await start(["parent"], instance_env(pg.url), tmp_path, ("--workers", "2"))
    try:
        await until(lambda: len(children_of(parent.process.pid)) == 2, 10)
        workers = children_of(parent.process.pid)
        parent.kill()
        await until(lambda: all(gone(pid) for pid in workers), 20)
    finally:
        await trio.to_thread.run_sync(stop, parent)
