"""Model list prices and the exact arithmetic that turns token counts into micro-USD.

All rates are integers in micro-USD per MILLION tokens, so every list price in use (down to
$0.000001/Mtok) is exact and one request's cost is an exact Fraction of a micro-USD. We round once
per request, up, after the markup: we never front a fraction of a micro-USD.

Why one module: the price table and the exact arithmetic over it; splitting them would separate
each rate from the rule that charges it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from decimal import Decimal, InvalidOperation
from fractions import Fraction

MTOK = 1_000_000  # tokens per rate unit; also micro-USD per USD
APIS = frozenset({"anthropic", "openai"})
MODALITIES = frozenset({"text", "image", "audio", "video"})  # OpenClaw's model `input` values

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
class Rates:
    """One set of token rates in integer micro-USD per million tokens."""

    input: int
    output: int
    cache_write_5m: int
    cache_write_1h: int
    cache_read: int

    def __post_init__(self) -> None:
        for name in _RATE_FIELDS:
            v = getattr(self, name)
            if type(v) is not int or v < 0:
                raise ValueError(f"{name}: must be an int >= 0 (micro-USD per Mtok), got {v!r}")

    @property
    def input_max(self) -> int:
        """The highest rate one input token can be billed at (it may all be written to cache)."""
        return max(self.input, self.cache_write_5m, self.cache_write_1h, self.cache_read)

    @classmethod
    def from_usd(
        cls,
        *,
        input: str | float | int,
        output: str | float | int,
        cache_read: str | float | int,
        cache_write_5m: str | float | int | None = None,
        cache_write_1h: str | float | int | None = None,
    ) -> Rates:
        """USD per Mtok; a cache write left out costs plain input (OpenAI has none)."""
        return cls(
            usd_per_mtok_to_micros("input", input),
            usd_per_mtok_to_micros("output", output),
            usd_per_mtok_to_micros(
                "cache_write_5m", input if cache_write_5m is None else cache_write_5m
            ),
            usd_per_mtok_to_micros(
                "cache_write_1h", input if cache_write_1h is None else cache_write_1h
            ),
            usd_per_mtok_to_micros("cache_read", cache_read),
        )


@dataclass(frozen=True, slots=True)
class LongContext:
    """A model's longer context window and what it costs (Anthropic's 1M-token beta)."""

    threshold: int  # input tokens (uncached + cache writes + cache reads) above which it applies
    context_window: int  # the window a request that enables it may use
    beta: str  # the `anthropic-beta` value that enables it; "" when it is always on
    rates: Rates

    def __post_init__(self) -> None:
        if type(self.threshold) is not int or self.threshold <= 0:
            raise ValueError(f"long_context.threshold: must be an int > 0, got {self.threshold!r}")
        if type(self.context_window) is not int or self.context_window < self.threshold:
            raise ValueError("long_context.context_window: must be an int >= its threshold")


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
    # Most input tokens one model call can read (what a request may pull in from the provider's
    # side: stored conversations, files, tool results); 0: unknown, such requests are refused.
    context_window: int = 0
    # Above `long_context.threshold` input tokens (where the provider offers a longer window,
    # e.g. Anthropic's 1M beta) every token of the request is billed at the long-context rates.
    long_context: LongContext | None = None
    # Other service tiers' rates (OpenAI "priority", "flex"): exact per-model list prices.
    tiers: tuple[tuple[str, Rates], ...] = ()
    # Audio tokens (a part of input/output tokens) at their own rates; None: no audio here.
    audio_input: int | None = None
    audio_output: int | None = None
    # Capabilities (what instances' OpenClaw configs declare, blitzclawd.fleet.openclaw_config):
    # extended thinking (Anthropic) / reasoning effort (OpenAI), and the kinds of input it reads.
    reasoning: bool = False
    modalities: tuple[str, ...] = ("text", "image")

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
        w = self.context_window
        if type(w) is not int or w < 0:
            raise ValueError(f"context_window: must be an int >= 0, got {w!r}")
        for name in ("audio_input", "audio_output"):
            v = getattr(self, name)
            if v is not None and (type(v) is not int or v < 0):
                raise ValueError(f"{name}: must be an int >= 0 (micro-USD per Mtok), got {v!r}")
        if type(self.reasoning) is not bool:
            raise ValueError(f"reasoning: must be true or false, got {self.reasoning!r}")
        mods = self.modalities
        if (
            not isinstance(mods, tuple)
            or "text" not in mods
            or not set(mods) <= MODALITIES
            or len(set(mods)) != len(mods)
        ):
            raise ValueError(
                f"modalities: distinct values of {sorted(MODALITIES)} with 'text', got {mods!r}"
            )

    @property
    def rates(self) -> Rates:
        """The standard-tier rates."""
        return Rates(
            self.input, self.output, self.cache_write_5m, self.cache_write_1h, self.cache_read
        )

    def tier(self, name: str) -> Rates | None:
        for tier, rates in self.tiers:
            if tier == name:
                return rates
        return None

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
    """Every counter we bill for one request; all ints >= 0 (service_tier: as reported)."""

    input_tokens: int = 0  # UNCACHED input (Anthropic input_tokens; OpenAI prompt - cached)
    output_tokens: int = 0  # includes reasoning tokens (billed as output)
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    cache_read_tokens: int = 0
    reasoning_tokens: int = 0  # informational: already inside output_tokens
    # Audio tokens: a part of input_tokens / output_tokens, billed at the audio rates.
    audio_input_tokens: int = 0
    audio_output_tokens: int = 0
    # Server-side tool uses, each billed per use (FEES): web searches (Anthropic
    # server_tool_use.web_search_requests, OpenAI web_search_call items), web fetches, file
    # searches (OpenAI file_search_call items).
    web_search_requests: int = 0
    web_fetch_requests: int = 0
    file_search_calls: int = 0
    service_tier: str | None = None  # the tier the upstream says served the request

    def __post_init__(self) -> None:
        # A negative count would silently turn a charge into a credit.
        for name in _USAGE_COUNTERS:
            v = getattr(self, name)
            if type(v) is not int or v < 0:
                raise ValueError(f"{name}: must be an int >= 0, got {v!r}")
        if self.service_tier is not None and type(self.service_tier) is not str:
            raise ValueError(f"service_tier: must be a string, got {self.service_tier!r}")

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_write_5m_tokens
            + self.cache_write_1h_tokens
            + self.cache_read_tokens
        )

    @property
    def prompt_tokens(self) -> int:
        """Every input token, cached or not (what long-context thresholds count)."""
        return (
            self.input_tokens
            + self.cache_write_5m_tokens
            + self.cache_write_1h_tokens
            + self.cache_read_tokens
        )


_USAGE_COUNTERS = tuple(f.name for f in fields(Usage) if f.name != "service_tier")

# Server-side tool uses billed per use: the Usage counter -> the fee's name in FEES.
FEE_COUNTERS = (
    ("web_search_requests", "web_search"),
    ("web_fetch_requests", "web_fetch"),
    ("file_search_calls", "file_search"),
)


@dataclass(frozen=True, slots=True)
class Fees:
    """Per-use prices of one provider's server-side tools, in integer micro-USD per use."""

    web_search: int = 0
    web_fetch: int = 0
    file_search: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if type(v) is not int or v < 0:
                raise ValueError(f"{f.name}: must be an int >= 0 (micro-USD per use), got {v!r}")


