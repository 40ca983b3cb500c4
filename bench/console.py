"""Benchmark of the operator console: 10,000 instances in its table and 1,000 events a second on
its event stream; how long an event takes to reach the screen, a key press to be handled and
drawn, the loop to answer, and what it costs in CPU.

    .venv/bin/python bench/console.py            # writes bench/results/console.json
    .venv/bin/python bench/console.py --quick    # a smoke run (1,000 instances, 5 s of events)

It starts a private PostgreSQL (or uses $BLITZCLAW_BENCH_DATABASE_URL, a role with CREATEDB),
inserts `--users` users and `--instances` instances set-based (INSERT … SELECT generate_series;
created over the past year, mostly active), and starts a real daemon (`blitzclawd serve`, its own
process) with an admin key. A second process is the scripted daemon: a loopback aiohttp server
that answers GET /api/admin/daemons as a daemon does and streams GET /api/admin/events in the
daemon's SSE wire format (`id:`, `event:`, `data:`, a blank line) — once told to start, `--rate`
events a second for `--duration` seconds (at most `--count`), a fixed mix of `proxy` summaries,
`instance` status changes of instances that exist (so in the console's table), `health` results
and `webhook` outcomes; each event's data carries the moment it was written (`bench_sent`,
CLOCK_MONOTONIC, which both processes share).

The console (`ConsoleApp(real daemon, scripted daemon)`) runs headless in this process
(`App.run_test`, 160 x 50), with `blitzclawd_tui.app.INSTANCE_LIMIT` set to `--limit`. Measured:

1. the initial load: from the console's start until its instances table holds every row;
2. update latency: from an event's write until it is in `app.seen_events` (what the console
   handed to its events tab), polled every 5 ms (so up to 5 ms late);
3. input latency, during the storm, one key every 100 ms: cursor down in the instances table and
   switching tabs, from the key event reaching the app (posted as the terminal driver does) until
   its effect is visible (the cursor moved, the tab shown) and then until the screen refreshed
   after it (`App.call_after_refresh`). Not `pilot.press`: it waits for the process to go idle
   (up to 1 s, twice), which a console under a constant stream never does;
4. event-loop lag: a callback every 10 ms on the console's loop, and how late it ran;
5. CPU seconds of this process (the console, its event-reader threads and the probes above), of
   the daemon and of the scripted daemon.

While the daemon's listing allowed at most 1,000 rows (`limit`), the benchmark's daemon is
started with that one maximum raised to `--limit` (the same handler, query and serialisation;
`daemon_listing` in the results says whether it was raised); the table's row count is reported
as it was.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import re
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web
from textual import events

sys.path.insert(0, str(Path(__file__).resolve().parent))
import proxy as proxy_bench

from blitzclawd.testing.daemon_process import DaemonProcess

THIS_FILE = Path(__file__).resolve()
ROOT = THIS_FILE.parent.parent
DEFAULT_OUT = ROOT / "bench" / "results" / "console.json"
QUICK_OUT = Path(tempfile.gettempdir()) / "blitzclawd-bench-console-quick.json"
SIZE = (160, 50)
POLL_SECONDS = 0.005  # how often seen_events is looked at
LAG_SECONDS = 0.010  # the loop-lag probe's period
KEY_SECONDS = 0.100  # one key press this often during the storm
TICK_SECONDS = 0.010  # the scripted daemon writes what is due this often
LOAD_DEADLINE = 180.0  # seconds for the initial load
# The scripted stream's mix: (type, weight).
MIX = (("proxy", 45), ("instance", 40), ("health", 10), ("webhook", 5))
STATUSES = (
    ("active", None),
    ("paused", "balance"),
    ("active", None),
    ("stopped", "operator"),
    ("error", "gateway did not answer"),
)
# Keys pressed during the storm, in turn (the console starts on the overview tab).
KEYS = ("i", "down", "down", "down", "down", "down", "e", "i", "down", "down", "o", "i", "down")
SENT = re.compile(r"bench_sent=([0-9.]+)")
SEQ = re.compile(r"bench_seq=([0-9]+)")

USERS_SQL = """
INSERT INTO users (email, clerk_user_id, created_at)
SELECT 'bench-' || i || '@example.test', 'user_bench_' || i,
       now() - make_interval(days => 400) + make_interval(secs => i)
