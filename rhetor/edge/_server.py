"""
Serving Rhetor: the actor runtime and Hypercorn's trio worker in one trio run.

``serve()`` is what ``rhetor serve`` and ``python -m rhetor`` run. It starts
the runtime, binds ``settings.host:settings.port`` (port 0 picks a free one),
reports the bound port through ``task_status``, registers with Hermes, and
on SIGINT or SIGTERM shuts down gracefully: stop accepting, close WebSockets,
give in-flight requests ``settings.shutdown_grace`` seconds, deregister, stop
the actors (which flushes the ledger) and return normally.

It binds ``127.0.0.1`` unless told otherwise, and warns at start when it
serves every interface with no API key. Importing it adjusts Hypercorn
(:mod:`rhetor.edge._hypercorn`, the one place that does).
"""

from __future__ import annotations

import gc
import logging
import signal
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import hypercorn.trio
import trio
from hypercorn.config import Config

import rhetor.runtime
from rhetor import observe
from rhetor._settings import Settings, serves_every_interface
from rhetor.edge._app import asgi_app, create_app, edge_state
from rhetor.edge._hermes import hermes_registration
from rhetor.edge._hypercorn import adjust_hypercorn

__all__ = ["hypercorn_config", "public_url", "serve", "serve_runtime"]

log = logging.getLogger("rhetor.server")

ShutdownTrigger = Callable[[], Awaitable[None]]


def hypercorn_config(settings: Settings, listen_fd: int | None = None) -> Config:
    """
    Hypercorn's configuration for ``settings``: bind, grace, limits, logging.

    With ``listen_fd`` it serves that listening socket (inherited from the
    parent of ``--workers``) instead of binding ``settings.host:settings.port``.
    """
    config = Config()
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    config.bind = [f"fd://{listen_fd}" if listen_fd is not None else f"{host}:{settings.port}"]
    config.graceful_timeout = settings.shutdown_grace
    # The session answers a frame over max_body_bytes with an ERROR frame and
    # keeps the socket; Hypercorn closes it (1009) only far beyond that.
    config.websocket_max_message_size = max(2 * settings.max_body_bytes, 1 << 20)
    config.backlog = 2048
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    return config


adjust_hypercorn()


def _warn_if_exposed(settings: Settings) -> None:
    if serves_every_interface(settings.host) and settings.api_key is None:
        log.warning(
            "SERVING EVERY INTERFACE (%r) WITH NO API KEY: anyone who can reach port %d "
            "can spend this server's provider budget. Set RHETOR_API_KEY, or bind "
            "127.0.0.1 (RHETOR_HOST_BIND) if only this machine needs Rhetor.",
            settings.host,
            settings.port,
        )


def public_url(settings: Settings, host: str, port: int) -> str:
    """The URL others reach this server at: ``settings.public_url``, else made from the bind."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    if host in ("0.0.0.0", "::", ""):
        host = "localhost"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


async def _watch_signals(stop: trio.Event, force: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            if stop.is_set():
                log.warning("second %s: stopping now", signal.Signals(signum).name)
                force.cancel()
                return
            log.info("%s: shutting down gracefully", signal.Signals(signum).name)
            stop.set()


# Allocations (net of frees) of tracked objects between young collections
# in a serving process; CPython's default is 700 (see _freeze_startup_heap).
YOUNG_COLLECTION_THRESHOLD = 20_000


def _freeze_startup_heap() -> None:
    """
    Keep the collector off the imports and tables of start-up, and off requests' short lives.

    After start-up the process holds about 250,000 tracked objects (the SDKs,
    pydantic models, the price tables), and a full (generation 2) collection
    walks all of them: about 90 ms during which no request moves. Under load
    those passes came about twice a second and were the whole p99 at one
    connection. Start-up objects live as long as the process, so they are
    frozen (``gc.freeze``).

    Young collections: CPython runs one whenever 700 more tracked objects
    were allocated than freed. With 32 requests in flight their live objects
    alone cross that all the time, so a young collection ran every five or so
    requests and found nothing to free (what a request allocates is freed by
    reference counting when it ends): about 4 % of the relay's CPU, 0.32 s of
    every 8 s. At ``YOUNG_COLLECTION_THRESHOLD`` (20,000) the same load ran
    one. What it delays is only garbage in cycles (an exception's traceback
    and its frames), freed a few megabytes later instead of a few hundred
    kilobytes.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, older, oldest)


