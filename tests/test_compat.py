"""What the OpenAI and Anthropic APIs share (rhetor/edge/_compat.py): model routing, text, error status."""

from __future__ import annotations

import pytest

from rhetor._errors import BudgetExceeded, NotFound, RateLimited, Unauthorized, ValidationError
from rhetor.edge._compat import ALIASES, rhetor_headers, route_model, status_and_headers


def test_an_alias_routes_by_task_and_any_other_name_is_an_exact_model() -> None:
    """``rhetor/<task>`` picks the task with no model; another name is that model, task default."""
    assert route_model("rhetor/code") == {"task_type": "code", "model": None}
    assert route_model("gpt-4o-mini") == {"task_type": "default", "model": "gpt-4o-mini"}
    assert set(ALIASES) >= {"rhetor/code", "rhetor/chat", "rhetor/default"}


def test_an_alias_no_task_has_is_not_found_naming_model() -> None:
    """An unknown ``rhetor/`` alias is a 404 on ``model``, never an exact model name."""
    with pytest.raises(NotFound) as caught:
        route_model("rhetor/poetry")
    assert caught.value.field == "model" and caught.value.kind == "model"


def test_rhetor_headers_name_the_context_and_component_or_none() -> None:
    """X-Rhetor-Context and X-Rhetor-Component are read; absent or empty is None."""
    headers = {"X-Rhetor-Context": "c1", "X-Rhetor-Component": ""}
    assert rhetor_headers(headers) == {"context_id": "c1", "component": None}


def test_both_apis_answer_a_bad_field_400_and_say_when_not_to_retry() -> None:
    """A 422 becomes 400; a budget refusal says x-should-retry false; 429 keeps retry-after; 401 asks for a key."""
    assert status_and_headers(ValidationError("x", "bad")) == (400, {})
    budget = BudgetExceeded("over", period="daily", limit=1.0, spent=1.0)
    assert status_and_headers(budget) == (402, {"x-should-retry": "false"})
    limited = RateLimited("slow down", provider="openai", retry_after=2.5)
    assert status_and_headers(limited) == (429, {"retry-after": "2.5"})
    assert status_and_headers(Unauthorized("no key"))[1] == {
        "WWW-Authenticate": 'Bearer realm="rhetor"'
    }
