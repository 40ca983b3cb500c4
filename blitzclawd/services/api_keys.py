"""Minting a user's API key under the per-user limit (the key itself is made and hashed by the
caller: only its hash and prefix are stored)."""

from __future__ import annotations

import uuid

import asyncpg

from blitzclawd.errors import ApiError
from blitzclawd.queries import accounts


async def create(
    pool: asyncpg.Pool, user_id: uuid.UUID, name: str, prefix: str, key_hash: bytes, *, limit: int
) -> asyncpg.Record:
    """The stored key's row; 401 for a deleted account, 422 at `limit` live keys."""
    async with pool.acquire() as conn, conn.transaction():
        # One user's creations run one at a time (the count below, then the insert), on every
        # daemon: the per-user limit holds under concurrency.
        if not await accounts.lock_user(conn, user_id):
            raise ApiError(401, "unauthenticated", "this account has been deleted")
        if await accounts.count_live_keys(conn, user_id) >= limit:
            raise ApiError(
                422,
                "too_many_keys",
                f"at most {limit} live API keys; revoke one first",
                field="name",
            )
        return await accounts.insert_key(conn, user_id, name, prefix, key_hash)
