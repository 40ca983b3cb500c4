"""Balance leases (migration 0009): admission in memory against a per-daemon lease.

Three layers, each against a real PostgreSQL:
- LeaseBook (blitzclawd.proxy.leases): grow, cap at the minimum, finish/settle, release;
- settle_usage: a settlement consumes its daemon's lease and deletes its request's record;
- the proxy end to end: announced instance changes, in-flight records, a lost lease regrown.

Nothing of ours is mocked; every wait is a bounded loop on a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson
import pytest
from conftest import notice_of

from blitzclawd import ledger
from blitzclawd.db.pool import create_pool
from blitzclawd.proxy.journal import journal_path, read_journal
from blitzclawd.proxy.leases import InsufficientBalance, LeaseBook
from blitzclawd.proxy.records import Record, RecordWriter
from blitzclawd.proxy.recovery import recover_orphaned_reservations
from blitzclawd.runtime.messages import Settlement
from blitzclawd.testing import seed
from blitzclawd.testing.fake_llm import Scenario

FLOOR = 10_000_000  # $10: the default minimum balance
HEADROOM = 1_000_000  # $1: the default lease headroom
ANTHROPIC_BODY = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 1024,
    "messages": [{"role": "user", "content": "Say hi"}],
}


# -- helpers --------------------------------------------------------------------------------------


async def until(
    check: Callable[[], Awaitable[Any]], what: str, *, deadline: float = 5.0, every: float = 0.01
) -> Any:
    """Poll `check` until it returns something truthy (returned), or fail after `deadline` s."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while True:
        value = await check()
        if value:
            return value
        if loop.time() >= end:
            raise AssertionError(f"not within {deadline} s: {what}")
        await asyncio.sleep(every)


async def read_all(resp) -> bytes:
    async with resp:
        return await resp.read()


async def error_of(resp) -> tuple[int, dict]:
    return resp.status, orjson.loads(await read_all(resp))


async def new_daemon(pool: asyncpg.Pool) -> str:
    return await pool.fetchval(
        "INSERT INTO daemons (hostname, pid, version) VALUES ('test-host', 4242, 'test') "
        "RETURNING id::text"
    )


async def funded_user(pool: asyncpg.Pool, micros: int) -> str:
    user = await seed.create_user(pool)
    await seed.credit(pool, user, micros)
    return user


async def lease_of(pool: asyncpg.Pool, user: str, daemon: str) -> int | None:
    """The daemon's lease row on the user (None: no row)."""
    return await pool.fetchval(
        "SELECT amount_micros FROM balance_leases WHERE user_id = $1 AND daemon_id = $2",
        uuid.UUID(user),
        uuid.UUID(daemon),
    )


async def money(pool: asyncpg.Pool, user: str) -> tuple[int, int, int]:
    """(balance, reserved, sum of the user's leases) in one snapshot."""
    row = await pool.fetchrow(
        "SELECT b.balance_micros, b.reserved_micros, "
        "coalesce((SELECT sum(amount_micros) FROM balance_leases l "
        "          WHERE l.user_id = b.user_id), 0)::bigint "
        "FROM balances b WHERE b.user_id = $1",
        uuid.UUID(user),
    )
    return row[0], row[1], row[2]


async def reserved_of(pool: asyncpg.Pool, user: str) -> int:
    _, reserved, leases = await money(pool, user)
    assert reserved == leases, "reserved_micros must be the sum of the user's leases"
    return reserved


def book_on(pool: asyncpg.Pool, daemon: str) -> LeaseBook:
    return LeaseBook(pool, daemon, floor_micros=FLOOR, headroom_micros=HEADROOM)


@pytest.fixture
def pool(db_pool: asyncpg.Pool) -> asyncpg.Pool:
    return db_pool  # conftest's pool, under the name these tests use


# -- 1. LeaseBook against the database ------------------------------------------------------------


async def test_first_admit_grows_the_lease_then_admits_without_the_database(
    database: str, pool: asyncpg.Pool
) -> None:
    daemon = await new_daemon(pool)
    user = await funded_user(pool, 20_000_000)
    book_pool = await create_pool(database, min_size=1, max_size=2)
    book = book_on(book_pool, daemon)
    try:
        await book.admit(user, 100_000)
        # The balance allows it: the lease is what was needed plus the headroom.
        assert await lease_of(pool, user, daemon) == 100_000 + HEADROOM
        assert await reserved_of(pool, user) == 100_000 + HEADROOM
        lease = book.get(user)
        assert lease is not None
        assert (lease.amount, lease.held, lease.pending) == (100_000 + HEADROOM, 100_000, 0)
    finally:
        await book_pool.close()
    # The book's pool is closed: whatever fits in the lease is still admitted (no round trip).
    await book.admit(user, 500_000)
    await book.admit(user, 500_000)  # held is now exactly the lease
    assert (lease.amount, lease.held) == (1_100_000, 1_100_000)
    # One micro more needs a grow, which does need the (closed) pool: the proof it is not used
    # on the fast path.
    with pytest.raises(asyncpg.InterfaceError):
        await book.admit(user, 1)
    assert (lease.amount, lease.held, lease.growing) == (1_100_000, 1_100_000, 0)
    assert await lease_of(pool, user, daemon) == 1_100_000
    assert await reserved_of(pool, user) == 1_100_000


