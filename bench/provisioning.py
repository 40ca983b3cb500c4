"""Benchmark of bulk provisioning: N users create an instance at once (the spec's load test, 50).

    .venv/bin/python bench/provisioning.py            # writes bench/results/provisioning.json
    .venv/bin/python bench/provisioning.py --quick    # 10 instances, to the temp directory

Two cases, each on a private PostgreSQL (or $BLITZCLAW_BENCH_DATABASE_URL, a role with CREATEDB)
with a fresh migrated database, the daemon in this process with its default job_concurrency and
max_actions_per_pass, and FakeHetzner with its servers (real SSH endpoints on loopback) in a
child process of its own, so their CPU is not the daemon's:

- warm: the pool is filled first (min_available = N, max_size = N + 10, every server called back
  and its host key pinned); then the burst; afterwards the pool refills to max_size.
- empty: no server at all (min_available = 0, max_size = N); every server of the burst is created
  through the fake's API, with Hetzner's rate limit (3600 requests an hour, 429 once spent).

The burst: N users (each with an API key and credit) POST /api/instances at the same moment; each
instance is timed from its request until its row is `active` (polled every 10 ms). The fake's
times are Hetzner's scaled down (flags): a create action of `--action-delay` s (Hetzner ~10 s),
boot and cloud-init of `--boot-delay` s (a minute or two), the gateway's start of
`--gateway-delay` s (OpenClaw's: a few seconds), hcloud polling every `--poll-interval` s;
`floor_s` is what the fake alone takes for one instance, so the rest is our own pipeline and its
queues. Checked and reported: every instance active on its own server, holding its own deployed
secret; no job failed or retried; the pool (rows not gone) sampled every 50 ms, never above
max_size; Hetzner requests and 429s.

Why one module: one benchmark, its child process (the fake) and its checks read together; the
database and machine helpers come from bench/proxy.py, as bench/fleet.py's do.
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
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import asyncssh
import orjson
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
import proxy as proxy_bench

from blitzclawd import credentials
from blitzclawd.config import Secret, Secrets, parse_settings
from blitzclawd.daemon import Daemon
from blitzclawd.db.pool import create_pool
from blitzclawd.http.auth import hash_key, new_api_key
from blitzclawd.testing import seed
from blitzclawd.testing.daemon_process import free_port
from blitzclawd.testing.fake_hetzner import FakeHetzner

THIS_FILE = Path(__file__).resolve()
ROOT = THIS_FILE.parent.parent
DEFAULT_OUT = ROOT / "bench" / "results" / "provisioning.json"
QUICK_OUT = Path(tempfile.gettempdir()) / "blitzclawd-bench-provisioning-quick.json"
KEY_NAME = "blitzclaw-provisioner"
BODY = {"channel_type": "whatsapp", "persona_template": "assistant"}
HETZNER_RATE_LIMIT = 3600  # Hetzner's, per project and hour (WIRE.md)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[k]


# -- the fake, in its own process ----------------------------------------------------------------


async def serve_hetzner(knobs: dict[str, Any]) -> None:
    """Child process: a FakeHetzner; prints its address, then answers `stats` lines on stdin
    with a JSON line, until stdin closes."""
    async with FakeHetzner(
        root=Path(knobs["root"]),
        rate_limit=knobs["rate_limit"],
        action_delay=knobs["action_delay"],
        boot_delay=knobs["boot_delay"],
        gateway_start_delay=knobs["gateway_delay"],
    ) as fake:
        fake.add_ssh_key(KEY_NAME, knobs["public_key"])
        out = {"base_url": fake.base_url, "ssh_port": fake.ssh_port, "token": fake.token}
        print(json.dumps(out), flush=True)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            if line.strip() == b"stats":
                stats = {
                    "requests": fake.requests,
                    "rate_limited": getattr(fake, "rate_limited", 0),  # (counted since 6b6ef5e)
                    "created": fake.created,
                    "servers": len(fake.servers),
                    "cpu_s": round(time.process_time(), 2),
                }
                print(json.dumps(stats), flush=True)


class FakeProcess:
    def __init__(self, proc: asyncio.subprocess.Process, hello: dict[str, Any]) -> None:
        self.proc = proc
        self.base_url: str = hello["base_url"]
        self.ssh_port: int = hello["ssh_port"]
        self.token: str = hello["token"]

    async def stats(self) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(b"stats\n")
        await self.proc.stdin.drain()
        async with asyncio.timeout(30):
            return json.loads(await self.proc.stdout.readline())


@contextlib.asynccontextmanager
async def fake_process(knobs: dict[str, Any]) -> AsyncIterator[FakeProcess]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(THIS_FILE),
        "--serve-hetzner",
        json.dumps(knobs),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(60):
            hello = json.loads(await proc.stdout.readline())
        yield FakeProcess(proc, hello)
    finally:
        if proc.stdin is not None:
            proc.stdin.close()  # its loop ends, the fake stops
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()


# -- one case ------------------------------------------------------------------------------------


async def until(check: Any, deadline: float, every: float = 0.05) -> Any:
    """`check()`'s first truthy value, polled every `every` s; TimeoutError after `deadline` s."""
    async with asyncio.timeout(deadline):
        for _ in range(int(deadline / every) + 1):
            value = await check()
            if value:
                return value
            await asyncio.sleep(every)
    raise TimeoutError


