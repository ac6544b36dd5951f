"""
What the Router bills for a reply: usage that cannot be trusted, unknown models, and exact costs.

A provider backend here reports whatever usage the test chooses, as a broken
or hostile upstream would after its translation point; the router must never
let it become an absurd, non-integer or non-finite charge.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest

import rhetor.runtime
from rhetor import BudgetExceeded, Settings
from rhetor._content import Image, Text, Tool
from rhetor._tokens import IMAGE_TOKENS, TOOL_OVERHEAD, count_message_tokens, count_request_tokens
from rhetor._types import (
    ChatMessage,
    ProviderReply,
    ProviderRequest,
    ProviderStatus,
    StreamEnd,
    TextDelta,
    Usage,
)
from rhetor.budget._interfaces import LedgerEntry
from rhetor.budget._ledger import SQLiteLedger
from rhetor.budget._pricing import ModelPrice, Pricer
from rhetor.providers._simulated import SimulatedBackend

TASKS = {
    "tasks": {"default": {"primary": "alpha-1", "fallbacks": [], "temperature": 0.5}},
    "models": {
        "alpha-1": {
            "provider": "alpha",
            "tier": "high",
            "capabilities": ["general", "tools", "vision"],
        },
        "simulated-echo": {"provider": "simulated", "tier": "local"},
        "simulated-summary": {"provider": "simulated", "tier": "local"},
    },
}
# $1 and $2 per million tokens: easy numbers to check.
ALPHA_PRICE = {"alpha-1": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}


@attrs.define(eq=False)
class ReportingBackend:
    """A provider that answers "ok" and reports the usage the test set, valid or not."""

    name: str = "alpha"
    models: tuple[str, ...] = ("alpha-1",)
    usage: Usage = attrs.field(factory=lambda: Usage(10, 5))
    usage_valid: bool = True

    async def check(self) -> ProviderStatus:
        return ProviderStatus(self.name, True, self.models)

    async def complete(self, request: ProviderRequest) -> ProviderReply:
        return ProviderReply("ok", request.model, self.usage, usage_valid=self.usage_valid)

    async def stream(self, request: ProviderRequest) -> AsyncIterator[TextDelta | StreamEnd]:
        yield TextDelta("ok")
        yield StreamEnd(self.usage, model=request.model, usage_valid=self.usage_valid)

    async def aclose(self) -> None:
        return None


def settings_with(tmp_path: Path, prices: dict[str, Any] | None = None, **fields: Any) -> Settings:
    tasks = tmp_path / "tasks.json"
    tasks.write_text(json.dumps(TASKS))
    overrides = None
    if prices is not None:
        overrides = tmp_path / "prices.json"
        overrides.write_text(json.dumps(prices))
    return Settings(
        data_dir=tmp_path / "data",
        hermes_url=None,
        task_config=tasks,
        price_overrides=overrides,
        simulated="never",
        **fields,
    )


def backends(alpha: ReportingBackend) -> dict[str, Any]:
    return {"alpha": lambda: alpha, "simulated": lambda: SimulatedBackend(available=False)}


def entries(tmp_path: Path) -> list[LedgerEntry]:
    with SQLiteLedger(tmp_path / "data" / "ledger.db") as ledger:
        return list(reversed(ledger.entries()))


def worst_case(reply_request_tokens: int, max_tokens: int) -> float:
    """What the router reserves on alpha-1 at ALPHA_PRICE: the padded input plus all of max_tokens."""
    padded = int(reply_request_tokens * 1.25) + 16
    return Pricer(overrides={"alpha-1": ModelPrice(1.0, 2.0)}).worst_case(
        "alpha", "alpha-1", padded, max_tokens
    )


# count_message_tokens([user "hello"]): 2 for the word, 4 for the message; padded to 23.
HELLO_TOKENS = 6


@pytest.mark.parametrize("stream", [False, True])
async def test_the_reservation_counts_images_and_tool_schemas_by_the_token_rule(
    tmp_path: Path, stream: bool
) -> None:
    """The worst case reserved (and billed for malformed usage) counts an image and a tool's schema."""
    tool = Tool(
        "lookup", "Find a word.", {"type": "object", "properties": {"word": {"type": "string"}}}
    )
    turn = ChatMessage("user", blocks=(Text("hello"), Image(data="AAAA", media_type="image/png")))
    expected = count_message_tokens([turn]) + count_request_tokens([tool])
    # The rule: the text and message as before, 1,600 for the image, the tool's text and schema.
    assert count_message_tokens([turn]) == HELLO_TOKENS + IMAGE_TOKENS
    assert count_request_tokens([tool]) > TOOL_OVERHEAD
    alpha = ReportingBackend(usage=Usage(1, 1), usage_valid=False)
    settings = settings_with(tmp_path, ALPHA_PRICE)
    async with rhetor.runtime.start(settings, backends=backends(alpha)) as rt:
        if stream:
            chunks = [c async for c in rt.chat_stream([turn], tools=[tool], max_tokens=100)]
            reply = chunks[-1].reply
        else:
            reply = await rt.chat([turn], tools=[tool], max_tokens=100)
    assert reply is not None
    assert reply.cost == pytest.approx(worst_case(expected, 100))
    assert reply.usage.input_tokens == int(expected * 1.25) + 16


