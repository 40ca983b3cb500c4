"""Model list prices and the exact arithmetic that turns token counts into micro-USD.

All rates are integers in micro-USD per MILLION tokens, so every list price in use (down to
$0.000001/Mtok) is exact and one request's cost is an exact Fraction of a micro-USD. We round once
per request, up, after the markup: we never front a fraction of a micro-USD.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, fields
from decimal import Decimal, InvalidOperation
from fractions import Fraction

MTOK = 1_000_000  # tokens per rate unit; also micro-USD per USD
APIS = frozenset({"anthropic", "openai"})

# Snapshot ids: "claude-sonnet-4-5-20250929", "gpt-4o-2024-08-06".
_DATE_SUFFIX = re.compile(r"-(?:\d{8}|\d{4}-\d{2}-\d{2})$")
_RATE_FIELDS = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")


def _decimal(field: str, value: str | float | int) -> Decimal:
    # str() first: Decimal(0.075) would keep the binary float's noise, Decimal("0.075") is exact.
    if isinstance(value, bool) or not isinstance(value, str | float | int):
        raise ValueError(f"{field}: expected a number, got {value!r}")
    try:
        d = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"{field}: not a number: {value!r}") from None
    if not d.is_finite() or d < 0:
        raise ValueError(f"{field}: must be a finite number >= 0, got {value!r}")
    return d


def usd_per_mtok_to_micros(field: str, value: str | float | int) -> int:
    """USD per Mtok -> exact integer micro-USD per Mtok; ValueError (naming `field`) otherwise."""
    micros = _decimal(field, value).scaleb(6)
    if micros != micros.to_integral_value():
        raise ValueError(f"{field}: {value!r} USD/Mtok is not a whole number of micro-USD per Mtok")
    return int(micros)


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """List prices of one model, in integer micro-USD per million tokens ($0.075/Mtok -> 75_000)."""

    model: str
    api: str  # "anthropic" | "openai": which upstream serves it
    input: int
    output: int
    cache_write_5m: int
    cache_write_1h: int
    cache_read: int
    max_output_tokens: int  # reservation ceiling when a request sets no max_tokens

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ValueError("model: must be a non-empty string")
        if self.api not in APIS:
            raise ValueError(f"api: must be one of {sorted(APIS)}, got {self.api!r}")
        for name in _RATE_FIELDS:
            v = getattr(self, name)
            if type(v) is not int or v < 0:
                raise ValueError(f"{name}: must be an int >= 0 (micro-USD per Mtok), got {v!r}")
        m = self.max_output_tokens
        if type(m) is not int or m <= 0:
            raise ValueError(f"max_output_tokens: must be an int > 0, got {m!r}")

    @classmethod
    def from_usd(
        cls,
        model: str,
        api: str,
        *,
        input: str | float | int,
        output: str | float | int,
        cache_write_5m: str | float | int | None = None,
        cache_write_1h: str | float | int | None = None,
        cache_read: str | float | int | None = None,
        max_output_tokens: int,
    ) -> ModelPrice:
        """Build from USD-per-Mtok list prices (exact, via Decimal(str(x))).

        A cache price left as None defaults to Anthropic's multipliers of the input price:
        cache_write_5m = 1.25x, cache_write_1h = 2x, cache_read = 0.1x (rounded UP to a whole
        micro-USD per Mtok if need be). Pass them explicitly whenever the provider publishes them;
        for OpenAI (no cache-write price) pass cache_write_* = input.
        """
        base = _decimal("input", input)

        def rate(field: str, value: str | float | int | None, default_factor: str) -> int:
            if value is not None:
                return usd_per_mtok_to_micros(field, value)
            return math.ceil(base * Decimal(default_factor) * MTOK)

        return cls(
            model=model,
            api=api,
            input=usd_per_mtok_to_micros("input", input),
            output=usd_per_mtok_to_micros("output", output),
            cache_write_5m=rate("cache_write_5m", cache_write_5m, "1.25"),
            cache_write_1h=rate("cache_write_1h", cache_write_1h, "2"),
            cache_read=rate("cache_read", cache_read, "0.1"),
            max_output_tokens=max_output_tokens,
        )


@dataclass(frozen=True, slots=True)
class Usage:
    """Every token counter we bill for one request; all ints >= 0."""

    input_tokens: int = 0  # UNCACHED input (Anthropic input_tokens; OpenAI prompt - cached)
    output_tokens: int = 0  # includes reasoning tokens (billed as output)
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    cache_read_tokens: int = 0
    reasoning_tokens: int = 0  # informational: already inside output_tokens

    def __post_init__(self) -> None:
        # A negative count would silently turn a charge into a credit.
        for f in fields(self):
            v = getattr(self, f.name)
            if type(v) is not int or v < 0:
                raise ValueError(f"{f.name}: must be an int >= 0, got {v!r}")

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_write_5m_tokens
            + self.cache_write_1h_tokens
            + self.cache_read_tokens
        )


def _markup(value: str | float | int) -> Fraction:
    m = Fraction(_decimal("markup", value))
    if m < 1:
        raise ValueError(f"markup: must be >= 1 (we never sell below list price), got {value!r}")
    return m


class PriceTable:
    """The priced models plus the markup; turns usage into charged micro-USD."""

    __slots__ = ("_by_model", "_den", "_markup", "_num")

    def __init__(self, prices: Iterable[ModelPrice], *, markup: str | float = "1.5") -> None:
        self._by_model: dict[str, ModelPrice] = {}
        for p in prices:
            if p.model in self._by_model:
                raise ValueError(f"model {p.model!r}: priced twice")
            self._by_model[p.model] = p
        self._markup = _markup(markup)
        # charged = ceil(sum(tokens * rate) * num / den): pure int arithmetic on the hot path.
        self._num = self._markup.numerator
        self._den = self._markup.denominator * MTOK

    @property
    def markup(self) -> Fraction:
        return self._markup

    def get(self, model: str) -> ModelPrice | None:
        """The price of `model`; a dated snapshot id falls back to its priced base id."""
        price = self._by_model.get(model)
        if price is None:
            base = _DATE_SUFFIX.sub("", model)
            if base != model:
                price = self._by_model.get(base)
        return price

    def models(self) -> list[ModelPrice]:
        return list(self._by_model.values())

    @staticmethod
    def _weighted(price: ModelPrice, usage: Usage) -> int:
        # Token-weighted sum in micro-USD per Mtok; / MTOK gives micro-USD.
        return (
            usage.input_tokens * price.input
            + usage.output_tokens * price.output
            + usage.cache_write_5m_tokens * price.cache_write_5m
            + usage.cache_write_1h_tokens * price.cache_write_1h
            + usage.cache_read_tokens * price.cache_read
        )

    def _charge(self, weighted: int) -> int:
        return -(-weighted * self._num // self._den)  # ceil division, exact on ints

    def list_cost(self, price: ModelPrice, usage: Usage) -> Fraction:
        """Exact cost at list price, in micro-USD (may be fractional), before markup."""
        return Fraction(self._weighted(price, usage), MTOK)

    def cost_micros(self, price: ModelPrice, usage: Usage) -> int:
        """What we charge: ceil(list cost * markup), rounded once per request, up."""
        return self._charge(self._weighted(price, usage))

    def reserve_micros(
        self, price: ModelPrice, *, input_tokens_estimate: int, max_output_tokens: int | None
    ) -> int:
        """Worst-case charge of a request, reserved before forwarding it.

        Every input token is priced at the highest input-side rate (the request could write it
        all to the 1h cache) and every possible output token at the output rate, with markup.
        """
        out = price.max_output_tokens if max_output_tokens is None else max_output_tokens
        if input_tokens_estimate < 0 or out < 0:
            raise ValueError("token counts must be >= 0")
        in_rate = max(price.input, price.cache_write_5m, price.cache_write_1h, price.cache_read)
        return self._charge(input_tokens_estimate * in_rate + out * price.output)


def _anthropic(
    model: str, input: str, w5: str, w1h: str, read: str, output: str, max_out: int
) -> ModelPrice:
    return ModelPrice.from_usd(
        model,
        "anthropic",
        input=input,
        output=output,
        cache_write_5m=w5,
        cache_write_1h=w1h,
        cache_read=read,
        max_output_tokens=max_out,
    )


def _openai(model: str, input: str, read: str, output: str, max_out: int) -> ModelPrice:
    # OpenAI caches automatically and charges no cache write: a "write" costs plain input.
    return ModelPrice.from_usd(
        model,
        "openai",
        input=input,
        output=output,
        cache_write_5m=input,
        cache_write_1h=input,
        cache_read=read,
        max_output_tokens=max_out,
    )


def default_prices() -> list[ModelPrice]:
    """WIRE.md's list-price table (USD/Mtok), with each model's maximum output tokens."""
    return [
        _anthropic("claude-opus-4-5", "5", "6.25", "10", "0.50", "25", 64_000),
        _anthropic("claude-opus-4-6", "5", "6.25", "10", "0.50", "25", 128_000),
        _anthropic("claude-sonnet-4", "3", "3.75", "6", "0.30", "15", 64_000),
        _anthropic("claude-sonnet-4-5", "3", "3.75", "6", "0.30", "15", 64_000),
        _anthropic("claude-sonnet-4-6", "3", "3.75", "6", "0.30", "15", 64_000),
        _anthropic("claude-haiku-4-5", "1", "1.25", "2", "0.10", "5", 64_000),
        _anthropic("claude-3-5-haiku", "0.80", "1", "1.6", "0.08", "4", 8_192),
        _openai("gpt-4o", "2.50", "1.25", "10", 16_384),
        _openai("gpt-4o-mini", "0.15", "0.075", "0.60", 16_384),
        _openai("gpt-4.1", "2", "0.50", "8", 32_768),
        _openai("gpt-5", "1.25", "0.125", "10", 128_000),
        _openai("gpt-5.1", "1.25", "0.125", "10", 128_000),
    ]


def estimate_input_tokens(body: bytes) -> int:
    """A cheap, deliberately high estimate of a request's prompt tokens, from its byte size.

    We have no tokenizer on the hot path. Text averages ~4 bytes/token (English) and ~3 (code,
    UTF-8 CJK), and JSON framing adds bytes but no tokens, so bytes/3 is an upper-ish bound; +16
    covers per-request framing tokens. Over-reserving only delays admission; under-reserving risks
    fronting cost. Caveat: base64 images are counted as text and so over-estimated by far.
    """
    return len(body) // 3 + 16
