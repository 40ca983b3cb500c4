"""The fleet end to end: a daemon in this process, FakeHetzner servers over real SSH.

The pool fills, ready callbacks pin host keys, users create instances that are configured over
SSH and reach active; restart, configure, logs and delete work; a deleted instance's server is
rebuilt before anyone else gets it; scoping, validation and the stuck-server timeout.
"""

from __future__ import annotations

import asyncio
import json
import stat
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import asyncssh
import orjson
import pytest
from openclaw_tool import ensure_openclaw

from blitzclawd import credentials
from blitzclawd.config import Secret, Secrets, parse_settings
from blitzclawd.daemon import Daemon
from blitzclawd.db.pool import create_pool
from blitzclawd.http.auth import hash_key, new_api_key
from blitzclawd.testing import seed
from blitzclawd.testing.daemon_process import free_port
from blitzclawd.testing.fake_hetzner import FakeHetzner
from blitzclawd.testing.fake_telegram import FakeTelegram

KEY_NAME = "blitzclaw-provisioner"
BOT_TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
ADMIN_KEY = "admin-" + "k" * 40


@dataclass
class FleetEnv:
    daemon: Daemon
    fake: FakeHetzner
    pool: asyncpg.Pool
    http: aiohttp.ClientSession
    api: str
    telegram: FakeTelegram

    async def user(self, *, credit: int = 50_000_000) -> dict[str, str]:
        user_id = await seed.create_user(self.pool)
        if credit:
            await seed.credit(self.pool, user_id, credit)
        key = new_api_key()
        await self.pool.execute(
            "INSERT INTO api_keys (user_id, name, prefix, key_hash) VALUES ($1, 'test', $2, $3)",
            uuid.UUID(user_id),
            key[:8],
            hash_key(key),
        )
        return {"Authorization": f"Bearer {key}", "X-User": user_id}

    async def call(
        self, method: str, path: str, headers: dict[str, str], json: Any = None
    ) -> tuple[int, Any]:
        async with self.http.request(method, self.api + path, headers=headers, json=json) as r:
            body = await r.read()
            try:
                return r.status, orjson.loads(body) if body else None
            except orjson.JSONDecodeError:
                return r.status, body.decode()

    async def instance(self, instance_id: str) -> asyncpg.Record:
        return await self.pool.fetchrow(
            "SELECT * FROM instances WHERE id = $1", uuid.UUID(instance_id)
        )

    def server_of(self, hetzner_id: int) -> Any:
        return self.fake.servers[hetzner_id]


async def until(check: Callable[[], Awaitable[Any]], deadline: float = 20.0) -> Any:
    async with asyncio.timeout(deadline):
        while True:
            value = await check()
            if value:
                return value
            await asyncio.sleep(0.05)


@asynccontextmanager
async def fleet_env(
    database: str,
    tmp_path: Path,
    *,
    sections: dict[str, Any] | None = None,
    secrets: dict[str, str] | None = None,
    api_port: int | None = None,
    hetzner: dict[str, Any] | None = None,
    **fleet: Any,
) -> AsyncIterator[FleetEnv]:
    """`fleet` overrides [fleet] keys; `sections` adds other settings sections (e.g. upstream),
    `secrets` other secrets (e.g. Clerk's and Creem's), `hetzner` the FakeHetzner's knobs (its
    rate limit, boot and action delays)."""
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    fake_options: dict[str, Any] = {"rate_limit": 10**6, "boot_delay": 0, **(hetzner or {})}
    async with (
        FakeHetzner(root=tmp_path / "hetzner", **fake_options) as fake,
        FakeTelegram() as telegram,
    ):
        telegram.add_bot("alice_assistant_bot", "Alice's assistant", token=BOT_TOKEN)
        fake.add_ssh_key(KEY_NAME, client_key.export_public_key().decode())
        api_port = api_port or free_port()
        settings = parse_settings(
            {
                "daemon": {"state_dir": str(tmp_path / "state")},
                "api": {"port": api_port},
                "proxy": {"port": free_port()},
                "supervisor": {"backoff_base": 0.01, "backoff_max": 0.05},
                "fleet": {
                    "hetzner_api_endpoint": f"{fake.base_url}/v1",
                    "hetzner_poll_interval": 0.01,
                    "ssh_port": fake.ssh_port,
                    "min_available": 2,
                    "max_size": 6,
                    "pool_interval": 0.3,
                    "ready_url": f"http://127.0.0.1:{api_port}/internal/instance-ready",
                    "job_poll": 0.1,
                    "ready_timeout": 10.0,
                    "ssh_connect_timeout": 5.0,
                    **fleet,
                },
                "telegram": {"api_url": telegram.base_url},
                **(sections or {}),
            }
        )
        secrets = Secrets(
            {
                "database_url": Secret(database),
                "hetzner_api_token": Secret(fake.token),
                "ssh_private_key": Secret(client_key.export_private_key("openssh").decode()),
                "admin_api_key": Secret(ADMIN_KEY),
                **{name: Secret(value) for name, value in (secrets or {}).items()},
            }
        )
        daemon = Daemon(settings, secrets)
        run = asyncio.create_task(daemon.run())
        await asyncio.wait_for(daemon.ready.wait(), 30)
        pool = await create_pool(database, min_size=1, max_size=4)
        try:
            async with aiohttp.ClientSession() as http:
                yield FleetEnv(daemon, fake, pool, http, f"http://127.0.0.1:{api_port}", telegram)
        finally:
            daemon.request_stop()
            assert await asyncio.wait_for(run, 30) == 0
            await pool.close()


