"""Benchmark of the metering token proxy: direct-to-upstream vs through the proxy, in one run.

    .venv/bin/python bench/proxy.py            # the full run, writes bench/results/proxy.json
    .venv/bin/python bench/proxy.py --quick    # a smoke run with small counts (< 60 s)

It starts a private PostgreSQL (or uses $BLITZCLAW_BENCH_DATABASE_URL, a role with CREATEDB),
the fake Anthropic/OpenAI upstream and the daemon, each in its own process, seeds users with
money, then drives OpenClaw-shaped Anthropic requests (POST /v1/messages, streaming and not) at
concurrency 1, 16, 256 and 1000, first straight at the fake and then through the proxy. Finally it
checks the ledger to the micro-dollar and writes the results. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import gc
import json
import math
import os
import platform
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import orjson
import uvloop

from blitzclawd.db.embedded import EmbeddedPostgres
from blitzclawd.db.migrate import migrate
from blitzclawd.proxy.connector import MostRecentFirstConnector
from blitzclawd.proxy.errors import PROXY_REQUEST_ID_HEADER
from blitzclawd.testing import seed
from blitzclawd.testing.daemon_process import DaemonProcess, free_port
from blitzclawd.testing.fake_llm import SCENARIO_HEADER, FakeLLM

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "results" / "proxy.json"
QUICK_OUT = Path(tempfile.gettempdir()) / "blitzclawd-bench-proxy-quick.json"
DATABASE_URL_ENV = "BLITZCLAW_BENCH_DATABASE_URL"

MODEL = "claude-sonnet-4-6"
MAX_TOKENS = 1024
OUTPUT_TOKENS = 20
# A realistic but short answer, no generation delay: the benchmark measures proxy overhead.
SCENARIO = {"output_tokens": OUTPUT_TOKENS, "tokens_per_chunk": 4, "chunk_delay": 0.0}
# The held phase: every stream stays open ~3 s (5 chunks x 0.6 s), longer than admitting them
# all takes, so they are all open through the proxy at once.
HELD_SCENARIO = orjson.dumps({"chunk_delay": 0.6}).decode()
CONCURRENCIES = (1, 16, 256, 1000)
MODES = ("stream", "nonstream")
TARGETS = ("direct", "proxy")
REQUEST_TIMEOUT = 60.0  # seconds, per request
STREAM_END = b"event: message_stop\n"

# Targets from issue 3 (Acceptance).
TARGET_ADDED_P50_MS = 1.0
TARGET_ADDED_P99_MS = 3.0
TARGET_STREAM_RPS_256 = 1000.0


@dataclass(frozen=True, slots=True)
class Plan:
    users: int
    credit_usd: int
    counts: dict[int, int]  # concurrency -> measured requests per phase
    warmup: dict[int, int]  # concurrency -> warm-up requests before the phase
    phase_limit: float  # seconds: no new request starts after this
    held_streams: int
    body_kb: int
    pool_max: int
    concurrencies: tuple[int, ...] = CONCURRENCIES


def make_plan(args: argparse.Namespace) -> Plan:
    if args.latency_only:  # concurrency 1 only, full counts: for working on the added latency
        return Plan(
            users=args.users,
            credit_usd=10_000,
            counts={1: 2000},
            warmup={1: 200},
            phase_limit=120.0,
            held_streams=0,
            body_kb=args.body_kb,
            pool_max=args.pool_max,
            concurrencies=(1,),
        )
    if args.quick:
        counts = {1: 100, 16: 300, 256: 600, 1000: 1000}
        warmup = {1: 20, 16: 32, 256: 256, 1000: 1000}
        limit = 15.0
    else:
        counts = {1: 2000, 16: 4000, 256: 8000, 1000: 10000}
        warmup = {1: 200, 16: 400, 256: 1000, 1000: 2000}
        limit = 120.0
    return Plan(
        users=args.users,
        credit_usd=10_000,
        counts=counts,
        warmup=warmup,
        phase_limit=limit,
        held_streams=args.held_streams,
        body_kb=args.body_kb,
        pool_max=args.pool_max,
    )


# -- the request ----------------------------------------------------------------------------------

_PERSONA = (
    "You are Claw, a personal assistant living in the user's Telegram. You are warm, direct and "
    "brief. You keep track of the user's plans, remind them of what matters, draft messages for "
    "them and look things up. You never invent facts; when unsure you say so and offer to check. "
)
_TOOLS = [
    {
        "name": name,
        "description": description,
        "input_schema": {
            "type": "object",
            "properties": {
                arg: {"type": "string", "description": f"The {arg} for {name}."} for arg in args
            },
            "required": list(args[:1]),
        },
    }
    for name, description, args in (
        ("read", "Read a file from the workspace.", ("path", "offset", "limit")),
        ("write", "Write a file in the workspace.", ("path", "content")),
        ("exec", "Run a shell command in the workspace.", ("command", "timeout", "cwd")),
        ("web_search", "Search the web and return the top results.", ("query", "count")),
        ("web_fetch", "Fetch a web page and return it as markdown.", ("url", "max_chars")),
        ("message", "Send a message to the user's channel.", ("text", "reply_to")),
        ("memory_search", "Search MEMORY.md and past notes.", ("query",)),
        ("cron", "Schedule a reminder or a recurring task.", ("schedule", "task")),
    )
]


def openclaw_body(stream: bool, size_kb: int) -> bytes:
    """An OpenClaw-shaped Anthropic Messages request of about `size_kb` KB."""
    workspace = "".join(
        f"## {name}\n{_PERSONA}\n" for name in ("AGENTS.md", "SOUL.md", "IDENTITY.md", "USER.md")
    )
    turns = [
        ("user", "Hi! Can you remind me what I planned for Saturday?"),
        ("assistant", "You planned a hike at 9 and dinner with Sam at 7. Want a reminder?"),
        ("user", "Yes, remind me Friday evening. Also, what's a good trail near the lake?"),
    ]

    def build(padding: int) -> dict[str, Any]:
        return {
            "model": MODEL,
            "max_tokens": MAX_TOKENS,
            "stream": stream,
            "system": [
                {
                    "type": "text",
                    "text": workspace + (_PERSONA * (padding // len(_PERSONA) + 1))[:padding],
                    "cache_control": {"type": "ephemeral"},
                }
            ],
            "tools": _TOOLS,
            "thinking": {"type": "disabled"},
            "messages": [
                {"role": role, "content": [{"type": "text", "text": text}]} for role, text in turns
            ],
        }

    base = len(orjson.dumps(build(0)))
    return orjson.dumps(build(max(0, size_kb * 1024 - base)))


# -- processes: PostgreSQL, the fake upstream, the daemon -----------------------------------------


def with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + name))


async def _admin(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=30)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def postgres(workdir: Path) -> AsyncIterator[tuple[str, int | None]]:
    """(DSN of a fresh migrated database, postmaster pid when embedded); all removed afterwards."""
    cluster: EmbeddedPostgres | None = None
    server = os.environ.get(DATABASE_URL_ENV)
    if not server:
        cluster = EmbeddedPostgres(workdir / "pg")
        server = await cluster.start()
    name = f"blitzclawd_bench_{uuid.uuid4().hex[:12]}"
    created = False
    try:
        await _admin(server, f'CREATE DATABASE "{name}"')
        created = True
        dsn = with_database(server, name)
        conn = await asyncpg.connect(dsn, timeout=30)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        yield dsn, (cluster.pid if cluster is not None else None)
    finally:
        try:
            if created:
                await _admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            if cluster is not None:
                await cluster.stop()


@contextlib.asynccontextmanager
async def fake_upstream() -> AsyncIterator[tuple[str, int]]:
    """The fake in its own process (uvloop); yields (base URL, pid)."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "blitzclawd.testing.fake_llm",
        "--port",
        str(port),
        "--scenario",
        orjson.dumps(SCENARIO).decode(),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(300):  # 15 s
                if proc.returncode is not None:
                    err = await proc.stderr.read() if proc.stderr else b""
                    raise RuntimeError(f"fake upstream exited {proc.returncode}: {err.decode()}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(base + "/_fake/stats") as resp:
                        if resp.status == 200:
                            break
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError("fake upstream did not answer within 15 s")
        yield base, proc.pid
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def daemon_config(fake_url: str, pool_max: int) -> str:
    big = 10**9
    return (
        f"[database]\npool_min = {min(10, pool_max)}\npool_max = {pool_max}\n"
        f'[upstream]\nanthropic_url = "{fake_url}"\nopenai_url = "{fake_url}"\n'
        f"[limits]\nmessages_per_hour = {big}\ntokens_per_day = {big * 1000}\n"
    )


def add_daemon_keys(daemon: DaemonProcess, keys: dict[str, Any]) -> None:
    """DaemonProcess writes its own [daemon] table; a TOML table cannot be repeated, so our
    daemon keys go into that table (the file is rewritten before start())."""
    text = daemon.config_path.read_text()
    if "[daemon]\n" not in text:
        raise RuntimeError(f"no [daemon] table in {daemon.config_path}")
    lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items())
    daemon.config_path.write_text(text.replace("[daemon]\n", "[daemon]\n" + lines, 1))


