"""The operators' dashboards over time (GET /api/admin/metrics): per hour or day, usage and
money from usage_logs and the ledger, failures from jobs, health alerts and emails, and pool
server-hours by location. One statement; every subquery bounded by the range."""

from __future__ import annotations

import datetime as dt

import asyncpg

SERIES = """
WITH buckets AS (
    SELECT generate_series(date_trunc($3, $1::timestamptz),
                           $2::timestamptz - interval '1 microsecond',
                           ('1 ' || $3)::interval) AS at
), usage AS (
    SELECT date_trunc($3, created_at) AS at, count(*) AS requests,
           count(*) FILTER (WHERE status_code IS DISTINCT FROM 200) AS proxy_errors,
           count(DISTINCT instance_id) AS active_instances,
           sum(input_tokens + output_tokens + cache_read_tokens + cache_write_5m_tokens
               + cache_write_1h_tokens)::bigint AS tokens,
           sum(cost_micros)::bigint AS charged_micros
    FROM usage_logs WHERE created_at >= $1 AND created_at < $2 GROUP BY 1
), paid AS (
    SELECT date_trunc($3, paid_at) AS at, sum(credited_micros)::bigint AS topups_micros
    FROM topups WHERE status = 'paid' AND paid_at >= $1 AND paid_at < $2 GROUP BY 1
), subs AS (
    SELECT date_trunc($3, created_at) AS at, sum(amount_micros)::bigint AS subscriptions_micros
    FROM ledger_entries
    WHERE kind = 'subscription' AND created_at >= $1 AND created_at < $2 GROUP BY 1
), jobs AS (
    SELECT date_trunc($3, finished_at) AS at, count(*) AS failed_jobs
    FROM instance_jobs WHERE status = 'failed' AND finished_at >= $1 AND finished_at < $2
    GROUP BY 1
), alerts AS (
    SELECT date_trunc($3, created_at) AS at, count(*) AS health_alerts
    FROM health_alerts WHERE created_at >= $1 AND created_at < $2 GROUP BY 1
), mail AS (
    SELECT date_trunc($3, created_at) AS at, count(*) AS failed_emails
    FROM notifications WHERE status = 'failed' AND created_at >= $1 AND created_at < $2
    GROUP BY 1
)
SELECT b.at, coalesce(u.requests, 0) AS requests, coalesce(u.proxy_errors, 0) AS proxy_errors,
       coalesce(u.active_instances, 0) AS active_instances, coalesce(u.tokens, 0) AS tokens,
       coalesce(u.charged_micros, 0) AS charged_micros,
       coalesce(p.topups_micros, 0) AS topups_micros,
       coalesce(s.subscriptions_micros, 0) AS subscriptions_micros,
       coalesce(j.failed_jobs, 0) AS failed_jobs, coalesce(a.health_alerts, 0) AS health_alerts,
       coalesce(m.failed_emails, 0) AS failed_emails
FROM buckets b
LEFT JOIN usage u ON u.at = b.at
LEFT JOIN paid p ON p.at = b.at
LEFT JOIN subs s ON s.at = b.at
LEFT JOIN jobs j ON j.at = b.at
LEFT JOIN alerts a ON a.at = b.at
LEFT JOIN mail m ON m.at = b.at
ORDER BY b.at
"""

SERVER_HOURS = """
WITH buckets AS (
    SELECT generate_series(date_trunc($3, $1::timestamptz),
                           $2::timestamptz - interval '1 microsecond',
                           ('1 ' || $3)::interval) AS at
), servers AS (
    SELECT coalesce(location, 'unknown') AS location, created_at,
           CASE WHEN status = 'gone' THEN status_changed_at ELSE now() END AS until
    FROM server_pool WHERE created_at < $2
)
SELECT b.at, s.location,
       sum(extract(epoch FROM least(b.at + ('1 ' || $3)::interval, s.until)
                              - greatest(b.at, s.created_at)) / 3600)::float8 AS hours
FROM buckets b
JOIN servers s ON s.created_at < b.at + ('1 ' || $3)::interval AND s.until > b.at
GROUP BY 1, 2 ORDER BY 1, 2
"""


async def series(
    pool: asyncpg.Pool, start: dt.datetime, end: dt.datetime, step: str
) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
    async with pool.acquire() as conn:
        return (
            await conn.fetch(SERIES, start, end, step),
            await conn.fetch(SERVER_HOURS, start, end, step),
        )
