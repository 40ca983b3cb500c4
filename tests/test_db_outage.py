"""A PostgreSQL outage under a real daemon: SIGKILL the server, keep serving, restart it.

The test owns its PostgreSQL (a cluster of its own on loopback, so it can kill and restart it on
the same port) and runs a real `blitzclawd serve` process against it, proxying to the fake LLM.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from conftest import NOTICE_HEADER

from blitzclawd.actors.janitor import Janitor
from blitzclawd.db.embedded import EmbeddedPostgres
from blitzclawd.db.migrate import migrate
from blitzclawd.testing import seed
from blitzclawd.testing.daemon_process import DaemonProcess, proxying_to
from blitzclawd.testing.fake_llm import FakeLLM, Scenario

# The outage lasts 30 s; BLITZCLAW_TEST_OUTAGE_SECONDS shortens it for quick runs.
OUTAGE = float(os.environ.get("BLITZCLAW_TEST_OUTAGE_SECONDS", "30"))
STREAMS = 20
SMALL = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "Say hello."}],
}
# Its worst case ($1.44 at 64,000 output tokens) is more than a lease's headroom ($1): admitting
# it needs a lease grow, a database round trip.
BIG = {**SMALL, "max_tokens": 64000}
STREAM = {**SMALL, "max_tokens": 200, "stream": True}
SLOW_STREAM = '{"output_tokens": 40, "tokens_per_chunk": 1, "chunk_delay": 0.1}'

# Beats every 0.5 s, presumed dead after a silence shorter than the outage: the outage must not
# make the daemon presume itself dead (its requests would be charged by recovery's estimate).
DAEMON = f"heartbeat_interval = 0.5\ndead_after = {max(2.0, OUTAGE / 4)}\n"
CONFIG = """
[billing]
checkpoint_interval = 0.2
lease_idle_seconds = 2
[limits]
messages_per_hour = 100000
[supervisor]
singleton_poll = 0.2
"""


@dataclass
class Served:
    """Every answer the proxy gave, by status; the request ids of those served (200)."""

    statuses: list[int] = field(default_factory=list)
    ok_ids: set[str] = field(default_factory=set)
    refusals: list[tuple[int, str | None, bytes]] = field(default_factory=list)

    def add(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.statuses.append(status)
        if status == 200:
            self.ok_ids.add(headers["X-BlitzClaw-Request-Id"])
        else:
            self.refusals.append((status, headers.get("retry-after"), body))


@pytest.fixture
async def cluster() -> AsyncIterator[EmbeddedPostgres]:
    base = tempfile.mkdtemp(prefix="blitzclawd-outage-pg-")
    os.chmod(base, 0o755)  # as root, the cluster runs as an unprivileged user who must get in
    pg = EmbeddedPostgres(Path(base) / "state")
    try:
        yield pg
    finally:
        await pg.stop()
        shutil.rmtree(base, ignore_errors=True)


def sigkill(pg: EmbeddedPostgres) -> None:
    """Kill the whole server at once: the postmaster and every backend (its process group)."""
    assert pg.pid is not None
    os.killpg(pg.pid, signal.SIGKILL)


async def call(
    http: aiohttp.ClientSession,
    url: str,
    inst: seed.SeededInstance,
    body: dict,
    scenario: str | None = None,
) -> tuple[int, Mapping[str, str], bytes]:
    headers = {**inst.headers, "anthropic-version": "2023-06-01"}
    if scenario:
        headers["x-fake-scenario"] = scenario
    async with http.post(url + "/v1/messages", json=body, headers=headers) as resp:
        return resp.status, resp.headers, await resp.read()


async def readyz(http: aiohttp.ClientSession, base: str) -> tuple[int, dict] | None:
    try:
        async with http.get(base + "/readyz", timeout=aiohttp.ClientTimeout(total=5)) as resp:
            return resp.status, await resp.json()
    except (aiohttp.ClientError, TimeoutError):
        return None


async def until(check, deadline: float, what: str):
    """Poll an async predicate until it returns a truthy value, or fail after `deadline` s."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {deadline}s: {what}")


