"""Tests for rhetor.observe: request ids, the log's formats, the start-up line, metrics and workers."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rhetor import observe
from rhetor._errors import ValidationError
from rhetor._redact import register_secret
from rhetor._settings import Settings
from rhetor.observe import Attempt, Metrics, Observation
from rhetor.observe._metrics import MAX_LABEL_VALUES

REPO = Path(__file__).resolve().parent.parent
SECRET = "rk-observe-test-secret-0123456789"


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample called ``name`` in a Prometheus text page, by its sorted labels."""
    found: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def formatted(formatter: logging.Formatter, message: str, *args: object, **extra: object) -> str:
    record = logging.LogRecord("rhetor.test", logging.INFO, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    observe.RequestIdFilter().filter(record)
    return formatter.format(record)


# -- request ids -------------------------------------------------------------------------


@pytest.mark.parametrize("good", ["abc", "req-1.2_3:x@y/z+=", "A" * 128, "0"])
def test_a_safe_request_id_is_kept(good: str) -> None:
    """Ids of 1-128 letters, digits and ._:@/+=- are echoed as the client sent them."""
    assert observe.valid_request_id(good) == good
    assert observe.valid_request_id(good.encode()) == good


@pytest.mark.parametrize(
    "bad", ["", "A" * 129, "has space", "new\nline", 'quote"', "<script>", "é", "-leading"]
)
def test_an_unsafe_request_id_is_refused(bad: str) -> None:
    """Empty, over 128 characters, or holding anything outside the safe set: not used."""
    assert observe.valid_request_id(bad) is None
    assert observe.valid_request_id(bad.encode("utf-8")) is None


def test_a_request_id_that_is_not_ascii_bytes_is_refused() -> None:
    """Raw header bytes that are not ASCII are refused, not decoded some other way."""
    assert observe.valid_request_id(b"\xff\xfe") is None


def test_the_bound_observation_gives_the_request_id_and_none_is_discarded() -> None:
    """Bound, its id is the task's; unbound, records go nowhere and the id is None."""
    assert observe.request_id() is None
    observe.current().attempted(Attempt("p", "m", "ok", cost=1.0))
    assert observe.DISCARD.attempts == [] and observe.DISCARD.cost == 0.0
    observation = Observation("rid-1", "GET", "/x")
    observe.bind(observation)
    try:
        assert observe.request_id() == "rid-1"
        observe.current().attempted(Attempt("p", "m", "ok", cost=1.0))
    finally:
        observe.bind(None)
    assert observation.cost == 1.0 and observe.request_id() is None


def test_retries_and_fallbacks_are_counted_from_the_attempts() -> None:
    """A retried call counts as a retry; each candidate left for another as a fallback."""
    o = Observation("r", "POST", "/message")
    for attempt in (
        Attempt("a", "m1", "refused", "budget_exceeded"),
        Attempt("b", "m2", "failed", "rate_limited"),
        Attempt("b", "m2", "failed", "rate_limited", retry=1),
        Attempt("c", "m3", "ok"),
    ):
        o.attempted(attempt)
    assert o.retries == 1 and o.fallbacks == 2


# -- the log's formats ---------------------------------------------------------------------


def test_a_text_line_has_a_utc_timestamp_level_logger_request_id_and_fields() -> None:
    """``<ts>Z LEVEL logger [id] message k=v``; values with spaces are quoted."""
    observe.bind(Observation("rid-7", "GET", "/x"))
    try:
        line = formatted(
            observe.TextFormatter(), "hello %s", "there", rhetor_fields={"a": 1, "b": "x y"}
        )
    finally:
        observe.bind(None)
    stamp, level, logger, rid, *rest = line.split(" ")
    assert stamp.endswith("Z") and "T" in stamp and len(stamp) == 24
    assert (level, logger, rid) == ("INFO", "rhetor.test", "[rid-7]")
    assert " ".join(rest) == 'hello there a=1 b="x y"'


def test_a_json_line_is_one_object_with_the_fields() -> None:
    """The JSON format: ts, level, logger, message, request_id and the fields, one line."""
    line = formatted(
        observe.JSONFormatter(), "done", rhetor_fields={"status": 200}, request_id="r9"
    )
    body = json.loads(line)
    assert "\n" not in line
    assert body["message"] == "done" and body["status"] == 200 and body["request_id"] == "r9"
    assert body["level"] == "INFO" and body["logger"] == "rhetor.test" and body["ts"].endswith("Z")


@pytest.mark.parametrize("formatter", [observe.TextFormatter(), observe.JSONFormatter()])
def test_every_formatted_line_is_redacted(formatter: logging.Formatter) -> None:
    """A configured key or a key-shaped string in a message, a field or a traceback is redacted."""
    register_secret(SECRET)
    try:
        raise RuntimeError(f"failed with {SECRET}")
    except RuntimeError:
        record = logging.LogRecord(
            "other.lib", logging.ERROR, __file__, 1, "key %s", (SECRET,), sys.exc_info()
        )
    record.rhetor_fields = {"component": SECRET, "auth": "Bearer sk-abcdefghijklmnopqrstu"}
    line = formatter.format(record)
    assert SECRET not in line and "sk-abcdefghijklmnop" not in line
    assert "[redacted]" in line and "RuntimeError" in line


def test_configure_logging_sets_the_level_and_one_handler(tmp_path: Path) -> None:
    """Configured twice, the root logger has one handler, at the level asked for."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    try:
        observe.configure_logging("warning", "json", stream)
        handler = observe.configure_logging("warning", "json", stream)
        assert root.handlers == [handler] and root.level == logging.WARNING
        logging.getLogger("rhetor.test").info("hidden")
        logging.getLogger("rhetor.test").warning("shown")
    finally:
        root.handlers[:], root.level = saved
    [line] = stream.getvalue().splitlines()
    assert json.loads(line)["message"] == "shown"


def test_the_start_line_shows_the_configuration_without_secrets(tmp_path: Path) -> None:
    """Keys become [redacted] (absent ones null); a password in a URL is redacted too."""
    settings = Settings(
        data_dir=tmp_path,
        api_key=SECRET,
        openai_api_key="sk-proj-abcdefghijklmnop",
        hermes_url="http://user:hunter22@hermes:8100",
    )
    shown = observe.effective_configuration(settings)
    text = json.dumps(shown)
    assert shown["api_key"] == "[redacted]" and shown["anthropic_api_key"] is None
    assert SECRET not in text and "sk-proj" not in text and "hunter22" not in text
    assert shown["port"] == 8300 and shown["data_dir"] == str(tmp_path)


def test_the_start_line_redacts_the_database_urls_password_and_shows_absent_keys(
    tmp_path: Path,
) -> None:
    """RHETOR_DATABASE_URL's password never reaches the start line; a key not set stays null."""
    env = {
        "RHETOR_DATABASE_URL": "postgresql://user:secret@host/db",
        "RHETOR_DATA_DIR": str(tmp_path),
    }
    settings = Settings.from_env(env)
    assert settings.database_url == "postgresql://user:secret@host/db"
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(observe.TextFormatter())
    logger = logging.getLogger("rhetor.lifecycle")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        observe.log_configuration(settings)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    line = stream.getvalue()
    shown = json.loads(line.split("starting with configuration ", 1)[1])
    assert shown["database_url"] == "postgresql://user:[redacted]@host/db"
    assert "secret" not in line
    assert shown["api_key"] is None and shown["anthropic_api_key"] is None


def test_settings_read_the_log_and_metrics_variables() -> None:
    """RHETOR_LOG_LEVEL, RHETOR_LOG_FORMAT, RHETOR_METRICS and RHETOR_METRICS_PUBLIC, checked."""
    env = {"RHETOR_LOG_LEVEL": "DEBUG", "RHETOR_LOG_FORMAT": "json", "RHETOR_METRICS_PUBLIC": "1"}
    settings = Settings.from_env(env)
    assert (settings.log_level, settings.log_format, settings.metrics_public) == (
        "debug",
        "json",
        True,
    )
    defaults = Settings.from_env({})
    assert (defaults.log_level, defaults.log_format, defaults.metrics_public) == (
        "info",
        "text",
        False,
    )
    assert defaults.metrics and not Settings.from_env({"RHETOR_METRICS": "0"}).metrics
    for name, value in (
        ("RHETOR_LOG_LEVEL", "loud"),
        ("RHETOR_LOG_FORMAT", "xml"),
        ("RHETOR_METRICS_PUBLIC", "maybe"),
        ("RHETOR_METRICS", "2"),
    ):
        with pytest.raises(ValidationError) as caught:
            Settings.from_env({name: value})
        assert caught.value.field == name


# -- metrics --------------------------------------------------------------------------------


def test_a_recorded_request_counts_in_every_per_request_metric() -> None:
    """Requests, latency, overhead, TTFT, tokens, spend, retries, fallbacks, errors, budget."""
    metrics = Metrics()
    o = Observation("r", "POST", "/message", started=0.0)
    o.asked("ui", "chat", None)
    o.attempted(Attempt("openai", "gpt", "refused", "budget_exceeded"))
    o.attempted(Attempt("anthropic", "haiku", "failed", "upstream_server_error", 0.5))
    o.attempted(Attempt("simulated", "echo", "ok", None, 0.25, 10, 20, 4, 0.5, 0))
    o.answered("simulated", "echo")
    o.first_token, o.ended, o.upstream, o.status = 0.5, 1.0, 0.75, 200
    o.budget_noted("downgrade", downgraded=True)
    metrics.record(o)
    text = metrics.render().decode()
    [(labels, count)] = samples(text, "rhetor_requests_total").items()
    assert count == 1 and dict(labels) == {
        "method": "POST",
        "route": "/message",
        "status": "200",
        "component": "ui",
        "task_type": "chat",
        "provider": "simulated",
        "model": "echo",
        "error_type": "",
    }
    tokens = samples(text, "gen_ai_client_token_usage_sum")
    by_type = {dict(k)["gen_ai_token_type"]: v for k, v in tokens.items()}
    assert by_type == {"input": 10, "output": 20, "cached": 4}
    assert list(samples(text, "rhetor_spend_usd_total").values()) == [0.5]
    assert list(samples(text, "rhetor_request_overhead_seconds_sum").values()) == [0.25]
    assert list(samples(text, "gen_ai_server_time_to_first_token_seconds_sum").values()) == [0.5]
    errors = samples(text, "rhetor_provider_errors_total")
    assert {dict(k)["error_type"] for k in errors} == {"upstream_server_error"}
    fallbacks = {dict(k)["provider"] for k in samples(text, "rhetor_provider_fallbacks_total")}
    assert fallbacks == {"openai", "anthropic"}
    events = {dict(k)["event"] for k in samples(text, "rhetor_budget_events_total")}
    assert events == {"refused", "downgraded"}


def test_label_values_a_client_chooses_are_bounded() -> None:
    """Past MAX_LABEL_VALUES components, new ones count as ``other``: no unbounded growth."""
    metrics = Metrics()
    for i in range(MAX_LABEL_VALUES + 50):
        o = Observation("r", "POST", "/message")
        o.asked(f"component-{i}", "chat", None)
        o.status = 200
        metrics.record(o)
    components = {
        dict(k)["component"]: v
        for k, v in samples(metrics.render().decode(), "rhetor_requests_total").items()
    }
    assert len(components) == MAX_LABEL_VALUES + 1 and components["other"] == 50


def test_sampled_gauges_show_providers_budget_and_actors() -> None:
    """Availability, budget left per period, mailboxes, restarts, ledger errors and group commits."""
    metrics = Metrics()
    stats = type("Stats", (), {"name": "router", "mailbox_depth": 3, "restarts": 2, "failed": 1})
    budget = {
        "periods": {"daily": {"spent": 1.5, "remaining": 8.5, "providers": {}}},
        "ledger_errors": {"failed_writes": 4, "invalid_charges": 0},
        "ledger_commits": {"commits": 7, "writes": 40, "seconds": 0.25},
    }
    metrics.sample(providers={"simulated": True, "openai": False}, budget=budget, actors=[stats])
    text = metrics.render().decode()
    assert samples(text, "rhetor_provider_available") == {
        (("provider", "simulated"),): 1.0,
        (("provider", "openai"),): 0.0,
    }
    assert samples(text, "rhetor_budget_remaining_usd") == {
        (("period", "daily"), ("provider", "")): 8.5
    }
    assert samples(text, "rhetor_actor_mailbox_depth") == {(("actor", "router"),): 3.0}
    assert samples(text, "rhetor_actor_restarts") == {(("actor", "router"),): 2.0}
    assert samples(text, "rhetor_ledger_errors")[(("kind", "failed_writes"),)] == 4.0
    assert samples(text, "rhetor_ledger_group_commits") == {(): 7.0}
    assert samples(text, "rhetor_ledger_group_commit_writes") == {(): 40.0}
    assert samples(text, "rhetor_ledger_group_commit_seconds") == {(): 0.25}


_WORKER = """
import sys
from rhetor.observe import Metrics, Observation
metrics = Metrics()
for _ in range(int(sys.argv[1])):
    o = Observation("r", "POST", "/message", started=0.0)
    o.status, o.ended = 200, 0.1
    metrics.record(o)
metrics.in_flight.inc()
print(metrics.render().decode())
"""


@pytest.mark.slow
def test_two_worker_processes_add_up_in_one_multiprocess_directory(tmp_path: Path) -> None:
    """With PROMETHEUS_MULTIPROC_DIR, two processes' counts are summed in either's /metrics text."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(REPO)}
    first = subprocess.run(
        [sys.executable, "-c", _WORKER, "3"], env=env, capture_output=True, text=True, check=True
    )
    second = subprocess.run(
        [sys.executable, "-c", _WORKER, "4"], env=env, capture_output=True, text=True, check=True
    )
    before = samples(first.stdout, "rhetor_requests_total")
    after = samples(second.stdout, "rhetor_requests_total")
    assert list(before.values()) == [3.0] and list(after.values()) == [7.0]
    assert list(samples(second.stdout, "http_server_request_duration_seconds_count").values()) == [
        7.0
    ]
    # Both processes exited: their live gauges are gone once marked dead.
    for pid_file in tmp_path.glob("gauge_livesum_*.db"):
        observe.process_exited(int(pid_file.stem.rsplit("_", 1)[1]), str(tmp_path))
    assert not list(tmp_path.glob("gauge_livesum_*.db"))


def test_the_observe_package_exports_exactly_its_public_names() -> None:
    """rhetor.observe's __all__ is its surface: each name in it is there, and nothing else is public."""
    assert len(set(observe.__all__)) == len(observe.__all__)
    assert all(hasattr(observe, name) for name in observe.__all__)
    public = {n for n in vars(observe) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(observe, n)).__name__ == "module"}
    assert public - modules == set(observe.__all__)


