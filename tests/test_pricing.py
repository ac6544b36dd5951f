"""Prices and token counts: genai-prices, overrides, conservative guesses and the offline counter."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import genai_prices
import pytest

from rhetor._errors import ValidationError
from rhetor._tokens import MESSAGE_OVERHEAD, count_message_tokens, count_tokens
from rhetor._types import ChatMessage, Usage
from rhetor.budget._pricing import ModelPrice, Pricer, dearest_rates, load_overrides

# Bundled-snapshot prices (USD per million tokens) these models have had since launch.
HAIKU_35 = ("anthropic", "claude-3-5-haiku-20241022", 0.8, 4.0)
GPT_4O_MINI = ("openai", "gpt-4o-mini", 0.15, 0.6)


@pytest.mark.parametrize(("provider", "model", "per_in", "per_out"), [HAIKU_35, GPT_4O_MINI])
def test_known_model_priced_per_token(
    provider: str, model: str, per_in: float, per_out: float
) -> None:
    """A known Anthropic or OpenAI model costs input and output tokens at its list price."""
    pricer = Pricer()
    cost = pricer.price(provider, model, Usage(input_tokens=12_000, output_tokens=3_000))
    assert cost > 0
    assert cost == pytest.approx((12_000 * per_in + 3_000 * per_out) / 1_000_000)
    assert pricer.known(provider, model)


def test_unknown_model_is_priced_at_its_providers_dearest_rates_and_flagged() -> None:
    """A model nobody knows is never free: it costs its provider's dearest listed rates, and known() says False."""
    pricer = Pricer()
    top_in, top_out, _ = dearest_rates("openai")
    assert top_in >= Decimal(150) and top_out >= Decimal(600)  # o1-pro, in the bundled table
    cost = pricer.price("openai", "no-such-model-xyz", Usage(1000, 1000))
    assert cost == float((1000 * top_in + 1000 * top_out) / 1_000_000)
    assert cost > pricer.price("openai", "gpt-4o", Usage(1000, 1000))
    assert not pricer.known("openai", "no-such-model-xyz")
    # Anthropic's dearest are Anthropic's, not OpenAI's; "claude" is Anthropic's alias.
    assert dearest_rates("anthropic") < dearest_rates("openai")
    assert pricer.price("claude", "no-such-claude", Usage(10**6, 0)) == float(
        dearest_rates("anthropic")[0]
    )


def test_a_provider_the_table_does_not_know_gets_the_dearest_rates_of_all() -> None:
    """An unknown provider's unknown model costs the dearest rates of any provider, not 0."""
    pricer = Pricer()
    assert dearest_rates("no-such-provider") == dearest_rates(None)
    assert pricer.price("no-such-provider", "gpt-4o", Usage(0, 10**6)) == float(
        dearest_rates(None)[1]
    )
    assert not pricer.known("no-such-provider", "gpt-4o")
    assert pricer.worst_case("no-such-provider", "x", 100, 1000) > 0


def test_an_override_prices_an_unknown_model_even_at_zero() -> None:
    """An override is the way to give an unknown model (say, on a local OpenAI-compatible server) its price."""
    pricer = Pricer(overrides={"openai/local-llama": ModelPrice(0.0, 0.0)})
    assert pricer.price("openai", "local-llama", Usage(10**6, 10**6)) == 0.0
    assert pricer.known("openai", "local-llama")


def test_override_costs_carry_no_float_noise() -> None:
    """An override's cost is exact to the price's own digits: 2.4e-06, not 2.3999999999999995e-06."""
    assert (3 * 0.7 + 3 * 0.1) / 1_000_000 != 2.4e-06  # what float arithmetic gives
    assert ModelPrice(0.7, 0.1).cost(Usage(3, 3)) == 2.4e-06
    assert repr(ModelPrice(1000.0, 1000.0).cost(Usage(7, 3))) == "0.01"


