"""The in-flight journal (blitzclawd.proxy.journal) and its recovery, on real files and a real
PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest

from blitzclawd.proxy.journal import (
    HEADER_SIZE,
    SLOT_SIZE,
    InflightJournal,
    JournalError,
    JournalRecord,
    journal_path,
    other_journals,
    read_journal,
)
from blitzclawd.proxy.recovery import recover_journals, recovery_charge
from blitzclawd.testing import seed
from blitzclawd.testing.fake_llm import Scenario

FLOOR = 10_000_000


def record(**changes: object) -> JournalRecord:
    fields: dict[str, object] = {
        "request_id": str(uuid.uuid4()),
        "user_id": str(uuid.uuid4()),
        "instance_id": str(uuid.uuid4()),
        "amount_micros": 40_000,
        "input_estimate_micros": 3_000,
        "api": "anthropic-messages",
        "model": "claude-sonnet-4-6",
    }
    fields.update(changes)
    return JournalRecord(**fields)  # type: ignore[arg-type]


def test_what_is_added_is_read_back_until_removed(tmp_path: Path) -> None:
    daemon = str(uuid.uuid4())
    journal = InflightJournal(journal_path(tmp_path, daemon), daemon, slots=8)
    a, b = record(), record(instance_id=None, api="openai-chat", model="gpt-5-mini")
    slot_a, slot_b = journal.add(a), journal.add(b)
    assert slot_a is not None and slot_b is not None and slot_a != slot_b
    journal.seen(slot_a, 12_345)
    writer, records = read_journal(journal.path)
    assert writer == daemon
    assert sorted(records, key=lambda r: r.request_id) == sorted(
        [JournalRecord(**{**_fields(a), "seen_micros": 12_345}), b], key=lambda r: r.request_id
    )
    journal.remove(slot_a)
    assert read_journal(journal.path)[1] == [b]
    assert journal.in_use == 1
    assert not journal.close()  # b is still in it: the file stays for recovery
    assert journal.path.exists()


def died(journal: InflightJournal) -> None:
    """As if the journal's process ended: its pages and its file stay, its lock goes."""
    journal._map.close()
    os.close(journal._fd)


def _fields(r: JournalRecord) -> dict[str, object]:
    return {name: getattr(r, name) for name in JournalRecord.__slots__}


def test_a_full_journal_says_so_and_a_freed_slot_is_reused(tmp_path: Path) -> None:
    daemon = str(uuid.uuid4())
    journal = InflightJournal(journal_path(tmp_path, daemon), daemon, slots=2)
    first, second = journal.add(record()), journal.add(record())
    assert journal.add(record()) is None
    assert first is not None and second is not None
    journal.remove(first)
    assert journal.add(record()) == first
    journal.remove(first)
    journal.remove(second)
    assert journal.close()  # empty: deleted
    assert not journal.path.exists()


def test_long_model_names_are_cut_not_overflowing_into_the_next_slot(tmp_path: Path) -> None:
    daemon = str(uuid.uuid4())
    journal = InflightJournal(journal_path(tmp_path, daemon), daemon, slots=2)
    long = record(model="m" * 400)
    neighbour = record()
    journal.add(long)
    journal.add(neighbour)
    records = {r.request_id: r for r in read_journal(journal.path)[1]}
    assert records[long.request_id].model == "m" * 150
    assert records[neighbour.request_id] == neighbour
    journal.close()


def test_a_slot_whose_used_byte_was_never_set_reads_as_free(tmp_path: Path) -> None:
    """A process killed while writing a slot (its `used` byte is set last) leaves no record."""
    daemon = str(uuid.uuid4())
    journal = InflightJournal(journal_path(tmp_path, daemon), daemon, slots=4)
    kept = record()
    journal.add(kept)
    torn = journal.add(record())
    assert torn is not None
    journal.close()
    with open(journal.path, "r+b") as f:  # as if killed before the last store of that slot
        f.seek(HEADER_SIZE + torn * SLOT_SIZE)
        f.write(b"\x00")
    assert read_journal(journal.path)[1] == [kept]