@contextlib.asynccontextmanager
async def daemon_process(
    workdir: Path, dsn: str, fake_url: str, pool_max: int, status: dict[str, Any]
) -> AsyncIterator[DaemonProcess]:
    daemon = DaemonProcess(
        workdir,
        database_url=dsn,
        config_extra=daemon_config(fake_url, pool_max),
        env={
            "BLITZCLAW_ANTHROPIC_API_KEY": FakeLLM.anthropic_key,
            "BLITZCLAW_OPENAI_API_KEY": FakeLLM.openai_key,
        },
        name="bench-daemon",
    )
    add_daemon_keys(daemon, {"log_level": "warning", "shutdown_grace": 5.0})
    try:
        await daemon.start()
        async with aiohttp.ClientSession() as session:
            await daemon.wait_ready(session, deadline=60)
        yield daemon
    except BaseException:
        sys.stderr.write("--- daemon log (tail) ---\n" + daemon.log_text()[-4000:] + "\n")
        raise
    finally:
        status["daemon_exit"] = await daemon.stop(deadline=30)
        status["daemon_log_tail"] = [
            line for line in daemon.log_text().splitlines()[-20:] if line.strip()
        ]


# -- CPU accounting -------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _proc_stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            raw = fh.read()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()  # fields from 3 (state) on


