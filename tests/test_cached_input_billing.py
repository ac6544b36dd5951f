"""
Input the upstream read from its prompt cache is billed at the model's cached-input rate.

A real server relays the openai SDK's requests to the fake OpenAI and Anthropic
upstreams, which report cached input in their own usage shapes
(``prompt_tokens_details.cached_tokens``, ``cache_read_input_tokens``); the cost
Rhetor answers with (``X-Rhetor-Cost``) and records in its ledger prices those
tokens at the bundled table's ``cache_read_mtok``. Input Anthropic wrote to its
cache (``cache_creation_input_tokens``) costs its ``cache_write_mtok``, and
``cache_write_1h_mtok`` for what it keeps an hour.
"""

from __future__ import annotations

import anthropic
import attrs
import httpx
import pytest

from rhetor._content import Passthrough
from rhetor._types import LLMRequest
from rhetor.budget._pricing import Pricer
from rhetor.routing._billing import asks_to_cache
from tests.fakes import Reply
from tests.test_compat_tools import GPT_MINI, HAIKU, Stack

# (provider, model, USD per Mtok of input, of cached input, of output), the bundled table's.
PRICES = [("openai", GPT_MINI, 0.15, 0.075, 0.6), ("anthropic", HAIKU, 1.0, 0.1, 5.0)]


@pytest.mark.parametrize(("provider", "model", "per_in", "per_cached", "per_out"), PRICES)
async def test_cached_input_is_billed_at_the_cached_rate(
    stack: Stack, provider: str, model: str, per_in: float, per_cached: float, per_out: float
) -> None:
    """4000 input tokens of which 3000 cached, 100 output: the cost and the ledger price the 3000 at the cached rate."""
    stack.fake(provider).script(
        Reply("ok", input_tokens=4_000, output_tokens=100, cached_tokens=3_000)
    )
    raw = await stack.oai.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hi"}]
    )
    completion = raw.parse()
    assert completion.usage is not None and completion.usage.prompt_tokens == 4_000
    details = completion.usage.prompt_tokens_details
    assert details is not None and details.cached_tokens == 3_000
    expected = (1_000 * per_in + 3_000 * per_cached + 100 * per_out) / 1_000_000
    assert float(raw.headers["X-Rhetor-Cost"]) == pytest.approx(expected)
    full = (4_000 * per_in + 100 * per_out) / 1_000_000
    assert float(raw.headers["X-Rhetor-Cost"]) < full
    async with httpx.AsyncClient(base_url=stack.server.base_url, verify=False) as http:
        entries = (await http.get("/budget/entries")).json()
    [entry] = entries["entries"]
    assert entry["cost"] == pytest.approx(expected)


# claude-haiku-4-5 in the bundled table: USD per Mtok of input, of a 5-minute cache
# write, of a one-hour one, of a cache read, of output.
HAIKU_RATES = {"in": 1.0, "write": 1.25, "write_1h": 2.0, "read": 0.1, "out": 5.0}


async def test_cache_writes_are_billed_at_the_write_rates(
    stack: Stack,
) -> None:
    """
    A Messages request with cache_control: the upstream reports 3000 tokens written
    (1000 of them for an hour) and 500 read; the reply, the cost and the ledger
    price each part at its rate.
    """
    usage = {
        "input_tokens": 500,
        "cache_creation_input_tokens": 3_000,
        "cache_read_input_tokens": 500,
        "cache_creation": {"ephemeral_5m_input_tokens": 2_000, "ephemeral_1h_input_tokens": 1_000},
        "output_tokens": 100,
    }
    stack.anthropic.script(Reply("ok", raw_usage=usage))
    raw = await stack.ant.messages.with_raw_response.create(
        model=HAIKU,
        max_tokens=200,
        cache_control={"type": "ephemeral"},
        messages=[{"role": "user", "content": "hi"}],
    )
    message = await raw.parse()
    assert message.usage.cache_creation_input_tokens == 3_000
    assert message.usage.cache_read_input_tokens == 500
    assert message.usage.input_tokens == 500
    assert stack.sent("anthropic")["cache_control"] == {"type": "ephemeral"}
    r = HAIKU_RATES
    expected = (
        500 * r["in"]
        + 2_000 * r["write"]
        + 1_000 * r["write_1h"]
        + 500 * r["read"]
        + 100 * r["out"]
    ) / 1_000_000
    assert float(raw.headers["X-Rhetor-Cost"]) == pytest.approx(expected)
    async with httpx.AsyncClient(base_url=stack.server.base_url, verify=False) as http:
        [entry] = (await http.get("/budget/entries")).json()["entries"]
    assert entry["cost"] == pytest.approx(expected)
    assert entry["billed"] == "usage"


