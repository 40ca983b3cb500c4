"""Erlang/OTP-style supervision: start in order, stop in reverse, restart by policy.

Each child runs as an asyncio task named after it; a watcher task per child applies the restart
rule when that task ends. Too many restarts inside the window means something is structurally
wrong: the supervisor stops everything and escalates, so the daemon can exit and systemd can
restart it from scratch.

Supervisors nest: a Supervisor is itself a child (run/stop/started), so a subtree restarts on
its own within its own window and escalates to its parent only when that window is exceeded;
the parent then restarts the subtree whole, counting it once in its own window. Strategies:
one_for_one restarts the child that ended; rest_for_one also stops the children started after
it and starts them again once it is back (they depend on it). `terminate_child` and
`restart_child` (OTP's) stop a child for good and start it again, addressed by a path
("money/proxy").

A child that ends because a dependency is unavailable (the database restarting: see
blitzclawd.runtime.outage) is not counted: the supervisor waits with capped exponential backoff
and restarts it, for as long as the outage lasts. Only real crashes count towards the window.

Why one module: the supervisor's restart rules (strategies, windows, outages, nesting,
terminate/restart) share one slot state machine.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from blitzclawd.runtime.outage import dependency_unavailable

log = logging.getLogger("blitzclawd.supervisor")

# Seconds an outage wait is remembered for its child's backoff: a new outage after a quiet minute
# starts again from the shortest wait.
OUTAGE_MEMORY = 60.0


class Restart(enum.Enum):
    PERMANENT = "permanent"  # always restarted, even after a normal return
    TRANSIENT = "transient"  # restarted only after a crash
    TEMPORARY = "temporary"  # never restarted


class Strategy(enum.Enum):
    ONE_FOR_ONE = "one_for_one"  # only the child that ended is restarted
    REST_FOR_ONE = "rest_for_one"  # and the children after it, which depend on it


class Child(Protocol):
    """What a supervisor runs. May also expose a `state: str` that status() reports."""

    name: str
    started: asyncio.Event

    async def run(self) -> None: ...

    def stop(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ChildSpec:
    name: str
    factory: Callable[[], Child]  # builds a fresh child for every (re)start
    restart: Restart = Restart.PERMANENT
    shutdown_timeout: float = 5.0  # stop(), wait this long, then cancel the task
    start_timeout: float = 30.0  # until child.started is set


class SupervisorEscalation(Exception):
    """The restart intensity was exceeded; the supervisor has stopped all its children."""


class StartFailed(Exception):
    """A child failed during start(); the children started before it were stopped again."""


@dataclass(frozen=True, slots=True)
class ChildStatus:
    name: str
    restart: str
    state: str
    restarts: int
    last_error: str | None
    # A supervisor child: its strategy, window and children (empty while it is down).
    strategy: str | None = None
    children: tuple[ChildStatus, ...] = ()

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "name": self.name,
            "state": self.state,
            "restarts": self.restarts,
            "restart": self.restart,
            "last_error": self.last_error,
        }
        if self.strategy is not None:
            out["strategy"] = self.strategy
            out["children"] = [c.as_dict() for c in self.children]
        return out


class NoSuchChild(LookupError):
    """No child at that path."""


def backoff_delay(restarts: int, base: float, cap: float, rng: random.Random) -> float:
    """Capped exponential backoff with jitter; `restarts` counts this child's recent restarts.

    The jitter keeps children that crashed together (e.g. on a database blip) from restarting
    in lockstep.
    """
    return min(cap, base * 2 ** (restarts - 1)) * rng.uniform(0.5, 1.0)


@dataclass(slots=True, eq=False)
class _Slot:
    spec: ChildSpec
    instance: Child | None = None
    task: asyncio.Task[None] | None = None
    watcher: asyncio.Task[None] | None = None
    # "running" | "restarting" | "waiting" | "stopped" | "failed" | "terminated" (by
    # terminate_child, until restart_child)
    phase: str = "stopped"
    restarts: int = 0
    last_error: str | None = None
    recent: deque[float] = field(default_factory=deque)  # this child's restart times
    outages: deque[float] = field(default_factory=deque)  # its recent outage waits

    def live(self) -> bool:
        return self.task is not None and not self.task.done()


class Supervisor:
    def __init__(
        self,
        specs: Sequence[ChildSpec],
        *,
        name: str = "root",
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        max_restarts: int = 3,
        within: float = 5.0,
        backoff_base: float = 0.1,
        backoff_max: float = 5.0,
        outage_backoff_max: float = 2.0,
        is_outage: Callable[[BaseException], bool] = dependency_unavailable,
        rng: random.Random | None = None,
    ) -> None:
        """outage_backoff_max: the longest wait before retrying a child that found a dependency
        unavailable (short: once the database is back, every child must be up within seconds)."""
        names = [spec.name for spec in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate child names in {names}")
        self.name = name
        self.strategy = strategy
        self.started = asyncio.Event()  # as a child of another supervisor: all children up
        self._slots = [_Slot(spec) for spec in specs]
        self._by_name = {slot.spec.name: slot for slot in self._slots}
        self._max_restarts = max_restarts
        self._within = within
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._outage_backoff_max = outage_backoff_max
        self._is_outage = is_outage
        self._rng = rng or random.Random()
        self._restart_times: deque[float] = deque()  # all children: the intensity window
        self._stopping = False
        self._stop_requested = asyncio.Event()  # interrupts backoff waits at once
        self._shutdown: asyncio.Task[None] | None = None
        self._done = asyncio.Event()
        self._began = False
        self.escalated = asyncio.Event()
        self.escalation: SupervisorEscalation | None = None

    # -- public API ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start children in order, each awaited until it has started.

        Raises StartFailed if one fails (after stopping those already started). Returns quietly
        if stop() is called meanwhile.
        """
        if self._began:
            raise RuntimeError(f"supervisor {self.name} was already started")
        self._began = True
        for slot in self._slots:
            if self._stopping:
                return
            error = self._spawn(slot)
            if error is None:
                error = await self._await_started(slot)
            if self._stopping:
                return
            if error is not None:
                slot.phase = "failed"
                slot.last_error = _describe(error)
                log.error(
                    "supervisor %s: child %s failed to start",
                    self.name,
                    slot.spec.name,
                    exc_info=error,
                    extra=self._extra(slot),
                )
                await asyncio.shield(self._begin_shutdown(None))
                raise StartFailed(
                    f"child {slot.spec.name} failed to start: {slot.last_error}"
                ) from error
            self._adopt(slot)
        if not self._stopping:
            self.started.set()

    def stop(self) -> asyncio.Future[None]:
        """Stop children in reverse order (stop, wait, cancel); interrupts backoff. Idempotent.

        Await the result to wait for the shutdown; a parent supervisor only calls it.
        """
        return asyncio.shield(self._begin_shutdown(None))

    async def run(self) -> None:
        """As a child: start, then run until stopped; escalation is this child's crash."""
        try:
            await self.start()
            self.started.set()
            await self._done.wait()
        finally:  # cancelled by a parent that gave up waiting: stop the subtree all the same
            await asyncio.shield(self._begin_shutdown(None))
        if self.escalation is not None:
            raise self.escalation

    @property
    def window(self) -> tuple[int, float]:
        """(max_restarts, within seconds): more restarts than that and it escalates."""
        return self._max_restarts, self._within

    @property
    def state(self) -> str:
        if self.escalated.is_set():
            return "escalated"
        if self._stopping:
            return "stopping"
        return "running" if self.started.is_set() else "starting"

    async def wait(self) -> None:
        """Return once the supervisor has stopped, by stop(), a failed start or escalation."""
        await self._done.wait()

    def status(self) -> list[ChildStatus]:
        """Each child's status; a supervisor child's with its own children, recursively."""
        out = []
        for slot in self._slots:
            sub = slot.instance if isinstance(slot.instance, Supervisor) else None
            out.append(
                ChildStatus(
                    name=slot.spec.name,
                    restart=slot.spec.restart.value,
                    state=self._state_of(slot),
                    restarts=slot.restarts,
                    last_error=slot.last_error,
                    strategy=None if sub is None else sub.strategy.value,
                    children=() if sub is None else tuple(sub.status()),
                )
            )
        return out

    def status_of(self, path: str) -> ChildStatus:
        """The status of child `path` ("money/billing"); raises NoSuchChild."""
        head, _, rest = path.partition("/")
        node = next((s for s in self.status() if s.name == head), None)
        while node is not None and rest:
            head, _, rest = rest.partition("/")
            node = next((s for s in node.children if s.name == head), None)
        if node is None:
            raise NoSuchChild(f"no child {path!r} under {self.name}")
        return node

    def child(self, name: str) -> Child | None:
        """The live, started instance of child `name` (a path "fleet/provisioner", or a name
        looked up through the subtrees, first match); None while it is (re)starting or down."""
        head, _, rest = name.partition("/")
        slot = self._by_name.get(head)
        if slot is None:
            if rest:
                return None
            for sub in self._subtrees():
                found = sub.child(name)
                if found is not None:
                    return found
            return None
        if slot.instance is None or not slot.live() or not slot.instance.started.is_set():
            return None
        if rest:
            return slot.instance.child(rest) if isinstance(slot.instance, Supervisor) else None
        return slot.instance

    def children_running(self) -> tuple[bool, str | None]:
        """(True, None) if every permanent child is up (in subtrees too); else (False, why) for
        the first one."""
        for slot in self._slots:
            if slot.spec.restart is not Restart.PERMANENT:
                continue
            if self.child(slot.spec.name) is None:
                return False, f"{slot.spec.name} is {self._state_of(slot)}"
            if isinstance(slot.instance, Supervisor):
                ok, why = slot.instance.children_running()
                if not ok:
                    return False, f"{slot.spec.name}/{why}"
        return True, None

    async def terminate_child(self, path: str) -> None:
        """Stop child `path` ("fleet/provisioner") and keep it stopped until restart_child.

        Its siblings are left alone (a deliberate stop is no crash). Raises NoSuchChild.
        """
        owner, slot = self._resolve(path)
        await owner._hold(slot)
        slot.phase = "terminated"
        log.warning("child %s terminated on request", path, extra=owner._extra(slot))

    async def restart_child(self, path: str) -> None:
        """Start a terminated child again (OTP: only a terminated one; a running child is left
        as it is). Raises NoSuchChild, or RuntimeError if it is not terminated or fails to
        start (it then stays terminated)."""
        owner, slot = self._resolve(path)
        if slot.phase != "terminated":
            raise RuntimeError(f"{path} is {owner._state_of(slot)}, not terminated")
        if owner._stopping:
            raise RuntimeError(f"supervisor {owner.name} is stopping")
        error = owner._spawn(slot)
        if error is None:
            error = await owner._await_started(slot)
        if error is not None:
            slot.instance, slot.task, slot.phase = None, None, "terminated"
            slot.last_error = _describe(error)
            raise RuntimeError(f"{path} failed to start: {slot.last_error}") from error
        owner._adopt(slot)
        log.warning("child %s restarted on request", path, extra=owner._extra(slot))

    # -- starting and watching -------------------------------------------------------------------

    def _spawn(self, slot: _Slot) -> BaseException | None:
        """Build a fresh instance and start its task; returns the factory's error, if any."""
        try:
            instance = slot.spec.factory()
        except Exception as exc:
            return exc
        slot.instance = instance
        slot.task = asyncio.create_task(instance.run(), name=slot.spec.name)
        slot.task.add_done_callback(_retrieve)
        slot.phase = "running"
        return None

    async def _await_started(self, slot: _Slot) -> BaseException | None:
        """Wait until the instance has started; its failure or a timeout otherwise."""
        assert slot.instance is not None and slot.task is not None
        instance, task = slot.instance, slot.task
        started = asyncio.create_task(instance.started.wait())
        try:
            await asyncio.wait(
                {started, task},
                timeout=slot.spec.start_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            started.cancel()
        if instance.started.is_set():
            return None
        if task.done():
            return _outcome(task) or RuntimeError(f"{slot.spec.name} returned before it started")
        await self._terminate(slot)
        return TimeoutError(f"{slot.spec.name} did not start within {slot.spec.start_timeout}s")

    async def _watch(self, slot: _Slot, error: BaseException | None = None) -> None:
        """Apply the restart rule whenever the child's task ends (or `error`: it did not start).

        Ends when a restart is not due, on escalation, or when the supervisor stops.
        """
        task = slot.task  # a local: a shutdown clears the slot while this waits
        if task is not None:
            await asyncio.wait({task})
            error = _outcome(task)
        while await self._restart_due(slot, error):
            error = self._spawn(slot)
            if error is None:
                error = await self._await_started(slot)
            if error is None:
                if self.strategy is Strategy.REST_FOR_ONE:
                    await self._start_rest(slot)
                task = slot.task
                if task is None:  # held or stopped meanwhile
                    return
                await asyncio.wait({task})
                error = _outcome(task)

    def _adopt(self, slot: _Slot) -> None:
        """Watch a freshly started child."""
        slot.watcher = asyncio.create_task(
            self._watch(slot), name=f"{self.name}:watch:{slot.spec.name}"
        )

    def _later(self, slot: _Slot) -> list[_Slot]:
        return self._slots[self._slots.index(slot) + 1 :]

    async def _hold(self, slot: _Slot) -> None:
        """Stop a child without its watcher restarting it (rest_for_one, terminate_child)."""
        watcher = slot.watcher
        if watcher is not None and watcher is not asyncio.current_task() and not watcher.done():
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        slot.watcher = None
        await self._terminate(slot)
        slot.instance, slot.task = None, None

    async def _stop_rest(self, slot: _Slot) -> None:
        """rest_for_one: the children after `slot` depend on it; stop them, last first."""
        for later in reversed(self._later(slot)):
            if later.phase == "terminated":
                continue
            await self._hold(later)
            later.phase = "held"
            log.info(
                "child %s stopped: %s before it is restarting",
                later.spec.name,
                slot.spec.name,
                extra=self._extra(later, action="held"),
            )

    async def _start_rest(self, slot: _Slot) -> None:
        """rest_for_one: `slot` is back; start the children held for it in order, each awaited
        like at start-up. One that fails to start goes to its own watcher (which restarts it and
        then the rest after it)."""
        for later in self._later(slot):
            if later.phase != "held":
                continue
            if self._stopping:
                return
            error = self._spawn(later)
            if error is None:
                error = await self._await_started(later)
            if error is None:
                self._adopt(later)
                continue
            later.instance, later.task = None, None
            later.watcher = asyncio.create_task(
                self._watch(later, error), name=f"{self.name}:watch:{later.spec.name}"
            )
            return

    async def _restart_due(self, slot: _Slot, error: BaseException | None) -> bool:
        """Record the exit, log it, and wait the backoff; True if the child should be rebuilt."""
        slot.instance, slot.task = None, None
        if self._stopping:
            slot.phase = "stopped"
            return False
        spec = slot.spec
        if error is not None:
            slot.last_error = _describe(error)
        restart = spec.restart is Restart.PERMANENT or (
            spec.restart is Restart.TRANSIENT and error is not None
        )
        if not restart:
            slot.phase = "stopped" if error is None else "failed"
            self._log_exit(slot, error, "not restarted")
            return False
        now = time.monotonic()
        if error is not None and self._is_outage(error):
            return await self._wait_out(slot, now)
        _prune(self._restart_times, now - self._within)
        if len(self._restart_times) >= self._max_restarts:
            slot.phase = "failed"
            self._log_exit(slot, error, "restart intensity exceeded")
            escalation = SupervisorEscalation(
                f"supervisor {self.name}: more than {self._max_restarts} restarts within "
                f"{self._within}s (last: {spec.name}: {slot.last_error or 'normal exit'})"
            )
            escalation.__cause__ = error
            self._begin_shutdown(escalation)
            return False
        self._restart_times.append(now)
        _prune(slot.recent, now - self._within)
        slot.recent.append(now)
        slot.restarts += 1
        slot.phase = "restarting"
        delay = backoff_delay(len(slot.recent), self._backoff_base, self._backoff_max, self._rng)
        self._log_exit(slot, error, f"restarting in {delay:.3f}s", backoff=delay)
        if self.strategy is Strategy.REST_FOR_ONE:
            await self._stop_rest(slot)
        return await self._pause(slot, delay)

    async def _wait_out(self, slot: _Slot, now: float) -> bool:
        """A dependency is unavailable: wait and retry, outside the intensity window."""
        _prune(slot.outages, now - OUTAGE_MEMORY)
        slot.outages.append(now)
        slot.restarts += 1
        slot.phase = "waiting"
        delay = backoff_delay(
            len(slot.outages), self._backoff_base, self._outage_backoff_max, self._rng
        )
        # No traceback: nothing is broken. Loud once per outage, quiet for every retry after.
        level = logging.WARNING if len(slot.outages) == 1 else logging.INFO
        log.log(
            level,
            "child %s waits for an unavailable dependency: %s; retrying in %.3fs",
            slot.spec.name,
            slot.last_error,
            delay,
            extra=self._extra(slot, action="waiting", backoff=delay, restarts=slot.restarts),
        )
        return await self._pause(slot, delay)

    async def _pause(self, slot: _Slot, delay: float) -> bool:
        """Wait `delay` unless the supervisor stops first; True if the child should be rebuilt."""
        try:
            await asyncio.wait_for(self._stop_requested.wait(), timeout=delay)
        except TimeoutError:
            pass
        if self._stopping:
            slot.phase = "stopped"
            return False
        return True

    # -- stopping --------------------------------------------------------------------------------

    def _begin_shutdown(self, escalation: SupervisorEscalation | None) -> asyncio.Task[None]:
        """Start the (single) shutdown; later calls share it."""
        if self._shutdown is None:
            self._stopping = True
            self._stop_requested.set()
            self._shutdown = asyncio.create_task(
                self._stop_all(escalation), name=f"{self.name}:shutdown"
            )
        return self._shutdown

    async def _stop_all(self, escalation: SupervisorEscalation | None) -> None:
        try:
            for slot in reversed(self._slots):
                await self._terminate(slot)
                slot.instance, slot.task = None, None
                if slot.phase in ("running", "restarting", "held"):
                    slot.phase = "stopped"
            # Watchers only wait now; one whose child refused even cancellation would wait forever.
            watchers = [s.watcher for s in self._slots if s.watcher and not s.watcher.done()]
            for watcher in watchers:
                watcher.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
        finally:
            if escalation is not None:
                self.escalation = escalation
                log.critical(
                    "supervisor %s escalates: %s",
                    self.name,
                    escalation,
                    extra={"supervisor": self.name},
                )
                self.escalated.set()
            self._done.set()

    async def _terminate(self, slot: _Slot) -> None:
        """stop(), wait shutdown_timeout, then cancel and wait as long again (then give up)."""
        instance, task = slot.instance, slot.task
        if instance is None or task is None or task.done():
            return
        timeout = slot.spec.shutdown_timeout
        try:
            instance.stop()
        except Exception:
            log.exception("child %s: stop() failed", slot.spec.name, extra=self._extra(slot))
        await asyncio.wait({task}, timeout=timeout)
        if task.done():
            error = _outcome(task)
            if error is not None and not isinstance(error, asyncio.CancelledError):
                log.error(
                    "child %s failed while stopping",
                    slot.spec.name,
                    exc_info=error,
                    extra=self._extra(slot),
                )
            return
        log.warning(
            "child %s did not stop within %ss, cancelling it",
            slot.spec.name,
            timeout,
            extra=self._extra(slot),
        )
        task.cancel()
        await asyncio.wait({task}, timeout=timeout)
        if not task.done():
            log.error(
                "child %s ignored cancellation, abandoning it",
                slot.spec.name,
                extra=self._extra(slot),
            )

    # -- helpers ---------------------------------------------------------------------------------

    def _subtrees(self) -> list[Supervisor]:
        return [s.instance for s in self._slots if isinstance(s.instance, Supervisor)]

    def _resolve(self, path: str) -> tuple[Supervisor, _Slot]:
        """The supervisor owning child `path` and its slot."""
        head, _, rest = path.partition("/")
        slot = self._by_name.get(head)
        if slot is None:
            raise NoSuchChild(f"no child {head!r} under {self.name}")
        if not rest:
            return self, slot
        if not isinstance(slot.instance, Supervisor) or not slot.live():
            raise NoSuchChild(f"{head} is not a running supervisor")
        return slot.instance._resolve(rest)

    def _state_of(self, slot: _Slot) -> str:
        instance = slot.instance
        if slot.phase != "running" or instance is None:
            return slot.phase
        state = getattr(instance, "state", None)
        if isinstance(state, str):
            return state
        return "running" if instance.started.is_set() else "starting"

    def _extra(self, slot: _Slot, **more: object) -> dict[str, object]:
        return {
            "actor": slot.spec.name,
            "supervisor": self.name,
            "restart": slot.spec.restart.value,
            **more,
        }

    def _log_exit(
        self, slot: _Slot, error: BaseException | None, action: str, **more: object
    ) -> None:
        extra = self._extra(slot, action=action, restarts=slot.restarts, **more)
        if error is None:
            # A normal exit is news only if it leads somewhere (a restart, an escalation).
            level = logging.INFO if action == "not restarted" else logging.WARNING
            log.log(level, "child %s exited; %s", slot.spec.name, action, extra=extra)
        else:
            log.error(
                "child %s crashed: %s; %s",
                slot.spec.name,
                slot.last_error,
                action,
                exc_info=error,
                extra=extra,
            )


def _outcome(task: asyncio.Task[None]) -> BaseException | None:
    """The exception a finished task ended with (cancellation counts), None on normal return."""
    if task.cancelled():
        return asyncio.CancelledError(f"{task.get_name()} was cancelled")
    return task.exception()


def _retrieve(task: asyncio.Task[None]) -> None:
    # The watcher logs failures; this just keeps asyncio from warning "never retrieved".
    if not task.cancelled():
        task.exception()


def _describe(error: BaseException) -> str:
    return "".join(traceback.format_exception_only(error)).strip()


def _prune(times: deque[float], horizon: float) -> None:
    while times and times[0] <= horizon:
        times.popleft()
