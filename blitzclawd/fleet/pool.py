"""The fleet's shared SQL: handing servers to instances and queueing instance jobs.

Server rows move provisioning -> available -> assigned -> (teardown: rebuilt) provisioning, or to
deleting / gone. A server is only ever claimed with FOR UPDATE SKIP LOCKED inside the transaction
that records its new owner, so two claimers can never get the same one.

Placement (an instance looking for an available server, a ready server looking for a waiting
instance) runs one transaction at a time, on every daemon (a transaction advisory lock): without
it, a create and a ready call at the same moment each miss the other's uncommitted row, and the
instance waits while the server sits available. Under the lock, the later one sees the earlier.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from blitzclawd.providers.base import ServerInfo

Executor = asyncpg.Connection | asyncpg.Pool

JOB_KINDS = ("deploy", "configure", "restart", "stop", "start", "teardown")

# The placement lock's key: b"blitzpla" as a bigint (other advisory locks: migrate, singletons).
PLACEMENT_LOCK = int.from_bytes(b"blitzpla", "big")


async def lock_placement(conn: asyncpg.Connection) -> None:
    """Placement decisions of this transaction wait for everyone else's to commit (held until
    this transaction ends). Taken before any row lock of placement is waited for."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", PLACEMENT_LOCK)


async def enqueue_job(
    conn: asyncpg.Connection,
    instance_id: uuid.UUID,
    kind: str,
    payload: dict[str, Any] | None = None,
) -> int:
    if kind not in JOB_KINDS:
        raise ValueError(f"unknown job kind {kind!r}")
    return await conn.fetchval(
        "INSERT INTO instance_jobs (instance_id, kind, payload) VALUES ($1, $2, $3) RETURNING id",
        instance_id,
        kind,
        payload or {},
    )


async def claim_available_server(
    conn: asyncpg.Connection, instance_id: uuid.UUID
) -> asyncpg.Record | None:
    """Assign the oldest available server to the instance (call inside a transaction)."""
    await lock_placement(conn)
    server = await conn.fetchrow(
        """SELECT id, hetzner_server_id, host(ip_address) AS ip FROM server_pool
           WHERE status = 'available' ORDER BY created_at LIMIT 1
           FOR UPDATE SKIP LOCKED"""
    )
    if server is None:
        return None
    await assign(conn, server, instance_id)
    return server


async def assign(conn: asyncpg.Connection, server: asyncpg.Record, instance_id: uuid.UUID) -> None:
    await conn.execute(
        "UPDATE server_pool SET status = 'assigned', assigned_to = $2 WHERE id = $1",
        server["id"],
        instance_id,
    )
    await conn.execute(
        """UPDATE instances SET server_id = $2, hetzner_server_id = $3, ip_address = $4::inet,
                  status = 'provisioning', status_reason = NULL
           WHERE id = $1""",
        instance_id,
        server["id"],
        server["hetzner_server_id"],
        server["ip"],
    )


async def server_ready(conn: asyncpg.Connection, server_id: uuid.UUID) -> str:
    """A server that called back (and whose address we know) goes to work.

    Assigned already: its instance is deployed. Else the oldest instance waiting for a server
    gets it. Else it joins the available pool. Returns what happened. Call in a transaction.
    """
    row = await conn.fetchrow(
        """SELECT id, status, assigned_to, hetzner_server_id, host(ip_address) AS ip
           FROM server_pool WHERE id = $1 FOR UPDATE""",
        server_id,
    )
    if row is None or row["status"] not in ("provisioning", "available", "assigned"):
        return "ignored"
    if row["ip"] is None or row["hetzner_server_id"] is None:
        return "waiting"  # the pool manager calls again once the create has returned
    if row["assigned_to"] is not None:
        await conn.execute("UPDATE server_pool SET status = 'assigned' WHERE id = $1", row["id"])
        await enqueue_job(conn, row["assigned_to"], "deploy")
        return "deploy"
    await lock_placement(conn)
    waiting = await _oldest_waiting(conn)
    if waiting is not None:
        await assign(conn, row, waiting)
        await enqueue_job(conn, waiting, "deploy")
        return "deploy"
    await conn.execute("UPDATE server_pool SET status = 'available' WHERE id = $1", row["id"])
    return "available"


async def _oldest_waiting(conn: asyncpg.Connection) -> uuid.UUID | None:
    """The instance waiting longest for a server, locked (call under the placement lock)."""
    return await conn.fetchval(
        """SELECT id FROM instances
           WHERE status = 'pending' AND server_id IS NULL AND deleted_at IS NULL
           ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED"""
    )


