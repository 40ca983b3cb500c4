"""Operators' alerts about a user (blitzclawd.notify.operators): a balance that ran out
mid-conversation, once per pause."""

from __future__ import annotations

import uuid

import asyncpg

Executor = asyncpg.Connection | asyncpg.Pool


async def record_balance_pause(
    db: Executor, user_id: uuid.UUID, period: str, balance_micros: int, paused: int
) -> bool:
    """True for a new alert; False when this pause (the user's `period`) was alerted before."""
    new = await db.fetchval(
        """INSERT INTO balance_alerts (user_id, period, balance_micros, paused_instances)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (user_id, period) DO NOTHING RETURNING id""",
        user_id,
        period,
        balance_micros,
        paused,
    )
    return new is not None


async def email_of(db: Executor, user_id: uuid.UUID) -> str | None:
    """The user's email address as we know it (None until Clerk has told us)."""
    return await db.fetchval("SELECT email FROM users WHERE id = $1", user_id)
