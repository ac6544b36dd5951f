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

import typer

from rhetor._cli_client import (
    ask,
    budget,
    chat,
    contexts,
    contexts_delete,
    contexts_list,
    contexts_show,
    providers,
)
from rhetor._cli_server import db_status, db_upgrade, serve

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

# The commands live in _cli_server (serve, db) and _cli_client (the client
# commands); they are registered here, in the order ``--help`` lists them.
app.command()(serve)
app.command()(ask)
app.command()(chat)
app.command()(providers)
app.command()(budget)
contexts_app.callback(invoke_without_command=True)(contexts)
contexts_app.command("list")(contexts_list)
contexts_app.command("show")(contexts_show)
contexts_app.command("delete")(contexts_delete)
db_app.command("status")(db_status)
db_app.command("upgrade")(db_upgrade)


def main() -> None:
    """The ``rhetor`` console script."""
    app()


if __name__ == "__main__":
    main()
