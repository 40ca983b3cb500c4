"""The only code that moves money: settlement and credit, each one SQL call (see 0002_metering).

The database enforces the invariants (append-only ledger, balance = sum of entries, reserved =
sum of the balance leases, idempotency); these functions only pass the facts in.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import orjson

from blitzclawd.runtime.messages import Credit, CreditResult, Settlement, SettleResult

_SETTLE = (
    "SELECT request_id::text, outcome, user_id::text, balance_micros, paused, auto_topup_micros, "
    "lease_found FROM settle_usage($1::text::jsonb, $2)"
)
_ADJUST = "SELECT outcome, balance_micros, resumed FROM adjust_balance($1, $2, $3, $4, $5, $6)"


async def settle(
    conn: asyncpg.Connection | asyncpg.Pool, items: Sequence[Settlement], minimum_micros: int
) -> list[SettleResult]:
    """Settle `items` in one transaction (the caller's, or one of its own)."""
    # Sent as text (cast in SQL), so it works on any connection, with or without json codecs.
    # orjson serialises (slotted) dataclasses natively, far faster than dataclasses.asdict.
    payload = orjson.dumps(list(items)).decode()
    rows = await conn.fetch(_SETTLE, payload, minimum_micros)
    return [SettleResult(r[0], r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows]


async def credit(
    conn: asyncpg.Connection | asyncpg.Pool, c: Credit, minimum_micros: int
) -> CreditResult:
    if c.amount_micros <= 0:
        raise ValueError("a credit is a positive amount")
    row = await conn.fetchrow(
        _ADJUST,
        c.user_id,
        c.amount_micros,
        c.kind,
        c.reference,
        c.idempotency_key,
        minimum_micros,
    )
    outcome = "credited" if row[0] == "applied" else row[0]
    return CreditResult(outcome, row[1], row[2])