async def make_users(pool: asyncpg.Pool, n: int) -> list[dict[str, str]]:
    users = []
    for _ in range(n):
        user_id = await seed.create_user(pool)
        await seed.credit(pool, user_id, 50_000_000)
        key = new_api_key()
        await pool.execute(
            "INSERT INTO api_keys (user_id, name, prefix, key_hash) VALUES ($1, 'b', $2, $3)",
            uuid.UUID(user_id),
            key[:8],
            hash_key(key),
        )
        users.append({"Authorization": f"Bearer {key}"})
    return users


async def sample_pool(pool: asyncpg.Pool, seen: list[int]) -> None:
    """Rows not gone, every 50 ms, until cancelled (bounded: ~1,000 s)."""
    for _ in range(20_000):
        seen.append(await pool.fetchval("SELECT count(*) FROM server_pool WHERE status <> 'gone'"))
        await asyncio.sleep(0.05)


async def check(pool: asyncpg.Pool, ids: list[uuid.UUID], root: Path) -> dict[str, Any]:
    """Each instance on its own server holding its own deploy; the jobs' outcomes."""
    rows = await pool.fetch(
        """SELECT i.id, i.server_id, i.secret_hash, s.assigned_to, s.hetzner_server_id
           FROM instances i JOIN server_pool s ON s.id = i.server_id
           WHERE i.id = ANY($1::uuid[]) AND i.status = 'active'""",
        ids,
    )
    own = 0
    for row in rows:
        home = root / str(row["hetzner_server_id"]) / "home"
        doc = orjson.loads((home / ".openclaw/secrets.json").read_bytes())
        secret = doc["models"]["providers"]["blitzclaw"]["headers"]["X-BlitzClaw-Secret"]
        own += row["assigned_to"] == row["id"] and credentials.verify_secret(
            secret, row["secret_hash"]
        )
    jobs = await pool.fetchrow(
        """SELECT count(*) AS jobs, count(*) FILTER (WHERE status = 'failed') AS failed,
                  count(*) FILTER (WHERE last_error IS NOT NULL) AS retried
           FROM instance_jobs"""
    )
    return {
        "active": len(rows),
        "distinct_servers": len({r["server_id"] for r in rows}),
        "holding_their_own_deploy": own,
        "jobs": jobs["jobs"],
        "jobs_failed": jobs["failed"],
        "jobs_retried": jobs["retried"],
    }


