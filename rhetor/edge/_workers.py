"""
Several Rhetor processes on one port: ``rhetor serve --workers N`` (or ``RHETOR_WORKERS``).

The parent binds the listening socket and starts N child processes
(``python -m rhetor.edge._workers``) that inherit it; each child is a whole
Rhetor (runtime and Hypercorn, :func:`rhetor.edge._server.serve`) accepting
from the shared socket, so the kernel hands each new connection to whichever
child accepts first. All of them share one PostgreSQL database; with SQLite
(one process per data directory) more than one worker is refused by
:class:`~rhetor.Settings`.

The parent:

- prints ``Rhetor serving on URL`` once every child is ready, and keeps
  Rhetor registered with Hermes (the children do not register);
- forwards SIGINT and SIGTERM to the children (a second one stops them at
  once), waits for them, and returns 0 when every child stopped cleanly;
- restarts a child that dies, logging its exit cause (status or signal),
  after a backoff that grows while children keep dying young, so a
  database that is down does not become a restart storm;
- gives up (status 1) when a child fails before it ever served, which is a
  setting or a database the children cannot use.

The children's contract:

- ``RHETOR_WORKER_INDEX`` is the child's index (0 to N-1), the same across
  its restarts; ``RHETOR_WORKERS`` is 1 in a child.
- ``PROMETHEUS_MULTIPROC_DIR`` is a fresh empty directory the parent makes
  for them (and removes at exit) unless it is already set, so that
  ``prometheus_client``'s multiprocess mode can sum the children's metrics;
  when a child dies the parent calls ``prometheus_client.multiprocess.
  mark_process_dead`` for it if that library is installed.
- A child reads its settings from the environment, with the parent's bind
  address, port, task config, data directory and database URL set
  explicitly. It stops gracefully on SIGTERM, and on its own when the
  parent dies (a pipe from the parent reaches end of file).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from functools import partial

import attrs
import trio

from rhetor._errors import ValidationError
from rhetor._settings import Settings
from rhetor.edge._hermes import hermes_registration

__all__ = [
    "check_workers",
    "exit_cause",
    "listening_socket",
    "serve_workers",
    "worker_environment",
]

log = logging.getLogger("rhetor.workers")

# Seconds a child may take to start serving (imports, migrations, the sweep).
_START_DEADLINE = 120.0
# Seconds a child must live to count as healthy (its restarts then start fast again).
_HEALTHY_AFTER = 30.0
# Restart backoff: first, growth factor and cap, in seconds.
_BACKOFF_FIRST = 0.5
_BACKOFF_CAP = 30.0
# Seconds past the graceful shutdown a child may take before it is killed.
_STOP_SLACK = 15.0
_READY = "serving on"


def check_workers(settings: Settings, workers: int) -> None:
    """
    Refuse ``workers`` processes that ``settings`` cannot serve.

    Error handling: :class:`ValidationError` on ``workers`` when it is below 1,
    or above 1 with SQLite: its files belong to one process (the data
    directory's lock), whose in-memory caches are right only because it is
    the only writer.
    """
    if workers < 1:
        raise ValidationError("workers", f"must be at least 1, got {workers}")
    if workers > 1 and not settings.database_url:
        raise ValidationError(
            "workers",
            f"{workers} workers need PostgreSQL (RHETOR_DATABASE_URL or --database-url);"
            " with SQLite under the data directory Rhetor is one process",
        )


def exit_cause(returncode: int) -> str:
    """How a child ended, for a log line: ``exited with status 1``, ``killed by SIGKILL``."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exited with status {returncode}"


def listening_socket(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """
    A TCP socket bound to ``host:port`` and listening, inheritable by child processes.

    Error handling: ``OSError`` when the address cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit it: replies are small and latency matters.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


def worker_environment(
    settings: Settings, port: int, index: int, metrics_dir: str, base: Mapping[str, str]
) -> dict[str, str]:
    """
    The environment of child ``index``: ``base`` with what the parent decided set explicitly.
    """
    env = dict(base)
    env.update(
        RHETOR_HOST_BIND=settings.host,
        RHETOR_PORT=str(port),
        RHETOR_TASK_CONFIG=str(settings.task_config),
        RHETOR_DATA_DIR=str(settings.data_dir),
        RHETOR_WORKERS="1",
        RHETOR_WORKER_INDEX=str(index),
        RHETOR_LOG_LEVEL=settings.log_level,
        RHETOR_LOG_FORMAT=settings.log_format,
        PROMETHEUS_MULTIPROC_DIR=metrics_dir,
        # The parent registers with Hermes, once, for all of them.
        HERMES_API_URL="",
    )
    if settings.database_url:
        env["RHETOR_DATABASE_URL"] = settings.database_url
    return env


def _mark_dead(pid: int, metrics_dir: str) -> None:
    """Tell prometheus_client (if installed) that a child's live gauges are gone."""
    try:
        multiprocess = importlib.import_module("prometheus_client.multiprocess")
    except ImportError:
        return
    try:
        multiprocess.mark_process_dead(pid, metrics_dir)
    except OSError as exc:
        log.warning("could not clear the metrics of worker pid %d: %s", pid, exc)


@attrs.define(eq=False)
class _Workers:
    """The parent's state: the children, their backoff, and whether it is stopping."""

    settings: Settings
    count: int
    sock: socket.socket
    metrics_dir: str
    # Invariant: the read end of a pipe whose write end only the parent holds.
    parent_fd: int
    stop: trio.Event = attrs.field(factory=trio.Event)
    # Invariant: the running child of each index (absent between restarts).
    children: dict[int, trio.Process] = attrs.field(factory=dict)
    ready: dict[int, trio.Event] = attrs.field(factory=dict)
    # Invariant: how many keep() tasks run; idle is set when the last one ends.
    running: int = 0
    idle: trio.Event = attrs.field(factory=trio.Event)
    restarts: int = 0
    unclean: int = 0
    failure: str | None = None

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "rhetor.edge._workers",
            "--listen-fd",
            str(self.sock.fileno()),
            "--parent-fd",
            str(self.parent_fd),
        ]

    async def keep(self, index: int, nursery: trio.Nursery) -> None:
        """
        Run child ``index`` until the parent stops, restarting it when it dies.

        Error handling: a child that ends before its first start served sets
        ``failure`` and stops everything; later deaths are logged and restarted.
        """
        self.running += 1
        try:
            await self._keep(index, nursery)
        finally:
            self.running -= 1
            if not self.running:
                self.idle.set()

    async def _keep(self, index: int, nursery: trio.Nursery) -> None:
        port = self.sock.getsockname()[1]
        first = True
        backoff = 0.0
        while not self.stop.is_set():
            env = worker_environment(self.settings, port, index, self.metrics_dir, os.environ)
            started = time.monotonic()
            proc = await trio.lowlevel.open_process(
                self.command(),
                env=env,
                pass_fds=(self.sock.fileno(), self.parent_fd),
                stdout=subprocess.PIPE,
                # Its own session: a terminal's Ctrl-C reaches the parent, which forwards it.
                start_new_session=True,
            )
            self.children[index] = proc
            if self.stop.is_set():
                # Stopped while it was being started: it missed the SIGTERM.
                proc.send_signal(signal.SIGTERM)
            ready = self.ready.setdefault(index, trio.Event())
            served = trio.Event()
            nursery.start_soon(self._read_stdout, proc, served, ready)
            with trio.move_on_after(_START_DEADLINE) as waiting:
                async with trio.open_nursery() as inner:
                    inner.start_soon(_set_when, proc, served)
                    await served.wait()
                    inner.cancel_scope.cancel()
            if waiting.cancelled_caught:
                log.error("worker %d did not start within %gs; killing it", index, _START_DEADLINE)
                proc.kill()
            returncode = await proc.wait()
            self.children.pop(index, None)
            _mark_dead(proc.pid, self.metrics_dir)
            if self.stop.is_set():
                # SIGTERM before it had set up its handlers (still starting) ends it at once.
                if returncode not in (0, -signal.SIGTERM):
                    self.unclean += 1
                    log.warning("worker %d (pid %d) %s", index, proc.pid, exit_cause(returncode))
                return
            cause = exit_cause(returncode)
            if first and not ready.is_set():
                self.failure = f"worker {index} failed to start: it {cause}"
                self.stop.set()
                return
            first = False
            lived = time.monotonic() - started
            backoff = (
                _BACKOFF_FIRST
                if lived >= _HEALTHY_AFTER or backoff == 0
                else min(_BACKOFF_CAP, backoff * 2)
            )
            self.restarts += 1
            log.warning(
                "worker %d (pid %d) %s after %.1fs; restarting it in %.1fs",
                index,
                proc.pid,
                cause,
                lived,
                backoff,
            )
            with trio.move_on_after(backoff):
                await self.stop.wait()

    async def _read_stdout(self, proc: trio.Process, served: trio.Event, ready: trio.Event) -> None:
        """Watch a child's stdout for its ``serving on`` line; pass any other line on."""
        assert proc.stdout is not None
        buffer = b""
        async with proc.stdout:
            while True:
                try:
                    data = await proc.stdout.receive_some(4096)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    break
                if not data:
                    break
                buffer += data
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    text = line.decode(errors="replace")
                    if _READY in text and not served.is_set():
                        served.set()
                        ready.set()
                    else:
                        print(text, flush=True)
        served.set()

    def signal_children(self, signum: int) -> None:
        for proc in list(self.children.values()):
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signum)

    async def wait_ready(self) -> bool:
        """True once every child has served; False if the parent stopped first."""
        for index in range(self.count):
            event = self.ready.setdefault(index, trio.Event())
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_cancel_when, self.stop, nursery.cancel_scope)
                await event.wait()
                nursery.cancel_scope.cancel()
            if self.stop.is_set():
                return False
        return True


