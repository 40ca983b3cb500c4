"""The price list users read (landing page, help), from the same table the proxy charges by.

Rates come from config.price_table (list price in exact micro-USD per million tokens, and the
markup as a Fraction), never from float arithmetic on the settings, so $1.875 is shown as $1.875
and not rounded to a price we do not charge.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from blitzclawd.config import Settings, fee_table, price_table
from blitzclawd.metering.pricing import MTOK


def usd(amount: Fraction) -> str:
    """Exact dollars, at least to the cent: $4.50, $0.1125, $1,234.00."""
    # A decimal markup times whole micro-USD is a finite decimal: this division is exact.
    value = Decimal(amount.numerator) / Decimal(amount.denominator)
    if value == value.quantize(Decimal("0.01")):
        return f"${value:,.2f}"
    return f"${value.normalize():,f}"


def cents(amount: int) -> str:
    """$10, or $10.50 when there are cents."""
    return f"${amount / 100:,.0f}" if amount % 100 == 0 else f"${amount / 100:,.2f}"


def price_rows(settings: Settings) -> list[dict[str, str]]:
    """What users pay per million tokens, per model: list price x markup."""
    table = price_table(settings.pricing)
    markup = table.markup
    return [
        {
            "id": m.model,
            "input": usd(m.input * markup / MTOK),
            "output": usd(m.output * markup / MTOK),
            "cache_read": usd(m.cache_read * markup / MTOK),
        }
        for m in table.models()
    ]


def web_search_price(settings: Settings) -> str:
    """One web search by the assistants' default model, with markup (what the proxy adds)."""
    table = price_table(settings.pricing)
    model = table.get(settings.fleet.model)
    api = model.api if model is not None else "anthropic"
    per_use = fee_table(settings.pricing)[api].web_search
    return usd(per_use * table.markup / MTOK)


def markup_text(settings: Settings) -> str:
    """1.5 as "1.5", 2.0 as "2": how the markup reads in a sentence."""
    return f"{Decimal(str(settings.pricing.markup)).normalize():f}"
