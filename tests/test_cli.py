"""
The ``rhetor`` command line, driven as a subprocess against a real server.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import ServerInfo, settings_for
from tests.server_thread import ServerThread

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerInfo]:
    """One plain server for the module."""
    with ServerThread(settings_for(tmp_path_factory.mktemp("cli"))) as info:
        yield info


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RHETOR_")}
    env.update(COLUMNS="200", NO_COLOR="1", PYTHONPATH=str(ROOT), **extra)
    return env


def rhetor(
    server: ServerInfo | None, *args: str, stdin: str = "", port: int | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m rhetor.cli ARGS`` against ``server`` (or ``port``)."""
    env = _env(RHETOR_HOST="127.0.0.1", RHETOR_PORT=str(port or (server and server.port)))
    return subprocess.run(
        [sys.executable, "-m", "rhetor.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_ask_prints_the_reply_then_model_provider_and_cost(server: ServerInfo) -> None:
    """``rhetor ask`` prints the streamed reply, then a line with provider/model and cost."""
    done = rhetor(server, "ask", "What is Tekton?", "--context", "cli-ask")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "[simulated] You said: What is Tekton?"
    assert "simulated/simulated-echo" in lines[1]
    assert "$0.000000" in lines[1]
    assert "context cli-ask" in lines[1]


def test_ask_json_prints_the_whole_reply(server: ServerInfo) -> None:
    """``rhetor ask --json`` prints the reply JSON: message, model, provider, usage, cost."""
    done = rhetor(server, "ask", "hello", "--json", "--task-type", "code")
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    assert reply["message"] == "[simulated] You said: hello"
    assert (reply["provider"], reply["model"]) == ("simulated", "simulated-echo")
    assert reply["task_type"] == "code"
    assert reply["usage"]["total_tokens"] > 0
    assert reply["cost"] == 0.0
    assert "chunk" not in reply


@pytest.mark.slow
def test_chat_streams_replies_shows_typing_and_keeps_context(server: ServerInfo) -> None:
    """``rhetor chat`` answers each line, says it is typing, and remembers earlier turns."""
    done = rhetor(server, "chat", "--context", "cli-chat", stdin="hello\nagain\n")
    assert done.returncode == 0, done.stderr
    assert "you> [simulated] You said: hello" in done.stdout
    assert "[simulated] You said: again (I can see 2 earlier messages.)" in done.stdout
    assert done.stderr.count("Rhetor is typing") == 2


def test_chat_json_prints_one_reply_per_line(server: ServerInfo) -> None:
    """``rhetor chat --json`` prints each turn's reply as one JSON line."""
    done = rhetor(server, "chat", "--json", stdin="one\ntwo\n/quit\nignored\n")
    assert done.returncode == 0, done.stderr
    replies = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["message"] for r in replies] == [
        "[simulated] You said: one",
        "[simulated] You said: two (I can see 2 earlier messages.)",
    ]
    assert replies[0]["context"] == replies[1]["context"]
    assert replies[0]["context"].startswith("cli:")


def test_providers_prints_a_table_and_json(server: ServerInfo) -> None:
    """``rhetor providers`` shows each provider and its models; --json gives the raw answer."""
    table = rhetor(server, "providers")
    assert table.returncode == 0, table.stderr
    assert "simulated" in table.stdout
    assert "simulated-echo" in table.stdout
    assert "yes" in table.stdout
    raw = json.loads(rhetor(server, "providers", "--json").stdout)
    assert raw["providers"]["simulated"]["available"] is True


def test_budget_prints_each_period_with_a_bar_and_json(server: ServerInfo) -> None:
    """``rhetor budget`` has a row per period; --json gives policy and periods."""
    table = rhetor(server, "budget")
    assert table.returncode == 0, table.stderr
    for period in ("daily", "weekly", "monthly"):
        assert period in table.stdout
    assert "no limit" in table.stdout
    assert "policy: warn" in table.stdout
    raw = json.loads(rhetor(server, "budget", "--json").stdout)
    assert set(raw["periods"]) == {"daily", "weekly", "monthly"}


def test_contexts_list_show_and_delete(server: ServerInfo) -> None:
    """``rhetor contexts`` lists, ``show ID`` prints the turns, ``delete ID`` forgets it."""
    assert rhetor(server, "ask", "keep this", "--context", "cli-ctx").returncode == 0
    listed = rhetor(server, "contexts")
    assert listed.returncode == 0, listed.stderr
    assert "cli-ctx" in listed.stdout
    assert "cli-ctx" in [c["id"] for c in json.loads(rhetor(server, "contexts", "--json").stdout)]
    shown = rhetor(server, "contexts", "show", "cli-ctx")
    assert "user: keep this" in shown.stdout
    assert "assistant: [simulated] You said: keep this" in shown.stdout
    deleted = rhetor(server, "contexts", "delete", "cli-ctx", "--json")
    assert json.loads(deleted.stdout) == {"deleted": True, "id": "cli-ctx"}
    gone = rhetor(server, "contexts", "show", "cli-ctx")
    assert gone.returncode == 1
    assert gone.stderr.startswith("error: no context 'cli-ctx'")
    assert "Traceback" not in gone.stderr


def test_a_server_that_is_down_prints_one_error_line_and_exits_1() -> None:
    """Any client command against a dead port prints ``error: cannot connect ...`` only."""
    done = rhetor(None, "ask", "hi", port=_free_port())
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: cannot connect to Rhetor at http://127.0.0.1:")


def test_bad_input_is_reported_by_the_server_as_one_line(server: ServerInfo) -> None:
    """A value the server rejects comes back as one ``error:`` line naming the field."""
    done = rhetor(server, "ask", "hi", "--max-tokens", "0")
    assert done.returncode == 1
    assert done.stderr.strip() == "error: max_tokens: must be at least 1"


@pytest.mark.slow
def test_serve_runs_the_server_until_sigint(tmp_path: Path) -> None:
    """``rhetor serve --host --port --data-dir`` serves /health and exits 0 on SIGINT."""
    port = _free_port()
    env = _env(HERMES_API_URL="", RHETOR_SIMULATED="always")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rhetor.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "data"),
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).json()
                break
            except httpx.TransportError:
                assert process.poll() is None, process.communicate()[1]
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        assert health["status"] == "healthy"
        assert (tmp_path / "data").is_dir()
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=20)
        assert process.returncode == 0, stderr
        assert "Traceback" not in stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


