"""The proxy as a real process under load and through a crash: the ledger stays exact."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from blitzclawd.proxy.journal import read_journal
from blitzclawd.testing import seed
from blitzclawd.testing.daemon_process import DaemonProcess, proxying_to
from blitzclawd.testing.fake_llm import FakeLLM, Scenario

BODY = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 256,
    "stream": True,
    "messages": [{"role": "user", "content": "Tell me a short story."}],
}


def daemon_for(tmp_path: Path, database: str, fake: FakeLLM, name: str) -> DaemonProcess:
    return proxying_to(
        fake,
        tmp_path,
        database_url=database,
        name=name,
        config_extra="[billing]\ncheckpoint_interval = 0.1\n[database]\npool_max = 40\n",
    )


@pytest.fixture
async def fake() -> AsyncIterator[FakeLLM]:
    async with FakeLLM(record_limit=100) as f:
        yield f


async def seed_users(pool: asyncpg.Pool, n: int) -> tuple[list, dict[str, int]]:
    instances, balances = [], {}
    for _ in range(n):
        user = await seed.create_user(pool)
        balances[user] = await seed.credit(pool, user, 100_000_000)
        instances.append(await seed.create_instance(pool, user, msgs_per_hour=0, tokens_per_day=0))
    return instances, balances


async def stream_one(http: aiohttp.ClientSession, url: str, inst, scenario: str | None = None):
    headers = {**inst.headers, "anthropic-version": "2023-06-01"}
    if scenario:
        headers["x-fake-scenario"] = scenario
    async with http.post(url + "/v1/messages", json=BODY, headers=headers) as resp:
        body = await resp.read()
        return resp.status, body


async def wait_nothing_in_flight(pool: asyncpg.Pool, deadline: float) -> None:
    """Every admitted request's record is gone: each was settled (or recovered)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if not await pool.fetchval("SELECT count(*) FROM reservations"):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("requests still in flight")


async def assert_ledger_exact(pool: asyncpg.Pool, before: dict[str, int]) -> int:
    """sum(usage costs) == drop in balances, to the micro-dollar; returns the usage row count."""
    rows = await pool.fetch(
        "SELECT user_id::text, balance_micros, reserved_micros, (SELECT coalesce(sum("
        "amount_micros), 0) FROM balance_leases l WHERE l.user_id = b.user_id) AS leased "
        "FROM balances b WHERE user_id = ANY($1::uuid[])",
        list(before),
    )
    drop = sum(before[r["user_id"]] - r["balance_micros"] for r in rows)
    # Nothing is held but the live daemons' leases.
    assert all(r["reserved_micros"] == r["leased"] for r in rows)
    costs = await pool.fetchval("SELECT coalesce(sum(cost_micros), 0) FROM usage_logs")
    debits = await pool.fetchval(
        "SELECT coalesce(-sum(amount_micros), 0) FROM ledger_entries WHERE kind = 'usage'"
    )
    assert costs == drop == debits
    count = await pool.fetchval("SELECT count(*) FROM usage_logs")
    assert count == await pool.fetchval("SELECT count(DISTINCT request_id) FROM usage_logs")
    return count


async def test_1000_concurrent_streams_zero_errors_exact_ledger(
    database: str, tmp_path: Path, fake: FakeLLM
) -> None:
    fake.scenario = Scenario(
        input_tokens=300, output_tokens=20, tokens_per_chunk=4, chunk_delay=0.01
    )
    pool = await asyncpg.create_pool(database, min_size=1, max_size=4)
    d = daemon_for(tmp_path, database, fake, "load")
    try:
        instances, before = await seed_users(pool, 20)
        await d.start()
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            await d.wait_ready(http)
            results = await asyncio.gather(
                *(stream_one(http, d.proxy_url, instances[i % 20]) for i in range(1000)),
                return_exceptions=True,
            )
        errors = [
            r
            for r in results
            if isinstance(r, BaseException)
            or r[0] != 200
            or not r[1].rstrip().endswith(b'{"type":"message_stop"}')
        ]
        assert errors == []
        await wait_nothing_in_flight(pool, 30)
        assert await assert_ledger_exact(pool, before) == 1000
        assert await pool.fetchval("SELECT count(*) FROM usage_logs WHERE interrupted") == 0
    finally:
        await d.stop()
        await pool.close()