def _cpu_of(pid: int, *, children: bool = False) -> float:
    fields = _proc_stat(pid)
    if fields is None:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # reaped children (exited backends)
    return ticks / _TICK


def _postgres_cpu(postmaster: int) -> float:
    total = _cpu_of(postmaster, children=True)
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _proc_stat(int(entry.name))
            if fields is not None and fields[1] == str(postmaster):
                total += (int(fields[11]) + int(fields[12])) / _TICK
    return total


def _machine_busy() -> float:
    with open("/proc/stat") as fh:
        ticks = [int(v) for v in fh.readline().split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / _TICK  # all but idle and iowait


async def machine_busy_cores(seconds: float) -> float:
    """How many cores something else keeps busy, averaged over `seconds`."""
    before, t0 = _machine_busy(), time.monotonic()
    await asyncio.sleep(seconds)
    return round((_machine_busy() - before) / (time.monotonic() - t0), 2)


@dataclass
class CpuProbe:
    """CPU seconds used so far by each process of the benchmark."""

    pids: dict[str, int | None]

    def sample(self) -> dict[str, float]:
        times = os.times()
        out = {"client": times.user + times.system}
        for name, pid in self.pids.items():
            if pid is not None:
                out[name] = _postgres_cpu(pid) if name == "postgres" else _cpu_of(pid)
        # Busy time of the whole machine: what is not ours above is kernel work (loopback
        # networking, softirqs) or a process that is not part of the benchmark.
        out["machine_busy"] = _machine_busy()
        return out


# -- load generation ------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    url: str
    headers: list[dict[str, str]]  # round-robin over them (one per instance for the proxy)
    session: aiohttp.ClientSession


@dataclass
class PhaseResult:
    target: str
    mode: str
    concurrency: int
    planned: int
    started: int = 0
    completed: int = 0
    wall_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    max_open: int = 0  # most responses open (headers received, body not finished) at once
    truncated: bool = False  # the time limit stopped it before `planned`
    cpu_s: dict[str, float] = field(default_factory=dict)
    after_load: bool = False  # the concurrency-1 re-run after the throughput phases

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def rps(self) -> float:
        return self.completed / self.wall_s if self.wall_s > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        lat = quantiles_ms(self.latencies)
        return {
            "target": self.target,
            "mode": self.mode,
            "concurrency": self.concurrency,
            "after_load": self.after_load,
            "planned": self.planned,
            "started": self.started,
            "completed": self.completed,
            "errors": self.error_count,
            "error_kinds": dict(self.errors),
            "wall_s": round(self.wall_s, 3),
            "rps": round(self.rps, 1),
            "latency_ms": lat,
            "max_open_responses": self.max_open,
            "truncated_by_time_limit": self.truncated,
            "cpu_ms_per_request": {
                k: round(v * 1000 / self.completed, 3) if self.completed else None
                for k, v in self.cpu_s.items()
            },
            "cpu_utilisation_cores": {
                k: round(v / self.wall_s, 2) if self.wall_s else None for k, v in self.cpu_s.items()
            },
            "cpu_other_cores": round(self.other_cpu_s / self.wall_s, 2) if self.wall_s else None,
        }

    @property
    def other_cpu_s(self) -> float:
        """Machine busy time not used by the benchmark's own processes."""
        ours = sum(v for k, v in self.cpu_s.items() if k != "machine_busy")
        return max(0.0, self.cpu_s.get("machine_busy", 0.0) - ours)


def quantiles_ms(samples: list[float]) -> dict[str, float] | None:
    if not samples:
        return None
    ordered = sorted(samples)

    def rank(q: float) -> float:
        return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000, 3)

    return {
        "n": len(ordered),
        "p50": rank(0.50),
        "p90": rank(0.90),
        "p99": rank(0.99),
        "max": round(ordered[-1] * 1000, 3),
        "mean": round(sum(ordered) / len(ordered) * 1000, 3),
    }


class Ledger:
    """Request ids of the proxied requests, as the proxy reported them (X-BlitzClaw-Request-Id)."""

    def __init__(self) -> None:
        self.completed: set[str] = set()
        self.failed: set[str] = set()  # answered, but not a complete 200
        self.completed_without_id = 0