def _access_lines(fmt: str, *, extra_handler: bool = False, drop: bool = False) -> list[str]:
    """The lines configure_logging's handler writes for two observations (a 200, a 502)."""
    root = logging.getLogger()
    access = logging.getLogger("rhetor.access")
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    other = logging.NullHandler()
    dropper = logging.Filter("nothing.matches")
    try:
        observe.configure_logging("info", fmt, stream)  # type: ignore[arg-type]
        if extra_handler:
            root.addHandler(other)
        if drop:
            access.addFilter(dropper)
        for status, path in ((200, f"/v1/chat/completions?api_key={SECRET}"), (502, "/message")):
            o = Observation("req-fast-1", "POST", "/v1/chat/completions", path=path, client="::1")
            o.status = status
            o.attempted(Attempt("openai", "gpt-4o-mini", "ok", input_tokens=3, output_tokens=2))
            o.ended = o.started + 0.25
            observe.access_line(o)
    finally:
        root.handlers[:], root.level = saved
        access.removeFilter(dropper)
    return stream.getvalue().splitlines()


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_an_access_line_written_straight_is_the_line_its_log_record_gives(
    fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alone, configure_logging's handler gets the line without a record; the text is the same."""
    made: list[object] = []
    access = logging.getLogger("rhetor.access")
    original = access.makeRecord

    def counted(*args: object, **kwargs: object) -> logging.LogRecord:
        made.append(args)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(access, "makeRecord", counted)
    straight = _access_lines(fmt)
    assert made == []  # no record was made
    through_logging = _access_lines(fmt, extra_handler=True)  # another handler: records again
    assert len(made) == 2

    def without_time(line: str) -> str:
        if fmt == "json":
            body = json.loads(line)
            body.pop("ts")
            return json.dumps(body, sort_keys=True)
        return line.split(" ", 1)[1]

    assert len(straight) == 2 and [without_time(x) for x in straight] == [
        without_time(x) for x in through_logging
    ]
    assert SECRET not in "".join(straight) and "[redacted]" in straight[0]
    levels = [json.loads(x)["level"] if fmt == "json" else x.split()[1] for x in straight]
    assert levels == ["INFO", "WARNING"]


def test_a_filter_on_the_access_logger_still_decides_what_is_written() -> None:
    assert _access_lines("text", drop=True) == []
    assert len(_access_lines("text")) == 2