async def test_a_second_grow_adds_to_the_same_row(pool: asyncpg.Pool) -> None:
    daemon = await new_daemon(pool)
    user = await funded_user(pool, 20_000_000)
    book = book_on(pool, daemon)
    await book.admit(user, 600_000)  # lease 1_600_000
    await book.admit(user, 1_500_000)  # needs 500_000 more: grows by 500_000 + headroom
    assert book.get(user).amount == 1_600_000 + 500_000 + HEADROOM
    assert book.get(user).held == 2_100_000
    assert await lease_of(pool, user, daemon) == 3_100_000
    assert await reserved_of(pool, user) == 3_100_000


async def test_the_grant_is_capped_at_the_balance_above_the_minimum(pool: asyncpg.Pool) -> None:
    daemon = await new_daemon(pool)
    user = await funded_user(pool, 10_500_000)  # $0.50 above the $10 minimum
    book = book_on(pool, daemon)
    await book.admit(user, 100_000)
    # needed + headroom would be $1.10: only $0.50 may be committed.
    assert await lease_of(pool, user, daemon) == 500_000
    assert await reserved_of(pool, user) == 500_000
    lease = book.get(user)
    assert (lease.amount, lease.held) == (500_000, 100_000)
    # 400_001 does not fit in what is left (400_000), nor in the balance: refused, and nothing
    # changed, here or there.
    with pytest.raises(InsufficientBalance):
        await book.admit(user, 400_001)
    assert (lease.amount, lease.held, lease.growing) == (500_000, 100_000, 0)
    assert await lease_of(pool, user, daemon) == 500_000
    balance, reserved, _ = await money(pool, user)
    assert (balance, reserved) == (10_500_000, 500_000)
    # Exactly what is left still fits.
    await book.admit(user, 400_000)
    assert (lease.amount, lease.held) == (500_000, 500_000)


async def test_a_first_admit_that_does_not_fit_leaves_no_lease(pool: asyncpg.Pool) -> None:
    daemon = await new_daemon(pool)
    user = await funded_user(pool, 10_500_000)
    book = book_on(pool, daemon)
    with pytest.raises(InsufficientBalance):
        await book.admit(user, 500_001)
    assert await lease_of(pool, user, daemon) is None
    assert await reserved_of(pool, user) == 0
    # A user with no balance at all is refused the same way (no balances row to lease from).
    broke = await seed.create_user(pool)
    with pytest.raises(InsufficientBalance):
        await book.admit(broke, 1)
    assert await lease_of(pool, broke, daemon) is None


async def test_finish_and_settled_then_idle_release(pool: asyncpg.Pool) -> None:
    daemon = await new_daemon(pool)
    user = await funded_user(pool, 20_000_000)
    inst = await seed.create_instance(pool, user)
    book = book_on(pool, daemon)
    await book.admit(user, 100_000)
    lease = book.get(user)
    assert await lease_of(pool, user, daemon) == 1_100_000
    # Held: never released, however idle.
    assert await book.release_idle(0) == 0
    assert await lease_of(pool, user, daemon) == 1_100_000

    book.finish(user, 100_000, 30_000)
    assert (lease.amount, lease.held, lease.pending) == (1_070_000, 0, 1)
    # Its settlement has not committed: the row still has the 30_000, so it is not released.
    assert await book.release_idle(0) == 0
    assert await lease_of(pool, user, daemon) == 1_100_000

    request_id = str(uuid.uuid4())
    (result,) = await ledger.settle(
        pool, [usage(request_id, user, inst.id, daemon, cost=30_000, lease=30_000)], FLOOR
    )
    assert (result.outcome, result.lease_found) == ("settled", True)
    book.settled(user, 30_000, lease_found=result.lease_found)
    assert lease.pending == 0
    # Here and there agree now.
    assert await lease_of(pool, user, daemon) == lease.amount == 1_070_000
    assert await reserved_of(pool, user) == 1_070_000
    # Used just now: not idle for an hour.
    assert await book.release_idle(3600) == 0
    assert await lease_of(pool, user, daemon) == 1_070_000
    # Idle for 0 s: given back, and the available balance is whole again.
    assert await book.release_idle(0) == 1
    assert await lease_of(pool, user, daemon) is None
    assert await reserved_of(pool, user) == 0
    assert lease.amount == 0
    assert (await money(pool, user))[0] == 20_000_000 - 30_000
    # An empty lease is then forgotten; the next admit grows a new one.
    assert await book.release_idle(0) == 0
    assert book.get(user) is None
    await book.admit(user, 100_000)
    assert await lease_of(pool, user, daemon) == 1_100_000


async def test_a_void_is_not_pending(pool: asyncpg.Pool) -> None:
    daemon = await new_daemon(pool)
    user = await funded_user(pool, 20_000_000)
    book = book_on(pool, daemon)
    await book.admit(user, 100_000)
    book.finish(user, 100_000, 0)  # refused upstream: nothing spent, nothing to settle
    lease = book.get(user)
    assert (lease.amount, lease.held, lease.pending) == (1_100_000, 0, 0)
    book.settled(user, 0, lease_found=True)
    assert lease.pending == 0
    assert await book.release_idle(0) == 1
    assert await reserved_of(pool, user) == 0


