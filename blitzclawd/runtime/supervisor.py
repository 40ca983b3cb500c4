"""Erlang/OTP-style supervision: start in order, stop in reverse, restart by policy.

Each child runs as an asyncio task named after it; a watcher task per child applies the restart
rule when that task ends. Too many restarts inside the window means something is structurally
wrong: the supervisor stops everything and escalates, so the daemon can exit and systemd can
restart it from scratch.

A child that ends because a dependency is unavailable (the database restarting: see
blitzclawd.runtime.outage) is not counted: the supervisor waits with capped exponential backoff
and restarts it, for as long as the outage lasts. Only real crashes count towards the window.
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
    phase: str = "stopped"  # "running" | "restarting" | "waiting" | "stopped" | "failed"
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
            slot.watcher = asyncio.create_task(
                self._watch(slot), name=f"{self.name}:watch:{slot.spec.name}"
            )

    async def stop(self) -> None:
        """Stop children in reverse order (stop, wait, cancel); interrupts backoff. Idempotent."""
        await asyncio.shield(self._begin_shutdown(None))

    async def wait(self) -> None:
        """Return once the supervisor has stopped, by stop(), a failed start or escalation."""
        await self._done.wait()

    def status(self) -> list[ChildStatus]:
        return [
            ChildStatus(
                name=slot.spec.name,
                restart=slot.spec.restart.value,
                state=self._state_of(slot),
                restarts=slot.restarts,
                last_error=slot.last_error,
            )
            for slot in self._slots
        ]

    def child(self, name: str) -> Child | None:
        """The live, started instance of child `name`; None while it is (re)starting or down."""
        slot = self._by_name.get(name)
        if slot is None or slot.instance is None or not slot.live():
            return None
        return slot.instance if slot.instance.started.is_set() else None

    def children_running(self) -> tuple[bool, str | None]:
        """(True, None) if every permanent child is up; else (False, why) for the first one."""
        for slot in self._slots:
            if slot.spec.restart is not Restart.PERMANENT:
                continue
            if self.child(slot.spec.name) is None:
                return False, f"{slot.spec.name} is {self._state_of(slot)}"
        return True, None

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

    async def _watch(self, slot: _Slot) -> None:
        """Apply the restart rule whenever the child's task ends.

        Ends when a restart is not due, on escalation, or when the supervisor stops.
        """
        assert slot.task is not None
        await asyncio.wait({slot.task})
        error = _outcome(slot.task)
        while await self._restart_due(slot, error):
            error = self._spawn(slot)
            if error is None:
                error = await self._await_started(slot)
            if error is None:
                assert slot.task is not None
                await asyncio.wait({slot.task})
                error = _outcome(slot.task)

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
                if slot.phase in ("running", "restarting"):
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
