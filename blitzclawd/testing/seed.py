"""Put users, instances and money into a database for tests and benchmarks.

Users and instances are plain rows here (their own API flows arrive with the accounts and fleet
work); money always goes in through the real ledger path (blitzclawd.ledger.adjust).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg

from blitzclawd import credentials, ledger


@dataclass(frozen=True, slots=True)
class SeededInstance:
    id: str
    user_id: str
    secret: str

    @property
    def api_key(self) -> str:
        return credentials.api_key(self.id, self.secret)

    @property
    def headers(self) -> dict[str, str]:
        return {"X-BlitzClaw-Instance": self.id, "X-BlitzClaw-Secret": self.secret}


async def create_user(conn: asyncpg.Connection | asyncpg.Pool, *, email: str | None = None) -> str:
    user_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO users (id, email, clerk_user_id) VALUES ($1, $2, $3)",
        user_id,
        email or f"{user_id.hex[:8]}@example.test",
        f"user_{user_id.hex}",
    )
    return str(user_id)


async def create_instance(
    conn: asyncpg.Connection | asyncpg.Pool,
    user_id: str,
    *,
    status: str = "active",
    msgs_per_hour: int | None = None,
    tokens_per_day: int | None = None,
    channel_type: str = "telegram",
) -> SeededInstance:
    instance_id = uuid.uuid4()
    secret = credentials.new_secret()
    await conn.execute(
        """INSERT INTO instances (id, user_id, status, channel_type, persona_template,
                                  secret_hash, msgs_per_hour, tokens_per_day)
           VALUES ($1, $2, $3, $4, 'assistant', $5, $6, $7)""",
        instance_id,
        uuid.UUID(user_id),
        status,
        channel_type,
        credentials.hash_secret(secret),
        msgs_per_hour,
        tokens_per_day,
    )
    return SeededInstance(str(instance_id), user_id, secret)


async def credit(
    conn: asyncpg.Connection | asyncpg.Pool,
    user_id: str,
    micros: int,
    *,
    minimum_micros: int = 10_000_000,
    key: str | None = None,
) -> int | None:
    """Top a user up through the ledger; returns the new balance."""
    result = await ledger.adjust(
        conn,
        ledger.Entry(user_id, micros, "adjustment", "seed", key or f"seed:{uuid.uuid4()}"),
        minimum_micros,
    )
    return result.balance_micros
