"""Settings: environment variables and their validation."""

from __future__ import annotations

import pytest

from rhetor import Settings, ValidationError


def test_defaults_from_an_empty_environment() -> None:
    """With nothing set, Rhetor serves on 8300 with the warn policy and no limits."""
    settings = Settings.from_env({})
    assert settings.port == 8300
    assert settings.budget_policy == "warn"
    assert settings.limits == {"daily": 0.0, "weekly": 0.0, "monthly": 0.0}
    assert settings.hermes_url == "http://localhost:8100"
    assert settings.task_config.name == "tasks.json"


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
        }
    )
    assert (settings.provider_timeout, settings.shutdown_grace) == (15.0, 3.0)
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