async def test_a_lost_lease_is_regrown_for_what_is_in_flight(pool: asyncpg.Pool) -> None:
    daemon = await new_daemon(pool)
    user = await funded_user(pool, 20_000_000)
    inst = await seed.create_instance(pool, user)
    book = book_on(pool, daemon)
    await book.admit(user, 100_000)  # request A
    await book.admit(user, 200_000)  # request B, still in flight below
    # Recovery (we were presumed dead) released the row.
    await pool.execute("DELETE FROM balance_leases WHERE daemon_id = $1", uuid.UUID(daemon))
    book.finish(user, 100_000, 40_000)
    (result,) = await ledger.settle(
        pool, [usage(str(uuid.uuid4()), user, inst.id, daemon, cost=40_000, lease=40_000)], FLOOR
    )
    assert result.lease_found is False
    book.settled(user, 40_000, lease_found=False)
    lease = book.get(user)
    assert (lease.amount, lease.held, lease.pending) == (0, 200_000, 0)
    # The next admit grows enough for B (still held) as well.
    await book.admit(user, 50_000)
    assert lease.amount == 250_000 + HEADROOM == await lease_of(pool, user, daemon)
    assert await reserved_of(pool, user) == 250_000 + HEADROOM


async def test_concurrent_admits_never_commit_more_than_the_balance_allows(
    pool: asyncpg.Pool,
) -> None:
    daemon = await new_daemon(pool)
    user = await funded_user(pool, 10_500_000)
    book = book_on(pool, daemon)
    each = 30_000  # 16 fit in $0.50 (480_000), the 17th does not
    admitted, peak = await admit_concurrently(pool, user, [(book, each)] * 50)
    assert admitted == 16
    assert peak <= 500_000  # sampled while the admits ran
    balance, reserved, leases = await money(pool, user)
    assert reserved == leases <= balance - FLOOR
    lease = book.get(user)
    assert lease.held == 16 * each <= lease.amount == await lease_of(pool, user, daemon)
    assert (lease.growing, lease.pending) == (0, 0)


async def test_two_daemons_admitting_concurrently_share_one_cap(pool: asyncpg.Pool) -> None:
    user = await funded_user(pool, 10_500_000)
    daemons = [await new_daemon(pool) for _ in range(2)]
    books = [book_on(pool, daemon) for daemon in daemons]
    each = 30_000
    admitted, peak = await admit_concurrently(pool, user, [(books[i % 2], each) for i in range(50)])
    assert admitted == 16  # whichever daemon grew first took all the $0.50
    assert peak <= 500_000
    balance, reserved, leases = await money(pool, user)
    assert reserved == leases <= balance - FLOOR
    for book, daemon in zip(books, daemons, strict=True):
        lease = book.get(user)
        row = await lease_of(pool, user, daemon)
        assert lease.amount == (row or 0)
        assert lease.held <= lease.amount
        assert lease.growing == 0
    assert sum(b.get(user).held for b in books) == 16 * each


async def admit_concurrently(
    pool: asyncpg.Pool, user: str, admits: list[tuple[LeaseBook, int]]
) -> tuple[int, int]:
    """Run the admits at once; returns (how many were admitted, the highest reserved sampled)."""
    done = asyncio.Event()
    peak = 0

    async def sample() -> None:
        nonlocal peak
        for _ in range(100_000):  # bounded; ends as soon as the admits are done
            peak = max(peak, await reserved_of(pool, user))
            if done.is_set():
                return

    sampler = asyncio.ensure_future(sample())
    try:
        results = await asyncio.gather(
            *(book.admit(user, amount) for book, amount in admits), return_exceptions=True
        )
    finally:
        done.set()
        await asyncio.wait_for(sampler, 10)
    unexpected = [r for r in results if r is not None and not isinstance(r, InsufficientBalance)]
    assert not unexpected, unexpected
    return sum(r is None for r in results), peak


async def test_release_all_gives_back_every_lease_of_the_daemon(pool: asyncpg.Pool) -> None:
    daemon, other = await new_daemon(pool), await new_daemon(pool)
    first = await funded_user(pool, 20_000_000)
    second = await funded_user(pool, 20_000_000)
    book, other_book = book_on(pool, daemon), book_on(pool, other)
    await book.admit(first, 100_000)
    await book.admit(second, 200_000)
    await other_book.admit(first, 300_000)
    assert await reserved_of(pool, first) == 1_100_000 + 1_300_000
    await book.release_all()
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM balance_leases WHERE daemon_id = $1", uuid.UUID(daemon)
        )
        == 0
    )
    assert book.get(first) is None and book.get(second) is None
    # The other daemon's lease is untouched.
    assert await lease_of(pool, first, other) == 1_300_000
    assert await reserved_of(pool, first) == 1_300_000
    assert await reserved_of(pool, second) == 0


# -- 2. settle_usage consumes the lease -----------------------------------------------------------


def usage(
    request_id: str,
    user: str,
    instance: str | None,
    daemon: str | None,
    *,
    cost: int,
    lease: int,
    tokens: int = 100,
) -> Settlement:
    return Settlement(
        request_id=request_id,
        user_id=user,
        instance_id=instance,
        api="anthropic-messages",
        model="claude-sonnet-4-6",
        cost_micros=cost,
        input_tokens=tokens,
        output_tokens=tokens // 10,
        status_code=200,
        duration_ms=5,
        daemon_id=daemon,
        lease_micros=lease,
    )


