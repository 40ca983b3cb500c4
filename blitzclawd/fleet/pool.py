"""The fleet's shared SQL: handing servers to instances and queueing instance jobs.

Server rows move provisioning -> available -> assigned -> (teardown: rebuilt) provisioning, or to
deleting / gone. A server is only ever claimed with FOR UPDATE SKIP LOCKED inside the transaction
that records its new owner, so two claimers can never get the same one.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

JOB_KINDS = ("deploy", "configure", "restart", "teardown")


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
    waiting = await conn.fetchval(
        """SELECT id FROM instances
           WHERE status = 'pending' AND server_id IS NULL AND deleted_at IS NULL
           ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED"""
    )
    if waiting is not None:
        await assign(conn, row, waiting)
        await enqueue_job(conn, waiting, "deploy")
        return "deploy"
    await conn.execute("UPDATE server_pool SET status = 'available' WHERE id = $1", row["id"])
    return "available"
