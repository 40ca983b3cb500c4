"""Clerk's user lifecycle applied to our rows, each event once (svix-id), in one transaction.

user.created makes the user (and welcomes them); user.updated keeps their primary email and its
verification current. user.deleted erases everything secret or
personal the user left with us: channel credentials, their own API keys, OAuth tokens, our API keys
(with their names), their instances' SOUL texts and channel details (bot id, name, link,
allowlist), their emails, health reports, stored webhook payloads (Clerk's and Creem's), and the
user row's email and provider ids. Their instances are stopped and their servers wiped. The ledger,
top-ups and usage history stay, as accounting requires, attached to a row that no longer says who
it was: its Clerk id is replaced by a tombstone (``erased:`` + SHA-256 of the id), which only
someone already holding the id can recognise, and which keeps a deleted account deleted when a
still-valid session or a late user.created arrives.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from blitzclawd.auth.clerk_users import ClerkUser, parse_user
from blitzclawd.fleet.pool import enqueue_job
from blitzclawd.runtime.messages import Notify

log = logging.getLogger("blitzclawd.accounts")


@dataclass(frozen=True, slots=True)
class ClerkOutcome:
    status: str  # "applied" | "duplicate" | "recorded"
    user_id: str | None = None
    notify: Notify | None = None
    deleted_instances: tuple[str, ...] = ()


def erased_clerk_id(clerk_id: str) -> str:
    """What stands in users.clerk_user_id once the account is deleted."""
    return "erased:" + hashlib.sha256(clerk_id.encode()).hexdigest()


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
    """Raises ValueError naming the field of a user.updated payload we refuse (nothing changes:
    not even the event id is recorded, so Clerk's retry of a fixed payload is applied)."""
    updated = parse_user(data) if event_type == "user.updated" else None
    clerk_id = data.get("id")
    known = isinstance(clerk_id, str) and bool(clerk_id)
    async with pool.acquire() as conn, conn.transaction():
        # A late event about an erased account is recorded without its id.
        erased = known and await conn.fetchval(
            "SELECT EXISTS (SELECT FROM users WHERE clerk_user_id = $1)", erased_clerk_id(clerk_id)
        )
        first = await conn.fetchval(
            """INSERT INTO processed_webhook_events (provider, event_id, event_type, payload)
               VALUES ('clerk', $1, $2, $3::text::jsonb) ON CONFLICT DO NOTHING RETURNING true""",
            svix_id,
            event_type,
            # Only the id: the rest of the payload is personal data we would have to erase. A
            # deletion (or a late event about an erased account) keeps not even that.
            None
            if erased or event_type == "user.deleted"
            else orjson.dumps({"id": clerk_id}).decode(),
        )
        if not first:
            return ClerkOutcome("duplicate")
        if not known or erased:
            return ClerkOutcome("recorded")
        if event_type == "user.created":
            return await _created(conn, clerk_id, data)
        if event_type == "user.deleted":
            return await _deleted(conn, clerk_id)
        if updated is not None:
            return await _updated(conn, updated)
        return ClerkOutcome("recorded")


async def _created(conn: asyncpg.Connection, clerk_id: str, data: dict[str, Any]) -> ClerkOutcome:
    try:
        verified = parse_user(data).email_verified
    except ValueError:
        verified = None  # not known: looked up at Clerk when the user signs in
    row = await conn.fetchrow(
        """INSERT INTO users (clerk_user_id, email, email_verified)
           SELECT $1, $2, $4 WHERE NOT EXISTS (SELECT FROM users WHERE clerk_user_id = $3)
           ON CONFLICT (clerk_user_id) DO UPDATE SET
               email = coalesce(EXCLUDED.email, users.email),
               email_verified = coalesce(EXCLUDED.email_verified, users.email_verified)
           WHERE users.deleted_at IS NULL
           RETURNING id::text""",
        clerk_id,
        primary_email(data),
        erased_clerk_id(clerk_id),
        verified,
    )
    if row is None:  # a deleted account stays deleted
        return ClerkOutcome("recorded")
    return ClerkOutcome("applied", row["id"], Notify(row["id"], "welcome", "once", {}))


async def _updated(conn: asyncpg.Connection, user: ClerkUser) -> ClerkOutcome:
    """The primary email as it is now (an address change, a verification), for a user we know.

    A user we have not seen yet is left to their first sign-in (or user.created) to create."""
    user_id = await conn.fetchval(
        """UPDATE users SET email = coalesce($2, email), email_verified = $3
           WHERE clerk_user_id = $1 AND deleted_at IS NULL RETURNING id::text""",
        user.id,
        user.email,
        user.email_verified,
    )
    if user_id is None:
        return ClerkOutcome("recorded")
    return ClerkOutcome("applied", user_id)


async def _deleted(conn: asyncpg.Connection, clerk_id: str) -> ClerkOutcome:
    user = await conn.fetchrow(
        """SELECT id, email, creem_customer_id FROM users
           WHERE clerk_user_id = $1 AND deleted_at IS NULL FOR UPDATE""",
        clerk_id,
    )
    if user is None:
        return ClerkOutcome("recorded")
    user_id = user["id"]
    instances = await conn.fetch(
        """UPDATE instances SET status = 'deleted', deleted_at = now()
           WHERE user_id = $1 AND status <> 'deleted' RETURNING id::text""",
        user_id,
    )
    for row in instances:  # the fleet wipes their servers (rebuilt from the image)
        await enqueue_job(conn, uuid.UUID(row["id"]), "teardown")
    # Every instance the user ever had, deleted earlier or now: nothing of theirs stays on it.
    await conn.execute(
        """UPDATE instances SET status_reason = 'account deleted', channel_config = '{}',
                  soul_md = NULL, channel_secret_enc = NULL, own_api_key_enc = NULL,
                  use_own_api_key = false, own_api_provider = NULL
           WHERE user_id = $1""",
        user_id,
    )
    await conn.execute(
        "DELETE FROM health_alerts WHERE instance_id IN "
        "(SELECT id FROM instances WHERE user_id = $1)",
        user_id,
    )
    await conn.execute(
        "DELETE FROM instance_health WHERE instance_id IN "
        "(SELECT id FROM instances WHERE user_id = $1)",
        user_id,
    )
    # A job's error can quote what the user configured (a bot, a SOUL line); a finished job's
    # payload is no longer needed. Queued ones (the teardowns above) keep theirs.
    await conn.execute(
        """UPDATE instance_jobs SET last_error = NULL,
                  payload = CASE WHEN status IN ('done', 'failed') THEN '{}' ELSE payload END
            WHERE instance_id IN (SELECT id FROM instances WHERE user_id = $1)""",
        user_id,
    )
    await conn.execute("DELETE FROM user_integrations WHERE user_id = $1", user_id)
    await conn.execute("DELETE FROM oauth_states WHERE user_id = $1", user_id)
    await conn.execute("DELETE FROM api_keys WHERE user_id = $1", user_id)
    await conn.execute("UPDATE balances SET auto_topup_enabled = false WHERE user_id = $1", user_id)
    await conn.execute("DELETE FROM notifications WHERE user_id = $1", user_id)
    # Stored webhook payloads that speak of the user: Clerk's (by their id) and Creem's (by our
    # user id, their customer id or their email anywhere in the event).
    needles = [
        n.lower() for n in (clerk_id, str(user_id), user["email"], user["creem_customer_id"]) if n
    ]
    await conn.execute(
        """UPDATE processed_webhook_events SET payload = NULL
           WHERE payload IS NOT NULL
             AND EXISTS (SELECT FROM unnest($1::text[]) n
                         WHERE strpos(lower(payload::text), n) > 0)""",
        needles,
    )
    # Payments we could not match keep their amounts for the operator's books, not who sent them.
    await conn.execute(
        """UPDATE unmatched_payments u SET payload = NULL, claimed_user = NULL,
                  detail = CASE WHEN m.in_detail THEN 'erased with the account' ELSE detail END,
                  request_id = CASE WHEN m.in_request THEN NULL ELSE request_id END
           FROM (SELECT id,
                   EXISTS (SELECT FROM unnest($1::text[]) n
                           WHERE strpos(lower(detail), n) > 0) AS in_detail,
                   EXISTS (SELECT FROM unnest($1::text[]) n
                           WHERE strpos(lower(coalesce(request_id, '')), n) > 0) AS in_request,
                   EXISTS (SELECT FROM unnest($1::text[]) n
                           WHERE strpos(lower(coalesce(payload::text, '')
                                              || ' ' || coalesce(claimed_user, '')), n) > 0)
                     AS in_rest
                 FROM unmatched_payments) m
           WHERE u.id = m.id AND (u.user_id = $2 OR m.in_detail OR m.in_request OR m.in_rest)""",
        needles,
        user_id,
    )
    await conn.execute(
        """UPDATE users SET deleted_at = now(), clerk_user_id = $2, email = NULL, google_id = NULL,
                  creem_customer_id = NULL, email_verified = NULL, clerk_checked_at = NULL
           WHERE id = $1""",
        user_id,
        erased_clerk_id(clerk_id),
    )
    log.info(
        "user deleted and anonymised", extra={"user_id": str(user_id), "instances": len(instances)}
    )
    return ClerkOutcome(
        "applied", str(user_id), deleted_instances=tuple(r["id"] for r in instances)
    )
