"""List prices and the cost arithmetic: exact Fractions, one ceil per request, after markup."""

from __future__ import annotations

from fractions import Fraction

import pytest

from blitzclawd.metering.pricing import (
    ModelPrice,
    PriceTable,
    Usage,
    default_prices,
    estimate_input_tokens,
)


@pytest.fixture
def table() -> PriceTable:
    return PriceTable(default_prices())


def price(table: PriceTable, model: str) -> ModelPrice:
    p = table.get(model)
    assert p is not None, model
    return p


# --- WIRE.md cross-checks -------------------------------------------------------------------------


def test_gpt_4o_cross_check(table: PriceTable) -> None:
    # 225 prompt tokens of which 200 cached -> 25 uncached; 15 output.
    usage = Usage(input_tokens=25, cache_read_tokens=200, output_tokens=15)
    gpt = price(table, "gpt-4o")
    # 25 * 2.50 + 200 * 1.25 + 15 * 10 = 62.5 + 250 + 150 = 462.5 micro-USD = $0.0004625
    assert table.list_cost(gpt, usage) == Fraction(925, 2)
    # 462.5 * 1.5 = 693.75 -> rounded up once
    assert table.cost_micros(gpt, usage) == 694


def test_sonnet_4_5_cross_check(table: PriceTable) -> None:
    usage = Usage(
        input_tokens=25, cache_write_5m_tokens=100, cache_read_tokens=200, output_tokens=15
    )
    sonnet = price(table, "claude-sonnet-4-5")
    # 25 * 3 + 100 * 3.75 + 200 * 0.30 + 15 * 15 = 75 + 375 + 60 + 225 = 735 micro-USD = $0.000735
    assert table.list_cost(sonnet, usage) == Fraction(735)
    # 735 * 1.5 = 1102.5 -> 1103
    assert table.cost_micros(sonnet, usage) == 1103


def test_one_hour_cache_write(table: PriceTable) -> None:
    usage = Usage(
        input_tokens=3, cache_write_5m_tokens=500, cache_write_1h_tokens=1000, output_tokens=7
    )
    haiku = price(table, "claude-haiku-4-5")
    # 3 * 1 + 500 * 1.25 + 1000 * 2 + 7 * 5 = 3 + 625 + 2000 + 35 = 2663
    assert table.list_cost(haiku, usage) == Fraction(2663)
    assert table.cost_micros(haiku, usage) == 3995  # 3994.5 -> 3995


def test_huge_opus_request_is_exact(table: PriceTable) -> None:
    opus = price(table, "claude-opus-4-6")
    usage = Usage(input_tokens=200_000, output_tokens=64_000)
    # 200K * $5/M = $1, 64K * $25/M = $1.60
    assert table.list_cost(opus, usage) == Fraction(2_600_000)
    assert table.cost_micros(opus, usage) == 3_900_000
    # Absurd counts stay exact ints: no float, no overflow.
    big = Usage(input_tokens=10**15, output_tokens=10**15 + 1)
    # 10^15 * 5 + (10^15 + 1) * 25 = 30_000_000_000_000_025; * 1.5 = ...037.5 -> ...038
    assert table.cost_micros(opus, big) == 45_000_000_000_000_038


def test_rounding_is_up_and_once(table: PriceTable) -> None:
    mini = price(table, "gpt-4o-mini")
    assert table.cost_micros(mini, Usage()) == 0
    assert table.list_cost(mini, Usage(input_tokens=1)) == Fraction(3, 20)  # 0.15 micro-USD
    assert table.cost_micros(mini, Usage(input_tokens=1)) == 1  # 0.225 -> 1: never fronted
    # 40 tokens: 40 * 0.15 * 1.5 = 9 exactly (rounding per token would give 40).
    assert table.cost_micros(mini, Usage(input_tokens=40)) == 9


def test_reasoning_tokens_are_not_billed_twice(table: PriceTable) -> None:
    gpt5 = price(table, "gpt-5")
    with_reasoning = Usage(output_tokens=100, reasoning_tokens=64)
    assert table.list_cost(gpt5, with_reasoning) == Fraction(1000)  # 100 * $10/M
    assert with_reasoning.total_tokens == 100


# --- reservations -------------------------------------------------------------------------------


