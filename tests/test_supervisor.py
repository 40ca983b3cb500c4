"""The supervisor: ordering, restart rules, intensity, backoff, status."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import pytest

from blitzclawd.runtime.actor import Actor, AskTimeout
from blitzclawd.runtime.outage import DependencyUnavailable, dependency_unavailable
from blitzclawd.runtime.singleton import LockLost
from blitzclawd.runtime.supervisor import (
    ChildSpec,
    NoSuchChild,
    Restart,
    StartFailed,
    Strategy,
    Supervisor,
    SupervisorEscalation,
    backoff_delay,
)

DEADLINE = 5.0
FAST = {"backoff_base": 0.001, "backoff_max": 0.01, "outage_backoff_max": 0.01}


class Probe(Actor):
    """Logs lifecycle events into a shared list; "crash" raises, "exit" returns normally."""

    def __init__(self, name: str, log: list[str], *, fail_start: bool = False) -> None:
        super().__init__(name)
        self.log = log
        self.fail_start = fail_start

    async def on_start(self) -> None:
        if self.fail_start:
            raise RuntimeError(f"{self.name} cannot start")
        self.log.append(f"{self.name}:start")

    async def on_stop(self) -> None:
        self.log.append(f"{self.name}:stop")

    async def handle(self, message: object) -> object | None:
        if message == "crash":
            raise RuntimeError(f"{self.name} crashed on purpose")
        if message == "outage":  # what asyncpg raises when PostgreSQL is gone
            raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")
        if message == "exit":
            self.stop()
            return None
        return f"{self.name}:{message}"


class Built:
    """A factory of Probes that hands each new instance to the test through a queue."""

    def __init__(self, name: str, log: list[str], **kwargs: bool) -> None:
        self.name = name
        self.log = log
        self.kwargs = kwargs
        self.instances: asyncio.Queue[Probe] = asyncio.Queue()
        self.count = 0

    def __call__(self) -> Probe:
        self.count += 1
        probe = Probe(self.name, self.log, **self.kwargs)
        self.instances.put_nowait(probe)
        return probe

    async def next(self) -> Probe:
        """The next instance built, once it has started."""
        probe = await asyncio.wait_for(self.instances.get(), DEADLINE)
        await asyncio.wait_for(probe.started.wait(), DEADLINE)
        return probe


class Stubborn:
    """A child that ignores stop(): only cancellation ends it."""

    def __init__(self) -> None:
        self.name = "stubborn"
        self.started = asyncio.Event()
        self.cancelled = False

    async def run(self) -> None:
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise

    def stop(self) -> None:
        pass


class Decisions(logging.Handler):
    """Collects the supervisor's log records; every exit decision is logged after it is made."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.changed.set()

    async def until(self, condition: Callable[[], bool]) -> None:
        """Wait (bounded by DEADLINE) until `condition()` holds after some decision."""

        async def wait() -> None:
            # Bounded by the deadline; re-checked after every logged decision.
            while True:
                self.changed.clear()
                if condition():
                    return
                await self.changed.wait()

        await asyncio.wait_for(wait(), DEADLINE)


@pytest.fixture
def decisions() -> Iterator[Decisions]:
    handler = Decisions()
    logger = logging.getLogger("blitzclawd.supervisor")
    level = logger.level
    logger.setLevel(logging.DEBUG)  # quiet decisions (a transient child's normal exit) too
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def spec(factory: Built, restart: Restart = Restart.PERMANENT, **kwargs: float) -> ChildSpec:
    return ChildSpec(factory.name, factory, restart, **kwargs)


async def started(specs: list[ChildSpec], **kwargs: Any) -> Supervisor:
    sup = Supervisor(specs, **{**FAST, **kwargs})
    await asyncio.wait_for(sup.start(), DEADLINE)
    return sup


def state_of(sup: Supervisor, name: str) -> str:
    return next(s.state for s in sup.status() if s.name == name)


async def test_start_in_order_stop_in_reverse() -> None:
    log: list[str] = []
    a, b, c = (Built(n, log) for n in "abc")
    sup = await started([spec(a), spec(b), spec(c)])
    assert log == ["a:start", "b:start", "c:start"]
    assert {t.get_name() for t in asyncio.all_tasks()} >= {"a", "b", "c"}
    await asyncio.wait_for(sup.stop(), DEADLINE)
    assert log[3:] == ["c:stop", "b:stop", "a:stop"]
    await asyncio.wait_for(sup.wait(), DEADLINE)
    assert not sup.escalated.is_set()
    assert [s.state for s in sup.status()] == ["stopped"] * 3
    await asyncio.wait_for(sup.stop(), DEADLINE)  # idempotent


