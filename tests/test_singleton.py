"""Singletons: one holder of the advisory lock per database, takeover when it goes away."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from blitzclawd.runtime.actor import Actor
from blitzclawd.runtime.singleton import LockLost, SingletonChild, lock_key
from blitzclawd.runtime.supervisor import ChildSpec, Supervisor

DEADLINE = 10.0
POLL = 0.01


class LockSession(asyncpg.Connection):
    """A real connection that counts its lock polls, so tests can wait for them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lock_polls = 0
        self._polled = asyncio.Event()

    async def fetchval(self, query: str, *args: Any, **kwargs: Any) -> Any:
        value = await super().fetchval(query, *args, **kwargs)
        if "pg_try_advisory_lock" in query:
            self.lock_polls += 1
            self._polled.set()
        return value

    async def polls(self, count: int) -> None:
        """Wait until at least `count` lock polls have been answered."""
        # Bounded by the caller's deadline; re-checked after every poll.
        while self.lock_polls < count:
            self._polled.clear()
            await self._polled.wait()


class Leader(Actor):
    """The singleton's inner child: announces itself on start."""

    def __init__(self, who: str, leaders: asyncio.Queue[Leader]) -> None:
        super().__init__(f"leader-{who}")
        self.who = who
        self.leaders = leaders

    async def on_start(self) -> None:
        self.leaders.put_nowait(self)

    async def handle(self, message: object) -> object | None:
        if message == "crash":
            raise RuntimeError("leader crashed")
        return (self.who, message)


class Contender:
    """One daemon's SingletonChild with its dedicated, observable lock sessions."""

    def __init__(self, who: str, dsn: str, leaders: asyncio.Queue[Leader]) -> None:
        self.who = who
        self.dsn = dsn
        self.leaders = leaders
        self.sessions: list[LockSession] = []
        self.connected = asyncio.Event()
        self.singleton = self.build()

    def build(self) -> SingletonChild:
        """A fresh SingletonChild (a supervisor builds one per restart)."""
        self.singleton = SingletonChild(
            "pool_manager",
            lambda: Leader(self.who, self.leaders),
            self.connect,
            poll_interval=POLL,
        )
        return self.singleton

    async def connect(self) -> asyncpg.Connection:
        session = await asyncpg.connect(self.dsn, connection_class=LockSession)
        self.sessions.append(session)
        self.connected.set()
        return session

    @property
    def session(self) -> LockSession:
        return self.sessions[-1]

    def start(self) -> asyncio.Task[None]:
        return asyncio.create_task(self.singleton.run(), name=f"singleton-{self.who}")


