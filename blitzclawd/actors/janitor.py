"""Singleton: notices daemons that stopped beating and closes their books.

A daemon killed without a clean stop leaves its `daemons` row open. Once it has been silent for
`dead_after` seconds the janitor marks it stopped; work that daemon owned (open reservations,
claimed jobs) is recovered by the owners of that work, which subscribe through `on_dead`.
Hooks in `every_sweep` run on every sweep: they pick up what any stopped daemon still left
behind (a clean stop cut short, a daemon marked stopped by its successor on the same host).

Silence is only counted while this janitor could watch: from its first sweep on (a new janitor
after a database outage, a lost lock or a takeover starts watching afresh). A daemon that could
not beat because the database was down is not presumed dead once the database is back — else
recovery would charge its requests at an estimate and release its leases under it.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence

import asyncpg

from blitzclawd.queries import daemons
from blitzclawd.runtime.actor import Actor
from blitzclawd.runtime.messages import Tick

log = logging.getLogger("blitzclawd.janitor")

DeadDaemonHook = Callable[[asyncpg.Pool, str], Awaitable[None]]
SweepHook = Callable[[asyncpg.Pool], Awaitable[object]]


class Janitor(Actor):
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        interval: float,
        dead_after: float,
        on_dead: Sequence[DeadDaemonHook] = (),
        every_sweep: Sequence[SweepHook] = (),
    ) -> None:
        super().__init__("janitor")
        self._pool = pool
        self._interval = interval
        self._dead_after = dead_after
        self._on_dead = tuple(on_dead)
        self._every_sweep = tuple(every_sweep)
        self._watching_since: dt.datetime | None = None  # the database's clock

    async def on_start(self) -> None:
        self.every(self._interval, "sweep")

    async def handle(self, message: object) -> list[str] | None:
        if isinstance(message, Tick):
            return await self.sweep()
        return None

    async def sweep(self) -> list[str]:
        if self._watching_since is None:
            self._watching_since = await daemons.database_now(self._pool)
        rows = await daemons.presume_dead(self._pool, self._dead_after, self._watching_since)
        for row in rows:
            log.warning(
                "daemon presumed dead",
                extra={"dead_daemon": row["id"], "hostname": row["hostname"], "pid": row["pid"]},
            )
            for hook in self._on_dead:
                await hook(self._pool, row["id"])
        for sweep_hook in self._every_sweep:
            await sweep_hook(self._pool)
        return [row["id"] for row in rows]