def test_reserve_uses_highest_input_rate_and_output_rate(table: PriceTable) -> None:
    opus = price(table, "claude-opus-4-6")
    # 200K at the 1h cache-write rate ($10/M) = 2_000_000, 64K * $25/M = 1_600_000; * 1.5
    got = table.reserve_micros(opus, input_tokens_estimate=200_000, max_output_tokens=64_000)
    assert got == 5_400_000
    # No max_tokens: the model's own ceiling (128K * $25/M = 3_200_000).
    got = table.reserve_micros(opus, input_tokens_estimate=200_000, max_output_tokens=None)
    assert got == 7_800_000


def test_reserve_openai_and_rounding(table: PriceTable) -> None:
    gpt = price(table, "gpt-4o")
    # 1000 * 2.50 + 100 * 10 = 3500; * 1.5 = 5250
    assert table.reserve_micros(gpt, input_tokens_estimate=1000, max_output_tokens=100) == 5250
    mini = price(table, "gpt-4o-mini")
    # 1 * 0.15 * 1.5 = 0.225 -> 1
    assert table.reserve_micros(mini, input_tokens_estimate=1, max_output_tokens=0) == 1
    with pytest.raises(ValueError):
        table.reserve_micros(mini, input_tokens_estimate=-1, max_output_tokens=0)


def test_reserve_covers_any_actual_cost(table: PriceTable) -> None:
    sonnet = price(table, "claude-sonnet-4-5")
    reserved = table.reserve_micros(sonnet, input_tokens_estimate=1000, max_output_tokens=500)
    for usage in (
        Usage(input_tokens=1000, output_tokens=500),
        Usage(cache_write_1h_tokens=1000, output_tokens=500),
        Usage(cache_write_5m_tokens=600, cache_read_tokens=400, output_tokens=500),
    ):
        assert table.cost_micros(sonnet, usage) <= reserved
    assert reserved == 20_250  # (1000 * 6 + 500 * 15) * 1.5


# --- markup -------------------------------------------------------------------------------------


def test_markup_is_exact() -> None:
    assert PriceTable([]).markup == Fraction(3, 2)
    assert PriceTable([], markup=1.1).markup == Fraction(11, 10)  # via str: no binary noise
    assert PriceTable([], markup="1").markup == 1
    assert PriceTable([], markup=2).markup == 2


def test_odd_markup_rounds_up() -> None:
    p = ModelPrice.from_usd("m", "openai", input="1", output="1", max_output_tokens=10)
    table = PriceTable([p], markup="1.333")
    # 1000 tokens * $1/M = 1000 micro-USD; * 1.333 = 1333 exactly; 1001 -> 1334.333 -> 1335
    assert table.cost_micros(p, Usage(input_tokens=1000)) == 1333
    assert table.cost_micros(p, Usage(input_tokens=1001)) == 1335


@pytest.mark.parametrize("bad", ["0.99", "0", "-1", "abc", "nan", "inf", True, None])
def test_markup_validation(bad: object) -> None:
    with pytest.raises(ValueError, match="markup"):
        PriceTable([], markup=bad)  # type: ignore[arg-type]


# --- ModelPrice.from_usd ------------------------------------------------------------------------


def test_from_usd_exact_and_cache_defaults() -> None:
    p = ModelPrice.from_usd("m", "anthropic", input="3", output=15, max_output_tokens=1000)
    assert (p.input, p.output) == (3_000_000, 15_000_000)
    assert (p.cache_write_5m, p.cache_write_1h, p.cache_read) == (3_750_000, 6_000_000, 300_000)
    q = ModelPrice.from_usd(
        "m", "openai", input=0.15, output=0.6, cache_read=0.075, max_output_tokens=1
    )
    assert (q.input, q.output, q.cache_read) == (150_000, 600_000, 75_000)
    assert (q.cache_write_5m, q.cache_write_1h) == (187_500, 300_000)  # defaults from input


def test_from_usd_derived_default_rounds_up() -> None:
    p = ModelPrice.from_usd("m", "openai", input="0.000001", output="0", max_output_tokens=1)
    assert p.input == 1
    assert (p.cache_write_5m, p.cache_write_1h, p.cache_read) == (2, 2, 1)


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("input", {"input": "-1"}),
        ("output", {"output": -0.5}),
        ("input", {"input": "abc"}),
        ("output", {"output": "nan"}),
        ("output", {"output": "inf"}),
        ("input", {"input": True}),
        ("cache_read", {"cache_read": "0.0000001"}),  # 0.1 micro-USD per Mtok
        ("cache_write_1h", {"cache_write_1h": 1e-7}),
        ("cache_write_5m", {"cache_write_5m": "-0.01"}),
    ],
)
def test_from_usd_refuses_bad_values(field: str, kwargs: dict) -> None:
    args = {"input": "1", "output": "2", "max_output_tokens": 10} | kwargs
    with pytest.raises(ValueError, match=field):
        ModelPrice.from_usd("m", "anthropic", **args)


