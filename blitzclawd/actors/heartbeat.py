"""Each daemon's liveness row in `daemons`: registered on start, touched on a timer.

Peers read `last_seen` to tell a live daemon from a dead one (the janitor settles what a dead
daemon left behind), and operators see every daemon sharing the database.
"""

from __future__ import annotations

import logging
import os
import socket

import asyncpg

from blitzclawd import __version__
from blitzclawd.queries import daemons
from blitzclawd.runtime.actor import Actor
from blitzclawd.runtime.messages import Tick
from blitzclawd.runtime.outage import dependency_unavailable

log = logging.getLogger("blitzclawd.heartbeat")


class Heartbeat(Actor):
    def __init__(self, pool: asyncpg.Pool, daemon_id: str, interval: float) -> None:
        super().__init__("heartbeat")
        self._pool = pool
        self._daemon_id = daemon_id
        self._interval = interval
        self._missed = 0  # beats in a row the database was not there for

    async def on_start(self) -> None:
        # Upsert: after a restart of this actor the row exists; after a janitor presumed us dead
        # (a long stall), registering again brings us back.
        await daemons.register(
            self._pool, self._daemon_id, socket.gethostname(), os.getpid(), __version__
        )
        await self._reap_local_predecessors()
        self.every(self._interval, "beat")

    async def _reap_local_predecessors(self) -> None:
        """Mark daemons of this host whose process is gone as stopped, at once.

        Without this, a daemon restarted after a crash would wait `dead_after` seconds for the
        janitor before the work its predecessor left open could be recovered.
        """
        rows = await daemons.running_on(self._pool, socket.gethostname(), self._daemon_id)
        dead = [row["id"] for row in rows if not _is_live_daemon(row["pid"])]
        if dead:
            await daemons.stopped_when_last_seen(self._pool, dead)
            log.warning("predecessors on this host are gone", extra={"dead_daemons": dead})

    async def handle(self, message: object) -> None:
        if isinstance(message, Tick):
            try:
                was_stopped = await daemons.beat(self._pool, self._daemon_id)
            except Exception as exc:
                # Nobody can see us while the database is down; the next tick beats again.
                # (Janitors do not count such a silence: see actors/janitor.py.)
                if not dependency_unavailable(exc):
                    raise
                if not self._missed:
                    log.warning("heartbeat missed: the database is unavailable")
                self._missed += 1
                return
            if self._missed:
                log.warning("heartbeat back", extra={"missed": self._missed})
                self._missed = 0
            if was_stopped is None:  # our row vanished: crash, the restart re-registers
                raise RuntimeError("daemon row missing from `daemons`")
            if was_stopped:
                # We stalled past dead_after: recovery has charged our in-flight requests (their
                # own settlements now find them settled) and released our leases (the proxy's
                # lease upkeep notices and grows them again).
                log.error(
                    "this daemon was presumed dead and recovered; carrying on",
                    extra={"daemon_id": self._daemon_id},
                )

    async def on_stop(self) -> None:
        try:
            await daemons.stopped(self._pool, self._daemon_id)
        except Exception as exc:
            if not dependency_unavailable(exc):
                raise
            # The janitor of the next daemon up marks us stopped after dead_after.
            log.warning("stopping without marking this daemon stopped: database unavailable")


def _is_live_daemon(pid: int) -> bool:
    """True if `pid` runs a blitzclawd (a recycled pid running something else does not count)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except OSError:
        return False
    return b"blitzclawd" in cmdline
