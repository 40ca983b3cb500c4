"""Benchmark of the dashboard: server time per page for a user with 3 assistants and a year of
usage.

    .venv/bin/python bench/dashboard.py            # writes bench/results/dashboard.json
    .venv/bin/python bench/dashboard.py --quick    # a smoke run (30 days, 5 requests per page)

It starts a private PostgreSQL (or uses $BLITZCLAW_BENCH_DATABASE_URL, a role with CREATEDB), the
fake Clerk and a real daemon (`blitzclawd serve`, its own process), all on loopback. It seeds one
user with 3 instances and a year of usage rows (each instance, 2 models, `--per-day` requests a
day each) among other users' year of usage, every row inserted in time order so that the user's
rows are spread through the table as settlement writes them; then VACUUM ANALYZE (what autovacuum
does to an append-only table). Each page is then requested with the user's session cookie, one
request at a time on a keep-alive connection: a warm-up, then `--requests` timed from send to the
last byte of the body. Also recorded: the daemon's and PostgreSQL's CPU per request, and the plan
of the year's usage query (EXPLAIN ANALYZE).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import datetime as dt
import io
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
import proxy as proxy_bench

from blitzclawd.queries.billing import usage_lines
from blitzclawd.testing import seed
from blitzclawd.testing.daemon_process import DaemonProcess
from blitzclawd.testing.fake_clerk import FakeClerk

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "results" / "dashboard.json"
QUICK_OUT = Path(tempfile.gettempdir()) / "blitzclawd-bench-dashboard-quick.json"
REQUEST_TIMEOUT = 30.0  # seconds, per request
# (model, api, micro-dollars per input token, per output token): list prices, near enough.
MODELS = (
    ("claude-sonnet-4-6", "anthropic-messages", 3, 15),
    ("claude-haiku-4-5", "anthropic-messages", 1, 5),
)

# One row per request: `n` rows of one (instance, user, model) spread evenly over `days` days
# before `now`, shifted by `phase` of a step so streams do not share timestamps; all streams
# merged in time order. Token counts vary deterministically with the row number.
SEED_SQL = """
INSERT INTO usage_logs (request_id, instance_id, user_id, api, model, input_tokens,
                        output_tokens, cache_read_tokens, cost_micros, upstream_request_id,
                        status_code, duration_ms, created_at)
SELECT gen_random_uuid(), s.instance_id, s.user_id, m.api, s.model, t.input, t.output, t.cached,
       t.input * m.in_price + t.output * m.out_price + t.cached * m.in_price / 10,
       'msg_bench', 200, 400 + (i * 37) % 6000,
       $6::timestamptz - make_interval(secs => (i + s.phase) * $7::float8 * 86400 / s.n)
FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::int[], $5::float8[])
         AS s(instance_id, user_id, model, n, phase)
     JOIN unnest($8::text[], $9::text[], $10::int[], $11::int[])
         AS m(model, api, in_price, out_price) USING (model)
     CROSS JOIN LATERAL generate_series(0::bigint, s.n - 1) AS i
     CROSS JOIN LATERAL (SELECT 1500 + (i * 7919) % 6000 AS input,
                                40 + (i * 104729) % 700 AS output,
                                (i * 31) % 20000 AS cached) AS t
ORDER BY 13
"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))]