@pytest.mark.parametrize("restart", list(Restart))
async def test_restart_after_a_crash(restart: Restart, decisions: Decisions) -> None:
    log: list[str] = []
    a = Built("a", log)
    sup = await started([spec(a, restart)])
    first = await a.next()
    first.tell("crash")
    if restart is Restart.TEMPORARY:
        await decisions.until(lambda: state_of(sup, "a") == "failed")
        assert a.count == 1
        assert sup.child("a") is None
    else:
        second = await a.next()
        assert second is not first
        assert sup.child("a") is second
        assert await second.ask("ping") == "a:ping"
        assert sup.status()[0].restarts == 1
    await sup.stop()


@pytest.mark.parametrize("restart", list(Restart))
async def test_restart_after_a_normal_exit(restart: Restart, decisions: Decisions) -> None:
    log: list[str] = []
    a = Built("a", log)
    sup = await started([spec(a, restart)])
    first = await a.next()
    first.tell("exit")
    if restart is Restart.PERMANENT:
        second = await a.next()
        assert sup.child("a") is second
    else:
        await decisions.until(lambda: state_of(sup, "a") == "stopped")
        assert a.count == 1
        assert sup.status()[0].last_error is None
    await sup.stop()


async def test_a_crashing_child_never_disturbs_its_sibling() -> None:
    log: list[str] = []
    flaky, steady = Built("flaky", log), Built("steady", log)
    sup = await started([spec(flaky), spec(steady)], max_restarts=100, within=60.0)
    worker = await steady.next()
    for _ in range(5):
        (await flaky.next()).tell("crash")
        assert await worker.ask("ping") == "steady:ping"
    await flaky.next()
    assert sup.child("steady") is worker
    assert steady.count == 1
    assert "steady:stop" not in log
    assert sup.status()[0].restarts == 5
    await sup.stop()


async def test_restart_intensity_exceeded_escalates() -> None:
    log: list[str] = []
    a, b, c = Built("a", log), Built("b", log), Built("c", log)
    sup = await started([spec(a), spec(b), spec(c)], max_restarts=2, within=60.0)
    for _ in range(3):
        (await b.next()).tell("crash")
    await asyncio.wait_for(sup.wait(), DEADLINE)
    assert sup.escalated.is_set()
    assert isinstance(sup.escalation, SupervisorEscalation)
    assert isinstance(sup.escalation.__cause__, RuntimeError)
    assert b.count == 3  # two restarts allowed, the third crash escalated
    assert log[-2:] == ["c:stop", "a:stop"]  # the rest stopped in reverse order
    assert [s.state for s in sup.status()] == ["stopped", "failed", "stopped"]
    assert sup.children_running() == (False, "a is stopped")
    assert b.instances.empty()  # nothing restarted after escalation


async def test_restarts_outside_the_window_do_not_escalate() -> None:
    log: list[str] = []
    a = Built("a", log)
    # A zero-length window forgets every restart at once, so intensity never builds up.
    sup = await started([spec(a)], max_restarts=1, within=0.0)
    for _ in range(3):
        (await a.next()).tell("crash")
    await a.next()
    assert not sup.escalated.is_set()
    await sup.stop()


async def test_stop_interrupts_a_pending_backoff(decisions: Decisions) -> None:
    log: list[str] = []
    a = Built("a", log)
    sup = await started([spec(a)], backoff_base=3600.0, backoff_max=3600.0)
    (await a.next()).tell("crash")
    await decisions.until(lambda: state_of(sup, "a") == "restarting")
    assert sup.child("a") is None
    await asyncio.wait_for(sup.stop(), DEADLINE)
    assert state_of(sup, "a") == "stopped"
    assert a.count == 1


async def test_a_child_failing_to_start_stops_the_earlier_ones() -> None:
    log: list[str] = []
    a, b, c = Built("a", log), Built("b", log, fail_start=True), Built("c", log)
    sup = Supervisor([spec(a), spec(b), spec(c)], **FAST)
    with pytest.raises(StartFailed, match="b cannot start"):
        await asyncio.wait_for(sup.start(), DEADLINE)
    assert log == ["a:start", "a:stop"]
    assert c.count == 0
    await asyncio.wait_for(sup.wait(), DEADLINE)
    assert not sup.escalated.is_set()
    assert [s.state for s in sup.status()] == ["stopped", "failed", "stopped"]


