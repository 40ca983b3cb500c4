"""The fleet's state for the operator's metrics (blitzclawd.metrics), read at scrape time: small
GROUP BY counts over indexed or small tables, one round trip each."""

from __future__ import annotations

import asyncpg

POOL_SERVERS = "SELECT status, count(*) AS value FROM server_pool GROUP BY status"
INSTANCES = "SELECT status, count(*) AS value FROM instances GROUP BY status"
JOBS = "SELECT kind, status, count(*) AS value FROM instance_jobs GROUP BY kind, status"
JOB_SECONDS = """SELECT kind, avg(extract(epoch FROM finished_at - created_at))::float8 AS value
                 FROM instance_jobs
                 WHERE status = 'done' AND finished_at > now() - interval '1 day'
                 GROUP BY kind"""
HEALTH = "SELECT state, count(*) AS value FROM instance_health GROUP BY state"
HEALTH_ALERTS = "SELECT kind, count(*) AS value FROM health_alerts GROUP BY kind"
EMAILS = "SELECT kind, status AS outcome, count(*) AS value FROM notifications GROUP BY 1, 2"
WEBHOOKS = """SELECT provider AS source, 'processed' AS outcome, count(*) AS value
              FROM processed_webhook_events GROUP BY provider
              UNION ALL
              SELECT provider, 'unmatched', count(*) FROM unmatched_payments GROUP BY provider"""


async def fleet_state(pool: asyncpg.Pool) -> dict[str, list[asyncpg.Record]]:
    async with pool.acquire() as conn:
        return {
            name: await conn.fetch(sql)
            for name, sql in (
                ("pool_servers", POOL_SERVERS),
                ("instances", INSTANCES),
                ("jobs", JOBS),
                ("job_seconds", JOB_SECONDS),
                ("health_checks", HEALTH_ALERTS),
                ("health", HEALTH),
                ("emails", EMAILS),
                ("webhooks", WEBHOOKS),
            )
        }