async def write_record(
    pool: asyncpg.Pool, daemon: str, request_id: str, user: str, instance: str, amount: int
) -> None:
    """The request's in-flight record, through the proxy's own writer."""
    writer = RecordWriter(pool, daemon)
    await writer.add(
        Record(
            request_id,
            user,
            instance,
            amount,
            min(amount, 10_000),
            "anthropic-messages",
            "claude-sonnet-4-6",
        )
    )
    await writer.close()
    assert await record_exists(pool, request_id), "the record was not written"


async def record_exists(pool: asyncpg.Pool, request_id: str) -> bool:
    return bool(
        await pool.fetchval(
            "SELECT count(*) FROM reservations WHERE id = $1", uuid.UUID(request_id)
        )
    )


async def test_a_settlement_consumes_its_daemons_lease_once(pool: asyncpg.Pool) -> None:
    daemon, other = await new_daemon(pool), await new_daemon(pool)
    user = await funded_user(pool, 20_000_000)
    inst = await seed.create_instance(pool, user)
    book, other_book = book_on(pool, daemon), book_on(pool, other)
    await book.admit(user, 300_000)  # lease 1_300_000
    await other_book.admit(user, 100_000)  # lease 1_100_000
    request_id = str(uuid.uuid4())
    await write_record(pool, daemon, request_id, user, inst.id, 300_000)

    item = usage(request_id, user, inst.id, daemon, cost=250_000, lease=250_000)
    (result,) = await ledger.settle(pool, [item], FLOOR)
    assert (result.outcome, result.lease_found) == ("settled", True)
    assert result.balance_micros == 20_000_000 - 250_000
    assert await lease_of(pool, user, daemon) == 1_300_000 - 250_000
    assert await lease_of(pool, user, other) == 1_100_000  # only its own daemon's lease
    assert await reserved_of(pool, user) == 1_050_000 + 1_100_000
    assert not await record_exists(pool, request_id)

    # A replay consumes nothing (and charges nothing) a second time...
    (again,) = await ledger.settle(pool, [item], FLOOR)
    assert again.outcome == "duplicate"
    assert await lease_of(pool, user, daemon) == 1_050_000
    assert await reserved_of(pool, user) == 2_150_000
    assert (await money(pool, user))[0] == 20_000_000 - 250_000
    # ...but deletes the request's record all the same (one written late must not be left for
    # recovery to charge again).
    await write_record(pool, daemon, request_id, user, inst.id, 300_000)
    (third,) = await ledger.settle(pool, [item], FLOOR)
    assert third.outcome == "duplicate"
    assert not await record_exists(pool, request_id)
    assert await lease_of(pool, user, daemon) == 1_050_000
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM usage_logs WHERE request_id = $1", uuid.UUID(request_id)
        )
        == 1
    )


async def test_lease_found_is_false_when_the_daemon_holds_no_lease(pool: asyncpg.Pool) -> None:
    daemon, leaseless = await new_daemon(pool), await new_daemon(pool)
    user = await funded_user(pool, 20_000_000)
    inst = await seed.create_instance(pool, user)
    await book_on(pool, daemon).admit(user, 100_000)
    items = [
        usage(str(uuid.uuid4()), user, inst.id, leaseless, cost=70_000, lease=70_000),
        # Nothing to consume: nothing to miss either.
        usage(str(uuid.uuid4()), user, inst.id, leaseless, cost=5_000, lease=0),
    ]
    missing, nothing = await ledger.settle(pool, items, FLOOR)
    assert (missing.outcome, missing.lease_found) == ("settled", False)
    assert (nothing.outcome, nothing.lease_found) == ("settled", True)
    # Charged all the same; the other daemon's lease is untouched.
    assert (await money(pool, user))[0] == 20_000_000 - 75_000
    assert await lease_of(pool, user, daemon) == 1_100_000
    assert await lease_of(pool, user, leaseless) is None
    assert await reserved_of(pool, user) == 1_100_000


async def test_a_lease_is_never_consumed_below_zero(pool: asyncpg.Pool) -> None:
    daemon = await new_daemon(pool)
    user = await funded_user(pool, 10_050_000)
    inst = await seed.create_instance(pool, user)
    await book_on(pool, daemon).admit(user, 50_000)  # the whole $0.05 above the minimum
    assert await lease_of(pool, user, daemon) == 50_000
    item = usage(str(uuid.uuid4()), user, inst.id, daemon, cost=80_000, lease=80_000)
    (result,) = await ledger.settle(pool, [item], FLOOR)
    assert (result.outcome, result.lease_found) == ("settled", True)
    assert await lease_of(pool, user, daemon) == 0
    assert await reserved_of(pool, user) == 0
    assert result.balance_micros == 10_050_000 - 80_000
    assert result.paused == 1  # below the minimum: its instance is paused


