"""An operator's drain of the server pool and the hold on refilling it (pool_hold, one row while
held). The pool manager takes the servers and deletes them at the provider; the API reads and
lifts the hold."""

from __future__ import annotations

import asyncpg

Executor = asyncpg.Connection | asyncpg.Pool


async def hold_of(db: Executor) -> asyncpg.Record | None:
    """held_by and held_at while the pool is held, else None."""
    return await db.fetchrow("SELECT held_by, held_at FROM pool_hold")


async def release(db: Executor) -> asyncpg.Record | None:
    """The hold lifted; what it was (None: the pool was not held)."""
    return await db.fetchrow("DELETE FROM pool_hold RETURNING held_by, held_at")


async def hold_and_take(
    pool: asyncpg.Pool, actor: str, count: int | None, location: str | None
) -> list[asyncpg.Record]:
    """Hold the pool (a hold already there stays as it was) and mark for deletion up to `count`
    (None: all) ready, unassigned servers, oldest first, in `location` (None: any); the taken
    servers' id, name, provider id and location.

    One transaction: the hold is in place before a server leaves, so no pass refills in between.
    A server an instance is claiming is locked by that claim and skipped (SKIP LOCKED); once
    claimed it is assigned, never available: an assigned server is never taken."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO pool_hold (held_by) VALUES ($1) ON CONFLICT (only_row) DO NOTHING", actor
        )
        return await conn.fetch(
            """UPDATE server_pool SET status = 'deleting'
               WHERE id IN (
                   SELECT id FROM server_pool
                   WHERE status = 'available' AND assigned_to IS NULL
                     AND ($2::text IS NULL OR location = $2)
                   ORDER BY created_at LIMIT $1
                   FOR UPDATE SKIP LOCKED)
               RETURNING id, name, hetzner_server_id, location""",
            count,
            location,
        )
