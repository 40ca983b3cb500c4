"""The money invariants the schema enforces by itself: an append-only ledger whose entries are
the only way to move a balance, so balance == sum(entries) by construction."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

from blitzclawd.db.pool import connect

INSERT_ENTRY = """
    INSERT INTO ledger_entries (user_id, amount_micros, kind, idempotency_key)
    VALUES ($1, $2, $3, $4)
    RETURNING balance_after_micros
"""


@pytest_asyncio.fixture(loop_scope="function")
async def conn(database: str) -> AsyncIterator[asyncpg.Connection]:
    c = await connect(database)
    try:
        yield c
    finally:
        await c.close()


async def new_user(conn: asyncpg.Connection) -> uuid.UUID:
    return await conn.fetchval("INSERT INTO users DEFAULT VALUES RETURNING id")


async def balance(conn: asyncpg.Connection, user: uuid.UUID) -> int | None:
    return await conn.fetchval("SELECT balance_micros FROM balances WHERE user_id = $1", user)


async def ledger_sum(conn: asyncpg.Connection, user: uuid.UUID) -> int:
    return await conn.fetchval(
        "SELECT coalesce(sum(amount_micros), 0) FROM ledger_entries WHERE user_id = $1", user
    )


async def wait_until_blocked(conn: asyncpg.Connection, pid: int) -> None:
    """Until backend ``pid`` waits for a lock (deadline 10 s)."""
    query = "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1"
    async with asyncio.timeout(10):
        while True:
            if await conn.fetchval(query, pid):
                return
            await asyncio.sleep(0.01)


async def test_entry_moves_balance_and_records_balance_after(conn: asyncpg.Connection) -> None:
    user = await new_user(conn)
    assert await balance(conn, user) is None  # the first entry creates the balances row
    assert await conn.fetchval(INSERT_ENTRY, user, 20_000_000, "topup", "creem:order-1") == (
        20_000_000
    )
    assert await conn.fetchval(INSERT_ENTRY, user, -1_234, "usage", "req-1") == 19_998_766
    assert await balance(conn, user) == 19_998_766
    # A client cannot choose balance_after: the trigger overwrites it.
    after = await conn.fetchval(
        "INSERT INTO ledger_entries (user_id, amount_micros, kind, balance_after_micros)"
        " VALUES ($1, 1, 'adjustment', 999) RETURNING balance_after_micros",
        user,
    )
    assert after == 19_998_767 == await balance(conn, user)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_entries SET amount_micros = 1000000000",
        "UPDATE ledger_entries SET balance_after_micros = 0 WHERE false",
        "DELETE FROM ledger_entries",
        "TRUNCATE ledger_entries",
        "INSERT INTO ledger_entries (user_id, amount_micros, kind, idempotency_key)"
        " SELECT user_id, 5, 'topup', idempotency_key FROM ledger_entries"
        " ON CONFLICT (idempotency_key) DO UPDATE SET amount_micros = 5",
    ],
)
async def test_ledger_is_append_only(conn: asyncpg.Connection, statement: str) -> None:
    user = await new_user(conn)
    await conn.execute(INSERT_ENTRY, user, 5_000_000, "topup", "k1")
    before = await conn.fetch("SELECT * FROM ledger_entries ORDER BY id")
    with pytest.raises(asyncpg.RaiseError, match="not allowed"):
        await conn.execute(statement)
    assert await conn.fetch("SELECT * FROM ledger_entries ORDER BY id") == before
    assert await balance(conn, user) == 5_000_000


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE balances SET balance_micros = balance_micros + 1000000",
        "INSERT INTO balances (user_id, balance_micros) VALUES ($1, 1) ON CONFLICT (user_id)"
        " DO UPDATE SET balance_micros = 99",
    ],
)
async def test_balance_moves_only_through_the_ledger(
    conn: asyncpg.Connection, statement: str
) -> None:
    user = await new_user(conn)
    await conn.execute(INSERT_ENTRY, user, 10_000_000, "topup", None)
    args = [user] if "$1" in statement else []
    with pytest.raises(asyncpg.RaiseError, match="only through ledger_entries"):
        await conn.execute(statement, *args)
    for refused in ("DELETE FROM balances", "TRUNCATE balances"):
        with pytest.raises(asyncpg.RaiseError, match="not allowed"):
            await conn.execute(refused)
    assert await balance(conn, user) == 10_000_000 == await ledger_sum(conn, user)


async def test_settings_and_empty_balance_rows_are_writable(conn: asyncpg.Connection) -> None:
    user, other = await new_user(conn), await new_user(conn)
    await conn.execute("INSERT INTO balances (user_id) VALUES ($1)", user)
    with pytest.raises(asyncpg.RaiseError, match="only through ledger_entries"):
        await conn.execute("INSERT INTO balances (user_id, balance_micros) VALUES ($1, 1)", other)
    await conn.execute(
        "UPDATE balances SET auto_topup_enabled = true, topup_threshold_micros = 10000000,"
        " topup_amount_micros = 20000000 WHERE user_id = $1",
        user,
    )
    assert await conn.fetchval(INSERT_ENTRY, user, 3, "topup", None) == 3


async def test_duplicate_idempotency_key_changes_nothing(conn: asyncpg.Connection) -> None:
    user = await new_user(conn)
    await conn.execute(INSERT_ENTRY, user, 10_000_000, "topup", "creem:evt-1")
    count = await conn.fetchval("SELECT count(*) FROM ledger_entries")
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute(INSERT_ENTRY, user, 10_000_000, "topup", "creem:evt-1")
    # ON CONFLICT DO NOTHING runs BEFORE triggers for the rows it skips; it must not move money.
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute(
            "INSERT INTO ledger_entries (user_id, amount_micros, kind, idempotency_key)"
            " VALUES ($1, 10000000, 'topup', 'creem:evt-1') ON CONFLICT DO NOTHING",
            user,
        )
    # Twice in one statement.
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute(
            "INSERT INTO ledger_entries (user_id, amount_micros, kind, idempotency_key)"
            " VALUES ($1, 7, 'topup', 'dup'), ($1, 7, 'topup', 'dup')",
            user,
        )
    assert await conn.fetchval("SELECT count(*) FROM ledger_entries") == count
    assert await balance(conn, user) == 10_000_000


async def test_concurrent_duplicate_waits_then_fails(database: str) -> None:
    first, second = await connect(database), await connect(database)
    try:
        user = await new_user(first)
        await first.execute(INSERT_ENTRY, user, 1_000_000, "topup", None)
        tx = first.transaction()
        await tx.start()
        await first.execute(INSERT_ENTRY, user, 5_000_000, "topup", "creem:evt-race")
        racer = asyncio.create_task(
            second.execute(
                "INSERT INTO ledger_entries (user_id, amount_micros, kind, idempotency_key)"
                " VALUES ($1, 5000000, 'topup', 'creem:evt-race') ON CONFLICT DO NOTHING",
                user,
            )
        )
        observer = await connect(database)
        try:
            await wait_until_blocked(observer, second.get_server_pid())
        finally:
            await observer.close()
        await tx.commit()
        with pytest.raises(asyncpg.UniqueViolationError):
            await racer
        assert await balance(first, user) == 6_000_000 == await ledger_sum(first, user)
    finally:
        await first.close()
        await second.close()


@pytest.mark.parametrize(
    ("amount", "kind"), [(0, "adjustment"), (5, "usage"), (-5, "topup"), (-5, "subscription")]
)
async def test_amount_sign_must_fit_kind(conn: asyncpg.Connection, amount: int, kind: str) -> None:
    user = await new_user(conn)
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute(INSERT_ENTRY, user, amount, kind, None)
    assert await balance(conn, user) is None


async def test_balance_is_sum_of_entries_after_mixed_sequence(
    conn: asyncpg.Connection, db_pool: asyncpg.Pool
) -> None:
    alice, bob = await new_user(conn), await new_user(conn)
    sequence = [
        (alice, 25_000_000, "topup", "creem:a1"),
        (alice, -1_500, "usage", "req-1"),
        (bob, 10_000_000, "topup", "creem:b1"),
        (alice, -73, "usage", "req-2"),
        (alice, 20_000_000, "subscription", "sub:2025-01"),
        (bob, -10_500_000, "usage", "req-3"),  # a balance may go negative
        (alice, 1_500, "refund", "refund:req-1"),
        (bob, 400_000, "adjustment", None),
        (alice, -5_000_000, "chargeback", "creem:cb1"),
        (alice, -1_500, "usage", "req-1"),  # replay: refused below
    ]
    running: dict[uuid.UUID, int] = {alice: 0, bob: 0}
    for user, amount, kind, key in sequence:
        try:
            async with conn.transaction():
                after = await conn.fetchval(INSERT_ENTRY, user, amount, kind, key)
        except asyncpg.UniqueViolationError:
            assert key == "req-1"
            continue
        running[user] += amount
        assert after == running[user]
    # A multi-row statement applies each row in turn.
    rows = await conn.fetch(
        "INSERT INTO ledger_entries (user_id, amount_micros, kind)"
        " SELECT $1, -amount, 'usage' FROM generate_series(1, 5) AS amount"
        " RETURNING balance_after_micros",
        bob,
    )
    assert [r[0] for r in rows] == [running[bob] - sum(range(1, n + 1)) for n in range(1, 6)]
    # Many writers at once, each in its own transaction.
    await asyncio.gather(
        *(
            db_pool.execute(INSERT_ENTRY, user, -(n + 1), "usage", f"req-c{n}-{user}")
            for n in range(40)
            for user in (alice, bob)
        )
    )
    for user in (alice, bob):
        assert await balance(conn, user) == await ledger_sum(conn, user)
    assert await balance(conn, alice) == running[alice] - sum(range(1, 41))