def test_unknown_lookup_is_cached() -> None:
    """Repeated lookups of the same model give the same answer from the cache."""
    pricer = Pricer()
    assert not pricer.known("openai", "no-such-model-xyz")
    assert not pricer.known("openai", "no-such-model-xyz")
    assert pricer.price("openai", "gpt-4o-mini", Usage(10, 10)) == pricer.price(
        "openai", "gpt-4o-mini", Usage(10, 10)
    )


def test_free_providers_cost_nothing() -> None:
    """Local providers cost 0.0 and count as known."""
    pricer = Pricer()
    assert pricer.price("ollama", "llama3", Usage(10_000, 10_000)) == 0.0
    assert pricer.price("simulated", "gpt-4o", Usage(10_000, 10_000)) == 0.0
    assert pricer.known("ollama", "llama3")
    custom = Pricer(free_providers=frozenset({"lab"}))
    assert custom.price("lab", "gpt-4o", Usage(1000, 0)) == 0.0
    # Not free here: an unknown model, so priced conservatively.
    assert custom.price("ollama", "llama3", Usage(1000, 0)) > 0.0
    assert not custom.known("ollama", "llama3")


def test_overrides_win() -> None:
    """An override beats the library, and a "provider/model" key beats a bare model key."""
    pricer = Pricer(
        overrides={
            "gpt-4o-mini": ModelPrice(1.0, 2.0),
            "ollama/llama3": ModelPrice(0.5, 0.5),
            "in-house": ModelPrice(10.0, 20.0),
        }
    )
    assert pricer.price("openai", "gpt-4o-mini", Usage(1_000_000, 1_000_000)) == 3.0
    assert pricer.price("ollama", "llama3", Usage(1_000_000, 1_000_000)) == 1.0
    assert pricer.price("custom", "in-house", Usage(500_000, 0)) == 5.0
    assert pricer.known("custom", "in-house")


def test_worst_case_assumes_every_output_token() -> None:
    """worst_case prices the prompt plus the full max_tokens of output."""
    pricer = Pricer(overrides={"m": ModelPrice(1.0, 4.0)})
    assert pricer.worst_case("p", "m", 1000, 500) == pytest.approx((1000 + 2000) / 1_000_000)
    provider, model, _, _ = HAIKU_35
    assert pricer.worst_case(provider, model, 100, 1000) == pricer.price(
        provider, model, Usage(100, 1000)
    )


def test_load_overrides(tmp_path: Path) -> None:
    """A JSON overrides file becomes a dict of ModelPrice, with an optional cached-input rate."""
    path = tmp_path / "prices.json"
    cached = {"input_per_mtok": 2, "output_per_mtok": 8, "cached_input_per_mtok": 0.5}
    path.write_text(json.dumps({"m": {"input_per_mtok": 1, "output_per_mtok": 2.5}, "c": cached}))
    assert load_overrides(path) == {"m": ModelPrice(1.0, 2.5), "c": ModelPrice(2.0, 8.0, 0.5)}


@pytest.mark.parametrize(
    ("provider", "model", "per_in", "per_cached", "per_out"),
    [
        ("openai", "gpt-4o-mini", 0.15, 0.075, 0.6),
        ("anthropic", "claude-3-5-haiku-20241022", 0.8, 0.08, 4.0),
    ],
)
def test_cached_input_is_billed_at_the_models_cached_rate(
    provider: str, model: str, per_in: float, per_cached: float, per_out: float
) -> None:
    """Of the input, the tokens read from the prompt cache cost the table's cache_read rate, the rest the input rate."""
    pricer = Pricer()
    usage = Usage(input_tokens=10_000, output_tokens=1_000, cached_input_tokens=8_000)
    expected = (2_000 * per_in + 8_000 * per_cached + 1_000 * per_out) / 1_000_000
    assert pricer.price(provider, model, usage) == pytest.approx(expected)
    assert pricer.price(provider, model, usage) < pricer.price(
        provider, model, Usage(10_000, 1_000)
    )
    # The same as genai-prices' own calculation of that usage.
    calc = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=10_000, output_tokens=1_000, cache_read_tokens=8_000),
        model,
        provider_id=provider,
    )
    assert pricer.price(provider, model, usage) == float(calc.total_price)


