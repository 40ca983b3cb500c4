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
import atexit
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest_asyncio

from blitzclawd.db.embedded import EmbeddedPostgres
from blitzclawd.db.migrate import migrate
from blitzclawd.db.pool import create_pool

TEST_DATABASE_URL_ENV = "BLITZCLAW_TEST_DATABASE_URL"

# A refusal the proxy tells as the assistant's answer (blitzclawd.proxy.notices): its reason.
NOTICE_HEADER = "X-BlitzClaw-Notice"


def notice_of(resp: Any) -> str | None:
    """The notice a proxy answer stands for (hourly limit, low balance, ...), or None."""
    return resp.headers.get(NOTICE_HEADER) if resp.status == 200 else None


# Daemons run in this process keep their state (in-flight journals) in a directory of this run,
# never in the machine's /var/lib/blitzclawd. Daemon processes get their own (DaemonProcess).
os.environ["BLITZCLAW_STATE_DIR"] = tempfile.mkdtemp(prefix="blitzclawd-test-state-")
atexit.register(shutil.rmtree, os.environ["BLITZCLAW_STATE_DIR"], ignore_errors=True)


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


# -- the proxy: a daemon in this process in front of the fake upstream --------------------------


@dataclass
class ProxyEnv:
    """A running daemon (in-process) whose upstreams are a FakeLLM, plus a seeded instance."""

    daemon: Any
    fake: Any
    http: aiohttp.ClientSession
    pool: asyncpg.Pool
    url: str  # the proxy listener
    instance: Any  # blitzclawd.testing.seed.SeededInstance, user credited with $50

    async def post(
        self, path: str, body: dict, *, instance: Any = None, headers: dict[str, str] | None = None
    ) -> aiohttp.ClientResponse:
        inst = instance or self.instance
        hdrs = {**inst.headers, **(headers or {})}
        if path == "/v1/messages":
            hdrs.setdefault("anthropic-version", "2023-06-01")
        return await self.http.post(self.url + path, json=body, headers=hdrs)

    async def balance(self, user_id: str | None = None) -> int:
        uid = user_id or self.instance.user_id
        return await self.pool.fetchval(
            "SELECT balance_micros FROM balances WHERE user_id = $1", uuid.UUID(uid)
        )

    async def settled(self, deadline: float = 10.0) -> None:
        """Wait until every request is settled (settlement follows the response)."""
        proxy = self.daemon.supervisor.child("proxy")
        end = asyncio.get_running_loop().time() + deadline
        while asyncio.get_running_loop().time() < end:
            if proxy.idle and not await self.pool.fetchval("SELECT count(*) FROM reservations"):
                return
            await asyncio.sleep(0.01)
        raise AssertionError("requests still in flight or unsettled")


@asynccontextmanager
async def running_proxy_env(
    database: str,
    billing: dict[str, Any] | None = None,
    *,
    upstream_host: str = "127.0.0.1",
    pricing: dict[str, Any] | None = None,
    limits: dict[str, Any] | None = None,
    supervisor: dict[str, Any] | None = None,
) -> AsyncIterator[ProxyEnv]:
    """A ProxyEnv; `billing` overrides [billing] settings (checkpoints every 50 ms otherwise),
    `pricing` the [pricing] ones, `limits` the [limits] ones, `supervisor` the
    [supervisor] ones; the proxy reaches the fake
    upstream by `upstream_host` (a loopback name or address)."""
    from blitzclawd.config import Secret, Secrets, parse_settings
    from blitzclawd.daemon import Daemon
    from blitzclawd.testing import seed
    from blitzclawd.testing.daemon_process import free_port
    from blitzclawd.testing.fake_llm import FakeLLM

    async with FakeLLM() as fake:
        settings = parse_settings(
            {
                "api": {"port": free_port()},
                "proxy": {"port": free_port()},
                "upstream": {
                    "anthropic_url": fake.base_url.replace("127.0.0.1", upstream_host),
                    "openai_url": fake.base_url.replace("127.0.0.1", upstream_host),
                },
                "billing": {"checkpoint_interval": 0.05, **(billing or {})},
                "supervisor": {"backoff_base": 0.01, "backoff_max": 0.05, **(supervisor or {})},
                **({"pricing": pricing} if pricing is not None else {}),
                **({"limits": limits} if limits is not None else {}),
            }
        )
        secrets = Secrets(
            {
                "database_url": Secret(database),
                "anthropic_api_key": Secret(fake.anthropic_key),
                "openai_api_key": Secret(fake.openai_key),
            }
        )
        daemon = Daemon(settings, secrets)
        run = asyncio.create_task(daemon.run())
        await asyncio.wait_for(daemon.ready.wait(), 30)
        pool = await create_pool(database, min_size=1, max_size=4)
        try:
            user = await seed.create_user(pool)
            await seed.credit(pool, user, 50_000_000)
            instance = await seed.create_instance(pool, user)
            async with aiohttp.ClientSession() as http:
                yield ProxyEnv(
                    daemon, fake, http, pool, f"http://127.0.0.1:{settings.proxy.port}", instance
                )
        finally:
            daemon.request_stop()
            await asyncio.wait_for(run, 30)
            await pool.close()