FROM generate_series(1, $1::int) AS i
"""
# Instance i belongs to user i % users; created over the past year; mostly active.
INSTANCES_SQL = """
INSERT INTO instances (user_id, status, status_reason, channel_type, persona_template,
                       secret_hash, created_at)
SELECT u.id,
       CASE WHEN i % 50 = 7 THEN 'error' WHEN i % 20 = 3 THEN 'stopped'
            WHEN i % 15 = 1 THEN 'paused' ELSE 'active' END,
       CASE WHEN i % 50 = 7 THEN 'gateway did not answer' WHEN i % 15 = 1 THEN 'balance' END,
       CASE WHEN i % 4 = 0 THEN 'whatsapp' ELSE 'telegram' END,
       'assistant',
       sha256(convert_to('bench-secret-' || i, 'UTF8')),
       now() - make_interval(secs => (i * 3137) % (365 * 86400))
FROM generate_series(0, $1::int - 1) AS i
     JOIN (SELECT id, row_number() OVER (ORDER BY created_at) - 1 AS k FROM users) AS u
          ON u.k = i % $2::int
"""

# Run as `python -c WRAPPER LIMIT --config … serve`: the daemon, its instance listing's maximum
# `limit` raised to LIMIT when it is lower (nothing else changed).
WRAPPER = """
import dataclasses, sys
from blitzclawd.http import operations_admin as ops
limit = int(sys.argv.pop(1))
for op in ops.ADMIN_OPERATIONS:
    if op.method == "GET" and op.path == "/api/admin/instances":
        query = tuple(
            dataclasses.replace(q, maximum=limit)
            if q.name == "limit" and getattr(q, "maximum", limit) < limit else q
            for q in op.query
        )
        object.__setattr__(op, "query", query)
from blitzclawd.cli import main
sys.exit(main())
"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))]


def quantiles_ms(values: list[float]) -> dict[str, Any]:
    """p50/p95/p99/max of seconds, in milliseconds."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        **{k: round(pct(values, q) * 1000, 1) for k, q in (("p50", 0.5), ("p95", 0.95))},
        "p99": round(pct(values, 0.99) * 1000, 1),
        "max": round(max(values) * 1000, 1),
    }


def listing_maximum() -> int:
    from blitzclawd.http.operations_admin import ADMIN_OPERATIONS

    op = next(o for o in ADMIN_OPERATIONS if o.method == "GET" and o.path == "/api/admin/instances")
    return next(q.maximum for q in op.query if q.name == "limit")  # type: ignore[attr-defined]


class BenchDaemon(DaemonProcess):
    """`blitzclawd serve` with the instance listing's maximum at least `limit`."""

    def __init__(self, *args: Any, limit: int, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.limit = limit

    async def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                WRAPPER,
                str(self.limit),
                "--config",
                str(self.config_path),
                "serve",
                env=self._env,
                stdout=log,
                stderr=log,
            )


# -- the scripted daemon (its own process) ------------------------------------------------------


