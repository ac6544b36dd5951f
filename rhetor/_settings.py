"""
Rhetor's settings: one frozen object, read from the environment by default.
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import attrs

from rhetor._errors import ValidationError

__all__ = [
    "LOG_FORMATS",
    "LOG_LEVELS",
    "POLICIES",
    "BudgetPolicy",
    "LogFormat",
    "Settings",
    "check_database_url",
    "check_timezone",
    "host_name",
    "serves_every_interface",
]

BudgetPolicy = Literal["ignore", "warn", "enforce"]
POLICIES: tuple[BudgetPolicy, ...] = ("ignore", "warn", "enforce")
LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

# Bind addresses that mean every interface of the machine.
_EVERY_INTERFACE = frozenset({"0.0.0.0", "::", ""})

_PACKAGE_TASKS = Path(__file__).parent / "data" / "tasks.json"


def _default_task_config() -> Path:
    # Prefer the repository's config/ (what an operator edits); fall back to the
    # copy shipped inside the package so an installed wheel works anywhere.
    repo = Path(__file__).resolve().parent.parent / "config" / "tasks.json"
    return repo if repo.exists() else _PACKAGE_TASKS


def host_name(host: str) -> str:
    """
    The name in a Host header (or an allow-list entry): lower case, no port, no brackets.

    ``Example.COM:8300`` is ``example.com``, ``[::1]:8300`` is ``::1`` and
    ``localhost.`` is ``localhost``.
    """
    host = host.strip().lower()
    if host.startswith("["):  # [IPv6] or [IPv6]:port
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:  # name:port (a bare IPv6 address has several colons)
        host = host.partition(":")[0]
    return host.rstrip(".")


def serves_every_interface(host: str) -> bool:
    """Whether binding ``host`` listens on every interface of the machine."""
    return host in _EVERY_INTERFACE


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValidationError(name, f"must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise ValidationError(name, f"must be a finite number, got {raw!r}")
    if value < 0:
        raise ValidationError(name, f"must not be negative, got {value}")
    return value


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValidationError(name, f"must be a whole number, got {raw!r}") from None


# The most connections one process's pool may hold.
MAX_POOL_SIZE = 100


def _pool_size(size: int, field: str) -> int:
    """``size`` if it is 1 to MAX_POOL_SIZE; ValidationError on ``field`` if not."""
    if not 1 <= size <= MAX_POOL_SIZE:
        raise ValidationError(field, f"must be 1-{MAX_POOL_SIZE}, got {size}")
    return size


def check_timezone(name: str, field: str = "budget_timezone") -> str:
    """
    ``name`` if it is an IANA time zone (``UTC``, ``Europe/Paris``); ValidationError on ``field`` if not.
    """
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if not isinstance(name, str) or not name.strip():
        raise ValidationError(field, "must be a time zone name such as UTC or Europe/Paris")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(field, f"unknown time zone {name!r}") from None
    return name


def check_database_url(url: str | None, field: str = "database_url") -> str | None:
    """
    ``url`` if it is None or a ``postgresql://`` (or ``postgres://``) URL; ValidationError on ``field`` if not.

    Only the scheme is checked here; the server says what else is wrong when Rhetor connects.
    """
    if url is None:
        return None
    if not isinstance(url, str) or urlsplit(url).scheme not in ("postgresql", "postgres"):
        raise ValidationError(field, "must be a postgresql:// URL")
    return url


def _log_format(value: str, field: str) -> LogFormat:
    for fmt in LOG_FORMATS:
        if value == fmt:
            return fmt
    raise ValidationError(field, f"must be text or json, got {value!r}")


def _log_level(value: str, field: str) -> str:
    level = value.strip().lower()
    if level not in LOG_LEVELS:
        raise ValidationError(field, f"must be one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return level


def _flag(env: Mapping[str, str], name: str, *, default: bool = False) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ValidationError(name, f"must be 1 or 0, got {raw!r}")


def _policy(value: str, field: str) -> BudgetPolicy:
    for policy in POLICIES:
        if value == policy:
            return policy
    raise ValidationError(field, f"must be one of {', '.join(POLICIES)}, got {value!r}")


@attrs.frozen
class Settings:
    """
    Everything Rhetor needs to start; ``Settings()`` gives the embedded defaults.

    ``from_env()`` reads the documented environment variables. API keys are held
    here but never printed: ``repr`` hides them.
    """

    # Loopback by default: serving other machines is a choice (RHETOR_HOST_BIND).
    host: str = "127.0.0.1"
    port: int = 8300
    data_dir: Path = attrs.field(factory=lambda: Path("data"), converter=Path)
    task_config: Path = attrs.field(factory=_default_task_config, converter=Path)
    price_overrides: Path | None = None
    budget_policy: BudgetPolicy = "warn"
    daily_limit: float = 0.0
    weekly_limit: float = 0.0
    monthly_limit: float = 0.0
    hermes_url: str | None = None
    public_url: str | None = None
    api_key: str | None = attrs.field(default=None, repr=False)
    anthropic_api_key: str | None = attrs.field(default=None, repr=False)
    anthropic_base_url: str | None = None
    openai_api_key: str | None = attrs.field(default=None, repr=False)
    openai_base_url: str | None = None
    ollama_base_url: str | None = None
    # "auto": the simulated provider joins routing chains only when no real
    # provider is available; "always" / "never" force it.
    simulated: Literal["auto", "always", "never"] = "auto"
    simulated_chunk_delay: float = 0.0
    cors_origins: tuple[str, ...] = ()
    # Host header names served (against DNS rebinding); empty: the defaults of
    # allowed_host_names(), ("*",): any host.
    allowed_hosts: tuple[str, ...] = ()
    max_body_bytes: int = 1024 * 1024
    request_timeout: float = 120.0
    # Seconds one provider call may take (a fallback candidate gets at most half
    # of what is left of the request's deadline).
    provider_timeout: float = 60.0
    # Seconds the Hypercorn graceful shutdown gives in-flight requests.
    shutdown_grace: float = 10.0
    context_token_budget: int = 8000
    # PostgreSQL for every store (the ledger, contexts, templates and prompts,
    # runtime settings), shared by any number of processes; None: SQLite
    # files under data_dir, for one process. Never printed: it may hold a password.
    database_url: str | None = attrs.field(default=None, repr=False)
    # Seconds a starting process keeps trying to reach a database that is out
    # of reach (refusing, restarting) before it gives up; 0: it gives up at once.
    database_start_timeout: float = 60.0
    # Connections of each process's pool (RHETOR_DATABASE_POOL_SIZE); a process
    # opens up to four more of its own (docs/deployment.md, "How many").
    database_pool_size: int = 8
    # The zone whose midnights, Mondays and 1sts start the budget's periods.
    budget_timezone: str = "UTC"
    # The log's threshold and format (rhetor serve's --log-level and --log-format).
    log_level: str = "info"
    log_format: LogFormat = "text"
    # Record metrics and serve GET /metrics (RHETOR_METRICS=0 turns both off).
    metrics: bool = True
    # GET /metrics without the API key (RHETOR_METRICS_PUBLIC=1), for a scraper that has none.
    metrics_public: bool = False
    # Processes serving the port (rhetor serve --workers); above 1 needs PostgreSQL.
    workers: int = 1
    # Serve on Hypercorn's own per-request machinery (RHETOR_STOCK_HYPERCORN=1),
    # without Rhetor's performance adjustments (rhetor.edge._hypercorn).
    stock_hypercorn: bool = False

    def __attrs_post_init__(self) -> None:
        check_database_url(self.database_url)
        check_timezone(self.budget_timezone)
        for name in ("daily_limit", "weekly_limit", "monthly_limit"):
            if getattr(self, name) < 0:
                raise ValidationError(name, "must not be negative")
        _policy(self.budget_policy, "budget_policy")
        if not 0 <= self.port <= 65535:
            raise ValidationError("port", f"must be 0-65535, got {self.port}")
        if self.max_body_bytes <= 0:
            raise ValidationError("max_body_bytes", "must be positive")
        for name in ("request_timeout", "provider_timeout"):
            if getattr(self, name) <= 0:
                raise ValidationError(name, "must be positive")
        if self.context_token_budget <= 0:
            raise ValidationError("context_token_budget", "must be positive")
        _pool_size(self.database_pool_size, "database_pool_size")
        _log_level(self.log_level, "log_level")
        _log_format(self.log_format, "log_format")
        if self.workers < 1:
            raise ValidationError("workers", f"must be at least 1, got {self.workers}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """
        Read the documented ``RHETOR_*`` and provider variables.

        Error handling: a malformed value raises :class:`ValidationError`
        naming the variable.
        """
        env = os.environ if env is None else env
        origins = tuple(
            o.strip() for o in env.get("RHETOR_CORS_ORIGINS", "").split(",") if o.strip()
        )
        simulated = env.get("RHETOR_SIMULATED", "auto")
        if simulated not in ("auto", "always", "never"):
            raise ValidationError("RHETOR_SIMULATED", "must be auto, always or never")
        overrides = env.get("RHETOR_PRICE_OVERRIDES")
        hosts = tuple(
            h.strip() for h in env.get("RHETOR_ALLOWED_HOSTS", "").split(",") if h.strip()
        )
        return cls(
            host=env.get("RHETOR_HOST_BIND") or "127.0.0.1",
            port=_int(env, "RHETOR_PORT", 8300),
            data_dir=Path(env.get("RHETOR_DATA_DIR", "data")),
            task_config=Path(env["RHETOR_TASK_CONFIG"])
            if env.get("RHETOR_TASK_CONFIG")
            else _default_task_config(),
            price_overrides=Path(overrides) if overrides else None,
            budget_policy=_policy(env.get("RHETOR_BUDGET_POLICY", "warn"), "RHETOR_BUDGET_POLICY"),
            daily_limit=_float(env, "RHETOR_BUDGET_DAILY_LIMIT", 0.0),
            weekly_limit=_float(env, "RHETOR_BUDGET_WEEKLY_LIMIT", 0.0),
            monthly_limit=_float(env, "RHETOR_BUDGET_MONTHLY_LIMIT", 0.0),
            hermes_url=env.get("HERMES_API_URL", "http://localhost:8100") or None,
            public_url=env.get("RHETOR_PUBLIC_URL") or None,
            api_key=env.get("RHETOR_API_KEY") or None,
            anthropic_api_key=env.get("ANTHROPIC_API_KEY") or None,
            anthropic_base_url=env.get("ANTHROPIC_BASE_URL") or None,
            openai_api_key=env.get("OPENAI_API_KEY") or None,
            openai_base_url=env.get("OPENAI_BASE_URL") or None,
            ollama_base_url=env.get("OLLAMA_BASE_URL") or None,
            simulated=simulated,  # type: ignore[arg-type]  # checked just above
            simulated_chunk_delay=_float(env, "RHETOR_SIMULATED_CHUNK_DELAY", 0.0),
            cors_origins=origins,
            allowed_hosts=hosts,
            max_body_bytes=_int(env, "RHETOR_MAX_BODY_BYTES", 1024 * 1024),
            request_timeout=_float(env, "RHETOR_REQUEST_TIMEOUT", 120.0),
            provider_timeout=_float(env, "RHETOR_PROVIDER_TIMEOUT", 60.0),
            shutdown_grace=_float(env, "RHETOR_SHUTDOWN_GRACE", 10.0),
            context_token_budget=_int(env, "RHETOR_CONTEXT_TOKENS", 8000),
            database_url=check_database_url(
                env.get("RHETOR_DATABASE_URL") or None, "RHETOR_DATABASE_URL"
            ),
            database_start_timeout=_float(env, "RHETOR_DATABASE_START_TIMEOUT", 60.0),
            database_pool_size=_pool_size(
                _int(env, "RHETOR_DATABASE_POOL_SIZE", 8), "RHETOR_DATABASE_POOL_SIZE"
            ),
            budget_timezone=check_timezone(
                env.get("RHETOR_BUDGET_TIMEZONE") or "UTC", "RHETOR_BUDGET_TIMEZONE"
            ),
            log_level=_log_level(env.get("RHETOR_LOG_LEVEL") or "info", "RHETOR_LOG_LEVEL"),
            log_format=_log_format(env.get("RHETOR_LOG_FORMAT") or "text", "RHETOR_LOG_FORMAT"),
            metrics=_flag(env, "RHETOR_METRICS", default=True),
            metrics_public=_flag(env, "RHETOR_METRICS_PUBLIC"),
            stock_hypercorn=_flag(env, "RHETOR_STOCK_HYPERCORN"),
            workers=_int(env, "RHETOR_WORKERS", 1),
        )

    def allowed_host_names(self) -> frozenset[str] | None:
        """
        The Host header names this server answers (lower case, no port); None: any.

        ``allowed_hosts`` when set (``*`` allows any). Otherwise the names that
        can only mean this machine: ``localhost``, ``127.0.0.1``, ``::1``, the
        machine's own name, the bind address (unless it is every interface)
        and the host of ``public_url``. A DNS-rebinding page reaches the
        server under the attacker's domain name, which none of these is.
        """
        if "*" in self.allowed_hosts:
            return None
        if self.allowed_hosts:
            return frozenset(host_name(h) for h in self.allowed_hosts)
        names = {"localhost", "localhost.localdomain", "127.0.0.1", "::1", socket.gethostname()}
        if self.host not in _EVERY_INTERFACE:
            names.add(self.host)
        if self.public_url:
            public = urlsplit(self.public_url).hostname
            if public:
                names.add(public)
        return frozenset(host_name(h) for h in names)

    @property
    def limits(self) -> dict[str, float]:
        """The configured global limits by period; 0 means no limit."""
        return {
            "daily": self.daily_limit,
            "weekly": self.weekly_limit,
            "monthly": self.monthly_limit,
        }
