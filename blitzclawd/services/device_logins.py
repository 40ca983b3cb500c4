"""`blitzclaw auth login` as a device flow: the CLI opens a request and shows its user code; a
signed-in user confirms that code on the dashboard; the CLI's next poll gets an API key, minted
then, once."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import asyncpg

from blitzclawd.errors import ApiError
from blitzclawd.queries import device_logins as rows

LIFETIME = 600  # s
INTERVAL = 2  # s between the CLI's polls
_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read off a screen


@dataclass(frozen=True)
class Opened:
    device_code: str
    user_code: str


def code_hash(device_code: str) -> bytes:
    return hashlib.sha256(device_code.encode()).digest()


async def open_request(pool: asyncpg.Pool, client_name: str) -> Opened:
    for _ in range(5):  # a clash of user codes is rare; a few tries, then it is a real refusal
        device_code = secrets.token_urlsafe(32)
        letters = "".join(secrets.choice(_ALPHABET) for _ in range(8))
        user_code = f"{letters[:4]}-{letters[4:]}"
        if await rows.open_request(pool, code_hash(device_code), user_code, client_name, LIFETIME):
            return Opened(device_code, user_code)
    raise ApiError(503, "busy", "too many sign-ins are waiting; try again in a few minutes")


async def take_approval(pool: asyncpg.Pool, device_code: str) -> tuple[str, str] | None:
    """(user id, client name) once the request was approved, marked as used; None while it
    waits; 410 when it expired or was used."""
    async with pool.acquire() as conn, conn.transaction():
        found = await rows.claim(conn, code_hash(device_code))
        if found is None or found["expired"] or found["issued_at"] is not None:
            raise ApiError(
                410, "expired", "this sign-in expired or was used: run `blitzclaw auth login` again"
            )
        if found["approved_by"] is None:
            return None
        await rows.mark_issued(conn, found["id"])
        return str(found["approved_by"]), found["client_name"]