class Script:
    """What the scripted daemon streams, and when."""

    def __init__(self, args: argparse.Namespace, instances: list[tuple[str, str]]) -> None:
        self.args = args
        self.instances = instances
        self.random = random.Random(17)
        self.kinds = [kind for kind, weight in MIX for _ in range(weight)]
        self.started: float | None = None
        self.finished: float | None = None
        self.sent = 0
        self.by_type: dict[str, int] = {}
        self.next_id = int(time.time() * 1000) * 1000
        self.go = asyncio.Event()
        self.streams = 0

    def data(self, kind: str, n: int) -> dict[str, Any]:
        at = dt.datetime.now(dt.UTC).isoformat()
        rnd = self.random
        if kind == "proxy":
            requests = rnd.randint(50, 400)
            return {
                "requests": requests,
                "errors": rnd.choice((0, 0, 0, 1)),
                "revenue_usd": round(requests * 0.0021, 6),
                "seconds": 1.0,
            }
        instance_id, user_id = self.instances[rnd.randrange(len(self.instances))]
        if kind == "instance":
            status, reason = STATUSES[n % len(STATUSES)]
            return {
                "instance_id": instance_id,
                "user_id": user_id,
                "status": status,
                "status_reason": reason,
                "at": at,
            }
        if kind == "health":
            ok = n % 7 != 0
            return {
                "instance_id": instance_id,
                "ok": ok,
                "state": "ok" if ok else "down",
                "detail": None if ok else "readyz: connection refused",
                "restarts": 0,
                "at": at,
            }
        return {
            "provider": "creem",
            "event_type": "checkout.completed",
            "event_id": f"evt_bench_{n}",
            "at": at,
        }

    def due(self, now: float) -> int:
        """How many events should have been written by `now` (0 before the start)."""
        if self.started is None:
            return 0
        elapsed = min(now - self.started, self.args.duration)
        return min(self.args.count, int(elapsed * self.args.rate))

    async def events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        await response.write(b"retry: 2000\n\n")
        self.streams += 1
        deadline = time.monotonic() + self.args.lifetime
        with contextlib.suppress(ConnectionResetError):
            while time.monotonic() < deadline:
                if self.started is None:  # not yet told to start
                    try:
                        await asyncio.wait_for(self.go.wait(), 1.0)
                    except TimeoutError:
                        await response.write(b": keep-alive\n\n")
                    continue
                if self.finished is not None:
                    await response.write(b": keep-alive\n\n")
                    await asyncio.sleep(1.0)
                    continue
                chunk = []
                sent = time.monotonic()
                for _ in range(self.due(sent) - self.sent):
                    kind = self.kinds[self.sent % len(self.kinds)]
                    data = self.data(kind, self.sent)
                    data["bench_sent"] = round(sent, 6)
                    self.next_id += 1
                    data["bench_seq"] = self.next_id
                    self.sent += 1
                    self.by_type[kind] = self.by_type.get(kind, 0) + 1
                    line = json.dumps(data, separators=(",", ":"))
                    chunk.append(f"id: {self.next_id}\nevent: {kind}\ndata: {line}\n\n")
                if chunk:
                    await response.write("".join(chunk).encode())
                if self.sent >= self.args.count or sent - self.started >= self.args.duration:
                    self.finished = time.monotonic()
                await asyncio.sleep(TICK_SECONDS - (time.monotonic() - sent) % TICK_SECONDS)
        return response

    async def daemons(self, request: web.Request) -> web.Response:
        now = dt.datetime.now(dt.UTC).isoformat()
        actor = {
            "name": "events",
            "state": "running",
            "restarts": 0,
            "restart": "permanent",
            "last_error": None,
            "strategy": None,
            "children": [],
        }
        return web.json_response(
            {
                "this_daemon": "bench-scripted",
                "actors": [actor],
                "daemons": [
                    {
                        "id": "bench-scripted",
                        "hostname": "scripted",
                        "pid": os.getpid(),
                        "version": "bench",
                        "started_at": now,
                        "last_seen": now,
                        "stopped_at": None,
                    }
                ],
            }
        )

    async def start(self, request: web.Request) -> web.Response:
        if self.started is None:
            self.started = time.monotonic()
            self.go.set()
        return web.json_response({"started": self.started}, status=202)

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "sent": self.sent,
                "by_type": self.by_type,
                "started": self.started,
                "finished": self.finished,
                "streams": self.streams,
                "cpu_s": round(sum(os.times()[:2]), 2),
            }
        )


