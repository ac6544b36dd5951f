"""
A request every upstream refuses as such (a bad request, a prompt over the context
window) is a 400 to the client, not a 503 its SDK would retry; any other failure
among the attempts keeps the 503.
"""

from __future__ import annotations

import anthropic
import openai
import pytest

from rhetor._errors import (
    AllProvidersFailed,
    AllProvidersRefused,
    BadRequest,
    ContextTooLong,
    Overloaded,
)
from tests.fakes import Fail
from tests.test_compat_tools import GPT_MINI, HAIKU, QUESTION, Stack


async def test_an_upstream_refusal_reaches_the_anthropic_sdk_as_a_400_not_retried(
    stack: Stack,
) -> None:
    stack.anthropic.script(Fail.bad_request("thinking.budget_tokens: must be >= 1024"))
    async with anthropic.AsyncAnthropic(
        base_url=stack.server.base_url, api_key="any", max_retries=2
    ) as client:
        with pytest.raises(anthropic.BadRequestError) as caught:
            await client.messages.create(
                model=HAIKU, max_tokens=50, messages=[{"role": "user", "content": QUESTION}]
            )
    assert "budget_tokens" in str(caught.value)
    assert len(stack.anthropic.completions) == 1  # the SDK did not retry


async def test_a_context_overflow_reaches_the_openai_sdk_as_a_400_not_retried(
    stack: Stack,
) -> None:
    stack.openai.script(Fail.context_too_long())
    async with openai.AsyncOpenAI(
        base_url=f"{stack.server.base_url}/v1", api_key="any", max_retries=2
    ) as client:
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(
                model=GPT_MINI, messages=[{"role": "user", "content": QUESTION}]
            )
    assert len(stack.openai.completions) == 1


def test_only_refusals_make_a_400_and_the_code_stays() -> None:
    refused = AllProvidersFailed.of(
        [
            ("a", "a-1", BadRequest("no", provider="a")),
            ("b", "b-1", ContextTooLong("long", provider="b")),
        ]
    )
    assert isinstance(refused, AllProvidersRefused) and refused.status == 400
    assert refused.code == "all_providers_failed"
    mixed = AllProvidersFailed.of(
        [
            ("a", "a-1", BadRequest("no", provider="a")),
            ("b", "b-1", Overloaded("busy", provider="b")),
        ]
    )
    assert type(mixed) is AllProvidersFailed and mixed.status == 503
    assert AllProvidersFailed.of([]).status == 503
