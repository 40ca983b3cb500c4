"""Draining the server pool (issue 14), end to end with a real daemon, FakeHetzner servers and
real SSH: POST /api/admin/pool/drain deletes ready, unassigned servers through the pool manager,
by location and by count, never an assigned one, and holds the pool — no spare is made again,
across a restart of the pool manager, while a user waiting for a server still gets one — until
POST /api/admin/pool/resume. Bad input is a 422 naming the field and changes nothing; both
actions are audited; to a user both routes are a 404."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
from test_fleet import ADMIN_KEY, BOT_TOKEN, FleetEnv, active, available, fleet_env, until

from blitzclawd.runtime.messages import PoolCheck

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
DRAIN, RESUME = "/api/admin/pool/drain", "/api/admin/pool/resume"


async def servers(env: FleetEnv, status: str) -> list[asyncpg.Record]:
    return await env.pool.fetch(
        """SELECT name, location, hetzner_server_id FROM server_pool WHERE status = $1
           ORDER BY created_at""",
        status,
    )


async def a_pass(env: FleetEnv) -> Any:
    """One pool pass, run now by the pool manager; its report (what it created and deleted)."""
    pool_manager = env.daemon.context.actors.pool_manager

    async def here() -> bool:  # back after a restart: its lock taken again
        return pool_manager.here

    await until(here)
    return await pool_manager.ask(PoolCheck("test"), timeout=30)


async def new_instance(env: FleetEnv, user: dict[str, str]) -> str:
    status, body = await env.call(
        "POST",
        "/api/instances",
        user,
        {
            "channel_type": "telegram",
            "persona_template": "assistant",
            "channel_config": {"bot_token": BOT_TOKEN, "allow_from": ["42"]},
        },
    )
    assert status == 201, body
    return body["id"]


async def test_drain_holds_the_pool_until_resumed(database: str, tmp_path: Path) -> None:
    async with fleet_env(database, tmp_path) as env:
        await available(env, 2)
        alice = await env.user()
        iid = await new_instance(env, alice)
        kept = (await active(env, iid))["hetzner_server_id"]
        await available(env, 2)  # refilled after alice's claim

        for path in (DRAIN, RESUME):
            assert (await env.call("POST", path, alice, {}))[0] == 404, path
            assert (await env.call("POST", path, {}, {}))[0] == 401, path

        # Bad input: a 422 naming the field; nothing deleted, nothing held, nothing audited.
        ready = await servers(env, "available")
        for bad, field in (
            ({"count": 0}, "count"),
            ({"count": "1"}, "count"),
            ({"count": 1.0}, "count"),
            ({"count": True}, "count"),
            ({"count": 1001}, "count"),
            ({"count": None}, "count"),
            ({"location": 7}, "location"),
            ({"location": ""}, "location"),
            ({"location": "FSN 1"}, "location"),
            ({"cuont": 1}, "cuont"),  # a misspelt count must not drain every server
        ):
            status, body = await env.call("POST", DRAIN, ADMIN, bad)
            assert status == 422 and body["error"]["field"] == field, (bad, body)
        status, body = await env.call("POST", DRAIN, ADMIN, [1])
        assert status == 400, body
        assert await servers(env, "available") == ready
        status, body = await env.call("GET", "/api/admin/pool", ADMIN)
        assert status == 200 and body["held"] is False and body["hold"] is None, body
        assert (await env.call("GET", "/api/admin/audit", ADMIN))[1]["actions"] == []

        # A third server, in nbg1 (fsn1 has no capacity now), drained by its location alone.
        env.fake.out_of_capacity.add("fsn1")
        status, body = await env.call("POST", "/api/admin/pool/provision", ADMIN, {"count": 1})
        assert status == 202 and body["created"] == 1, body
        ready = await available(env, 3)
        (nbg,) = [r for r in ready if r["location"] == "nbg1"]
        deleted_before = env.fake.deleted
        status, body = await env.call("POST", DRAIN, ADMIN, {"location": "nbg1"})
        assert status == 200 and body == {"held": True, "deleted": [nbg["name"]], "failed": []}
        assert env.fake.deleted == deleted_before + 1
        assert nbg["hetzner_server_id"] not in env.fake.servers
        status, body = await env.call("GET", "/api/admin/pool", ADMIN)
        assert body["held"] is True and body["hold"]["held_by"] == "admin_key", body
        assert body["by_status"] == {"available": 2, "assigned": 1}, body

        # By count (the oldest first), then every one left; the assigned server stays.
        fsn = await servers(env, "available")
        status, body = await env.call("POST", DRAIN, ADMIN, {"count": 1})
        assert status == 200 and body["deleted"] == [fsn[0]["name"]], body
        status, body = await env.call("POST", DRAIN, ADMIN)  # no body: every one
        assert status == 200 and body["deleted"] == [fsn[1]["name"]], body
        assert await servers(env, "available") == []
        assert [s["hetzner_server_id"] for s in await servers(env, "assigned")] == [kept]
        assert list(env.fake.servers) == [kept]
        assert (await env.instance(iid))["status"] == "active"

        # Held: a pass (it would make two spares) makes none, also once the pool manager was
        # restarted: the hold lives in the database.
        assert (await a_pass(env)).created == 0
        status, _ = await env.call("POST", "/api/admin/actors/fleet/pool-manager/restart", ADMIN)
        assert status == 202
        assert (await a_pass(env)).created == 0
        assert await servers(env, "provisioning") == [] and list(env.fake.servers) == [kept]

        # A user who needs a server while the pool is held still gets one (and only that one).
        bob = await env.user()
        bob_instance = await new_instance(env, bob)
        await active(env, bob_instance)
        assert (await a_pass(env)).created == 0
        status, body = await env.call("GET", "/api/admin/pool", ADMIN)
        assert body["held"] is True and body["by_status"] == {"assigned": 2}, body

        # Resumed: the pool refills to min_available; resuming again changes nothing.
        status, body = await env.call("POST", RESUME, ADMIN)
        assert status == 200 and body == {"held": False, "was_held": True}, body
        await available(env, 2)
        status, body = await env.call("GET", "/api/admin/pool", ADMIN)
        assert body["held"] is False and body["hold"] is None
        status, body = await env.call("POST", RESUME, ADMIN)
        assert status == 200 and body == {"held": False, "was_held": False}

        status, body = await env.call("GET", "/api/admin/audit", ADMIN)
        pool_actions = [a for a in body["actions"] if a["action"].startswith("pool.")]
        assert [(a["action"], a["target"]) for a in pool_actions] == [
            ("pool.resume", None),
            ("pool.resume", None),
            ("pool.drain", None),
            ("pool.drain", None),
            ("pool.drain", "nbg1"),
            ("pool.provision", None),
        ]
        drains = [a["detail"] for a in pool_actions if a["action"] == "pool.drain"]
        assert drains[-1] == {"count": None, "location": "nbg1", "deleted": [nbg["name"]]}
        assert drains[1]["count"] == 1 and drains[0]["count"] is None
