"""Usage spikes (blitzclawd.metering.spikes): each instance's spend in the last hour against its
own hourly average before it, from usage_logs; alerts recorded once per clock hour."""

from __future__ import annotations

import datetime as dt

import asyncpg

SPIKES = """
WITH recent AS (
    SELECT instance_id, sum(cost_micros)::bigint AS spent
    FROM usage_logs WHERE created_at > now() - interval '1 hour'
    GROUP BY instance_id
), earlier AS (
    SELECT instance_id, (sum(cost_micros) / $3::integer)::bigint AS per_hour
    FROM usage_logs
    WHERE created_at > now() - make_interval(hours => $3::integer + 1)
      AND created_at <= now() - interval '1 hour'
    GROUP BY instance_id
)
SELECT r.instance_id::text, i.user_id::text, u.email AS owner_email, i.status, r.spent,
       coalesce(b.per_hour, 0)::bigint AS baseline
FROM recent r
JOIN instances i ON i.id = r.instance_id AND i.deleted_at IS NULL
JOIN users u ON u.id = i.user_id
LEFT JOIN earlier b ON b.instance_id = r.instance_id
WHERE r.spent >= $2::bigint AND r.spent > $1::float8 * coalesce(b.per_hour, 0)
"""


async def spikes(
    pool: asyncpg.Pool, factor: float, floor_micros: int, hours: int
) -> list[asyncpg.Record]:
    return await pool.fetch(SPIKES, factor, floor_micros, hours)


async def record(
    conn: asyncpg.Connection, instance_id: str, spent: int, baseline: int, pause: bool
) -> dt.datetime | None:
    """The window (clock hour) of a new alert, None if this hour already has one; the instance
    paused too if asked."""
    new = await conn.fetchval(
        """INSERT INTO spend_alerts (instance_id, window_start, spent_micros, baseline_micros,
                                     paused)
           VALUES ($1::uuid, date_trunc('hour', now()), $2, $3, $4)
           ON CONFLICT (instance_id, window_start) DO NOTHING RETURNING window_start""",
        instance_id,
        spent,
        baseline,
        pause,
    )
    if new is not None and pause:
        await conn.execute(
            """UPDATE instances SET status = 'paused', status_reason = 'usage_spike'
               WHERE id = $1::uuid AND status = 'active'""",
            instance_id,
        )
    return new
