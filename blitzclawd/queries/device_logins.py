"""Device logins (`blitzclaw auth login`): a request, its approval by a signed-in user, and the
one time its key is handed out."""

from __future__ import annotations

import uuid

import asyncpg

Executor = asyncpg.Connection | asyncpg.Pool
MAX_PENDING = 1000  # outstanding requests at once: strangers cannot fill the table


async def open_request(
    db: Executor, code_hash: bytes, user_code: str, client_name: str, seconds: int
) -> bool:
    """A new request (False when too many are pending, or the user code is taken)."""
    return bool(
        await db.fetchval(
            """WITH gone AS (DELETE FROM device_logins WHERE expires_at < now() - interval '1 day')
               INSERT INTO device_logins (device_code_hash, user_code, client_name, expires_at)
               SELECT $1, $2, $3, now() + make_interval(secs => $4)
               WHERE (SELECT count(*) FROM device_logins
                      WHERE expires_at > now() AND issued_at IS NULL) < $5
               ON CONFLICT DO NOTHING
               RETURNING true""",
            code_hash,
            user_code,
            client_name,
            seconds,
            MAX_PENDING,
        )
    )


async def pending_by_user_code(db: Executor, user_code: str) -> asyncpg.Record | None:
    return await db.fetchrow(
        """SELECT id, client_name, created_at FROM device_logins
           WHERE user_code = $1 AND expires_at > now() AND approved_at IS NULL""",
        user_code,
    )


async def approve(db: Executor, user_code: str, user_id: uuid.UUID) -> bool:
    return bool(
        await db.fetchval(
            """UPDATE device_logins SET approved_by = $2, approved_at = now()
               WHERE user_code = $1 AND expires_at > now() AND approved_at IS NULL
               RETURNING true""",
            user_code,
            user_id,
        )
    )


async def claim(conn: asyncpg.Connection, code_hash: bytes) -> asyncpg.Record | None:
    """The request for this device code, locked (in the caller's transaction)."""
    return await conn.fetchrow(
        """SELECT id, client_name, approved_by, issued_at, expires_at < now() AS expired
           FROM device_logins WHERE device_code_hash = $1 FOR UPDATE""",
        code_hash,
    )


async def mark_issued(conn: asyncpg.Connection, request_id: int) -> None:
    await conn.execute("UPDATE device_logins SET issued_at = now() WHERE id = $1", request_id)
