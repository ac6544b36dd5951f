"""
``python -m rhetor``: the same as the ``rhetor`` console script.

Until ``rhetor.cli`` exists it falls back to serving with
``Settings.from_env()`` (plus ``--host``/``--port``), so ``./run_rhetor.sh``
always works.
"""

from __future__ import annotations

import argparse
import sys


def _fallback(argv: list[str]) -> None:
    from rhetor._settings import Settings
    from rhetor.edge._server import run

    parser = argparse.ArgumentParser(prog="python -m rhetor")
    parser.add_argument("command", nargs="?", default="serve", choices=["serve"])
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    changes = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if changes:
        import attrs

        settings = attrs.evolve(settings, **changes)
    run(settings)  # configures logging from settings (RHETOR_LOG_LEVEL, RHETOR_LOG_FORMAT)


def main() -> None:
    try:
        from rhetor.cli import main as cli_main
    except ModuleNotFoundError as exc:
        if exc.name != "rhetor.cli":
            raise
        _fallback(sys.argv[1:])
    else:
        cli_main()


if __name__ == "__main__":
    main()
