"""Queue an email in the caller's transaction: it exists exactly when what it tells happened.

    notification_id = await queue_notification(conn, Notify(user_id, kind, period, facts))

The row is unique per (user, kind, period): the period is the idempotency key (a job id, an
event id), so a retried job, a replayed webhook or a restarted daemon finds the row and queues
nothing. The notifier sends pending rows (at once on `NotificationQueued`, else at its sweep).
"""

from __future__ import annotations

import uuid

import asyncpg
import orjson

from blitzclawd.runtime.messages import Notify


async def queue_notification(conn: asyncpg.Connection | asyncpg.Pool, note: Notify) -> int | None:
    """The new row's id, or None when this (user, kind, period) was queued before."""
    return await conn.fetchval(
        """INSERT INTO notifications (user_id, kind, period, facts)
           VALUES ($1, $2, $3, $4::text::jsonb)
           ON CONFLICT (user_id, kind, period) DO NOTHING RETURNING id""",
        uuid.UUID(note.user_id),
        note.kind,
        note.period,
        orjson.dumps(dict(note.facts)).decode(),
    )
