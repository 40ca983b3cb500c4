"""Bulk provisioning (issue 19): many instances placed at once.

At the database, the race behind an instance that waited for ever: a create and a server's
ready call at the same moment, each missing the other's uncommitted row.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import asyncpg
from test_fleet import until

from blitzclawd.fleet import pool as fleet_pool
from blitzclawd.providers.base import ServerInfo
from blitzclawd.queries import fleet as fleet_rows
from blitzclawd.testing import seed

# -- placement under concurrency, at the database ------------------------------------------------


async def a_server(pool: asyncpg.Pool, *, available: bool) -> uuid.UUID:
    """A pool server whose create has returned: provisioning, or available (called back)."""
    server_id = uuid.uuid4()
    name = f"bc-{server_id.hex[:12]}"
    await fleet_pool.insert_provisioning(pool, server_id, name, b"hash", "cx23")
    info = ServerInfo(1, name, "running", "127.0.1.1", "fsn1", "cx23", {}, datetime.now(UTC))
    await fleet_pool.set_provider_facts(pool, server_id, info)
    if available:
        assert await fleet_rows.report_ready(pool, server_id, "ssh-ed25519 AAAA") == "available"
    return server_id


async def test_a_create_and_a_ready_call_at_once_never_miss_each_other(
    db_pool: asyncpg.Pool,
) -> None:
    """The instance is placed (finding no server) while the server calls back (finding no
    instance, the create being uncommitted): the ready call waits for the create's commit and
    then hands the server to it, instead of leaving it available and the instance waiting."""
    user = await seed.create_user(db_pool)
    server_id = await a_server(db_pool, available=False)
    async with db_pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        inst = await seed.create_instance(conn, user, status="pending", channel_type="whatsapp")
        instance_id = uuid.UUID(inst.id)
        assert await fleet_pool.claim_available_server(conn, instance_id) is None
        ready = asyncio.create_task(fleet_rows.report_ready(db_pool, server_id, "ssh-ed25519 A"))

        async def blocked_or_done() -> bool:
            waiting = await db_pool.fetchval(
                """SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
                   WHERE l.locktype = 'advisory' AND NOT l.granted
                     AND d.datname = current_database()"""
            )
            return ready.done() or waiting > 0

        await until(blocked_or_done, 10)
        await tx.commit()
    async with asyncio.timeout(10):
        assert await ready == "deploy"
    row = await db_pool.fetchrow(
        "SELECT server_id, status FROM instances WHERE id = $1", instance_id
    )
    assert row["server_id"] == server_id and row["status"] == "provisioning"
    jobs = await db_pool.fetch("SELECT kind FROM instance_jobs WHERE instance_id = $1", instance_id)
    assert [j["kind"] for j in jobs] == ["deploy"]


async def test_a_pass_places_instances_waiting_while_a_server_is_available(
    db_pool: asyncpg.Pool,
) -> None:
    """The pool manager's safety net: whatever left an instance waiting beside an available
    server (a path that placed without looking), its next pass joins them, oldest first."""
    server_id = await a_server(db_pool, available=True)
    user = await seed.create_user(db_pool)
    first = await seed.create_instance(db_pool, user, status="pending", channel_type="whatsapp")
    second = await seed.create_instance(db_pool, user, status="pending", channel_type="whatsapp")
    assert await fleet_pool.place_waiting(db_pool, 10) == 1  # one server: the older instance
    rows = await db_pool.fetch(
        "SELECT id, server_id FROM instances WHERE id = ANY($1::uuid[])",
        [uuid.UUID(first.id), uuid.UUID(second.id)],
    )
    assert {str(r["id"]): r["server_id"] for r in rows} == {first.id: server_id, second.id: None}
    jobs = await db_pool.fetch("SELECT instance_id, kind FROM instance_jobs")
    assert [(str(j["instance_id"]), j["kind"]) for j in jobs] == [(first.id, "deploy")]
    assert await fleet_pool.place_waiting(db_pool, 10) == 0