@pytest.mark.parametrize("stream", [False, True])
async def test_absurd_usage_is_capped_at_the_reservations_worst_case(
    tmp_path: Path, stream: bool
) -> None:
    """A 5-token reply reported as 10^8 output tokens costs the worst case, not $200."""
    # 10^8 is a well-formed count (the provider actor flags counts over 10^9 as
    # malformed), so this is the router's cap for counts absurd for the request.
    alpha = ReportingBackend(usage=Usage(10, 10**8))
    settings = settings_with(tmp_path, ALPHA_PRICE)
    async with rhetor.runtime.start(settings, backends=backends(alpha)) as rt:
        if stream:
            reply = [c async for c in rt.stream("hello", max_tokens=100)][-1].reply
        else:
            reply = await rt.message("hello", max_tokens=100)
    assert reply is not None
    assert reply.cost == worst_case(HELLO_TOKENS, 100)
    assert reply.usage == Usage(10, 100)
    [row] = entries(tmp_path)
    assert (row.cost, row.billed, row.output_tokens) == (reply.cost, "capped", 100)


async def test_absurd_input_is_capped_too(tmp_path: Path) -> None:
    """Input far above the estimate (a billion tokens for "hello") is billed at the worst case and marked capped."""
    alpha = ReportingBackend(usage=Usage(10**9, 3))
    async with rhetor.runtime.start(
        settings_with(tmp_path, ALPHA_PRICE), backends=backends(alpha)
    ) as rt:
        reply = await rt.message("hello", max_tokens=100)
    assert reply.cost == worst_case(HELLO_TOKENS, 100)
    assert reply.usage.input_tokens == int(HELLO_TOKENS * 1.25) + 16
    assert entries(tmp_path)[0].billed == "capped"


async def test_plausible_usage_is_billed_as_reported(tmp_path: Path) -> None:
    """Usage within the request's bounds is priced as the provider reported it, marked usage."""
    alpha = ReportingBackend(usage=Usage(1000, 80))
    async with rhetor.runtime.start(
        settings_with(tmp_path, ALPHA_PRICE), backends=backends(alpha)
    ) as rt:
        reply = await rt.message("hello", max_tokens=100)
    assert reply.cost == (1000 * 1.0 + 80 * 2.0) / 1_000_000
    assert reply.usage == Usage(1000, 80)
    assert entries(tmp_path)[0].billed == "usage"


