"""Shared PostgreSQL fixtures for the whole suite.

- ``pg_dsn`` (session): a server DSN whose role may CREATE DATABASE: $BLITZCLAW_TEST_DATABASE_URL,
  else an EmbeddedPostgres for the session (the daemon's own code path).
- ``empty_database`` / ``database`` (function): DSN of a brand-new database, empty / migrated.
- ``db_pool`` (function): a blitzclawd pool on ``database``.

Loops: session fixtures only hand out strings, so nothing crosses event loops. Everything that
holds a connection is created and closed on the test's own (function) loop; every fixture here
names its loop_scope, so none depends on asyncio_default_fixture_loop_scope. A test that runs on
the session loop must not use ``db_pool`` (it lives on the function loop).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest_asyncio

from blitzclawd.db.embedded import EmbeddedPostgres
from blitzclawd.db.migrate import migrate
from blitzclawd.db.pool import create_pool

TEST_DATABASE_URL_ENV = "BLITZCLAW_TEST_DATABASE_URL"


def with_database(dsn: str, name: str) -> str:
    """``dsn`` pointing at database ``name`` instead."""
    return urlunsplit(urlsplit(dsn)._replace(path="/" + name))


async def _admin(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@asynccontextmanager
async def _scratch_database(server_dsn: str, template: str | None = None) -> AsyncIterator[str]:
    name = f"blitzclawd_test_{uuid.uuid4().hex[:16]}"
    source = f' TEMPLATE "{template}"' if template else ""
    await _admin(server_dsn, f'CREATE DATABASE "{name}"{source}')
    try:
        yield with_database(server_dsn, name)
    finally:
        await _admin(server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def pg_dsn() -> AsyncIterator[str]:
    url = os.environ.get(TEST_DATABASE_URL_ENV)
    if url:
        yield url
        return
    base = tempfile.mkdtemp(prefix="blitzclawd-test-pg-")
    os.chmod(base, 0o755)  # as root, the cluster runs as an unprivileged user who must get in
    cluster = EmbeddedPostgres(Path(base) / "state")
    try:
        yield await cluster.start()
    finally:
        await cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def _migrated_template(pg_dsn: str) -> AsyncIterator[str]:
    """Name of a database migrated once per session; ``database`` copies it."""
    async with _scratch_database(pg_dsn) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        yield urlsplit(dsn).path.lstrip("/")


@pytest_asyncio.fixture(loop_scope="function")
async def empty_database(pg_dsn: str) -> AsyncIterator[str]:
    async with _scratch_database(pg_dsn) as dsn:
        yield dsn


@pytest_asyncio.fixture(loop_scope="function")
async def database(pg_dsn: str, _migrated_template: str) -> AsyncIterator[str]:
    async with _scratch_database(pg_dsn, template=_migrated_template) as dsn:
        yield dsn


@pytest_asyncio.fixture(loop_scope="function")
async def db_pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database)
    try:
        yield pool
    finally:
        try:
            # close() waits for connections a failed test still holds; don't hang on them.
            await asyncio.wait_for(pool.close(), timeout=10)
        except TimeoutError:
            pool.terminate()