async def seed_usage(
    conn: asyncpg.Connection, args: argparse.Namespace, clerk: FakeClerk
) -> dict[str, Any]:
    """The measured user (3 instances, $100) and the others; returns ids and row counts."""
    user = await seed.create_user(conn, email="bench@example.test")
    clerk_id = f"user_{uuid.UUID(user).hex}"  # seed.create_user's clerk_user_id
    await conn.execute("UPDATE users SET email_verified = true WHERE id = $1", uuid.UUID(user))
    clerk.add_user(clerk_id, "bench@example.test")
    await seed.credit(conn, user, 100_000_000)
    instances = [(await seed.create_instance(conn, user)).id for _ in range(3)]
    n = args.days * args.per_day
    streams: list[tuple[str, str, str, int]] = [
        (iid, user, model, n) for iid in instances for model, *_ in MODELS
    ]
    others = []
    for _ in range(args.other_users):
        other = await seed.create_user(conn)
        others.append(other)
        iid = (await seed.create_instance(conn, other)).id
        streams.append((iid, other, MODELS[0][0], args.days * args.other_per_day))
    now = dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    await conn.execute(
        SEED_SQL,
        [uuid.UUID(s[0]) for s in streams],
        [uuid.UUID(s[1]) for s in streams],
        [s[2] for s in streams],
        [s[3] for s in streams],
        [(k + 0.5) / len(streams) for k in range(len(streams))],
        now,
        float(args.days),
        *(list(col) for col in zip(*MODELS, strict=True)),
    )
    insert_s = time.perf_counter() - t0
    await conn.execute("VACUUM ANALYZE usage_logs")
    total = await conn.fetchval("SELECT count(*) FROM usage_logs")
    mine = await conn.fetchval(
        "SELECT count(*) FROM usage_logs WHERE user_id = $1", uuid.UUID(user)
    )
    size = await conn.fetchval("SELECT pg_total_relation_size('usage_logs')")
    return {
        "user_id": user,
        "clerk_user_id": clerk_id,
        "instances": instances,
        "rows": {
            "usage_logs_total": total,
            "usage_logs_of_user": mine,
            "of_user": f"3 instances x {len(MODELS)} models x {args.days} days x "
            f"{args.per_day} requests a day",
            "others": f"{args.other_users} users x 1 instance x {args.days} days x "
            f"{args.other_per_day} requests a day",
        },
        "usage_logs_mb": round(size / 2**20, 1),
        "seed_insert_s": round(insert_s, 1),
    }


class _Capture:
    """Stands in for the pool to catch the SQL and arguments a named query sends."""

    sql = ""
    args: tuple[Any, ...] = ()

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        self.sql, self.args = sql, args
        return []


async def explain_year(
    conn: asyncpg.Connection, user: str, first: dt.date, last: dt.date
) -> list[str]:
    """EXPLAIN ANALYZE of the year's usage query, as queries.billing.usage_lines sends it."""
    capture = _Capture()
    await usage_lines(capture, uuid.UUID(user), first, last)  # type: ignore[arg-type]
    plan = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + capture.sql, *capture.args, timeout=120)
    return [r[0] for r in plan]