async def serve_runtime(
    runtime: rhetor.runtime.Runtime,
    settings: Settings | None = None,
    *,
    handle_signals: bool = True,
    shutdown_trigger: ShutdownTrigger | None = None,
    announce: bool = False,
    freeze_heap: bool = False,
    listen_fd: int | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """
    Serve an already started runtime over HTTP and WebSocket until told to stop.

    Stops on SIGINT/SIGTERM (when ``handle_signals``) or when
    ``shutdown_trigger`` returns. ``task_status.started`` gets the bound port;
    with ``announce`` the line ``Rhetor serving on http://HOST:PORT`` also goes
    to stdout, for whoever started the process. With ``freeze_heap`` (for a
    process that only serves; see :func:`_freeze_startup_heap`) everything
    allocated by start-up is moved out of the garbage collector's reach.
    With ``listen_fd`` it serves that listening socket instead of binding one
    (a worker of ``rhetor serve --workers``). ``settings.stock_hypercorn``
    decides whether Rhetor's performance adjustments to Hypercorn apply
    (process-wide: see :mod:`rhetor.edge._hypercorn`).

    Cancellation: cancelling this drops connections at once; the graceful path
    is the signal or the trigger.

    Error handling: a port that cannot be bound raises ``OSError`` before
    ``task_status.started``.
    """
    settings = runtime.settings if settings is None else settings
    _warn_if_exposed(settings)
    adjust_hypercorn(performance=not settings.stock_hypercorn)
    if settings.stock_hypercorn:
        log.info("serving on Hypercorn's own per-request machinery (RHETOR_STOCK_HYPERCORN=1)")
    app = create_app(runtime, settings)
    state = edge_state(app)
    config = hypercorn_config(settings, listen_fd)
    stop = trio.Event()

    async def stopping() -> None:
        await stop.wait()
        state.close_websockets()

    async def relay(trigger: ShutdownTrigger) -> None:
        await trigger()
        stop.set()

    async def run_hypercorn(
        done: trio.CancelScope, *, task_status: trio.TaskStatus[list[str]]
    ) -> None:
        await hypercorn.trio.serve(
            asgi_app(app), config, shutdown_trigger=stopping, task_status=task_status
        )
        done.cancel()

    async with trio.open_nursery() as nursery:
        if handle_signals:
            nursery.start_soon(_watch_signals, stop, nursery.cancel_scope)
        # The gauges of what the actors know (providers, budget, mailboxes),
        # kept current in every worker, not only in the one a scrape reaches.
        nursery.start_soon(state.observer.sample_forever, runtime)
        if shutdown_trigger is not None:
            nursery.start_soon(relay, shutdown_trigger)
        binds: list[str] = await nursery.start(run_hypercorn, nursery.cancel_scope)
        port = urlsplit(binds[0]).port or settings.port
        url = public_url(settings, settings.host, port)
        log.info("Rhetor serving on %s", url)
        if announce:
            print(f"Rhetor serving on {url}", flush=True)
        if freeze_heap:
            _freeze_startup_heap()
        task_status.started(port)
        async with hermes_registration(settings.hermes_url, url, rhetor.runtime.VERSION):
            await stop.wait()
        # Hypercorn now drains in-flight requests for up to shutdown_grace
        # seconds, then cancels this nursery.
    log.info("Rhetor stopped serving")


async def serve(
    settings: Settings | None = None,
    *,
    handle_signals: bool = True,
    shutdown_trigger: ShutdownTrigger | None = None,
    freeze_heap: bool = False,
    listen_fd: int | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    **runtime_options: Any,
) -> None:
    """
    Start Rhetor and serve it until SIGINT or SIGTERM; return after a graceful stop.

    ``settings`` defaults to ``Settings.from_env()``; ``runtime_options`` go to
    :func:`rhetor.runtime.start` (e.g. ``backends``). ``task_status.started``
    gets the bound port, which matters when ``settings.port`` is 0.
    ``freeze_heap`` is for a process that does nothing but serve (the CLI and
    :func:`run` set it) and ``listen_fd`` for a worker of ``--workers``: see
    :func:`serve_runtime`.

    Cancellation: cancelling this stops at once; the actors still stop in
    order and the ledger is flushed.

    Error handling: bad settings raise ``ValidationError`` and an unusable
    port ``OSError``, both before anything is served.
    """
    settings = Settings.from_env() if settings is None else settings
    observe.log_configuration(settings)
    async with rhetor.runtime.start(settings, **runtime_options) as runtime:
        await serve_runtime(
            runtime,
            settings,
            handle_signals=handle_signals,
            shutdown_trigger=shutdown_trigger,
            announce=True,
            freeze_heap=freeze_heap,
            listen_fd=listen_fd,
            task_status=task_status,
        )
    log.info("Rhetor stopped")


def run(settings: Settings | None = None) -> None:
    """Blocking entry point: ``trio.run(serve)`` with logging to stderr, tracing if configured."""
    settings = Settings.from_env() if settings is None else settings
    observe.configure_logging(settings.log_level, settings.log_format)
    observe.configure_tracing()
    try:
        trio.run(partial(serve, settings, freeze_heap=True))
    finally:
        observe.shutdown_tracing()