async def test_sigkill_with_200_streams_in_flight_then_restart(
    database: str, tmp_path: Path, fake: FakeLLM
) -> None:
    fake.scenario = Scenario(input_tokens=200, output_tokens=20, tokens_per_chunk=4)
    pool = await asyncpg.create_pool(database, min_size=1, max_size=4)
    first = daemon_for(tmp_path, database, fake, "first")
    try:
        instances, before = await seed_users(pool, 20)
        await first.start()
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            await first.wait_ready(http)
            # A quarter finish fast; the rest stream slowly and are cut by the kill.
            quick = '{"chunk_delay": 0.0}'
            slow = '{"chunk_delay": 0.5, "output_tokens": 80}'
            tasks = [
                asyncio.create_task(
                    stream_one(
                        http, first.proxy_url, instances[i % 20], quick if i % 4 == 0 else slow
                    )
                )
                for i in range(200)
            ]
            end = time.monotonic() + 30
            while fake.received < 200 or fake.completed < 50:
                assert time.monotonic() < end, (fake.received, fake.completed)
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.3)  # checkpoints of the slow streams are written meanwhile
            completed_upstream = fake.completed
            first.signal(signal.SIGKILL)
            await first.wait_exit(10)
            await asyncio.gather(*tasks, return_exceptions=True)
            # What the dead daemon left in flight: its journal's records, the database records
            # of those a checkpoint found in flight (a subset), and its leases.
            (journal,) = (tmp_path / "first-state").glob("inflight-*.journal")
            _, records = read_journal(journal)
            left = {r.request_id: r for r in records}
            in_database = {str(r["id"]) for r in await pool.fetch("SELECT id FROM reservations")}
            assert left and in_database and in_database <= set(left)
            # Restarted on the same state directory: the journal is charged by recovery.
            await first.start()
            await first.wait_ready(http)
        await wait_nothing_in_flight(pool, 30)
        # Every request is charged exactly once: settled normally, or settled by recovery.
        assert await assert_ledger_exact(pool, before) == 200
        recovered = {
            str(r["request_id"]): r["cost_micros"]
            for r in await pool.fetch(
                "SELECT request_id, cost_micros FROM usage_logs WHERE recovered"
            )
        }
        normal = await pool.fetchval("SELECT count(*) FROM usage_logs WHERE NOT recovered")
        # Recovery charged what was left unsettled: at least everything in the database (a
        # journal record may belong to a request whose settlement committed just before the kill).
        assert in_database <= set(recovered) <= set(left)
        assert normal + len(recovered) == 200
        assert completed_upstream <= 200
        # A request that was over is charged its final cost; one cut by the kill is charged at
        # least its prompt's cost and at most its hold.
        for rid, cost in recovered.items():
            r = left[rid]
            if r.finished:
                assert cost == r.seen_micros
            else:
                assert r.input_estimate_micros <= cost <= r.amount_micros
        assert not journal.exists()  # charged, then deleted
        # No hold of the dead daemon is left: its leases were released.
        assert not await pool.fetchval(
            "SELECT count(*) FROM balance_leases l JOIN daemons d ON d.id = l.daemon_id "
            "WHERE d.stopped_at IS NOT NULL"
        )
        assert "orphaned reservation settled by recovery" in first.log_text()
    finally:
        await first.stop()
        await pool.close()


async def test_recovery_rule(database: str) -> None:
    from blitzclawd.proxy.recovery import recover_orphaned_reservations, recovery_charge

    assert recovery_charge(amount=1000, seen=300, input_estimate=100) == 300
    assert recovery_charge(amount=1000, seen=0, input_estimate=100) == 100
    assert recovery_charge(amount=200, seen=900, input_estimate=100) == 200
    pool = await asyncpg.create_pool(database, min_size=1, max_size=2)
    try:
        user = await seed.create_user(pool)
        await seed.credit(pool, user, 20_000_000)
        inst = await seed.create_instance(pool, user)
        dead, alive = uuid.uuid4(), uuid.uuid4()
        await pool.execute(
            "INSERT INTO daemons (id, hostname, pid, version, stopped_at) VALUES "
            "($1, 'h', 1, 'v', now()), ($2, 'h', 2, 'v', NULL)",
            dead,
            alive,
        )
        rid_dead, rid_alive = uuid.uuid4(), uuid.uuid4()
        for rid, daemon in ((rid_dead, dead), (rid_alive, alive)):
            await pool.fetchval(
                "SELECT lease_grow($1, $2, 50000, 1000000, 10000000)", uuid.UUID(user), daemon
            )
            await pool.execute(
                "INSERT INTO reservations (id, user_id, instance_id, amount_micros,"
                " input_estimate_micros, seen_micros, daemon_id, api, model) "
                "VALUES ($1, $2, $3, 50000, 700, 0, $4, 'anthropic-messages', 'm')",
                rid,
                uuid.UUID(user),
                uuid.UUID(inst.id),
                daemon,
            )
        reserved = "SELECT reserved_micros FROM balances WHERE user_id = $1"
        assert await pool.fetchval(reserved, uuid.UUID(user)) == 2_000_000
        await pool.execute("UPDATE reservations SET seen_micros = 4200 WHERE id = $1", rid_dead)
        (result,) = await recover_orphaned_reservations(pool, 10_000_000)
        assert (result.request_id, result.outcome) == (str(rid_dead), "recovered")
        assert (
            await pool.fetchval(
                "SELECT cost_micros FROM usage_logs WHERE request_id = $1", rid_dead
            )
            == 4200
        )
        # The live daemon's request and lease are its own business; the dead one's are gone.
        assert await pool.fetchval("SELECT count(*) FROM reservations") == 1
        assert await pool.fetchval("SELECT id FROM reservations") == rid_alive
        assert await pool.fetchval(reserved, uuid.UUID(user)) == 1_000_000
        assert await pool.fetchval("SELECT daemon_id FROM balance_leases") == alive
        assert await recover_orphaned_reservations(pool, 10_000_000) == []  # idempotent
        assert (
            await pool.fetchval(
                "SELECT balance_micros FROM balances WHERE user_id = $1", uuid.UUID(user)
            )
            == 20_000_000 - 4200
        )
    finally:
        await pool.close()
