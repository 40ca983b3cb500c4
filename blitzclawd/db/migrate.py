"""Plain-SQL migrations (``migrations/NNNN_name.sql``) applied in order.

Each migration runs in its own transaction together with its ``schema_migrations`` row, and the
whole run holds a session advisory lock, so daemons starting at once on one database take turns:
the second finds everything applied and does nothing.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib.resources import files

import asyncpg

log = logging.getLogger(__name__)

# Session advisory lock held while migrating: b"blitzmig" as a bigint. Other advisory-lock users
# must pick different keys.
LOCK_KEY = int.from_bytes(b"blitzmig", "big")

_FILENAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")

_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(RuntimeError):
    """The database and the code disagree about the schema; nothing was applied."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str  # the file name without ".sql", e.g. "0001_initial"
    sql: str
    checksum: str  # sha256 of the SQL with normalised line endings


def available() -> list[Migration]:
    """The migrations shipped with the code, in version order."""
    found: dict[int, Migration] = {}
    for entry in files("blitzclawd.db").joinpath("migrations").iterdir():
        match = _FILENAME.fullmatch(entry.name)
        if match is None:
            continue
        sql = entry.read_text(encoding="utf-8").replace("\r\n", "\n")
        version = int(match[1])
        if version in found:
            raise MigrationError(f"two migrations numbered {version:04d}")
        checksum = hashlib.sha256(sql.encode()).hexdigest()
        found[version] = Migration(version, entry.name.removesuffix(".sql"), sql, checksum)
    return [found[v] for v in sorted(found)]


async def applied(conn: asyncpg.Connection) -> list[int]:
    """Versions recorded in ``schema_migrations`` (empty on a fresh database)."""
    if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
        return []
    rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
    return [r["version"] for r in rows]


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply pending migrations; return their names (empty when up to date)."""
    migrations = available()
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
    try:
        await conn.execute(_BOOKKEEPING)
        rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
        done = {r["version"]: r for r in rows}
        _check(done, migrations)
        names = []
        for m in migrations:
            if m.version in done:
                continue
            async with conn.transaction():
                await conn.execute(m.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    m.version,
                    m.name,
                    m.checksum,
                )
            log.info("applied migration %s", m.name)
            names.append(m.name)
        return names
    finally:
        if not conn.is_closed():  # a closed connection has released the lock already
            await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)


def _check(done: dict[int, asyncpg.Record], migrations: list[Migration]) -> None:
    known = {m.version: m for m in migrations}
    unknown = sorted(set(done) - set(known))
    if unknown:
        raise MigrationError(
            f"the database has migration(s) {unknown} that this blitzclawd does not know "
            f"(it knows up to {max(known, default=0):04d}); run a newer blitzclawd"
        )
    for version, row in sorted(done.items()):
        if row["checksum"] != known[version].checksum:
            raise MigrationError(
                f"migration {row['name']} was changed after it was applied; applied "
                "migrations are immutable: restore the file and add a new migration instead"
            )
