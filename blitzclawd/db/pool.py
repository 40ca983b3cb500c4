"""asyncpg pools and connections with json/jsonb decoded by orjson."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

_SERVER_SETTINGS = {"application_name": "blitzclawd"}
# s a new connection may take (asyncpg's default is 60): an unreachable database host must fail
# fast enough for a request waiting on it to be refused (503), not held for a minute.
CONNECT_TIMEOUT = 10.0


def _dumps(value: Any) -> str:
    # asyncpg's text codec wants str, orjson produces bytes.
    return orjson.dumps(value).decode()


async def init_connection(conn: asyncpg.Connection) -> None:
    """Register the codecs on a fresh connection (the pool's ``init`` hook)."""
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(
            typename, schema="pg_catalog", encoder=_dumps, decoder=orjson.loads, format="text"
        )


async def _light_reset(conn: asyncpg.Connection) -> None:
    """What a released connection needs before reuse, without asyncpg's reset query.

    asyncpg's default runs `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`
    on every release: a round trip per pooled query. Pooled connections here keep no session
    state (LISTEN, session advisory locks and SET live on dedicated connections), so only an
    abandoned transaction needs undoing.
    """
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


async def create_pool(
    dsn: str, *, min_size: int = 2, max_size: int = 20, async_commit: bool = False
) -> asyncpg.Pool:
    """async_commit: COMMIT returns before the WAL is flushed (synchronous_commit=off). Only for
    writes whose loss in a database crash is harmless (proxy holds and checkpoints); money moves
    in durable commits."""
    settings = dict(_SERVER_SETTINGS)
    if async_commit:
        settings["synchronous_commit"] = "off"
    return await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=init_connection,
        reset=_light_reset,
        server_settings=settings,
        timeout=CONNECT_TIMEOUT,
    )


async def connect(dsn: str) -> asyncpg.Connection:
    """A dedicated connection (e.g. an advisory-lock holder) with the pool's codecs."""
    conn = await asyncpg.connect(dsn, server_settings=_SERVER_SETTINGS, timeout=CONNECT_TIMEOUT)
    try:
        await init_connection(conn)
    except BaseException:
        await conn.close()
        raise
    return conn


async def ping(pool: asyncpg.Pool) -> None:
    """One round trip; raises when the database cannot answer."""
    await pool.fetchval("SELECT 1")
