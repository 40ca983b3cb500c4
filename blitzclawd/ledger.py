"""The only code that moves money: settlement of usage and every other entry (top-up, refund,
subscription, adjustment), each one SQL call (see 0002_metering). Called by the billing actor
(money's one writer) and by recovery at start-up; tests/test_layering.py holds that.

The database enforces the invariants (append-only ledger, balance = sum of entries, reserved =
sum of the balance leases, idempotency); these functions only pass the facts in.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
import orjson

from blitzclawd.runtime.messages import Settlement, SettleResult

_SETTLE = (
    "SELECT request_id::text, outcome, user_id::text, balance_micros, paused, auto_topup_micros, "
    "lease_found FROM settle_usage($1::text::jsonb, $2)"
)
_ADJUST = (
    "SELECT outcome, balance_micros, paused, resumed "
    "FROM adjust_balance($1, $2, $3, $4, $5, $6, $7)"
)


async def settle(
    conn: asyncpg.Connection | asyncpg.Pool, items: Sequence[Settlement], minimum_micros: int
) -> list[SettleResult]:
    """Settle `items` in one transaction (the caller's, or one of its own)."""
    # Sent as text (cast in SQL), so it works on any connection, with or without json codecs.
    # orjson serialises (slotted) dataclasses natively, far faster than dataclasses.asdict.
    payload = orjson.dumps(list(items)).decode()
    rows = await conn.fetch(_SETTLE, payload, minimum_micros)
    return [SettleResult(r[0], r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows]


@dataclass(frozen=True, slots=True)
class Entry:
    """Money in or out other than usage (a top-up, the subscription's credit, a refund, an
    operator's adjustment): applied once per idempotency key."""

    user_id: str
    amount_micros: int  # positive: money in; negative: money out (a refund)
    kind: str  # ledger kind: "topup" | "subscription" | "refund" | "adjustment"
    reference: str | None
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class Adjusted:
    outcome: str  # "applied" | "duplicate"
    balance_micros: int | None
    paused: int  # instances this entry paused (the balance fell below the minimum)
    resumed: int  # instances this entry resumed (back at or above the minimum)


async def adjust(
    conn: asyncpg.Connection | asyncpg.Pool,
    entry: Entry,
    minimum_micros: int,
    pause_reason: str = "balance_depleted",
) -> Adjusted:
    """Book `entry` (in the caller's transaction, or one of its own); pauses or resumes the
    user's instances as the balance crosses the minimum (`pause_reason` says why)."""
    if entry.amount_micros == 0:
        raise ValueError("an entry moves money")
    row = await conn.fetchrow(
        _ADJUST,
        uuid.UUID(entry.user_id),
        entry.amount_micros,
        entry.kind,
        entry.reference,
        entry.idempotency_key,
        minimum_micros,
        pause_reason,
    )
    return Adjusted(row[0], row[1], row[2], row[3])