async def _set_when(proc: trio.Process, event: trio.Event) -> None:
    await proc.wait()
    event.set()


async def _cancel_when(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


async def _watch_signals(workers: _Workers) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            if workers.stop.is_set():
                # A child takes a second SIGTERM as "stop now".
                log.warning("second %s: stopping the workers now", name)
                workers.signal_children(signal.SIGTERM)
            else:
                # serve_workers sends the first SIGTERM once it sees stop.
                log.info("%s: stopping the workers gracefully", name)
                workers.stop.set()


async def serve_workers(
    settings: Settings,
    workers: int,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> int:
    """
    Serve ``settings.host:settings.port`` with ``workers`` child processes until SIGINT or SIGTERM.

    ``task_status.started`` gets the bound port once every child serves.
    Answers the exit status: 0 after a clean stop, 1 when a child failed to
    start or had to be killed on the way out.

    Cancellation: cancelling this kills the children at once.

    Error handling: :class:`ValidationError` (see :func:`check_workers`) and
    a port that cannot be bound (``OSError``) are raised before any child starts.
    """
    from rhetor.edge._server import public_url

    check_workers(settings, workers)
    sock = listening_socket(settings.host, settings.port)
    made_dir: str | None = None
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not metrics_dir:
        metrics_dir = made_dir = tempfile.mkdtemp(prefix="rhetor-metrics-")
    parent_fd, keep_alive = os.pipe()
    state = _Workers(settings, workers, sock, metrics_dir, parent_fd)
    port = sock.getsockname()[1]
    url = public_url(settings, settings.host, port)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_signals, state)
            for index in range(workers):
                nursery.start_soon(state.keep, index, nursery)
            if await state.wait_ready():
                log.info("Rhetor serving on %s with %d workers", url, workers)
                print(f"Rhetor serving on {url}", flush=True)
                task_status.started(port)
                async with hermes_registration(settings.hermes_url, url, _version()):
                    await state.stop.wait()
            state.signal_children(signal.SIGTERM)
            with trio.move_on_after(settings.shutdown_grace + _STOP_SLACK) as slack:
                await state.idle.wait()
            if slack.cancelled_caught:
                log.error("workers still running after the grace period; killing them")
                state.unclean += len(state.children)
                state.signal_children(signal.SIGKILL)
            # What is left: the signal watcher, and the children's tasks if they were killed.
            nursery.cancel_scope.cancel()
    finally:
        # Only those still running (cancelled, or past the grace period).
        state.signal_children(signal.SIGKILL)
        os.close(keep_alive)
        os.close(parent_fd)
        sock.close()
        if made_dir is not None:
            shutil.rmtree(made_dir, ignore_errors=True)
    if state.failure is not None:
        log.error("%s", state.failure)
        return 1
    return 1 if state.unclean else 0


def _version() -> str:
    from rhetor.runtime import VERSION

    return VERSION


# -- the child -----------------------------------------------------------------------


async def _parent_gone(fd: int) -> None:
    """Return when the parent's end of the pipe closes (the parent stopped or died)."""
    while True:
        await trio.lowlevel.wait_readable(fd)
        if not os.read(fd, 64):
            log.warning("the parent process is gone; stopping this worker")
            return


def _child(argv: list[str] | None = None) -> None:
    """``python -m rhetor.edge._workers --listen-fd N --parent-fd M``: one worker."""
    from rhetor import observe
    from rhetor._errors import RhetorError
    from rhetor.edge._server import serve

    parser = argparse.ArgumentParser(prog="python -m rhetor.edge._workers")
    parser.add_argument("--listen-fd", type=int, required=True)
    parser.add_argument("--parent-fd", type=int, required=True)
    args = parser.parse_args(argv)
    os.set_blocking(args.parent_fd, False)
    try:
        settings = Settings.from_env()
        observe.configure_logging(settings.log_level, settings.log_format)
        observe.configure_tracing()
        try:
            trio.run(
                partial(
                    serve,
                    settings,
                    listen_fd=args.listen_fd,
                    shutdown_trigger=partial(_parent_gone, args.parent_fd),
                    freeze_heap=True,
                )
            )
        finally:
            observe.shutdown_tracing()
    except RhetorError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    _child()
