"""Payments we did not (fully) apply, kept for the operator (table unmatched_payments, 0012).

A Creem event that carries money we cannot match to what we sold (a user mismatch, no or an
unknown request_id, another currency, more than the top-up, a refund of nothing we credited,
data we refuse) changes no balance; a refund above its credit is applied only up to the credit.
Either way one row says what came in and why, in the same transaction as the event's record, so
a redelivery finds the event processed and adds nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

# The reasons, as the table's CHECK lists them.
REASONS = (
    "invalid_data",  # a field is missing, malformed or out of range
    "no_request_id",  # a checkout that names no top-up (e.g. an order through a product link)
    "unknown_topup",  # request_id names no top-up we created
    "checkout_mismatch",  # the top-up was created with another checkout
    "user_mismatch",  # metadata.user_id names someone other than the top-up's user
    "currency",  # not the top-up's currency (USD)
    "amount_above_topup",  # more than the top-up asked for
    "topup_already_paid",  # another order for a top-up already credited
    "unknown_payment",  # a refund of nothing we credited
    "refund_above_credit",  # a refund beyond what is left of its credit (the rest was debited)
    "unknown_user",  # a subscription event naming no user we know
    "rejected_by_database",  # the database refused the event's data (a bug of ours to look at)
)


class Unmatched(Exception):
    """What an event claimed and why it was not applied; recorded by `record`."""

    def __init__(
        self,
        reason: str,
        detail: str,
        *,
        amount_cents: int | None = None,
        currency: str | None = None,
        request_id: str | None = None,
        claimed_user: str | None = None,
        topup_id: uuid.UUID | None = None,
        user_id: str | None = None,
    ) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown reason {reason!r}")
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail
        self.amount_cents, self.currency = amount_cents, currency
        self.request_id, self.claimed_user = request_id, claimed_user
        self.topup_id, self.user_id = topup_id, user_id


async def record(
    conn: asyncpg.Connection,
    provider: str,
    event_id: str,
    event_type: str,
    payload: dict[str, Any],
    u: Unmatched,
) -> None:
    """One row per event (a second call for the same event changes nothing)."""
    await conn.execute(
        """INSERT INTO unmatched_payments (provider, event_id, event_type, reason, detail,
               amount_cents, currency, request_id, claimed_user, topup_id, user_id, payload)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::text::jsonb)
           ON CONFLICT (provider, event_id) DO NOTHING""",
        provider,
        event_id,
        event_type,
        u.reason,
        u.detail,
        u.amount_cents,
        u.currency,
        u.request_id,
        u.claimed_user,
        u.topup_id,
        uuid.UUID(u.user_id) if u.user_id else None,
        orjson.dumps(payload).decode(),
    )


@dataclass(frozen=True, slots=True)
class UnmatchedPayment:
    id: int
    provider: str
    event_id: str
    event_type: str
    reason: str
    detail: str
    amount_cents: int | None
    currency: str | None
    request_id: str | None
    claimed_user: str | None
    topup_id: str | None
    user_id: str | None
    received_at: datetime
    payload: dict[str, Any] | None


async def list_unmatched(
    conn: asyncpg.Connection | asyncpg.Pool, *, limit: int = 100, before_id: int | None = None
) -> list[UnmatchedPayment]:
    """Newest first, `limit` at a time; page on with `before_id` = the last row's id."""
    if not 1 <= limit <= 1000:
        raise ValueError("limit must be from 1 to 1000")
    rows = await conn.fetch(
        """SELECT id, provider, event_id, event_type, reason, detail, amount_cents, currency,
                  request_id, claimed_user, topup_id::text, user_id::text, received_at,
                  payload::text
           FROM unmatched_payments
           WHERE $1::bigint IS NULL OR id < $1
           ORDER BY id DESC LIMIT $2""",
        before_id,
        limit,
    )
    return [
        UnmatchedPayment(
            *tuple(r)[:13], payload=orjson.loads(r["payload"]) if r["payload"] else None
        )
        for r in rows
    ]
