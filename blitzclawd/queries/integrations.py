"""Users' integrations (Google), their OAuth states and which instances use them.

Tokens are stored only as keyring ciphertexts (`*_enc`); no query here returns them except the
ones that load them for a refresh, a revocation or a deploy.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

import asyncpg

Conn = asyncpg.Connection | asyncpg.Pool

FIELDS = (
    "i.id, i.provider, i.status, i.account_email, i.scopes, i.expires_at, i.created_at, "
    "i.updated_at, i.refreshed_at, i.broken_reason, "
    "coalesce(array(SELECT ii.instance_id FROM instance_integrations ii "
    "JOIN instances inst ON inst.id = ii.instance_id AND inst.deleted_at IS NULL "
    "WHERE ii.integration_id = i.id ORDER BY ii.attached_at), '{}') AS attached_instances"
)


async def of_user(conn: Conn, user_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {FIELDS} FROM user_integrations i WHERE i.user_id = $1 ORDER BY i.created_at",
        user_id,
    )


async def owned(conn: Conn, user_id: uuid.UUID, integration_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {FIELDS} FROM user_integrations i WHERE i.user_id = $1 AND i.id = $2",
        user_id,
        integration_id,
    )


# -- OAuth states ------------------------------------------------------------------------------


async def insert_state(
    conn: Conn,
    *,
    state: str,
    user_id: uuid.UUID,
    provider: str,
    code_verifier_enc: bytes,
    redirect_uri: str,
    scopes: Sequence[str],
    lifetime: float,
) -> None:
    await conn.execute(
        """INSERT INTO oauth_states
               (state, user_id, provider, code_verifier_enc, redirect_uri, scopes, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7))""",
        state,
        user_id,
        provider,
        code_verifier_enc,
        redirect_uri,
        list(scopes),
        lifetime,
    )


async def peek_state(conn: Conn, state: str) -> asyncpg.Record | None:
    """The state row (without its verifier), whether used or expired (`expired`)."""
    return await conn.fetchrow(
        "SELECT state, user_id, provider, used_at, expires_at <= now() AS expired "
        "FROM oauth_states WHERE state = $1",
        state,
    )


async def lock_state(conn: asyncpg.Connection, state: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT *, expires_at <= now() AS expired FROM oauth_states WHERE state = $1 FOR UPDATE",
        state,
    )


async def use_state(conn: Conn, state: str) -> None:
    await conn.execute("UPDATE oauth_states SET used_at = now() WHERE state = $1", state)


async def purge_states(conn: Conn) -> str:
    """States past their 10 minutes by an hour: nothing to keep them for."""
    return await conn.execute(
        "DELETE FROM oauth_states WHERE expires_at < now() - interval '1 hour'"
    )


# -- the integration itself --------------------------------------------------------------------


async def lock_of_user(
    conn: asyncpg.Connection, user_id: uuid.UUID, provider: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM user_integrations WHERE user_id = $1 AND provider = $2 FOR UPDATE",
        user_id,
        provider,
    )


async def store(
    conn: asyncpg.Connection,
    *,
    integration_id: uuid.UUID,
    user_id: uuid.UUID,
    provider: str,
    access_token_enc: bytes,
    refresh_token_enc: bytes | None,
    scopes: Sequence[str],
    expires_at: dt.datetime,
    account_email: str | None,
) -> None:
    """A new integration, or new tokens for the user's one of this provider (connected again)."""
    await conn.execute(
        """INSERT INTO user_integrations
               (id, user_id, provider, access_token_enc, refresh_token_enc, scopes, expires_at,
                account_email, status, refreshed_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'connected', now())
           ON CONFLICT (user_id, provider) DO UPDATE SET
               access_token_enc = EXCLUDED.access_token_enc,
               refresh_token_enc = EXCLUDED.refresh_token_enc,
               scopes = EXCLUDED.scopes, expires_at = EXCLUDED.expires_at,
               account_email = EXCLUDED.account_email, status = 'connected',
               broken_reason = NULL, updated_at = now(), refreshed_at = now()""",
        integration_id,
        user_id,
        provider,
        access_token_enc,
        refresh_token_enc,
        list(scopes),
        expires_at,
        account_email,
    )


