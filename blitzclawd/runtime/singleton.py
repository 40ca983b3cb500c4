"""Run a child in at most one daemon per database, using a PostgreSQL advisory lock.

The lock lives in a dedicated session: if this process dies, PostgreSQL ends the session and
releases the lock, and a standby daemon takes over on its next poll. While holding the lock we
keep checking the session; if it is gone, so is the lock, and the inner child must stop at once
because another daemon may already be running it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from blitzclawd.runtime.outage import dependency_unavailable
from blitzclawd.runtime.supervisor import Child

log = logging.getLogger("blitzclawd.singleton")


def lock_key(name: str) -> int:
    """A stable signed int64 advisory-lock key for `name`.

    Every daemon version on one database must derive the same key, so never change this.
    """
    digest = hashlib.blake2b(f"blitzclawd:singleton:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class LockLost(Exception):
    """The session holding the advisory lock is gone (or stopped answering)."""


class SingletonChild:
    """A supervisor Child that runs `factory()`'s child only while holding the lock."""

    def __init__(
        self,
        name: str,
        factory: Callable[[], Child],
        connect: Callable[[], Awaitable[asyncpg.Connection]],
        *,
        poll_interval: float = 1.0,
        query_timeout: float = 5.0,
        stop_timeout: float = 5.0,
    ) -> None:
        self.name = name
        self.started = asyncio.Event()
        self.started.set()  # standing by is a healthy state: nothing to wait for
        self._factory = factory
        self._connect = connect
        self._poll_interval = poll_interval
        # A hung lock session must count as lost: the server may already have dropped it.
        self._query_timeout = query_timeout
        self._stop_timeout = stop_timeout
        self._key = lock_key(name)
        self._stop_requested = asyncio.Event()
        self._inner: Child | None = None
        self._state = "standby"

    @property
    def state(self) -> str:
        """The inner child's state while holding the lock; else standby, stopped or crashed."""
        if self._inner is not None:
            state = getattr(self._inner, "state", None)
            return state if isinstance(state, str) else "running"
        return self._state

    @property
    def inner(self) -> Child | None:
        """The inner child while this daemon holds the lock (to tell/ask it), else None."""
        return self._inner

    def stop(self) -> None:
        self._stop_requested.set()

    async def run(self) -> None:
        if self._stop_requested.is_set():
            self._state = "stopped"
            return
        conn = await self._connect()
        try:
            if await self._acquire(conn):
                await self._hold(conn)
            self._state = "stopped"
        except BaseException:
            self._state = "crashed"
            raise
        finally:
            await _close(conn)

    async def _acquire(self, conn: asyncpg.Connection) -> bool:
        """Poll for the lock; False if stop() came first."""
        # Ends when the lock is ours, stop() is requested, or the session fails (raises).
        while not self._stop_requested.is_set():
            if await conn.fetchval(
                "SELECT pg_try_advisory_lock($1)", self._key, timeout=self._query_timeout
            ):
                log.info("%s: lock acquired", self.name, extra={"actor": self.name})
                return True
            await self._pause()
        return False

    async def _hold(self, conn: asyncpg.Connection) -> None:
        inner = self._factory()
        self._inner = inner
        task = asyncio.create_task(inner.run(), name=inner.name)
        task.add_done_callback(_retrieve)
        try:
            lost = await self._watch(conn, task)
            if not task.done():
                await self._stop_inner(inner, task)
            if not task.done():
                raise RuntimeError(f"{self.name}: inner child ignored cancellation") from lost
            if lost is not None:
                if not task.cancelled() and (error := task.exception()) is not None:
                    log.error(
                        "%s: inner child failed while stopping",
                        self.name,
                        exc_info=error,
                        extra={"actor": self.name},
                    )
                raise LockLost(f"{self.name}: lock session lost") from lost
            if task.cancelled():
                if self._stop_requested.is_set():
                    return  # we cancelled it ourselves after it ignored stop()
                raise RuntimeError(f"{self.name}: inner child was cancelled")
            task.result()  # re-raise the inner child's crash
        finally:
            self._inner = None
            if not task.done():  # we are being cancelled ourselves
                task.cancel()
                await asyncio.wait({task}, timeout=self._stop_timeout)

    async def _stop_inner(self, inner: Child, task: asyncio.Task[None]) -> None:
        """stop(), wait stop_timeout, then cancel: after a lost lock, every second counts."""
        inner.stop()
        await asyncio.wait({task}, timeout=self._stop_timeout)
        if task.done():
            return
        log.warning(
            "%s: inner child did not stop within %ss, cancelling it",
            self.name,
            self._stop_timeout,
            extra={"actor": self.name},
        )
        task.cancel()
        await asyncio.wait({task}, timeout=self._stop_timeout)

    async def _watch(self, conn: asyncpg.Connection, task: asyncio.Task[None]) -> Exception | None:
        """Check the session until the inner child ends or stop(); the error if it was lost."""
        stopping = asyncio.create_task(self._stop_requested.wait())
        try:
            # Ends when the inner child finishes, stop() is requested or the session fails.
            while True:
                await asyncio.wait(
                    {task, stopping},
                    timeout=self._poll_interval,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if task.done() or stopping.done():
                    return None
                try:
                    await conn.fetchval("SELECT 1", timeout=self._query_timeout)
                except Exception as exc:
                    outage = dependency_unavailable(exc)  # expected then: no traceback
                    log.log(
                        logging.WARNING if outage else logging.ERROR,
                        "%s: lock session lost, stopping the singleton: %r",
                        self.name,
                        exc,
                        exc_info=None if outage else exc,
                        extra={"actor": self.name},
                    )
                    return exc
        finally:
            stopping.cancel()

    async def _pause(self) -> None:
        try:
            await asyncio.wait_for(self._stop_requested.wait(), timeout=self._poll_interval)
        except TimeoutError:
            pass


def _retrieve(task: asyncio.Task[None]) -> None:
    # Marks the outcome as seen; _hold re-raises or logs it where it matters.
    if not task.cancelled():
        task.exception()


async def _close(conn: asyncpg.Connection) -> None:
    """Close the lock session (which releases the lock); abort it if a clean close fails."""
    try:
        await conn.close(timeout=5.0)
    except asyncio.CancelledError:
        conn.terminate()
        raise
    except Exception as exc:
        # Never mask the reason run() is ending; the socket goes down either way.
        log.warning("closing the lock session failed: %r", exc)
        conn.terminate()
