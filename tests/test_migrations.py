"""The migration runner, and schema.sql == applying every migration."""

from __future__ import annotations

import asyncio
import re
from importlib.resources import files
from typing import Any

import asyncpg
import pytest

from blitzclawd.db import migrate as migrate_module
from blitzclawd.db.migrate import LOCK_KEY, Migration, MigrationError, applied, available, migrate
from blitzclawd.db.pool import connect

# Each query yields comparable rows describing one kind of object in the public schema.
_CATALOG = {
    "relations": """
        SELECT c.relname, c.relkind::text FROM pg_class c
        WHERE c.relnamespace = 'public'::regnamespace
          AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
        ORDER BY 1
    """,
    # In column order, without attnum itself (a dropped column leaves a gap but no difference).
    "columns": """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid), a.attidentity::text, a.attgenerated::text
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
          AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY c.relname, a.attnum
    """,
    "constraints": """
        SELECT conrelid::regclass::text, conname, contype::text, pg_get_constraintdef(oid)
        FROM pg_constraint WHERE connamespace = 'public'::regnamespace
        ORDER BY 1, 2
    """,
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'
        ORDER BY 1, 2
    """,
    "triggers": """
        SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid) FROM pg_trigger
        WHERE NOT tgisinternal
          AND tgrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'public'::regnamespace)
        ORDER BY 1, 2
    """,
    "functions": """
        SELECT proname, pg_get_function_identity_arguments(oid), pg_get_functiondef(oid)
        FROM pg_proc WHERE pronamespace = 'public'::regnamespace
        ORDER BY 1, 2
    """,
    "sequences": """
        SELECT sequencename, data_type::text, start_value, increment_by, max_value, cycle
        FROM pg_sequences WHERE schemaname = 'public'
        ORDER BY 1
    """,
    "extensions": "SELECT extname FROM pg_extension ORDER BY 1",
}


async def catalog(conn: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {kind: [tuple(r) for r in await conn.fetch(sql)] for kind, sql in _CATALOG.items()}


async def _migration_rows(conn: asyncpg.Connection) -> list[tuple[Any, ...]]:
    rows = await conn.fetch("SELECT * FROM schema_migrations ORDER BY version")
    return [tuple(r) for r in rows]


def test_available_migrations_are_numbered_files() -> None:
    migrations = available()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    directory = files("blitzclawd.db").joinpath("migrations")
    shipped = sorted(p.name for p in directory.iterdir() if p.name.endswith(".sql"))
    assert [f"{m.name}.sql" for m in migrations] == shipped
    for m in migrations:
        assert re.fullmatch(r"[0-9a-f]{64}", m.checksum)
    assert available() == migrations  # checksums are stable


async def test_schema_sql_equals_all_migrations(database: str, empty_database: str) -> None:
    migrated = await asyncpg.connect(database)
    from_schema = await asyncpg.connect(empty_database)
    try:
        # The runner's bookkeeping table is the only thing schema.sql leaves out.
        await migrated.execute("DROP TABLE schema_migrations")
        schema_sql = files("blitzclawd.db").joinpath("schema.sql").read_text(encoding="utf-8")
        await from_schema.execute(schema_sql)
        expected, actual = await catalog(migrated), await catalog(from_schema)
    finally:
        await migrated.close()
        await from_schema.close()
    assert all(expected[k] for k in ("relations", "columns", "constraints", "triggers"))
    for kind in _CATALOG:
        assert actual[kind] == expected[kind], f"schema.sql differs from the migrations: {kind}"


async def test_migrate_twice_changes_nothing(empty_database: str) -> None:
    conn = await asyncpg.connect(empty_database)
    try:
        assert await applied(conn) == []
        assert await migrate(conn) == [m.name for m in available()]
        before = (await catalog(conn), await _migration_rows(conn))
        assert await migrate(conn) == []
        assert (await catalog(conn), await _migration_rows(conn)) == before
        assert await applied(conn) == [m.version for m in available()]
    finally:
        await conn.close()


async def test_two_daemons_migrating_at_once(empty_database: str) -> None:
    first, second = await asyncpg.connect(empty_database), await asyncpg.connect(empty_database)
    try:
        results = await asyncio.gather(migrate(first), migrate(second))
        rows = await _migration_rows(first)
    finally:
        await first.close()
        await second.close()
    everything = [m.name for m in available()]
    assert sorted(results, key=len) == [[], everything]
    assert [r[0] for r in rows] == [m.version for m in available()]


async def test_changed_checksum_is_refused(database: str) -> None:
    conn = await asyncpg.connect(database)
    try:
        await conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await migrate(conn)
    finally:
        await conn.close()


async def test_newer_database_is_refused(database: str) -> None:
    conn = await asyncpg.connect(database)
    try:
        await conn.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES (9999, 'x', 'y')"
        )
        with pytest.raises(MigrationError, match=r"\[9999\].*newer blitzclawd"):
            await migrate(conn)
    finally:
        await conn.close()


async def test_failing_migration_leaves_no_trace(
    empty_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = available()
    broken = Migration(len(real) + 1, "9999_broken", "CREATE TABLE half_done (); SELECT 1/0", "c")
    monkeypatch.setattr(migrate_module, "available", lambda: [*real, broken])
    conn = await asyncpg.connect(empty_database)
    other = await asyncpg.connect(empty_database)
    try:
        with pytest.raises(asyncpg.DivisionByZeroError):
            await migrate(conn)
        assert await applied(conn) == [m.version for m in real]
        assert await conn.fetchval("SELECT to_regclass('half_done')") is None
        # The advisory lock was released: another daemon can migrate.
        assert await other.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY)
    finally:
        await conn.close()
        await other.close()


async def test_pool_codecs_round_trip_json(db_pool: asyncpg.Pool, database: str) -> None:
    value = {"chat_id": 42, "names": ["a", "ü"], "nested": {"ok": True, "none": None}}
    row = await db_pool.fetchrow("SELECT $1::jsonb AS b, $2::json AS j", value, value)
    assert row["b"] == value and row["j"] == value
    conn = await connect(database)
    try:
        assert await conn.fetchval("SELECT '{\"a\": [1]}'::jsonb") == {"a": [1]}
    finally:
        await conn.close()
