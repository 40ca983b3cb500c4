"""Singleton: keeps the server pool filled and the table in step with the provider.

Every `pool_interval` seconds, and on demand (PoolCheck from the instances API), one pass:

1. reconcile with the provider's list of our servers (label service=blitzclaw): a server the table
   does not know is deleted; a row whose server vanished is marked gone (its instance, if any,
   goes to error with the reason); a row still provisioning after `stuck_after` is deleted;
2. place: an instance waiting for a server while one is available gets it (a safety net: the
   create and the ready call already look for each other under the placement lock);
3. top up: at least `min_available` servers available or provisioning (plus one per instance
   waiting for a server), at most `max_size` in all, each created with rendered cloud-init (a
   unique name, a fresh server secret stored hashed, labels naming the row). While an operator
   holds the pool (pool_hold, after a Drain) it keeps no spares: only an instance waiting for a
   server gets one, so a hold never strands a user.

A server on its way out (`deleting`: drained, retired, or a delete that failed) is deleted here,
and only here: on a Drain at once, else on the next pass. Work per pass is bounded by
`max_actions_per_pass` creates and as many deletes of each kind.

Bursts (fifty users at once): a pass's creates run concurrently (a Hetzner create takes seconds
to tens of seconds, mostly waiting for its action), and a pass that stopped at its budget with
more wanted runs again at once, not at the next interval. The PoolChecks a burst sends are
answered by one pass that started after them (PoolCheck.at), not one pass each: every pass
lists all our servers at Hetzner, from its hourly request budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from blitzclawd import credentials
from blitzclawd.config import FleetSettings
from blitzclawd.fleet import pool as fleet_pool
from blitzclawd.fleet.cloudinit import user_data_for
from blitzclawd.providers.base import ProviderError, ServerInfo, ServerProvider
from blitzclawd.queries import pool_drain
from blitzclawd.runtime.actor import Actor, MailboxFull
from blitzclawd.runtime.messages import Drain, Drained, PoolCheck, Provision, Tick

log = logging.getLogger("blitzclawd.pool")

POOL_LABEL = "pool_id"  # the server_pool row id, so a server always names its row


@dataclass(frozen=True, slots=True)
class PassReport:
    created: int = 0
    deleted_unknown: int = 0
    deleted_stuck: int = 0
    gone: int = 0
    failed: bool = False
    placed: int = 0


class PoolManager(Actor):
    def __init__(
        self,
        pool: asyncpg.Pool,
        cfg: FleetSettings,
        provider: ServerProvider,
        ssh_public_key: str,
        *,
        on_deploy: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__("pool-manager")
        self._pool = pool
        self._cfg = cfg
        self._provider = provider
        self._ssh_public_key = ssh_public_key
        self._on_deploy = on_deploy
        self._pass_started = -float("inf")  # time.monotonic() when the last pass began
        self._last_report = PassReport()

    async def on_start(self) -> None:
        self.every(self._cfg.pool_interval, "pool")
        self.tell(PoolCheck("start"))

    async def handle(self, message: object) -> PassReport | Drained | int | None:
        if (
            isinstance(message, PoolCheck)
            and message.at < self._pass_started
            and not self._last_report.failed
        ):
            return self._last_report  # a pass since it was sent has seen its state
        if isinstance(message, (Tick, PoolCheck)):
            return await self.run_pass()
        if isinstance(message, Provision):
            return await self.provision(message.count)
        if isinstance(message, Drain):
            return await self.drain(message)
        return None

    async def provision(self, count: int) -> int:
        """Up to `count` more servers now, never beyond fleet.max_size; how many were made."""
        counts = await fleet_pool.pool_counts(self._pool)
        room = max(0, self._cfg.max_size - counts["total"])
        made = await self._create_many(min(count, room))
        log.info("servers provisioned on request", extra={"asked": count, "created": made})
        return made

    async def drain(self, message: Drain) -> Drained:
        """Hold the pool, then delete the ready, unassigned servers the drain took."""
        taken = await pool_drain.hold_and_take(
            self._pool, message.actor, message.count, message.location
        )
        deleted: list[str] = []
        failed: list[str] = []
        for row in taken:
            hid = row["hetzner_server_id"]
            if hid is None or await self._delete(hid):
                await fleet_pool.mark_gone(self._pool, row["id"], None, "drained by an operator")
                deleted.append(row["name"])
            else:
                failed.append(row["name"])  # stays `deleting`: the next pass tries again
        log.warning(
            "pool drained and held",
            extra={"by": message.actor, "deleted": len(deleted), "failed": len(failed)},
        )
        return Drained(tuple(deleted), tuple(failed))

    async def run_pass(self) -> PassReport:
        self._pass_started = time.monotonic()  # before anything is read
        self._last_report = report = await self._pass()
        if report != PassReport():
            log.info("pool pass", extra={"report": str(report)})
        return report

    async def _place_waiting(self, budget: int) -> int:
        placed = await fleet_pool.place_waiting(self._pool, budget)
        if placed:
            log.warning("instances placed that were waiting beside an available server")
            self._on_deploy()
        return placed

    async def _pass(self) -> PassReport:
        budget = self._cfg.max_actions_per_pass
        try:
            listed = await self._provider.list({})
        except ProviderError as exc:
            log.warning("pool pass skipped: cannot list servers", extra={"error": str(exc)})
            # Pairing waiting instances with our available servers needs nothing of Hetzner.
            return PassReport(failed=True, placed=await self._place_waiting(budget))
        unknown, gone, stuck = await self._reconcile(listed, budget)
        placed = await self._place_waiting(budget)
        created, more = await self._top_up(budget)
        if more or placed == budget:
            with contextlib.suppress(MailboxFull):  # full: of checks that run a pass anyway
                self.tell(PoolCheck("budget reached, more wanted"))  # now, not next interval
        return PassReport(created, unknown, stuck, gone, placed=placed)

    # -- reconcile -------------------------------------------------------------------------------

    async def _reconcile(self, listed: list[ServerInfo], budget: int) -> tuple[int, int, int]:
        rows = await fleet_pool.live_servers(self._pool, self._cfg.stuck_after)
        by_provider_id = {r["hetzner_server_id"]: r for r in rows if r["hetzner_server_id"]}
        by_name = {r["name"]: r for r in rows}
        deleted = 0
        for server in listed:
            if server.provider_id in by_provider_id:
                continue
            row = by_name.get(server.name)
            if row is not None and row["hetzner_server_id"] is None:
                await self._adopt(row["id"], server)  # our create returned, its update did not
                continue
            if deleted >= budget:
                break
            log.warning(
                "deleting a server the pool does not know", extra={"server_name": server.name}
            )
            if await self._delete(server.provider_id):
                deleted += 1
        present = {s.provider_id for s in listed}
        gone = 0
        for row in rows:
            hid = row["hetzner_server_id"]
            if hid is not None and hid not in present:
                await self._mark_gone(row, "the server no longer exists at the provider")
                gone += 1
        stuck = 0
        for row in rows:
            if stuck >= budget:
                break
            if row["status"] != "provisioning" or not row["stuck"]:
                continue
            hid = row["hetzner_server_id"]
            if hid is not None and hid not in present:
                continue  # already marked gone above
            log.warning(
                "deleting a server that never called back", extra={"server_name": row["name"]}
            )
            await fleet_pool.mark_deleting(self._pool, row["id"])
            if hid is None or await self._delete(hid):
                await self._mark_gone(row, "the server never became ready")
                stuck += 1
        await self._finish_deleting(rows, present, budget)
        return deleted, gone, stuck

    async def _finish_deleting(
        self, rows: list[asyncpg.Record], present: set[int], budget: int
    ) -> None:
        """Servers left `deleting` (a drain's or a retired server's delete that failed, or never
        ran) that still exist: deleted now. (Those already gone were marked gone above.)"""
        done = 0
        for row in rows:
            hid = row["hetzner_server_id"]
            if row["status"] != "deleting" or hid not in present:
                continue
            if done >= budget:
                break
            done += 1
            log.info("deleting a server left deleting", extra={"server_name": row["name"]})
            if await self._delete(hid):
                await self._mark_gone(row, "deleted")

    async def _adopt(self, row_id: uuid.UUID, server: ServerInfo) -> None:
        await fleet_pool.set_provider_facts(self._pool, row_id, server)

    async def _delete(self, provider_id: int) -> bool:
        try:
            await self._provider.delete(provider_id)
        except ProviderError as exc:
            log.warning("server delete failed", extra={"error": str(exc)})
            return False
        return True

    async def _mark_gone(self, row: asyncpg.Record, reason: str) -> None:
        await fleet_pool.mark_gone(self._pool, row["id"], row["assigned_to"], reason)

    # -- top up ----------------------------------------------------------------------------------

    async def _top_up(self, budget: int) -> tuple[int, bool]:
        """Servers created; and whether more are wanted than this pass's budget allowed."""
        counts = await fleet_pool.pool_counts(self._pool)
        held = await pool_drain.hold_of(self._pool) is not None
        want = (0 if held else self._cfg.min_available) + counts["waiting"] - counts["spare"]
        wanted = min(want, self._cfg.max_size - counts["total"])
        n = max(0, min(wanted, budget))
        made = await self._create_many(n)
        return made, made == n and wanted > n

    async def _create_many(self, n: int) -> int:
        """`n` servers, at most max_actions_per_pass being created at once; after a failure
        (capacity, quota, the rate limit) no new one is started: the next pass tries again.
        How many were made."""
        todo = iter(range(n))
        made = 0
        failed = False

        async def creator() -> None:
            nonlocal made, failed
            for _ in todo:  # shared: each creator takes the next one
                if failed:
                    return
                if await self._create_one():
                    made += 1
                else:
                    failed = True

        width = min(n, self._cfg.max_actions_per_pass)
        results = await asyncio.gather(*(creator() for _ in range(width)), return_exceptions=True)
        for result in results:  # a database error crashes the actor, as it did one at a time
            if isinstance(result, BaseException):
                raise result
        return made

    async def _create_one(self) -> bool:
        row_id = uuid.uuid4()
        name = f"bc-{row_id.hex[:12]}"
        secret = credentials.new_secret()
        user_data = user_data_for(
            self._cfg, name=name, secret=secret, ssh_public_key=self._ssh_public_key
        )
        await fleet_pool.insert_provisioning(
            self._pool, row_id, name, credentials.hash_secret(secret), self._cfg.server_type
        )
        try:
            info = await self._provider.create(
                name=name, user_data=user_data, labels={POOL_LABEL: str(row_id)}
            )
        except ProviderError as exc:
            log.warning("server create failed", extra={"server_name": name, "error": str(exc)})
            await fleet_pool.mark_never_created(self._pool, row_id)
            return False
        # The ready call may have come in before we knew the address: finished here then.
        outcome = await fleet_pool.created(self._pool, row_id, info)
        if outcome == "deploy":
            self._on_deploy()
        log.info("server created", extra={"server_name": name, "location": info.location})
        return True