# -- rhetor db -------------------------------------------------------------------------


def db(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``rhetor db ARGS`` (it talks to no server)."""
    return rhetor(None, "db", *args, port=8300)


def test_db_status_and_upgrade_on_sqlite(tmp_path: Path) -> None:
    """On SQLite, status lists each file as pending until upgrade opens (creates) it."""
    data = str(tmp_path / "data")
    before = json.loads(db("status", "--data-dir", data, "--json").stdout)
    assert before["database"]["backend"] == "sqlite" and before["pending"] == 3
    upgraded = db("upgrade", "--data-dir", data)
    assert upgraded.returncode == 0 and "up to date" in upgraded.stdout
    after = json.loads(db("status", "--data-dir", data, "--json").stdout)
    assert after["pending"] == 0


def test_db_status_and_upgrade_on_postgresql(pg_url: str, pg: Any) -> None:
    """On PostgreSQL, status names every migration with when it was applied; upgrade has nothing left to do."""
    status = db("status", "--database-url", pg_url, "--json")
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert shown["database"]["backend"] == "postgresql" and shown["pending"] == 0
    assert {m["part"] for m in shown["migrations"]} == {"ledger", "history", "library", "changes"}
    upgraded = db("upgrade", "--database-url", pg_url, "--json")
    assert json.loads(upgraded.stdout) == {"applied": []}


def test_db_against_a_database_that_does_not_answer_is_one_error_line() -> None:
    """No server at the URL: exit status 1 and one line on stderr, no traceback, no password."""
    result = db("status", "--database-url", "postgresql://u:secret@127.0.0.1:9/x")
    assert result.returncode == 1
    assert result.stderr.startswith("error: the database cannot be reached")
    assert "Traceback" not in result.stderr and "secret" not in result.stderr


@pytest.mark.slow
def test_serve_logs_one_json_line_per_record_with_the_flags_and_env(tmp_path: Path) -> None:
    """
    ``python -m rhetor serve`` (what run_rhetor.sh runs) with RHETOR_LOG_FORMAT=json
    and --log-level debug: every stderr line is a JSON record with a timestamp, from
    the start-up configuration (key redacted) through the access line to the stop.
    """
    port = _free_port()
    key = "rk-cli-log-test-key-0123456789"
    env = _env(
        HERMES_API_URL="", RHETOR_SIMULATED="always", RHETOR_LOG_FORMAT="json", RHETOR_API_KEY=key
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rhetor",
            "serve",
            "--port",
            str(port),
            "--log-level",
            "debug",
            "--data-dir",
            str(tmp_path / "data"),
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                reply = httpx.post(
                    f"http://127.0.0.1:{port}/message",
                    json={"message": "hi", "component": "cli-test"},
                    headers={"X-API-Key": key, "X-Request-ID": "cli-1"},
                    timeout=5,
                )
                break
            except httpx.TransportError:
                assert process.poll() is None, process.communicate()[1]
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        assert reply.status_code == 200
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    records = [json.loads(line) for line in stderr.splitlines()]
    assert all(r["ts"].endswith("Z") and r["level"] for r in records)
    messages = [r["message"] for r in records]
    assert any(m.startswith("starting with configuration") for m in messages)
    assert any(r["level"] == "DEBUG" for r in records)
    [access] = [r for r in records if r["logger"] == "rhetor.access" and r["path"] == "/message"]
    assert access["request_id"] == "cli-1" and access["component"] == "cli-test"
    assert access["status"] == 200 and access["provider"] == "simulated"
    assert messages[-1] == "Rhetor stopped"
    assert key not in stderr