async def held_locks(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
    finally:
        await conn.close()


async def kill_session(dsn: str, session: asyncpg.Connection) -> None:
    """Terminate `session` from the server side, as if its daemon's host vanished."""
    admin = await asyncpg.connect(dsn)
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", session.get_server_pid())
    finally:
        await admin.close()


@dataclass
class Race:
    holder: Contender
    standby: Contender
    leader: Leader
    tasks: dict[str, asyncio.Task[None]]
    leaders: asyncio.Queue[Leader]

    async def successor(self) -> Leader:
        """The next leader to start: it must be the standby's."""
        leader = await asyncio.wait_for(self.leaders.get(), DEADLINE)
        assert leader.who == self.standby.who
        await asyncio.wait_for(leader.started.wait(), DEADLINE)
        assert self.standby.singleton.inner is leader
        return leader

    async def stop(self) -> None:
        for contender in (self.holder, self.standby):
            contender.singleton.stop()
        done, _ = await asyncio.wait(self.tasks.values(), timeout=DEADLINE)
        assert len(done) == 2
        for contender in (self.holder, self.standby):
            assert all(session.is_closed() for session in contender.sessions)


async def race(dsn: str) -> Race:
    """Two contenders on one database; returns once one leads and the other is refused."""
    leaders: asyncio.Queue[Leader] = asyncio.Queue()
    a, b = Contender("a", dsn, leaders), Contender("b", dsn, leaders)
    tasks = {"a": a.start(), "b": b.start()}
    leader = await asyncio.wait_for(leaders.get(), DEADLINE)
    holder, standby = (a, b) if leader.who == "a" else (b, a)
    await asyncio.wait_for(leader.started.wait(), DEADLINE)
    await asyncio.wait_for(standby.connected.wait(), DEADLINE)
    # Several polls after the leader started: the standby keeps being refused.
    await asyncio.wait_for(standby.session.polls(standby.session.lock_polls + 3), DEADLINE)
    assert leaders.empty()
    return Race(holder, standby, leader, tasks, leaders)


def test_lock_key_is_stable_and_a_signed_int64() -> None:
    # Pinned: daemons of different versions on one database must agree on every key.
    assert lock_key("pool_manager") == -4282793394836905178
    assert lock_key("pool_manager") != lock_key("health_monitor")
    assert all(-(2**63) <= lock_key(n) < 2**63 for n in ("a", "b", "health_monitor"))


async def test_exactly_one_runs_and_the_other_takes_over_on_stop(database: str) -> None:
    r = await race(database)
    assert r.holder.singleton.state == "running"
    assert r.holder.singleton.inner is r.leader
    assert await r.leader.ask("ping") == (r.holder.who, "ping")
    assert r.standby.singleton.state == "standby"
    assert r.standby.singleton.inner is None
    assert await held_locks(database) == 1

    r.holder.singleton.stop()
    await asyncio.wait_for(r.tasks[r.holder.who], DEADLINE)  # a normal return
    assert r.leader.state == "stopped"
    assert r.holder.session.is_closed()
    assert r.holder.singleton.state == "stopped"

    await r.successor()
    assert r.standby.singleton.state == "running"
    await r.stop()


async def test_a_killed_lock_session_hands_over(database: str) -> None:
    r = await race(database)
    await kill_session(database, r.holder.session)
    with pytest.raises(LockLost):
        await asyncio.wait_for(r.tasks[r.holder.who], DEADLINE)
    assert r.leader.state == "stopped"  # the inner child was stopped, not abandoned
    assert r.holder.singleton.state == "crashed"
    assert r.holder.singleton.inner is None
    await r.successor()
    await r.stop()


async def test_stop_while_standing_by(database: str) -> None:
    r = await race(database)
    r.standby.singleton.stop()
    await asyncio.wait_for(r.tasks[r.standby.who], DEADLINE)
    assert r.standby.session.is_closed()
    assert r.standby.singleton.state == "stopped"
    assert r.holder.singleton.state == "running"
    await r.stop()


async def test_an_inner_crash_is_raised_and_releases_the_lock(database: str) -> None:
    r = await race(database)
    r.leader.tell("crash")
    with pytest.raises(RuntimeError, match="leader crashed"):
        await asyncio.wait_for(r.tasks[r.holder.who], DEADLINE)
    assert r.holder.session.is_closed()
    await r.successor()
    await r.stop()


async def test_a_supervised_singleton_recovers_from_a_lost_session(database: str) -> None:
    leaders: asyncio.Queue[Leader] = asyncio.Queue()
    solo = Contender("solo", database, leaders)
    sup = Supervisor([ChildSpec("pool_manager", solo.build)], backoff_base=0.001)
    await asyncio.wait_for(sup.start(), DEADLINE)
    first = await asyncio.wait_for(leaders.get(), DEADLINE)
    await asyncio.wait_for(first.started.wait(), DEADLINE)
    assert sup.status()[0].state == "running"
    assert sup.children_running() == (True, None)

    await kill_session(database, solo.session)
    second = await asyncio.wait_for(leaders.get(), DEADLINE)
    assert first.state == "stopped"
    assert second is not first
    status = sup.status()[0]
    assert status.restarts == 1
    assert status.last_error is not None and "LockLost" in status.last_error
    await asyncio.wait_for(sup.stop(), DEADLINE)
    assert all(session.is_closed() for session in solo.sessions)
