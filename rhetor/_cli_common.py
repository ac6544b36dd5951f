"""
What every ``rhetor`` command shares: the consoles, the option types, and
turning a failure into one line on stderr.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import anyio
import typer
from rich.console import Console
from rich.text import Text

from rhetor.client import Reply, RhetorClientError

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