@pytest_asyncio.fixture(loop_scope="function")
async def proxy_env(database: str) -> AsyncIterator[ProxyEnv]:
    async with running_proxy_env(database) as env:
        yield env


# -- the user API: a daemon in this process with fake Clerk, Creem, Resend and LLM upstreams ------


@dataclass
class ApiEnv:
    daemon: Any
    clerk: Any
    creem: Any
    resend: Any
    llm: Any
    http: aiohttp.ClientSession
    pool: asyncpg.Pool
    api: str  # the API listener's base URL
    proxy: str
    admin_key: str

    def session_headers(self, clerk_user_id: str, **mint: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.clerk.mint(clerk_user_id, **mint)}"}

    async def call(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        json: Any = None,
        data: bytes | None = None,
    ) -> tuple[int, Any]:
        async with self.http.request(
            method, self.api + path, headers=headers, json=json, data=data
        ) as resp:
            body = await resp.read()
            try:
                import orjson

                return resp.status, orjson.loads(body) if body else None
            except ValueError:
                return resp.status, body


@pytest_asyncio.fixture(loop_scope="function")
async def api_env(database: str) -> AsyncIterator[ApiEnv]:
    async with running_api_env(database) as env:
        yield env


@asynccontextmanager
async def running_api_env(
    database: str,
    sections: dict[str, dict[str, Any]] | None = None,
    extra_secrets: dict[str, str] | None = None,
) -> AsyncIterator[ApiEnv]:
    """An ApiEnv; `sections` overrides settings keys section by section (e.g. fleet);
    `extra_secrets` adds secrets (e.g. google_client_secret)."""
    from blitzclawd.config import Secret, Secrets, parse_settings
    from blitzclawd.daemon import Daemon
    from blitzclawd.testing.daemon_process import free_port
    from blitzclawd.testing.fake_clerk import FakeClerk
    from blitzclawd.testing.fake_creem import FakeCreem
    from blitzclawd.testing.fake_llm import FakeLLM
    from blitzclawd.testing.fake_resend import FakeResend

    async with FakeClerk() as clerk, FakeCreem() as creem, FakeResend() as resend, FakeLLM() as llm:
        product_id = next(iter(creem.products))
        config: dict[str, dict[str, Any]] = {
            "api": {"port": free_port()},
            "proxy": {"port": free_port()},
            "upstream": {"anthropic_url": llm.base_url, "openai_url": llm.base_url},
            "auth": {
                "clerk_jwks_url": clerk.jwks_url,
                "clerk_api_url": clerk.api_url,
                "clerk_frontend_api": clerk.frontend_api,
                "clerk_publishable_key": "pk_test_fake",
                "allowed_origins": ["http://localhost:3000"],
            },
            "creem": {
                "api_url": creem.base_url,
                "product_id": product_id,
                "unit_cents": creem.products[product_id],
                "subscription_product_id": next(iter(creem.subscription_products)),
            },
            "notify": {"resend_url": resend.base_url, "sweep_interval": 0.1},
            "limits": {"messages_per_hour": 0, "tokens_per_day": 0},
            "supervisor": {"backoff_base": 0.01, "backoff_max": 0.05},
        }
        for section, values in (sections or {}).items():
            config[section] = {**config.get(section, {}), **values}
        settings = parse_settings(config)
        admin_key = "blitzclaw-admin-" + uuid.uuid4().hex
        secrets = Secrets(
            {
                "database_url": Secret(database),
                "anthropic_api_key": Secret(llm.anthropic_key),
                "openai_api_key": Secret(llm.openai_key),
                "clerk_secret_key": Secret(clerk.secret_key),
                "clerk_webhook_secret": Secret(clerk.webhook_secret),
                "creem_api_key": Secret(creem.api_key),
                "creem_webhook_secret": Secret(creem.webhook_secret),
                "resend_api_key": Secret(resend.api_key),
                "admin_api_key": Secret(admin_key),
                **{name: Secret(value) for name, value in (extra_secrets or {}).items()},
            }
        )
        daemon = Daemon(settings, secrets)
        run = asyncio.create_task(daemon.run())
        await asyncio.wait_for(daemon.ready.wait(), 30)
        pool = await create_pool(database, min_size=1, max_size=4)
        try:
            async with aiohttp.ClientSession() as http:
                yield ApiEnv(
                    daemon,
                    clerk,
                    creem,
                    resend,
                    llm,
                    http,
                    pool,
                    f"http://127.0.0.1:{settings.api.port}",
                    f"http://127.0.0.1:{settings.proxy.port}",
                    admin_key,
                )
        finally:
            daemon.request_stop()
            await asyncio.wait_for(run, 30)
            await pool.close()