async def test_a_request_without_cache_control_reserves_its_input_at_the_input_rate() -> None:
    """Only a request that asks an Anthropic upstream to cache reserves its input at the one-hour write rate."""
    plain = LLMRequest(message="hi")
    cached = attrs.evolve(
        plain, passthrough=Passthrough("anthropic", {"cache_control": {"type": "ephemeral"}})
    )
    elsewhere = attrs.evolve(
        plain, passthrough=Passthrough("openai", {"cache_control": {"type": "ephemeral"}})
    )
    assert [asks_to_cache(r) for r in (plain, cached, elsewhere)] == [False, True, False]
    pricer = Pricer()
    plain_cost = pricer.worst_case("anthropic", HAIKU, 10_000, 0)
    writes_cost = pricer.worst_case("anthropic", HAIKU, 10_000, 0, cache_writes=True)
    assert (plain_cost, writes_cost) == (pytest.approx(0.01), pytest.approx(0.02))


async def test_under_enforce_a_request_asking_to_cache_is_held_to_its_dearer_worst_case(
    stack: Stack,
) -> None:
    """
    A limit between the two worst cases of one ~1000-token prompt: with cache_control
    it is refused before any upstream call (its input could cost twice the input
    rate), without it the same prompt goes through.
    """
    prompt = "word " * 800
    async with httpx.AsyncClient(base_url=stack.server.base_url, verify=False) as http:
        assert (await http.post("/budget/policy", json={"policy": "enforce"})).status_code == 200
        set_limit = await http.post("/budget/limit", json={"period": "daily", "limit": 0.0016})
        assert set_limit.status_code == 200
    stack.anthropic.script(Reply("ok", input_tokens=1_000, output_tokens=1))
    with pytest.raises(anthropic.APIStatusError) as refused:
        await stack.ant.messages.create(
            model=HAIKU,
            max_tokens=1,
            cache_control={"type": "ephemeral"},
            messages=[{"role": "user", "content": prompt}],
        )
    assert refused.value.status_code == 402
    # Refused before the upstream was called.
    assert [r for r in stack.anthropic.requests if r.path == "/v1/messages"] == []
    message = await stack.ant.messages.create(
        model=HAIKU, max_tokens=1, messages=[{"role": "user", "content": prompt}]
    )
    assert message.usage.input_tokens == 1_000


async def test_a_cut_stream_that_asked_to_cache_bills_its_input_at_the_hour_write_rate(
    stack: Stack,
) -> None:
    """
    Upstream counts never come from a cut stream: its input is Rhetor's estimate,
    and with cache_control that estimate counts as written to the cache for an
    hour (what the upstream may charge, and what was reserved), never less.
    """
    from tests.fakes import Cut

    body = {
        "model": HAIKU,
        "max_tokens": 50,
        "stream": True,
        "messages": [{"role": "user", "content": "word " * 200}],
    }
    headers = {"anthropic-version": "2023-06-01", "x-api-key": "any"}
    async with httpx.AsyncClient(base_url=stack.server.base_url, verify=False) as http:
        for extra in ({}, {"cache_control": {"type": "ephemeral"}}):
            stack.anthropic.script(Cut(after=1))
            async with http.stream(
                "POST", "/v1/messages", json={**body, **extra}, headers=headers
            ) as streamed:
                text = "".join([chunk async for chunk in streamed.aiter_text()])
            assert "event: error" in text  # the client saw the break
        entries = (await http.get("/budget/entries")).json()["entries"]
    plain, cached = sorted(entries, key=lambda e: e["cost"])
    assert plain["status"] == cached["status"] == "partial"
    assert plain["input_tokens"] == cached["input_tokens"] > 200
    # Haiku: input 1.0, one-hour cache write 2.0 USD per Mtok.
    extra_cost = cached["cost"] - plain["cost"]
    assert extra_cost == pytest.approx(cached["input_tokens"] * 1.0 / 1_000_000)
