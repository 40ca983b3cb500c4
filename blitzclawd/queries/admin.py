"""What the admin API reads across users, and its audit trail (admin_actions)."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

Executor = asyncpg.Connection | asyncpg.Pool


async def audit(
    db: Executor, actor: str, action: str, target: str | None, detail: dict[str, Any]
) -> None:
    await db.execute(
        "INSERT INTO admin_actions (actor, action, target, detail) VALUES ($1, $2, $3, $4)",
        actor,
        action,
        target,
        detail,
    )


async def recent_actions(db: Executor, limit: int) -> list[asyncpg.Record]:
    return await db.fetch(
        """SELECT id, actor, action, target, detail, created_at FROM admin_actions
           ORDER BY id DESC LIMIT $1""",
        limit,
    )


async def servers(db: Executor) -> list[asyncpg.Record]:
    return await db.fetch(
        """SELECT id::text, name, hetzner_server_id, status, location, server_type,
                  host(ip_address) AS ip, assigned_to::text, created_at, ready_at,
                  status_changed_at
           FROM server_pool WHERE status <> 'gone' ORDER BY created_at"""
    )


async def jobs(db: Executor, status: str | None, limit: int) -> list[asyncpg.Record]:
    return await db.fetch(
        """SELECT j.id, j.instance_id::text, i.user_id::text, j.kind, j.status, j.attempts,
                  j.last_error, j.created_at, j.finished_at
           FROM instance_jobs j JOIN instances i ON i.id = j.instance_id
           WHERE $1::text IS NULL OR j.status = $1
           ORDER BY j.id DESC LIMIT $2""",
        status,
        limit,
    )


async def retry_job(pool: asyncpg.Pool, job_id: int, actor: str) -> asyncpg.Record | None:
    """A failed job queued again from scratch (its last error kept until it runs), audited in
    the same transaction; None when there is no such failed job."""
    async with pool.acquire() as conn, conn.transaction():
        job = await _requeue(conn, job_id)
        if job is not None:
            await audit(conn, actor, "job.retry", str(job["id"]), {"kind": job["kind"]})
        return job


async def _requeue(conn: asyncpg.Connection, job_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(
        """UPDATE instance_jobs SET status = 'queued', attempts = 0, run_after = now(),
                  locked_by = NULL, locked_at = NULL, finished_at = NULL
           WHERE id = $1 AND status = 'failed'
           RETURNING id, instance_id::text, kind""",
        job_id,
    )


def _pattern(search: str | None) -> str | None:
    return None if not search else "%" + search.replace("\\", "").replace("%", "") + "%"


async def instances(
    db: Executor, search: str | None, status: str | None, limit: int
) -> list[asyncpg.Record]:
    """Every user's live instances, newest first; `search` matches the instance id, the owner's
    id or email, or the server's address (a prefix or a substring, case-insensitive). Each row
    has what it was charged since the UTC day began, and `total`: how many match regardless of
    `limit` (no rows: none match). Set-based for fleets of 10,000: the page is chosen first,
    then one aggregate over today's usage of the page's instances is joined (the index on
    usage_logs (instance_id, created_at) serves it)."""
    return await db.fetch(
        """WITH page AS (
               SELECT i.id, i.user_id, u.email, i.status, i.status_reason, i.channel_type,
                      host(s.ip_address) AS server_ip, s.name AS server_name,
                      h.state AS health, h.detail AS health_detail,
                      h.checked_at AS health_checked_at, i.msgs_per_hour AS messages_per_hour,
                      i.tokens_per_day, i.created_at, count(*) OVER () AS total
               FROM instances i
               JOIN users u ON u.id = i.user_id
               LEFT JOIN server_pool s ON s.id = i.server_id
               LEFT JOIN instance_health h ON h.instance_id = i.id
               WHERE i.deleted_at IS NULL
                 AND ($1::text IS NULL OR i.id::text ILIKE $1 OR i.user_id::text ILIKE $1
                      OR u.email ILIKE $1 OR host(s.ip_address) ILIKE $1)
                 AND ($2::text IS NULL OR i.status = $2)
               ORDER BY i.created_at DESC LIMIT $3
           ), today AS (
               SELECT instance_id, sum(cost_micros)::bigint AS spend
               FROM usage_logs
               WHERE instance_id IN (SELECT id FROM page)
                 AND created_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
               GROUP BY instance_id
           )
           SELECT p.id::text, p.user_id::text, p.email, p.status, p.status_reason,
                  p.channel_type, p.server_ip, p.server_name, p.health, p.health_detail,
                  p.health_checked_at, p.messages_per_hour, p.tokens_per_day, p.created_at,
                  coalesce(t.spend, 0) AS spend_today_micros, p.total
           FROM page p LEFT JOIN today t ON t.instance_id = p.id
           ORDER BY p.created_at DESC""",
        _pattern(search),
        status,
        limit,
    )


async def instance_exists(db: Executor, instance_id: uuid.UUID) -> bool:
    return bool(
        await db.fetchval(
            "SELECT 1 FROM instances WHERE id = $1 AND deleted_at IS NULL", instance_id
        )
    )


async def set_limits(
    db: Executor, instance_id: uuid.UUID, changes: dict[str, int | None]
) -> asyncpg.Record | None:
    """An instance's own limits (None: the global one; a limit not in `changes` stays); the
    instances trigger announces it to every proxy."""
    return await db.fetchrow(
        """UPDATE instances SET
               msgs_per_hour = CASE WHEN $2 THEN $3::integer ELSE msgs_per_hour END,
               tokens_per_day = CASE WHEN $4 THEN $5::bigint ELSE tokens_per_day END
           WHERE id = $1 AND deleted_at IS NULL
           RETURNING msgs_per_hour AS messages_per_hour, tokens_per_day""",
        instance_id,
        "messages_per_hour" in changes,
        changes.get("messages_per_hour"),
        "tokens_per_day" in changes,
        changes.get("tokens_per_day"),
    )


async def users(db: Executor, search: str | None, limit: int) -> list[asyncpg.Record]:
    """Users, newest first, with their balance, what their leases hold and how many there are,
    their live instances, what they were charged since the UTC day began and in the last 30
    days, and what their paid top-ups credited (refunds not taken off) and when the last was
    paid. The page is chosen first; each aggregate then covers only the page's users."""
    return await db.fetch(
        """WITH page AS (
               SELECT u.id, u.email, u.clerk_user_id, u.role, u.created_at
               FROM users u
               WHERE u.deleted_at IS NULL
                 AND ($1::text IS NULL OR u.id::text ILIKE $1 OR u.email ILIKE $1
                      OR u.clerk_user_id ILIKE $1)
               ORDER BY u.created_at DESC LIMIT $2
           ), spend AS (
               SELECT user_id,
                      sum(cost_micros) FILTER (
                          WHERE created_at
                                >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                      )::bigint AS today,
                      sum(cost_micros)::bigint AS month
               FROM usage_logs
               WHERE user_id IN (SELECT id FROM page) AND created_at >= now() - interval '30 days'
               GROUP BY user_id
           ), paid AS (
               SELECT user_id, sum(credited_micros)::bigint AS credited, max(paid_at) AS last_at
               FROM topups
               WHERE user_id IN (SELECT id FROM page) AND status = 'paid'
               GROUP BY user_id
           ), live AS (
               SELECT user_id, count(*) AS instances FROM instances
               WHERE user_id IN (SELECT id FROM page) AND deleted_at IS NULL
               GROUP BY user_id
           ), leases AS (
               SELECT user_id, count(*) AS leases FROM balance_leases
               WHERE user_id IN (SELECT id FROM page)
               GROUP BY user_id
           )
           SELECT p.id::text, p.email, p.clerk_user_id, p.role, p.created_at,
                  coalesce(b.balance_micros, 0) AS balance_micros,
                  coalesce(b.reserved_micros, 0) AS reserved_micros,
                  coalesce(v.instances, 0) AS instances,
                  coalesce(s.today, 0) AS spend_today_micros,
                  coalesce(s.month, 0) AS spend_30d_micros,
                  coalesce(t.credited, 0) AS topped_up_micros,
                  t.last_at AS last_topup_at,
                  coalesce(l.leases, 0) AS leases
           FROM page p
           LEFT JOIN balances b ON b.user_id = p.id
           LEFT JOIN live v ON v.user_id = p.id
           LEFT JOIN spend s ON s.user_id = p.id
           LEFT JOIN paid t ON t.user_id = p.id
           LEFT JOIN leases l ON l.user_id = p.id
           ORDER BY p.created_at DESC""",
        _pattern(search),
        limit,
    )


