"""The embedded cluster's keeper: the first child of the tree while the daemon runs its own
PostgreSQL (blitzclawd.db.embedded)."""

from __future__ import annotations

import asyncio
import logging
import random

from blitzclawd.db.embedded import EmbeddedPostgres, EmbeddedPostgresError
from blitzclawd.runtime.supervisor import backoff_delay

log = logging.getLogger("blitzclawd.daemon")


class PostgresKeeper:
    """Starts the embedded cluster again whenever its postmaster dies (a crash, the OOM killer).

    The daemon owns that server, so nobody else would; on the same port, so every pool and DSN
    handed out reconnects to it. Meanwhile the actors wait for the database like for any outage.
    """

    name = "postgres"
    POLL = 0.5  # s between checks: reaping a dead child is a cheap waitpid
    BACKOFF_MAX = 5.0

    def __init__(self, cluster: EmbeddedPostgres) -> None:
        self.started = asyncio.Event()
        self.started.set()  # the cluster is up: the daemon started it before the actors
        self.state = "running"
        self._cluster = cluster
        self._stop = asyncio.Event()
        self._rng = random.Random()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        failures = 0
        while not self._stop.is_set():  # ends on stop(); every wait below is interrupted by it
            if not self._cluster.died():
                await self._pause(self.POLL)
                continue
            if self.state == "running":
                log.error("embedded PostgreSQL died; starting it again")
                self.state = "restarting"
            try:
                await self._cluster.restart()
            except EmbeddedPostgresError as exc:  # e.g. its old backends still hold its memory
                failures += 1
                delay = backoff_delay(failures, 0.2, self.BACKOFF_MAX, self._rng)
                log.warning(
                    "embedded PostgreSQL did not start; retrying",
                    extra={"error": str(exc)[:500], "backoff": delay},
                )
                await self._pause(delay)
                continue
            failures = 0
            self.state = "running"
            log.warning("embedded PostgreSQL started again")

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)
        except TimeoutError:
            pass