async def run_case(dsn: str, workdir: Path, case: str, args: argparse.Namespace) -> dict[str, Any]:
    n = args.instances
    min_available, max_size = (n, n + 10) if case == "warm" else (0, n)
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    root = workdir / f"hetzner-{case}"
    knobs = {
        "root": str(root),
        "rate_limit": HETZNER_RATE_LIMIT,
        "action_delay": args.action_delay,
        "boot_delay": args.boot_delay,
        "gateway_delay": args.gateway_delay,
        "public_key": client_key.export_public_key().decode(),
    }
    async with fake_process(knobs) as fake:
        api_port = free_port()
        settings = parse_settings(
            {
                "daemon": {"state_dir": str(workdir / f"state-{case}"), "log_level": "warning"},
                "api": {"port": api_port},
                "proxy": {"port": free_port()},
                "fleet": {
                    "hetzner_api_endpoint": f"{fake.base_url}/v1",
                    "hetzner_poll_interval": args.poll_interval,
                    "ssh_port": fake.ssh_port,
                    "min_available": min_available,
                    "max_size": max_size,
                    "max_instances_per_user": 3,
                    "pool_interval": args.pool_interval,
                    "ready_url": f"http://127.0.0.1:{api_port}/internal/instance-ready",
                    "health_interval": 3600.0,
                    "ssh_connect_timeout": 30.0,
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
        seen: list[int] = []
        sampler = asyncio.create_task(sample_pool(pool, seen))
        try:

            async def filled() -> bool:
                count = await pool.fetchval(
                    "SELECT count(*) FROM server_pool WHERE status = 'available'"
                )
                return count >= min_available

            t_fill = time.monotonic()
            await until(filled, 300)
            fill_s = time.monotonic() - t_fill
            users = await make_users(pool, n)
            before = await fake.stats()
            cpu0 = time.process_time()
            started: dict[uuid.UUID, float] = {}
            async with aiohttp.ClientSession() as http:

                async def create(headers: dict[str, str]) -> None:
                    t0 = time.monotonic()
                    url = f"http://127.0.0.1:{api_port}/api/instances"
                    async with http.post(url, json=BODY, headers=headers) as resp:
                        body = await resp.json()
                        if resp.status != 201:
                            raise RuntimeError(f"create: {resp.status} {body}")
                    started[uuid.UUID(body["id"])] = t0

                t_burst = time.monotonic()
                await asyncio.gather(*(create(u) for u in users))
            ids = list(started)
            took: dict[uuid.UUID, float] = {}

            async def all_active() -> bool:
                rows = await pool.fetch(
                    "SELECT id, status, status_reason FROM instances WHERE id = ANY($1::uuid[])",
                    ids,
                )
                now = time.monotonic()
                for row in rows:
                    if row["status"] == "error":
                        raise RuntimeError(f"instance {row['id']}: {row['status_reason']}")
                    if row["status"] == "active" and row["id"] not in took:
                        took[row["id"]] = now - started[row["id"]]
                return len(took) == n

            await until(all_active, 600, every=0.01)
            burst_s = time.monotonic() - t_burst
            daemon_cpu_s = time.process_time() - cpu0
            after = await fake.stats()
            refill_s = None
            if case == "warm":

                async def refilled() -> bool:
                    live = await pool.fetchval(
                        "SELECT count(*) FROM server_pool WHERE status = 'available'"
                    )
                    return live >= max_size - n

                await until(refilled, 300)
                refill_s = round(time.monotonic() - t_burst, 2)
            checks = await check(pool, ids, root)
        finally:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
            await pool.close()
            daemon.request_stop()
            await asyncio.wait_for(run, 60)
    times = list(took.values())
    floor = args.gateway_delay + (0 if case == "warm" else args.action_delay + args.boot_delay)
    return {
        "n": n,
        "create_to_active_s": {
            "median": round(statistics.median(times), 3),
            "p95": round(pct(times, 0.95), 3),
            "max": round(max(times), 3),
            "min": round(min(times), 3),
        },
        "floor_s": round(floor, 3),
        "burst_wall_s": round(burst_s, 2),
        "daemon_cpu_s": round(daemon_cpu_s, 2),  # this process: the daemon (and the client)
        "fake_cpu_s": round(after["cpu_s"] - before["cpu_s"], 2),
        "pool": {
            "min_available": min_available,
            "max_size": max_size,
            "max_sampled": max(seen),
            "samples": len(seen),
            "fill_s": round(fill_s, 2) if case == "warm" else None,
            "refilled_s": refill_s,
        },
        "hetzner": {
            "requests": after["requests"] - before["requests"],
            "rate_limited": after["rate_limited"] - before["rate_limited"],
            "servers_created": after["created"] - before["created"],
        },
        "checks": checks,
    }


def faults(case: dict[str, Any]) -> list[str]:
    """What the acceptance says must not happen, if it did."""
    n, checks, pool = case["n"], case["checks"], case["pool"]
    return [
        what
        for what, bad in [
            ("not every instance active", checks["active"] != n),
            ("servers shared", checks["distinct_servers"] != n),
            ("a deploy not on its own server", checks["holding_their_own_deploy"] != n),
            ("a job failed", checks["jobs_failed"] > 0),
            ("pool above max_size", pool["max_sampled"] > pool["max_size"]),
        ]
        if bad
    ]


# -- main -----------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {}
    pg_version = ""
    with tempfile.TemporaryDirectory(prefix="bench-provisioning-") as tmp:
        workdir = Path(tmp)
        os.chmod(tmp, 0o711)  # as root, the embedded PostgreSQL user must traverse it
        for case in ("warm", "empty"):
            casedir = workdir / case
            casedir.mkdir()
            async with proxy_bench.postgres(casedir) as (dsn, _pid):
                conn = await asyncpg.connect(dsn)
                try:
                    pg_version = await conn.fetchval("SHOW server_version")
                finally:
                    await conn.close()
                result[case] = await run_case(dsn, casedir, case, args)
            print(f"{case}: {json.dumps(result[case])}", file=sys.stderr)
    failures = [f"{case}: {what}" for case in ("warm", "empty") for what in faults(result[case])]
    return {
        **result,
        "ok": not failures,
        "failures": failures,
        "settings": {
            "instances": args.instances,
            "action_delay_s": args.action_delay,
            "boot_delay_s": args.boot_delay,
            "gateway_delay_s": args.gateway_delay,
            "hetzner_poll_interval_s": args.poll_interval,
            "pool_interval_s": args.pool_interval,
            "hetzner_rate_limit_per_hour": HETZNER_RATE_LIMIT,
        },
        "machine": proxy_bench.machine(pg_version),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": proxy_bench.command_line(),
        "code": proxy_bench.code_version(),
        "quick": args.quick,
        "notes": [
            "create_to_active_s: seconds from each POST /api/instances (all sent at once) to the "
            "instance's row being active: claim or wait for a server, deploy job, config, "
            "secrets and SOUL.md over SFTP, gateway restart, /readyz. floor_s is the fake's own "
            "share for one instance (create action + boot for the empty pool, gateway start).",
            "daemon_cpu_s is this process (daemon and load client) during the burst; the fake "
            "Hetzner and its servers' SSH run in a child process (fake_cpu_s).",
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 instances")
    parser.add_argument("--instances", type=int, default=50)
    parser.add_argument("--action-delay", type=float, default=0.5, help="a Hetzner action, s")
    parser.add_argument("--boot-delay", type=float, default=2.0, help="boot and cloud-init, s")
    parser.add_argument("--gateway-delay", type=float, default=0.5, help="the gateway's start, s")
    parser.add_argument("--poll-interval", type=float, default=0.1, help="hcloud's action polls")
    parser.add_argument(
        "--pool-interval", type=float, default=60.0, help="between passes (60: on demand only)"
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--serve-hetzner", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_hetzner:
        uvloop.run(serve_hetzner(json.loads(args.serve_hetzner)))
        return 0
    if args.quick:
        args.instances = 10
    out = args.out or (QUICK_OUT if args.quick else DEFAULT_OUT)
    result = uvloop.run(run(args))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"written to {out}", file=sys.stderr)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    os._exit(130)
