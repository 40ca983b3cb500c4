"""The health monitor over real SSH to FakeHetzner servers: ok, crash, restarts, alerts."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from test_fleet import ADMIN_KEY, FleetEnv, active, available, fleet_env, until

RESTART = "sudo -n systemctl restart openclaw-gateway.service"
FAST = {
    "health_interval": 0.2,
    "health_restart_timeout": 0.5,
    "health_timeout": 5.0,
}


async def an_active_instance(env: FleetEnv) -> tuple[str, Any, asyncpg.Record]:
    await available(env, 1)
    user = await env.user()
    status, body = await env.call(
        "POST", "/api/instances", user, {"channel_type": "whatsapp", "persona_template": "dev"}
    )
    assert status == 201, body
    row = await active(env, body["id"])
    return body["id"], env.server_of(row["hetzner_server_id"]).ssh, row


async def health(env: FleetEnv, iid: str) -> asyncpg.Record | None:
    return await env.pool.fetchrow(
        "SELECT * FROM instance_health WHERE instance_id = $1", uuid.UUID(iid)
    )


async def sweeps_after(env: FleetEnv, iid: str, n: int) -> asyncpg.Record:
    """The health row once `n` more checks have been recorded."""
    first = await until(lambda: health(env, iid))

    async def later() -> asyncpg.Record | None:
        row = await health(env, iid)
        return row if row is not None and row["checked_at"] > first["checked_at"] else None

    row = first
    for _ in range(n):
        row = await until(later)
        first = row
    return row


async def test_a_healthy_instance_is_ok_and_its_connection_reused(
    database: str, tmp_path: Path
) -> None:
    async with fleet_env(database, tmp_path, **FAST) as env:
        iid, server, _ = await an_active_instance(env)
        row = await until(lambda: health(env, iid))
        assert row["ok"] and row["state"] == "ok" and row["restarts"] == 0
        logins = server.logins
        row = await sweeps_after(env, iid, 3)
        assert row["ok"] and row["down_since"] is None
        assert server.logins == logins  # one kept connection across sweeps
        assert server.commands.count("curl -fsS http://127.0.0.1:18789/readyz") >= 3
        assert (await env.instance(iid))["last_health_check"] is not None

        status, body = await env.call(
            "GET", "/api/health/instances", {"Authorization": f"Bearer {ADMIN_KEY}"}
        )
        assert status == 200, body
        [entry] = body["instances"]
        assert entry["instance_id"] == iid and entry["ok"] and entry["state"] == "ok"
        assert body["summary"] == {"checked": 1, "ok": 1, "failing": 0}


async def test_non_admins_get_404(database: str, tmp_path: Path) -> None:
    async with fleet_env(database, tmp_path, min_available=0) as env:
        user = await env.user()
        status, body = await env.call("GET", "/api/health/instances", user)
        assert status == 404 and body["error"]["code"] == "not_found"
        status, _ = await env.call("GET", "/api/health/instances", {})
        assert status == 401


async def test_a_crashed_gateway_is_restarted_and_recovers(database: str, tmp_path: Path) -> None:
    async with fleet_env(database, tmp_path, **FAST) as env:
        iid, server, _ = await an_active_instance(env)
        await until(lambda: health(env, iid))
        restarts = server.commands.count(RESTART)
        server.crash()
        assert server.gateway_state == "failed"

        async def recovered() -> asyncpg.Record | None:
            row = await health(env, iid)
            return row if row["detail"] and "automatic restart 1" in row["detail"] else None

        row = await until(recovered)
        assert row["ok"] and "curl exit 7" in row["detail"]
        assert server.commands.count(RESTART) == restarts + 1
        assert server.gateway_state == "active"
        row = await sweeps_after(env, iid, 1)
        assert row["ok"] and row["restarts"] == 0 and row["detail"] is None
        assert (await env.instance(iid))["status"] == "active"
        assert not await env.pool.fetchval("SELECT count(*) FROM health_alerts")


async def test_failing_after_three_restarts_is_an_error_with_alerts(
    database: str, tmp_path: Path
) -> None:
    async with fleet_env(database, tmp_path, health_down_alert_after=0.01, **FAST) as env:
        iid, server, _ = await an_active_instance(env)
        await until(lambda: health(env, iid))
        restarts = server.commands.count(RESTART)
        server.channels_ok = False  # /readyz 503 (curl exit 22) whatever the restarts do

        async def errored() -> asyncpg.Record | None:
            row = await env.instance(iid)
            return row if row["status"] == "error" else None

        inst = await until(errored)
        assert "after 3 automatic restarts" in inst["status_reason"]
        assert "curl exit 22" in inst["status_reason"]
        assert server.commands.count(RESTART) == restarts + 3
        row = await health(env, iid)
        assert not row["ok"] and row["state"] == "error" and row["restarts"] == 3
        kinds = await env.pool.fetch(
            "SELECT kind FROM health_alerts WHERE instance_id = $1 ORDER BY id", uuid.UUID(iid)
        )
        assert [k["kind"] for k in kinds] == ["down", "error"]  # the outage alerts once
        # The owner is told, once per alert, in their words (no hosts, exit codes or commands).
        owner = (await env.instance(iid))["user_id"]

        async def emails() -> list[asyncpg.Record]:
            rows = await env.pool.fetch(
                "SELECT period, facts FROM notifications WHERE user_id = $1 "
                "AND kind = 'instance_error' ORDER BY id",
                owner,
            )
            return rows if len(rows) == 2 else []

        notes = await until(emails)
        alert_ids = [
            r["id"]
            for r in await env.pool.fetch(
                "SELECT id FROM health_alerts WHERE instance_id = $1 ORDER BY id", uuid.UUID(iid)
            )
        ]
        assert [n["period"] for n in notes] == [f"alert:{a}" for a in alert_ids]
        said = [
            n["facts"] if isinstance(n["facts"], dict) else orjson.loads(n["facts"]) for n in notes
        ]
        assert all(set(f) == {"instance_name", "error"} for f in said)
        assert not any("curl" in f["error"] or "exit" in f["error"] for f in said)
        assert "restarts did not bring it back" in said[1]["error"]
        assert (
            "restarts did not bring it back"
            in (
                notes[1]["facts"]
                if isinstance(notes[1]["facts"], dict)
                else orjson.loads(notes[1]["facts"])
            )["error"]
        )
        # an instance in error is no longer swept (nothing restarts it behind the user's back)
        checked = row["checked_at"]
        await sweeps_after_nothing(env, iid, checked)
        assert server.commands.count(RESTART) == restarts + 3


async def sweeps_after_nothing(env: FleetEnv, iid: str, checked: Any) -> None:
    await asyncio.sleep(0.8)
    row = await health(env, iid)
    assert row["checked_at"] == checked
