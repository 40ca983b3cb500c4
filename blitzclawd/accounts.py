"""Clerk's user lifecycle applied to our rows, each event once (svix-id), in one transaction.

user.created makes the user (and welcomes them). user.deleted erases everything secret the user
left with us (channel credentials, their own API keys, OAuth tokens, our API keys), stops and
deletes their instances, and anonymises the user row — the ledger and usage history stay, as
accounting requires, attached to a row that no longer says who it was.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from blitzclawd.fleet.pool import enqueue_job
from blitzclawd.runtime.messages import Notify

log = logging.getLogger("blitzclawd.accounts")


@dataclass(frozen=True, slots=True)
class ClerkOutcome:
    status: str  # "applied" | "duplicate" | "recorded"
    user_id: str | None = None
    notify: Notify | None = None
    deleted_instances: tuple[str, ...] = ()


def primary_email(data: dict[str, Any]) -> str | None:
    emails = data.get("email_addresses")
    if not isinstance(emails, list):
        return None
    primary = data.get("primary_email_address_id")
    chosen = [e for e in emails if isinstance(e, dict) and e.get("id") == primary] or [
        e for e in emails if isinstance(e, dict)
    ]
    address = chosen[0].get("email_address") if chosen else None
    return address if isinstance(address, str) else None


async def apply_clerk_event(
    pool: asyncpg.Pool, svix_id: str, event_type: str, data: dict[str, Any]
) -> ClerkOutcome:
    async with pool.acquire() as conn, conn.transaction():
        first = await conn.fetchval(
            """INSERT INTO processed_webhook_events (provider, event_id, event_type, payload)
               VALUES ('clerk', $1, $2, $3::text::jsonb) ON CONFLICT DO NOTHING RETURNING true""",
            svix_id,
            event_type,
            # Only the ids: the payload holds personal data we would have to erase later.
            orjson.dumps({"id": data.get("id")}).decode(),
        )
        if not first:
            return ClerkOutcome("duplicate")
        clerk_id = data.get("id")
        if not isinstance(clerk_id, str) or not clerk_id:
            return ClerkOutcome("recorded")
        if event_type == "user.created":
            return await _created(conn, clerk_id, data)
        if event_type == "user.deleted":
            return await _deleted(conn, clerk_id)
        return ClerkOutcome("recorded")


async def _created(conn: asyncpg.Connection, clerk_id: str, data: dict[str, Any]) -> ClerkOutcome:
    row = await conn.fetchrow(
        """INSERT INTO users (clerk_user_id, email) VALUES ($1, $2)
           ON CONFLICT (clerk_user_id) DO UPDATE SET email = coalesce(EXCLUDED.email, users.email)
           WHERE users.deleted_at IS NULL
           RETURNING id::text""",
        clerk_id,
        primary_email(data),
    )
    if row is None:  # a deleted account stays deleted
        return ClerkOutcome("recorded")
    return ClerkOutcome("applied", row["id"], Notify(row["id"], "welcome", "once", {}))


async def _deleted(conn: asyncpg.Connection, clerk_id: str) -> ClerkOutcome:
    user_id = await conn.fetchval(
        "SELECT id FROM users WHERE clerk_user_id = $1 AND deleted_at IS NULL", clerk_id
    )
    if user_id is None:
        return ClerkOutcome("recorded")
    instances = await conn.fetch(
        """UPDATE instances SET status = 'deleted', status_reason = 'account deleted',
                  deleted_at = now(), channel_secret_enc = NULL, own_api_key_enc = NULL,
                  use_own_api_key = false, own_api_provider = NULL
           WHERE user_id = $1 AND status <> 'deleted' RETURNING id::text""",
        user_id,
    )
    for row in instances:  # the fleet wipes their servers (rebuilt from the image)
        await enqueue_job(conn, uuid.UUID(row["id"]), "teardown")
    await conn.execute("DELETE FROM user_integrations WHERE user_id = $1", user_id)
    await conn.execute(
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE user_id = $1", user_id
    )
    await conn.execute("UPDATE balances SET auto_topup_enabled = false WHERE user_id = $1", user_id)
    await conn.execute(
        "UPDATE notifications SET status = 'failed', last_error = 'account deleted' "
        "WHERE user_id = $1 AND status = 'pending'",
        user_id,
    )
    await conn.execute(
        """UPDATE users SET deleted_at = now(), email = NULL, google_id = NULL,
                  creem_customer_id = NULL WHERE id = $1""",
        user_id,
    )
    log.info(
        "user deleted and anonymised", extra={"user_id": str(user_id), "instances": len(instances)}
    )
    return ClerkOutcome(
        "applied", str(user_id), deleted_instances=tuple(r["id"] for r in instances)
    )