@pytest.mark.parametrize("stream", [False, True])
async def test_usage_marked_malformed_is_billed_at_the_worst_case(
    tmp_path: Path, stream: bool
) -> None:
    """A reply whose usage the backend marked invalid costs the reserved worst case, and the row says so."""
    alpha = ReportingBackend(usage=Usage(0, 0), usage_valid=False)
    async with rhetor.runtime.start(
        settings_with(tmp_path, ALPHA_PRICE), backends=backends(alpha)
    ) as rt:
        if stream:
            reply = [c async for c in rt.stream("hello", max_tokens=100)][-1].reply
        else:
            reply = await rt.message("hello", max_tokens=100)
    assert reply is not None
    assert reply.cost == worst_case(HELLO_TOKENS, 100) > 0
    [row] = entries(tmp_path)
    assert (row.billed, row.status, row.cost) == ("worst_case", "ok", reply.cost)


@pytest.mark.parametrize(
    "usage",
    [Usage(12.7, 3), Usage(float("nan"), 3), Usage(10, float("inf"))],  # type: ignore[arg-type]
)
async def test_non_integer_or_negative_counts_never_reach_a_reply_or_the_ledger(
    tmp_path: Path, usage: Usage
) -> None:
    """12.7 is rounded; a NaN or infinite count bills the worst case; replies carry whole numbers only."""
    alpha = ReportingBackend(usage=usage)
    async with rhetor.runtime.start(
        settings_with(tmp_path, ALPHA_PRICE), backends=backends(alpha)
    ) as rt:
        reply = await rt.message("hello", max_tokens=100)
        body = reply.to_dict()
    assert all(type(body["usage"][k]) is int for k in ("input_tokens", "output_tokens"))
    [row] = entries(tmp_path)
    if usage.input_tokens == 12.7:
        assert reply.usage == Usage(13, 3)
        assert row.billed == "usage"
    else:
        assert reply.cost == worst_case(HELLO_TOKENS, 100)
        assert row.billed == "worst_case"


async def test_reply_costs_carry_no_float_noise(tmp_path: Path) -> None:
    """At $0.7/$0.1 per Mtok, 3 in and 3 out cost 2.4e-06 in the reply and the ledger, not 2.3999999999999995e-06."""
    alpha = ReportingBackend(usage=Usage(3, 3))
    prices = {"alpha-1": {"input_per_mtok": 0.7, "output_per_mtok": 0.1}}
    async with rhetor.runtime.start(
        settings_with(tmp_path, prices), backends=backends(alpha)
    ) as rt:
        reply = await rt.message("hello")
    assert repr(reply.cost) == "2.4e-06"
    assert json.dumps(reply.to_dict()["cost"]) == "2.4e-06"
    assert entries(tmp_path)[0].cost == 2.4e-06


async def test_an_unknown_model_under_enforce_is_priced_conservatively_not_free(
    tmp_path: Path,
) -> None:
    """A model with no known price is never free: under a $0.01 limit it is refused; with an override it answers."""
    alpha = ReportingBackend(usage=Usage(10, 5))
    # Even MIN_CLAMPED_OUTPUT tokens at $600/Mtok cost more than $0.01: no clamp can fit.
    limited = settings_with(tmp_path, None, budget_policy="enforce", daily_limit=0.01)
    async with rhetor.runtime.start(limited, backends=backends(alpha)) as rt:
        estimate = await rt.estimate("hello", model="alpha-1")
        with pytest.raises(BudgetExceeded) as info:
            await rt.message("hello")
    assert estimate["price_known"] is False and estimate["estimated_cost"] > 0.01
    assert "alpha/alpha-1" in str(info.value)
    (tmp_path / "p").mkdir()
    priced = settings_with(tmp_path / "p", ALPHA_PRICE, budget_policy="enforce", daily_limit=0.01)
    async with rhetor.runtime.start(priced, backends=backends(alpha)) as rt:
        reply = await rt.message("hello")
    assert reply.cost == (10 * 1.0 + 5 * 2.0) / 1_000_000