async def available(env: FleetEnv, n: int) -> list[asyncpg.Record]:
    async def check() -> list[asyncpg.Record] | None:
        rows = await env.pool.fetch(
            "SELECT * FROM server_pool WHERE status = 'available' ORDER BY created_at"
        )
        return rows if len(rows) >= n else None

    return await until(check)


async def active(env: FleetEnv, instance_id: str) -> asyncpg.Record:
    async def check() -> asyncpg.Record | None:
        row = await env.instance(instance_id)
        assert row["status"] != "error", row["status_reason"]
        return row if row["status"] == "active" else None

    return await until(check)


async def create_active(
    env: FleetEnv, user: dict[str, str], persona: str = "assistant"
) -> tuple[str, asyncpg.Record]:
    """A Telegram instance created through the API, once it is active: (its id, its row)."""
    status, body = await env.call(
        "POST",
        "/api/instances",
        user,
        {
            "channel_type": "telegram",
            "persona_template": persona,
            "channel_config": {"bot_token": BOT_TOKEN, "allow_from": ["42"]},
        },
    )
    assert status == 201, body
    return body["id"], await active(env, body["id"])


async def test_the_pool_fills_and_pins_host_keys(database: str, tmp_path: Path) -> None:
    async with fleet_env(database, tmp_path) as env:
        rows = await available(env, 2)
        for row in rows:
            server = env.server_of(row["hetzner_server_id"])
            assert row["ssh_host_key"] == server.ssh.host_key_line
            assert server.labels["service"] == "blitzclaw"
            assert server.labels["pool_id"] == str(row["id"])
            assert str(row["ip_address"]) == server.ipv4
        assert all(c.status == 200 for c in env.fake.ready_calls)
        # a wrong secret is refused and pins nothing
        status, body = await env.call(
            "POST",
            "/internal/instance-ready",
            {"Authorization": "Bearer " + credentials.new_secret()},
            {"server_name": rows[0]["name"], "host_key": "ssh-ed25519 AAAA"},
        )
        assert status == 401 and body["error"]["code"] == "unauthenticated"
        pinned = await env.pool.fetchval(
            "SELECT ssh_host_key FROM server_pool WHERE id = $1", rows[0]["id"]
        )
        assert pinned == rows[0]["ssh_host_key"]