@pytest.mark.timeout(180 + 2 * OUTAGE)
async def test_a_postgres_sigkill_is_ridden_out(cluster: EmbeddedPostgres, tmp_path: Path) -> None:
    dsn = await cluster.start()
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        users = [await seed.create_user(conn) for _ in range(2)]
        for user in users:
            await seed.credit(conn, user, 50_000_000)
        served_inst = await seed.create_instance(conn, users[0])  # cached, lease holds room
        growing = await seed.create_instance(conn, users[1])  # cached, needs a lease grow
        unseen = await seed.create_instance(conn, users[1])  # never seen by the proxy
    finally:
        await conn.close()

    async with FakeLLM(scenario=Scenario(output_tokens=8)) as fake:
        daemon = proxying_to(fake, tmp_path, database_url=dsn, config_extra=CONFIG)
        listeners = [daemon.api_url, daemon.proxy_url]
        served = Served()
        try:
            await daemon.start()
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
                await daemon.wait_ready(http)
                # Warm up: both instances cached, both users holding a lease.
                for inst in (served_inst, growing):
                    served.add(*await call(http, daemon.proxy_url, inst, SMALL))
                assert served.statuses == [200, 200]

                # 20 slow streams in flight, and new requests arriving all along.
                streams = [
                    asyncio.create_task(
                        call(http, daemon.proxy_url, served_inst, STREAM, SLOW_STREAM)
                    )
                    for _ in range(STREAMS)
                ]

                async def streams_started() -> bool:
                    return fake.received >= STREAMS + 2

                await until(streams_started, 30, "the streams reached the upstream")
                arriving = asyncio.Event()
                stop_arriving = asyncio.Event()

                async def keep_arriving() -> None:
                    # Bounded: ends when the test says so (after the outage).
                    while not stop_arriving.is_set():
                        served.add(*await call(http, daemon.proxy_url, served_inst, SMALL))
                        arriving.set()
                        await asyncio.sleep(0.05)

                arrivals = asyncio.create_task(keep_arriving())
                await asyncio.wait_for(arriving.wait(), 30)

                assert not any(stream.done() for stream in streams)  # all 20 in flight
                sigkill(cluster)
                killed = time.monotonic()

                async def not_ready_everywhere() -> bool:
                    answers = [await readyz(http, base) for base in listeners]
                    return all(
                        a is not None and a[0] == 503 and a[1]["reason"] == "database unavailable"
                        for a in answers
                    )

                await until(not_ready_everywhere, 15, "readyz 503 'database unavailable'")
                # The outage: what needs the database is refused (503, retry-after); the rest
                # is served. Paced, bounded by the outage's end.
                needed_db = Served()
                api_statuses: list[int] = []
                while time.monotonic() - killed < OUTAGE:
                    for inst, body in ((growing, BIG), (unseen, SMALL)):
                        needed_db.add(*await call(http, daemon.proxy_url, inst, body))
                    # The API as well: a call that needs the database is a 503, not a 500.
                    async with http.get(
                        daemon.api_url + "/api/auth/me",
                        headers={"Authorization": "Bearer sk_" + "k" * 43},
                    ) as resp:
                        api_statuses.append(resp.status)
                        if resp.status == 503:
                            assert resp.headers.get("Retry-After")
                            assert (await resp.json())["error"]["code"] == "database_unavailable"
                    assert daemon.proc is not None and daemon.proc.returncode is None
                    await asyncio.sleep(0.5)
                assert await not_ready_everywhere()
                # Cached copies outlive their TTL (30 s) during the outage: still served.
                served.add(*await call(http, daemon.proxy_url, served_inst, SMALL))
                stream_results = await asyncio.gather(*streams)

                await cluster.restart()

                async def ready_everywhere() -> bool:
                    answers = [await readyz(http, base) for base in listeners]
                    return all(a is not None and a[0] == 200 for a in answers)

                await until(ready_everywhere, 5.0, "ready within 5 s of the database's return")
                stop_arriving.set()
                await arrivals
                # The database is back: what was refused is served again.
                for inst, body in ((growing, BIG), (unseen, SMALL)):
                    served.add(*await call(http, daemon.proxy_url, inst, body))

                # The listener is back: a change is heard at once (not after the cache's TTL).
                conn = await asyncpg.connect(dsn)
                try:
                    await conn.execute(
                        "UPDATE instances SET status = 'paused' WHERE id = $1",
                        uuid.UUID(unseen.id),
                    )
                finally:
                    await conn.close()

                async def change_heard() -> bool:
                    answer = await call(http, daemon.proxy_url, unseen, SMALL)
                    if answer[1].get(NOTICE_HEADER) == "paused":
                        return True  # told to top up: not forwarded, not billed
                    if answer[0] == 200:  # not heard (yet): served from the cached copy
                        served.add(*answer)
                    return False

                await until(change_heard, 5.0, "the paused instance is refused")

            # -- what the clients saw --------------------------------------------------------
            for status, _, body in stream_results:
                assert status == 200
                assert body.rstrip().endswith(b'{"type":"message_stop"}')
            for status, headers, _ in stream_results:
                served.ok_ids.add(headers["X-BlitzClaw-Request-Id"])
                served.statuses.append(status)
            assert 500 not in served.statuses + needed_db.statuses
            assert set(served.statuses) == {200}, served.refusals[:3]
            assert needed_db.statuses and set(needed_db.statuses) == {503}
            assert api_statuses and set(api_statuses) == {503}
            for _, retry_after, body in needed_db.refusals:
                assert retry_after is not None and int(retry_after) >= 1
                assert b'"type":"error"' in body  # Anthropic's error format

            # -- the ledger, once everything settled and every lease went idle ---------------
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
            try:

                async def settled() -> bool:
                    held = await pool.fetchval(
                        "SELECT (SELECT count(*) FROM reservations)"
                        " + (SELECT count(*) FROM balance_leases WHERE amount_micros > 0)"
                    )
                    usage = await pool.fetchval("SELECT count(*) FROM usage_logs")
                    return held == 0 and usage >= len(served.ok_ids)

                await until(settled, 30, "settled and leases given back")
                ids = {str(r[0]) for r in await pool.fetch("SELECT request_id FROM usage_logs")}
                assert ids == served.ok_ids  # one usage row per request served, no other
                assert not await pool.fetchval("SELECT count(*) FROM usage_logs WHERE recovered")
                for user in users:
                    balance, reserved, entries = await pool.fetchrow(
                        "SELECT b.balance_micros, b.reserved_micros,"
                        " (SELECT sum(amount_micros) FROM ledger_entries WHERE user_id = $1)"
                        " FROM balances b WHERE b.user_id = $1",
                        uuid.UUID(user),
                    )
                    assert balance == entries and reserved == 0
                costs = await pool.fetchval("SELECT sum(cost_micros) FROM usage_logs")
                debits = await pool.fetchval(
                    "SELECT -sum(amount_micros) FROM ledger_entries WHERE kind = 'usage'"
                )
                assert costs == debits
            finally:
                await pool.close()
            assert daemon.proc is not None and daemon.proc.returncode is None
        finally:
            code = await daemon.stop()
        assert code == 0, daemon.log_text()[-4000:]