async def test_a_void_deletes_the_record_and_keeps_the_lease(pool: asyncpg.Pool) -> None:
    daemon = await new_daemon(pool)
    user = await funded_user(pool, 20_000_000)
    inst = await seed.create_instance(pool, user)
    await book_on(pool, daemon).admit(user, 100_000)
    request_id = str(uuid.uuid4())
    await write_record(pool, daemon, request_id, user, inst.id, 100_000)
    (result,) = await ledger.settle(
        pool, [usage(request_id, user, inst.id, daemon, cost=0, lease=0, tokens=0)], FLOOR
    )
    assert result.outcome == "voided"
    assert not await record_exists(pool, request_id)
    assert await lease_of(pool, user, daemon) == 1_100_000
    assert (await money(pool, user))[0] == 20_000_000


async def test_a_bad_lease_amount_rolls_the_whole_batch_back(pool: asyncpg.Pool) -> None:
    daemon = await new_daemon(pool)
    user = await funded_user(pool, 20_000_000)
    inst = await seed.create_instance(pool, user)
    await book_on(pool, daemon).admit(user, 100_000)
    good = usage(str(uuid.uuid4()), user, inst.id, daemon, cost=10_000, lease=10_000)
    bad = usage(str(uuid.uuid4()), user, inst.id, daemon, cost=10_000, lease=10_001)
    with pytest.raises(asyncpg.PostgresError, match="bad cost or lease"):
        await ledger.settle(pool, [good, bad], FLOOR)
    assert await lease_of(pool, user, daemon) == 1_100_000
    assert (await money(pool, user))[0] == 20_000_000
    assert await pool.fetchval("SELECT count(*) FROM usage_logs") == 0


async def test_recovery_charges_a_dead_daemons_records_and_releases_its_leases(
    pool: asyncpg.Pool,
) -> None:
    dead, alive = await new_daemon(pool), await new_daemon(pool)
    user = await funded_user(pool, 20_000_000)
    inst = await seed.create_instance(pool, user)
    await book_on(pool, dead).admit(user, 300_000)
    await book_on(pool, alive).admit(user, 100_000)
    request_id = str(uuid.uuid4())
    await write_record(pool, dead, request_id, user, inst.id, 300_000)  # estimate 10_000
    await pool.execute(
        "UPDATE reservations SET seen_micros = 45000 WHERE id = $1", uuid.UUID(request_id)
    )
    await pool.execute("UPDATE daemons SET stopped_at = now() WHERE id = $1", uuid.UUID(dead))
    (result,) = await recover_orphaned_reservations(pool, FLOOR)
    assert result.outcome == "recovered" and result.request_id == request_id
    assert result.balance_micros == 20_000_000 - 45_000  # max(seen, estimate), at most reserved
    assert not await record_exists(pool, request_id)
    assert await lease_of(pool, user, dead) is None
    assert await lease_of(pool, user, alive) == 1_100_000
    assert await reserved_of(pool, user) == 1_100_000


# -- 3. through the proxy -------------------------------------------------------------------------


async def live_daemon_id(env) -> str:
    (daemon,) = await env.pool.fetch("SELECT id::text FROM daemons WHERE stopped_at IS NULL")
    return daemon[0]


async def test_a_status_change_by_someone_else_is_honoured_promptly(proxy_env) -> None:
    # No hourly message limit: the polling below must not run into it.
    inst = await seed.create_instance(proxy_env.pool, proxy_env.instance.user_id, msgs_per_hour=0)
    inst_id = uuid.UUID(inst.id)
    resp = await proxy_env.post("/v1/messages", ANTHROPIC_BODY, instance=inst)
    assert resp.status == 200, await read_all(resp)
    await read_all(resp)  # the instance is cached now (for up to 30 s without announcements)
    await proxy_env.pool.execute("UPDATE instances SET status = 'paused' WHERE id = $1", inst_id)

    async def refused() -> bool:
        resp = await proxy_env.post("/v1/messages", ANTHROPIC_BODY, instance=inst)
        body = await read_all(resp)
        assert resp.status == 200, body  # served from the cached copy, or told it is paused
        return notice_of(resp) == "paused"

    # Well within the cache's 30 s: only the announcement (NOTIFY) can make it this prompt.
    await until(refused, "the paused instance is refused", deadline=5.0, every=0.02)
    forwarded = proxy_env.fake.received
    resp = await proxy_env.post("/v1/messages", ANTHROPIC_BODY, instance=inst)
    await read_all(resp)
    assert notice_of(resp) == "paused"
    assert proxy_env.fake.received == forwarded  # refusals are not forwarded

    # Back to active: a refusal re-reads the instance, so the very next request is served.
    await proxy_env.pool.execute("UPDATE instances SET status = 'active' WHERE id = $1", inst_id)
    resp = await proxy_env.post("/v1/messages", ANTHROPIC_BODY, instance=inst)
    assert resp.status == 200, await read_all(resp)
    await read_all(resp)
    await proxy_env.settled()


