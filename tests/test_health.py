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
        assert sum("/readyz" in c for c in server.commands) >= 3
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


async def test_only_gateways_that_say_they_are_broken_are_restarted(
    database: str, tmp_path: Path
) -> None:
    """Six gateways: healthy, slow but healthy, late twice in a row then fine, crashed, not
    ready, and one whose server we cannot reach. Only the crashed and the not ready ones are
    restarted; the slow one is reported slow, the late one as timeouts, the unreachable one as
    unreachable (an operators' alert, no email to its owner)."""
    settings = {
        "min_available": 6,
        "max_size": 8,
        "health_interval": 0.3,
        "health_timeout": 1.0,
        "health_slow_after": 0.2,
        "health_timeouts_before_restart": 4,
        "health_restart_timeout": 2.0,
        "health_down_alert_after": 0.5,
    }
    async with fleet_env(database, tmp_path, **settings) as env:
        found = [await an_active_instance(env) for _ in range(6)]
        ids = [iid for iid, _, _ in found]
        healthy, slow, late, crashed, not_ready, unreachable = (s for _, s, _ in found)
        for iid in ids:
            await until(lambda iid=iid: health(env, iid))
        restarts = {id(s): s.commands.count(RESTART) for _, s, _ in found}

        slow.readyz_delay = 0.5  # over health_slow_after, within health_timeout
        late.readyz_delay = 3.0  # over health_timeout: a timeout
        crashed.crash()
        not_ready.channels_ok = False
        await unreachable.stop()

        seen: dict[str, set[str]] = {iid: set() for iid in ids}

        async def states() -> dict[str, asyncpg.Record]:
            rows = {iid: await health(env, iid) for iid in ids}
            for iid, row in rows.items():
                seen[iid].add(row["state"])
            return rows

        async def late_twice() -> bool:
            return (await states())[ids[2]]["failures"] >= 2

        await until(late_twice)
        late.readyz_delay = 0.0  # it catches up before a fourth timeout in a row

        async def settled() -> bool:
            rows = await states()
            alerted = await env.pool.fetchval(
                "SELECT count(*) FROM health_alerts WHERE kind = 'unreachable'"
            )
            return (
                rows[ids[2]]["state"] == "ok"
                and crashed.commands.count(RESTART) > restarts[id(crashed)]
                and crashed.gateway_state == "active"
                and rows[ids[4]]["restarts"] >= 1
                and alerted == 1
            )

        await until(settled, 30)
        rows = await states()
        counts = {id(s): s.commands.count(RESTART) for _, s, _ in found}
        for server in (healthy, slow, late):
            assert counts[id(server)] == restarts[id(server)], server
        assert counts[id(crashed)] > restarts[id(crashed)]
        assert counts[id(not_ready)] > restarts[id(not_ready)]
        assert rows[ids[0]]["state"] == "ok" and rows[ids[0]]["detail"] is None
        assert rows[ids[1]]["ok"] and rows[ids[1]]["detail"].startswith("slow: /readyz answered")
        assert rows[ids[1]]["answer_ms"] > 200 and rows[ids[1]]["restarts"] == 0  # slow_after
        assert "timeout" in seen[ids[2]] and rows[ids[2]]["restarts"] == 0
        assert rows[ids[2]]["failures"] == 0  # a healthy answer ends the streak
        assert rows[ids[5]]["state"] == "unreachable" and rows[ids[5]]["restarts"] == 0
        assert seen[ids[5]] <= {"ok", "unreachable"}
        assert (await env.instance(ids[5]))["status"] == "active"
        # The unreachable server's owner is not emailed: it says nothing about their assistant.
        owner = (await env.instance(ids[5]))["user_id"]
        emails = await env.pool.fetchval(
            "SELECT count(*) FROM notifications WHERE user_id = $1 AND kind = 'instance_error'",
            owner,
        )
        assert emails == 0
