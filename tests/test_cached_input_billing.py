"""
Input the upstream read from its prompt cache is billed at the model's cached-input rate.

A real server relays the openai SDK's requests to the fake OpenAI and Anthropic
upstreams, which report cached input in their own usage shapes
(``prompt_tokens_details.cached_tokens``, ``cache_read_input_tokens``); the cost
Rhetor answers with (``X-Rhetor-Cost``) and records in its ledger prices those
tokens at the bundled table's ``cache_read_mtok``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.fakes import Reply
from tests.test_compat_tools import GPT_MINI, HAIKU, Stack, stacked


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with stacked(tmp_path) as running:
        yield running


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