def test_model_price_validates() -> None:
    with pytest.raises(ValueError, match="api"):
        ModelPrice.from_usd("m", "gemini", input="1", output="1", max_output_tokens=1)
    with pytest.raises(ValueError, match="max_output_tokens"):
        ModelPrice.from_usd("m", "openai", input="1", output="1", max_output_tokens=0)
    with pytest.raises(ValueError, match="cache_read"):
        ModelPrice("m", "openai", 1, 1, 1, 1, -1, 1)
    with pytest.raises(ValueError, match="model"):
        ModelPrice("", "openai", 1, 1, 1, 1, 1, 1)


def test_usage_validates_and_totals() -> None:
    u = Usage(1, 2, 3, 4, 5, reasoning_tokens=2)
    assert u.total_tokens == 15
    with pytest.raises(ValueError, match="input_tokens"):
        Usage(input_tokens=-1)
    with pytest.raises(ValueError, match="output_tokens"):
        Usage(output_tokens=1.5)  # type: ignore[arg-type]


# --- the table ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("asked", "base"),
    [
        ("claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),
        ("claude-3-5-haiku-20241022", "claude-3-5-haiku"),
        ("claude-opus-4-5-20251101", "claude-opus-4-5"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-5-2025-08-07", "gpt-5"),
        ("gpt-4.1-2025-04-14", "gpt-4.1"),
    ],
)
def test_dated_ids_resolve_to_base(table: PriceTable, asked: str, base: str) -> None:
    assert price(table, asked).model == base


@pytest.mark.parametrize(
    "asked",
    [
        "claude-sonnet-4-5-latest",
        "claude-sonnet-4-5-2025",
        "gpt-4o-20240806-extra",
        "gpt-4o-2024-8-6",
        "gpt-4o-audio-preview-2024-12-17",
        "o3",
        "",
    ],
)
def test_unknown_ids(table: PriceTable, asked: str) -> None:
    assert table.get(asked) is None


def test_default_prices_match_wire_table(table: PriceTable) -> None:
    ids = [p.model for p in table.models()]
    assert ids == [
        "claude-opus-4-5",
        "claude-opus-4-6",
        "claude-sonnet-4",
        "claude-sonnet-4-5",
        "claude-sonnet-4-6",
        "claude-haiku-4-5",
        "claude-3-5-haiku",
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "gpt-5",
        "gpt-5.1",
        "gpt-audio",
    ]
    rates = {
        p.model: (p.input, p.cache_write_5m, p.cache_write_1h, p.cache_read, p.output)
        for p in table.models()
    }
    assert rates["claude-opus-4-5"] == (5_000_000, 6_250_000, 10_000_000, 500_000, 25_000_000)
    assert rates["claude-3-5-haiku"] == (800_000, 1_000_000, 1_600_000, 80_000, 4_000_000)
    assert rates["gpt-4o-mini"] == (150_000, 150_000, 150_000, 75_000, 600_000)
    assert rates["gpt-5.1"] == (1_250_000, 1_250_000, 1_250_000, 125_000, 10_000_000)
    assert {p.api for p in table.models() if p.model.startswith("claude")} == {"anthropic"}
    assert {p.api for p in table.models() if p.model.startswith("gpt")} == {"openai"}


def test_duplicate_model_refused() -> None:
    p = default_prices()[0]
    with pytest.raises(ValueError, match="twice"):
        PriceTable([p, p])


def test_estimate_input_tokens() -> None:
    assert estimate_input_tokens(b"") == 16
    assert estimate_input_tokens(b"x" * 300) == 116
    assert estimate_input_tokens(b"x" * 302) == 116


# --- context windows, long context, tiers, audio, fees --------------------------------------------


def test_every_model_knows_its_context_window(table: PriceTable) -> None:
    windows = {p.model: p.context_window for p in table.models()}
    assert windows["claude-sonnet-4-6"] == 200_000 and windows["gpt-4.1"] == 1_047_576
    assert windows["gpt-5"] == 400_000 and windows["gpt-4o"] == 128_000
    assert all(windows.values())


def test_long_context_rates_apply_above_the_threshold_only_when_enabled(table: PriceTable) -> None:
    sonnet = price(table, "claude-sonnet-4-5")
    over = Usage(input_tokens=150_000, cache_write_1h_tokens=40_000, cache_read_tokens=20_000)
    # 150K x $6 + 40K x $12 + 20K x $0.60 = 900000 + 480000 + 12000
    assert table.list_cost(sonnet, over, long_ok=True) == 1_392_000
    assert table.list_cost(sonnet, over) == 450_000 + 240_000 + 6_000  # not enabled
    at = Usage(input_tokens=200_000, output_tokens=1000)
    assert table.list_cost(sonnet, at, long_ok=True) == 600_000 + 15_000  # not above
    # Opus 4.6 above 200K: $10 in, $37.50 out.
    opus = price(table, "claude-opus-4-6")
    assert table.list_cost(opus, Usage(input_tokens=200_001, output_tokens=2), long_ok=True) == (
        Fraction(2_000_010) + 75
    )
    # Reserved at long rates once the bound can pass the threshold.
    assert (
        table.reserve_micros(
            sonnet, input_tokens_estimate=300_000, max_output_tokens=1000, long_ok=True
        )
        == (300_000 * 12 + 1000 * 22.5) * 1.5
    )


def test_service_tiers(table: PriceTable) -> None:
    gpt5 = price(table, "gpt-5")
    u = Usage(input_tokens=800, cache_read_tokens=200, output_tokens=100)
    assert table.list_cost(gpt5, u) == 1000 + 25 + 1000
    assert table.list_cost(gpt5, u, tier="priority") == 2000 + 50 + 2000
    assert table.list_cost(gpt5, u, tier="flex") == Fraction(2025, 2)
    # What the answer reports wins over what was asked.
    assert table.list_cost(gpt5, Usage(output_tokens=1, service_tier="flex"), tier="priority") == 5
    assert table.known_tier(gpt5, "flex") and not table.known_tier(gpt5, "scale")
    # An unpriced tier is billed at the dearest rates the model has.
    assert table.list_cost(gpt5, Usage(output_tokens=1, service_tier="scale")) == 20
    assert not price(table, "gpt-4o").tier("flex")
    # Reserved at the dearest tier it may be served at.
    assert (
        table.reserve_micros(
            gpt5, input_tokens_estimate=1, max_output_tokens=1, tiers=("default", "priority")
        )
        == 34
    )  # (2.5 + 20) x 1.5 = 33.75 -> 34


def test_audio_tokens(table: PriceTable) -> None:
    audio = price(table, "gpt-audio")
    u = Usage(input_tokens=1000, output_tokens=200, audio_input_tokens=400, audio_output_tokens=150)
    assert table.list_cost(audio, u) == 600 * 2.5 + 400 * 32 + 50 * 10 + 150 * 64


def test_per_use_fees(table: PriceTable) -> None:
    sonnet = price(table, "claude-sonnet-4-6")
    u = Usage(web_search_requests=500, web_fetch_requests=9)
    assert table.cost_micros(sonnet, u) == 7_500_000  # 500 x $0.01 x 1.5; fetches free
    gpt = price(table, "gpt-4o")
    u = Usage(web_search_requests=1, file_search_calls=4)
    assert table.list_cost(gpt, u) == 10_000 + 4 * 2_500
    assert (
        table.reserve_micros(gpt, input_tokens_estimate=0, max_output_tokens=0, fee_micros=20_000)
        == 30_000
    )


def test_passes_and_outputs_multiply_the_worst_case(table: PriceTable) -> None:
    gpt = price(table, "gpt-4o")
    one = table.reserve_micros(gpt, input_tokens_estimate=1000, max_output_tokens=100)
    assert one == 5250
    assert (
        table.reserve_micros(
            gpt, input_tokens_estimate=1000, max_output_tokens=100, passes=3, outputs=2
        )
        == (3 * 1000 * 2.5 + 2 * 100 * 10) * 1.5
    )


def test_max_input_tokens_bounds_any_tokenizer() -> None:
    from blitzclawd.metering.pricing import FRAMING_TOKENS, IMAGE_MAX_TOKENS, max_input_tokens

    assert max_input_tokens(0) == FRAMING_TOKENS
    assert max_input_tokens(1000, 2) == 1000 + FRAMING_TOKENS + 2 * IMAGE_MAX_TOKENS
    assert max_input_tokens(300) > estimate_input_tokens(b"x" * 300)