async def run_phase(
    target: Target,
    body: bytes,
    stream: bool,
    concurrency: int,
    count: int,
    limit_s: float,
    ledger: Ledger,
    probe: CpuProbe,
    *,
    extra_headers: dict[str, str] | None = None,
) -> PhaseResult:
    result = PhaseResult(target.name, "stream" if stream else "nonstream", concurrency, count)
    deadline = time.monotonic() + limit_s
    headers = [{**h, **(extra_headers or {})} for h in target.headers]
    n_headers = len(headers)
    post = target.session.post
    url = target.url
    latencies = result.latencies
    errors = result.errors
    proxied = target.name == "proxy"
    next_index = 0
    open_now = 0

    async def one(i: int) -> None:
        nonlocal open_now
        t0 = time.perf_counter()
        try:
            async with post(url, data=body, headers=headers[i % n_headers]) as resp:
                open_now += 1
                if open_now > result.max_open:
                    result.max_open = open_now
                try:
                    data = await resp.read()
                finally:
                    open_now -= 1
                status = resp.status
                rid = resp.headers.get(PROXY_REQUEST_ID_HEADER)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            errors[type(exc).__name__] += 1
            return
        elapsed = time.perf_counter() - t0
        if status != 200:
            errors[f"http_{status}"] += 1
            ok = False
        elif stream:
            ok = data.rfind(STREAM_END) >= 0 and b"event: error" not in data
            if not ok:
                errors["broken_stream"] += 1
        else:
            try:
                ok = orjson.loads(data).get("stop_reason") == "end_turn"
            except (orjson.JSONDecodeError, AttributeError):
                ok = False
            if not ok:
                errors["bad_body"] += 1
        if proxied:
            if rid is None:
                if ok:
                    ledger.completed_without_id += 1
            else:
                (ledger.completed if ok else ledger.failed).add(rid)
        if ok:
            result.completed += 1
            latencies.append(elapsed)

    async def worker() -> None:
        nonlocal next_index
        while next_index < count:
            if time.monotonic() > deadline:
                result.truncated = True
                return
            i = next_index
            next_index += 1
            result.started += 1
            await one(i)

    before = probe.sample()
    t0 = time.perf_counter()
    tasks = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
    try:
        # Every request has its own timeout; this bounds the phase as a whole as well.
        done, pending = await asyncio.wait(tasks, timeout=limit_s + REQUEST_TIMEOUT + 30)
        if pending:
            errors["phase_timeout"] += result.started - result.completed - result.error_count
            result.truncated = True
        for task in done:
            task.result()  # a bug in the load generator must not pass unnoticed
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    result.wall_s = time.perf_counter() - t0
    after = probe.sample()
    result.cpu_s = {k: after[k] - before.get(k, 0.0) for k in after}
    return result


# -- database side --------------------------------------------------------------------------------


async def seed_users(dsn: str, plan: Plan) -> tuple[list[seed.SeededInstance], dict[str, int]]:
    conn = await asyncpg.connect(dsn, timeout=30)
    try:
        instances = []
        for _ in range(plan.users):
            user = await seed.create_user(conn)
            instances.append(await seed.create_instance(conn, user))
            await seed.credit(conn, user, plan.credit_usd * 1_000_000)
        rows = await conn.fetch("SELECT user_id::text, balance_micros FROM balances")
        return instances, {r[0]: r[1] for r in rows}
    finally:
        await conn.close()


async def wait_no_open_reservations(conn: asyncpg.Connection, limit_s: float) -> int:
    """Requests still in flight (records not yet deleted by their settlement) after waiting."""
    end = time.monotonic() + limit_s
    while True:
        left = await conn.fetchval("SELECT count(*) FROM reservations")
        if left == 0 or time.monotonic() > end:
            return left
        await asyncio.sleep(0.1)


