"""
What a call costs, without touching the network.

:class:`Pricer` prices a call in USD from, in order: a per-model override, the
free-provider list (local models cost nothing), then the price snapshot bundled
with the genai-prices library. A model none of them knows is priced
conservatively, never at 0: at the dearest input and output rates the bundled
table lists for its provider (for a provider the table does not know, the
dearest of all). :meth:`Pricer.known` says when a price is such a guess; a
price override gives the model its real price (0 for a free local server).

Cached input: of a usage's ``input_tokens``, the ``cached_input_tokens`` the
upstream read from its prompt cache are billed at the model's cached-input rate
(genai-prices' ``cache_read_mtok``, or an override's ``cached_input_per_mtok``)
and the rest at the input rate. A model with no cached-input rate, and a model
priced by the conservative guess, bills them at the full input rate (never less
than the price could be). The ``cache_write_tokens`` written to a prompt cache
(Anthropic's) are billed at the cache-write rate (genai-prices'
``cache_write_mtok``, and ``cache_write_1h_mtok`` for those kept an hour, or an
override's ``cache_write_per_mtok``); the conservative guess bills them at the
dearest cache-write rate of the provider. A request that asks for its prompt to
be cached reserves its input at the one-hour write rate (``worst_case``'s
``cache_writes``).

Costs are computed in :class:`~decimal.Decimal` and converted to float once, so
a reply's cost carries no float noise (``0.45``, not ``0.44999999999999996``).

Token estimates come from :mod:`rhetor._tokens`.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import attrs
import genai_prices

from rhetor._errors import ValidationError
from rhetor._types import Usage

__all__ = [
    "ModelPrice",
    "Pricer",
    "dearest_rates",
    "load_overrides",
]

log = logging.getLogger("rhetor.pricing")

# Rhetor provider names that differ from genai-prices' provider ids. Names not
# listed here are passed through unchanged ("anthropic" and "openai" already match).
_PROVIDER_IDS: Mapping[str, str] = {
    "claude": "anthropic",
    "gemini": "google",
    "xai": "x-ai",
    "grok": "x-ai",
}


# genai-prices price keys that cost nothing for a usage of only input and output
# tokens (their counts are zero), so a model with just these has a flat text price.
_ZERO_FOR_TEXT_USAGE = frozenset(
    {
        "input_mtok",
        "output_mtok",
        "cache_read_mtok",
        "cache_write_mtok",
        "cache_write_1h_mtok",
        "web_searches_kcount",
        "storage_searches_kcount",
        "input_audio_mtok",
        "output_audio_mtok",
        "cache_audio_read_mtok",
        "input_image_mtok",
        "output_image_mtok",
        "cache_image_read_mtok",
        "input_video_mtok",
        "output_video_mtok",
    }
)


@attrs.frozen
class ModelPrice:
    """
    A configured price for one model, in USD per million tokens.
    """

    input_per_mtok: float
    output_per_mtok: float
    # The rate of input read from the upstream's prompt cache; None: the input rate.
    cached_input_per_mtok: float | None = None
    # The rate of input written to the upstream's prompt cache (any TTL); None: the input rate.
    cache_write_per_mtok: float | None = None

    def cost(self, usage: Usage) -> float:
        """
        The USD cost of ``usage`` at this price, exact to the price's own digits.
        """
        # repr() is the shortest decimal that reads back as the float: the
        # price as the operator wrote it, so Decimal arithmetic adds no noise.
        rate_in = Decimal(repr(self.input_per_mtok))
        cached, written = self.cached_input_per_mtok, self.cache_write_per_mtok
        rate_cached = rate_in if cached is None else Decimal(repr(cached))
        rate_write = rate_in if written is None else Decimal(repr(written))
        return _total(
            usage, rate_in, Decimal(repr(self.output_per_mtok)), rate_cached, rate_write, rate_write
        )


def _total(
    usage: Usage,
    rate_in: Decimal,
    rate_out: Decimal,
    rate_cached: Decimal,
    rate_write: Decimal | None = None,
    rate_write_1h: Decimal | None = None,
) -> float:
    """
    The USD cost of ``usage`` at per-Mtok rates: its cached input at ``rate_cached``,
    its cache writes at ``rate_write`` (those kept an hour at ``rate_write_1h``), the
    rest of the input at ``rate_in``. A rate left out is the input rate.
    """
    cached = min(max(usage.cached_input_tokens, 0), usage.input_tokens)
    written = min(max(usage.cache_write_tokens, 0), usage.input_tokens - cached)
    hour = min(max(usage.cache_write_1h_tokens, 0), written)
    total = (
        (usage.input_tokens - cached - written) * rate_in
        + cached * rate_cached
        + (written - hour) * (rate_in if rate_write is None else rate_write)
        + hour * (rate_in if rate_write_1h is None else rate_write_1h)
        + usage.output_tokens * rate_out
    ) / 1_000_000
    return float(total)


# Per-Mtok input, output and cached-input rates (the last None when not flat).
_Rates = tuple[Decimal, Decimal, Decimal | None]


def _rate(price: object) -> Decimal | None:
    """A per-Mtok rate as genai-prices gives it; for tiered prices, the dearest tier."""
    if type(price) is Decimal:
        return price
    base = getattr(price, "base", None)
    if type(base) is Decimal:
        tiers = [t.price for t in getattr(price, "tiers", ()) if type(t.price) is Decimal]
        return max([base, *tiers])
    return None


@functools.lru_cache(maxsize=64)
def dearest_rates(provider_id: str | None) -> tuple[Decimal, Decimal, Decimal]:
    """
    The highest input, output and cache-write rates per Mtok in the bundled table:
    of one genai-prices provider, or of all of them (None, or a provider it does
    not know). The cache-write rate is at least the input rate.

    The price of a model nobody knows: a guess that never undercharges a
    model of that provider that the table lists. Cached for the process; the
    bundled table does not change while it runs.
    """
    snapshot = genai_prices.data_snapshot.get_snapshot()
    providers = [p for p in snapshot.providers if p.id == provider_id] or snapshot.providers
    now = datetime.now(UTC)
    top_in = top_out = top_write = Decimal(0)
    for provider in providers:
        for model in provider.models:
            prices = model.get_prices(now)
            rate_in = _rate(getattr(prices, "input_mtok", None))
            rate_out = _rate(getattr(prices, "output_mtok", None))
            top_in = max(top_in, rate_in or top_in)
            top_out = max(top_out, rate_out or top_out)
            for name in ("cache_write_mtok", "cache_write_1h_mtok"):
                rate_write = _rate(getattr(prices, name, None))
                top_write = max(top_write, rate_write or top_write)
    return top_in, top_out, max(top_in, top_write)


def _as_frozenset(names: Iterable[str]) -> frozenset[str]:
    return frozenset(names)


def _copy_overrides(overrides: Mapping[str, ModelPrice] | None) -> dict[str, ModelPrice]:
    return dict(overrides or {})


@attrs.define(eq=False)
class Pricer:
    """
    Prices calls in USD; cheap enough to call once per request.

    Overrides are keyed by ``"provider/model"`` or by bare ``"model"``; the
    provider-qualified key wins. An override beats the free-provider list, since
    it is the operator's explicit word.
    """

    _overrides: dict[str, ModelPrice] = attrs.field(
        default=None, converter=_copy_overrides, alias="overrides"
    )
    _free_providers: frozenset[str] = attrs.field(
        default=frozenset({"simulated", "ollama"}), converter=_as_frozenset, alias="free_providers"
    )
    # (provider, model) -> whether genai-prices knows the model. Caching misses
    # matters most: the library caches its hits, but each miss costs a scan and
    # an exception.
    _known: dict[tuple[str, str], bool] = attrs.field(init=False, factory=dict)
    # (provider, model) -> (per-Mtok input, output and cached-input rates, or None
    # when the price is not flat, monotonic expiry; the cached rate is None when it
    # is not flat). genai-prices' general calculation costs about 0.15 ms a call;
    # most models have a flat price that needs a few multiplications.
    _flat: dict[tuple[str, str], tuple[_Rates | None, float]] = attrs.field(
        init=False, factory=dict
    )

    def price(self, provider: str, model: str, usage: Usage) -> float:
        """
        The USD cost of ``usage`` on ``provider``/``model``; conservative when unknown.
        """
        override = self._override(provider, model)
        if override is not None:
            return override.cost(usage)
        if provider in self._free_providers:
            return 0.0
        if not self._library_knows(provider, model):
            rate_in, rate_out, rate_write = dearest_rates(_PROVIDER_IDS.get(provider, provider))
            # Cache reads at the input rate: never less than the price could be.
            return _total(usage, rate_in, rate_out, rate_in, rate_write, rate_write)
        rates = self._flat_rates(provider, model)
        if (
            rates is not None
            and (rates[2] is not None or not usage.cached_input_tokens)
            and not usage.cache_write_tokens
        ):
            # Exactly genai-prices' sum of count * price / 1M, in Decimal.
            return _total(usage, rates[0], rates[1], rates[2] or rates[0])
        cached = min(max(usage.cached_input_tokens, 0), usage.input_tokens)
        written = min(max(usage.cache_write_tokens, 0), usage.input_tokens - cached)
        hour = min(max(usage.cache_write_1h_tokens, 0), written)
        calc = genai_prices.calc_price(
            genai_prices.Usage(
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cache_read_tokens=cached or None,
                cache_write_tokens=written or None,
                cache_write_1h_tokens=hour or None,
            ),
            model,
            provider_id=_PROVIDER_IDS.get(provider, provider),
        )
        return float(calc.total_price)

    def known(self, provider: str, model: str) -> bool:
        """
        Whether :meth:`price` has a real price (or a deliberate zero), not a conservative guess.
        """
        return (
            self._override(provider, model) is not None
            or provider in self._free_providers
            or self._library_knows(provider, model)
        )

    def worst_case(
        self,
        provider: str,
        model: str,
        input_tokens: int,
        max_output_tokens: int,
        *,
        cache_writes: bool = False,
    ) -> float:
        """
        The USD cost if the reply uses every one of ``max_output_tokens``.

        With ``cache_writes`` (a request that asks the upstream to cache its
        prompt), every input token is priced as written to the cache for an
        hour, the dearest input there is.
        """
        written = input_tokens if cache_writes else 0
        usage = Usage(
            input_tokens,
            max_output_tokens,
            cache_write_tokens=written,
            cache_write_1h_tokens=written,
        )
        return self.price(provider, model, usage)

    def close(self) -> None:
        """
        Forget cached lookups; the pricer holds no other resources.
        """
        self._known.clear()
        self._flat.clear()

    def _override(self, provider: str, model: str) -> ModelPrice | None:
        return self._overrides.get(f"{provider}/{model}") or self._overrides.get(model)

    def _flat_rates(self, provider: str, model: str) -> _Rates | None:
        """
        The model's current input, output and cached-input prices per Mtok, when
        those are all a text usage costs (the cached rate None when it is tiered).

        Re-read every minute, since a model's price can change on a date.
        """
        key = (provider, model)
        cached = self._flat.get(key)
        now = time.monotonic()
        if cached is not None and cached[1] > now:
            return cached[0]
        rates = None
        try:
            _, info = genai_prices.data_snapshot.get_snapshot().find_provider_model(
                model, None, _PROVIDER_IDS.get(provider, provider), None
            )
            prices = info.get_prices(datetime.now(UTC))
            given = {k: v for k, v in vars(prices).items() if v is not None}
            flat_io = (
                type(given.get("input_mtok")) is Decimal
                and type(given.get("output_mtok")) is Decimal
            )
            if flat_io and given.keys() <= _ZERO_FOR_TEXT_USAGE:
                read = given.get("cache_read_mtok", given["input_mtok"])
                rates = (
                    given["input_mtok"],
                    given["output_mtok"],
                    read if type(read) is Decimal else None,
                )
        except LookupError:
            pass
        self._flat[key] = (rates, now + 60.0)
        return rates

    def _library_knows(self, provider: str, model: str) -> bool:
        key = (provider, model)
        known = self._known.get(key)
        if known is None:
            try:
                genai_prices.calc_price(
                    genai_prices.Usage(input_tokens=0, output_tokens=0),
                    model,
                    provider_id=_PROVIDER_IDS.get(provider, provider),
                )
            except LookupError:
                known = False
                if provider not in self._free_providers:
                    rate_in, rate_out, _ = dearest_rates(_PROVIDER_IDS.get(provider, provider))
                    log.warning(
                        "no price known for %s/%s: priced at $%s/$%s per million input/output"
                        " tokens until a price override names it",
                        provider,
                        model,
                        rate_in,
                        rate_out,
                    )
            else:
                known = True
            self._known[key] = known
        return known


def load_overrides(path: str | os.PathLike[str]) -> dict[str, ModelPrice]:
    """
    Read price overrides from a JSON file.

    The file maps model names (or ``"provider/model"``) to prices:
    ``{"my-model": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}``, and
    optionally ``cached_input_per_mtok`` (input read from a prompt cache) and
    ``cache_write_per_mtok`` (input written to a prompt cache, any TTL); each the
    input rate when left out.

    Error handling: a malformed entry raises :class:`ValidationError` naming the
    model and field; an unreadable file raises ``OSError``.
    """
    with open(path, encoding="utf-8") as f:
        try:
            raw: Any = json.load(f)
        except json.JSONDecodeError as exc:
            raise ValidationError("overrides", f"not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ValidationError("overrides", "must be a JSON object of model names")
    prices: dict[str, ModelPrice] = {}
    for model, entry in raw.items():
        if not isinstance(entry, dict):
            raise ValidationError(model, "must be an object of input_per_mtok, output_per_mtok")
        values: list[float] = []
        for name in ("input_per_mtok", "output_per_mtok"):
            value = entry.get(name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < 0
            ):
                raise ValidationError(f"{model}.{name}", "must be a finite, non-negative number")
            values.append(float(value))
        optional: list[float | None] = []
        for name in ("cached_input_per_mtok", "cache_write_per_mtok"):
            value = entry.get(name)
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < 0
            ):
                raise ValidationError(f"{model}.{name}", "must be a finite, non-negative number")
            optional.append(None if value is None else float(value))
        prices[model] = ModelPrice(values[0], values[1], *optional)
    return prices
