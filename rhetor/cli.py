"""
The ``rhetor`` command line: run the server, or talk to one.

``serve`` runs Rhetor and ``db`` manages its PostgreSQL schema; ``ask``,
``chat``, ``providers``, ``budget`` and
``contexts`` are clients of a running server (``--host``/``--port``/
``--api-key``, defaulting to ``RHETOR_HOST``, ``RHETOR_PORT`` and
``RHETOR_API_KEY``). Every command takes ``--json`` for machine-readable
output. Errors print one line on stderr and exit with status 1; there are no
tracebacks.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import anyio
import typer
from rich.console import Console
from rich.status import Status
from rich.table import Table
from rich.text import Text

from rhetor.client import (
    Chunk,
    Completed,
    Reply,
    RhetorClient,
    RhetorClientError,
    TypingStarted,
    TypingStopped,
)

__all__ = ["app", "main"]

app = typer.Typer(
    name="rhetor",
    help="Rhetor, the LLM management server of Tekton: serve it, or talk to one.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
contexts_app = typer.Typer(
    help="Stored conversation contexts: list (the default), show, delete.",
    no_args_is_help=False,
)
app.add_typer(contexts_app, name="contexts")
db_app = typer.Typer(
    help="The stores' schema: status, upgrade (PostgreSQL; SQLite files migrate themselves).",
    no_args_is_help=True,
)
app.add_typer(db_app, name="db")

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

Host = Annotated[
    str | None,
    typer.Option("--host", help="Rhetor's host (env RHETOR_HOST, default localhost)."),
]
Port = Annotated[
    int | None,
    typer.Option("--port", help="Rhetor's port (env RHETOR_PORT, default 8300)."),
]
ApiKey = Annotated[
    str | None,
    typer.Option("--api-key", help="API key, if the server wants one (env RHETOR_API_KEY)."),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
Model = Annotated[str | None, typer.Option("--model", "-m", help="Ask this model.")]
Provider = Annotated[str | None, typer.Option("--provider", "-p", help="Ask this provider.")]
Component = Annotated[
    str, typer.Option("--component", help="Component name the request is billed to.")
]
ContextId = Annotated[str, typer.Argument(metavar="ID", help="The context id.")]


def _error(message: str) -> None:
    # Text, not markup: server messages may hold brackets.
    err.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)


class _Failed(Exception):
    """A command failed in a way already worded for the user."""


def _run(
    work: Callable[[], Awaitable[None]],
) -> None:
    """
    Run one command's async body on trio and turn failures into one stderr line.

    Error handling: a client error (or a :class:`_Failed`) prints ``error: ...``
    and exits 1; Ctrl-C exits 130 without a traceback.
    """
    try:
        anyio.run(work, backend="trio")
    except (RhetorClientError, _Failed) as exc:
        _error(str(exc))
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(130) from None


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True) + "\n")
    sys.stdout.flush()


def _reply_json(reply: Reply) -> dict[str, Any]:
    return {k: v for k, v in reply.raw.items() if k not in ("chunk", "done")}


def _money(value: Any) -> str:
    return f"${value:.6f}" if isinstance(value, int | float) else "-"


def _footer(reply: Reply) -> Text:
    parts = [
        f"{reply.provider}/{reply.model}",
        f"{reply.usage.total_tokens} tokens",
        _money(reply.cost),
    ]
    if reply.context:
        parts.append(f"context {reply.context}")
    line = Text(" · ".join(parts), style="dim")
    if reply.budget_warning:
        line.append(f"\nbudget warning: {reply.budget_warning}", style="yellow")
    return line


# -- serve ------------------------------------------------------------------


@app.command()
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


# -- ask and chat -------------------------------------------------------------


@app.command()
def ask(
    prompt: Annotated[str, typer.Argument(help="What to ask.")],
    model: Model = None,
    provider: Provider = None,
    task_type: Annotated[
        str | None, typer.Option("--task-type", "-t", help="code, planning, reasoning, chat...")
    ] = None,
    context: Annotated[
        str | None, typer.Option("--context", "-c", help="Context id to continue.")
    ] = None,
    system: Annotated[str | None, typer.Option("--system", help="System prompt.")] = None,
    max_tokens: Annotated[
        int | None, typer.Option("--max-tokens", help="Reply length cap.")
    ] = None,
    temperature: Annotated[float | None, typer.Option("--temperature")] = None,
    component: Component = "cli",
    host: Host = None,
    port: Port = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """
    Ask one question; the reply streams as it arrives, then model, provider and cost.
    """

    async def work() -> None:
        async with RhetorClient(host, port, api_key) as client:
            stream = client.generate_stream(
                prompt,
                model=model,
                provider=provider,
                task_type=task_type,
                context_id=context,
                system_prompt=system,
                max_tokens=max_tokens,
                temperature=temperature,
                component=component,
            )
            async with stream:
                async for chunk in stream:
                    if not as_json:
                        sys.stdout.write(chunk)
                        sys.stdout.flush()
            if stream.reply is None:
                raise _Failed("the stream ended without a reply")
            if as_json:
                _print_json(_reply_json(stream.reply))
            else:
                sys.stdout.write("\n")
                out.print(_footer(stream.reply))

    _run(work)


def _read_line(prompt: str) -> str | None:
    try:
        return input(prompt)
    except EOFError:
        return None


@app.command()
def chat(
    context: Annotated[
        str | None,
        typer.Option("--context", "-c", help="Context id to continue (default: a new one)."),
    ] = None,
    task_type: Annotated[str, typer.Option("--task-type", "-t")] = "chat",
    model: Model = None,
    provider: Provider = None,
    component: Component = "cli",
    host: Host = None,
    port: Port = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """
    Chat over the WebSocket; the server keeps the conversation between turns.

    Type a message and press Enter; end with Ctrl-D or /quit. With --json,
    each turn prints one JSON line (the reply).
    """
    context_id = context or f"cli:{uuid.uuid4().hex[:12]}"

    async def turn(session: Any, line: str) -> None:
        request = session.send_message(
            line,
            context=context_id,
            task_type=task_type,
            model=model,
            provider=provider,
            component=component,
        )
        status: Status | None = None
        try:
            async with request:
                async for event in request:
                    if isinstance(event, TypingStarted) and not as_json:
                        # A spinner on a terminal; a plain note elsewhere, off stdout.
                        if out.is_terminal:
                            status = out.status("Rhetor is typing…", spinner="dots")
                            status.start()
                        else:
                            err.print("… Rhetor is typing")
                    elif isinstance(event, Chunk | TypingStopped) and status is not None:
                        status.stop()
                        status = None
                    if isinstance(event, Chunk) and not as_json:
                        sys.stdout.write(event.text)
                        sys.stdout.flush()
                    elif isinstance(event, Completed):
                        if as_json:
                            sys.stdout.write(json.dumps(_reply_json(event.reply)) + "\n")
                            sys.stdout.flush()
                        else:
                            sys.stdout.write("\n")
                            out.print(_footer(event.reply))
        finally:
            if status is not None:
                status.stop()

    async def work() -> None:
        async with (
            RhetorClient(host, port, api_key) as client,
            client.session("rhetor-cli") as session,
        ):
            if not as_json:
                out.print(
                    Text(
                        f"Chatting in context {context_id}. Ctrl-D or /quit to leave.", style="dim"
                    )
                )
            prompt = "" if as_json else "you> "
            while True:
                line = await anyio.to_thread.run_sync(_read_line, prompt, abandon_on_cancel=True)
                if line is None or line.strip() in ("/quit", "/exit"):
                    break
                if line.strip():
                    await turn(session, line)
            if not as_json:
                sys.stdout.write("\n")

    _run(work)


# -- providers and budget ----------------------------------------------------


@app.command()
def providers(
    host: Host = None, port: Port = None, api_key: ApiKey = None, as_json: AsJson = False
) -> None:
    """
    The providers, their models and availability; the active one is marked.
    """

    async def work() -> None:
        async with RhetorClient(host, port, api_key) as client:
            info = await client.get_providers()
        if as_json:
            _print_json(info)
            return
        active, active_model = info.get("active_provider"), info.get("active_model")
        table = Table(title="Rhetor providers")
        table.add_column("Provider", style="bold")
        table.add_column("Available")
        table.add_column("Models")
        table.add_column("Note", style="dim")
        for name, p in sorted((info.get("providers") or {}).items()):
            models = [
                f"[bold]{m}[/] (active)" if name == active and m == active_model else m
                for m in p.get("models", [])
            ]
            table.add_row(
                f"{name} ●" if name == active else name,
                "[green]yes[/]" if p.get("available") else "[red]no[/]",
                "\n".join(models) or "-",
                str(p.get("reason") or ""),
            )
        out.print(table)

    _run(work)


def _bar(spent: float, limit: float, width: int = 20) -> Text:
    if limit <= 0:
        return Text("no limit", style="dim")
    share = spent / limit
    filled = min(width, round(share * width))
    style = "green" if share < 0.8 else "yellow" if share < 1 else "red"
    bar = Text("█" * filled, style=style)
    bar.append("░" * (width - filled), style="dim")
    bar.append(f" {share:.0%}")
    return bar


@app.command()
def budget(
    host: Host = None, port: Port = None, api_key: ApiKey = None, as_json: AsJson = False
) -> None:
    """
    Spend against each period's limit, with a bar for each.
    """

    async def work() -> None:
        async with RhetorClient(host, port, api_key) as client:
            status = await client.get_budget()
        if as_json:
            _print_json(status)
            return
        table = Table(title=f"Rhetor budget (policy: {status.get('policy', '?')})")
        for column in ("Period", "Spent", "Limit", "Remaining", "Used"):
            table.add_column(column, justify="right" if column in ("Spent", "Limit") else "left")
        periods: Mapping[str, Any] = status.get("periods") or {}
        for period, p in periods.items():
            spent = float(p.get("spent") or 0.0)
            limit = float(p.get("limit") or 0.0)
            remaining = p.get("remaining")
            table.add_row(
                period,
                _money(spent),
                _money(limit) if limit else "-",
                _money(remaining) if remaining is not None else "-",
                _bar(spent, limit),
            )
        out.print(table)

    _run(work)


# -- contexts -------------------------------------------------------------------


def _when(value: Any) -> str:
    if not isinstance(value, int | float):
        return "-"
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S")


async def _list_contexts(
    host: str | None, port: int | None, api_key: str | None, as_json: bool
) -> None:
    async with RhetorClient(host, port, api_key) as client:
        contexts = await client.get_contexts()
    if as_json:
        _print_json(contexts)
        return
    if not contexts:
        out.print("No stored contexts.")
        return
    table = Table(title="Rhetor contexts")
    table.add_column("Context", style="bold")
    table.add_column("Messages", justify="right")
    table.add_column("Updated (UTC)")
    table.add_column("Summary", style="dim")
    for c in contexts:
        summary = str(c.get("summary") or "")
        table.add_row(
            str(c.get("id")),
            str(c.get("message_count", "-")),
            _when(c.get("updated")),
            summary[:60] + ("…" if len(summary) > 60 else ""),
        )
    out.print(table)


@contexts_app.callback(invoke_without_command=True)
def contexts(
    ctx: typer.Context,
    host: Host = None,
    port: Port = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """
    Stored conversation contexts; with no subcommand, list them.
    """
    if ctx.invoked_subcommand is None:
        _run(lambda: _list_contexts(host, port, api_key, as_json))


@contexts_app.command("list")
def contexts_list(
    host: Host = None, port: Port = None, api_key: ApiKey = None, as_json: AsJson = False
) -> None:
    """
    List the stored contexts, most recently updated first.
    """
    _run(lambda: _list_contexts(host, port, api_key, as_json))


@contexts_app.command("show")
def contexts_show(
    context_id: ContextId,
    host: Host = None,
    port: Port = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """
    Show one context's messages.
    """

    async def work() -> None:
        async with RhetorClient(host, port, api_key) as client:
            detail = await client.get_context(context_id)
        if as_json:
            _print_json(detail)
            return
        info = detail.get("info") or {}
        out.print(
            Text(f"Context {context_id}", style="bold"),
            Text(f"· {info.get('message_count', '?')} messages", style="dim"),
        )
        if info.get("summary"):
            out.print(Text(f"Summary: {info['summary']}", style="dim"))
        for m in detail.get("messages") or []:
            role = str(m.get("role", "?"))
            style = {"user": "cyan", "assistant": "green"}.get(role, "magenta")
            out.print(Text(f"{role}: ", style=f"bold {style}") + Text(str(m.get("content", ""))))

    _run(work)


@contexts_app.command("delete")
def contexts_delete(
    context_id: ContextId,
    host: Host = None,
    port: Port = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """
    Delete one context and its messages.
    """

    async def work() -> None:
        async with RhetorClient(host, port, api_key) as client:
            await client.delete_context(context_id)
        if as_json:
            _print_json({"deleted": True, "id": context_id})
        else:
            out.print(Text(f"Deleted context {context_id}."))

    _run(work)


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


@db_app.command("status")
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


@db_app.command("upgrade")
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


def main() -> None:
    """The ``rhetor`` console script."""
    app()


if __name__ == "__main__":
    main()
