"""
``POST /v1/messages/count_tokens``, as the anthropic SDK's ``messages.count_tokens`` calls it:
Anthropic's models are counted by Anthropic (the body as the SDK itself would send
it), other models by Rhetor's own estimate, and a failing count falls back to it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import anthropic
import httpx
import pytest

from rhetor.providers._anthropic_wire import input_count
from rhetor.providers._wire import MalformedReply
from tests.fakes import Fail, Reply
from tests.fakes.anthropic import counted
from tests.test_compat_tools import ANTHROPIC_TOOL, GPT_MINI, HAIKU, QUESTION, Stack

SYSTEM = "Answer in one word."
MESSAGES: list[Any] = [{"role": "user", "content": QUESTION}]


def count_requests(stack: Stack) -> list[dict[str, Any]]:
    return [r.json for r in stack.anthropic.completions if r.path == "/v1/messages/count_tokens"]


async def test_an_anthropic_model_is_counted_by_anthropic_with_the_sdks_body(
    stack: Stack,
) -> None:
    """Through Rhetor and straight from the SDK, the same body reaches the count endpoint and the same count comes back."""
    params: dict[str, Any] = {
        "model": HAIKU,
        "system": SYSTEM,
        "messages": MESSAGES,
        "tools": [ANTHROPIC_TOOL],
        "thinking": {"type": "enabled", "budget_tokens": 2048},
    }
    raw = await stack.ant.messages.with_raw_response.count_tokens(**params)
    ours = await raw.parse()
    async with anthropic.AsyncAnthropic(
        api_key="sk-ant-upstream", base_url=stack.anthropic.base_url, max_retries=0
    ) as direct:
        reference = await direct.messages.count_tokens(**params)
    through_rhetor, from_sdk = count_requests(stack)
    assert through_rhetor == from_sdk
    assert ours.input_tokens == reference.input_tokens == counted(from_sdk)
    assert raw.headers["X-Rhetor-Counted-By"] == "anthropic"
    assert (raw.headers["X-Rhetor-Provider"], raw.headers["X-Rhetor-Model"]) == (
        "anthropic",
        HAIKU,
    )


async def test_another_familys_model_is_counted_by_rhetors_estimate(stack: Stack) -> None:
    """Nothing goes upstream; the count is the estimate a reservation for the request uses."""
    raw = await stack.ant.messages.with_raw_response.count_tokens(
        model=GPT_MINI, system=SYSTEM, messages=MESSAGES
    )
    async with httpx.AsyncClient(base_url=stack.server.base_url) as http:
        estimate = await http.post(
            "/budget/estimate",
            json={
                "model": GPT_MINI,
                "messages": [{"role": "system", "content": SYSTEM}, *MESSAGES],
            },
        )
    assert raw.headers["X-Rhetor-Counted-By"] == "estimate"
    assert (
        (await raw.parse()).input_tokens == estimate.json()["estimated_tokens"]["input_tokens"] > 0
    )
    assert stack.openai.requests == [] or all(r.method == "GET" for r in stack.openai.requests)
    assert count_requests(stack) == []


async def test_a_failing_count_falls_back_to_the_estimate_and_says_so(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """Anthropic answering 529 to the count: the estimate, the header says so, a warning says why."""
    stack.anthropic.script(Fail.overloaded())
    with caplog.at_level(logging.WARNING, logger="rhetor.router"):
        raw = await stack.ant.messages.with_raw_response.count_tokens(
            model=HAIKU, messages=MESSAGES
        )
    assert raw.headers["X-Rhetor-Counted-By"] == "estimate"
    assert (await raw.parse()).input_tokens > 0
    assert len(count_requests(stack)) == 1
    [line] = [r.getMessage() for r in caplog.records if "could not count tokens" in r.getMessage()]
    assert "overloaded" in line


async def test_counting_reserves_and_bills_nothing(stack: Stack) -> None:
    """No ledger entry, and the next message is the first the fake answers."""
    await stack.ant.messages.count_tokens(model=HAIKU, messages=MESSAGES)
    stack.anthropic.script(Reply("Sunny."))
    message = await stack.ant.messages.create(model=HAIKU, max_tokens=50, messages=MESSAGES)
    assert message.content[0].type == "text" and message.content[0].text == "Sunny."
    async with httpx.AsyncClient(base_url=stack.server.base_url) as http:
        entries = (await http.get("/budget/entries")).json()["entries"]
    assert len(entries) == 1


async def test_a_count_under_a_context_counts_its_window(stack: Stack) -> None:
    """With X-Rhetor-Context the stored turns are counted too, as a message would send them."""
    headers = {"X-Rhetor-Context": "counted"}
    stack.anthropic.script(Reply("It is sunny in Paris today, with a light breeze."))
    await stack.ant.messages.create(
        model=HAIKU, max_tokens=50, messages=MESSAGES, extra_headers=headers
    )
    follow_up = [{"role": "user", "content": "And tomorrow?"}]
    alone = await stack.ant.messages.count_tokens(model=HAIKU, messages=follow_up)
    windowed = await stack.ant.messages.count_tokens(
        model=HAIKU, messages=follow_up, extra_headers=headers
    )
    assert windowed.input_tokens > alone.input_tokens
    sent = count_requests(stack)[-1]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": HAIKU}, "messages"),
        ({"messages": MESSAGES}, "model"),
        ({"model": HAIKU, "messages": []}, "messages"),
    ],
    ids=["no-messages", "no-model", "empty-messages"],
)
async def test_a_bad_count_request_is_anthropics_400_naming_the_field(
    stack: Stack, body: dict[str, Any], field: str
) -> None:
    async with httpx.AsyncClient(base_url=stack.server.base_url) as http:
        response = await http.post("/v1/messages/count_tokens", json=body)
    assert response.status_code == 400
    error = response.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert field in error["error"]["message"]
    assert count_requests(stack) == []


async def test_the_count_route_is_in_the_openapi_document(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.server.base_url) as http:
        document = (await http.get("/openapi.json")).json()
    operation = document["paths"]["/v1/messages/count_tokens"]["post"]
    schema = json.dumps(operation["responses"]["200"])
    assert (
        "input_tokens" in json.dumps(document["components"]) and "text/event-stream" not in schema
    )


@pytest.mark.parametrize(
    "answer",
    [{}, {"input_tokens": "12"}, {"input_tokens": -1}, {"input_tokens": None}, [12], "12"],
    ids=["missing", "text", "negative", "null", "list", "string"],
)
def test_a_count_answer_without_a_token_count_is_malformed(answer: Any) -> None:
    with pytest.raises(MalformedReply):
        input_count(answer)


def test_a_count_answer_reads_its_input_tokens() -> None:
    assert input_count({"input_tokens": 42}) == 42
