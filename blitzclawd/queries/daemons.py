"""The daemons sharing the database (`daemons`): registered and kept alive by each daemon's
heartbeat, presumed dead by the janitor, listed for operators."""

from __future__ import annotations

import datetime as dt

import asyncpg

Executor = asyncpg.Connection | asyncpg.Pool


async def register(db: Executor, daemon_id: str, hostname: str, pid: int, version: str) -> None:
    """Upsert: after a restart of the heartbeat the row exists; after a janitor presumed the
    daemon dead (a long stall), registering again brings it back."""
    await db.execute(
        """INSERT INTO daemons (id, hostname, pid, version, started_at, last_seen)
           VALUES ($1, $2, $3, $4, now(), now())
           ON CONFLICT (id) DO UPDATE SET last_seen = now(), stopped_at = NULL""",
        daemon_id,
        hostname,
        pid,
        version,
    )


async def running_on(db: Executor, hostname: str, except_id: str) -> list[asyncpg.Record]:
    """id and pid of the other daemons on `hostname` not marked stopped."""
    return await db.fetch(
        "SELECT id::text, pid FROM daemons WHERE hostname = $1 AND stopped_at IS NULL AND id <> $2",
        hostname,
        except_id,
    )


async def stopped_when_last_seen(db: Executor, daemon_ids: list[str]) -> None:
    await db.execute(
        "UPDATE daemons SET stopped_at = last_seen WHERE id = ANY($1::uuid[])", daemon_ids
    )


async def beat(db: Executor, daemon_id: str) -> bool | None:
    """Seen now; True when it had been presumed dead meanwhile (None: no row)."""
    return await db.fetchval(
        """WITH was AS (SELECT stopped_at FROM daemons WHERE id = $1 FOR UPDATE)
           UPDATE daemons d SET last_seen = now(), stopped_at = NULL FROM was
           WHERE d.id = $1 RETURNING was.stopped_at IS NOT NULL""",
        daemon_id,
    )


async def stopped(db: Executor, daemon_id: str) -> None:
    await db.execute("UPDATE daemons SET stopped_at = now() WHERE id = $1", daemon_id)


async def database_now(db: Executor) -> dt.datetime:
    return await db.fetchval("SELECT now()")


async def presume_dead(
    db: Executor, dead_after: float, watching_since: dt.datetime
) -> list[asyncpg.Record]:
    """Mark stopped the daemons silent for `dead_after` s (counting from `watching_since` at the
    earliest: a janitor that just started has not watched them yet); id, hostname, pid."""
    return await db.fetch(
        """UPDATE daemons SET stopped_at = last_seen
           WHERE stopped_at IS NULL
             AND greatest(last_seen, $2) < now() - make_interval(secs => $1)
           RETURNING id::text, hostname, pid""",
        dead_after,
        watching_since,
    )


async def listed(db: Executor, limit: int = 100) -> list[asyncpg.Record]:
    """The daemons sharing the database, newest first."""
    return await db.fetch(
        "SELECT id::text, hostname, pid, version, started_at, last_seen, stopped_at "
        "FROM daemons ORDER BY started_at DESC LIMIT $1",
        limit,
    )
