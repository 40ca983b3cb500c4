"""The fleet benchmark's health sweeps: N fake servers, the monitor sweeping them K times.

The fake servers run in processes of their own (fleet_fakes.py); their instances are seeded as
active in a database of their own; the health monitor (HealthMonitor.sweep, the daemon's real
code: query, SSH /readyz with bounded concurrency, batched result writes) runs in THIS process,
so this process's CPU time during a sweep is the monitor's own. Sweep 1 opens every SSH
connection; the next ones reuse them (the steady state every `health_interval`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import asyncssh

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fleet_fakes
import proxy as proxy_bench
from fleet_fakes import FakeFleet

from blitzclawd.actors.health_monitor import HealthMonitor
from blitzclawd.config import FleetSettings, parse_settings
from blitzclawd.db.migrate import migrate
from blitzclawd.db.pool import create_pool
from blitzclawd.fleet.keys import public_key_line
from blitzclawd.testing import seed

SWEEP_LIMIT_S = 1800.0  # one sweep, however slow, ends the run rather than hang it
SHOWN = ("health_", "ssh_connect_timeout", "ssh_port")  # the settings printed with the results


@contextlib.asynccontextmanager
async def fresh_database(dsn: str) -> AsyncIterator[str]:
    """A migrated database of its own on the same server: the sweeps see only their servers
    (create_to_active's instances are on servers that stopped with its fake)."""
    name = f"blitzclawd_fleet_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(dsn, timeout=30)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        fresh = proxy_bench.with_database(dsn, name)
        conn = await asyncpg.connect(fresh, timeout=30)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        yield fresh
    finally:
        with contextlib.suppress(Exception):
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def seed_fleet(pool: asyncpg.Pool, servers: list[dict[str, str]]) -> None:
    user_id = uuid.UUID(await seed.create_user(pool))
    async with pool.acquire() as conn, conn.transaction():
        ids = [uuid.uuid4() for _ in servers]
        iids = [uuid.uuid4() for _ in servers]
        await conn.execute(
            """INSERT INTO server_pool (id, name, ip_address, status, ssh_host_key)
               SELECT id, name, ip::inet, 'available', key
               FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[])
                    AS t(id, name, ip, key)""",
            ids,
            [s["name"] for s in servers],
            [s["ip"] for s in servers],
            [s["host_key"] for s in servers],
        )
        await conn.execute(
            """INSERT INTO instances (id, user_id, server_id, status, channel_type, secret_hash)
               SELECT iid, $3, sid, 'active', 'whatsapp', decode(md5(iid::text), 'hex')
               FROM unnest($1::uuid[], $2::uuid[]) AS t(iid, sid)""",
            iids,
            ids,
            user_id,
        )
        await conn.execute(
            """UPDATE server_pool s SET status = 'assigned', assigned_to = t.iid
               FROM unnest($1::uuid[], $2::uuid[]) AS t(iid, sid) WHERE s.id = t.sid""",
            iids,
            ids,
        )


def fake_processes(servers: int, hard_limit: int) -> int:
    """As few fake processes as fit the descriptor limit (two per server in the fakes). One
    process serves 10,000 kept connections as fast as two on 2 cores (bench/README.md)."""
    return -(-servers // fleet_fakes.max_servers_per_process(hard_limit))


def fleet_settings(ssh_port: int, concurrency: int, spread: float | None) -> FleetSettings:
    # The generous timeouts: a slow loopback fake must never look like a dead gateway.
    fleet: dict[str, Any] = {
        "ssh_port": ssh_port,
        "health_concurrency": concurrency,
        "ssh_connect_timeout": 60.0,
        "health_timeout": 120.0,
    }
    if spread is not None:  # else the daemon's default
        fleet["health_spread"] = spread
    return parse_settings({"fleet": fleet}).fleet


def fakes_summary(stats: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "cpu_s_total": round(sum(p["cpu_s"] for p in stats), 2),
        "ssh_connections": sum(p["ssh_connections"] for p in stats),
        "logins": sum(p["logins"] for p in stats),
        "restart_commands": sum(p["restart_commands"] for p in stats),
        "gateways_not_active": sum(p["gateways_not_active"] for p in stats),
        "rss_mb": [p["rss_mb"] for p in stats],
        "fds": [p["fds"] for p in stats],
        "loop_lag_max_s": max(p["loop_lag_max_s"] for p in stats),
        "loop_stalls_over_1s": sum(p["loop_stalls_over_1s"] for p in stats),
        "loop_errors": sum(p["loop_errors"] for p in stats),
        "loop_error_samples": [e for p in stats for e in p["loop_error_samples"]][:5],
    }


async def one_sweep(
    monitor: HealthMonitor,
    monitor_pool: asyncpg.Pool,
    fleet: FakeFleet,
    probe: proxy_bench.CpuProbe,
    restarts_before: int,
) -> dict[str, Any]:
    connects = getattr(monitor.checker, "connects", 0)
    before, fakes_cpu = probe.sample(), fleet.cpu_s()
    c0, t0 = time.process_time(), time.perf_counter()
    async with asyncio.timeout(SWEEP_LIMIT_S):
        report = await monitor.sweep()
    wall, daemon_cpu = time.perf_counter() - t0, time.process_time() - c0
    after, fakes_cpu = probe.sample(), fleet.cpu_s() - fakes_cpu
    pg_cpu = after.get("postgres", 0.0) - before.get("postgres", 0.0)
    busy = after["machine_busy"] - before["machine_busy"]
    fakes = fakes_summary(await fleet.stats())
    fakes["restarts_this_sweep"] = fakes["restart_commands"] - restarts_before
    # What the monitor recorded for the instances it did not find ok (its own words, as rows).
    not_ok = await monitor_pool.fetch(
        "SELECT to_jsonb(h) AS row FROM instance_health h WHERE NOT ok ORDER BY instance_id"
    )
    me = os.getpid()
    return {
        "wall_s": round(wall, 3),
        "daemon_cpu_s": round(daemon_cpu, 3),
        "fakes_cpu_s": round(fakes_cpu, 2),
        "postgres_cpu_s": round(pg_cpu, 2),
        # Busy CPU of the machine that is none of ours: kernel loopback work, other users.
        "other_cpu_s": round(busy - daemon_cpu - fakes_cpu - pg_cpu, 2),
        "report": dataclasses.asdict(report),
        "new_ssh_connections": getattr(monitor.checker, "connects", 0) - connects,
        "daemon_rss_mb": fleet_fakes.rss_mb(me),
        "daemon_fds": fleet_fakes.open_fds(me),
        "fakes": fakes,
        "not_ok_recorded": len(not_ok),
        "not_ok_samples": [r["row"] for r in not_ok[:5]],  # the pool decodes jsonb
    }


async def health_sweeps(dsn: str, pg_pid: int | None, args: argparse.Namespace) -> dict[str, Any]:
    n = args.servers
    nofile = fleet_fakes.raise_nofile()
    processes = args.fake_processes or fake_processes(n, nofile[1])
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    me = os.getpid()
    t0 = time.monotonic()
    async with (
        fresh_database(dsn) as sweep_dsn,
        FakeFleet(
            n, processes=processes, public_key=public_key_line(client_key), workdir=args.workdir
        ) as fleet,
    ):
        setup_s = time.monotonic() - t0
        cfg = fleet_settings(fleet.ssh_port, args.concurrency, args.spread)
        pool = await create_pool(sweep_dsn, min_size=1, max_size=4)
        monitor = HealthMonitor(pool, cfg, lambda: client_key)
        try:
            await seed_fleet(pool, fleet.servers)
            await fleet.stats()  # the fakes' lag and errors from here on
            gc.collect()
            rss0, fds0 = fleet_fakes.rss_mb(me), fleet_fakes.open_fds(me)
            probe = proxy_bench.CpuProbe({"postgres": pg_pid})
            sweeps: list[dict[str, Any]] = []
            restarts = 0
            for i in range(args.sweeps):
                sweep = await one_sweep(monitor, pool, fleet, probe, restarts)
                restarts = sweep["fakes"]["restart_commands"]
                sweeps.append({"sweep": i + 1, **sweep})
                print(f"sweep {i + 1}: {sweep_line(sweep)}", file=sys.stderr)
        finally:
            await monitor.checker.close()  # before the fakes go: no reconnect storm
            await pool.close()
    first = sweeps[0]
    conns = first["fakes"]["ssh_connections"]
    return {
        "servers": n,
        "settings": {k: v for k, v in dataclasses.asdict(cfg).items() if k.startswith(SHOWN)},
        "fakes": {"processes": processes, "setup_s": round(setup_s, 1), "each": fleet.setup},
        "nofile": {"daemon": list(nofile), "fakes": [p["nofile"] for p in fleet.setup]},
        "memory": {
            "daemon_rss_before_mb": rss0,
            "daemon_rss_after_first_sweep_mb": first["daemon_rss_mb"],
            "daemon_rss_after_last_sweep_mb": sweeps[-1]["daemon_rss_mb"],
            "kept_connections": conns,
            "kib_per_connection": round((first["daemon_rss_mb"] - rss0) * 1024 / max(conns, 1), 1),
            "daemon_fds_before": fds0,
            "daemon_fds_after_first_sweep": first["daemon_fds"],
        },
        "sweeps": sweeps,
        "targets": targets(n, sweeps),
    }


def sweep_line(s: dict[str, Any]) -> str:
    report = ", ".join(f"{k}={v}" for k, v in s["report"].items())
    return (
        f"wall {s['wall_s']} s, daemon CPU {s['daemon_cpu_s']} s, fakes CPU {s['fakes_cpu_s']} s,"
        f" restarts at the fakes {s['fakes']['restarts_this_sweep']}, fakes' worst loop lag"
        f" {s['fakes']['loop_lag_max_s']} s; {report}"
    )


def targets(n: int, sweeps: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's acceptance: every sweep clean, the steady one within 60 s and 20 CPU-s."""
    steady = sweeps[-1]
    # Restarts the fakes received, and those the monitor reports (attempts count there too).
    received = [s["fakes"]["restarts_this_sweep"] for s in sweeps]
    reported = [s["report"].get("restarted", 0) for s in sweeps]
    not_ok = [s["report"].get("checked", 0) - s["report"].get("ok", 0) for s in sweeps]
    ok = [s["report"].get("ok") for s in sweeps]
    return {
        "no_restarts": {
            "met": not any(received + reported),
            "value": {"received_by_fakes": received, "reported": reported},
        },
        "no_errors": {"met": not any(not_ok), "value": not_ok},
        "every_instance_ok": {"met": all(v == n for v in ok), "value": ok},
        "steady_sweep_wall_le_60s": {"met": steady["wall_s"] <= 60, "value": steady["wall_s"]},
        "steady_sweep_daemon_cpu_le_20s": {
            "met": steady["daemon_cpu_s"] <= 20,
            "value": steady["daemon_cpu_s"],
        },
    }
