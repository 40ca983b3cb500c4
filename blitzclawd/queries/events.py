"""What changed in the fleet since a moment, for the operators' live events (blitzclawd.
event_watch): small indexed reads, bounded, between two database timestamps."""

from __future__ import annotations

import datetime as dt

import asyncpg

LIMIT = 500

CHANGES = {
    "instance": """SELECT id::text AS instance_id, user_id::text, status, status_reason,
                          updated_at AS at
                   FROM instances WHERE updated_at > $1 AND updated_at <= $2
                   ORDER BY updated_at LIMIT $3""",
    "pool": """SELECT id::text AS server_id, name, status, host(ip_address) AS ip,
                      status_changed_at AS at
               FROM server_pool WHERE status_changed_at > $1 AND status_changed_at <= $2
               ORDER BY status_changed_at LIMIT $3""",
    "health": """SELECT instance_id::text, ok, state, detail, restarts, checked_at AS at
                 FROM instance_health WHERE checked_at > $1 AND checked_at <= $2
                 ORDER BY checked_at LIMIT $3""",
    "alert": """SELECT instance_id::text, kind, detail, created_at AS at
                FROM health_alerts WHERE created_at > $1 AND created_at <= $2
                ORDER BY created_at LIMIT $3""",
    "spike": """SELECT instance_id::text, spent_micros, baseline_micros, paused, created_at AS at
                FROM spend_alerts WHERE created_at > $1 AND created_at <= $2
                ORDER BY created_at LIMIT $3""",
    "balance_paused": """SELECT user_id::text, balance_micros, paused_instances, created_at AS at
                         FROM balance_alerts WHERE created_at > $1 AND created_at <= $2
                         ORDER BY created_at LIMIT $3""",
    "webhook": """SELECT provider, event_type, event_id, received_at AS at
                  FROM processed_webhook_events WHERE received_at > $1 AND received_at <= $2
                  ORDER BY received_at LIMIT $3""",
}


async def now(pool: asyncpg.Pool) -> dt.datetime:
    return await pool.fetchval("SELECT now()")


async def changes(
    pool: asyncpg.Pool, since: dt.datetime, until: dt.datetime
) -> list[tuple[str, asyncpg.Record]]:
    """(type, row) of everything that changed in (since, until], oldest first."""
    out: list[tuple[str, asyncpg.Record]] = []
    async with pool.acquire() as conn:
        for kind, sql in CHANGES.items():
            out.extend((kind, row) for row in await conn.fetch(sql, since, until, LIMIT))
    out.sort(key=lambda item: item[1]["at"])
    return out