async def test_a_request_in_flight_has_its_record_until_it_is_settled(proxy_env) -> None:
    proxy = proxy_env.daemon.supervisor.child("proxy")
    pool, user, inst = proxy_env.pool, proxy_env.instance.user_id, proxy_env.instance.id
    daemon = await live_daemon_id(proxy_env)
    before = await proxy_env.balance()
    # 15 chunks, 0.2 s apart: in flight for about 3 s.
    proxy_env.fake.set_next(
        Scenario(input_tokens=100, output_tokens=60, tokens_per_chunk=4, chunk_delay=0.2)
    )
    resp = await proxy_env.post("/v1/messages", {**ANTHROPIC_BODY, "stream": True})
    try:
        assert resp.status == 200
        request_id = resp.headers["X-BlitzClaw-Request-Id"]
        # Recorded in this daemon's journal before it was forwarded.
        journal = journal_path(proxy_env.daemon.settings.state_path(), daemon)
        writer, records = read_journal(journal)
        assert writer == daemon
        (mine,) = [r for r in records if r.request_id == request_id]
        assert (mine.user_id, mine.instance_id) == (user, inst)
        assert (mine.api, mine.model) == ("anthropic-messages", "claude-sonnet-4-6")
        assert 0 < mine.input_estimate_micros <= mine.amount_micros

        # Still in flight at a checkpoint: recorded in the database too (another host's recovery).
        async def record() -> asyncpg.Record | None:
            return await pool.fetchrow(
                "SELECT * FROM reservations WHERE id = $1", uuid.UUID(request_id)
            )

        row = await until(record, "the in-flight record is written")
        flight = proxy.inflight.get(request_id)
        assert flight is not None, "the record must be there while the request is in flight"
        assert str(row["user_id"]) == user and str(row["instance_id"]) == inst
        assert str(row["daemon_id"]) == daemon
        assert row["amount_micros"] == flight.reserved > 0
        assert (row["api"], row["model"]) == ("anthropic-messages", "claude-sonnet-4-6")
        # Admitted against this daemon's lease: the worst case plus the headroom.
        assert await lease_of(pool, user, daemon) == flight.reserved + HEADROOM
        assert await reserved_of(pool, user) == flight.reserved + HEADROOM

        # Checkpoints record what the stream has cost so far, for crash recovery.
        async def checkpointed() -> bool:
            seen = await pool.fetchval(
                "SELECT seen_micros FROM reservations WHERE id = $1", uuid.UUID(request_id)
            )
            return bool(seen)

        await until(checkpointed, "a checkpoint of the stream in flight")
        assert request_id in proxy.inflight  # all of the above happened while it streamed
        reserved = flight.reserved
        raw = await resp.read()
    finally:
        resp.release()
    assert b"message_stop" in raw
    await proxy_env.settled()
    assert not await record_exists(pool, request_id)
    # Settled: its journal slot is free (a restart would not charge it again).
    assert request_id not in {r.request_id for r in read_journal(journal)[1]}
    log = await pool.fetchrow(
        "SELECT * FROM usage_logs WHERE request_id = $1", uuid.UUID(request_id)
    )
    assert log is not None
    assert (log["output_tokens"], log["interrupted"]) == (60, False)
    cost = log["cost_micros"]
    assert 0 < cost <= reserved
    assert await proxy_env.balance() == before - cost
    # The lease gave up what was spent, here and there alike.
    assert await lease_of(pool, user, daemon) == reserved + HEADROOM - cost
    assert proxy.leases.get(user).amount == reserved + HEADROOM - cost
    assert await reserved_of(pool, user) == reserved + HEADROOM - cost


async def test_a_lease_released_behind_the_proxys_back_is_regrown(proxy_env) -> None:
    proxy = proxy_env.daemon.supervisor.child("proxy")
    pool, user = proxy_env.pool, proxy_env.instance.user_id
    daemon = await live_daemon_id(proxy_env)
    for _ in range(2):
        resp = await proxy_env.post("/v1/messages", ANTHROPIC_BODY)
        assert resp.status == 200
        await read_all(resp)
    await proxy_env.settled()
    assert await lease_of(pool, user, daemon) == proxy.leases.get(user).amount > 0
    # Recovery presumed this daemon dead and released its lease.
    await pool.execute("DELETE FROM balance_leases WHERE daemon_id = $1", uuid.UUID(daemon))
    assert await reserved_of(pool, user) == 0
    # Still admitted: from the copy (its settlement then finds no lease, and the copy is dropped;
    # the next idle sweep may forget the empty copy altogether), or through a new grow, if the
    # reconcile of a checkpoint tick brought the copy down first. Either way, the copy ends up
    # holding what the row holds, never more.
    resp = await proxy_env.post("/v1/messages", ANTHROPIC_BODY)
    assert resp.status == 200
    await read_all(resp)
    await proxy_env.settled()
    copy = proxy.leases.get(user)
    assert (copy.amount if copy else 0) == (await lease_of(pool, user, daemon) or 0)
    # The next request is admitted (growing a new lease if need be): copy and row agree again.
    resp = await proxy_env.post("/v1/messages", ANTHROPIC_BODY)
    assert resp.status == 200
    await read_all(resp)
    await proxy_env.settled()
    row = await lease_of(pool, user, daemon)
    assert row is not None and row == proxy.leases.get(user).amount > 0
    assert await reserved_of(pool, user) == row
    await proxy.leases.release_idle(0)
    assert await reserved_of(pool, user) == 0


# -- 4. lock order: grows, settlements and releases of one user never deadlock -------------------


