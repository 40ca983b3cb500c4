"""Instance rows: what a user sees of their instances and the changes they ask for.

Reads a user makes are scoped by their user id here, in the statement: another user's instance is
indistinguishable from a missing one. Changes take an instance id the caller has already proven
is the user's (`owned`), inside the caller's transaction when a job is queued with them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

Executor = asyncpg.Connection | asyncpg.Pool

FIELDS = """i.id::text, i.status, i.status_reason, i.channel_type, i.channel_config,
            i.persona_template, i.soul_md, host(i.ip_address) AS ip_address, i.created_at,
            i.updated_at, i.use_own_api_key"""


@dataclass(frozen=True, slots=True)
class NewInstance:
    id: uuid.UUID
    user_id: uuid.UUID
    channel_type: str
    channel_config: dict[str, Any]
    channel_secret_enc: bytes | None
    persona_template: str
    soul_md: str | None
    secret_hash: bytes
    status: str = "pending"  # or "waiting_for_channel": no server until its settings arrive


async def owned(db: Executor, user_id: uuid.UUID, instance_id: uuid.UUID) -> asyncpg.Record | None:
    """The user's live instance, or None (missing, deleted, or someone else's)."""
    return await db.fetchrow(
        f"SELECT {FIELDS} FROM instances i "
        "WHERE i.id = $1 AND i.user_id = $2 AND i.deleted_at IS NULL",
        instance_id,
        user_id,
    )


async def of_user(db: Executor, user_id: uuid.UUID) -> list[asyncpg.Record]:
    return await db.fetch(
        f"SELECT {FIELDS} FROM instances i WHERE i.user_id = $1 AND i.deleted_at IS NULL "
        "ORDER BY i.created_at",
        user_id,
    )


async def by_id(db: Executor, instance_id: uuid.UUID) -> asyncpg.Record | None:
    return await db.fetchrow(f"SELECT {FIELDS} FROM instances i WHERE i.id = $1", instance_id)


async def count_live(db: Executor, user_id: uuid.UUID) -> int:
    return await db.fetchval(
        "SELECT count(*) FROM instances WHERE user_id = $1 AND deleted_at IS NULL", user_id
    )


async def insert_pending(conn: asyncpg.Connection, new: NewInstance) -> None:
    await conn.execute(
        """INSERT INTO instances (id, user_id, status, channel_type, channel_config,
                                  channel_secret_enc, persona_template, soul_md, secret_hash)
           VALUES ($1, $2, $9, $3, $4, $5, $6, $7, $8)""",
        new.id,
        new.user_id,
        new.channel_type,
        new.channel_config,
        new.channel_secret_enc,
        new.persona_template,
        new.soul_md,
        new.secret_hash,
        new.status,
    )


async def usage_24h(db: Executor, user_id: uuid.UUID, instance_id: uuid.UUID) -> dict[str, int]:
    row = await db.fetchrow(
        """SELECT count(*) AS requests, coalesce(sum(input_tokens), 0)::bigint AS input_tokens,
                  coalesce(sum(output_tokens), 0)::bigint AS output_tokens,
                  coalesce(sum(cost_micros), 0)::bigint AS cost_micros
           FROM usage_logs
           WHERE instance_id = $1 AND user_id = $2 AND created_at > now() - interval '24 hours'""",
        instance_id,
        user_id,
    )
    return dict(row)


async def set_soul(conn: asyncpg.Connection, instance_id: uuid.UUID, soul: str | None) -> None:
    await conn.execute(
        "UPDATE instances SET soul_md = $2 WHERE id = $1 AND deleted_at IS NULL",
        instance_id,
        soul,
    )


async def set_channel_config(db: Executor, instance_id: uuid.UUID, config: dict[str, Any]) -> None:
    """The channel's non-secret settings; the stored secrets stay."""
    await db.execute(
        "UPDATE instances SET channel_config = $2 WHERE id = $1 AND deleted_at IS NULL",
        instance_id,
        config,
    )


async def set_channel(
    conn: asyncpg.Connection,
    instance_id: uuid.UUID,
    config: dict[str, Any],
    secret_enc: bytes | None,
) -> None:
    """The channel's settings and its (encrypted) secrets document together."""
    await conn.execute(
        "UPDATE instances SET channel_config = $2, channel_secret_enc = $3 "
        "WHERE id = $1 AND deleted_at IS NULL",
        instance_id,
        config,
        secret_enc,
    )


async def channel_secrets(db: Executor, instance_id: uuid.UUID) -> bytes | None:
    return await db.fetchval(
        "SELECT channel_secret_enc FROM instances WHERE id = $1 AND deleted_at IS NULL",
        instance_id,
    )


async def lock_for_change(
    conn: asyncpg.Connection, instance_id: uuid.UUID
) -> asyncpg.Record | None:
    """The live instance's status, owner and channel settings, locked until the transaction
    ends: changes to one instance apply one at a time."""
    return await conn.fetchrow(
        """SELECT status, user_id, channel_config, channel_secret_enc FROM instances
           WHERE id = $1 AND deleted_at IS NULL FOR UPDATE""",
        instance_id,
    )


async def leave_waiting(conn: asyncpg.Connection, instance_id: uuid.UUID) -> bool:
    """waiting_for_channel -> pending (its settings arrived); False if it was not waiting."""
    done = await conn.execute(
        "UPDATE instances SET status = 'pending' WHERE id = $1 AND status = 'waiting_for_channel'",
        instance_id,
    )
    return done.endswith(" 1")


