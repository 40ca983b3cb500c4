"""Pool servers as the API reads and changes them. (Claiming servers and queueing jobs, shared
with the actors, is blitzclawd.fleet.pool.)"""

from __future__ import annotations

import uuid

import asyncpg

from blitzclawd.fleet.pool import server_ready

Executor = asyncpg.Connection | asyncpg.Pool


async def server_by_name(db: Executor, name: str) -> asyncpg.Record | None:
    """id, status and secret hash of the pool server called `name`."""
    return await db.fetchrow(
        "SELECT id, status, secret_hash FROM server_pool WHERE name = $1", name
    )


async def report_ready(pool: asyncpg.Pool, server_id: uuid.UUID, host_key: str) -> str | None:
    """The server reported ready with its SSH host key: stored, and the server handed to the
    instance waiting for it (or made available). What happened (blitzclawd.fleet.pool.
    server_ready), or None when the server is being deleted (nothing is stored then)."""
    async with pool.acquire() as conn, conn.transaction():
        if await _record_host_key(conn, server_id, host_key) is None:
            return None
        return await server_ready(conn, server_id)


async def _record_host_key(
    conn: asyncpg.Connection, server_id: uuid.UUID, host_key: str
) -> str | None:
    return await conn.fetchval(
        """UPDATE server_pool SET ssh_host_key = $2, ready_at = now()
           WHERE id = $1 AND status IN ('provisioning', 'available', 'assigned')
           RETURNING status""",
        server_id,
        host_key,
    )