async def place_waiting(pool: asyncpg.Pool, limit: int) -> int:
    """Instances waiting for a server while one is available get it (oldest first, at most
    `limit`), each with its deploy job; how many. The pool manager's safety net each pass."""
    placed = 0
    while placed < limit:
        async with pool.acquire() as conn, conn.transaction():
            await lock_placement(conn)
            waiting = await _oldest_waiting(conn)
            if waiting is None or await claim_available_server(conn, waiting) is None:
                return placed
            await enqueue_job(conn, waiting, "deploy")
        placed += 1
    return placed


async def server_of_instance(db: Executor, instance_id: uuid.UUID) -> asyncpg.Record | None:
    """id, name and provider id of the server the instance has, or was promised."""
    return await db.fetchrow(
        """SELECT id, name, hetzner_server_id FROM server_pool
           WHERE assigned_to = $1 OR id = (SELECT server_id FROM instances WHERE id = $1)""",
        instance_id,
    )


async def retire(db: Executor, server_id: uuid.UUID) -> None:
    """Out of the pool for good (the pool manager deletes it at the provider)."""
    await db.execute(
        "UPDATE server_pool SET status = 'deleting', assigned_to = NULL WHERE id = $1", server_id
    )


async def rebuilding(db: Executor, server_id: uuid.UUID, secret_hash: bytes) -> None:
    """Before a rebuild: the new boot's ready call must find the new secret and no old key."""
    await db.execute(
        """UPDATE server_pool SET status = 'provisioning', assigned_to = NULL,
                  ssh_host_key = NULL, ready_at = NULL, secret_hash = $2
           WHERE id = $1""",
        server_id,
        secret_hash,
    )


# -- the pool manager's -------------------------------------------------------------------------


async def live_servers(db: Executor, stuck_after: float) -> list[asyncpg.Record]:
    """Every server not gone; `stuck` when its status has not changed for `stuck_after` s."""
    return await db.fetch(
        """SELECT id, name, hetzner_server_id, status, assigned_to, ssh_host_key,
                  status_changed_at < now() - make_interval(secs => $1) AS stuck
           FROM server_pool WHERE status <> 'gone'""",
        stuck_after,
    )


async def set_provider_facts(db: Executor, server_id: uuid.UUID, info: ServerInfo) -> None:
    """What the provider says of our server: its id, address, location and type."""
    await db.execute(
        """UPDATE server_pool SET hetzner_server_id = $2, ip_address = $3::inet,
                  location = $4, server_type = $5 WHERE id = $1""",
        server_id,
        info.provider_id,
        info.ipv4,
        info.location,
        info.server_type,
    )


async def mark_deleting(db: Executor, server_id: uuid.UUID) -> None:
    await db.execute("UPDATE server_pool SET status = 'deleting' WHERE id = $1", server_id)


async def mark_gone(
    pool: asyncpg.Pool, server_id: uuid.UUID, assigned_to: uuid.UUID | None, reason: str
) -> None:
    """The server is gone; the instance it served (if any) is in error, without a server."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "UPDATE server_pool SET status = 'gone', assigned_to = NULL WHERE id = $1", server_id
        )
        if assigned_to is not None:
            await conn.execute(
                """UPDATE instances SET status = 'error', status_reason = $2, server_id = NULL
                   WHERE id = $1 AND status <> 'deleted'""",
                assigned_to,
                reason,
            )


async def pool_counts(db: Executor) -> asyncpg.Record:
    """spare (provisioning or available, unassigned), total (not gone), waiting (instances
    pending without a server)."""
    return await db.fetchrow(
        """SELECT
             count(*) FILTER (WHERE status IN ('provisioning', 'available')
                              AND assigned_to IS NULL) AS spare,
             count(*) FILTER (WHERE status <> 'gone') AS total,
             (SELECT count(*) FROM instances WHERE status = 'pending' AND server_id IS NULL
                AND deleted_at IS NULL) AS waiting
           FROM server_pool"""
    )


async def insert_provisioning(
    db: Executor, server_id: uuid.UUID, name: str, secret_hash: bytes, server_type: str
) -> None:
    await db.execute(
        """INSERT INTO server_pool (id, name, secret_hash, server_type, status)
           VALUES ($1, $2, $3, $4, 'provisioning')""",
        server_id,
        name,
        secret_hash,
        server_type,
    )


async def mark_never_created(db: Executor, server_id: uuid.UUID) -> None:
    await db.execute("UPDATE server_pool SET status = 'gone' WHERE id = $1", server_id)


async def created(pool: asyncpg.Pool, server_id: uuid.UUID, info: ServerInfo) -> str | None:
    """The provider created our server: its facts stored; if its ready call came in before we
    knew its address, the ready step is finished now (server_ready's outcome), else None."""
    async with pool.acquire() as conn, conn.transaction():
        await set_provider_facts(conn, server_id, info)
        ready = await conn.fetchval(
            "SELECT ssh_host_key IS NOT NULL AND status = 'provisioning' "
            "FROM server_pool WHERE id = $1",
            server_id,
        )
        return await server_ready(conn, server_id) if ready else None
