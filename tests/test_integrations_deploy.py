"""A Google account on the assistant's server (issue 18): attached, the instance's configure job
hands the OAuth client and the user's refresh token to gog (the pinned OpenClaw's gog skill) on
stdin, gog's keyring password goes into the 0600 gateway.env, openclaw.json turns the skill on
for that account (validated by the pinned release); refreshes keep the gateway running unless
Google rotated the refresh token; detach, disconnect (revoked at Google) and a broken grant take
it all off the server. Real daemon, PostgreSQL and SSH; fake Hetzner servers (with a fake gog)
and the fake Google."""

from __future__ import annotations

import asyncio
import json
import stat
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from cryptography.fernet import InvalidToken
from openclaw_tool import ensure_openclaw
from test_fleet import FleetEnv, active, available, create_active, fleet_env, until

from blitzclawd.fleet import google_skill
from blitzclawd.integrations.google import refresh_token_context
from blitzclawd.testing.fake_google import FakeGoogle

EMAIL = "ada@gmail.test"


@asynccontextmanager
async def google_fleet(database: str, tmp_path: Path) -> AsyncIterator[tuple[FleetEnv, FakeGoogle]]:
    async with FakeGoogle() as google:
        sections = {
            "google": {
                "client_id": google.client_id,
                "authorization_url": google.authorization_url,
                "token_url": google.token_url,
                "revoke_url": google.revoke_url,
                "userinfo_url": google.userinfo_url,
                "refresh_interval": 0.05,
            },
            "daemon": {"heartbeat_interval": 0.1},
        }
        secrets = {"google_client_secret": google.client_secret}
        async with fleet_env(database, tmp_path, sections=sections, secrets=secrets) as env:
            yield env, google


async def active_instance(env: FleetEnv, user: dict[str, str]) -> tuple[str, Any]:
    await available(env, 1)
    instance_id, row = await create_active(env, user)
    return instance_id, env.server_of(row["hetzner_server_id"]).ssh


async def connect(env: FleetEnv, google: FakeGoogle, user: dict[str, str]) -> dict[str, Any]:
    """The API form of the consent: the consent URL approved at Google, the code handed back."""
    status, body = await env.call("POST", "/api/integrations/google/connect", user)
    assert status == 200, body
    location = await google.approve(body["url"], EMAIL)
    answer = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
    status, body = await env.call(
        "POST",
        "/api/integrations/google/callback",
        user,
        {"state": answer["state"], "code": answer["code"]},
    )
    assert status == 200, body
    return body


async def change(
    env: FleetEnv, user: dict[str, str], instance_id: str, integration: dict[str, Any], what: str
) -> None:
    """Attach or detach the integration (it changes: 200, changed)."""
    status, body = await env.call(
        "POST",
        f"/api/instances/{instance_id}/integrations/{what}",
        user,
        {"integration_id": integration["id"]},
    )
    assert status == 200 and body["changed"] is True, body


async def settled(env: FleetEnv, instance_id: str) -> None:
    """Every job of the instance done, and it is active again."""

    async def check() -> bool:
        waiting = await env.pool.fetchval(
            "SELECT count(*) FROM instance_jobs WHERE instance_id = $1 "
            "AND status IN ('queued', 'running')",
            uuid.UUID(instance_id),
        )
        return waiting == 0

    await until(check)
    await active(env, instance_id)


async def configure_jobs(env: FleetEnv, instance_id: str) -> int:
    return await env.pool.fetchval(
        "SELECT count(*) FROM instance_jobs WHERE instance_id = $1 AND kind = 'configure'",
        uuid.UUID(instance_id),
    )


def gog_entry(home: Path) -> dict[str, Any]:
    config = json.loads((home / ".openclaw/openclaw.json").read_text())
    return config["skills"]["entries"]["gog"]


def nothing_of_google(server: Any) -> None:
    home = server.home
    assert gog_entry(home) == {"enabled": False}
    assert not (home / google_skill.ENV_FILE).exists()
    for folder in google_skill.GOG_STATE:
        assert not (home / folder).exists(), folder
    assert server.gog.accounts() == []


def every_file(home: Path) -> bytes:
    return b"\n".join(p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file())