async def check_ledger(
    dsn: str, before: dict[str, int], ledger: Ledger, input_tokens: set[int]
) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn, timeout=30)
    try:
        open_left = await wait_no_open_reservations(conn, 60)
        after = {
            r[0]: r[1]
            for r in await conn.fetch("SELECT user_id::text, balance_micros FROM balances")
        }
        drop = sum(before[u] - after.get(u, 0) for u in before)
        cost_sum = await conn.fetchval(
            "SELECT coalesce(sum(cost_micros), 0)::bigint FROM usage_logs"
        )
        usage_entries = await conn.fetchval(
            "SELECT coalesce(sum(-amount_micros), 0)::bigint FROM ledger_entries "
            "WHERE kind = 'usage'"
        )
        unmatched = await conn.fetchval(
            """SELECT count(*) FROM ledger_entries l WHERE l.kind = 'usage' AND NOT EXISTS (
                   SELECT FROM usage_logs u
                   WHERE u.request_id::text = l.reference AND u.cost_micros = -l.amount_micros)"""
        )
        costed_without_entry = await conn.fetchval(
            """SELECT count(*) FROM usage_logs u WHERE u.cost_micros > 0 AND NOT EXISTS (
                   SELECT FROM ledger_entries l
                   WHERE l.kind = 'usage' AND l.reference = u.request_id::text)"""
        )
        logged = {r[0] for r in await conn.fetch("SELECT request_id::text FROM usage_logs")}
        flags = await conn.fetchrow(
            """SELECT count(*) FILTER (WHERE recovered), count(*) FILTER (WHERE interrupted),
                      count(*) FILTER (WHERE output_tokens <> $1
                                          OR NOT (input_tokens = ANY($2::bigint[]))),
                      count(*) FILTER (WHERE status_code <> 200)
               FROM usage_logs""",
            OUTPUT_TOKENS,
            sorted(input_tokens),
        )
        reserved = await conn.fetchval(
            "SELECT coalesce(sum(reserved_micros), 0)::bigint FROM balances"
        )
        leased = await conn.fetchval(
            "SELECT coalesce(sum(amount_micros), 0)::bigint FROM balance_leases"
        )
        paused = await conn.fetchval("SELECT count(*) FROM instances WHERE status <> 'active'")
    finally:
        await conn.close()
    missing = ledger.completed - logged  # completed through the proxy, never settled
    unexpected = logged - ledger.completed  # settled, but not a request we saw complete
    checks = {
        # The running daemon still holds its leases; nothing else may be held.
        "no_open_reservations": open_left == 0 and reserved == leased,
        "usage_cost_equals_balance_drop": cost_sum == drop,
        "usage_ledger_entries_equal_usage_cost": usage_entries == cost_sum,
        "every_usage_entry_matches_a_usage_row": unmatched == 0 and costed_without_entry == 0,
        "usage_rows_equal_completed_requests": len(logged) == len(ledger.completed)
        and not missing
        and not unexpected
        and ledger.completed_without_id == 0,
        "token_counts_as_sent_by_upstream": flags[2] == 0,
    }
    return {
        "ledger_exact": all(checks.values()),
        "checks": checks,
        "usage_cost_micros": cost_sum,
        "balance_drop_micros": drop,
        "usage_ledger_entries_micros": usage_entries,
        "usage_rows": len(logged),
        "proxied_completed": len(ledger.completed),
        "proxied_failed_with_request_id": len(ledger.failed),
        "completed_without_request_id": ledger.completed_without_id,
        "completed_not_settled": len(missing),
        "settled_not_completed": len(unexpected),
        "unmatched_usage_ledger_entries": unmatched,
        "costed_usage_rows_without_ledger_entry": costed_without_entry,
        "recovered_rows": flags[0],
        "interrupted_rows": flags[1],
        "rows_with_unexpected_tokens": flags[2],
        "rows_with_non_200_status": flags[3],
        "open_reservations_left": open_left,
        "reserved_micros_left": reserved,
        "leased_micros_left": leased,
        "instances_not_active": paused,
    }


# -- the run --------------------------------------------------------------------------------------