async def test_an_instance_lifecycle_over_ssh(database: str, tmp_path: Path) -> None:
    async with fleet_env(database, tmp_path) as env:
        await available(env, 2)
        alice = await env.user()
        status, body = await env.call(
            "POST",
            "/api/instances",
            alice,
            {
                "channel_type": "telegram",
                "persona_template": "dev",
                "soul_md": "Answer in haiku.",
                "channel_config": {"bot_token": BOT_TOKEN, "allow_from": ["42"]},
            },
        )
        assert status == 201, body
        assert body["status"] == "provisioning" and BOT_TOKEN not in json.dumps(body)
        iid = body["id"]
        row = await active(env, iid)
        stored = await env.pool.fetchval(
            "SELECT channel_secret_enc FROM instances WHERE id = $1", uuid.UUID(iid)
        )
        assert BOT_TOKEN.encode() not in bytes(stored)
        server = env.server_of(row["hetzner_server_id"])
        home = server.ssh.home
        config = json.loads((home / ".openclaw/openclaw.json").read_text())
        assert config["gateway"]["mode"] == "local"
        assert BOT_TOKEN not in (home / ".openclaw/openclaw.json").read_text()
        secrets_file = home / ".openclaw/secrets.json"
        assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
        secret_doc = json.loads(secrets_file.read_text())
        assert secret_doc["channels"]["telegram"]["botToken"] == BOT_TOKEN
        proxy_secret = secret_doc["models"]["providers"]["blitzclaw"]["headers"][
            "X-BlitzClaw-Secret"
        ]
        assert credentials.verify_secret(proxy_secret, row["secret_hash"])
        soul = (home / ".openclaw/workspace/SOUL.md").read_text()
        assert "technical assistant" in soul and "Answer in haiku." in soul
        assert server.ssh.gateway_state == "active"
        # What was deployed over SSH is accepted by the pinned OpenClaw release itself.
        openclaw = await asyncio.to_thread(ensure_openclaw)
        code, verdict = await asyncio.to_thread(openclaw.run_json, home, "config", "validate")
        assert code == 0 and verdict["valid"] is True, verdict
        code, audit = await asyncio.to_thread(
            openclaw.run_json, home, "secrets", "audit", "--check"
        )
        assert code == 0, audit

        status, body = await env.call("GET", f"/api/instances/{iid}", alice)
        assert status == 200 and body["status"] == "active" and "usage_24h" in body
        assert body["setup_text"].startswith("Open https://t.me/alice_assistant_bot")
        status, body = await env.call("GET", "/api/instances", alice)
        assert [i["id"] for i in body["instances"]] == [iid]

        restarts = server.ssh.commands.count("sudo -n systemctl restart openclaw-gateway.service")
        status, _ = await env.call("POST", f"/api/instances/{iid}/restart", alice)
        assert status == 202

        async def restarted() -> bool:
            cmds = server.ssh.commands
            done = cmds.count("sudo -n systemctl restart openclaw-gateway.service") > restarts
            jobs = await env.pool.fetchval(
                "SELECT count(*) FROM instance_jobs WHERE status IN ('queued', 'running')"
            )
            return done and jobs == 0

        await until(restarted)
        await active(env, iid)

        status, _ = await env.call(
            "POST", f"/api/instances/{iid}/configure", alice, {"soul_md": "Be brief."}
        )
        assert status == 202

        async def reconfigured() -> bool:
            path = home / ".openclaw/workspace/SOUL.md"
            return path.exists() and "Be brief." in path.read_text()

        await until(reconfigured)
        row2 = await active(env, iid)
        assert bytes(row2["secret_hash"]) != bytes(row["secret_hash"])  # rotated per deploy
        # Active three times (deploy, restart, configure); told how to start once, in the
        # channel plugin's own words.
        welcome = await env.pool.fetch(
            "SELECT period, facts FROM notifications WHERE kind = 'instance_created' "
            "AND user_id = $1",
            row["user_id"],
        )
        assert [w["period"] for w in welcome] == [f"instance:{iid}"]
        facts = welcome[0]["facts"]
        facts = facts if isinstance(facts, dict) else json.loads(facts)
        assert facts["instance_name"] == "@alice_assistant_bot"
        assert "https://t.me/alice_assistant_bot" in facts["setup_text"]

        status, text = await env.call("GET", f"/api/instances/{iid}/logs?lines=5", alice)
        assert status == 200 and "Started openclaw-gateway.service" in text
        # follow streams: new journal lines arrive while the response is open
        async with env.http.get(
            env.api + f"/api/instances/{iid}/logs?lines=1&follow=1", headers=alice
        ) as resp:
            assert resp.status == 200
            await resp.content.readline()
            server.ssh.log("a line written while following", "openclaw[1]")
            async with asyncio.timeout(10):
                while b"while following" not in await resp.content.readline():
                    pass

        old_key = server.ssh.host_key_line
        status, _ = await env.call("DELETE", f"/api/instances/{iid}", alice)
        assert status == 202
        status, _ = await env.call("GET", f"/api/instances/{iid}", alice)
        assert status == 404

        async def back_in_pool() -> asyncpg.Record | None:
            return await env.pool.fetchrow(
                "SELECT * FROM server_pool WHERE id = $1 AND status = 'available'",
                row["server_id"],
            )

        again = await until(back_in_pool)
        assert env.fake.rebuilt == 1
        assert not (home / ".openclaw").exists()  # the disk was wiped before reuse
        assert again["ssh_host_key"] == server.ssh.host_key_line != old_key
        assert (await env.instance(iid))["status"] == "deleted"


async def test_two_users_at_once_never_share_a_server(database: str, tmp_path: Path) -> None:
    async with fleet_env(database, tmp_path, min_available=1, max_size=4) as env:
        await available(env, 1)
        users = [await env.user() for _ in range(4)]
        body = {"channel_type": "whatsapp", "persona_template": "assistant"}
        results = await asyncio.gather(
            *(env.call("POST", "/api/instances", u, body) for u in users)
        )
        assert [s for s, _ in results] == [201] * 4
        ids = [b["id"] for _, b in results]
        assert sorted(b["status"] for _, b in results).count("provisioning") == 1
        for iid in ids:  # the waiting ones get servers as the pool manager provisions them
            await active(env, iid)
        servers = await env.pool.fetch(
            "SELECT server_id FROM instances WHERE id = ANY($1::uuid[])", ids
        )
        assert len({r["server_id"] for r in servers}) == 4


