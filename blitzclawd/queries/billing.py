"""Billing reads: the balance as users see it. Every query is scoped by the caller's user id;
nothing here changes a balance (that is blitzclawd.ledger's, through the billing actor)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import asyncpg

MICROS_PER_CENT = 10_000


def cents(micros: int) -> int:
    """Display cents, rounded down: we never show money the user does not have."""
    return micros // MICROS_PER_CENT


async def balance_summary(pool: asyncpg.Pool, user_id: str, minimum: int) -> dict[str, Any]:
    """The user's balance as GET /api/billing/balance (and /api/me) show it."""
    row = await pool.fetchrow(
        "SELECT balance_micros, auto_topup_enabled, topup_threshold_micros, topup_amount_micros, "
        "(SELECT coalesce(sum(amount_micros), 0)::bigint FROM reservations r WHERE r.user_id = $1) "
        "AS in_flight_micros FROM balances WHERE user_id = $1",
        uuid.UUID(user_id),
    )
    balance = row["balance_micros"] if row else 0
    # What the user's requests in flight may still cost: those with a database record, i.e. in
    # flight for a checkpoint or longer (a shorter one is over before anyone could look).
    # balances.reserved_micros counts the daemons' leases instead, an implementation detail
    # that is given back when idle.
    reserved = row["in_flight_micros"] if row else 0
    warning = None
    if balance < minimum:
        warning = (
            f"Your balance is below the ${minimum / 1e6:.2f} minimum: top up to continue "
            "using your assistant."
        )
    return {
        "balance_micros": balance,
        "balance_cents": cents(balance),
        "reserved_micros": reserved,
        "available_micros": balance - reserved,
        "available_cents": cents(balance - reserved),
        "minimum_micros": minimum,
        "minimum_cents": cents(minimum),
        "below_minimum": balance < minimum,
        "warning": warning,
        "auto_topup": {
            "enabled": bool(row and row["auto_topup_enabled"]),
            "threshold_cents": cents(row["topup_threshold_micros"])
            if row and row["topup_threshold_micros"] is not None
            else None,
            "amount_cents": cents(row["topup_amount_micros"])
            if row and row["topup_amount_micros"] is not None
            else None,
        },
    }


async def available_micros(db: asyncpg.Connection | asyncpg.Pool, user_id: uuid.UUID) -> int:
    """Balance less what the user's requests in flight may still cost (0 with no balance row)."""
    value = await db.fetchval(
        "SELECT balance_micros - (SELECT coalesce(sum(amount_micros), 0)::bigint "
        "FROM reservations r WHERE r.user_id = $1) FROM balances WHERE user_id = $1",
        user_id,
    )
    return value or 0


async def usage_lines(
    pool: asyncpg.Pool, user_id: uuid.UUID, first: dt.date, last: dt.date
) -> list[asyncpg.Record]:
    """The user's usage per UTC day, model and instance, from `first` to `last` inclusive."""
    return await pool.fetch(
        """SELECT (created_at AT TIME ZONE 'UTC')::date AS day, model, instance_id::text,
                  count(*) AS requests, sum(input_tokens)::bigint AS input_tokens,
                  sum(output_tokens)::bigint AS output_tokens,
                  sum(cache_write_5m_tokens + cache_write_1h_tokens)::bigint AS cache_write_tokens,
                  sum(cache_read_tokens)::bigint AS cache_read_tokens,
                  sum(cost_micros)::bigint AS cost_micros
           FROM usage_logs
           WHERE user_id = $1 AND created_at >= $2::date AT TIME ZONE 'UTC'
             AND created_at < ($3::date + 1) AT TIME ZONE 'UTC'
           GROUP BY 1, 2, 3 ORDER BY 1, 2, 3""",
        user_id,
        first,
        last,
    )


async def set_auto_topup(
    pool: asyncpg.Pool,
    user_id: uuid.UUID,
    enabled: bool,
    threshold_micros: int | None,
    amount_micros: int | None,
) -> None:
    """The user's auto top-up settings (the balance itself is not touched)."""
    await pool.execute(
        """INSERT INTO balances (user_id, auto_topup_enabled, topup_threshold_micros,
                                 topup_amount_micros)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (user_id) DO UPDATE SET auto_topup_enabled = EXCLUDED.auto_topup_enabled,
               topup_threshold_micros = EXCLUDED.topup_threshold_micros,
               topup_amount_micros = EXCLUDED.topup_amount_micros""",
        user_id,
        enabled,
        threshold_micros,
        amount_micros,
    )


async def last_credit_id(db: asyncpg.Connection | asyncpg.Pool, user_id: uuid.UUID) -> int:
    """The id of the user's latest ledger entry that added money (0: none): a top-up cycle."""
    return await db.fetchval(
        "SELECT coalesce(max(id), 0) FROM ledger_entries WHERE user_id = $1 AND amount_micros > 0",
        user_id,
    )


async def usage_without_digest(
    pool: asyncpg.Pool, first: dt.date, end: dt.date, period: str, limit: int = 1000
) -> list[asyncpg.Record]:
    """Per user with usage in [first, end) and no weekly digest for `period` yet: user_id, cost,
    tokens, requests."""
    return await pool.fetch(
        """SELECT u.user_id::text, sum(u.cost_micros)::bigint AS cost,
                  sum(u.input_tokens + u.output_tokens)::bigint AS tokens, count(*) AS requests
           FROM usage_logs u
           WHERE u.created_at >= $1::date AT TIME ZONE 'UTC'
             AND u.created_at < $2::date AT TIME ZONE 'UTC'
             AND NOT EXISTS (SELECT FROM notifications n WHERE n.user_id = u.user_id
                             AND n.kind = 'weekly_digest' AND n.period = $3)
           GROUP BY u.user_id LIMIT $4""",
        first,
        end,
        period,
        limit,
    )


async def topups_of(
    db: asyncpg.Connection | asyncpg.Pool, user_id: uuid.UUID, limit: int
) -> list[asyncpg.Record]:
    """The user's top-ups, newest first (checkouts never paid included: status pending)."""
    return await db.fetch(
        """SELECT id::text, amount_cents, status, credited_micros, refunded_micros, checkout_id,
                  order_id, created_at, paid_at
           FROM topups WHERE user_id = $1 ORDER BY created_at DESC LIMIT $2""",
        user_id,
        limit,
    )