async def test_a_child_that_never_starts_fails_the_start() -> None:
    class Mute(Stubborn):
        async def run(self) -> None:
            await asyncio.Event().wait()  # never sets started

    mute = Mute()
    sup = Supervisor([ChildSpec("mute", lambda: mute, start_timeout=0.01, shutdown_timeout=0.01)])
    with pytest.raises(StartFailed, match="did not start"):
        await asyncio.wait_for(sup.start(), DEADLINE)


async def test_a_failing_factory_fails_the_start() -> None:
    def broken() -> Actor:
        raise ValueError("bad config")

    sup = Supervisor([ChildSpec("broken", broken)])
    with pytest.raises(StartFailed, match="bad config"):
        await asyncio.wait_for(sup.start(), DEADLINE)


async def test_shutdown_timeout_cancels_a_child_that_ignores_stop() -> None:
    stubborn = Stubborn()
    sup = await started([ChildSpec("stubborn", lambda: stubborn, shutdown_timeout=0.01)])
    await asyncio.wait_for(sup.stop(), DEADLINE)
    assert stubborn.cancelled


async def test_status_and_readiness(decisions: Decisions) -> None:
    log: list[str] = []
    core, side, once = Built("core", log), Built("side", log), Built("once", log)
    sup = await started(
        [spec(core), spec(side, Restart.TRANSIENT), spec(once, Restart.TEMPORARY)],
        backoff_base=3600.0,
        backoff_max=3600.0,
    )
    assert sup.children_running() == (True, None)
    statuses = sup.status()
    assert [(s.name, s.restart, s.state, s.restarts) for s in statuses] == [
        ("core", "permanent", "running", 0),
        ("side", "transient", "running", 0),
        ("once", "temporary", "running", 0),
    ]
    assert sup.child("missing") is None

    (await once.next()).tell("crash")
    await decisions.until(lambda: state_of(sup, "once") == "failed")
    assert sup.status()[2].last_error == "RuntimeError: once crashed on purpose"
    assert sup.children_running() == (True, None)  # only permanent children count

    (await core.next()).tell("crash")
    await decisions.until(lambda: state_of(sup, "core") == "restarting")
    assert sup.children_running() == (False, "core is restarting")
    assert sup.status()[0].restarts == 1
    await sup.stop()
    assert sup.children_running() == (False, "core is stopped")


async def test_crashes_are_logged_with_traceback(caplog: pytest.LogCaptureFixture) -> None:
    log: list[str] = []
    a = Built("a", log)
    sup = await started([spec(a)])
    with caplog.at_level(logging.ERROR, logger="blitzclawd.supervisor"):
        (await a.next()).tell("crash")
        await a.next()
    await sup.stop()
    crash = next(r for r in caplog.records if r.name == "blitzclawd.supervisor")
    assert crash.levelno == logging.ERROR
    assert crash.actor == "a"  # type: ignore[attr-defined]
    assert crash.exc_info is not None and crash.exc_info[0] is RuntimeError
    assert "crashed on purpose" in caplog.text and "Traceback" in caplog.text


