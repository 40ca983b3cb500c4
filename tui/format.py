"""How the console writes money, times and ids: short enough for a table cell."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation
from typing import Any


def dollars(micros: Any) -> str:
    """Micro-USD as dollars with cents (sub-cent amounts keep four decimals)."""
    if micros is None:
        return "-"
    value = int(micros) / 1_000_000
    if value and abs(value) < 0.01:
        return f"${value:,.4f}"
    return f"${value:,.2f}"


def parse_time(value: Any) -> dt.datetime | None:
    if not value:
        return None
    try:
        found = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return found if found.tzinfo else found.replace(tzinfo=dt.UTC)


def age(value: Any, now: dt.datetime) -> str:
    """How long ago, in the largest whole unit: 45s, 12m, 3h, 9d."""
    at = parse_time(value)
    if at is None:
        return "-"
    seconds = max(0, int((now - at).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def number(value: Any, none: str = "global") -> str:
    """A whole number with thousands separators; None says what stands instead."""
    return none if value is None else f"{int(value):,}"


def cell(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def parse_dollars(text: str) -> int:
    """'12.50', '-5', '$3' as micro-USD; ValueError with the reason otherwise."""
    cleaned = text.strip().replace("$", "").replace(",", "")
    if not cleaned:
        raise ValueError("an amount is needed, e.g. 12.50 or -5")
    try:
        amount = Decimal(cleaned)
    except InvalidOperation:
        amount = Decimal("NaN")
    if not amount.is_finite() or abs(amount) > 1_000_000:
        raise ValueError(f"{text.strip()!r} is not an amount in dollars (at most $1,000,000)")
    value = int((amount * 1_000_000).to_integral_value())
    if value == 0:
        raise ValueError("the amount cannot be zero")
    return value