async def measure_page(
    session: aiohttp.ClientSession,
    url: str,
    args: argparse.Namespace,
    probes: dict[str, Callable[[], float]],
    check: Callable[[bytes], None] | None = None,
) -> dict[str, Any]:
    """`--warmup` then `--requests` sequential GETs; latency from send to the body's last byte."""
    body = b""
    for _ in range(args.warmup):
        async with session.get(url, allow_redirects=False) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"{url}: {resp.status} {body[:300]!r}")
    if check is not None:
        check(body)
    cpu0 = {name: probe() for name, probe in probes.items()}
    times: list[float] = []
    for _ in range(args.requests):
        start = time.perf_counter()
        async with session.get(url, allow_redirects=False) as resp:
            body = await resp.read()
            status = resp.status
        times.append((time.perf_counter() - start) * 1000)
        if status != 200:
            raise RuntimeError(f"{url}: {status}")
    cpu_ms = {
        f"{name}_cpu_ms_per_request": round((probe() - cpu0[name]) * 1000 / args.requests, 1)
        for name, probe in probes.items()
    }
    return {
        "p50_ms": round(pct(times, 0.5), 1),
        "p90_ms": round(pct(times, 0.9), 1),
        "max_ms": round(max(times), 1),
        "bytes": len(body),
        **cpu_ms,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
        workdir = Path(tmp)
        os.chmod(tmp, 0o711)  # as root, the embedded PostgreSQL user must traverse it
        async with (
            proxy_bench.postgres(workdir) as (dsn, pg_pid),
            FakeClerk() as clerk,
        ):
            conn = await asyncpg.connect(dsn, timeout=30)
            try:
                pg_version = await conn.fetchval("SHOW server_version")
                seeded = await seed_usage(conn, args, clerk)
                print(f"seeded: {seeded['rows']}", file=sys.stderr)
                today = dt.datetime.now(dt.UTC).date()
                year_ago = today - dt.timedelta(days=365)
                plan = await explain_year(conn, seeded["user_id"], year_ago, today)
                groups = await conn.fetchval(
                    """SELECT count(DISTINCT ((created_at AT TIME ZONE 'UTC')::date, model,
                                              instance_id))
                       FROM usage_logs WHERE user_id = $1
                         AND created_at >= $2::date AT TIME ZONE 'UTC'""",
                    uuid.UUID(seeded["user_id"]),
                    year_ago,
                )
            finally:
                await conn.close()
            daemon = DaemonProcess(
                workdir,
                database_url=dsn,
                env={"BLITZCLAW_CLERK_SECRET_KEY": clerk.secret_key},
                name="bench-daemon",
            )
            proxy_bench.add_daemon_keys(daemon, {"log_level": "warning"})
            origin = daemon.api_url  # the pages' origin: the session token's azp
            with daemon.config_path.open("a") as fh:
                fh.write(
                    f'[auth]\nclerk_jwks_url = "{clerk.jwks_url}"\n'
                    f'clerk_api_url = "{clerk.api_url}"\n'
                    f'clerk_frontend_api = "{clerk.frontend_api}"\n'
                    f'clerk_publishable_key = "pk_test_fake"\nallowed_origins = ["{origin}"]\n'
                )
            token = clerk.mint(seeded["clerk_user_id"], ttl=3600, azp=origin)
            iid = seeded["instances"][0]
            year = f"from={year_ago.isoformat()}&to={today.isoformat()}"

            def csv_lines(body: bytes) -> None:
                lines = len(list(csv.reader(io.StringIO(body.decode())))) - 1
                if lines != groups:
                    raise RuntimeError(f"year CSV: {lines} lines, expected {groups}")

            def all_instances(body: bytes) -> None:  # the signed-in user's page, not sign-in's
                if not all(i.encode() in body for i in seeded["instances"]):
                    raise RuntimeError("/dashboard does not list the user's instances")

            def no_problem(body: bytes) -> None:
                if b"At most" in body or b"Dates look like" in body:
                    raise RuntimeError("the year's range was refused")

            pages: list[tuple[str, str, Callable[[bytes], None] | None]] = [
                ("/dashboard", "/dashboard", all_instances),
                ("/dashboard/usage (30 days)", "/dashboard/usage", None),
                ("/dashboard/usage (a year)", f"/dashboard/usage?{year}", no_problem),
                ("/dashboard/usage.csv (a year)", f"/dashboard/usage.csv?{year}", csv_lines),
                ("/instances/new", "/instances/new", None),
                ("/instances/{id}", f"/instances/{iid}", None),
                ("/dashboard/topup", "/dashboard/topup", None),
                ("/settings", "/settings", None),
            ]
            results: dict[str, Any] = {}
            try:
                await daemon.start()
                async with aiohttp.ClientSession(
                    headers={"Cookie": f"__session={token}"},
                    timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
                ) as session:
                    await daemon.wait_ready(session, deadline=60)
                    assert daemon.proc is not None
                    dpid = daemon.proc.pid
                    probes = {"daemon": lambda: proxy_bench._cpu_of(dpid)}
                    if pg_pid is not None:
                        probes["postgres"] = lambda: proxy_bench._postgres_cpu(pg_pid)
                    await asyncio.sleep(1)  # its first timers ran
                    for name, path, check in pages:
                        results[name] = await measure_page(
                            session, daemon.api_url + path, args, probes, check
                        )
                        print(f"{name}: {results[name]}", file=sys.stderr)
            except BaseException:
                sys.stderr.write("--- daemon log (tail) ---\n" + daemon.log_text()[-4000:] + "\n")
                raise
            finally:
                await daemon.stop(deadline=30)
    return {
        "pages": results,
        "requests_per_page": args.requests,
        "warmup_per_page": args.warmup,
        "seeded": {k: v for k, v in seeded.items() if k not in ("instances", "clerk_user_id")},
        "year_csv_lines": groups,
        "year_query_plan": plan,
        "machine": proxy_bench.machine(pg_version),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": proxy_bench.command_line(),
        "code": proxy_bench.code_version(),
        "quick": args.quick,
        "notes": [
            "Latency: one request at a time on a keep-alive loopback connection, from send to "
            "the body's last byte (the client's view of the server's time). The client, the "
            "daemon and PostgreSQL share the machine's cores.",
            "CPU per request: the daemon process, and PostgreSQL with all its backends, "
            "over the timed requests (10 ms ticks).",
            "/dashboard sums this calendar month's usage, so it grows through the month.",
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="30 days, 5 requests per page")
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--per-day", type=int, default=200, help="per instance and model")
    parser.add_argument("--other-users", type=int, default=10)
    parser.add_argument("--other-per-day", type=int, default=100)
    parser.add_argument("--requests", type=int, default=50, help="timed requests per page")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.days, args.requests, args.warmup = 30, 5, 1
    out = args.out or (QUICK_OUT if args.quick else DEFAULT_OUT)
    result = uvloop.run(run(args))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("pages", "seeded", "machine")}, indent=2))
    print(f"written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    os._exit(130)
