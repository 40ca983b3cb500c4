"""A daemon SIGKILLed while it configures an instance: its successor resumes the durable job."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import time
import uuid
from pathlib import Path

import aiohttp
import asyncpg
import asyncssh

from blitzclawd.http.auth import hash_key, new_api_key
from blitzclawd.testing import seed
from blitzclawd.testing.daemon_process import DaemonProcess
from blitzclawd.testing.fake_hetzner import FakeHetzner
from blitzclawd.testing.fake_telegram import FakeTelegram

KEY_NAME = "blitzclaw-provisioner"
BOT_TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"


# Daemons sharing a database share the at-rest key (the encryption_keys secret).
ENCRYPTION_KEYS = "k1:" + base64.b64encode(os.urandom(32)).decode()


def fleet_daemon(
    tmp_path: Path,
    database: str,
    fake: FakeHetzner,
    key: asyncssh.SSHKey,
    name: str,
    telegram: FakeTelegram,
) -> DaemonProcess:
    d = DaemonProcess(
        tmp_path,
        database_url=database,
        name=name,
        env={
            "BLITZCLAW_HETZNER_API_TOKEN": fake.token,
            "BLITZCLAW_SSH_PRIVATE_KEY": key.export_private_key("openssh").decode(),
            "BLITZCLAW_ENCRYPTION_KEYS": ENCRYPTION_KEYS,
        },
    )
    with d.config_path.open("a") as f:  # the ready URL names this daemon's own API port
        f.write(
            "[fleet]\n"
            f'hetzner_api_endpoint = "{fake.base_url}/v1"\n'
            "hetzner_poll_interval = 0.01\n"
            f"ssh_port = {fake.ssh_port}\n"
            "min_available = 1\nmax_size = 4\npool_interval = 0.3\n"
            f'ready_url = "http://127.0.0.1:{d.api_port}/internal/instance-ready"\n'
            "job_poll = 0.1\nready_timeout = 30.0\nssh_connect_timeout = 5.0\n"
            "[supervisor]\nsingleton_poll = 0.2\n"
            f'[telegram]\napi_url = "{telegram.base_url}"\n'
        )
    return d


async def until(check, deadline: float = 30.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def test_a_killed_daemon_s_configuration_job_is_resumed(
    database: str, tmp_path: Path
) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    # The gateway takes 2 s to come up after each restart: long enough to kill mid-deploy.
    async with (
        FakeHetzner(root=tmp_path / "hetzner", rate_limit=10**6, gateway_start_delay=2.0) as fake,
        FakeTelegram() as telegram,
    ):
        telegram.add_bot("resume_test_bot", token=BOT_TOKEN)
        fake.add_ssh_key(KEY_NAME, key.export_public_key().decode())
        pool = await asyncpg.create_pool(database, min_size=1, max_size=2)
        first = fleet_daemon(tmp_path, database, fake, key, "first", telegram)
        second = fleet_daemon(tmp_path, database, fake, key, "second", telegram)
        try:
            user = await seed.create_user(pool)
            await seed.credit(pool, user, 50_000_000)
            api_key = new_api_key()
            await pool.execute(
                "INSERT INTO api_keys (user_id, name, prefix, key_hash) VALUES ($1, 't', $2, $3)",
                uuid.UUID(user),
                api_key[:8],
                hash_key(api_key),
            )
            await first.start()
            async with aiohttp.ClientSession() as http:
                await first.wait_ready(http)
                await until(
                    lambda: pool.fetchval(
                        "SELECT count(*) FROM server_pool WHERE status = 'available'"
                    )
                )
                async with http.post(
                    first.api_url + "/api/instances",
                    json={
                        "channel_type": "telegram",
                        "persona_template": "assistant",
                        "channel_config": {"bot_token": BOT_TOKEN},
                    },
                    headers={"Authorization": f"Bearer {api_key}"},
                ) as resp:
                    assert resp.status in (200, 201, 202), await resp.text()
                    instance_id = uuid.UUID((await resp.json())["id"])
                # Wait until the deploy is under way (config written, gateway restarting) ...
                await until(
                    lambda: pool.fetchval(
                        "SELECT count(*) FROM instance_jobs WHERE instance_id = $1 "
                        "AND status = 'running'",
                        instance_id,
                    )
                )
                first.signal(signal.SIGKILL)  # ... and kill the daemon doing it.
                await first.wait_exit(10)
                assert (
                    await pool.fetchval("SELECT status FROM instances WHERE id = $1", instance_id)
                    != "active"
                )
                await second.start()
                await second.wait_ready(http)

                async def active() -> bool:
                    row = await pool.fetchrow(
                        "SELECT status, status_reason FROM instances WHERE id = $1", instance_id
                    )
                    assert row["status"] != "error", row["status_reason"]
                    return row["status"] == "active"

                await until(active, deadline=60)

                async def deploys() -> list | None:
                    jobs = await pool.fetch(
                        "SELECT status, attempts FROM instance_jobs WHERE instance_id = $1 "
                        "AND kind = 'deploy'",
                        instance_id,
                    )
                    # Active comes a moment before the job's own row says done.
                    return jobs if all(j["status"] != "running" for j in jobs) else None

                jobs = await until(deploys)
            assert [j["status"] for j in jobs] == ["done"] and jobs[0]["attempts"] >= 2
        finally:
            await first.stop()
            await second.stop()
            await pool.close()
