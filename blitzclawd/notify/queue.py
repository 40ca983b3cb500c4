"""Queue an email in the caller's transaction: it exists exactly when what it tells happened.

    notification_id = await queue_notification(conn, Notify(user_id, kind, period, facts))

The row is unique per (user, kind, period): the period is the idempotency key (a job id, an
event id), so a retried job, a replayed webhook or a restarted daemon finds the row and queues
nothing. The notifier sends pending rows (at once on `NotificationQueued`, else at its sweep),
through the other functions here: the notifications table's queries.
"""

from __future__ import annotations

import uuid

import asyncpg
import orjson

from blitzclawd.runtime.messages import Notify


async def queue_notification(conn: asyncpg.Connection | asyncpg.Pool, note: Notify) -> int | None:
    """The new row's id, or None when this (user, kind, period) was queued before."""
    return await conn.fetchval(
        """INSERT INTO notifications (user_id, kind, period, facts, recipient)
           VALUES ($1, $2, $3, $4::text::jsonb, $5)
           ON CONFLICT (user_id, kind, period) DO NOTHING RETURNING id""",
        uuid.UUID(note.user_id),
        note.kind,
        note.period,
        orjson.dumps(dict(note.facts)).decode(),
        note.to,
    )


async def due(pool: asyncpg.Pool, limit: int) -> list[int]:
    """Pending rows whose next attempt is due, oldest first."""
    rows = await pool.fetch(
        "SELECT id FROM notifications WHERE status = 'pending' AND next_attempt_at <= now() "
        "ORDER BY next_attempt_at LIMIT $1",
        limit,
    )
    return [row["id"] for row in rows]


async def to_send(pool: asyncpg.Pool, notification_id: int) -> asyncpg.Record | None:
    """kind, facts, attempts, status, user_id and the address of one row (its recipient's, an
    operator's, else the user's own email)."""
    return await pool.fetchrow(
        """SELECT n.kind, n.facts, n.attempts, n.status, n.user_id,
                  coalesce(n.recipient, u.email) AS email
           FROM notifications n JOIN users u ON u.id = n.user_id WHERE n.id = $1""",
        notification_id,
    )


async def retry_after(
    pool: asyncpg.Pool, notification_id: int, attempts: int, error: str, seconds: float
) -> None:
    await pool.execute(
        "UPDATE notifications SET attempts = $2, last_error = $3, "
        "next_attempt_at = now() + make_interval(secs => $4) WHERE id = $1",
        notification_id,
        attempts,
        error,
        seconds,
    )


async def finish(
    pool: asyncpg.Pool,
    notification_id: int,
    status: str,
    *,
    error: str | None,
    provider_id: str | None,
    attempts: int | None,
) -> None:
    """Sent or failed for good (attempts kept when None)."""
    await pool.execute(
        "UPDATE notifications SET status = $2, last_error = $3, provider_id = $4, "
        "attempts = coalesce($5, attempts), "
        "sent_at = CASE WHEN $2 = 'sent' THEN now() END WHERE id = $1",
        notification_id,
        status,
        error,
        provider_id,
        attempts,
    )


async def add_facts(pool: asyncpg.Pool, notification_id: int, facts: dict[str, object]) -> None:
    await pool.execute(
        "UPDATE notifications SET facts = facts || $2::text::jsonb WHERE id = $1",
        notification_id,
        orjson.dumps(facts).decode(),
    )