async def test_an_unknown_model_without_limits_is_billed_at_the_conservative_price(
    tmp_path: Path,
) -> None:
    """With no limit, a reply from an unpriced model still records a (conservative) cost, not 0."""
    alpha = ReportingBackend(usage=Usage(10, 5))
    async with rhetor.runtime.start(settings_with(tmp_path), backends=backends(alpha)) as rt:
        reply = await rt.message("hello")
    assert reply.cost == Pricer().price("alpha", "alpha-1", Usage(10, 5)) > 0


async def test_a_budget_refusal_names_a_small_limit_precisely(tmp_path: Path) -> None:
    """The 402 for a $0.000123 limit says $0.000123, and the worst case it refused."""
    alpha = ReportingBackend()
    settings = settings_with(tmp_path, ALPHA_PRICE, budget_policy="enforce", daily_limit=0.000123)
    async with rhetor.runtime.start(settings, backends=backends(alpha)) as rt:
        with pytest.raises(BudgetExceeded) as info:
            await rt.message("hello", max_tokens=100)
    assert "daily budget $0.000123 would be exceeded" in info.value.message
    assert info.value.limit == 0.000123


@attrs.define(eq=False)
class FullLengthBackend:
    """A provider that always writes all of max_tokens, and reports exactly that."""

    name: str = "alpha"
    models: tuple[str, ...] = ("alpha-1",)
    asked: list[int] = attrs.Factory(list)

    async def check(self) -> ProviderStatus:
        return ProviderStatus(self.name, True, self.models)

    async def complete(self, request: ProviderRequest) -> ProviderReply:
        self.asked.append(request.max_tokens or 0)
        return ProviderReply("x" * 10, request.model, Usage(10, request.max_tokens or 0))

    async def stream(self, request: ProviderRequest) -> AsyncIterator[TextDelta | StreamEnd]:
        yield TextDelta("x")
        yield StreamEnd(Usage(10, request.max_tokens or 0), model=request.model)

    async def aclose(self) -> None:
        return None


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_clamped_max_tokens_keep_the_cap_when_the_upstream_writes_the_full_length(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    """Under enforce the last requests get max_tokens clamped to what is left; the upstream writes it all; spend stays within the limit."""
    from tests.stores import backend_settings, ledger_of

    upstream = FullLengthBackend()
    # $2 per million output tokens: 1,000 tokens cost $0.002; the limit pays for 2.5 such replies.
    limited = settings_with(
        tmp_path,
        ALPHA_PRICE,
        budget_policy="enforce",
        daily_limit=0.005,
        **backend_settings(backend, request),
    )
    warnings = []
    async with rhetor.runtime.start(limited, backends=backends(upstream)) as rt:
        for i in range(3):
            reply = await rt.message(f"request {i}", model="alpha-1", max_tokens=1000)
            warnings.append(reply.budget_warning)
        with pytest.raises(BudgetExceeded):
            await rt.message("nothing is left", model="alpha-1", max_tokens=1000)
    assert upstream.asked[:2] == [1000, 1000] and 64 <= upstream.asked[2] < 1000
    assert warnings[:2] == [None, None]
    assert warnings[2] is not None and f"clamped from 1000 to {upstream.asked[2]}" in warnings[2]
    ledger = ledger_of(limited)
    try:
        assert ledger.spent(0.0) <= 0.005
        assert [e.billed for e in ledger.entries()] == ["usage"] * 3
    finally:
        ledger.close()


def test_a_processs_charge_and_reservation_keys_sort_in_the_order_they_were_made() -> None:
    """Zero-padded counters: each new key's index entry lands after the last one's."""
    from rhetor.routing._billing import _new_key

    keys = [_new_key("c") for _ in range(300)]
    assert keys == sorted(keys) and len(set(keys)) == 300
    # Past a hex digit boundary too (0xf -> 0x10, 0xff -> 0x100): no shorter key sorts later.
    assert all(len(k) == len(keys[0]) for k in keys)