async def test_grows_settlements_and_releases_of_one_user_never_deadlock(
    pool: asyncpg.Pool,
) -> None:
    """Every writer of a lease locks the user's balances row first (a settlement through its
    debit). Before that rule, a grow (balance row, then lease) and a settlement (lease, then
    balance row) running together deadlocked within a few hundred rounds."""
    daemon = await new_daemon(pool)
    user = await funded_user(pool, 1_000_000_000)
    inst = await seed.create_instance(pool, user)
    uid = uuid.UUID(user)

    async def grow() -> None:
        await pool.fetchval(
            "SELECT lease_grow($1, $2, 1000, 2000, $3)", uid, uuid.UUID(daemon), FLOOR
        )

    async def settle() -> None:
        item = usage(str(uuid.uuid4()), user, inst.id, daemon, cost=700, lease=500)
        (result,) = await ledger.settle(pool, [item], FLOOR)
        assert result.outcome == "settled"

    async def release() -> None:
        await pool.execute("SELECT lease_release($1, $2::uuid[])", uuid.UUID(daemon), [uid])

    await grow()
    for _ in range(40):  # bounded: 40 rounds of 7 concurrent writers
        await asyncio.gather(*[f() for f in (grow, settle, release, grow, settle, grow, settle)])
    reserved, leased = await pool.fetchrow(
        "SELECT b.reserved_micros, (SELECT coalesce(sum(amount_micros), 0) FROM balance_leases l"
        " WHERE l.user_id = b.user_id)::bigint FROM balances b WHERE b.user_id = $1",
        uid,
    )
    assert reserved == leased


# -- 5. several daemons: money idling in one daemon's lease does not turn a user away -----------


async def listening_book(pool: asyncpg.Pool, database: str, daemon: str) -> tuple:
    """A LeaseBook that hears `blitzclaw_leases` on a connection of its own, as the proxy's."""
    from blitzclawd.proxy.leases import CHANNEL

    book = book_on(pool, daemon)
    conn = await asyncpg.connect(database)
    await conn.add_listener(CHANNEL, lambda _c, _p, _ch, payload: book.notified(payload))
    book.listening(True)
    return book, conn


async def test_a_refused_grow_asks_the_other_daemons_to_give_back(
    pool: asyncpg.Pool, database: str
) -> None:
    user = await funded_user(pool, FLOOR + 500_000)  # $0.50 above the minimum
    a, b = await new_daemon(pool), await new_daemon(pool)
    book_a, conn_a = await listening_book(pool, database, a)
    book_b, conn_b = await listening_book(pool, database, b)
    try:
        await book_a.admit(user, 100_000)  # daemon A's lease takes all $0.50
        assert await lease_of(pool, user, a) == 500_000
        book_a.finish(user, 100_000, 0)  # its request is over (a void): $0.50 idle in A
        # Daemon B needs $0.40 for two requests: A gives back what it does not use, B gets it.
        await book_b.admit(user, 200_000)
        await book_b.admit(user, 200_000)
        assert await lease_of(pool, user, b) >= 400_000
        assert await lease_of(pool, user, a) == book_a.get(user).amount < 500_000
        balance, reserved, leases = await money(pool, user)
        assert reserved == leases and balance - reserved >= FLOOR
        # What B's requests hold cannot be given back: A is refused, after asking (bounded).
        with pytest.raises(InsufficientBalance):
            await book_a.admit(user, 200_000)
        assert await lease_of(pool, user, b) >= 400_000
    finally:
        await conn_a.close()
        await conn_b.close()


# -- 6. safety nets: a copy ahead of its row, records that cannot be written, failed commits ----


async def test_a_copy_above_its_row_is_brought_down_by_reconcile(pool: asyncpg.Pool) -> None:
    user = await funded_user(pool, 20_000_000)
    daemon = await new_daemon(pool)
    book = book_on(pool, daemon)
    await book.admit(user, 100_000)
    book.finish(user, 100_000, 0)
    assert await book.reconcile() == 0  # in agreement: nothing to do
    # Behind the copy's back (as recovery does for a daemon presumed dead): the row goes.
    await pool.execute("SELECT lease_release($1, NULL)", uuid.UUID(daemon))
    assert book.get(user).amount > 0
    assert await book.reconcile() == 1
    assert book.get(user).amount == 0
    await book.admit(user, 100_000)  # grows a lease the database holds again
    assert await lease_of(pool, user, daemon) == book.get(user).amount > 0


