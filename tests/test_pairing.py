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
from test_fleet import BOT_TOKEN, active, available, fleet_env

from blitzclawd.fleet import remote


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
