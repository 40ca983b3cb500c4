"""Changing a user's instance: create it, change its settings, delete it. Each change is stored
in the same transaction as the job that carries it to the server (the job never runs without the
change, nor the reverse), then the provisioner is told.

Callers pass an instance id they have checked is the user's (blitzclawd.queries.instances.owned).
Secrets arrive already encrypted with the instance's own context (blitzclawd.credentials).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from blitzclawd.errors import ApiError
from blitzclawd.fleet import pool as fleet_pool
from blitzclawd.queries import accounts, billing
from blitzclawd.queries import instances as rows
from blitzclawd.registry import Actors
from blitzclawd.runtime.messages import JobsQueued, PoolCheck

log = logging.getLogger("blitzclawd.instances")

Change = Callable[[asyncpg.Connection], Awaitable[None]]


async def create(
    pool: asyncpg.Pool, actors: Actors, new: rows.NewInstance, *, minimum_micros: int, limit: int
) -> asyncpg.Record:
    """Store a pending instance and give it an available server if there is one (a deploy job),
    else ask the pool manager for one. 402 below the minimum balance, 409 at the limit."""
    async with pool.acquire() as conn, conn.transaction():
        # One user's creations run one at a time (the count below, then the insert), on every
        # daemon: the per-user limit holds under concurrency.
        if not await accounts.lock_user(conn, new.user_id):
            raise ApiError(401, "unauthenticated", "this account has been deleted")
        if await billing.available_micros(conn, new.user_id) < minimum_micros:
            raise ApiError(
                402,
                "insufficient_balance",
                f"a balance of at least ${minimum_micros / 1e6:.2f} is needed to create an "
                "instance",
            )
        if await rows.count_live(conn, new.user_id) >= limit:
            raise ApiError(409, "instance_limit", f"at most {limit} instances per user")
        await rows.insert_pending(conn, new)
        # Claimed FOR UPDATE SKIP LOCKED in this transaction: two users never get one server.
        server = await fleet_pool.claim_available_server(conn, new.id)
        if server is not None:
            await fleet_pool.enqueue_job(conn, new.id, "deploy")
        row = await rows.by_id(conn, new.id)
    if server is not None:
        actors.provisioner.tell(JobsQueued())
    else:
        actors.pool_manager.tell(PoolCheck("no available server"))
    log.info("instance created", extra={"instance": str(new.id), "status": row["status"]})
    return row


async def queue(
    pool: asyncpg.Pool,
    actors: Actors,
    instance_id: uuid.UUID,
    kind: str,
    *changes: Change,
) -> None:
    """Apply `changes` and queue a `kind` job for the instance, in one transaction."""
    async with pool.acquire() as conn, conn.transaction():
        for change in changes:
            await change(conn)
        await fleet_pool.enqueue_job(conn, instance_id, kind)
    actors.provisioner.tell(JobsQueued())


async def restart(pool: asyncpg.Pool, actors: Actors, instance_id: uuid.UUID) -> None:
    await queue(pool, actors, instance_id, "restart")


_UNSET: Any = object()


async def configure(
    pool: asyncpg.Pool,
    actors: Actors,
    instance_id: uuid.UUID,
    *,
    soul: str | None = _UNSET,
    channel_config: dict[str, Any] | None = None,
    channel_secret_enc: bytes | None = None,
) -> None:
    """New SOUL.md and/or channel settings (with a new secret, or keeping the stored one)."""
    changes: list[Change] = []
    if soul is not _UNSET:
        changes.append(lambda conn: rows.set_soul(conn, instance_id, soul))
    if channel_config is not None and channel_secret_enc is not None:
        changes.append(
            lambda conn: rows.set_channel(conn, instance_id, channel_config, channel_secret_enc)
        )
    elif channel_config is not None:
        changes.append(lambda conn: rows.set_channel_config(conn, instance_id, channel_config))
    if not changes:
        raise ValueError("nothing to configure")
    await queue(pool, actors, instance_id, "configure", *changes)


async def set_own_key(
    pool: asyncpg.Pool, actors: Actors, instance_id: uuid.UUID, provider: str, key_enc: bytes
) -> None:
    await queue(
        pool,
        actors,
        instance_id,
        "configure",
        lambda conn: rows.set_own_key(conn, instance_id, provider, key_enc),
    )
    log.info("own API key set", extra={"instance": str(instance_id), "provider": provider})


async def clear_own_key(pool: asyncpg.Pool, actors: Actors, instance_id: uuid.UUID) -> None:
    await queue(
        pool, actors, instance_id, "configure", lambda conn: rows.clear_own_key(conn, instance_id)
    )


async def delete(pool: asyncpg.Pool, actors: Actors, instance_id: uuid.UUID) -> None:
    """From here the proxy refuses it (deleted); the teardown job wipes its server."""
    await queue(
        pool, actors, instance_id, "teardown", lambda conn: rows.mark_deleted(conn, instance_id)
    )
