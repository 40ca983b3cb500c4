"""Benchmark of the fleet: create-to-active from a warm pool, and health sweeps over N servers.

    .venv/bin/python bench/fleet.py --servers 10000           # writes bench/results/fleet.json
    .venv/bin/python bench/fleet.py --servers 1000 --instances 20 --sweeps 2
    .venv/bin/python bench/fleet.py --quick        # a smoke run (5 instances, 50 servers)

It starts a private PostgreSQL (or uses $BLITZCLAW_BENCH_DATABASE_URL, a role with CREATEDB).

1. create_to_active_s (`--instances M`, 0 skips it): the daemon (in this process) with a
   FakeHetzner whose servers are real SSH endpoints on loopback; the pool is filled to M servers
   (all called back, host keys pinned), then M instances are created one after another through
   POST /api/instances, each timed from the request until its row is `active` (claim, deploy job,
   config + secrets + SOUL.md over SFTP, gateway restart, /readyz). The fake gateway starts at
   once, so this is our own pipeline's time, not OpenClaw's boot.
2. health_sweeps (`--servers N --sweeps K`, bench/fleet_sweeps.py): N fake servers in processes
   of their own (bench/fleet_fakes.py: FakeHetzner, created through its API with our real
   cloud-init user data, each calling back), their instances seeded as active in a database of
   their own, and the health monitor (the daemon's actor, its real sweep: query, SSH /readyz with
   bounded concurrency, batched result writes) sweeps them K times in a row in this process.
   Sweep 1 opens the N SSH connections; the next ones are the steady state every
   `health_interval` (connections kept). Per sweep: wall time, this process's CPU (the monitor's
   own), the fakes' and PostgreSQL's CPU, every field of the SweepReport, and what the fakes saw
   (restart commands received, connections, their event loops' worst lag); plus the daemon's
   memory per kept connection, descriptors and limits, and the issue's acceptance targets.

Both sides raise their descriptor soft limit to the hard one: N kept connections take N
descriptors here and 2N (listener + connection) among the fakes.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import asyncssh
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fleet_fakes
import fleet_sweeps
import proxy as proxy_bench

from blitzclawd.config import Secret, Secrets, parse_settings
from blitzclawd.daemon import Daemon
from blitzclawd.db.pool import create_pool
from blitzclawd.http.auth import hash_key, new_api_key
from blitzclawd.testing import seed
from blitzclawd.testing.daemon_process import free_port
from blitzclawd.testing.fake_hetzner import FakeHetzner

THIS_FILE = Path(__file__).resolve()
ROOT = THIS_FILE.parent.parent
DEFAULT_OUT = ROOT / "bench" / "results" / "fleet.json"
QUICK_OUT = Path(tempfile.gettempdir()) / "blitzclawd-bench-fleet-quick.json"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[k]


# -- 1. create to active -----------------------------------------------------------------------


async def create_to_active(dsn: str, workdir: Path, n: int) -> dict[str, Any]:
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    async with FakeHetzner(root=workdir / "hetzner", rate_limit=10**9, boot_delay=0) as fake:
        fake.add_ssh_key("blitzclaw-provisioner", client_key.export_public_key().decode())
        api_port = free_port()
        settings = parse_settings(
            {
                "daemon": {"state_dir": str(workdir / "state")},
                "api": {"port": api_port},
                "proxy": {"port": free_port()},
                "fleet": {
                    "hetzner_api_endpoint": f"{fake.base_url}/v1",
                    "hetzner_poll_interval": 0.01,
                    "ssh_port": fake.ssh_port,
                    "min_available": n,
                    "max_size": n,  # no refills while measuring
                    "max_actions_per_pass": n,
                    "max_instances_per_user": n,
                    "pool_interval": 0.5,
                    "ready_url": f"http://127.0.0.1:{api_port}/internal/instance-ready",
                    "health_interval": 3600.0,
                },
            }
        )
        secrets = Secrets(
            {
                "database_url": Secret(dsn),
                "hetzner_api_token": Secret(fake.token),
                "ssh_private_key": Secret(client_key.export_private_key("openssh").decode()),
            }
        )
        daemon = Daemon(settings, secrets)
        run = asyncio.create_task(daemon.run())
        await asyncio.wait_for(daemon.ready.wait(), 60)
        pool = await create_pool(dsn, min_size=1, max_size=4)
        try:
            t0 = time.monotonic()
            while (
                await pool.fetchval("SELECT count(*) FROM server_pool WHERE status = 'available'")
                < n
            ):
                if time.monotonic() - t0 > 300:
                    raise RuntimeError("the pool did not fill")
                await asyncio.sleep(0.05)
            warm_s = time.monotonic() - t0
            user_id = await seed.create_user(pool)
            await seed.credit(pool, user_id, 1_000_000_000)
            key = new_api_key()
            await pool.execute(
                "INSERT INTO api_keys (user_id, name, prefix, key_hash) VALUES ($1, 'b', $2, $3)",
                uuid.UUID(user_id),
                key[:8],
                hash_key(key),
            )
            headers = {"Authorization": f"Bearer {key}"}
            body = {"channel_type": "whatsapp", "persona_template": "assistant"}
            times: list[float] = []
            async with aiohttp.ClientSession() as http:
                for _ in range(n):
                    start = time.perf_counter()
                    async with http.post(
                        f"http://127.0.0.1:{api_port}/api/instances", json=body, headers=headers
                    ) as resp:
                        created = await resp.json()
                        assert resp.status == 201, created
                    iid = uuid.UUID(created["id"])
                    while True:
                        status = await pool.fetchval(
                            "SELECT status FROM instances WHERE id = $1", iid
                        )
                        if status == "active":
                            break
                        if status == "error":
                            raise RuntimeError(f"instance {iid} went to error")
                        await asyncio.sleep(0.002)
                    times.append(time.perf_counter() - start)
        finally:
            await pool.close()
            daemon.request_stop()
            await asyncio.wait_for(run, 60)
    return {
        "n": n,
        "median": round(statistics.median(times), 4),
        "p95": round(pct(times, 0.95), 4),
        "min": round(min(times), 4),
        "max": round(max(times), 4),
        "pool_fill_s": round(warm_s, 2),
    }


# -- main -----------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    proxy_bench.cancel_on_signals()  # Ctrl-C still stops the fakes and PostgreSQL
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        workdir = args.workdir = Path(tmp)
        os.chmod(tmp, 0o711)  # as root, the embedded PostgreSQL user must traverse it
        async with proxy_bench.postgres(workdir) as (dsn, pg_pid):
            conn = await asyncpg.connect(dsn)
            try:
                pg_version = await conn.fetchval("SHOW server_version")
            finally:
                await conn.close()
            created = None
            if args.instances:
                created = await create_to_active(dsn, workdir, args.instances)
                print(f"create_to_active_s: {created}", file=sys.stderr)
            sweeps = await fleet_sweeps.health_sweeps(dsn, pg_pid, args)
    return {
        "create_to_active_s": created,
        "health_sweeps": sweeps,
        "machine": proxy_bench.machine(pg_version),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": proxy_bench.command_line(),
        "code": proxy_bench.code_version(),
        "quick": args.quick,
        "notes": NOTES,
    }


NOTES = [
    "create_to_active_s: seconds from POST /api/instances to status active, one at a time from "
    "a warm pool, real SSH/SFTP to loopback fake servers whose gateway starts instantly (our "
    "pipeline only, not OpenClaw's boot time).",
    "health_sweeps: the health monitor (HealthMonitor.sweep, the daemon's own code) runs in "
    "this process, so daemon_cpu_s is its CPU alone; the fake servers run in fakes.processes "
    "other processes (fakes_cpu_s, from /proc) and PostgreSQL in its own (postgres_cpu_s). "
    "Sweep 1 opens every SSH connection; the next ones reuse them (the steady state).",
    "restarts_this_sweep counts the restart commands the fake servers received: a restart of a "
    "healthy gateway is visible there whatever the report calls it.",
    "memory.kib_per_connection: the daemon's RSS growth over sweep 1 divided by the SSH "
    "connections then open (it includes what sweep 1 allocated besides them).",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 instances, 50 servers")
    parser.add_argument("--instances", type=int, default=20, help="create-to-active (0: skip)")
    parser.add_argument("--servers", type=int, default=1000, help="fake servers swept")
    parser.add_argument("--sweeps", type=int, default=2, help="consecutive sweeps (at least 2)")
    parser.add_argument("--concurrency", type=int, default=50, help="fleet.health_concurrency")
    parser.add_argument(
        "--spread", type=float, default=None, help="fleet.health_spread (default: the daemon's)"
    )
    parser.add_argument("--fake-processes", type=int, default=0, help="0: as many as needed")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.instances, args.servers = 5, 50
    if args.sweeps < 2 or args.servers < 1:
        parser.error("--sweeps must be at least 2 (the first opens the connections), --servers 1+")
    out = args.out or (QUICK_OUT if args.quick else DEFAULT_OUT)
    fleet_fakes.raise_nofile()  # 10,000 kept connections: one descriptor each, here too
    try:
        result = uvloop.run(run(args))
    except asyncio.CancelledError:
        print("interrupted: nothing written", file=sys.stderr)
        return 130
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"written to {out}", file=sys.stderr)
    met = all(t["met"] for t in result["health_sweeps"]["targets"].values())
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
