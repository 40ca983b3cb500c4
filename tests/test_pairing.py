"""DM pairing without SSH (issue 13): a stranger who messages a `pairing`-policy bot gets a code;
the owner lists the pending requests and approves one through the API, which runs the pinned
release's own `openclaw pairing` commands on the instance's server — over real SSH against the
fake server here, and the release itself answers the same commands in the second test."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sqlite3
import uuid
from pathlib import Path

from openclaw_tool import ensure_openclaw
from test_fleet import BOT_TOKEN, active, available, fleet_env, until

from blitzclawd.fleet import remote
from blitzclawd.fleet.personas import ABOUT


async def test_the_owner_approves_a_pairing_code_over_the_api(
    database: str, tmp_path: Path
) -> None:
    async with fleet_env(database, tmp_path) as env:
        await available(env, 1)
        alice, bob = await env.user(), await env.user()
        status, body = await env.call(
            "POST",
            "/api/instances",
            alice,
            {
                "channel_type": "telegram",
                "persona_template": "assistant",
                "channel_config": {"bot_token": BOT_TOKEN},  # no allowlist: pairing
            },
        )
        assert status == 201, body
        iid = body["id"]
        row = await active(env, iid)
        server = env.server_of(row["hetzner_server_id"]).ssh
        base = f"/api/instances/{iid}/pairing"

        status, body = await env.call("GET", base, alice)
        assert status == 200 and body == {"requests": []}
        # Alice messages her bot; it answers with a code and waits.
        server.request_pairing("telegram", "555000111", "ABCD2345", username="alice", firstName="A")
        status, body = await env.call("GET", base, alice)
        assert status == 200
        assert body["requests"] == [
            {
                "code": "ABCD2345",
                "sender_id": "555000111",
                "username": "alice",
                "name": "A",
                "requested_at": body["requests"][0]["requested_at"],
            }
        ]
        # Someone else's instance looks missing; a bad code is named; an unknown one is a 404.
        assert (await env.call("GET", base, bob))[0] == 404
        assert (await env.call("POST", base + "/approve", bob, {"code": "ABCD2345"}))[0] == 404
        status, body = await env.call("POST", base + "/approve", alice, {"code": "AB;rm -rf"})
        assert status == 422 and body["error"]["field"] == "code"
        status, body = await env.call("POST", base + "/approve", alice, {"code": "ZZZZ2345"})
        assert status == 404 and body["error"]["field"] == "code"
        assert server.pairing_allowed == {}

        secret_before = (await env.instance(iid))["channel_secret_enc"]
        status, body = await env.call("POST", base + "/approve", alice, {"code": " abcd2345 "})
        assert status == 200 and body["approved"]["sender_id"] == "555000111", body
        assert server.pairing_allowed == {"telegram": ["555000111"]}
        assert "openclaw pairing approve telegram ABCD2345" in server.commands
        assert (await env.call("GET", base, alice))[1] == {"requests": []}
        # The token was never sent again, nor the bot reconfigured.
        assert (await env.instance(iid))["channel_secret_enc"] == secret_before
        assert not any(BOT_TOKEN in c for c in server.commands)
        assert not await env.pool.fetchval(
            "SELECT count(*) FROM instance_jobs WHERE instance_id = $1 AND kind = 'configure'",
            uuid.UUID(iid),
        )


async def test_the_pinned_release_answers_the_pairing_commands_we_run(tmp_path: Path) -> None:
    """`openclaw pairing list telegram --json` and `approve telegram CODE`, run by the real CLI
    (offline) on a state where a stranger asked: the listing parses, the approval allows them."""
    openclaw = await asyncio.to_thread(ensure_openclaw)
    state = tmp_path / ".openclaw"
    state.mkdir()
    config = {
        "gateway": {"mode": "local"},
        "channels": {"telegram": {"enabled": True, "botToken": BOT_TOKEN, "dmPolicy": "pairing"}},
    }
    (state / "openclaw.json").write_text(json.dumps(config))
    done = await asyncio.to_thread(openclaw.run, tmp_path, "pairing", "list", "telegram", "--json")
    assert done.returncode == 0 and remote.parse_pairing_list(done.stdout) == []
    # The gateway writes a stranger's request here; we write it the same way.
    now = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
    with sqlite3.connect(state / "state" / "openclaw.sqlite") as db:
        db.execute(
            "INSERT INTO channel_pairing_requests (channel_key, account_id, request_id, code, "
            "created_at, last_seen_at, meta_json) VALUES (?, ?, ?, ?, ?, ?, ?)",
            ("telegram", "default", "555000111", "ABCD2345", now, now, '{"username":"alice"}'),
        )
    done = await asyncio.to_thread(openclaw.run, tmp_path, "pairing", "list", "telegram", "--json")
    (request,) = remote.parse_pairing_list(done.stdout)
    assert (request["id"], request["code"], request["meta"]["username"]) == (
        "555000111",
        "ABCD2345",
        "alice",
    )
    assert request["createdAt"] == now
    done = await asyncio.to_thread(
        openclaw.run, tmp_path, "pairing", "approve", "telegram", "ABCD2345"
    )
    assert done.returncode == 0, done.stderr
    assert "Approved telegram sender 555000111." in done.stdout
    with sqlite3.connect(state / "state" / "openclaw.sqlite") as db:
        allowed = db.execute("SELECT entry FROM channel_pairing_allow_entries").fetchall()
    assert allowed == [("555000111",)]


async def test_create_first_connect_the_bot_then_pair_the_owner(
    database: str, tmp_path: Path
) -> None:
    """The spec's order: create, then connect the bot (the instance waits for it without a
    server); the owner pairs through the API and stays allowed, and the owner, across later
    configures, with the bot token never sent again."""
    async with fleet_env(database, tmp_path) as env:
        await available(env, 1)
        alice = await env.user()
        status, body = await env.call(
            "POST", "/api/instances", alice, {"channel_type": "telegram", "persona_template": "dev"}
        )
        assert status == 201 and body["status"] == "waiting_for_channel", body
        assert "@BotFather" in body["setup_text"]
        iid = body["id"]
        row = await env.instance(iid)
        assert row["server_id"] is None and row["channel_secret_enc"] is None
        # A new SOUL.md meanwhile is kept, and does not start it without its bot.
        status, body = await env.call(
            "POST", f"/api/instances/{iid}/configure", alice, {"soul_md": "Be brief."}
        )
        assert status == 202 and body["queued"] is None, body
        row = await env.instance(iid)
        assert (row["status"], row["server_id"], row["soul_md"]) == (
            "waiting_for_channel",
            None,
            "Be brief.",
        )
        assert (await env.call("POST", f"/api/instances/{iid}/restart", alice))[0] == 409
        connect = f"/api/instances/{iid}/channel"
        status, body = await env.call("POST", connect, alice, {"channel_config": {}})
        assert status == 422 and body["error"]["field"] == "channel_config.bot_token", body
        assert (await env.instance(iid))["status"] == "waiting_for_channel"

        status, body = await env.call(
            "POST", connect, alice, {"channel_config": {"bot_token": BOT_TOKEN}}
        )
        assert status == 202 and body["queued"] == "deploy", body
        assert body["channel_config"]["bot_link"] == "https://t.me/alice_assistant_bot"
        assert "pairing code" in body["setup_text"]
        row = await active(env, iid)
        server = env.server_of(row["hetzner_server_id"]).ssh
        assert server.gateway_config["channels"]["telegram"]["dmPolicy"] == "pairing"
        secret_before = row["channel_secret_enc"]

        # The bot's profile follows the persona (its name stays the user's, the command menu
        # OpenClaw's own).
        async def profiled() -> dict[str, str] | None:
            profile = env.telegram.profiles.get(BOT_TOKEN, {})
            return profile if len(profile) == 2 else None

        profile = await until(profiled)
        assert profile["short_description"] == ABOUT["dev"]
        assert profile["description"].startswith(ABOUT["dev"])

        server.request_pairing("telegram", "555000111", "ABCD2345", username="alice")
        status, body = await env.call(
            "POST", f"/api/instances/{iid}/telegram/pairing/approve", alice, {"code": "ABCD2345"}
        )
        assert status == 200, body
        status, body = await env.call("GET", f"/api/instances/{iid}", alice)
        assert body["channel_config"]["allow_from"] == ["555000111"]

        # A later change rewrites openclaw.json: the owner is still allowed, and still the owner.
        status, body = await env.call(
            "POST", f"/api/instances/{iid}/configure", alice, {"soul_md": "Answer briefly."}
        )
        assert status == 202 and body["queued"] == "configure", body

        async def rewritten() -> bool:
            cfg = server.gateway_config or {}
            return cfg.get("channels", {}).get("telegram", {}).get("allowFrom") == ["555000111"]

        await until(rewritten)
        cfg = server.gateway_config
        assert cfg["channels"]["telegram"]["dmPolicy"] == "allowlist"
        assert cfg["commands"] == {"ownerAllowFrom": ["telegram:555000111"]}
        assert (await env.instance(iid))["channel_secret_enc"] == secret_before
        assert not any(BOT_TOKEN in c for c in server.commands)
        # The Telegram routes say so for the bot too.
        status, body = await env.call("GET", f"/api/instances/{iid}/telegram/bot", alice)
        assert status == 200 and body["allow_from"] == ["555000111"], body
