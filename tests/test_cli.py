"""`blitzclawd migrate` against a real database: applies once, then changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys

import asyncpg


def migrate_cli(database_url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLITZCLAW_")}
    env["BLITZCLAW_DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "blitzclawd", "migrate"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


async def snapshot(dsn: str) -> tuple[list, list]:
    conn = await asyncpg.connect(dsn)
    try:
        migrations = [
            tuple(r)
            for r in await conn.fetch(
                "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version"
            )
        ]
        columns = [
            tuple(r)
            for r in await conn.fetch(
                """SELECT table_name, column_name, data_type, column_default, is_nullable
               FROM information_schema.columns WHERE table_schema = 'public'
               ORDER BY table_name, ordinal_position"""
            )
        ]
    finally:
        await conn.close()
    return migrations, columns


async def test_migrate_twice_second_run_changes_nothing(empty_database: str) -> None:
    first = migrate_cli(empty_database)
    assert first.returncode == 0, first.stderr
    assert "applied 0001" in first.stdout
    before = await snapshot(empty_database)
    assert before[0] and before[1]
    second = migrate_cli(empty_database)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "schema is up to date"
    assert await snapshot(empty_database) == before