async def set_session(db: Executor, instance_id: uuid.UUID, blob: bytes | None) -> None:
    """The channel's linked session files, encrypted (None: there is none)."""
    # Never on a deleted instance: a backup finishing after the delete must not bring it back.
    await db.execute(
        "UPDATE instances SET channel_session_enc = $2 WHERE id = $1 AND deleted_at IS NULL",
        instance_id,
        blob,
    )


async def session_of(db: Executor, instance_id: uuid.UUID) -> bytes | None:
    return await db.fetchval("SELECT channel_session_enc FROM instances WHERE id = $1", instance_id)


async def set_own_key(
    conn: asyncpg.Connection, instance_id: uuid.UUID, provider: str, key_enc: bytes
) -> None:
    await conn.execute(
        """UPDATE instances SET use_own_api_key = true, own_api_provider = $2,
                  own_api_key_enc = $3
           WHERE id = $1 AND deleted_at IS NULL""",
        instance_id,
        provider,
        key_enc,
    )


async def clear_own_key(conn: asyncpg.Connection, instance_id: uuid.UUID) -> None:
    await conn.execute(
        """UPDATE instances SET use_own_api_key = false, own_api_provider = NULL,
                  own_api_key_enc = NULL
           WHERE id = $1 AND deleted_at IS NULL""",
        instance_id,
    )


async def mark_deleted(conn: asyncpg.Connection, instance_id: uuid.UUID) -> bool:
    """From here the proxy refuses it; the teardown job queued with it wipes the server. False
    when there is no such instance or it was deleted already."""
    done = await conn.execute(
        """UPDATE instances SET status = 'deleted', deleted_at = now(), channel_session_enc = NULL
           WHERE id = $1 AND deleted_at IS NULL""",
        instance_id,
    )
    return done.endswith(" 1")


async def server_of(db: Executor, instance_id: uuid.UUID) -> asyncpg.Record | None:
    """The instance's server: ip and SSH host key (either may still be missing)."""
    return await db.fetchrow(
        """SELECT host(s.ip_address) AS ip, s.ssh_host_key FROM instances i
           JOIN server_pool s ON s.id = i.server_id WHERE i.id = $1""",
        instance_id,
    )


# -- the provisioner's transitions ----------------------------------------------------------------


async def for_job(db: Executor, instance_id: uuid.UUID) -> asyncpg.Record | None:
    """Everything a job needs of the instance (secrets still encrypted) and of its server."""
    return await db.fetchrow(
        """SELECT i.*, s.ssh_host_key, host(s.ip_address) AS server_ip,
                  s.status AS server_status
           FROM instances i LEFT JOIN server_pool s ON s.id = i.server_id
           WHERE i.id = $1""",
        instance_id,
    )


async def mark_provisioning(db: Executor, instance_id: uuid.UUID) -> None:
    await db.execute(
        """UPDATE instances SET status = 'provisioning', status_reason = NULL
           WHERE id = $1 AND status IN ('pending', 'provisioning', 'error')""",
        instance_id,
    )


async def set_secret_hash(db: Executor, instance_id: uuid.UUID, secret_hash: bytes) -> None:
    """The proxy secret the next config carries (stored before the config is written)."""
    await db.execute(
        "UPDATE instances SET secret_hash = $2 WHERE id = $1", instance_id, secret_hash
    )


async def mark_active(db: Executor, instance_id: uuid.UUID) -> None:
    await db.execute(
        """UPDATE instances SET status = 'active', status_reason = NULL
           WHERE id = $1
             AND status IN ('pending', 'provisioning', 'error', 'stopped', 'active')""",
        instance_id,
    )


async def mark_error(
    conn: asyncpg.Connection, instance_id: uuid.UUID, reason: str
) -> asyncpg.Record | None:
    """In error (unless deleted); its owner and channel settings, for the email."""
    return await conn.fetchrow(
        """UPDATE instances SET status = 'error', status_reason = $2
           WHERE id = $1 AND status <> 'deleted'
           RETURNING user_id::text, channel_type, channel_config""",
        instance_id,
        reason,
    )


async def mark_torn_down(db: Executor, instance_id: uuid.UUID) -> None:
    await db.execute(
        """UPDATE instances SET status = 'deleted', server_id = NULL,
                  deleted_at = coalesce(deleted_at, now()) WHERE id = $1""",
        instance_id,
    )


async def mark_stopped(conn: asyncpg.Connection, instance_id: uuid.UUID) -> bool:
    """Stopped by its owner (from active or error): the proxy refuses it from this commit on,
    the health monitor skips it. False when it was in no state to stop."""
    done = await conn.execute(
        """UPDATE instances SET status = 'stopped', status_reason = 'stopped by its owner'
           WHERE id = $1 AND status IN ('active', 'error')""",
        instance_id,
    )
    return done.endswith(" 1")


async def own_limits(db: Executor, instance_id: uuid.UUID) -> asyncpg.Record | None:
    """The instance's own limits (NULL: the global ones apply)."""
    return await db.fetchrow(
        "SELECT msgs_per_hour, tokens_per_day FROM instances WHERE id = $1", instance_id
    )
