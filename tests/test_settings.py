"""Settings: environment variables and their validation."""

from __future__ import annotations

import socket

import pytest

from rhetor import Settings, ValidationError
from rhetor._settings import host_name, serves_every_interface


def test_defaults_from_an_empty_environment() -> None:
    """With nothing set, Rhetor serves on 8300 with the warn policy and no limits."""
    settings = Settings.from_env({})
    assert settings.port == 8300
    assert settings.budget_policy == "warn"
    assert settings.limits == {"daily": 0.0, "weekly": 0.0, "monthly": 0.0}
    assert settings.hermes_url == "http://localhost:8100"
    assert settings.task_config.name == "tasks.json"


def test_the_default_bind_address_is_loopback() -> None:
    """Rhetor serves only this machine unless told to bind elsewhere (RHETOR_HOST_BIND)."""
    assert Settings().host == "127.0.0.1"
    assert Settings.from_env({}).host == "127.0.0.1"
    assert Settings.from_env({"RHETOR_HOST_BIND": ""}).host == "127.0.0.1"
    assert Settings.from_env({"RHETOR_HOST_BIND": "0.0.0.0"}).host == "0.0.0.0"
    assert serves_every_interface("0.0.0.0") and serves_every_interface("::")
    assert not serves_every_interface("127.0.0.1")


def test_allowed_hosts_default_to_the_names_of_this_machine() -> None:
    """Without RHETOR_ALLOWED_HOSTS: localhost, loopback, this host's name, the bind and public hosts."""
    settings = Settings(host="10.1.2.3", public_url="https://Rhetor.Example.org:8443/")
    names = settings.allowed_host_names()
    assert names is not None
    assert {"localhost", "127.0.0.1", "::1", "10.1.2.3", "rhetor.example.org"} <= names
    assert socket.gethostname().lower() in names
    assert "evil.example" not in names
    every = Settings(host="0.0.0.0").allowed_host_names()
    assert every is not None and "0.0.0.0" not in every


def test_allowed_hosts_from_the_environment_replace_the_defaults() -> None:
    """RHETOR_ALLOWED_HOSTS is a comma-separated list; ``*`` allows any host."""
    listed = Settings.from_env({"RHETOR_ALLOWED_HOSTS": " rhetor.internal, Other.Example:8300 ,"})
    assert listed.allowed_hosts == ("rhetor.internal", "Other.Example:8300")
    assert listed.allowed_host_names() == frozenset({"rhetor.internal", "other.example"})
    assert Settings.from_env({"RHETOR_ALLOWED_HOSTS": "*"}).allowed_host_names() is None


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("Example.COM:8300", "example.com"),
        ("localhost.", "localhost"),
        ("[::1]:8300", "::1"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("127.0.0.1:80", "127.0.0.1"),
    ],
)
def test_host_name_drops_port_brackets_case_and_trailing_dot(header: str, name: str) -> None:
    """A Host header and an allow-list entry compare by bare lower-case name."""
    assert host_name(header) == name


def test_environment_variables_are_read() -> None:
    """The documented variables set port, policy, limits and Hermes."""
    settings = Settings.from_env(
        {
            "RHETOR_PORT": "9000",
            "RHETOR_BUDGET_POLICY": "enforce",
            "RHETOR_BUDGET_DAILY_LIMIT": "1.5",
            "RHETOR_BUDGET_MONTHLY_LIMIT": "20",
            "HERMES_API_URL": "",
            "RHETOR_DATA_DIR": "/tmp/x",
            "RHETOR_PROVIDER_TIMEOUT": "15",
            "RHETOR_SHUTDOWN_GRACE": "3",
            "RHETOR_CONTEXT_TOKENS": "2000",
            "RHETOR_DATABASE_START_TIMEOUT": "7.5",
        }
    )
    assert (settings.provider_timeout, settings.shutdown_grace) == (15.0, 3.0)
    assert settings.database_start_timeout == 7.5
    assert Settings.from_env({}).database_start_timeout == 60.0
    assert Settings.from_env({"RHETOR_DATABASE_POOL_SIZE": "3"}).database_pool_size == 3
    assert Settings.from_env({}).database_pool_size == 8
    assert settings.context_token_budget == 2000
    assert (settings.port, settings.budget_policy) == (9000, "enforce")
    assert settings.limits["daily"] == 1.5 and settings.limits["monthly"] == 20
    assert settings.hermes_url is None
    assert str(settings.data_dir) == "/tmp/x"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RHETOR_BUDGET_DAILY_LIMIT", "-1"),
        ("RHETOR_BUDGET_WEEKLY_LIMIT", "lots"),
        ("RHETOR_BUDGET_POLICY", "panic"),
        ("RHETOR_PORT", "eighty"),
        ("RHETOR_REQUEST_TIMEOUT", "nan"),
        ("RHETOR_PROVIDER_TIMEOUT", "inf"),
        ("RHETOR_DATABASE_START_TIMEOUT", "-5"),
        ("RHETOR_DATABASE_START_TIMEOUT", "nan"),
        ("RHETOR_DATABASE_POOL_SIZE", "0"),
        ("RHETOR_DATABASE_POOL_SIZE", "101"),
        ("RHETOR_DATABASE_POOL_SIZE", "many"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    """A malformed variable raises a ValidationError naming it."""
    with pytest.raises(ValidationError) as info:
        Settings.from_env({name: value})
    assert info.value.field == name


def test_keys_never_appear_in_repr() -> None:
    """API keys are hidden from repr, so they never reach logs."""
    settings = Settings(api_key="sekrit", anthropic_api_key="sk-ant", openai_api_key="sk-oai")
    text = repr(settings)
    assert "sekrit" not in text and "sk-ant" not in text and "sk-oai" not in text


def test_the_database_url_and_budget_time_zone_come_from_the_environment() -> None:
    """RHETOR_DATABASE_URL selects PostgreSQL (unset: SQLite); RHETOR_BUDGET_TIMEZONE defaults to UTC."""
    assert Settings.from_env({}).database_url is None
    assert Settings.from_env({}).budget_timezone == "UTC"
    chosen = Settings.from_env(
        {
            "RHETOR_DATABASE_URL": "postgresql://rhetor:pw@db:5432/rhetor",
            "RHETOR_BUDGET_TIMEZONE": "Europe/Paris",
        }
    )
    assert chosen.database_url == "postgresql://rhetor:pw@db:5432/rhetor"
    assert chosen.budget_timezone == "Europe/Paris"
    assert "pw" not in repr(chosen)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RHETOR_DATABASE_URL", "mysql://db/rhetor"),
        ("RHETOR_DATABASE_URL", "/var/lib/rhetor.db"),
        ("RHETOR_BUDGET_TIMEZONE", "Mars/Olympus_Mons"),
        ("RHETOR_BUDGET_TIMEZONE", "../../etc/passwd"),
    ],
)
def test_a_bad_database_url_or_time_zone_names_its_variable(name: str, value: str) -> None:
    """A URL that is not postgresql:// or an unknown zone is refused at start, naming the variable."""
    with pytest.raises(ValidationError) as info:
        Settings.from_env({name: value})
    assert info.value.field == name
