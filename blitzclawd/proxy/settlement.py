"""Handing each finished request's settlement to billing, money's one writer, and keeping it
until billing has committed it.

The proxy never settles itself: a settlement billing could not take (not running, restarting,
or the database away) waits here, with its journal slot kept, and is handed over again on every
checkpoint tick until it commits; should the daemon stop first, recovery charges it from the
journal. A settlement waits for its request's database record to be written (if a checkpoint
started one) so that its DELETE never precedes the INSERT.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import asyncpg

from blitzclawd.proxy import records
from blitzclawd.runtime.actor import ActorNotRunning
from blitzclawd.runtime.messages import Settlement, SettleResult
from blitzclawd.runtime.outage import dependency_unavailable

log = logging.getLogger("blitzclawd.proxy")

RECORD_WAIT = 10.0  # s a settlement waits for its request's record to be written


class Settler(Protocol):
    """Billing as the proxy sees it (blitzclawd.actors.billing.BillingActor)."""

    def submit(self, item: Settlement) -> asyncio.Future[SettleResult]:
        """Join the batch being gathered; resolves once committed. Raises when not running."""
        ...

    async def settle(self, item: Settlement) -> SettleResult: ...


class BillingUnavailable(Exception):
    """Billing is not running: the settlement waits for it."""


Settled = Callable[[Settlement, SettleResult], None]
StepFailing = Callable[..., None]
StepWorks = Callable[[str], None]


def database_trouble(exc: BaseException) -> bool:
    """A database error a background step skips and retries on the next tick (its own query
    refused, or the database unavailable) rather than crash the actor holding the leases."""
    return isinstance(exc, asyncpg.PostgresError) or dependency_unavailable(exc)


class SettlementHandoff:
    def __init__(
        self,
        billing: Callable[[], Settler | None],
        record_pool: asyncpg.Pool,
        *,
        settled: Settled,
        failing: StepFailing,
        works: StepWorks,
    ) -> None:
        self._billing = billing
        self._record_pool = record_pool
        self._settled = settled  # the proxy's part once committed: lease, journal slot
        self._failing = failing
        self._works = works
        self.pending: set[asyncio.Future[Any]] = set()  # handed over, not committed yet
        self.waiting: list[Settlement] = []  # billing could not take them: next tick
        self._retrying = 0  # being handed over again by retry()

    @property
    def idle(self) -> bool:
        return not (self.pending or self.waiting or self._retrying)

    def hand_over(self, item: Settlement, written: asyncio.Future[bool] | None) -> None:
        """Settle `item` in the background. Usually its request has no database record and it
        joins billing's batch right here, with no task of its own."""
        billing = self._billing() if written is None or written.done() else None
        if billing is not None:
            try:
                future = billing.submit(item)
            except Exception:  # not running: the slow path waits for it
                pass
            else:
                self.pending.add(future)
                future.add_done_callback(lambda f: self._submitted(item, f))
                return
        self.track(self._settle_when_recorded(item, written))

    def finished(self, request_id: str, cost_micros: int) -> None:
        """The request's record (written) now says it is over, at its final cost."""
        self.track(self._mark_finished(request_id, cost_micros))

    def track(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def drain(self, seconds: float) -> None:
        """Wait up to `seconds` for what was handed over (a settlement billing could not commit
        goes on in a task of its own, hence the loop)."""
        deadline = asyncio.get_running_loop().time() + seconds
        while self.pending and (left := deadline - asyncio.get_running_loop().time()) > 0:
            await asyncio.wait(set(self.pending), timeout=left)

    async def retry(self) -> None:
        """Hand over again what did not commit: one first, then (if it did) the rest together,
        so billing or a database that is still down costs one attempt a tick, and one that is
        back one batch."""
        if not self.waiting:
            return
        first, *rest = self.waiting
        if not await self._again([first]):
            self._failing("settling again", None, unsettled=len(self.waiting))
            return
        self._works("settling again")
        await self._again(rest)

    async def _again(self, items: list[Settlement]) -> bool:
        for item in items:  # kept counted (not idle) until settled or waiting again
            self.waiting.remove(item)
        self._retrying += len(items)
        try:  # each waits again if it fails
            results = await asyncio.gather(*(self._settle(item) for item in items))
        finally:
            self._retrying -= len(items)
        return all(result is not None for result in results)

    def _submitted(self, item: Settlement, future: asyncio.Future[SettleResult]) -> None:
        """A settlement handed to billing committed, or did not (then it is handed over again)."""
        self.pending.discard(future)
        if future.cancelled() or future.exception() is not None:
            if not future.cancelled() and dependency_unavailable(future.exception()):
                self.waiting.append(item)  # the database is away: next tick, once it is back
                return
            self.track(self._settle(item))  # once more now, else on the next tick
            return
        self._settled(item, future.result())

    async def _settle_when_recorded(
        self, item: Settlement, written: asyncio.Future[bool] | None
    ) -> None:
        if written is not None and not written.done():
            await asyncio.wait((written,), timeout=RECORD_WAIT)
            if not written.done():  # should it land after all, it must not outlive us
                written.add_done_callback(lambda _f, rid=item.request_id: self._forget(rid))
            elif written.result():
                # Written after the request ended: mark it finished now, so that should this
                # settlement not commit, recovery charges the final cost, not the checkpoint's.
                await self._mark_finished(item.request_id, item.cost_micros)
        await self._settle(item)

    async def _settle(self, item: Settlement) -> SettleResult | None:
        """Billing's answer, or None: then the item waits for the next tick."""
        try:
            billing = self._billing()
            if billing is None:
                raise BillingUnavailable("billing is not running")
            result = await billing.settle(item)
        except Exception as exc:
            # Not lost: journaled, and handed over again every tick until it commits (settling
            # is idempotent on the request id).
            if dependency_unavailable(exc) or isinstance(exc, BillingUnavailable | ActorNotRunning):
                # An outage, or billing restarting: retry() says so, once a round.
                log.debug("settlement deferred", extra={"request_id": item.request_id})
            else:
                log.exception(
                    "settlement failed; will retry", extra={"request_id": item.request_id}
                )
            self.waiting.append(item)
            return None
        self._settled(item, result)
        return result

    async def _mark_finished(self, request_id: str, cost: int) -> None:
        try:
            await records.mark_finished(self._record_pool, request_id, cost)
        except Exception as exc:
            if not database_trouble(exc):
                raise
            # Its settlement deletes the record, when it commits; only if it never does would
            # recovery estimate the request instead of charging its final cost.
            self._failing("marking finished requests", exc, request_id=request_id)

    def _forget(self, request_id: str) -> None:
        self.track(self._delete_record(request_id))

    async def _delete_record(self, request_id: str) -> None:
        try:
            await records.delete(self._record_pool, request_id)
        except Exception as exc:
            if not database_trouble(exc):
                raise
            log.warning(
                "a late record of a settled request is left for recovery",
                extra={"request_id": request_id, "error": repr(exc)},
            )
