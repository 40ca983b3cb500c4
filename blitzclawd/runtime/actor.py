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

    The base class's own state and helpers are name-mangled (double underscore), so a subclass
    can use any private name of its own without breaking the run loop.

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
        self.__mailbox: asyncio.Queue[_Envelope] = asyncio.Queue(maxsize=self.mailbox_size)
        self.__state = "starting"
        self.__entered = False  # run() was called; messages sent before that have no consumer
        self.__stop_requested = False
        self.__timers: dict[str, asyncio.Task[None]] = {}
        self.__tick_pending: set[str] = set()

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
        return self.__state

    @property
    def running(self) -> bool:
        """True while on_start has completed and no stop or crash has happened."""
        return self.__state == "running"

    @property
    def queued(self) -> int:
        """Messages waiting in the mailbox (not counting the one being handled)."""
        return self.__mailbox.qsize()

    def tell(self, message: object) -> None:
        """Queue `message` without waiting; raises MailboxFull or ActorNotRunning."""
        self.__enqueue(_Envelope(message))

    # The timeout parameter is the agreed interface: every ask must carry a deadline.
    async def ask(self, message: object, timeout: float = 5.0) -> object:  # noqa: ASYNC109
        """Queue `message` and wait for handle()'s return value.

        If handle() raises, that exception is re-raised here (and the actor crashes).
        """
        reply: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self.__enqueue(_Envelope(message, reply))
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
        if timer in self.__timers:
            raise ValueError(f"{self.name} already has a timer named {timer!r}")
        if self.__state not in _ACCEPTING:
            raise ActorNotRunning(f"{self.name} is {self.__state}")
        self.__timers[timer] = asyncio.get_running_loop().create_task(
            self.__tick(interval, timer), name=f"{self.name}:timer:{timer}"
        )

    def stop(self) -> None:
        """Finish the current message, run on_stop, then let run() return. Idempotent."""
        if self.__stop_requested or self.__state in ("stopped", "crashed"):
            return
        self.__stop_requested = True
        if not self.__entered:
            self.__state = "stopped"
            return
        self.__state = "stopping"
        try:
            self.__mailbox.put_nowait(_STOP)
        except asyncio.QueueFull:
            pass  # a full mailbox means the loop is busy, and it checks the flag per message

    # -- the loop --------------------------------------------------------------------------------

    async def run(self) -> None:
        """on_start, then handle messages one by one until stop(); raises if the actor crashes."""
        if self.__entered:
            raise RuntimeError(f"{self.name}: an actor instance runs only once")
        self.__entered = True
        if self.__stop_requested:
            return  # stopped before it ever ran: nothing was acquired, nothing to release
        try:
            await self.on_start()
        except BaseException as exc:
            self.__state = "stopped" if isinstance(exc, asyncio.CancelledError) else "crashed"
            self.__finish()
            raise
        if not self.__stop_requested:
            self.__state = "running"
        self.started.set()
        try:
            await self.__loop()
        except asyncio.CancelledError:
            # Being cancelled is the hard kill after a graceful stop took too long (Erlang's
            # brutal_kill): on_stop is skipped because it could hang the same way.
            self.__state = "stopped"
            self.__finish()
            raise
        except BaseException:
            self.__state = "crashed"
            self.__finish()
            await self.__call_on_stop()
            raise
        self.__finish()
        await self.__call_on_stop()
        self.__state = "stopped"

    async def __loop(self) -> None:
        # Ends when stop() is requested (checked before every message) or a handler raises.
        while not self.__stop_requested:
            envelope = await self.__mailbox.get()
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
                    self.__tick_pending.discard(envelope.timer)
            if envelope.reply is not None and not envelope.reply.done():
                envelope.reply.set_result(reply)

    # -- internals -------------------------------------------------------------------------------

    def __enqueue(self, envelope: _Envelope) -> None:
        if not self.__entered or self.__state not in _ACCEPTING:
            raise ActorNotRunning(
                f"{self.name} is {self.__state if self.__entered else 'not started'}"
            )
        try:
            self.__mailbox.put_nowait(envelope)
        except asyncio.QueueFull:
            raise MailboxFull(f"{self.name}: mailbox full ({self.mailbox_size})") from None

    async def __tick(self, interval: float, timer: str) -> None:
        # Ends when cancelled by _finish() or when the actor stops accepting messages.
        while self.__state in _ACCEPTING:
            await asyncio.sleep(interval)
            if timer in self.__tick_pending:
                continue
            try:
                self.__enqueue(_Envelope(Tick(timer), timer=timer))
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
            self.__tick_pending.add(timer)

    def __finish(self) -> None:
        """Cancel timers and fail every ask still waiting in the mailbox."""
        for task in self.__timers.values():
            task.cancel()
        self.__timers.clear()
        # Bounded: nothing can enqueue any more (state no longer accepts).
        while not self.__mailbox.empty():
            envelope = self.__mailbox.get_nowait()
            if envelope.reply is not None and not envelope.reply.done():
                envelope.reply.set_exception(ActorNotRunning(f"{self.name} is {self.__state}"))

    async def __call_on_stop(self) -> None:
        try:
            await self.on_stop()
        except Exception:
            log.exception("%s: on_stop failed", self.name, extra={"actor": self.name})
