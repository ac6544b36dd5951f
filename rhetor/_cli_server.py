"""
The ``rhetor`` commands that run the server side: ``serve`` and ``db``.

They import the server stack inside each command, so the client commands never
pay for it; ``rhetor.cli`` registers them on its Typer apps.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from rhetor._cli_common import AsJson, _error, _print_json, out

# -- serve ------------------------------------------------------------------


def serve(
    host: Annotated[
        str | None,
        typer.Option("--host", help="Address to bind (env RHETOR_HOST_BIND, default 127.0.0.1)."),
    ] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port (env RHETOR_PORT).")] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="Task routing config (env RHETOR_TASK_CONFIG).")
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Where SQLite files live (env RHETOR_DATA_DIR)."),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="postgresql://... to keep every store in PostgreSQL, shared by many"
            " processes (env RHETOR_DATABASE_URL; default: SQLite under --data-dir).",
        ),
    ] = None,
    log_level: Annotated[
        str | None,
        typer.Option(
            "--log-level",
            help="debug, info, warning, error or critical (env RHETOR_LOG_LEVEL, default info).",
        ),
    ] = None,
    log_format: Annotated[
        str | None,
        typer.Option(
            "--log-format",
            help="text or json, one line per record (env RHETOR_LOG_FORMAT, default text).",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            help="Processes serving the port, sharing PostgreSQL (env RHETOR_WORKERS, default 1).",
        ),
    ] = None,
) -> None:
    """
    Run the Rhetor server (HTTP, SSE and WebSocket) until SIGINT or SIGTERM.

    Logs go to stderr with timestamps, one access-log line per request; see
    docs/observability.md. With OTEL_EXPORTER_OTLP_ENDPOINT set, every request
    is also traced over OTLP.

    With --workers N above 1, N processes serve the one port on a shared
    PostgreSQL database (RHETOR_DATABASE_URL); see docs/deployment.md.
    """
    import attrs
    import trio

    from rhetor import RhetorError, Settings

    try:
        settings = Settings.from_env()
        if host is not None:
            settings = attrs.evolve(settings, host=host)
        if port is not None:
            settings = attrs.evolve(settings, port=port)
        if config is not None:
            settings = attrs.evolve(settings, task_config=config)
        if data_dir is not None:
            settings = attrs.evolve(settings, data_dir=data_dir)
        if database_url is not None:
            settings = attrs.evolve(settings, database_url=database_url)
        if log_level is not None:
            settings = attrs.evolve(settings, log_level=log_level.lower())
        if log_format is not None:
            fmt: Any = log_format.lower()  # checked by Settings
            settings = attrs.evolve(settings, log_format=fmt)
        if workers is not None:
            settings = attrs.evolve(settings, workers=workers)
        # Imported here: the client commands must not pay for the server stack.
        from rhetor import observe

        if settings.workers > 1:
            from rhetor.edge._workers import serve_workers

            observe.configure_logging(settings.log_level, settings.log_format)
            status = trio.run(serve_workers, settings, settings.workers)
            if status:
                raise typer.Exit(status)
            return
        from rhetor.edge._server import serve as serve_forever

        observe.configure_logging(settings.log_level, settings.log_format)
        observe.configure_tracing()
        try:
            trio.run(partial(serve_forever, settings, freeze_heap=True))
        finally:
            observe.shutdown_tracing()
    except RhetorError as exc:
        _error(str(exc))
        raise typer.Exit(1) from None
    except OSError as exc:
        _error(f"cannot serve: {exc}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        pass


# -- db ----------------------------------------------------------------------

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url", help="postgresql://... (env RHETOR_DATABASE_URL; unset: SQLite)."
    ),
]
DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Where SQLite files live (env RHETOR_DATA_DIR)."),
]


def _db_settings(database_url: str | None, data_dir: Path | None) -> Any:
    import attrs

    from rhetor import Settings

    settings = Settings.from_env()
    if database_url is not None:
        settings = attrs.evolve(settings, database_url=database_url or None)
    if data_dir is not None:
        settings = attrs.evolve(settings, data_dir=data_dir)
    return settings


def _db_command(work: Callable[[], None]) -> None:
    """Run a ``db`` command; Rhetor's errors (a bad URL, a database down) are one stderr line."""
    import logging

    from rhetor import RhetorError

    # The pool logs each failed connection attempt; the one error line below says it all.
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)

    try:
        work()
    except RhetorError as exc:
        _error(str(exc))
        raise typer.Exit(1) from None


def db_status(
    database_url: DatabaseUrl = None, data_dir: DataDir = None, as_json: AsJson = False
) -> None:
    """
    Which schema migrations the stores have, and which are pending.
    """

    def work() -> None:
        from rhetor._stores import database_status, describe, sqlite_status

        settings = _db_settings(database_url, data_dir)
        where = describe(settings)
        if settings.database_url:
            steps = [
                {
                    "part": s.part,
                    "version": s.version,
                    "name": s.name,
                    "applied": None if s.applied is None else s.applied.isoformat(),
                }
                for s in database_status(settings)
            ]
        else:
            steps = sqlite_status(settings.data_dir)
        pending = sum(1 for step in steps if step["applied"] is None)
        if as_json:
            _print_json({"database": where, "migrations": steps, "pending": pending})
            return
        out.print(Text(" ".join(f"{k}={v}" for k, v in where.items()), style="bold"))
        table = Table("part", "version", "name", "applied")
        for step in steps:
            table.add_row(
                str(step["part"]),
                str(step["version"]),
                str(step["name"]),
                str(step["applied"] or "pending"),
            )
        out.print(table)
        if not settings.database_url:
            out.print(
                Text(
                    "SQLite files migrate themselves when Rhetor opens them;"
                    " `rhetor db upgrade` opens them now.",
                    style="dim",
                )
            )
        out.print(f"{pending} pending")

    _db_command(work)


def db_upgrade(
    database_url: DatabaseUrl = None, data_dir: DataDir = None, as_json: AsJson = False
) -> None:
    """
    Apply the pending schema migrations now (Rhetor also applies them when it starts).

    On PostgreSQL the steps run in one transaction under an advisory lock, so
    running it beside starting servers is safe. SQLite files are migrated by
    opening them, under the data directory's lock.
    """

    def work() -> None:
        from rhetor._stores import upgrade_database, upgrade_sqlite

        settings = _db_settings(database_url, data_dir)
        if settings.database_url:
            applied = [f"{m.part} {m.version}: {m.name}" for m in upgrade_database(settings)]
        else:
            applied = upgrade_sqlite(settings.data_dir)
        if as_json:
            _print_json({"applied": applied})
            return
        for line in applied:
            out.print(f"applied {line}")
        out.print("the schema is up to date")

    _db_command(work)