def default_fees() -> dict[str, Fees]:
    """List prices per use (USD 10 / 1,000 searches = 10,000 micro-USD per search)."""
    return {
        # Anthropic: web search $10 / 1K searches; web fetch has no fee beyond its tokens.
        "anthropic": Fees(web_search=10_000, web_fetch=0),
        # OpenAI Responses: web_search $10 / 1K calls; file_search $2.50 / 1K calls.
        "openai": Fees(web_search=10_000, file_search=2_500),
    }


def _markup(value: str | float | int) -> Fraction:
    m = Fraction(_decimal("markup", value))
    if m < 1:
        raise ValueError(f"markup: must be >= 1 (we never sell below list price), got {value!r}")
    return m


class PriceTable:
    """The priced models, the per-use fees and the markup; turns usage into charged micro-USD."""

    __slots__ = ("_by_model", "_den", "_fees", "_markup", "_num")

    def __init__(
        self,
        prices: Iterable[ModelPrice],
        *,
        markup: str | float = "1.5",
        fees: Mapping[str, Fees] | None = None,
    ) -> None:
        self._by_model: dict[str, ModelPrice] = {}
        for p in prices:
            if p.model in self._by_model:
                raise ValueError(f"model {p.model!r}: priced twice")
            self._by_model[p.model] = p
        self._markup = _markup(markup)
        self._fees = dict(default_fees() if fees is None else fees)
        # charged = ceil(sum(tokens * rate) * num / den): pure int arithmetic on the hot path.
        self._num = self._markup.numerator
        self._den = self._markup.denominator * MTOK

    @property
    def markup(self) -> Fraction:
        return self._markup

    def fees(self, api: str) -> Fees:
        return self._fees.get(api) or Fees()

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
    def known_tier(price: ModelPrice, tier: str | None) -> bool:
        """Whether `tier` (as a request names it, or a response reports it) has a price."""
        return tier is None or tier in STANDARD_TIERS or price.tier(tier) is not None

    @staticmethod
    def rates(price: ModelPrice, tier: str | None = None, *, long: bool = False) -> Rates:
        """The rates one request is billed at; an unpriced tier gets the highest of them all."""
        if long and price.long_context is not None:
            return price.long_context.rates
        if tier is None or tier in STANDARD_TIERS:
            return price.rates
        found = price.tier(tier)
        if found is not None:
            return found
        sets = [price.rates, *(r for _, r in price.tiers)]
        return Rates(*(max(getattr(r, f) for r in sets) for f in _RATE_FIELDS))

    def _weighted(
        self, price: ModelPrice, usage: Usage, tier: str | None = None, long_ok: bool = False
    ) -> int:
        # Token-weighted sum in micro-USD per Mtok; / MTOK gives micro-USD. The tier the
        # upstream reports wins over the one the request asked for.
        long = (
            long_ok
            and price.long_context is not None
            and usage.prompt_tokens > price.long_context.threshold
        )
        r = self.rates(price, usage.service_tier or tier, long=long)
        audio_in = min(usage.audio_input_tokens, usage.input_tokens)
        audio_out = min(usage.audio_output_tokens, usage.output_tokens)
        weighted = (
            (usage.input_tokens - audio_in) * r.input
            + (usage.output_tokens - audio_out) * r.output
            + usage.cache_write_5m_tokens * r.cache_write_5m
            + usage.cache_write_1h_tokens * r.cache_write_1h
            + usage.cache_read_tokens * r.cache_read
        )
        if audio_in or audio_out:
            weighted += audio_in * _or(price.audio_input, r.input)
            weighted += audio_out * _or(price.audio_output, r.output)
        if usage.web_search_requests or usage.web_fetch_requests or usage.file_search_calls:
            fees = self.fees(price.api)
            weighted += MTOK * sum(
                getattr(usage, counter) * getattr(fees, fee) for counter, fee in FEE_COUNTERS
            )
        return weighted

    def _charge(self, weighted: int) -> int:
        return -(-weighted * self._num // self._den)  # ceil division, exact on ints

    def list_cost(
        self, price: ModelPrice, usage: Usage, *, tier: str | None = None, long_ok: bool = False
    ) -> Fraction:
        """Exact cost at list price, in micro-USD (may be fractional), before markup."""
        return Fraction(self._weighted(price, usage, tier, long_ok), MTOK)

    def cost_micros(
        self, price: ModelPrice, usage: Usage, *, tier: str | None = None, long_ok: bool = False
    ) -> int:
        """What we charge: ceil(list cost * markup), rounded once per request, up.

        `tier`: the service tier the request asked for (the one reported in `usage` wins);
        `long_ok`: the request enabled the model's long context (its rates apply above the
        threshold)."""
        return self._charge(self._weighted(price, usage, tier, long_ok))

    def reserve_micros(
        self,
        price: ModelPrice,
        *,
        input_tokens_estimate: int,
        max_output_tokens: int | None,
        tiers: tuple[str | None, ...] = (None,),
        long_ok: bool = False,
        passes: int = 1,
        outputs: int = 1,
        audio: bool = False,
        fee_micros: int = 0,
    ) -> int:
        """Worst-case charge of a request, reserved before forwarding it.

        Every input token (of each of `passes` model calls: server tools loop) is priced at the
        highest input-side rate (the request could write it all to the 1h cache) and every
        possible output token (`outputs` choices) at the output rate, at the dearest of the
        service tiers it may be served at (and long-context rates if it can reach them), plus
        the per-use fees it may incur (`fee_micros`, at list price), with markup.
        """
        out = price.max_output_tokens if max_output_tokens is None else max_output_tokens
        if min(input_tokens_estimate, out, fee_micros) < 0 or min(passes, outputs) < 1:
            raise ValueError("token counts must be >= 0")
        sets = [self.rates(price, tier) for tier in tiers]
        lc = price.long_context
        if long_ok and lc is not None and input_tokens_estimate * passes > lc.threshold:
            sets.append(lc.rates)
        in_rate = max(r.input_max for r in sets)
        out_rate = max(r.output for r in sets)
        if audio:
            in_rate = max(in_rate, price.audio_input or 0)
            out_rate = max(out_rate, price.audio_output or 0)
        return self._charge(
            input_tokens_estimate * passes * in_rate + out * outputs * out_rate + fee_micros * MTOK
        )


# Tier names that mean "standard prices": OpenAI's default/auto, Anthropic's standard tiers
# (Anthropic's Priority Tier is a prepaid commitment of the operator, not a per-token premium).
STANDARD_TIERS = frozenset({"default", "auto", "standard", "standard_only"})


def _or(rate: int | None, fallback: int) -> int:
    return fallback if rate is None else rate


def _anthropic(
    model: str,
    input: str,
    w5: str,
    w1h: str,
    read: str,
    output: str,
    max_out: int,
    long: tuple[str, str, str, str, str] | None = None,
    *,
    reasoning: bool = True,
) -> ModelPrice:
    long_context = None
    if long is not None:  # the 1M-token beta: above 200K input tokens, every token at these
        i, lw5, lw1h, lread, lout = long
        rates = Rates.from_usd(
            input=i, output=lout, cache_write_5m=lw5, cache_write_1h=lw1h, cache_read=lread
        )
        long_context = LongContext(200_000, 1_000_000, ANTHROPIC_1M_BETA, rates)
    return replace(
        ModelPrice.from_usd(
            model,
            "anthropic",
            input=input,
            output=output,
            cache_write_5m=w5,
            cache_write_1h=w1h,
            cache_read=read,
            max_output_tokens=max_out,
        ),
        context_window=200_000,
        long_context=long_context,
        reasoning=reasoning,
    )


def _openai(
    model: str,
    input: str,
    read: str,
    output: str,
    max_out: int,
    window: int,
    *,
    priority: tuple[str, str, str] | None = None,
    flex: tuple[str, str, str] | None = None,
    reasoning: bool = False,
) -> ModelPrice:
    # OpenAI caches automatically and charges no cache write: a "write" costs plain input.
    tiers = tuple(
        (name, Rates.from_usd(input=i, cache_read=r, output=o))
        for name, rates in (("priority", priority), ("flex", flex))
        if rates is not None
        for i, r, o in (rates,)
    )
    return replace(
        ModelPrice.from_usd(
            model,
            "openai",
            input=input,
            output=output,
            cache_write_5m=input,
            cache_write_1h=input,
            cache_read=read,
            max_output_tokens=max_out,
        ),
        context_window=window,
        tiers=tiers,
        reasoning=reasoning,
    )


ANTHROPIC_1M_BETA = "context-1m-2025-08-07"
_SONNET_LONG = ("6", "7.50", "12", "0.60", "22.50")


def default_prices() -> list[ModelPrice]:
    """WIRE.md's list-price table (USD/Mtok), with each model's maximum output tokens, context
    window, long-context rates, other service tiers and capabilities (see blitzclawd.toml for
    sources). Reasoning: every Claude 4.x model has extended thinking (Claude 3.5 Haiku has
    none); GPT-5 / 5.1 take a reasoning effort, GPT-4o / 4.1 do not."""
    gpt5_tiers = {"priority": ("2.50", "0.25", "20"), "flex": ("0.625", "0.0625", "5")}
    return [
        _anthropic("claude-opus-4-5", "5", "6.25", "10", "0.50", "25", 64_000),
        _anthropic(
            "claude-opus-4-6",
            "5",
            "6.25",
            "10",
            "0.50",
            "25",
            128_000,
            ("10", "12.50", "20", "1", "37.50"),
        ),
        _anthropic("claude-sonnet-4", "3", "3.75", "6", "0.30", "15", 64_000, _SONNET_LONG),
        _anthropic("claude-sonnet-4-5", "3", "3.75", "6", "0.30", "15", 64_000, _SONNET_LONG),
        _anthropic("claude-sonnet-4-6", "3", "3.75", "6", "0.30", "15", 64_000, _SONNET_LONG),
        _anthropic("claude-haiku-4-5", "1", "1.25", "2", "0.10", "5", 64_000),
        _anthropic("claude-3-5-haiku", "0.80", "1", "1.6", "0.08", "4", 8_192, reasoning=False),
        _openai("gpt-4o", "2.50", "1.25", "10", 16_384, 128_000, priority=("4.25", "2.125", "17")),
        _openai(
            "gpt-4o-mini", "0.15", "0.075", "0.60", 16_384, 128_000, priority=("0.25", "0.125", "1")
        ),
        _openai("gpt-4.1", "2", "0.50", "8", 32_768, 1_047_576, priority=("3.50", "0.875", "14")),
        _openai("gpt-5", "1.25", "0.125", "10", 128_000, 400_000, **gpt5_tiers, reasoning=True),
        _openai("gpt-5.1", "1.25", "0.125", "10", 128_000, 400_000, **gpt5_tiers, reasoning=True),
        replace(
            _openai("gpt-audio", "2.50", "2.50", "10", 16_384, 128_000),
            audio_input=32_000_000,
            audio_output=64_000_000,
            modalities=("text", "audio"),
        ),
    ]


def estimate_input_tokens(body: bytes, image_bytes: int = 0, image_tokens: int = 0) -> int:
    """A cheap, likely-high estimate of a request's prompt tokens, from its byte size.

    Text averages ~4 bytes/token (English) and ~3 (code, UTF-8 CJK), and JSON framing adds bytes
    but no tokens, so bytes/3 + 16 is what a request most likely reads. It is what an interrupted
    stream with no reported input is billed, and recovery's lower bound; admission reserves
    `max_input_tokens` instead, which no tokenizer can beat.
    Base64 images (`image_bytes` of the body) count as the `image_tokens` they are likely
    billed as (metering/images.py), not as text.
    """
    return max(0, len(body) - image_bytes) // 3 + 16 + image_tokens


# Tokens a request reads beyond its own bytes: role and message framing, and the system prompt a
# provider adds for tools (Anthropic: <= ~350 tokens; computer use <= ~1,300 with its tool).
FRAMING_TOKENS = 4_096
# The most tokens one image can be billed as, whatever its size in the body (a URL, a tiny
# but huge-resolution PNG): Claude resizes to <= ~1,600 tokens, OpenAI's high detail is <= ~2,500
# for the models priced here; generous, for newer tokenizers.
IMAGE_MAX_TOKENS = 6_400


def max_input_tokens(body_bytes: int, images: int = 0) -> int:
    """An upper bound on the input tokens of a request made only of its own body.

    Byte-level BPE tokenizers produce at most one token per byte of text, and JSON escapes only
    add bytes; base64 image data is billed as image tokens instead, at most IMAGE_MAX_TOKENS
    each. What the body points at elsewhere (files, stored conversations, documents, server
    tools' results) is not bounded by its size: admission reserves the context window then.
    """
    return body_bytes + FRAMING_TOKENS + images * IMAGE_MAX_TOKENS
