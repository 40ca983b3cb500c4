"""The base plan: users' Creem subscriptions as Creem's webhooks (and our cancel calls) left them.

A row is keyed by Creem's subscription id and belongs to one user for good. `event_at` is the
created_at of the last event applied: an older event delivered late does not move it back.
Nothing here changes a balance (a paid period's credit is a ledger entry, see payments.apply).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import asyncpg

Executor = asyncpg.Connection | asyncpg.Pool

ENDED = ("canceled", "expired")  # no further period is paid
RENEWING = ("active", "trialing", "past_due")


async def owner_of(conn: asyncpg.Connection, subscription_id: str) -> str | None:
    """The user a subscription belongs to (its row locked for this transaction), or None."""
    return await conn.fetchval(
        "SELECT user_id::text FROM subscriptions WHERE id = $1 FOR UPDATE", subscription_id
    )


async def record(
    conn: asyncpg.Connection,
    *,
    subscription_id: str,
    user_id: uuid.UUID,
    product_id: str | None,
    status: str,
    period_end: dt.datetime | None,
    ended_at: dt.datetime | None,
    event_at: dt.datetime,
) -> bool:
    """The subscription's state as of `event_at`; False (nothing changed) when a newer event was
    applied already, or when the row belongs to another user (callers check owner_of first).
    A live subscription recorded forgets the user's open plan checkout: it was paid."""
    applied = bool(
        await conn.fetchval(
            """INSERT INTO subscriptions (id, user_id, product_id, status, current_period_end,
                                          cancel_at_period_end, ended_at, event_at)
               VALUES ($1, $2, $3, $4, $5, $4 = 'scheduled_cancel', $6, $7)
               ON CONFLICT (id) DO UPDATE SET
                   product_id = coalesce(EXCLUDED.product_id, subscriptions.product_id),
                   status = EXCLUDED.status,
                   current_period_end = coalesce(EXCLUDED.current_period_end,
                                                 subscriptions.current_period_end),
                   cancel_at_period_end = EXCLUDED.cancel_at_period_end,
                   ended_at = EXCLUDED.ended_at,
                   event_at = EXCLUDED.event_at,
                   updated_at = now()
               WHERE subscriptions.user_id = EXCLUDED.user_id
                 AND subscriptions.event_at <= EXCLUDED.event_at
               RETURNING true""",
            subscription_id,
            user_id,
            product_id,
            status,
            period_end,
            ended_at,
            event_at,
        )
    )
    if applied and status not in ENDED:
        await forget_checkout(conn, user_id)
    return applied


async def forget_checkout(db: Executor, user_id: uuid.UUID) -> None:
    """The user's open plan checkout was paid (a subscription of theirs was recorded)."""
    await db.execute("DELETE FROM plan_checkouts WHERE user_id = $1", user_id)


async def lock_checkout(conn: asyncpg.Connection, user_id: uuid.UUID) -> None:
    """Serialise this user's subscribes until the transaction ends (not their other writes)."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('plan_checkout:' || $1::text, 0))",
        str(user_id),
    )


async def checkout_of(conn: asyncpg.Connection, user_id: uuid.UUID) -> asyncpg.Record | None:
    """The user's plan checkout: checkout_id and checkout_url (NULL while it is being opened),
    age in seconds."""
    return await conn.fetchrow(
        """SELECT checkout_id, checkout_url,
                  extract(epoch FROM now() - created_at)::float8 AS age
           FROM plan_checkouts WHERE user_id = $1""",
        user_id,
    )


async def claim_checkout(conn: asyncpg.Connection, user_id: uuid.UUID) -> None:
    """This request opens the user's plan checkout (others wait for its answer)."""
    await conn.execute(
        """INSERT INTO plan_checkouts (user_id) VALUES ($1)
           ON CONFLICT (user_id) DO UPDATE SET checkout_id = NULL, checkout_url = NULL,
               created_at = now()""",
        user_id,
    )


async def release_checkout(db: Executor, user_id: uuid.UUID) -> None:
    """Opening it failed: the claim is dropped (a remembered checkout is never)."""
    await db.execute(
        "DELETE FROM plan_checkouts WHERE user_id = $1 AND checkout_id IS NULL", user_id
    )


async def remember_checkout(
    db: Executor, user_id: uuid.UUID, checkout_id: str, checkout_url: str
) -> None:
    await db.execute(
        """INSERT INTO plan_checkouts (user_id, checkout_id, checkout_url) VALUES ($1, $2, $3)
           ON CONFLICT (user_id) DO UPDATE SET checkout_id = EXCLUDED.checkout_id,
               checkout_url = EXCLUDED.checkout_url, created_at = now()""",
        user_id,
        checkout_id,
        checkout_url,
    )


async def live_of(db: Executor, user_id: uuid.UUID) -> asyncpg.Record | None:
    """The user's subscription that has not ended (the newest, should there be several)."""
    return await db.fetchrow(
        """SELECT id, status, current_period_end, cancel_at_period_end FROM subscriptions
           WHERE user_id = $1 AND status <> ALL($2::text[])
           ORDER BY event_at DESC LIMIT 1""",
        user_id,
        list(ENDED),
    )


async def mark_scheduled_cancel(
    db: Executor, subscription_id: str, user_id: uuid.UUID, period_end: dt.datetime | None
) -> asyncpg.Record | None:
    """After Creem accepted a cancel at the period's end: the row says so at once (its webhook
    follows). Returns the row, or None when it ended meanwhile."""
    return await db.fetchrow(
        """UPDATE subscriptions SET status = 'scheduled_cancel', cancel_at_period_end = true,
               current_period_end = coalesce($3, current_period_end),
               event_at = greatest(event_at, now()), updated_at = now()
           WHERE id = $1 AND user_id = $2 AND status <> ALL($4::text[])
           RETURNING current_period_end""",
        subscription_id,
        user_id,
        period_end,
        list(ENDED),
    )


async def plan_of(db: Executor, user_id: uuid.UUID, included_usd: float) -> dict[str, Any] | None:
    """The plan as GET /api/billing/balance shows it: the live subscription, else the one that
    ended last; None for a user who never subscribed."""
    row = await db.fetchrow(
        """SELECT status, current_period_end, cancel_at_period_end, ended_at FROM subscriptions
           WHERE user_id = $1 ORDER BY status = ANY($2::text[]), event_at DESC LIMIT 1""",
        user_id,
        list(ENDED),
    )
    if row is None:
        return None
    end = row["current_period_end"]
    renews = row["status"] in RENEWING and not row["cancel_at_period_end"]
    if row["status"] in ENDED:
        ends = row["ended_at"] or end
    else:
        ends = end if row["cancel_at_period_end"] else None
    return {
        "status": row["status"],
        "renews_at": end.isoformat() if renews and end else None,
        "ends_at": ends.isoformat() if ends else None,
        "included_usd": included_usd,
    }