def test_records_survive_the_writer_being_killed(tmp_path: Path) -> None:
    """SIGKILL right after the stores: the kernel still has the file's pages."""
    daemon = str(uuid.uuid4())
    r = record()
    code = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from blitzclawd.proxy.journal import InflightJournal, JournalRecord\n"
        f"j = InflightJournal(Path({str(journal_path(tmp_path, daemon))!r}), {daemon!r}, 16)\n"
        f"j.add(JournalRecord(*{(r.request_id, r.user_id, r.instance_id)!r}, "
        f"{r.amount_micros}, {r.input_estimate_micros}, {r.api!r}, {r.model!r}))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], timeout=60, check=False)
    assert proc.returncode == -signal.SIGKILL
    assert read_journal(journal_path(tmp_path, daemon)) == (daemon, [r])


def test_files_that_are_not_journals_are_refused(tmp_path: Path) -> None:
    short = tmp_path / "short.journal"
    short.write_bytes(b"BCJRNL01")
    with pytest.raises(JournalError):
        read_journal(short)
    other = tmp_path / "other.journal"
    other.write_bytes(b"x" * (HEADER_SIZE + SLOT_SIZE))
    with pytest.raises(JournalError):
        read_journal(other)


def test_other_journals_lists_only_other_daemons_journal_files(tmp_path: Path) -> None:
    me, them = str(uuid.uuid4()), str(uuid.uuid4())
    InflightJournal(journal_path(tmp_path, me), me, slots=1).close()
    mine = InflightJournal(journal_path(tmp_path, me), me, slots=1)
    mine.add(record())
    theirs = InflightJournal(journal_path(tmp_path, them), them, slots=1)
    theirs.add(record())
    (tmp_path / "inflight-not-a-uuid.journal").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("")
    assert other_journals(tmp_path, me) == [(journal_path(tmp_path, them), them)]
    assert other_journals(tmp_path / "missing", me) == []
    mine.close()
    theirs.close()


# -- recovery -------------------------------------------------------------------------------------


async def funded(pool: asyncpg.Pool) -> tuple[str, seed.SeededInstance]:
    """A user with $50 and an instance of theirs."""
    user = await seed.create_user(pool)
    await seed.credit(pool, user, 50_000_000)
    return user, await seed.create_instance(pool, user)


async def _daemon(pool: asyncpg.Pool, *, stopped: bool) -> str:
    return await pool.fetchval(
        "INSERT INTO daemons (hostname, pid, version, stopped_at) "
        "VALUES ('h', $1, 't', CASE WHEN $2 THEN now() END) RETURNING id::text",
        os.getpid(),
        stopped,
    )


