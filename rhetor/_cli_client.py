"""
The ``rhetor`` commands that are clients of a running server: ``ask``,
``chat``, ``providers``, ``budget`` and ``contexts``.

``rhetor.cli`` registers them on its Typer apps.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

import anyio
import typer
from rich.status import Status
from rich.table import Table
from rich.text import Text

from rhetor._cli_common import (
    ApiKey,
    AsJson,
    Component,
    ContextId,
    Host,
    Model,
    Port,
    Provider,
    _Failed,
    _footer,
    _money,
    _print_json,
    _reply_json,
    _run,
    err,
    out,
)
from rhetor.client import (
    Chunk,
    Completed,
    RhetorClient,
    TypingStarted,
    TypingStopped,
)

# -- ask and chat -------------------------------------------------------------


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


def contexts_list(
    host: Host = None, port: Port = None, api_key: ApiKey = None, as_json: AsJson = False
) -> None:
    """
    List the stored contexts, most recently updated first.
    """
    _run(lambda: _list_contexts(host, port, api_key, as_json))


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
