"""Benchmark of the fleet: create-to-active from a warm pool, one health sweep over 1,000 servers.

    .venv/bin/python bench/fleet.py            # writes bench/results/fleet.json
    .venv/bin/python bench/fleet.py --quick    # a smoke run (5 instances, 50 servers)

It starts a private PostgreSQL (or uses $BLITZCLAW_BENCH_DATABASE_URL, a role with CREATEDB).

1. create_to_active_s: the daemon (in this process) with a FakeHetzner whose servers are real SSH
   endpoints on loopback; the pool is filled to N servers (all called back, host keys pinned),
   then N instances are created one after another through POST /api/instances, each timed from
   the request until its row is `active` (claim, deploy job, config + secrets + SOUL.md over
   SFTP, gateway restart, /readyz). The fake gateway starts at once, so this is our own
   pipeline's time, not OpenClaw's boot.
2. health_sweep_1000: 1,000 fake servers run in a SEPARATE process (FakeHetzner, rate_limit
   10**9, created through its API with our real cloud-init user data, each calling back), their
   instances are seeded as active, and the health monitor (the daemon's actor, its real sweep:
   query, SSH /readyz with bounded concurrency, batched result writes) sweeps them. The first
   sweep opens the 1,000 SSH connections; the second is the steady state every
   `health_interval` (connections kept). wall_s / cpu_s are the steady-state sweep; cpu_s is
   this process's CPU time (the monitor's own: the fakes and PostgreSQL are other processes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
import orjson
import uvloop
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))
import proxy as proxy_bench

from blitzclawd import credentials
from blitzclawd.actors.health_monitor import HealthMonitor
from blitzclawd.config import Secret, Secrets, parse_settings
from blitzclawd.daemon import Daemon
from blitzclawd.db.pool import create_pool
from blitzclawd.fleet.cloudinit import render_pool_server
from blitzclawd.fleet.keys import public_key_line
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


# -- 2. a health sweep over many servers -------------------------------------------------------


async def serve_fakes(n: int, public_key: str) -> None:
    """Child process: n booted FakeHetzner servers with an active gateway; report, then wait."""
    ready: dict[str, str] = {}
    all_ready = asyncio.Event()

    async def on_ready(request: web.Request) -> web.Response:
        body = await request.json()
        ready[body["server_name"]] = body["host_key"]
        if len(ready) >= n:
            all_ready.set()
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/ready", on_ready)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=2048).start()
    with tempfile.TemporaryDirectory(prefix="bench-fleet-fakes-") as root:
        async with FakeHetzner(root=Path(root), rate_limit=10**9, boot_delay=0) as fake:
            sem = asyncio.Semaphore(50)

            async def create(i: int, http: aiohttp.ClientSession) -> None:
                name = f"bc-bench-{i:05d}"
                user_data = render_pool_server(
                    server_name=name,
                    server_secret=credentials.new_secret(),
                    ready_url=f"http://127.0.0.1:{port}/ready",
                    api_host_cidr="127.0.0.1/32",
                    ssh_authorized_key=public_key,
                )
                payload = {
                    "name": name,
                    "server_type": "cx23",
                    "image": "debian-12",
                    "location": "fsn1",
                    "user_data": user_data,
                    "labels": {"service": "blitzclaw"},
                }
                async with (
                    sem,
                    http.post(
                        f"{fake.base_url}/v1/servers",
                        json=payload,
                        headers={"Authorization": f"Bearer {fake.token}"},
                    ) as resp,
                ):
                    assert resp.status == 201, await resp.text()

            async with aiohttp.ClientSession() as http:
                await asyncio.gather(*(create(i, http) for i in range(n)))
            await asyncio.wait_for(all_ready.wait(), 600)
            servers = []
            for server in fake.servers.values():
                ssh = server.ssh
                (ssh.home / ".openclaw").mkdir(parents=True, exist_ok=True)
                (ssh.home / ".openclaw/openclaw.json").write_text('{"gateway":{"mode":"local"}}')
                ssh._start_gateway()
                servers.append(
                    {
                        "name": server.name,
                        "ip": server.ipv4,
                        "host_key": " ".join(ready[server.name].split()[:2]),
                    }
                )
            line = orjson.dumps({"ssh_port": fake.ssh_port, "servers": servers}).decode()
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
            bad = [s.name for s in fake.servers.values() if s.ssh.gateway_state != "active"]
            sys.stderr.write(f"fakes done; gateways not active: {len(bad)}\n")
    await runner.cleanup()


async def seed_fleet(pool: asyncpg.Pool, servers: list[dict[str, Any]]) -> None:
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


async def health_sweep(dsn: str, workdir: Path, n: int, concurrency: int) -> dict[str, Any]:
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(THIS_FILE),
        "--serve-fakes",
        str(n),
        "--public-key",
        public_key_line(client_key),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=64 * 1024 * 1024,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 900)
        if not line:
            raise RuntimeError("the fake servers' process ended early")
        fakes = orjson.loads(line)
        settings = parse_settings(
            {
                "fleet": {
                    "ssh_port": fakes["ssh_port"],
                    "health_concurrency": concurrency,
                    "ssh_connect_timeout": 60.0,
                    "health_timeout": 120.0,
                }
            }
        )
        pool = await create_pool(dsn, min_size=1, max_size=4)
        try:
            await seed_fleet(pool, fakes["servers"])
            monitor = HealthMonitor(pool, settings.fleet, lambda: client_key)
            sweeps = []
            for _ in range(2):
                c0, t0 = time.process_time(), time.perf_counter()
                report = await monitor.sweep()
                sweeps.append(
                    {
                        "wall_s": round(time.perf_counter() - t0, 3),
                        "cpu_s": round(time.process_time() - c0, 3),
                        "checked": report.checked,
                        "ok": report.ok,
                        "new_connections": monitor.checker.connects,
                    }
                )
                if report.ok != n:
                    raise RuntimeError(f"sweep: {report}")
            await monitor.checker.close()
            healthy = await pool.fetchval("SELECT count(*) FROM instance_health WHERE ok")
            assert healthy == n, healthy
        finally:
            await pool.close()
        proc.stdin.close()
        await asyncio.wait_for(proc.wait(), 120)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    cold, warm = sweeps
    return {
        "wall_s": warm["wall_s"],
        "cpu_s": warm["cpu_s"],
        "servers": n,
        "concurrency": concurrency,
        "first_sweep": {"wall_s": cold["wall_s"], "cpu_s": cold["cpu_s"]},
        # Connections opened by each sweep: all in the first, none in the steady state.
        "new_ssh_connections": {
            "first_sweep": cold["new_connections"],
            "steady_state": warm["new_connections"] - cold["new_connections"],
        },
    }


# -- main -----------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        workdir = Path(tmp)
        os.chmod(tmp, 0o711)  # as root, the embedded PostgreSQL user must traverse it
        async with proxy_bench.postgres(workdir) as (dsn, _pid):
            conn = await asyncpg.connect(dsn)
            try:
                pg_version = await conn.fetchval("SHOW server_version")
            finally:
                await conn.close()
            created = await create_to_active(dsn, workdir, args.instances)
            print(f"create_to_active_s: {created}", file=sys.stderr)
            sweep = await health_sweep(dsn, workdir, args.servers, args.concurrency)
            print(f"health sweep: {sweep}", file=sys.stderr)
    return {
        "create_to_active_s": created,
        f"health_sweep_{args.servers}": sweep,
        "machine": proxy_bench.machine(pg_version),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": proxy_bench.command_line(),
        "code": proxy_bench.code_version(),
        "quick": args.quick,
        "notes": [
            "create_to_active_s: seconds from POST /api/instances to status active, one at a "
            "time from a warm pool, real SSH/SFTP to loopback fake servers whose gateway starts "
            "instantly (our pipeline only, not OpenClaw's boot time).",
            "health_sweep: wall_s/cpu_s are the steady-state sweep (SSH connections kept from "
            "the previous sweep); first_sweep includes opening every connection. cpu_s is the "
            "monitor process only; the fake servers run in another process.",
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 instances, 50 servers")
    parser.add_argument("--instances", type=int, default=20)
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50, help="fleet.health_concurrency")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--serve-fakes", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--public-key", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_fakes:
        uvloop.run(serve_fakes(args.serve_fakes, args.public_key))
        return 0
    if args.quick:
        args.instances, args.servers = 5, 50
    out = args.out or (QUICK_OUT if args.quick else DEFAULT_OUT)
    result = uvloop.run(run(args))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    os._exit(130)
