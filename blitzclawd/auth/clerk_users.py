"""Clerk's Backend API user lookup: a user's primary email address and whether it is verified.

    users = ClerkUsers(http, "https://api.clerk.com/v1", secret_key)
    user = await users.get("user_…")            # ClerkUser, None for a 404, ClerkApiError else
    await refresh_user(pool, users, "user_…")    # the same, written to our users row

`GET /v1/users/{user_id}` with `Authorization: Bearer <secret key>` answers the user object (the
shape of the `user.created` / `user.updated` webhooks' `data`): `email_addresses: [{id,
email_address, verification: {status, strategy, …} | null}]` and `primary_email_address_id`.
Errors are `{"errors": [{"message", "long_message", "code"}], "clerk_trace_id"}`.

A lookup never decides a request: Clerk being down, slow, rate limiting (429) or not knowing the
user (404) is logged and retried later (at most once per RETRY_AFTER per user, across daemons:
`users.clerk_checked_at` is claimed before asking).
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import asyncpg
import orjson

from blitzclawd.config import Secrets, Settings

log = logging.getLogger("blitzclawd.auth")

RETRY_AFTER = 60.0  # s between two lookups of one user (a failure is retried after this)
_TIMEOUT = aiohttp.ClientTimeout(total=5)  # first sight waits for it: keep it short
_CLERK_ID = re.compile(r"user_[A-Za-z0-9]{1,100}")


class ClerkApiError(Exception):
    """The Backend API did not answer the user (network, 5xx, 429, 401, a body we can't read)."""


@dataclass(frozen=True, slots=True)
class ClerkUser:
    id: str
    email: str | None  # the primary address; None if the user has none
    email_verified: bool | None  # the primary address's verification; None without one


def parse_user(data: Any) -> ClerkUser:
    """Clerk's user object (API answer or webhook `data`); ValueError names the bad field."""
    if not isinstance(data, dict):
        raise ValueError("data: must be an object")
    user_id = data.get("id")
    if not isinstance(user_id, str) or not user_id:
        raise ValueError("data.id: must be a non-empty string")
    emails = data.get("email_addresses")
    if emails is None:
        emails = []
    if not isinstance(emails, list):
        raise ValueError("data.email_addresses: must be a list")
    primary_id = data.get("primary_email_address_id")
    if primary_id is not None and not isinstance(primary_id, str):
        raise ValueError("data.primary_email_address_id: must be a string or null")
    primary: dict[str, Any] | None = None
    for n, entry in enumerate(emails):
        where = f"data.email_addresses[{n}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: must be an object")
        if not isinstance(entry.get("id"), str) or not entry["id"]:
            raise ValueError(f"{where}.id: must be a non-empty string")
        address = entry.get("email_address")
        if not isinstance(address, str) or not _looks_like_email(address):
            raise ValueError(f"{where}.email_address: must be an email address")
        verification = entry.get("verification")
        if verification is not None and not isinstance(verification, dict):
            raise ValueError(f"{where}.verification: must be an object or null")
        if entry["id"] == primary_id:
            primary = entry
    if primary_id is not None and primary is None:
        raise ValueError("data.primary_email_address_id: names none of data.email_addresses")
    if primary is None:
        return ClerkUser(user_id, None, None)
    # No verification object at all says nothing either way: unknown (None), not "unverified",
    # so a payload that merely leaves it out never locks a user out.
    verification = primary.get("verification")
    if verification is None or not isinstance(verification.get("status"), str):
        return ClerkUser(user_id, primary["email_address"], None)
    return ClerkUser(user_id, primary["email_address"], verification["status"] == "verified")


def _looks_like_email(address: str) -> bool:
    return len(address) <= 320 and re.fullmatch(r"[^@\s]+@[^@\s]+", address) is not None


class ClerkUsers:
    def __init__(self, http: aiohttp.ClientSession, api_url: str, secret_key: str) -> None:
        self._http = http
        self._api_url = api_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {secret_key}"}

    async def get(self, clerk_user_id: str) -> ClerkUser | None:
        if not _CLERK_ID.fullmatch(clerk_user_id):
            return None  # not an id Clerk issues: nothing to ask about
        url = f"{self._api_url}/users/{quote(clerk_user_id, safe='')}"
        try:
            async with self._http.get(url, headers=self._headers, timeout=_TIMEOUT) as resp:
                body = await resp.read()
                if resp.status == 404:
                    return None
                if resp.status != 200:
                    raise ClerkApiError(f"HTTP {resp.status}: {_error_code(body)}")
            return parse_user(orjson.loads(body))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ClerkApiError(f"{type(exc).__name__}: {exc}") from None
        except ValueError as exc:  # includes orjson.JSONDecodeError
            raise ClerkApiError(f"unreadable user: {exc}") from None


def _error_code(body: bytes) -> str:
    try:
        errors = orjson.loads(body).get("errors")
        return str(errors[0].get("code"))[:100]
    except (ValueError, AttributeError, IndexError, KeyError, TypeError):
        return "no Clerk error body"


def clerk_users(
    http: aiohttp.ClientSession | None, settings: Settings, secrets: Secrets
) -> ClerkUsers | None:
    """The lookup client, or None without the clerk_secret_key secret (or an HTTP session)."""
    key = secrets.get("clerk_secret_key")
    if key is None or http is None:
        return None
    return ClerkUsers(http, settings.auth.clerk_api_url, key.reveal())


async def refresh_user(pool: asyncpg.Pool, users: ClerkUsers, clerk_user_id: str) -> bool:
    """Ask Clerk about the user and store the answer; True if it was stored.

    Skipped (False) when the user was looked up less than RETRY_AFTER ago, by any daemon."""
    claimed = await pool.fetchval(
        """UPDATE users SET clerk_checked_at = now()
           WHERE clerk_user_id = $1 AND deleted_at IS NULL
             AND (clerk_checked_at IS NULL
                  OR clerk_checked_at < now() - make_interval(secs => $2))
           RETURNING true""",
        clerk_user_id,
        RETRY_AFTER,
    )
    if not claimed:
        return False
    try:
        user = await users.get(clerk_user_id)
    except ClerkApiError as exc:
        log.warning(
            "clerk user lookup failed; retried later",
            extra={"clerk_user_id": clerk_user_id, "error": str(exc)},
        )
        return False
    if user is None:
        log.warning(
            "clerk does not know the user; retried later", extra={"clerk_user_id": clerk_user_id}
        )
        return False
    await pool.execute(
        """UPDATE users SET email = coalesce($2, email), email_verified = $3
           WHERE clerk_user_id = $1 AND deleted_at IS NULL""",
        clerk_user_id,
        user.email,
        user.email_verified,
    )
    return True


async def ensure_email(
    pool: asyncpg.Pool, users: ClerkUsers | None, user_id: uuid.UUID | str
) -> str | None:
    """The user's email address, looked up at Clerk first if we have none yet."""
    row = await pool.fetchrow(
        "SELECT email, clerk_user_id FROM users WHERE id = $1 AND deleted_at IS NULL",
        uuid.UUID(str(user_id)),
    )
    if row is None:
        return None
    if row["email"] or users is None or not row["clerk_user_id"]:
        return row["email"]
    if not await refresh_user(pool, users, row["clerk_user_id"]):
        return None
    return await pool.fetchval("SELECT email FROM users WHERE id = $1", uuid.UUID(str(user_id)))