async def serve_script(args: argparse.Namespace, pairs: list[tuple[str, str]]) -> None:
    script = Script(args, pairs)
    app = web.Application()
    app.router.add_get("/api/admin/daemons", script.daemons)
    app.router.add_get("/api/admin/events", script.events)
    app.router.add_post("/_bench/start", script.start)
    app.router.add_get("/_bench/stats", script.stats)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(port, flush=True)
    try:  # until this process is told to stop (stdin closed), or its lifetime is up
        await asyncio.wait_for(
            asyncio.get_running_loop().run_in_executor(None, sys.stdin.read), args.lifetime
        )
    except TimeoutError:
        pass
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def scripted_daemon(args: argparse.Namespace, ids: Path):
    """The scripted daemon's process; yields (its URL, its pid)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(THIS_FILE),
        "--serve-script",
        "--ids",
        str(ids),
        "--rate",
        str(args.rate),
        "--duration",
        str(args.duration),
        "--count",
        str(args.count),
        "--lifetime",
        str(args.lifetime),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        if not line.strip():
            raise RuntimeError("the scripted daemon did not start")
        yield f"http://127.0.0.1:{int(line)}", proc.pid
    finally:
        if proc.returncode is None:
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


# -- the console, measured -----------------------------------------------------------------------


async def seed(dsn: str, args: argparse.Namespace, ids: Path) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn, timeout=30)
    try:
        t0 = time.perf_counter()
        await conn.execute(USERS_SQL, args.users)
        await conn.execute(INSTANCES_SQL, args.instances, args.users)
        insert_s = time.perf_counter() - t0
        await conn.execute("VACUUM ANALYZE users")
        await conn.execute("VACUUM ANALYZE instances")
        rows = await conn.fetch("SELECT id::text, user_id::text FROM instances")
        text = "".join(f"{r['id']} {r['user_id']}\n" for r in rows)
        await asyncio.to_thread(ids.write_text, text)
        by_status = {
            r["status"]: r["n"]
            for r in await conn.fetch(
                "SELECT status, count(*) AS n FROM instances GROUP BY 1 ORDER BY 1"
            )
        }
        return {
            "users": await conn.fetchval("SELECT count(*) FROM users"),
            "instances": len(rows),
            "instances_by_status": by_status,
            "insert_s": round(insert_s, 2),
            "pg_version": await conn.fetchval("SHOW server_version"),
        }
    finally:
        await conn.close()


def cpu_self() -> float:
    t = os.times()
    return t.user + t.system


async def measure_console(
    args: argparse.Namespace, api_url: str, admin_key: str, scripted: str, expected_rows: int
) -> dict[str, Any]:
    import blitzclawd_tui.app as console
    from blitzclaw.client import BlitzClient

    console.INSTANCE_LIMIT = args.limit
    real = BlitzClient(api_url, admin_key)
    fake = BlitzClient(scripted, "scripted")
    app = console.ConsoleApp(real, fake)
    loop = asyncio.get_running_loop()
    prefix = f"[{fake.api_url}] "
    latencies: list[float] = []
    lags: list[float] = []
    seen_ids: set[int] = set()
    cpu0 = cpu_self()
    started = time.monotonic()
    result: dict[str, Any] = {}
    try:
        async with app.run_test(size=SIZE) as pilot:
            table = app.query_one("#instance-table")
            # 1. the initial load
            while table.row_count < expected_rows:
                if time.monotonic() - started > LOAD_DEADLINE:
                    raise RuntimeError(
                        f"the table held {table.row_count} of {expected_rows} rows after "
                        f"{LOAD_DEADLINE:.0f} s; status line: "
                        f"{app.query_one('#status-line').render()!s}"
                    )
                await asyncio.sleep(POLL_SECONDS)
            load_s = time.monotonic() - started
            cpu_load = cpu_self() - cpu0
            await pilot.press("i")
            await pilot.pause(0)
            first_frame_s = time.monotonic() - started
            await pilot.press("o")
            await pilot.pause(0.5)  # settled: the other first answers are in
            idle_cpu0, idle_t0 = cpu_self(), time.monotonic()
            await asyncio.sleep(2.0)
            idle_cpu = (cpu_self() - idle_cpu0) / (time.monotonic() - idle_t0)

            stop = asyncio.Event()
            last_seen_id = 0

            def look() -> None:
                """New lines of the scripted daemon in seen_events: each one's latency."""
                nonlocal last_seen_id
                now = time.monotonic()
                lines = app.seen_events
                newest = last_seen_id
                for i in range(len(lines) - 1, -1, -1):
                    line = lines[i]
                    if not line.startswith(prefix):
                        continue
                    seq = SEQ.search(line)
                    if seq is None:
                        continue
                    event_id = int(seq.group(1))
                    if event_id <= last_seen_id:
                        break
                    newest = max(newest, event_id)
                    found = SENT.search(line)
                    if found and event_id not in seen_ids:
                        seen_ids.add(event_id)
                        latencies.append(now - float(found.group(1)))
                last_seen_id = newest

            async def poll() -> None:
                while not stop.is_set():
                    look()
                    await asyncio.sleep(POLL_SECONDS)

            async def lag() -> None:
                while not stop.is_set():
                    t = loop.time()
                    await asyncio.sleep(LAG_SECONDS)
                    lags.append(max(0.0, loop.time() - t - LAG_SECONDS))

            async with aiohttp.ClientSession() as http:

                async def stats() -> dict[str, Any]:
                    async with http.get(scripted + "/_bench/stats") as resp:
                        return await resp.json()

                async def press(key: str) -> tuple[float, float]:
                    """The key as the terminal driver hands it over (a Key event posted to the
                    app), then: handled (its effect visible: the cursor one row down, the tab
                    shown) and drawn (the screen refreshed after it). Not pilot.press: it
                    waits for the process to go idle (up to 1 s, twice), which a console under
                    a constant stream never does."""
                    tab = {"i": "instances", "e": "events", "o": "overview"}.get(key)
                    row = table.cursor_row

                    def effect() -> bool:
                        return app.tab == tab if tab else table.cursor_row == row + 1

                    app.post_message(events.Key(key, key if len(key) == 1 else None))
                    for _ in range(30_000):  # 1 ms apart: 30 s at most
                        if effect():
                            break
                        await asyncio.sleep(0.001)
                    else:
                        raise TimeoutError(key)
                    handled = time.perf_counter()
                    drawn = asyncio.Event()
                    app.call_after_refresh(drawn.set)
                    await asyncio.wait_for(drawn.wait(), 30)
                    return handled, time.perf_counter()

                pollers = [asyncio.create_task(poll()), asyncio.create_task(lag())]
                keys: dict[str, list[float]] = {"handled": [], "drawn": []}
                by_key: dict[str, list[float]] = {}
                cursor0 = table.cursor_row
                downs = 0
                timeouts = 0
                cpu_storm0, t_storm0 = cpu_self(), time.monotonic()
                async with http.post(scripted + "/_bench/start") as resp:
                    resp.raise_for_status()
                deadline = time.monotonic() + args.duration + 15
                n = 0
                while time.monotonic() < deadline:
                    key = KEYS[n % len(KEYS)]
                    n += 1
                    t0 = time.perf_counter()
                    try:
                        t1, t2 = await press(key)
                    except TimeoutError:
                        t1 = t2 = time.perf_counter()
                        timeouts += 1
                    keys["handled"].append(t1 - t0)
                    keys["drawn"].append(t2 - t0)
                    name = "down (instances)" if key == "down" else f"switch tab ({key})"
                    by_key.setdefault(name, []).append(t2 - t0)
                    downs += key == "down"
                    if n % 10 == 0 and (await stats())["finished"] is not None:
                        break
                    await asyncio.sleep(max(0.0, KEY_SECONDS - (time.perf_counter() - t0)))
                storm_s = time.monotonic() - t_storm0
                cpu_storm = cpu_self() - cpu_storm0
                sent = await stats()
                # The last events: until every one arrived, or 10 s.
                for _ in range(200):
                    if len(seen_ids) >= sent["sent"]:
                        break
                    await asyncio.sleep(0.05)
                stop.set()
                await asyncio.gather(*pollers)
                look()
                sent = await stats()
            result = {
                "table_rows": table.row_count,
                "expected_rows": expected_rows,
                "initial_load_s": round(load_s, 2),
                "initial_load_cpu_s": round(cpu_load, 2),
                "first_frame_of_the_table_s": round(first_frame_s, 2),
                "idle_cpu_cores": round(idle_cpu, 3),
                "events_sent": sent["sent"],
                "events_by_type": sent["by_type"],
                "events_seen": len(seen_ids),
                "stream_connections": sent["streams"],
                "reconnects": app.reconnects,
                "storm_s": round(storm_s, 1),
                "update_latency_ms": quantiles_ms(latencies),
                "input_latency_ms": {
                    "handled": quantiles_ms(keys["handled"]),
                    "handled_and_drawn": quantiles_ms(keys["drawn"]),
                    "by_key": {k: quantiles_ms(v) for k, v in by_key.items()},
                    "pilot_timeouts": timeouts,
                },
                "cursor_moved_rows": table.cursor_row - cursor0,
                "down_presses": downs,
                "loop_lag_ms": quantiles_ms(lags),
                "console_cpu_s": {
                    "storm": round(cpu_storm, 2),
                    "storm_cores": round(cpu_storm / storm_s, 2),
                    "whole_run": round(cpu_self() - cpu0, 2),
                },
                "scripted_daemon_cpu_s": sent["cpu_s"],
                "status_line": str(app.query_one("#status-line").render()),
            }
    finally:
        real.close()
        fake.close()
    return result