async def user_exists(db: Executor, user_id: uuid.UUID) -> bool:
    return bool(
        await db.fetchval("SELECT 1 FROM users WHERE id = $1 AND deleted_at IS NULL", user_id)
    )


async def pause_user(db: Executor, user_id: uuid.UUID) -> int:
    """Every active instance of the user paused by an operator (the proxy refuses them at once:
    the instances announcement); how many."""
    done = await db.execute(
        """UPDATE instances SET status = 'paused', status_reason = 'paused_by_operator'
           WHERE user_id = $1 AND status = 'active' AND deleted_at IS NULL""",
        user_id,
    )
    return int(done.split()[-1])


async def resume_user(db: Executor, user_id: uuid.UUID) -> int:
    """Those an operator paused, active again (not those paused for their balance)."""
    done = await db.execute(
        """UPDATE instances SET status = 'active', status_reason = NULL
           WHERE user_id = $1 AND status = 'paused' AND status_reason = 'paused_by_operator'""",
        user_id,
    )
    return int(done.split()[-1])


async def pause_instance(db: Executor, instance_id: uuid.UUID) -> asyncpg.Record | None:
    """One active instance paused by an operator (the proxy refuses it at once: the instances
    announcement). Its status and reason before, and whether it was paused; None when there is
    no such live instance."""
    return await db.fetchrow(
        """WITH paused AS (
               UPDATE instances SET status = 'paused', status_reason = 'paused_by_operator'
               WHERE id = $1 AND status = 'active' AND deleted_at IS NULL RETURNING id
           )
           SELECT i.status, i.status_reason, EXISTS (SELECT FROM paused) AS done
           FROM instances i WHERE i.id = $1 AND i.deleted_at IS NULL""",
        instance_id,
    )


async def resume_instance(db: Executor, instance_id: uuid.UUID) -> asyncpg.Record | None:
    """One instance an operator paused, active again (not one paused for its balance). Its
    status and reason before, and whether it was resumed; None when there is no such live
    instance."""
    return await db.fetchrow(
        """WITH resumed AS (
               UPDATE instances SET status = 'active', status_reason = NULL
               WHERE id = $1 AND status = 'paused' AND status_reason = 'paused_by_operator'
                 AND deleted_at IS NULL RETURNING id
           )
           SELECT i.status, i.status_reason, EXISTS (SELECT FROM resumed) AS done
           FROM instances i WHERE i.id = $1 AND i.deleted_at IS NULL""",
        instance_id,
    )
