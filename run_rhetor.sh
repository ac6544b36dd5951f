#!/usr/bin/env bash
# Rhetor's one entry point for a fresh machine.
#   ./run_rhetor.sh            install what is missing, then serve on port 8300 (embedded defaults)
#   ./run_rhetor.sh test       install what is missing, then lint, type-check and run the whole test suite
#                              (the JavaScript client's tests in clients/js, then pytest, which
#                              includes the web console's tests in Debian's Chromium)
#   ./run_rhetor.sh serve ...  serve, passing flags to `rhetor serve` (--host, --port, --config,
#                              --log-level debug|info|warning|error, --log-format text|json)
# Logging also follows RHETOR_LOG_LEVEL (default info) and RHETOR_LOG_FORMAT (default text);
# see docs/observability.md for the access log, /metrics, /ready and tracing.
set -euo pipefail
cd "$(dirname "$0")"

VENV="${RHETOR_VENV:-.venv}"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
# Reinstall only when pyproject.toml or constraints.txt changed since the last install.
# constraints.txt pins every package to the versions the gate last passed with.
stamp="$VENV/.rhetor-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -c constraints.txt -e '.[dev]'
    touch "$stamp"
fi

# The JavaScript client's tests (clients/js): Node's own runner against real
# Rhetor servers started from this venv, then tsc over the type declarations.
js_tests() {
    if ! command -v node >/dev/null || ! command -v npm >/dev/null \
        || ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)'; then
        echo "error: the JavaScript client's tests need Node.js 20 or later and npm" >&2
        return 1
    fi
    local js=clients/js python
    python="$(cd "$VENV" && pwd)/bin/python"
    # Install from package-lock.json only when it changed since the last install.
    if [ ! -f "$js/node_modules/.rhetor-installed" ] \
        || [ "$js/package-lock.json" -nt "$js/node_modules/.rhetor-installed" ]; then
        (cd "$js" && npm ci --no-audit --no-fund --prefer-offline --loglevel=error)
        touch "$js/node_modules/.rhetor-installed"
    fi
    (cd "$js" && RHETOR_PYTHON="$python" npm test --silent)
}

# The web console's browser tests drive Debian's Chromium (never a downloaded browser);
# .ci/run installs it. Without it they fail, saying so; the rest of the suite still runs.
check_chromium() {
    local chromium="${RHETOR_TEST_CHROMIUM:-/usr/bin/chromium}"
    if [ ! -x "$chromium" ]; then
        echo "warning: $chromium is missing, so the console's browser tests will fail;" \
            "install it with: apt-get install -y chromium" >&2
    fi
}

cmd="${1:-serve}"
[ $# -gt 0 ] && shift
case "$cmd" in
    test)
        "$VENV/bin/ruff" check .
        "$VENV/bin/ruff" format --check .
        "$VENV/bin/mypy"
        js_tests
        check_chromium
        exec "$VENV/bin/pytest" -q "$@"
        ;;
    serve)
        exec "$VENV/bin/python" -m rhetor serve "$@"
        ;;
    *)
        exec "$VENV/bin/rhetor" "$cmd" "$@"
        ;;
esac
