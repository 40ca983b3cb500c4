"""Instance jobs (`instance_jobs`): the provisioner's durable queue. One job per instance at a
time, in order; claimed FOR UPDATE SKIP LOCKED with `locked_by` = the claiming daemon, so a job
left `running` by a daemon that stopped is claimed again. Queueing a job is
blitzclawd.fleet.pool.enqueue_job (in the transaction of the change it carries)."""

from __future__ import annotations

import uuid

import asyncpg

Executor = asyncpg.Connection | asyncpg.Pool

_CLAIM = """
WITH next AS (
    SELECT j.id FROM instance_jobs j
    LEFT JOIN daemons d ON d.id = j.locked_by
    WHERE ((j.status = 'queued' AND j.run_after <= now())
           OR (j.status = 'running'
               AND (j.locked_by IS NULL OR d.stopped_at IS NOT NULL
                    -- ours, yet not running here (the $3 test below): a job whose end could
                    -- not be recorded (the database was down) or left by our crashed predecessor
                    OR j.locked_by = $1)))
      AND NOT EXISTS (
          SELECT 1 FROM instance_jobs e
          WHERE e.instance_id = j.instance_id AND e.id < j.id
            AND e.status IN ('queued', 'running'))
      AND NOT (j.instance_id = ANY($3::uuid[]))
    ORDER BY j.id
    LIMIT $2
    FOR UPDATE OF j SKIP LOCKED
)
UPDATE instance_jobs j
SET status = 'running', locked_by = $1, locked_at = now(), attempts = j.attempts + 1
FROM next WHERE j.id = next.id
RETURNING j.id, j.instance_id, j.kind, j.attempts
"""


async def claim(
    db: Executor, daemon_id: str, limit: int, running_here: list[uuid.UUID]
) -> list[asyncpg.Record]:
    """Up to `limit` jobs for this daemon (id, instance_id, kind, attempts), none for an instance
    whose job already runs here."""
    return await db.fetch(_CLAIM, daemon_id, limit, running_here)


async def requeue_ours(db: Executor, daemon_id: str) -> None:
    """What this daemon was running goes back to the queue for whoever runs next."""
    await db.execute(
        """UPDATE instance_jobs SET status = 'queued', locked_by = NULL, locked_at = NULL
           WHERE status = 'running' AND locked_by = $1""",
        daemon_id,
    )


async def done(db: Executor, job_id: int) -> None:
    await db.execute(
        """UPDATE instance_jobs SET status = 'done', finished_at = now(), locked_by = NULL
           WHERE id = $1""",
        job_id,
    )


async def failed(conn: asyncpg.Connection, job_id: int, reason: str) -> None:
    """Failed for good (no retry)."""
    await conn.execute(
        """UPDATE instance_jobs SET status = 'failed', finished_at = now(),
                  locked_by = NULL, last_error = $2 WHERE id = $1""",
        job_id,
        reason,
    )


async def retry_later(conn: asyncpg.Connection, job_id: int, reason: str, seconds: float) -> None:
    await conn.execute(
        """UPDATE instance_jobs SET status = 'queued', locked_by = NULL,
                  locked_at = NULL, last_error = $2,
                  run_after = now() + make_interval(secs => $3)
           WHERE id = $1""",
        job_id,
        reason,
        seconds,
    )
