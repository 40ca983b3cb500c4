"""The billing actor: the ledger's writer of record, committing settlements in groups.

Proxy requests hand their Settlement over with `settle()` and wait for the commit. A batch is
committed `settle_linger` seconds after its first settlement arrived (or as soon as it is full),
and the settlements that arrive while one commits go in the next (group commit): one transaction
and one WAL flush for many requests, also when they come one after the other. Nobody waits for
it but the request's own settlement task: the client already has its answer. A settlement counts
only once committed: its caller's future resolves after COMMIT.

It is also the one that charges what stopped daemons left behind (blitzclawd.proxy.recovery):
first thing on start, then the journals in our state directory every checkpoint interval and
the database records whenever the janitor has swept (RecoverOrphans). Its mailbox: CreemWebhook
(ask: a WebhookOutcome), RecoverOrphans (tell), its own timers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

from blitzclawd import ledger
from blitzclawd.config import Settings, billing_minimum_micros, usd_to_micros
from blitzclawd.payments.apply import WebhookOutcome, apply_creem_event
from blitzclawd.payments.creem import CreemEvent
from blitzclawd.proxy.recovery import recover_journals, recover_orphaned_reservations
from blitzclawd.runtime.actor import Actor, ActorNotRunning
from blitzclawd.runtime.messages import (
    Adjust,
    AutoTopupDue,
    BalanceDepleted,
    CreemWebhook,
    LowBalance,
    RecoverOrphans,
    Settlement,
    SettleResult,
    Tick,
)
from blitzclawd.runtime.outage import DependencyUnavailable, dependency_unavailable

log = logging.getLogger("blitzclawd.billing")

NotifyFn = Callable[[object], None]


# The database being unreachable, as opposed to refusing what it was given.
_DATABASE_AWAY = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
)


class _FlushDue:
    """The linger of the current batch is over."""


class BillingActor(Actor):
    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        *,
        notify: NotifyFn | None = None,
        journals: tuple[Path, str] | None = None,
    ) -> None:
        batch_max = settings.billing.settle_batch_max
        # A deep mailbox: every in-flight proxy request may be settling at the same moment.
        super().__init__("billing", mailbox_size=max(10_000, batch_max * 4))
        self._pool = pool
        self._settings = settings
        self._minimum = billing_minimum_micros(settings)
        # "Balance low" line: the minimum plus the configured margin.
        self._low = self._minimum + usd_to_micros(
            "low_balance_margin_usd", settings.notify.low_balance_margin_usd
        )
        self._batch_max = batch_max
        self._linger = settings.billing.settle_linger
        self._flush_timer: asyncio.TimerHandle | None = None
        self._notify = notify
        self._batch: list[tuple[Settlement, asyncio.Future[SettleResult]]] = []
        self._journals = journals  # (state directory, this daemon's id)
        self._deferring = False  # commits fail for want of the database (logged once)

    async def on_start(self) -> None:
        # Journals first: they hold the final costs of requests that were over, and a dead
        # daemon's leases are released (by the second call) only once its requests are charged.
        if self._journals is not None:
            await recover_journals(self._pool, *self._journals, self._minimum)
        await recover_orphaned_reservations(self._pool, self._minimum)
        if self._journals is not None:
            self.every(self._settings.billing.checkpoint_interval, "recover journals")

    async def on_stop(self) -> None:
        # Nothing is left half-done: whatever is batched is committed before we go.
        if self._batch:
            await self._flush()

    # -- called from request tasks -----------------------------------------------------------

    def submit(self, item: Settlement) -> asyncio.Future[SettleResult]:
        """Add `item` to the batch being gathered; the future resolves once it is committed.

        No mailbox round trip per settlement (this runs on the actor's own loop, and only
        appends): the commits themselves still happen one at a time inside the actor.
        Raises ActorNotRunning when the actor is not running.
        """
        if not self.running:
            raise ActorNotRunning(f"{self.name} is {self.state}")
        future: asyncio.Future[SettleResult] = asyncio.get_running_loop().create_future()
        self._batch.append((item, future))
        if len(self._batch) >= self._batch_max:
            self._cancel_timer()
            self.tell(_FlushDue())
        elif self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(self._linger, self._flush_due)
        return future

    async def settle(self, item: Settlement) -> SettleResult:
        return await self.submit(item)

    async def apply_webhook(self, item: CreemWebhook, timeout: float = 30.0) -> WebhookOutcome:  # noqa: ASYNC109
        result = await self.ask(item, timeout=timeout)
        assert isinstance(result, WebhookOutcome)
        return result

    # -- the mailbox ---------------------------------------------------------------------------

    async def handle(self, message: object) -> object | None:
        if isinstance(message, _FlushDue):
            if self._batch:
                await self._flush()
            return None
        if isinstance(message, CreemWebhook):
            assert isinstance(message.event, CreemEvent)
            return await self._apply_webhook(message.event)
        if isinstance(message, Adjust):
            entry = ledger.Entry(
                message.user_id,
                message.amount_micros,
                "adjustment",
                message.reason,
                f"admin:{message.key}",
            )
            return await ledger.adjust(self._pool, entry, self._minimum, "adjustment")
        if isinstance(message, Tick) and self._journals is not None:
            journals = self._journals
            await self._recover(
                "journal recovery",
                lambda: recover_journals(self._pool, *journals, self._minimum),
            )
        elif isinstance(message, RecoverOrphans):
            await self._recover(
                "recovery of stopped daemons' records",
                lambda: recover_orphaned_reservations(self._pool, self._minimum),
            )
        return None

    async def _recover(self, step: str, run: Callable[[], Awaitable[object]]) -> None:
        """Charge what a stopped daemon left; a database in trouble waits for the next time."""
        try:
            await run()
        except Exception as exc:
            if not (isinstance(exc, asyncpg.PostgresError) or dependency_unavailable(exc)):
                raise
            log.warning("%s failed; retrying next time", step, extra={"error": repr(exc)})

    async def _apply_webhook(self, event: CreemEvent) -> WebhookOutcome:
        """One webhook's outcome; whatever goes wrong with it is its answer, not our crash.

        apply_creem_event records an event's bad data itself (unmatched, acknowledged). Anything
        else it raises rolled its transaction back, so nothing was recorded: the event is
        answered "failed" (500, and Creem retries later). The webhook path holds none of this
        actor's state, so there is nothing a restart would repair; a database that is away is
        not the event's fault either, and goes up to the actor's outage handling as before.
        """
        try:
            return await apply_creem_event(self._pool, event, self._settings)
        except _DATABASE_AWAY:
            raise
        except Exception:
            log.exception(
                "webhook not processed; Creem will retry it",
                extra={"event_id": event.id, "event_type": event.type},
            )
            return WebhookOutcome("failed")

    def _flush_due(self) -> None:
        self._flush_timer = None
        try:
            self.tell(_FlushDue())
        except ActorNotRunning:  # stopping: on_stop flushes what is left
            pass
        except Exception:  # the mailbox is full: try again a linger later, never strand a batch
            self._flush_timer = asyncio.get_running_loop().call_later(
                max(self._linger, 0.001), self._flush_due
            )

    def _cancel_timer(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None

    async def _flush(self) -> None:
        self._cancel_timer()
        batch, self._batch = self._batch, []
        try:
            await self._commit(batch)
        finally:
            # Whatever happened, no caller is left waiting: what did not commit is their retry.
            for _, future in batch:
                if not future.done():
                    future.set_exception(RuntimeError("settlement not committed"))

    async def _commit(self, batch: list[tuple[Settlement, asyncio.Future[SettleResult]]]) -> None:
        items = [item for item, _ in batch]
        try:
            results = await ledger.settle(self._pool, items, self._minimum)
        except Exception as exc:
            if dependency_unavailable(exc):
                self._defer(batch, exc)
                return
            if not isinstance(exc, (asyncpg.PostgresError, ValueError)):
                raise
            self._deferring = False
            # One bad item must not sink the others: settle them one by one.
            log.warning(
                "batch settlement failed, settling one by one",
                extra={"size": len(items), "error": repr(exc)},
            )
            await self._settle_each(batch)
            return
        if self._deferring:
            self._deferring = False
            log.warning("settlements commit again", extra={"size": len(items)})
        for (item, future), result in zip(batch, results, strict=True):
            future.set_result(result)
            self._after(item, result)

    def _defer(
        self, batch: list[tuple[Settlement, asyncio.Future[SettleResult]]], exc: Exception
    ) -> None:
        """Nothing committed, and nothing is wrong with us: each caller is told the database
        is unavailable, and settles again once it is back (the proxy, on its checkpoint tick)."""
        if not self._deferring:
            self._deferring = True
            log.warning(
                "settlements deferred: the database is unavailable",
                extra={"size": len(batch), "error": repr(exc)},
            )
        for _, future in batch:
            if not future.done():
                error = DependencyUnavailable("settlement not committed: database unavailable")
                error.__cause__ = exc
                future.set_exception(error)

    async def _settle_each(
        self, batch: list[tuple[Settlement, asyncio.Future[SettleResult]]]
    ) -> None:
        for item, future in batch:
            try:
                (result,) = await ledger.settle(self._pool, [item], self._minimum)
            except Exception as exc:
                if dependency_unavailable(exc):
                    self._defer(batch, exc)  # the ones not settled yet
                    return
                if not isinstance(exc, asyncpg.PostgresError):
                    raise
                log.error(
                    "settlement refused by the database",
                    extra={"request_id": item.request_id, "error": repr(exc)},
                )
                future.set_exception(exc)
                continue
            future.set_result(result)
            self._after(item, result)

    def _after(self, item: Settlement, result: SettleResult) -> None:
        balance = result.balance_micros
        if balance is None:
            return
        if result.paused:
            log.warning(
                "balance below minimum: instances paused",
                extra={
                    "user_id": result.user_id,
                    "balance_micros": balance,
                    "paused": result.paused,
                },
            )
            if self._notify is not None:
                self._notify(BalanceDepleted(result.user_id, balance, result.paused))
        # This very debit crossed the low-balance line: warn (once per top-up cycle, the
        # notifier's period), not on every request below it.
        if self._notify is not None and balance < self._low <= balance + item.cost_micros:
            self._notify(LowBalance(result.user_id, balance))
        if self._notify is not None and result.auto_topup_micros:
            self._notify(AutoTopupDue(result.user_id, balance, result.auto_topup_micros))