async def run(args: argparse.Namespace) -> dict[str, Any]:
    maximum = listing_maximum()
    with tempfile.TemporaryDirectory(prefix="bench-console-") as tmp:
        workdir = Path(tmp)
        os.chmod(tmp, 0o711)  # as root, the embedded PostgreSQL user must traverse it
        ids = workdir / "instances.txt"
        async with proxy_bench.postgres(workdir) as (dsn, _pg_pid):
            seeded = await seed(dsn, args, ids)
            print(f"seeded: {seeded}", file=sys.stderr)
            admin_key = "blitzclaw-admin-" + uuid.uuid4().hex
            daemon = BenchDaemon(
                workdir,
                database_url=dsn,
                env={"BLITZCLAW_ADMIN_API_KEY": admin_key},
                name="bench-daemon",
                limit=args.limit,
            )
            proxy_bench.add_daemon_keys(daemon, {"log_level": "warning"})
            try:
                await daemon.start()
                async with aiohttp.ClientSession() as session:
                    await daemon.wait_ready(session, deadline=60)
                assert daemon.proc is not None
                dpid = daemon.proc.pid
                daemon_cpu0 = proxy_bench._cpu_of(dpid)
                async with scripted_daemon(args, ids) as (scripted, _spid):
                    expected = min(args.limit, seeded["instances"])
                    measured = await measure_console(
                        args, daemon.api_url, admin_key, scripted, expected
                    )
                daemon_cpu = proxy_bench._cpu_of(dpid) - daemon_cpu0
            except BaseException:
                sys.stderr.write("--- daemon log (tail) ---\n" + daemon.log_text()[-4000:] + "\n")
                raise
            finally:
                await daemon.stop(deadline=30)
    return {
        **measured,
        "daemon_cpu_s": round(daemon_cpu, 2),
        "daemon_listing": {
            "declared_maximum": maximum,
            "asked": args.limit,
            "raised_by_the_benchmark": maximum < args.limit,
        },
        "load": {
            "rate_per_s": args.rate,
            "duration_s": args.duration,
            "count": args.count,
            "mix": dict(MIX),
            "keys": list(KEYS),
            "key_every_s": KEY_SECONDS,
        },
        "seeded": seeded,
        "size": list(SIZE),
        "machine": proxy_bench.machine(seeded["pg_version"]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": proxy_bench.command_line(),
        "code": proxy_bench.code_version(),
        "quick": args.quick,
        "notes": [
            "Update latency: from the scripted daemon's write of an event to the console having "
            "it in app.seen_events (drained to the events tab), polled every 5 ms; both "
            "processes read CLOCK_MONOTONIC.",
            "Input latency: the key posted to the app as a Key event (what the terminal driver "
            "does), until its effect is visible (the table's cursor one row down, the tab "
            "shown: handled), then until the screen refreshed after it (App.call_after_refresh: "
            "drawn; headless, so nothing is written to a terminal). pilot.press is not used: it "
            "waits for the process to go idle (up to 1 s, twice), which a console under a "
            "constant stream never is, so it measured the pilot's wait, not the key.",
            "Loop lag: how late a 10 ms sleep on the console's loop woke up, during the storm.",
            "The console, its two event-reader threads and the probes share this process; the "
            "daemon, the scripted daemon and PostgreSQL are other processes on the same cores.",
        ],
    }


def table(result: dict[str, Any]) -> str:
    def row(name: str, q: dict[str, Any]) -> str:
        if not q.get("n"):
            return f"{name:<34} (no samples)"
        return f"{name:<34} {q['p50']:>8} {q['p95']:>8} {q['p99']:>8} {q['max']:>8}   n={q['n']}"

    inputs = result["input_latency_ms"]
    listing = result["daemon_listing"]
    raised = ", raised by the benchmark" if listing["raised_by_the_benchmark"] else ""
    lines = [
        f"table rows: {result['table_rows']} of {result['expected_rows']} "
        f"(the daemon's listing maximum {listing['declared_maximum']}{raised})",
        f"initial load: {result['initial_load_s']} s (CPU {result['initial_load_cpu_s']} s); "
        f"first frame of the table at {result['first_frame_of_the_table_s']} s",
        f"events: {result['events_sent']} sent, {result['events_seen']} seen in "
        f"{result['storm_s']} s {result['events_by_type']}; reconnects {result['reconnects']}",
        f"{'ms':<34} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8}",
        row("update latency (sent -> seen)", result["update_latency_ms"]),
        row("key handled", inputs["handled"]),
        row("key handled and drawn", inputs["handled_and_drawn"]),
        *(row(f"  {k}", v) for k, v in inputs["by_key"].items()),
        row("event-loop lag (10 ms timer)", result["loop_lag_ms"]),
        f"CPU: console {result['console_cpu_s']['storm']} s over the storm "
        f"({result['console_cpu_s']['storm_cores']} cores), {result['console_cpu_s']['whole_run']}"
        f" s in all; idle before {result['idle_cpu_cores']} cores; daemon "
        f"{result['daemon_cpu_s']} s; scripted daemon {result['scripted_daemon_cpu_s']} s",
        f"cursor moved {result['cursor_moved_rows']} rows for {result['down_presses']} presses",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 instances, 5 s of events")
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--limit", type=int, default=10_000, help="the console's listing limit")
    parser.add_argument("--rate", type=int, default=1_000, help="events a second")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of events")
    parser.add_argument("--count", type=int, default=None, help="at most this many events")
    parser.add_argument("--out", type=Path, default=None)
    # The scripted daemon's own process.
    parser.add_argument("--serve-script", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ids", help=argparse.SUPPRESS)
    parser.add_argument("--lifetime", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.instances, args.users, args.duration = 1_000, 200, 5.0
    if args.count is None:
        args.count = int(args.rate * args.duration)
    if args.lifetime is None:  # the scripted daemon's bound: the whole run, generously
        args.lifetime = args.duration + LOAD_DEADLINE + 120
    if args.serve_script:
        text = Path(args.ids).read_text()
        pairs = [(a, b) for a, b in (line.split() for line in text.splitlines() if line)]
        asyncio.run(serve_script(args, pairs))
        return 0
    out = args.out or (QUICK_OUT if args.quick else DEFAULT_OUT)
    result = asyncio.run(run(args))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    os._exit(130)