async def test_an_attached_google_account_reaches_gog_on_the_server_and_leaves_it(
    database: str, tmp_path: Path
) -> None:
    async with google_fleet(database, tmp_path) as (env, google):
        ada = await env.user()
        instance_id, server = await active_instance(env, ada)
        # Without an account the skill is off (it would send the agent into gog's setup).
        nothing_of_google(server)
        integration = await connect(env, google, ada)
        (refresh_token,) = [t for t in google.issued if t.startswith("1//")]

        await change(env, ada, instance_id, integration, "attach")
        await until(lambda: _has_accounts(server))
        await settled(env, instance_id)

        home = server.home
        env_file = home / google_skill.ENV_FILE
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
        variables = server.gog.env()
        assert variables["GOG_KEYRING_BACKEND"] == "file"
        password = variables["GOG_KEYRING_PASSWORD"]
        assert len(password) >= 32
        (account,) = server.gog.accounts()
        assert account["email"] == EMAIL and account["refresh_token"] == refresh_token
        assert account["services"] == ["calendar", "gmail"]
        assert server.gog.client_id() == google.client_id
        secret = server.gog.read_item("client_secret:default", password)
        assert secret == {"client_secret": google.client_secret}
        for path in server.gog.items().values():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert gog_entry(home) == {
            "enabled": True,
            "env": {"GOG_ACCOUNT": EMAIL, "GOG_READONLY": "1"},
        }
        # The grant and our client secret: in gog's encrypted keyring only, never in a command
        # line (ps, logs) or a plain file.
        plain = every_file(home)
        for value in (refresh_token, google.client_secret):
            assert value.encode() not in plain
            assert not any(value in command for command in server.commands)
        assert all(run[0] == "--no-input" for run in server.gog.runs)
        # The pinned OpenClaw accepts what was deployed.
        openclaw = await asyncio.to_thread(ensure_openclaw)
        code, verdict = await asyncio.to_thread(openclaw.run_json, home, "config", "validate")
        assert code == 0 and verdict["valid"] is True and verdict["warnings"] == [], verdict
        code, audit = await asyncio.to_thread(
            openclaw.run_json, home, "secrets", "audit", "--check"
        )
        assert code == 0, audit

        # A refresh before expiry keeps the server as it is (gog refreshes by itself)...
        jobs = await configure_jobs(env, instance_id)
        refreshed = await _refreshed(env, google)
        assert await configure_jobs(env, instance_id) == jobs and refreshed
        # ...unless Google rotated the refresh token: the new one goes to the server.
        google.rotate_refresh_tokens = True
        await _refreshed(env, google)
        google.rotate_refresh_tokens = False
        newest = google.issued[-1]
        await until(lambda: _holds_token(server, newest))
        await settled(env, instance_id)
        row = await env.pool.fetchrow("SELECT * FROM user_integrations")
        keyring = env.daemon.context.keyring()
        stored = keyring.decrypt_text(row["refresh_token_enc"], refresh_token_context(row["id"]))
        assert stored == newest

        # Detached: gone from the server; attached again: back, under a new keyring password.
        await change(env, ada, instance_id, integration, "detach")
        await until(lambda: _no_accounts(server))
        await settled(env, instance_id)
        nothing_of_google(server)
        await change(env, ada, instance_id, integration, "attach")
        await until(lambda: _has_accounts(server))
        await settled(env, instance_id)
        assert server.gog.env()["GOG_KEYRING_PASSWORD"] != password

        # Disconnected: revoked at Google, deleted here, and taken off the server.
        status, body = await env.call("DELETE", "/api/integrations/google", ada)
        assert status == 200, body
        assert not google.token_is_live(newest)
        assert await env.pool.fetchval("SELECT count(*) FROM user_integrations") == 0
        await until(lambda: _no_accounts(server))
        await settled(env, instance_id)
        nothing_of_google(server)


async def test_a_broken_grant_is_taken_off_the_server(database: str, tmp_path: Path) -> None:
    async with google_fleet(database, tmp_path) as (env, google):
        ada = await env.user()
        instance_id, server = await active_instance(env, ada)
        integration = await connect(env, google, ada)
        await change(env, ada, instance_id, integration, "attach")
        await until(lambda: _has_accounts(server))
        await settled(env, instance_id)
        google.revoke_grant(EMAIL)  # the user removed the app in their Google account
        await env.pool.execute("UPDATE user_integrations SET expires_at = now()")
        await until(lambda: _no_accounts(server))
        await settled(env, instance_id)
        nothing_of_google(server)
        status = await env.pool.fetchval("SELECT status FROM user_integrations")
        assert status == "broken"


def _accounts(server: Any) -> list[dict[str, Any]]:
    """What gog holds now ([] while a configure job is still writing it)."""
    try:
        return server.gog.accounts()
    except (ValueError, InvalidToken, FileNotFoundError):
        return []


async def _has_accounts(server: Any) -> bool:
    return bool(_accounts(server))


async def _no_accounts(server: Any) -> bool:
    return not server.gog.items() and not (server.home / google_skill.ENV_FILE).exists()


async def _holds_token(server: Any, token: str) -> bool:
    return any(a["refresh_token"] == token for a in _accounts(server))


async def _refreshed(env: FleetEnv, google: FakeGoogle) -> bool:
    """The access token made due (Google let it lapse), then refreshed by the janitor."""
    before = await env.pool.fetchval("SELECT refreshed_at FROM user_integrations")
    google.expire_access_tokens()
    await env.pool.execute("UPDATE user_integrations SET expires_at = now()")

    async def check() -> bool:
        after = await env.pool.fetchval("SELECT refreshed_at FROM user_integrations")
        return after > before

    return await until(check)


async def test_a_server_without_gog_gets_the_assistant_without_google(
    database: str, tmp_path: Path
) -> None:
    """A pool server booted before gog was in the image: attaching fails to give gog the
    account, and the configure job deploys the assistant without Google (never no assistant:
    its proxy secret and config are written as usual, the skill off)."""
    async with google_fleet(database, tmp_path) as (env, google):
        ada = await env.user()
        instance_id, server = await active_instance(env, ada)
        server.gog_installed = False
        integration = await connect(env, google, ada)
        jobs = await configure_jobs(env, instance_id)
        await change(env, ada, instance_id, integration, "attach")

        async def configured() -> bool:
            done = await env.pool.fetchval(
                "SELECT count(*) FROM instance_jobs WHERE instance_id = $1 "
                "AND kind = 'configure' AND status = 'done'",
                uuid.UUID(instance_id),
            )
            return done > jobs - 1 and done >= 1

        await until(configured)
        await settled(env, instance_id)
        nothing_of_google(server)
        failed = await env.pool.fetchval(
            "SELECT count(*) FROM instance_jobs WHERE status = 'failed' OR attempts > 1"
        )
        assert failed == 0