def test_cached_input_costs_the_input_rate_without_a_cached_price() -> None:
    """An override with no cached rate, and a model priced by the guess, bill cached input in full."""
    usage = Usage(input_tokens=1_000, output_tokens=0, cached_input_tokens=1_000)
    overridden = Pricer(overrides={"m": ModelPrice(2.0, 4.0)})
    assert overridden.price("p", "m", usage) == 0.002
    cheaper = Pricer(overrides={"m": ModelPrice(2.0, 4.0, 0.5)})
    assert cheaper.price("p", "m", usage) == 0.0005
    top_in, _, _ = dearest_rates("openai")
    assert Pricer().price("openai", "no-such-model-xyz", usage) == float(1_000 * top_in / 1_000_000)
    # Counts the upstream got wrong never make a price negative or above the uncached one.
    odd = Usage(input_tokens=100, output_tokens=0, cached_input_tokens=500)
    assert cheaper.price("p", "m", odd) == 0.00005


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("[]", "overrides"),
        ("{", "overrides"),
        ('{"m": 3}', "m"),
        ('{"m": {"input_per_mtok": 1}}', "m.output_per_mtok"),
        ('{"m": {"input_per_mtok": -1, "output_per_mtok": 1}}', "m.input_per_mtok"),
        ('{"m": {"input_per_mtok": "1", "output_per_mtok": 1}}', "m.input_per_mtok"),
        # Python's json reads these; a NaN price would make every budget check pass.
        ('{"m": {"input_per_mtok": NaN, "output_per_mtok": 1}}', "m.input_per_mtok"),
        ('{"m": {"input_per_mtok": 1, "output_per_mtok": Infinity}}', "m.output_per_mtok"),
        (
            '{"m": {"input_per_mtok": 1, "output_per_mtok": 1, "cached_input_per_mtok": -1}}',
            "m.cached_input_per_mtok",
        ),
        (
            '{"m": {"input_per_mtok": 1, "output_per_mtok": 1, "cached_input_per_mtok": true}}',
            "m.cached_input_per_mtok",
        ),
    ],
)
def test_load_overrides_rejects_bad_entries(tmp_path: Path, body: str, field: str) -> None:
    """A malformed overrides file raises ValidationError naming the bad entry."""
    path = tmp_path / "prices.json"
    path.write_text(body)
    with pytest.raises(ValidationError) as info:
        load_overrides(path)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("", 0),
        ("hello", 2),
        ("cat dog", 2),
        ("Hello, world!", 6),
        ("1234567", 3),
        ("a\n\nb", 3),
        ("tokenization", 3),
    ],
)
def test_count_tokens(text: str, tokens: int) -> None:
    """Words cost a token per four letters, digits per three, punctuation one each."""
    assert count_tokens(text) == tokens


def test_count_tokens_is_deterministic_and_monotone() -> None:
    """The same text always counts the same, and more text never counts less."""
    text = "The quick brown fox jumps over the lazy dog. " * 20
    assert count_tokens(text) == count_tokens(text)
    assert count_tokens(text + "more words") > count_tokens(text)


def test_count_message_tokens_adds_overhead() -> None:
    """Each message, and the system prompt, add a fixed overhead to their text."""
    messages = [ChatMessage("user", "cat"), ChatMessage("assistant", "dog")]
    assert count_message_tokens(messages, None) == 2 + 2 * MESSAGE_OVERHEAD
    assert count_message_tokens(messages, "cat") == 3 + 3 * MESSAGE_OVERHEAD
    assert count_message_tokens([], "") == 0


def test_count_tokens_non_ascii_splits_finer() -> None:
    """Non-ASCII words count a token per two characters, as BPE splits them finer."""
    assert count_tokens("héllo") == 3
    assert count_tokens("日本語") == 2
