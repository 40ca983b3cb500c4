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
    """Store a new instance and give it an available server if there is one (a deploy job),
    else ask the pool manager for one; an instance waiting for its channel's settings gets no
    server yet. 402 below the minimum balance, 409 at the limit."""
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
        server = None
        if new.status == "pending":
            server = await _place(conn, new.id)
        row = await rows.by_id(conn, new.id)
    if new.status == "pending":
        _placed(actors, server)
    log.info("instance created", extra={"instance": str(new.id), "status": row["status"]})
    return row


async def _place(conn: asyncpg.Connection, instance_id: uuid.UUID) -> asyncpg.Record | None:
    """Claimed FOR UPDATE SKIP LOCKED in the caller's transaction: two users never get one
    server. With one, the deploy job is queued; without, the instance waits for the pool."""
    server = await fleet_pool.claim_available_server(conn, instance_id)
    if server is not None:
        await fleet_pool.enqueue_job(conn, instance_id, "deploy")
    return server


def _placed(actors: Actors, server: asyncpg.Record | None) -> None:
    if server is not None:
        actors.provisioner.tell(JobsQueued())
    # Either way the pool is short of a spare: refilled now, not at the next interval (a
    # burst's checks share one pass: PoolCheck.at).
    actors.pool_manager.tell(PoolCheck("a server was taken" if server else "no available server"))


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


async def stop(pool: asyncpg.Pool, actors: Actors, instance_id: uuid.UUID) -> None:
    """Stopped at once for the proxy; the stop job stops its gateway (409 if not running)."""

    async def change(conn: asyncpg.Connection) -> None:
        if not await rows.mark_stopped(conn, instance_id):
            raise ApiError(409, "not_running", "only a running assistant can be stopped")

    await queue(pool, actors, instance_id, "stop", change)


async def start(pool: asyncpg.Pool, actors: Actors, instance_id: uuid.UUID) -> None:
    """The start job starts its gateway again and marks it active once it is ready."""
    await queue(pool, actors, instance_id, "start")


async def restart(pool: asyncpg.Pool, actors: Actors, instance_id: uuid.UUID) -> None:
    await queue(pool, actors, instance_id, "restart")


UNSET: Any = object()  # a setting left as it is


async def configure(
    pool: asyncpg.Pool,
    actors: Actors,
    instance_id: uuid.UUID,
    *,
    soul: str | None = UNSET,
    channel: tuple[dict[str, Any], bytes | None] | None = None,
    complete: bool = False,
    expected: tuple[dict[str, Any], bytes | None] | None = None,
    minimum_micros: int = 0,
) -> str:
    """New SOUL.md and/or channel settings (public config, sealed secrets document). A live
    instance gets a configure job; one waiting for its channel is placed on a server once new
    channel settings are `complete` (402 below the minimum balance, as at create). `expected`:
    the stored channel settings the new ones were made from; if another change came first, 409
    (its settings would be overwritten). What was queued: "configure", "deploy" or ""."""
    server = None
    async with pool.acquire() as conn, conn.transaction():
        row = await rows.lock_for_change(conn, instance_id)
        if row is None:
            raise ApiError(404, "not_found", "no such instance")
        if expected is not None and (
            (row["channel_config"] or {}) != expected[0]
            or _blob(row["channel_secret_enc"]) != _blob(expected[1])
        ):
            raise ApiError(
                409,
                "conflict",
                "the assistant's channel settings changed meanwhile; load them and try again",
            )
        waiting = row["status"] == "waiting_for_channel"
        placing = waiting and channel is not None and complete
        if placing:
            if not await accounts.lock_user(conn, row["user_id"]):
                raise ApiError(401, "unauthenticated", "this account has been deleted")
            if await billing.available_micros(conn, row["user_id"]) < minimum_micros:
                raise ApiError(
                    402,
                    "insufficient_balance",
                    f"a balance of at least ${minimum_micros / 1e6:.2f} is needed to start an "
                    "instance",
                )
        if soul is not UNSET:
            await rows.set_soul(conn, instance_id, soul)
        if channel is not None:
            await rows.set_channel(conn, instance_id, channel[0], channel[1])
        if not waiting:
            await fleet_pool.enqueue_job(conn, instance_id, "configure")
            queued = "configure"
        elif placing and await rows.leave_waiting(conn, instance_id):
            server = await _place(conn, instance_id)
            queued = "deploy"
        else:
            queued = ""  # stored; deployed once the channel's settings are complete
    if queued == "configure":
        actors.provisioner.tell(JobsQueued())
    elif queued == "deploy":
        _placed(actors, server)
    return queued


async def update_channel_config(
    pool: asyncpg.Pool,
    instance_id: uuid.UUID,
    change: Callable[[dict[str, Any]], dict[str, Any] | None],
) -> None:
    """`change` applied to the stored public channel settings, the row locked meanwhile (two
    approvals at once both count); nothing is deployed."""
    async with pool.acquire() as conn, conn.transaction():
        row = await rows.lock_for_change(conn, instance_id)
        if row is None:
            return
        new = change(dict(row["channel_config"] or {}))
        if new is not None:
            await rows.set_channel_config(conn, instance_id, new)


def _blob(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


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
    """From here the proxy refuses it (deleted); the teardown job wipes its server. 404 when it
    was deleted already (by another request meanwhile): one teardown, never two."""

    async def change(conn: asyncpg.Connection) -> None:
        if not await rows.mark_deleted(conn, instance_id):
            raise ApiError(404, "not_found", "no such instance")

    await queue(pool, actors, instance_id, "teardown", change)