async def delete(conn: Conn, integration_id: uuid.UUID) -> None:
    await conn.execute("DELETE FROM user_integrations WHERE id = $1", integration_id)


async def due_for_refresh(
    conn: asyncpg.Connection, margin: float, limit: int
) -> list[asyncpg.Record]:
    """Connected integrations whose access token expires within `margin` seconds, locked (SKIP
    LOCKED: another daemon refreshing one meanwhile keeps it)."""
    return await conn.fetch(
        """SELECT id, user_id, provider, refresh_token_enc, account_email
           FROM user_integrations
           WHERE status = 'connected' AND refresh_token_enc IS NOT NULL
             AND (expires_at IS NULL OR expires_at <= now() + make_interval(secs => $1))
           ORDER BY expires_at NULLS FIRST LIMIT $2
           FOR UPDATE SKIP LOCKED""",
        margin,
        limit,
    )


async def refreshed(
    conn: Conn,
    integration_id: uuid.UUID,
    access_token_enc: bytes,
    expires_at: dt.datetime,
    scopes: Sequence[str],
    refresh_token_enc: bytes | None = None,
) -> None:
    """A new access token; a new refresh token too when Google rotated it (else None)."""
    await conn.execute(
        """UPDATE user_integrations SET access_token_enc = $2, expires_at = $3,
               scopes = CASE WHEN cardinality($4::text[]) > 0 THEN $4 ELSE scopes END,
               refresh_token_enc = COALESCE($5, refresh_token_enc),
               refreshed_at = now(), updated_at = now()
           WHERE id = $1""",
        integration_id,
        access_token_enc,
        expires_at,
        list(scopes),
        refresh_token_enc,
    )


async def mark_broken(conn: Conn, integration_id: uuid.UUID, reason: str) -> None:
    await conn.execute(
        "UPDATE user_integrations SET status = 'broken', broken_reason = $2, updated_at = now() "
        "WHERE id = $1",
        integration_id,
        reason,
    )


# -- instances ---------------------------------------------------------------------------------


async def attach(conn: Conn, instance_id: uuid.UUID, integration_id: uuid.UUID) -> bool:
    """False when it was attached already."""
    done = await conn.execute(
        "INSERT INTO instance_integrations (instance_id, integration_id) VALUES ($1, $2) "
        "ON CONFLICT DO NOTHING",
        instance_id,
        integration_id,
    )
    return done.endswith(" 1")


async def detach(conn: Conn, instance_id: uuid.UUID, integration_id: uuid.UUID) -> bool:
    done = await conn.execute(
        "DELETE FROM instance_integrations WHERE instance_id = $1 AND integration_id = $2",
        instance_id,
        integration_id,
    )
    return done != "DELETE 0"


async def detach_all(conn: Conn, integration_id: uuid.UUID) -> list[uuid.UUID]:
    """Every instance it was attached to (now detached)."""
    rows = await conn.fetch(
        "DELETE FROM instance_integrations WHERE integration_id = $1 RETURNING instance_id",
        integration_id,
    )
    return [r["instance_id"] for r in rows]


async def instances_of(conn: Conn, integration_id: uuid.UUID) -> list[uuid.UUID]:
    """The live instances it is attached to."""
    rows = await conn.fetch(
        """SELECT ii.instance_id FROM instance_integrations ii
           JOIN instances i ON i.id = ii.instance_id
           WHERE ii.integration_id = $1 AND i.deleted_at IS NULL""",
        integration_id,
    )
    return [r["instance_id"] for r in rows]


async def attached_to(conn: Conn, instance_id: uuid.UUID, provider: str) -> asyncpg.Record | None:
    """The instance's attached integration of `provider`, while it is connected (a broken one
    is not deployed: Google refuses its grant)."""
    return await conn.fetchrow(
        """SELECT ui.* FROM instance_integrations ii
           JOIN user_integrations ui ON ui.id = ii.integration_id
           WHERE ii.instance_id = $1 AND ui.provider = $2 AND ui.status = 'connected'""",
        instance_id,
        provider,
    )