def postmasters_of(state: Path) -> list[int]:
    """Pids of postmasters running on a data directory under `state` (only they name it)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"postgres") and any(str(state).encode() in a for a in argv):
            pids.append(int(entry.name))
    return pids


async def test_the_embedded_postgres_is_started_again_when_it_dies(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # A state dir the unprivileged PostgreSQL user can reach (pytest's tmp_path is 0700).
    state = Path(tempfile.mkdtemp(prefix="blitzclawd-embedded-"))
    os.chmod(state, 0o755)
    request.addfinalizer(lambda: shutil.rmtree(state, ignore_errors=True))
    d = DaemonProcess(tmp_path, database_url=None, env={"BLITZCLAW_STATE_DIR": str(state)})
    d.config_path.write_text(f"[api]\nport = {d.api_port}\n[proxy]\nport = {d.proxy_port}\n")
    try:
        await d.start()
        async with aiohttp.ClientSession() as http:
            await d.wait_ready(http, deadline=30.0)
            (first,) = postmasters_of(state)
            os.kill(first, signal.SIGKILL)  # the postmaster alone, as the OOM killer would

            async def another_postmaster() -> bool:
                return bool(set(postmasters_of(state)) - {first})

            await until(another_postmaster, 30, "the daemon starts PostgreSQL again")

            async def keeper_done() -> bool:  # (it may answer before the keeper says so)
                return "embedded PostgreSQL started again" in d.log_text()

            await until(keeper_done, 30, "the keeper has started PostgreSQL again")
            body = await d.wait_ready(http, deadline=30.0)
            assert body["database"] == "ok"
            assert d.proc is not None and d.proc.returncode is None
        d.signal(signal.SIGTERM)
        assert await d.wait_exit(15.0) == 0
        assert postmasters_of(state) == []
    finally:
        await d.stop()


async def test_a_janitor_counts_only_the_silence_it_watched(db_pool: asyncpg.Pool) -> None:
    # A daemon silent for an hour, as every daemon is after the database was down for an hour.
    silent = await db_pool.fetchval(
        "INSERT INTO daemons (hostname, pid, version, last_seen) "
        "VALUES ('elsewhere', 1, 'test', now() - interval '1 hour') RETURNING id::text"
    )
    janitor = Janitor(db_pool, interval=3600, dead_after=0.2)
    # A janitor that has just come up (after the outage) did not see that silence.
    assert await janitor.sweep() == []
    # Once it has watched the daemon stay silent for dead_after, it is presumed dead.
    end = time.monotonic() + 10
    presumed: list[str] = []
    while not presumed:  # bounded by the deadline
        assert time.monotonic() < end, "never presumed dead"
        await asyncio.sleep(0.05)
        presumed = await janitor.sweep()
    assert presumed == [silent]