def test_backoff_is_capped_exponential_with_jitter() -> None:
    class Fixed(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b

    rng = Fixed()
    assert [backoff_delay(k, 0.1, 1.0, rng) for k in range(1, 6)] == [0.1, 0.2, 0.4, 0.8, 1.0]
    jittered = backoff_delay(3, 0.1, 1.0, random.Random(7))
    assert 0.2 <= jittered <= 0.4


def test_duplicate_child_names_are_refused() -> None:
    log: list[str] = []
    with pytest.raises(ValueError, match="duplicate"):
        Supervisor([spec(Built("a", log)), spec(Built("a", log))])


# -- an unavailable dependency is waited out, not counted -----------------------------------------


class Dependency:
    """A stand-in for the database: children built while it is down fail to start."""

    def __init__(self) -> None:
        self.up = True


class NeedsDependency(Probe):
    def __init__(self, name: str, log: list[str], dependency: Dependency) -> None:
        super().__init__(name, log)
        self.dependency = dependency
        self.settled = asyncio.Event()  # on_start has succeeded or failed

    async def on_start(self) -> None:
        try:
            if not self.dependency.up:
                raise asyncpg.CannotConnectNowError("the database system is starting up")
            await super().on_start()
        finally:
            self.settled.set()


async def test_a_dependency_outage_never_exceeds_the_window(decisions: Decisions) -> None:
    log: list[str] = []
    a = Built("a", log)
    sup = await started([spec(a)], max_restarts=2, within=60.0)
    for _ in range(10):  # five times the window's allowance
        (await a.next()).tell("outage")
    await a.next()
    assert not sup.escalated.is_set()
    assert sup.status()[0].restarts == 10
    assert "ConnectionRefusedError" in (sup.status()[0].last_error or "")
    waits = [r for r in decisions.records if getattr(r, "action", None) == "waiting"]
    assert len(waits) == 10
    assert all(r.exc_info is None for r in waits)  # an outage is no bug: no traceback
    assert [r.levelno for r in waits[:2]] == [logging.WARNING, logging.INFO]  # loud once
    await sup.stop()


async def test_a_child_waits_while_its_dependency_is_down_then_runs(decisions: Decisions) -> None:
    log: list[str] = []
    dependency = Dependency()
    built: asyncio.Queue[NeedsDependency] = asyncio.Queue()

    def build() -> NeedsDependency:
        probe = NeedsDependency("db-user", log, dependency)
        built.put_nowait(probe)
        return probe

    sup = await started([ChildSpec("db-user", build)], max_restarts=1, within=60.0)
    first = await asyncio.wait_for(built.get(), DEADLINE)
    dependency.up = False
    first.tell("outage")
    # Every restart fails in on_start while the dependency is down; none of them counts.
    await decisions.until(
        lambda: sum(getattr(r, "action", None) == "waiting" for r in decisions.records) >= 5
    )
    assert state_of(sup, "db-user") in ("waiting", "starting")
    assert sup.children_running()[0] is False
    assert not sup.escalated.is_set()
    dependency.up = True

    while True:  # bounded: the first child built after `up` starts (each step has a deadline)
        probe = await asyncio.wait_for(built.get(), DEADLINE)
        await asyncio.wait_for(probe.settled.wait(), DEADLINE)
        if probe.started.is_set():
            break
    assert await sup.child("db-user").ask("ping") == "db-user:ping"
    assert sup.children_running() == (True, None)
    await sup.stop()


async def test_a_real_crash_still_escalates_after_an_outage() -> None:
    log: list[str] = []
    a = Built("a", log)
    sup = await started([spec(a)], max_restarts=2, within=60.0)
    for _ in range(4):
        (await a.next()).tell("outage")
    for _ in range(3):
        (await a.next()).tell("crash")
    await asyncio.wait_for(sup.wait(), DEADLINE)
    assert sup.escalated.is_set()
    assert isinstance(sup.escalation, SupervisorEscalation)
    assert isinstance(sup.escalation.__cause__, RuntimeError)
    assert a.count == 7  # four outages and two crashes were restarted; the third crash was not


async def test_stop_interrupts_an_outage_wait_at_once(decisions: Decisions) -> None:
    log: list[str] = []
    a = Built("a", log)
    sup = await started([spec(a)], backoff_base=3600.0, outage_backoff_max=3600.0)
    (await a.next()).tell("outage")
    await decisions.until(lambda: state_of(sup, "a") == "waiting")
    await asyncio.wait_for(sup.stop(), DEADLINE)
    assert state_of(sup, "a") == "stopped"
    assert a.count == 1


def test_dependency_unavailable_classifies_connection_errors_only() -> None:
    down: list[BaseException] = [
        ConnectionRefusedError(111, "Connect call failed"),
        ConnectionResetError(104, "reset by peer"),
        OSError("Multiple exceptions: [Errno 111] Connect call failed"),
        TimeoutError(),  # a connect timeout
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.CrashShutdownError("terminating connection because of crash of another process"),
        asyncpg.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.InterfaceError("cannot call Connection.fetch(): connection is closed"),
        asyncpg.InternalClientError(
            "cannot switch to state 12; another operation (2) is in progress"
        ),
        DependencyUnavailable("the database is unavailable"),
    ]
    lost = LockLost("janitor: lock session lost")
    lost.__cause__ = asyncpg.ConnectionDoesNotExistError("connection was closed")
    down.append(lost)
    for error in down:
        assert dependency_unavailable(error), repr(error)

    bugs: list[BaseException | None] = [
        None,
        RuntimeError("boom"),
        KeyError("x"),
        asyncpg.UndefinedTableError('relation "daemons" does not exist'),
        asyncpg.UniqueViolationError("duplicate key"),
        asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
        FileNotFoundError(2, "No such file"),
        PermissionError(13, "Permission denied"),
        AskTimeout("billing did not answer a Credit within 5s"),
    ]
    # A bug made while handling an outage is still a bug: the implicit context is not followed.
    try:
        try:
            raise ConnectionRefusedError(111, "refused")
        except ConnectionRefusedError:
            raise NameError("undefined_name")  # noqa: B904 -- the point of the test
    except NameError as exc:
        bugs.append(exc)
    for error in bugs:
        assert not dependency_unavailable(error), repr(error)


# -- nesting, rest_for_one, terminate/restart_child ---------------------------------------------


def subtree(name: str, specs: list[ChildSpec], **kwargs: Any) -> ChildSpec:
    return ChildSpec(name, lambda: Supervisor(specs, name=name, **{**FAST, **kwargs}))


async def test_a_subtree_restarts_its_own_children_and_escalates_only_past_its_window(
    decisions: Decisions,
) -> None:
    log: list[str] = []
    flaky, worker, steady = Built("flaky", log), Built("worker", log), Built("steady", log)
    root = await started(
        [
            subtree("fleet", [spec(flaky), spec(worker)], max_restarts=2, within=60.0),
            subtree("money", [spec(steady)]),
        ],
        max_restarts=1,
        within=60.0,
    )
    fleet = root.child("fleet")
    serving = await steady.next()
    assert isinstance(fleet, Supervisor) and root.child("fleet/worker") is await worker.next()

    # Two crashes: within the subtree's window, restarted there; the root sees nothing.
    current = await flaky.next()
    for _ in range(2):
        current.tell("crash")
        current = await flaky.next()
    assert root.child("fleet") is fleet and [s.restarts for s in root.status()] == [0, 0]
    assert await serving.ask("ping") == "steady:ping"

    # A third: the subtree escalates, the root restarts it whole (fresh children).
    current.tell("crash")
    current = await flaky.next()  # the new subtree's
    await worker.next()  # its last child: the subtree has started
    assert root.child("fleet") not in (None, fleet)
    assert [s.restarts for s in root.status()] == [1, 0]
    assert isinstance(root.child("worker"), Probe) and worker.count == 2
    assert root.child("steady") is serving and steady.count == 1  # the other subtree: untouched
    assert await serving.ask("ping") == "steady:ping"
    assert not root.escalated.is_set()

    # The new subtree escalating within the root's own window escalates the root.
    for _ in range(2):
        current.tell("crash")
        current = await flaky.next()
    current.tell("crash")
    await asyncio.wait_for(root.wait(), DEADLINE)
    assert root.escalated.is_set() and "fleet" in str(root.escalation)
    assert "steady:stop" in log


async def test_rest_for_one_restarts_the_children_after_the_one_that_crashed() -> None:
    log: list[str] = []
    a, b, c = (Built(n, log) for n in "abc")
    sup = await started([spec(a), spec(b), spec(c)], strategy=Strategy.REST_FOR_ONE)
    first_a, first_b = await a.next(), await b.next()
    await c.next()
    log.clear()
    first_b.tell("crash")
    second_b, second_c = await b.next(), await c.next()
    # b ends (its on_stop), c (after b) is stopped, then both start again in order.
    assert log == ["b:stop", "c:stop", "b:start", "c:start"]
    assert sup.child("a") is first_a and a.count == 1
    assert sup.child("b") is second_b is not first_b and sup.child("c") is second_c
    assert [s.restarts for s in sup.status()] == [0, 1, 0]  # c was held, not crashed
    log.clear()
    second_c.tell("crash")  # the last one: nothing after it
    await c.next()
    assert log == ["c:stop", "c:start"] and b.count == 2
    await sup.stop()


async def test_terminate_child_and_restart_child_by_path() -> None:
    log: list[str] = []
    a, b = Built("a", log), Built("b", log)
    root = await started([subtree("fleet", [spec(a), spec(b)])])
    await b.next()
    await asyncio.wait_for(root.terminate_child("fleet/b"), DEADLINE)
    assert root.child("fleet/b") is None and "b:stop" in log
    assert root.children_running() == (False, "fleet/b is terminated")
    fleet_status = root.status()[0]
    assert fleet_status.strategy == "one_for_one"
    assert [(c.name, c.state) for c in fleet_status.children] == [
        ("a", "running"),
        ("b", "terminated"),
    ]
    assert b.instances.empty()  # not restarted: a deliberate stop is no crash
    with pytest.raises(RuntimeError, match="not terminated"):
        await root.restart_child("fleet/a")
    with pytest.raises(NoSuchChild):
        await root.terminate_child("fleet/nope")
    with pytest.raises(NoSuchChild):
        await root.restart_child("nope/b")
    await asyncio.wait_for(root.restart_child("fleet/b"), DEADLINE)
    again = await b.next()
    assert root.child("fleet/b") is again and root.children_running() == (True, None)
    again.tell("crash")  # watched again like any child
    assert root.child("b") is not None or await b.next()
    await root.stop()