async def test_a_stopped_daemons_journal_is_charged_once_and_deleted(
    db_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    pool = db_pool
    dead = await _daemon(pool, stopped=True)
    user, inst = await funded(pool)
    journal = InflightJournal(journal_path(tmp_path, dead), dead, slots=8)
    cut = record(user_id=user, instance_id=inst.id, amount_micros=40_000)
    checkpointed = record(user_id=user, instance_id=inst.id, amount_micros=40_000)
    journal.seen(journal.add(checkpointed), 25_000)  # type: ignore[arg-type]
    journal.add(cut)
    died(journal)

    me = await _daemon(pool, stopped=False)
    results = await recover_journals(pool, tmp_path, me, FLOOR)
    assert sorted(r.outcome for r in results) == ["recovered", "recovered"]
    charged = dict(
        await pool.fetch(
            "SELECT request_id::text, cost_micros FROM usage_logs WHERE recovered AND interrupted"
        )
    )
    assert charged == {
        cut.request_id: recovery_charge(40_000, 0, 3_000),  # the prompt's cost
        checkpointed.request_id: 25_000,  # what the stream had cost at its last checkpoint
    }
    assert (
        await pool.fetchval(
            "SELECT balance_micros FROM balances WHERE user_id = $1", uuid.UUID(user)
        )
        == 50_000_000 - 3_000 - 25_000
    )
    assert not journal_path(tmp_path, dead).exists()
    assert await recover_journals(pool, tmp_path, me, FLOOR) == []  # nothing left to do


async def test_journals_of_running_or_unknown_daemons_are_left_alone(
    db_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    pool = db_pool
    running = await _daemon(pool, stopped=False)
    unknown = str(uuid.uuid4())  # another database's daemon sharing the state directory
    # Marked stopped in the database (presumed dead), yet still running: it holds its journal.
    presumed_dead = await _daemon(pool, stopped=True)
    journals = []
    for daemon in (running, unknown, presumed_dead):
        journal = InflightJournal(journal_path(tmp_path, daemon), daemon, slots=2)
        journal.add(record())
        journals.append(journal)
    for journal in journals[:2]:
        died(journal)
    me = await _daemon(pool, stopped=False)
    assert await recover_journals(pool, tmp_path, me, FLOOR) == []
    assert all(journal_path(tmp_path, d).exists() for d in (running, unknown, presumed_dead))
    assert not await pool.fetchval("SELECT count(*) FROM usage_logs")
    journals[2].close()


async def test_a_request_settled_before_the_crash_is_not_charged_again(
    db_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """Killed after its settlement committed but before its slot was cleared: a duplicate."""
    pool = db_pool
    from blitzclawd import ledger
    from blitzclawd.runtime.messages import Settlement

    dead = await _daemon(pool, stopped=True)
    user, inst = await funded(pool)
    done = record(user_id=user, instance_id=inst.id)
    journal = InflightJournal(journal_path(tmp_path, dead), dead, slots=2)
    journal.add(done)
    died(journal)
    await ledger.settle(
        pool,
        [Settlement(done.request_id, user, inst.id, done.api, done.model, 7_000, output_tokens=9)],
        FLOOR,
    )
    me = await _daemon(pool, stopped=False)
    (result,) = await recover_journals(pool, tmp_path, me, FLOOR)
    assert result.outcome == "duplicate"
    assert await pool.fetchval("SELECT count(*) FROM usage_logs") == 1
    assert (
        await pool.fetchval(
            "SELECT balance_micros FROM balances WHERE user_id = $1", uuid.UUID(user)
        )
        == 50_000_000 - 7_000
    )


async def test_a_finished_request_is_charged_its_final_cost_and_a_void_nothing(
    db_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """Over before its daemon died (its settlement not committed, or committed as a void that
    left no usage row): recovery charges what it really cost, never an estimate."""
    pool = db_pool
    dead = await _daemon(pool, stopped=True)
    user, inst = await funded(pool)
    refused = record(user_id=user, instance_id=inst.id)  # the upstream said 429: cost 0
    answered = record(user_id=user, instance_id=inst.id, amount_micros=40_000)
    journal = InflightJournal(journal_path(tmp_path, dead), dead, slots=4)
    journal.finish(journal.add(refused), 0)  # type: ignore[arg-type]
    journal.finish(journal.add(answered), 51_000)  # type: ignore[arg-type]  # beyond its hold
    died(journal)
    assert {r.request_id: (r.finished, r.seen_micros) for r in read_journal(journal.path)[1]} == {
        refused.request_id: (True, 0),
        answered.request_id: (True, 51_000),
    }
    me = await _daemon(pool, stopped=False)
    outcomes = {r.request_id: r.outcome for r in await recover_journals(pool, tmp_path, me, FLOOR)}
    assert outcomes == {refused.request_id: "voided", answered.request_id: "recovered"}
    charged = dict(await pool.fetch("SELECT request_id::text, cost_micros FROM usage_logs"))
    assert charged == {answered.request_id: 51_000}
    assert (
        await pool.fetchval(
            "SELECT balance_micros FROM balances WHERE user_id = $1", uuid.UUID(user)
        )
        == 50_000_000 - 51_000
    )


def test_only_journal_names_with_a_whole_uuid_count(tmp_path: Path) -> None:
    (tmp_path / f"inflight-{'0' * 36}.journal").write_bytes(b"")  # 36 characters, not a uuid
    (tmp_path / "inflight-0123-.journal").write_bytes(b"")
    assert other_journals(tmp_path, str(uuid.uuid4())) == []


async def test_a_settlement_that_cannot_commit_at_stop_is_charged_at_the_next_start(
    database: str,
) -> None:
    """The database refuses settlements while the daemon stops: the request stays in the
    journal (with its final cost) and its user's lease stays held; the next daemon on the same
    state directory charges it exactly, then releases the lease."""
    from conftest import running_proxy_env

    body = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "hi"}],
    }
    async with running_proxy_env(database) as env:
        user = env.instance.user_id
        before = await env.balance()
        await env.pool.execute(
            "ALTER TABLE usage_logs ADD CONSTRAINT refuse_all CHECK (false) NOT VALID"
        )
        # In flight for ~0.5 s: checkpoints (every 50 ms) give it a database record as well.
        env.fake.set_next(Scenario(output_tokens=40, tokens_per_chunk=4, chunk_delay=0.05))
        resp = await env.post("/v1/messages", {**body, "stream": True})
        assert resp.status == 200
        request_id = resp.headers["X-BlitzClaw-Request-Id"]
        assert b"message_stop" in await resp.read()
        proxy = env.daemon.supervisor.child("proxy")
        deadline = asyncio.get_running_loop().time() + 10
        while not proxy.settlements.waiting:
            assert asyncio.get_running_loop().time() < deadline, "the settlement never failed"
            await asyncio.sleep(0.01)
        journal = journal_path(env.daemon.settings.state_path(), env.daemon.daemon_id)
        dead = env.daemon.daemon_id
    # Stopped with the settlement uncommitted: it waits in the journal, its lease still held.
    (left,) = [r for r in read_journal(journal)[1] if r.request_id == request_id]
    assert left.finished and left.seen_micros > 0
    pool = await asyncpg.connect(database)
    try:
        # Its database record says so too, for a daemon on another host.
        assert tuple(
            await pool.fetchrow(
                "SELECT finished, seen_micros FROM reservations WHERE id = $1",
                uuid.UUID(request_id),
            )
        ) == (True, left.seen_micros)
        assert await pool.fetchval(
            "SELECT amount_micros FROM balance_leases WHERE daemon_id = $1", uuid.UUID(dead)
        )
        await pool.execute("ALTER TABLE usage_logs DROP CONSTRAINT refuse_all")
        async with running_proxy_env(database):
            pass  # starting is enough: the journal is charged before anything else
        cost = await pool.fetchval(
            "SELECT cost_micros FROM usage_logs WHERE request_id = $1 AND recovered",
            uuid.UUID(request_id),
        )
        assert cost == left.seen_micros  # its real cost, not an estimate
        assert (
            await pool.fetchval(
                "SELECT balance_micros FROM balances WHERE user_id = $1", uuid.UUID(user)
            )
            == before - cost
        )
        assert not journal.exists()
        assert not await pool.fetchval(
            "SELECT count(*) FROM balance_leases WHERE daemon_id = $1", uuid.UUID(dead)
        )
    finally:
        await pool.close()


async def test_a_database_refusing_for_now_leaves_the_journal_for_the_next_round(
    db_pool: asyncpg.Pool, tmp_path: Path, database: str
) -> None:
    """A lock timeout is the moment's fault, not the record's: nothing is given up."""
    pool = db_pool
    dead = await _daemon(pool, stopped=True)
    user, inst = await funded(pool)
    journal = InflightJournal(journal_path(tmp_path, dead), dead, slots=2)
    journal.add(record(user_id=user, instance_id=inst.id))
    died(journal)
    me = await _daemon(pool, stopped=False)
    impatient = await asyncpg.create_pool(
        database, min_size=1, max_size=1, server_settings={"lock_timeout": "100"}
    )
    holder = await asyncpg.connect(database)
    try:
        tx = holder.transaction()
        await tx.start()
        await holder.execute("SELECT FROM balances WHERE user_id = $1 FOR UPDATE", uuid.UUID(user))
        with pytest.raises(asyncpg.LockNotAvailableError):
            await recover_journals(impatient, tmp_path, me, FLOOR)
        assert journal.path.exists()  # kept as it was, not set aside as failed
        await tx.rollback()
        (result,) = await recover_journals(impatient, tmp_path, me, FLOOR)
        assert result.outcome == "recovered"
        assert not journal.path.exists()
    finally:
        await holder.close()
        await impatient.close()


async def test_a_record_the_database_refuses_for_good_is_set_aside_for_an_operator(
    db_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    pool = db_pool
    dead = await _daemon(pool, stopped=True)
    user, inst = await funded(pool)
    good = record(user_id=user, instance_id=inst.id)
    bad = record(user_id=user, instance_id=inst.id, api="not-an-api")  # refused by a CHECK
    journal = InflightJournal(journal_path(tmp_path, dead), dead, slots=2)
    journal.add(good)
    journal.add(bad)
    died(journal)
    me = await _daemon(pool, stopped=False)
    (result,) = await recover_journals(pool, tmp_path, me, FLOOR)
    assert result.request_id == good.request_id and result.outcome == "recovered"
    assert not journal.path.exists()
    failed = journal.path.with_name(journal.path.name + ".failed")
    assert [r.request_id for r in read_journal(failed)[1]] == [good.request_id, bad.request_id]
    assert other_journals(tmp_path, me) == []  # not taken up again


async def test_a_database_record_marked_finished_is_charged_its_final_cost(
    db_pool: asyncpg.Pool,
) -> None:
    """Any daemon's recovery (not only a restart on the same host) charges a request that was
    over exactly, from its database record: a void nothing, an answer its real cost."""
    from blitzclawd.proxy.recovery import recover_orphaned_reservations

    pool = db_pool
    dead = await _daemon(pool, stopped=True)
    user, inst = await funded(pool)
    rows = {"void": (0, True), "answered": (51_000, True), "cut": (25_000, False)}
    ids = {}
    for name, (seen, finished) in rows.items():
        ids[name] = uuid.uuid4()
        await pool.execute(
            "INSERT INTO reservations (id, user_id, instance_id, amount_micros, daemon_id,"
            " input_estimate_micros, seen_micros, finished, api, model)"
            " VALUES ($1, $2, $3, 40000, $4, 3000, $5, $6,"
            " 'anthropic-messages', 'claude-sonnet-4-6')",
            ids[name],
            uuid.UUID(user),
            uuid.UUID(inst.id),
            uuid.UUID(dead),
            seen,
            finished,
        )
    outcomes = {r.request_id: r.outcome for r in await recover_orphaned_reservations(pool, FLOOR)}
    assert outcomes == {
        str(ids["void"]): "voided",
        str(ids["answered"]): "recovered",
        str(ids["cut"]): "recovered",
    }
    charged = {
        r[0]: (r[1], r[2])
        for r in await pool.fetch(
            "SELECT request_id::text, cost_micros, interrupted FROM usage_logs WHERE recovered"
        )
    }
    assert charged == {
        str(ids["answered"]): (51_000, False),  # its final cost, beyond its hold
        str(ids["cut"]): (25_000, True),  # the rule: what the stream had cost
    }
    assert not await pool.fetchval("SELECT count(*) FROM reservations")
