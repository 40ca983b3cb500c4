"""The actor: private state behind a bounded mailbox, one message at a time.

Others talk to an actor only through `tell` (fire and forget) and `ask` (reply future with a
timeout). A failing handler is not caught and papered over: the actor crashes, `run()` raises,
and its supervisor decides what happens next ("let it crash").
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from blitzclawd.runtime.messages import Tick

log = logging.getLogger("blitzclawd.actor")


class MailboxFull(Exception):
    """tell()/ask() found the mailbox at capacity: the actor is overloaded, back off."""


class ActorNotRunning(Exception):
    """The actor is not (or no longer) accepting messages."""


class AskTimeout(TimeoutError):
    """ask() got no reply in time; the message may still be handled later."""


@dataclass(slots=True)
class _Envelope:
    message: object
    reply: asyncio.Future[object] | None = None
    timer: str | None = None  # set for timer ticks, so handling one re-arms its timer


# Wakes an idle run loop on stop(); compared by identity, never handled.
_STOP = _Envelope(None)

_ACCEPTING = frozenset({"starting", "running"})


class Actor:
    """Subclass and override `handle` (and optionally `on_start` / `on_stop`).

    An instance runs once: a supervisor builds a fresh one for every (re)start.
    """

    name: str = "actor"
    mailbox_size: int = 1000

    def __init__(self, name: str | None = None, *, mailbox_size: int | None = None) -> None:
        if name is not None:
            self.name = name
        if mailbox_size is not None:
            self.mailbox_size = mailbox_size
        self.started = asyncio.Event()
        self._mailbox: asyncio.Queue[_Envelope] = asyncio.Queue(maxsize=self.mailbox_size)
        self._state = "starting"
        self._entered = False  # run() was called; messages sent before that have no consumer
        self._stop_requested = False
        self._timers: dict[str, asyncio.Task[None]] = {}
        self._tick_pending: set[str] = set()

    # -- lifecycle hooks -------------------------------------------------------------------------

    async def on_start(self) -> None:
        """Acquire resources, start timers. Raising here crashes the actor before it runs."""

    async def on_stop(self) -> None:
        """Release resources. Runs after a successful on_start, on stop and on crash alike."""

    async def handle(self, message: object) -> object | None:
        """Process one message; the return value is the reply to ask()."""
        raise NotImplementedError(f"{type(self).__name__} does not handle {type(message).__name__}")

    # -- API for others --------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """One of "starting", "running", "stopping", "stopped", "crashed"."""
        return self._state

    @property
    def running(self) -> bool:
        """True while on_start has completed and no stop or crash has happened."""
        return self._state == "running"

    @property
    def queued(self) -> int:
        """Messages waiting in the mailbox (not counting the one being handled)."""
        return self._mailbox.qsize()

    def tell(self, message: object) -> None:
        """Queue `message` without waiting; raises MailboxFull or ActorNotRunning."""
        self._enqueue(_Envelope(message))

    # The timeout parameter is the agreed interface: every ask must carry a deadline.
    async def ask(self, message: object, timeout: float = 5.0) -> object:  # noqa: ASYNC109
        """Queue `message` and wait for handle()'s return value.

        If handle() raises, that exception is re-raised here (and the actor crashes).
        """
        reply: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._enqueue(_Envelope(message, reply))
        try:
            # asyncio.wait never raises on timeout and never cancels `reply` itself, so an
            # exception the handler raised (even a TimeoutError) reaches the caller unchanged.
            await asyncio.wait({reply}, timeout=timeout)
            if not reply.done():
                # The type, never the message itself: messages may carry secrets.
                kind = type(message).__name__
                raise AskTimeout(f"{self.name} did not answer a {kind} within {timeout}s")
            return reply.result()
        finally:
            # On timeout or caller cancellation: a late reply is dropped, not stored.
            reply.cancel()

    def every(self, interval: float, timer: str) -> None:
        """Deliver messages.Tick(timer) every `interval` seconds until the actor stops.

        A tick is skipped while the previous one of this timer is still unhandled, so a slow
        handler never floods its own mailbox. Call from on_start (or later, while running).
        """
        if interval <= 0:
            raise ValueError(f"timer interval must be positive, got {interval}")
        if timer in self._timers:
            raise ValueError(f"{self.name} already has a timer named {timer!r}")
        if self._state not in _ACCEPTING:
            raise ActorNotRunning(f"{self.name} is {self._state}")
        self._timers[timer] = asyncio.get_running_loop().create_task(
            self._tick(interval, timer), name=f"{self.name}:timer:{timer}"
        )

    def stop(self) -> None:
        """Finish the current message, run on_stop, then let run() return. Idempotent."""
        if self._stop_requested or self._state in ("stopped", "crashed"):
            return
        self._stop_requested = True
        if not self._entered:
            self._state = "stopped"
            return
        self._state = "stopping"
        try:
            self._mailbox.put_nowait(_STOP)
        except asyncio.QueueFull:
            pass  # a full mailbox means the loop is busy, and it checks the flag per message

    # -- the loop --------------------------------------------------------------------------------

    async def run(self) -> None:
        """on_start, then handle messages one by one until stop(); raises if the actor crashes."""
        if self._entered:
            raise RuntimeError(f"{self.name}: an actor instance runs only once")
        self._entered = True
        if self._stop_requested:
            return  # stopped before it ever ran: nothing was acquired, nothing to release
        try:
            await self.on_start()
        except BaseException as exc:
            self._state = "stopped" if isinstance(exc, asyncio.CancelledError) else "crashed"
            self._finish()
            raise
        if not self._stop_requested:
            self._state = "running"
        self.started.set()
        try:
            await self._loop()
        except asyncio.CancelledError:
            # Being cancelled is the hard kill after a graceful stop took too long (Erlang's
            # brutal_kill): on_stop is skipped because it could hang the same way.
            self._state = "stopped"
            self._finish()
            raise
        except BaseException:
            self._state = "crashed"
            self._finish()
            await self._call_on_stop()
            raise
        self._finish()
        await self._call_on_stop()
        self._state = "stopped"

    async def _loop(self) -> None:
        # Ends when stop() is requested (checked before every message) or a handler raises.
        while not self._stop_requested:
            envelope = await self._mailbox.get()
            if envelope is _STOP:
                continue
            try:
                reply = await self.handle(envelope.message)
            except BaseException as exc:
                if envelope.reply is not None and not envelope.reply.done():
                    # Cancellation and the like are not the asker's to handle.
                    reason = exc if isinstance(exc, Exception) else ActorNotRunning(self.name)
                    envelope.reply.set_exception(reason)
                raise
            finally:
                if envelope.timer is not None:
                    self._tick_pending.discard(envelope.timer)
            if envelope.reply is not None and not envelope.reply.done():
                envelope.reply.set_result(reply)

    # -- internals -------------------------------------------------------------------------------

    def _enqueue(self, envelope: _Envelope) -> None:
        if not self._entered or self._state not in _ACCEPTING:
            raise ActorNotRunning(
                f"{self.name} is {self._state if self._entered else 'not started'}"
            )
        try:
            self._mailbox.put_nowait(envelope)
        except asyncio.QueueFull:
            raise MailboxFull(f"{self.name}: mailbox full ({self.mailbox_size})") from None

    async def _tick(self, interval: float, timer: str) -> None:
        # Ends when cancelled by _finish() or when the actor stops accepting messages.
        while self._state in _ACCEPTING:
            await asyncio.sleep(interval)
            if timer in self._tick_pending:
                continue
            try:
                self._enqueue(_Envelope(Tick(timer), timer=timer))
            except MailboxFull:
                log.warning(
                    "%s: mailbox full, tick %r skipped",
                    self.name,
                    timer,
                    extra={"actor": self.name},
                )
                continue
            except ActorNotRunning:
                return
            self._tick_pending.add(timer)

    def _finish(self) -> None:
        """Cancel timers and fail every ask still waiting in the mailbox."""
        for task in self._timers.values():
            task.cancel()
        self._timers.clear()
        # Bounded: nothing can enqueue any more (state no longer accepts).
        while not self._mailbox.empty():
            envelope = self._mailbox.get_nowait()
            if envelope.reply is not None and not envelope.reply.done():
                envelope.reply.set_exception(ActorNotRunning(f"{self.name} is {self._state}"))

    async def _call_on_stop(self) -> None:
        try:
            await self.on_stop()
        except Exception:
            log.exception("%s: on_stop failed", self.name, extra={"actor": self.name})