async def test_scoping_and_validation(database: str, tmp_path: Path) -> None:
    async with fleet_env(database, tmp_path) as env:
        await available(env, 1)
        alice, mallory = await env.user(), await env.user()
        status, created = await env.call(
            "POST",
            "/api/instances",
            alice,
            {"channel_type": "whatsapp", "persona_template": "creative"},
        )
        assert status == 201
        iid = created["id"]
        for method, path, payload in [
            ("GET", f"/api/instances/{iid}", None),
            ("POST", f"/api/instances/{iid}/restart", None),
            ("POST", f"/api/instances/{iid}/configure", {"soul_md": "mine now"}),
            ("GET", f"/api/instances/{iid}/logs?lines=5", None),
            ("DELETE", f"/api/instances/{iid}", None),
            ("GET", "/api/instances/not-a-uuid", None),
        ]:
            status, _ = await env.call(method, path, mallory, payload)
            assert status == 404, (method, path)
        status, body = await env.call("GET", "/api/instances", mallory)
        assert body["instances"] == []

        good = {
            "channel_type": "telegram",
            "persona_template": "assistant",
            "channel_config": {"bot_token": BOT_TOKEN},
        }
        for change, field in [
            ({"persona_template": "pirate"}, "persona_template"),
            ({"channel_type": "carrier-pigeon"}, "channel_type"),
            ({"soul_md": "x" * 20_001}, "soul_md"),
            ({"persona_template": "custom", "soul_md": "x" * 20_001}, "soul_md"),
            ({"channel_config": {"bot_token": "not-a-token"}}, "channel_config.bot_token"),
            ({"channel_config": {"allow_from": "42"}}, "channel_config.allow_from"),
            ({"channel_config": {"bot_tokn": BOT_TOKEN}}, "channel_config.bot_tokn"),
        ]:
            status, body = await env.call("POST", "/api/instances", mallory, {**good, **change})
            assert status == 422 and body["error"]["field"] == field, (change, body)
        status, body = await env.call(
            "POST", f"/api/instances/{iid}/configure", alice, {"soul_md": "y" * 20_001}
        )
        assert status == 422 and body["error"]["field"] == "soul_md"
        count = await env.pool.fetchval("SELECT count(*) FROM instances")
        assert count == 1  # bad input changed nothing

        broke = await env.user(credit=0)
        status, body = await env.call("POST", "/api/instances", broke, good)
        assert status == 402
        for _ in range(2):
            status, _ = await env.call("POST", "/api/instances", alice, good)
            assert status == 201
        status, body = await env.call("POST", "/api/instances", alice, good)
        assert status == 409 and body["error"]["code"] == "instance_limit"


async def test_a_server_that_never_calls_back_is_deleted(database: str, tmp_path: Path) -> None:
    dead_port = free_port()  # nothing listens: every ready call fails
    async with fleet_env(
        database,
        tmp_path,
        min_available=1,
        stuck_after=0.5,
        ready_url=f"http://127.0.0.1:{dead_port}/internal/instance-ready",
    ) as env:

        async def deleted() -> list:
            # The fake counts the DELETE before our row says so: wait for both.
            if env.fake.deleted < 1:
                return []
            return await env.pool.fetch("SELECT * FROM server_pool WHERE status = 'gone'")

        gone = await until(deleted)
        assert gone and all(r["hetzner_server_id"] not in env.fake.servers for r in gone)
        assert not await env.pool.fetchval(
            "SELECT count(*) FROM server_pool WHERE status = 'available'"
        )


@pytest.mark.parametrize("n", [1])
async def test_unknown_servers_are_deleted_and_vanished_ones_marked(
    database: str, tmp_path: Path, n: int
) -> None:
    async with fleet_env(database, tmp_path, min_available=n) as env:
        rows = await available(env, n)
        # a server with our label the table does not know
        stray = await env.daemon.context.provider.create(
            name="bc-stray", user_data="#cloud-config\n", labels={}
        )
        # a known server deleted behind our back
        await env.daemon.context.provider.delete(rows[0]["hetzner_server_id"])

        async def reconciled() -> bool:
            status = await env.pool.fetchval(
                "SELECT status FROM server_pool WHERE id = $1", rows[0]["id"]
            )
            return stray.provider_id not in env.fake.servers and status == "gone"

        await until(reconciled)