def code_version() -> dict[str, Any]:
    """The commit measured, and whether the working tree differed from it."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30, check=False
        )
        return done.stdout.strip()

    changed = [line for line in git("status", "--porcelain").splitlines() if line]
    return {"commit": git("rev-parse", "HEAD") or None, "uncommitted_changes": len(changed)}


def command_line() -> str:
    python = Path(sys.executable)
    with contextlib.suppress(ValueError):
        python = python.relative_to(ROOT)
    return shlex.join([str(python), *sys.argv])


def machine(pg_version: str) -> str:
    cpu = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, PostgreSQL {pg_version}"
    )


async def fake_stats(base: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.get(base + "/_fake/stats") as resp:
            return await resp.json()


def client_session(limit: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=MostRecentFirstConnector(limit=limit, limit_per_host=0, keepalive_timeout=300),
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
        auto_decompress=False,
    )


async def measure(
    plan: Plan,
    targets: dict[str, Target],
    bodies: dict[str, bytes],
    ledger: Ledger,
    probe: CpuProbe,
    dsn: str,
    log: Callable[[str], None],
) -> tuple[list[PhaseResult], list[PhaseResult], PhaseResult | None]:
    phases: list[PhaseResult] = []
    warmups: list[PhaseResult] = []
    conn = await asyncpg.connect(dsn, timeout=30)

    async def measure_one(mode: str, c: int, name: str, *, after_load: bool = False) -> None:
        stream = mode == "stream"
        target = targets[name]
        if name == "proxy":  # start each proxy phase with nothing left to settle
            await wait_no_open_reservations(conn, 30)
        warm = await run_phase(
            target, bodies[mode], stream, c, plan.warmup[c], plan.phase_limit, ledger, probe,
        )  # fmt: skip
        warmups.append(warm)
        gc.collect()
        if name == "proxy":
            await wait_no_open_reservations(conn, 30)
        phase = await run_phase(
            target, bodies[mode], stream, c, plan.counts[c], plan.phase_limit, ledger, probe,
        )  # fmt: skip
        phase.after_load = after_load
        phases.append(phase)
        lat = quantiles_ms(phase.latencies) or {}
        log(
            f"{name:6} {mode:9} c={c:<4} {phase.completed:>6}/{phase.planned:<6} "
            f"{phase.rps:8.0f} req/s  p50 {lat.get('p50', float('nan')):7.2f} ms  "
            f"p99 {lat.get('p99', float('nan')):7.2f} ms  errors {phase.error_count}"
            f"  (warm-up errors {warm.error_count})"
            f"  other load {phase.summary()['cpu_other_cores']} cores"
            + ("  [after load]" if after_load else "")
        )

    try:
        # Latency first (concurrency 1, on the freshly started daemon), then throughput; at the
        # end concurrency 1 once more, on the state the load left behind (after_load).
        for mode in MODES:
            for name in TARGETS:
                await measure_one(mode, 1, name)
        for mode in MODES:
            for c in plan.concurrencies:
                if c == 1:
                    continue
                for name in TARGETS:
                    await measure_one(mode, c, name)
        held = None
        if plan.held_streams:
            await wait_no_open_reservations(conn, 30)
            held = await run_phase(
                targets["proxy"], bodies["stream"], True, plan.held_streams, plan.held_streams,
                plan.phase_limit, ledger, probe,
                extra_headers={SCENARIO_HEADER: HELD_SCENARIO},
            )  # fmt: skip
            log(
                f"held   stream    c={plan.held_streams:<4} {held.completed} streams, "
                f"{held.max_open} open at once, {held.wall_s:.2f} s, errors {held.error_count}"
            )
        if len(plan.concurrencies) > 1:
            for mode in MODES:
                for name in TARGETS:
                    await measure_one(mode, 1, name, after_load=True)
    finally:
        await conn.close()
    return phases, warmups, held


def added_latency(by: dict[tuple[str, str, int], PhaseResult]) -> dict[str, Any]:
    latency = {t: {m: quantiles_ms(by[t, m, 1].latencies) for m in MODES} for t in TARGETS}
    added: dict[str, Any] = {}
    for m in MODES:
        d, p = latency["direct"][m], latency["proxy"][m]
        added[m] = (
            {q: round(p[q] - d[q], 3) for q in ("p50", "p90", "p99", "mean")} if d and p else None
        )
    return {"latency_ms": latency, "added_latency_ms": added}


def figures(phases: list[PhaseResult]) -> dict[str, Any]:
    by = {(p.target, p.mode, p.concurrency): p for p in phases if not p.after_load}
    after = {(p.target, p.mode, p.concurrency): p for p in phases if p.after_load}
    rps = {
        t: {
            m: {str(c): round(by[t, m, c].rps, 1) for c in CONCURRENCIES if (t, m, c) in by}
            for m in MODES
        }
        for t in TARGETS
    }
    fresh = added_latency(by)
    later = added_latency(after) if after else {"latency_ms": None, "added_latency_ms": None}
    return {
        "rps": rps,
        **fresh,
        "latency_after_load_ms": later["latency_ms"],
        "added_latency_after_load_ms": later["added_latency_ms"],
    }


def print_table(result: dict[str, Any]) -> None:
    rps, lat, added = result["rps"], result["latency_ms"], result["added_latency_ms"]
    print()
    print(
        "requests/s (completed / wall time)    "
        + "".join(f"{'c=' + str(c):>10}" for c in CONCURRENCIES)
    )
    for t in TARGETS:
        for m in MODES:
            row = rps[t][m]
            print(
                f"  {t:6} {m:9}                      "
                + "".join(f"{row.get(str(c), float('nan')):>10.0f}" for c in CONCURRENCIES)
            )
    print()
    print("latency at concurrency 1 (ms)           p50       p90       p99      mean")
    for m in MODES:
        for t in TARGETS:
            q = lat[t][m] or {}
            print(
                f"  {t:6} {m:9}               "
                + "".join(f"{q.get(k, float('nan')):>10.3f}" for k in ("p50", "p90", "p99", "mean"))
            )
        a = added[m] or {}
        print(
            f"  added  {m:9}               "
            + "".join(f"{a.get(k, float('nan')):>10.3f}" for k in ("p50", "p90", "p99", "mean"))
        )
    later = result.get("added_latency_after_load_ms")
    if later:
        print("  added after the throughput phases:")
        for m in MODES:
            a = later[m] or {}
            print(
                f"  added  {m:9}               "
                + "".join(f"{a.get(k, float('nan')):>10.3f}" for k in ("p50", "p90", "p99", "mean"))
            )
    print()
    for name, ok in result["targets"].items():
        print(f"  target {name:45} {'MET' if ok['met'] else 'NOT MET'}  ({ok['value']})")
    print(f"  errors: {result['errors']}   ledger_exact: {result['ledger_exact']}")
    print()


def targets_met(figs: dict[str, Any], errors: int, ledger: dict[str, Any], held: Any) -> dict:
    added = figs["added_latency_ms"]
    stream_rps = figs["rps"]["proxy"]["stream"].get("256", 0.0)
    held_errors = held.error_count if held is not None else None
    worst_p50 = max(added[m]["p50"] for m in MODES if added[m])
    worst_p99 = max(added[m]["p99"] for m in MODES if added[m])
    return {
        f"added_p50_le_{TARGET_ADDED_P50_MS}ms": {
            "met": worst_p50 <= TARGET_ADDED_P50_MS,
            "value": worst_p50,
        },
        f"added_p99_le_{TARGET_ADDED_P99_MS}ms": {
            "met": worst_p99 <= TARGET_ADDED_P99_MS,
            "value": worst_p99,
        },
        f"proxy_stream_rps_c256_ge_{int(TARGET_STREAM_RPS_256)}_settled": {
            "met": stream_rps >= TARGET_STREAM_RPS_256 and ledger["ledger_exact"],
            "value": stream_rps,
        },
        "proxy_1000_concurrent_streams_zero_errors": {
            "met": figs["errors_proxy_stream_1000"] == 0 and held_errors == 0,
            "value": {
                "c1000_phase_errors": figs["errors_proxy_stream_1000"],
                "held_errors": held_errors,
                "held_open_at_once": held.max_open if held is not None else None,
            },
        },
        "zero_errors_overall": {"met": errors == 0, "value": errors},
    }


def cancel_on_signals() -> None:
    """SIGINT/SIGTERM cancel the run once, so every process and directory is still cleaned up
    (a second signal does not interrupt the clean-up)."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()

    def cancel(sig: signal.Signals) -> None:
        sys.stderr.write(f"{sig.name}: stopping and cleaning up\n")
        for s in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(s)
            signal.signal(s, signal.SIG_IGN)
        task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, cancel, sig)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    cancel_on_signals()
    plan = make_plan(args)
    log = print if not args.json_only else (lambda _s: None)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:  # children inherit it: 1000 streams need ~4000 sockets across processes
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    bodies = {
        "stream": openclaw_body(True, plan.body_kb),
        "nonstream": openclaw_body(False, plan.body_kb),
    }
    # The fake bills len(raw body) // 4 input tokens; the proxy passes the body through untouched.
    input_tokens = {len(b) // 4 for b in bodies.values()}
    workdir = Path(tempfile.mkdtemp(prefix="blitzclawd-bench-"))
    os.chmod(workdir, 0o755)  # as root, the embedded cluster runs as an unprivileged user
    status: dict[str, Any] = {}
    started = time.monotonic()
    busy_at_start = await machine_busy_cores(1.0)
    if busy_at_start > 0.2:
        log(f"note: {busy_at_start} cores busy before starting: other work shares the CPUs")
    try:
        async with postgres(workdir) as (dsn, postmaster):
            conn = await asyncpg.connect(dsn, timeout=30)
            try:
                pg_version = await conn.fetchval("SHOW server_version")
                max_conn = int(await conn.fetchval("SHOW max_connections"))
            finally:
                await conn.close()
            # Two pools of pool_max each (main + admission), plus a few of our own.
            pool_max = max(4, min(plan.pool_max, (max_conn - 12) // 2))
            log(f"PostgreSQL {pg_version} (max_connections {max_conn}); daemon pool_max {pool_max}")
            instances, before = await seed_users(dsn, plan)
            async with fake_upstream() as (fake_url, fake_pid):
                async with daemon_process(
                    workdir / "daemon", dsn, fake_url, pool_max, status
                ) as daemon:
                    assert daemon.proc is not None
                    probe = CpuProbe(
                        {"daemon": daemon.proc.pid, "fake": fake_pid, "postgres": postmaster}
                    )
                    ledger = Ledger()
                    limit = max(CONCURRENCIES) + plan.held_streams + 64
                    async with client_session(limit) as direct_s, client_session(limit) as proxy_s:
                        direct_headers = {
                            "x-api-key": FakeLLM.anthropic_key,
                            "anthropic-version": "2023-06-01",
                            "content-type": "application/json",
                        }
                        proxy_headers = [
                            {
                                "x-api-key": inst.api_key,
                                "x-blitzclaw-instance": inst.id,
                                "x-blitzclaw-secret": inst.secret,
                                "anthropic-version": "2023-06-01",
                                "content-type": "application/json",
                            }
                            for inst in instances
                        ]
                        targets = {
                            "direct": Target(
                                "direct", fake_url + "/v1/messages", [direct_headers], direct_s
                            ),
                            "proxy": Target(
                                "proxy", daemon.proxy_url + "/v1/messages", proxy_headers, proxy_s
                            ),
                        }
                        gc.collect()
                        gc.freeze()  # keep the client's GC pauses out of the latencies
                        phases, warmups, held = await measure(
                            plan, targets, bodies, ledger, probe, dsn, log
                        )
                    ledger_result = await check_ledger(dsn, before, ledger, input_tokens)
                    upstream_stats = await fake_stats(fake_url)
            # The daemon has stopped here: a clean stop must not change the ledger.
            conn = await asyncpg.connect(dsn, timeout=30)
            try:
                rows_after_stop = await conn.fetchval("SELECT count(*) FROM usage_logs")
                reserved_after_stop = await conn.fetchval(
                    "SELECT coalesce(sum(reserved_micros), 0)::bigint FROM balances"
                )
            finally:
                await conn.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    everything = [*phases, *warmups, *([held] if held else [])]
    errors = sum(p.error_count for p in everything)
    figs = figures(phases)
    figs["errors_proxy_stream_1000"] = next(
        (
            p.error_count
            for p in phases
            if (p.target, p.mode, p.concurrency) == ("proxy", "stream", 1000)
        ),
        None,
    )
    sent_direct = sum(p.started for p in everything if p.target == "direct")
    sent_proxy = sum(p.started for p in everything if p.target == "proxy")
    result: dict[str, Any] = {
        "machine": machine(pg_version),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": command_line(),
        "code": code_version(),
        "quick": args.quick,
        "latency_only": args.latency_only,
        "added_latency_ms": figs["added_latency_ms"],
        "latency_ms": figs["latency_ms"],
        "added_latency_after_load_ms": figs["added_latency_after_load_ms"],
        "latency_after_load_ms": figs["latency_after_load_ms"],
        "rps": figs["rps"],
        "errors": errors,
        # A clean stop changes no money and gives every lease back.
        "ledger_exact": ledger_result["ledger_exact"]
        and rows_after_stop == ledger_result["usage_rows"]
        and reserved_after_stop == 0,
        "targets": {},
        "ledger": {
            **ledger_result,
            "usage_rows_after_daemon_stop": rows_after_stop,
            "reserved_micros_after_daemon_stop": reserved_after_stop,
        },
        "held_streams": held.summary() if held else None,
        "upstream": {
            "received": upstream_stats.get("received"),
            "completed": upstream_stats.get("completed"),
            "sent_direct": sent_direct,
            "sent_through_proxy": sent_proxy,
        },
        "setup": {
            "request": f"POST /v1/messages {MODEL}, max_tokens {MAX_TOKENS}, "
            f"{len(bodies['stream'])} B OpenClaw-shaped body (system with cache_control, "
            f"{len(_TOOLS)} tools, 3 turns, thinking disabled)",
            "upstream_scenario": SCENARIO,
            "users": plan.users,
            "instances_per_user": 1,
            "credit_usd_per_user": plan.credit_usd,
            "measured_requests": {str(c): n for c, n in plan.counts.items()},
            "warmup_requests": {str(c): n for c, n in plan.warmup.items()},
            "phase_time_limit_s": plan.phase_limit,
            "daemon_pool_max": pool_max,
            "postgres": "external ($" + DATABASE_URL_ENV + ")"
            if os.environ.get(DATABASE_URL_ENV)
            else "embedded (blitzclawd.db.embedded, fsync=on)",
            "daemon_exit": status.get("daemon_exit"),
            "cores_busy_before_start": busy_at_start,
        },
        "phases": [p.summary() for p in phases],
        "warmups": [p.summary() for p in warmups],
        "notes": [
            f"Client (this process, uvloop + aiohttp), fake upstream (own process, uvloop), "
            f"daemon (own process) and PostgreSQL all share the same {os.cpu_count()} cores: "
            "every requests/s figure is for the whole system, and the load generator and "
            "the fake (together ~0.4-0.5 ms of CPU per request) take CPU from the proxy. See "
            "phases[].cpu_ms_per_request for where the CPU went in each phase.",
            "rps = completed requests / wall time of a fixed-count phase, after a warm-up at "
            "the same concurrency (warm-up opens the keep-alive connections). A streamed "
            "request is complete when the whole SSE stream through message_stop was read; an "
            "error is a non-200, a broken stream or a client exception.",
            "phases[].cpu_other_cores: machine busy time not used by the client, fake, daemon "
            "or PostgreSQL (kernel networking work, or unrelated processes disturbing the run).",
            "Added latency = proxy quantile minus direct quantile at concurrency 1, both from "
            "the client's side (send to last byte).",
            "Proxied requests go round-robin over the instances (one per user), so concurrent "
            "settlements and admissions contend on real per-user balance rows.",
            "held_streams: streams that stay open ~3 s each (5 chunks x 0.6 s), all started at "
            "once, to have that many streams open through the proxy simultaneously "
            "(max_open_responses: how many the client had open at the same moment).",
            "ledger_exact: after all phases and no open reservation left, sum(usage_logs.cost) "
            "== sum of balance drops == sum of usage ledger entries, every usage ledger entry "
            "matches its usage_logs row, and the usage_logs request ids are exactly the "
            "X-BlitzClaw-Request-Id of the proxied requests that completed (each settled once).",
        ],
        "daemon_log_tail": status.get("daemon_log_tail", []),
    }
    result["targets"] = targets_met(figs, errors, ledger_result, held)
    result["duration_s"] = round(time.monotonic() - started, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run with small counts")
    parser.add_argument(
        "--out",
        help=f"where to write the JSON (default {DEFAULT_OUT.relative_to(ROOT)}; "
        f"with --quick {QUICK_OUT})",
    )
    parser.add_argument("--users", type=int, default=50, help="users (one instance each)")
    parser.add_argument("--body-kb", type=int, default=6, help="request body size in KB")
    parser.add_argument("--pool-max", type=int, default=40, help="daemon [database] pool_max")
    parser.add_argument(
        "--held-streams", type=int, default=1000, help="streams held open at once (0: skip)"
    )
    parser.add_argument(
        "--latency-only",
        action="store_true",
        help="only the concurrency-1 phases (added latency), written to the temp directory",
    )
    parser.add_argument("--json-only", action="store_true", help="print nothing")
    args = parser.parse_args(argv)
    if args.out is None:  # a partial run never overwrites the real results
        args.out = str(QUICK_OUT if args.quick or args.latency_only else DEFAULT_OUT)
    try:
        result = uvloop.run(run(args))
    except asyncio.CancelledError:
        print("interrupted: nothing written", file=sys.stderr)
        return 130
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    if not args.json_only:
        print_table(result)
        print(f"wrote {out} in {result['duration_s']:.0f} s")
    return 0 if result["errors"] == 0 and result["ledger_exact"] else 1


if __name__ == "__main__":
    sys.exit(main())
