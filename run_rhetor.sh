#!/usr/bin/env bash
# Rhetor's one entry point for a fresh machine.
#   ./run_rhetor.sh            install what is missing, then serve on port 8300 (embedded defaults)
#   ./run_rhetor.sh test       install what is missing, then lint, type-check and run the whole test suite
#   ./run_rhetor.sh serve ...  serve, passing flags to `rhetor serve` (--host, --port, --config)
set -euo pipefail
cd "$(dirname "$0")"

VENV="${RHETOR_VENV:-.venv}"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
# Reinstall only when pyproject.toml changed since the last install.
stamp="$VENV/.rhetor-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e '.[dev]'
    touch "$stamp"
fi

cmd="${1:-serve}"
[ $# -gt 0 ] && shift
case "$cmd" in
    test)
        "$VENV/bin/ruff" check .
        "$VENV/bin/ruff" format --check .
        "$VENV/bin/mypy"
        exec "$VENV/bin/pytest" -q "$@"
        ;;
    serve)
        exec "$VENV/bin/python" -m rhetor serve "$@"
        ;;
    *)
        exec "$VENV/bin/rhetor" "$cmd" "$@"
        ;;
esac
