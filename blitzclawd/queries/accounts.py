"""Users and their API keys. Every statement that reads or changes a user's keys is scoped by
the user's id (a key id alone never reaches another user's key)."""

from __future__ import annotations

import uuid

import asyncpg

from blitzclawd.accounts import erased_clerk_id

Executor = asyncpg.Connection | asyncpg.Pool
KEY_FIELDS = "id::text, name, prefix, created_at, last_used_at, revoked_at"


async def profile(db: Executor, user_id: uuid.UUID) -> asyncpg.Record | None:
    return await db.fetchrow(
        "SELECT id::text, clerk_user_id, email, role, created_at FROM users WHERE id = $1",
        user_id,
    )


async def lock_user(conn: asyncpg.Connection, user_id: uuid.UUID) -> bool:
    """Lock the user's row for the rest of the transaction; True while the account is live.

    Every per-user limit (count, then insert) takes this first, so one user's creations run one
    at a time on every daemon; and a request authenticated just before a user.deleted (which
    locks the same row) cannot add personal data to an erased account after it."""
    deleted = await conn.fetchval(
        "SELECT deleted_at IS NOT NULL FROM users WHERE id = $1 FOR UPDATE", user_id
    )
    return deleted is False


async def user_for_session(db: Executor, clerk_user_id: str) -> asyncpg.Record | None:
    """The user behind a Clerk session, created at first sight (Clerk's webhook may not have
    arrived yet). A deleted account's id is a tombstone: its still-valid sessions find it (with
    deleted_at set) and stay out; an erased one finds nothing (None)."""
    return await db.fetchrow(
        """INSERT INTO users (clerk_user_id)
           SELECT $1 WHERE NOT EXISTS (SELECT FROM users WHERE clerk_user_id = $2)
           ON CONFLICT (clerk_user_id) DO UPDATE SET clerk_user_id = EXCLUDED.clerk_user_id
           RETURNING id::text, role, deleted_at, email, email_verified""",
        clerk_user_id,
        erased_clerk_id(clerk_user_id),
    )


async def user_by_clerk_id(db: Executor, clerk_user_id: str) -> asyncpg.Record | None:
    return await db.fetchrow(
        "SELECT id::text, role, deleted_at, email, email_verified FROM users "
        "WHERE clerk_user_id = $1",
        clerk_user_id,
    )


async def key_holder(db: Executor, key_hash: bytes, touch_after: float) -> asyncpg.Record | None:
    """The live key with this hash and its user; `stale` when its last use is older than
    `touch_after` seconds (worth recording again)."""
    return await db.fetchrow(
        """SELECT k.id, k.user_id::text, u.role, u.clerk_user_id, u.deleted_at, u.email_verified,
                  (k.last_used_at IS NULL
                   OR k.last_used_at < now() - make_interval(secs => $2)) AS stale
           FROM api_keys k JOIN users u ON u.id = k.user_id
           WHERE k.key_hash = $1 AND k.revoked_at IS NULL""",
        key_hash,
        touch_after,
    )


async def touch_key(db: Executor, key_id: uuid.UUID) -> None:
    await db.execute("UPDATE api_keys SET last_used_at = now() WHERE id = $1", key_id)


async def count_live_keys(db: Executor, user_id: uuid.UUID) -> int:
    return await db.fetchval(
        "SELECT count(*) FROM api_keys WHERE user_id = $1 AND revoked_at IS NULL", user_id
    )


async def insert_key(
    conn: asyncpg.Connection, user_id: uuid.UUID, name: str, prefix: str, key_hash: bytes
) -> asyncpg.Record:
    return await conn.fetchrow(
        f"""INSERT INTO api_keys (user_id, name, prefix, key_hash) VALUES ($1, $2, $3, $4)
            RETURNING {KEY_FIELDS}""",
        user_id,
        name,
        prefix,
        key_hash,
    )


async def keys_of(db: Executor, user_id: uuid.UUID) -> list[asyncpg.Record]:
    return await db.fetch(
        f"SELECT {KEY_FIELDS} FROM api_keys WHERE user_id = $1 ORDER BY created_at", user_id
    )


async def revoke_key(db: Executor, user_id: uuid.UUID, key_id: uuid.UUID) -> asyncpg.Record | None:
    """Revoke the user's key (idempotent); None when the user has no such key."""
    return await db.fetchrow(
        f"""UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
            WHERE id = $1 AND user_id = $2
            RETURNING {KEY_FIELDS}""",
        key_id,
        user_id,
    )