async def test_while_the_database_refuses_records_requests_are_journaled_and_served(
    proxy_env,
) -> None:
    """The journal, not the database, is a request's first record: a database that cannot take
    records (at checkpoints) turns nobody away, and a refused record is written once it can be."""
    proxy = proxy_env.daemon.supervisor.child("proxy")
    pool = proxy_env.pool
    await pool.execute("ALTER TABLE reservations ADD CONSTRAINT refuse_all CHECK (false) NOT VALID")
    refusing = True
    try:
        # In flight for about two seconds: checkpoints (every 50 ms) try to record it, and fail.
        proxy_env.fake.set_next(Scenario(output_tokens=40, tokens_per_chunk=2, chunk_delay=0.1))
        slow = await proxy_env.post("/v1/messages", {**ANTHROPIC_BODY, "stream": True})
        assert slow.status == 200
        request_id = slow.headers["X-BlitzClaw-Request-Id"]
        await until(lambda: asyncio.sleep(0, proxy._records.failing), "a record is refused")
        quick = await proxy_env.post("/v1/messages", ANTHROPIC_BODY)
        assert quick.status == 200
        await read_all(quick)
        await pool.execute("ALTER TABLE reservations DROP CONSTRAINT refuse_all")
        refusing = False
        # The next checkpoint writes the record that was refused, while the stream still runs.
        await until(lambda: record_exists(pool, request_id), "the refused record is retried")
        assert request_id in proxy.inflight
        assert b"message_stop" in await read_all(slow)
        await proxy_env.settled()
    finally:
        if refusing:
            await pool.execute("ALTER TABLE reservations DROP CONSTRAINT refuse_all")
    rows = await pool.fetchval(
        "SELECT count(*) FROM usage_logs WHERE instance_id = $1", uuid.UUID(proxy_env.instance.id)
    )
    assert rows == 2


async def test_a_daemon_with_every_journal_slot_taken_refuses_with_503(database: str) -> None:
    from conftest import running_proxy_env

    async with running_proxy_env(database, billing={"max_in_flight": 1}) as env:
        env.fake.set_next(Scenario(output_tokens=40, tokens_per_chunk=4, chunk_delay=0.1))
        held = await env.post("/v1/messages", {**ANTHROPIC_BODY, "stream": True})
        assert held.status == 200
        forwarded = env.fake.received
        got, body = await error_of(await env.post("/v1/messages", ANTHROPIC_BODY))
        assert got == 503 and "in flight" in body["error"]["message"]
        assert env.fake.received == forwarded  # refused before it went upstream
        assert b"message_stop" in await read_all(held)
        await env.settled()
        # The slot is free again once the first request settled.
        resp = await env.post("/v1/messages", ANTHROPIC_BODY)
        assert resp.status == 200
        await read_all(resp)
        await env.settled()


async def test_a_batch_that_cannot_commit_leaves_no_caller_waiting(database: str) -> None:
    from blitzclawd.actors.billing import BillingActor
    from blitzclawd.config import parse_settings

    settings = parse_settings({"billing": {"settle_linger": 0.05}})
    billing_pool = await create_pool(database, min_size=1, max_size=2)
    actor = BillingActor(billing_pool, settings)
    run = asyncio.ensure_future(actor.run())
    try:
        await asyncio.wait_for(actor.started.wait(), 10)
        user = await funded_user(billing_pool, 20_000_000)
        inst = await seed.create_instance(billing_pool, user)
        futures = [
            actor.submit(usage(str(uuid.uuid4()), user, inst.id, None, cost=10, lease=0))
            for _ in range(3)
        ]
        billing_pool.terminate()  # the database connection is gone before the batch commits
        done, _ = await asyncio.wait(futures, timeout=10)
        assert len(done) == 3 and all(f.exception() is not None for f in futures)
    finally:
        actor.stop()
        await asyncio.wait({run}, timeout=10)
        if not run.done():
            run.cancel()
        assert run.done()


async def test_two_daemons_on_one_database_share_a_users_last_dollar(
    database: str, tmp_path
) -> None:
    """A funded user is not refused by one daemon because another holds their money idle."""
    import aiohttp

    from blitzclawd.testing.daemon_process import proxying_to
    from blitzclawd.testing.fake_llm import FakeLLM

    pool = await create_pool(database, min_size=1, max_size=4)
    async with FakeLLM() as fake:
        a = proxying_to(fake, tmp_path, database_url=database, name="a")
        b = proxying_to(fake, tmp_path, database_url=database, name="b")
        try:
            user = await funded_user(pool, FLOOR + 500_000)  # $0.50 above the minimum
            inst = await seed.create_instance(pool, user)
            body = {**ANTHROPIC_BODY, "max_tokens": 1000}
            headers = {**inst.headers, "anthropic-version": "2023-06-01"}
            await a.start()
            await b.start()
            async with aiohttp.ClientSession() as http:
                await a.wait_ready(http)
                await b.wait_ready(http)
                # Daemon A serves one request: its lease takes all $0.50, then idles.
                async with http.post(a.proxy_url + "/v1/messages", json=body, headers=headers) as r:
                    assert r.status == 200, await r.read()
                    await r.read()
                await until(
                    lambda: pool.fetchval("SELECT count(*) = 0 FROM reservations"), "A settles"
                )
                (held_by_a,) = await pool.fetch(
                    "SELECT daemon_id FROM balance_leases WHERE user_id = $1", uuid.UUID(user)
                )
                # Daemon B's grow is refused (A holds it all); A gives back; B serves.
                async with http.post(b.proxy_url + "/v1/messages", json=body, headers=headers) as r:
                    assert r.status == 200, await r.read()
                    await r.read()
            rows = dict(
                await pool.fetch(
                    "SELECT daemon_id, amount_micros FROM balance_leases WHERE user_id = $1",
                    uuid.UUID(user),
                )
            )
            assert len(rows) == 2 and rows[held_by_a[0]] < 500_000
            balance, reserved, leases = await money(pool, user)
            assert reserved == leases and balance - reserved >= FLOOR
        finally:
            await a.stop()
            await b.stop()
            await pool.close()
