"""The proxy actor: the request's path through the proxy, and the state those requests share.

Each proxied request runs in its own aiohttp handler task (`serve`); the actor is the owner of the
state those tasks share, not a queue they wait in. Its mailbox only carries its own timer ticks:
the checkpoint of in-flight streams (for crash recovery), handing over again the settlements
billing could not take, and lease upkeep.

A request's life (`serve`): authenticate the instance (proxy/instances.py) -> check its limits
(proxy/limits.py) -> price its worst case (proxy/apis.py) and hold it against this daemon's lease
on the user's balance (admission, in memory: proxy/leases.py) -> write its record into this
daemon's in-flight journal (proxy/journal.py) -> forward with our master key and relay the answer
while metering it (proxy/relay.py) -> price what was used and hand the settlement to billing, the
ledger's one writer (`_finish_request`, proxy/settlement.py) -> clear its journal slot once that
committed. Requests still in flight at a checkpoint are also recorded in the database
(proxy/records.py), for recovery from another host. Refusals a person should read are answered
as the assistant's reply (proxy/notices.py); the free endpoints are proxy/catalog.py's.

A database outage is ridden out: admission runs from the leases held in memory and the journal is
on local disk, so what fits in a lease is still served, by instances authenticated from their
cached copies; what needs the database (a lease grow, an instance not cached, seeding its limits)
is refused with 503 and retry-after. Settlements wait, handed over again on every checkpoint
tick, and commit once it is back.

Why one module of ~500 lines: `serve`, `_finish_request` and `_checkpoint` are the three moments
of one request and share its InFlight entry, its journal slot and its lease; split, each would
reach into the others' state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import asyncpg
import orjson
import yarl
from aiohttp import web

from blitzclawd.config import (
    Secrets,
    Settings,
    billing_minimum_micros,
    fee_table,
    model_prices,
    usd_to_micros,
)
from blitzclawd.metering.pricing import ModelPrice, PriceTable, Usage, estimate_input_tokens
from blitzclawd.metering.usage import warn_once
from blitzclawd.metrics import Metrics
from blitzclawd.proxy import notices, records, relay
from blitzclawd.proxy.apis import (
    ANTHROPIC_MESSAGES,
    OPENAI_CHAT,
    OPENAI_RESPONSES,
    ApiSpec,
    Meter,
    Policy,
    Worst,
    assess,
    priced_request,
)
from blitzclawd.proxy.catalog import Catalog
from blitzclawd.proxy.errors import PROXY_REQUEST_ID, ProxyError
from blitzclawd.proxy.instances import InstanceAuth, InstanceCache, database_unavailable
from blitzclawd.proxy.journal import InflightJournal, JournalRecord
from blitzclawd.proxy.leases import InsufficientBalance, LeaseBook
from blitzclawd.proxy.limits import LimitTracker, usage_window
from blitzclawd.proxy.records import RecordWriter
from blitzclawd.proxy.settlement import SettlementHandoff, Settler, database_trouble
from blitzclawd.runtime.actor import Actor
from blitzclawd.runtime.messages import Settlement, SettleResult, Tick
from blitzclawd.runtime.outage import dependency_unavailable

log = logging.getLogger("blitzclawd.proxy")


@dataclass(slots=True)
class InFlight:
    record: JournalRecord
    slot: int  # its journal slot, cleared once its settlement committed
    price: ModelPrice
    meter: Meter | None
    input_estimate: int
    worst: Worst  # what admission reserved for: its tier and long-context terms price the usage
    # Its database record, once a checkpoint found it still in flight: written (True) or not.
    written: asyncio.Future[bool] | None = None
    checkpointed: int = 0  # the cost so far at the last checkpoint
    recorded: int = 0  # ... as the database record has it

    @property
    def request_id(self) -> str:
        return self.record.request_id

    @property
    def user_id(self) -> str:
        return self.record.user_id

    @property
    def reserved(self) -> int:  # the worst case held against the lease
        return self.record.amount_micros


class ProxyActor(Actor):
    def __init__(
        self,
        settings: Settings,
        secrets: Secrets,
        *,
        pool: asyncpg.Pool,
        admission_pool: asyncpg.Pool,
        daemon_id: str,
        journal: InflightJournal,
        metrics: Metrics | None = None,
        billing: Callable[[], Settler | None] | None = None,
    ) -> None:
        super().__init__("proxy")
        self._settings = settings
        self._failing_steps: set[str] = set()  # background steps failing since they last worked
        self._pool = pool
        # Admission and checkpoints commit without waiting for the WAL flush: losing one to a
        # database crash only loses a hold (settlement tolerates a missing reservation). Money
        # moves only in settlements, which commit durably.
        self._admission_pool = admission_pool
        self._daemon_id = daemon_id
        pricing = settings.pricing
        self.prices = PriceTable(
            model_prices(pricing), markup=pricing.markup, fees=fee_table(pricing)
        )
        self._policy = Policy(
            pricing.server_tool_default_max_uses,
            pricing.openai_default_tiers,
            frozenset(pricing.allow_unpriced),
        )
        self._minimum = billing_minimum_micros(settings)
        self._topup_url = settings.notify.app_url.rstrip("/") + "/dashboard/topup"
        self.leases = LeaseBook(
            pool,
            daemon_id,
            floor_micros=self._minimum,
            headroom_micros=usd_to_micros(
                "lease_headroom_usd", settings.billing.lease_headroom_usd
            ),
        )
        self._records = RecordWriter(admission_pool, daemon_id)
        self._journal = journal
        self.metrics = metrics or Metrics()
        # What users pay per micro-USD of list price: cost = charged / markup.
        self._list_share = 1e-6 / float(self.prices.markup)
        self.metrics.inflight.set_function(lambda: len(self.inflight))
        self.metrics.journal_slots.set_function(lambda: self._journal.in_use)
        # request id -> (journal slot, user id), until its settlement committed
        self._slots: dict[str, tuple[int, str]] = {}
        self._keys = {
            "anthropic": secrets.get("anthropic_api_key"),
            "openai": secrets.get("openai_api_key"),
        }
        bases = {
            "anthropic": settings.upstream.anthropic_url.rstrip("/"),
            "openai": settings.upstream.openai_url.rstrip("/"),
        }
        # Parsed once per endpoint, not per request.
        self._urls = {
            api.name: yarl.URL(bases[api.provider] + api.path)
            for api in (ANTHROPIC_MESSAGES, OPENAI_CHAT, OPENAI_RESPONSES)
        }
        self.instances = InstanceCache(pool, self.leases, failing=self._failing, works=self._works)
        self.catalog = Catalog(
            self.instances,
            self.prices,
            anthropic_key=self._keys["anthropic"],
            anthropic_url=bases["anthropic"],
            count_tokens_per_minute=settings.limits.count_tokens_per_minute,
            session=lambda: self._session,
        )
        # The free endpoints (ProxyHandler): the catalog's.
        self.count_tokens = self.catalog.count_tokens
        self.models = self.catalog.models
        self.model = self.catalog.model
        self.limits = LimitTracker(self._seed_limits)
        self.inflight: dict[str, InFlight] = {}
        self.settlements = SettlementHandoff(
            billing or (lambda: None),
            admission_pool,
            settled=self._after_settle,
            failing=self._failing,
            works=self._works,
        )
        self._session: aiohttp.ClientSession | None = None
        self.metrics.leases_held.set_function(lambda: self.leases.held_micros() / 1e6)
        self.metrics.settlements_pending.set_function(
            lambda: len(self.settlements.pending) + len(self.settlements.waiting)
        )
        refused = self.metrics.refusals
        self._refused = {
            reason: refused.labels(reason)
            for reason in (
                "messages_per_hour",
                "tokens_per_day",
                "paused",
                "insufficient_balance",
                "journal_full",
            )
        }

    # -- lifecycle -------------------------------------------------------------------------------

    async def on_start(self) -> None:
        self._session = relay.open_session(self._settings.upstream)
        await self.instances.listen()
        self.every(self._settings.billing.checkpoint_interval, "checkpoint")

    async def on_stop(self) -> None:
        try:
            # The listeners have drained: let their settlements commit.
            await self.settlements.drain(30)
            await self._checkpoint()
            await self._records.close()
            await self.settlements.retry()
            # Whatever is still unsettled is charged by recovery from its record. After a
            # crash the leases stay: requests of this daemon may still be running, and the
            # next proxy actor (same daemon) grows on top of them.
            if self.state != "crashed":
                # Not the leases of users with requests not settled (in flight, settling, or
                # failed): the journal charges them at the next start; until then their money
                # stays held.
                await self.leases.release_all(keep={user for _, user in self._slots.values()})
        finally:
            await self.instances.unlisten()
            await self.instances.release_lost_listener()
            if self._session is not None:
                await self._session.close()
            log.info("proxy stopped", extra={"unsettled": len(self.settlements.waiting)})

    @property
    def idle(self) -> bool:
        """Nothing in flight, settling, or waiting to be settled again."""
        return not self.inflight and self.settlements.idle

    async def handle(self, message: object) -> None:
        if isinstance(message, Tick) and message.timer == "checkpoint":
            if not self.instances.listening:
                await self.instances.release_lost_listener()
                await self.instances.listen()
            await self._checkpoint()
            await self.settlements.retry()
            try:
                await self.leases.release_idle(self._settings.billing.lease_idle_seconds)
                await self.leases.reconcile()
            except Exception as exc:
                if not database_trouble(exc):
                    raise
                self._failing("lease upkeep", exc)
            else:
                self._works("lease upkeep")

    def _failing(self, step: str, exc: BaseException | None, **extra: object) -> None:
        """A background step failed on the database: said once, not on every tick it retries."""
        level = logging.DEBUG if step in self._failing_steps else logging.WARNING
        self._failing_steps.add(step)
        if exc is not None:
            extra["error"] = repr(exc)
        log.log(level, "%s failed; retrying every tick", step, extra=extra)

    def _works(self, step: str) -> None:
        if step in self._failing_steps:
            self._failing_steps.discard(step)
            log.warning("%s works again", step)

    # -- the hot path ----------------------------------------------------------------------------

    async def serve(self, request: web.Request, api: ApiSpec) -> web.StreamResponse:
        started = time.perf_counter()
        request_id = request[PROXY_REQUEST_ID]
        inst = await self.instances.authenticate(request)
        raw = await request.read()
        body, model, price, worst = self._parse(raw, api, request.headers)
        stream = worst.stream
        if inst.status != "active":  # stopped, paused, ...: refused before anything else
            inst = await self.instances.active(inst)
            if inst.status == "paused":  # told in the chat, not as a 402 (proxy/notices.py)
                self._refused["paused"].inc()
                notice = notices.paused(inst.status_reason, self._topup_url)
                return self._notice(api, body, model, notice, request_id)
        hourly = _limit(inst.msgs_per_hour, self._settings.limits.messages_per_hour)
        daily = _limit(inst.tokens_per_day, self._settings.limits.tokens_per_day)
        limit_refusal = await self.limits.admit(inst.id, hourly, daily)
        if limit_refusal is not None:
            self._refused.get(limit_refusal.limit, self._refused["messages_per_hour"]).inc()
            # Told in the chat, not as a 429 its client would sleep on (proxy/notices.py).
            if limit_refusal.limit == "messages_per_hour":
                notice = notices.hourly_limit(hourly, limit_refusal.retry_after)
            else:
                notice = notices.daily_limit(daily, limit_refusal.retry_after)
            return self._notice(api, body, model, notice, request_id)
        key = self._keys[api.provider]
        if key is None:
            raise ProxyError(503, "api", f"the {api.provider} upstream is not configured")
        if worst.body is not None:  # we capped a server tool's uses: forward what we priced
            body, raw = worst.body, orjson.dumps(worst.body)
        # Likely; the reservation bounds the worst case.
        estimate = estimate_input_tokens(raw, worst.image_bytes, worst.image_tokens)
        amount = self.prices.reserve_micros(
            price,
            input_tokens_estimate=worst.input_bound,
            max_output_tokens=worst.max_output,
            tiers=worst.tiers,
            long_ok=worst.long_ok,
            passes=worst.passes,
            outputs=worst.outputs,
            audio=worst.audio,
            fee_micros=worst.fee_micros,
        )
        prompt_cost = self.prices.cost_micros(price, Usage(input_tokens=estimate))
        try:
            await self.leases.admit(inst.user_id, amount)
        except InsufficientBalance:
            self._refused["insufficient_balance"].inc()
            notice = notices.low_balance(amount, self._minimum, self._topup_url)
            return self._notice(api, body, model, notice, request_id)
        except Exception as exc:  # the lease must grow, and the database is not there
            if not dependency_unavailable(exc):
                raise
            raise database_unavailable(exc) from None
        record = JournalRecord(
            request_id, inst.user_id, inst.id, amount, min(prompt_cost, amount), api.name, model
        )
        slot = self._journal.add(record)  # before forwarding: nothing unrecorded goes upstream
        if slot is None:
            self._refused["journal_full"].inc()
            self.leases.finish(inst.user_id, amount, 0)
            raise ProxyError(
                503,
                "overloaded",
                "too many requests in flight on this proxy; retry shortly",
                headers={"retry-after": "1"},
            )
        self._slots[request_id] = (slot, inst.user_id)
        meter = api.meter() if stream else None
        flight = InFlight(record, slot, price, meter, estimate, worst)
        self.inflight[request_id] = flight
        outcome = relay.Outcome()
        try:
            # Chat streams carry usage only when asked: we ask, and hide the extra chunk again
            # from a client that did not.
            strip_usage = stream and api is OPENAI_CHAT and not relay.asked_usage(body)
            if strip_usage:
                raw = relay.with_usage_chunk(body)
            assert self._session is not None
            url = self._urls[api.name]
            return await relay.forward(
                self._session,
                url,
                request,
                api,
                raw,
                key.reveal(),
                meter,
                strip_usage,
                request_id,
                outcome,
            )
        finally:
            # Settled in the background: the client already has its whole answer, and its next
            # request on this keep-alive connection must not wait for our commit. Tracked, so a
            # stop waits for every settlement (and a cancelled handler still settles).
            self._finish_request(flight, inst, api, model, outcome, started)

    def _parse(
        self, raw: bytes, api: ApiSpec, headers: Any
    ) -> tuple[dict[str, Any], str, ModelPrice, Worst]:
        body, model, price = priced_request(raw, self.prices, api.provider)
        # Every fee it can incur priced, every multiplier and server-side read bounded, or a 400.
        worst = assess(api, body, raw, price, headers, self.prices, self._policy)
        return body, model, price, worst

    def _finish_request(
        self,
        flight: InFlight,
        inst: InstanceAuth,
        api: ApiSpec,
        model: str,
        outcome: relay.Outcome,
        started: float,
    ) -> None:
        """Bill a request that is over; its settlement commits in the background."""
        self.inflight.pop(flight.request_id, None)
        usage = outcome.usage
        if flight.meter is not None:
            # Reported usage when the stream completed; what was seen when it did not (never
            # zero when tokens were produced).
            usage = flight.meter.billable_usage(flight.input_estimate)
        if outcome.status != 200:
            usage = Usage()  # refused upstream or never reached it: nothing was used
        worst = flight.worst
        if usage.service_tier is not None and not self.prices.known_tier(
            flight.price, usage.service_tier
        ):
            warn_once(f"service_tier:{usage.service_tier}", "unpriced service tier reported")
        cost = self.prices.cost_micros(flight.price, usage, tier=worst.tier, long_ok=worst.long_ok)
        if cost > flight.reserved:
            # The worst case is meant to bound every cost: this one did not (an upstream
            # reporting more than it can bill, or a price the bound misses). The settlement
            # debits it all, but never below a zero balance (settle_usage, 0013).
            log.error(
                "a request cost more than its worst case",
                extra={
                    "request_id": flight.request_id,
                    "model": model,
                    "cost_micros": cost,
                    "reserved_micros": flight.reserved,
                },
            )
        # The lease gives up what was spent (the balance drops by it), at most what was held.
        consumed = min(cost, flight.reserved)
        # Should its settlement not commit, recovery charges this cost (a void: nothing): from
        # the journal, and from its database record if it has one (any daemon may recover that).
        self._journal.finish(flight.slot, cost)
        if flight.written is not None and flight.written.done() and flight.written.result():
            self.settlements.finished(flight.request_id, cost)
        self.leases.finish(flight.user_id, flight.reserved, consumed)
        item = Settlement(
            request_id=flight.request_id,
            user_id=inst.user_id,
            instance_id=inst.id,
            api=api.name,
            model=model,
            cost_micros=cost,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_write_5m_tokens=usage.cache_write_5m_tokens,
            cache_write_1h_tokens=usage.cache_write_1h_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            audio_input_tokens=usage.audio_input_tokens,
            audio_output_tokens=usage.audio_output_tokens,
            web_search_requests=usage.web_search_requests,
            web_fetch_requests=usage.web_fetch_requests,
            file_search_calls=usage.file_search_calls,
            service_tier=usage.service_tier,
            upstream_request_id=outcome.upstream_id,
            status_code=outcome.status,
            duration_ms=int((time.perf_counter() - started) * 1000),
            interrupted=outcome.interrupted,
            daemon_id=self._daemon_id,
            lease_micros=consumed,
        )
        if usage.total_tokens:
            self.limits.add_tokens(inst.id, usage.total_tokens)
        self._count(api.name, model, outcome.status, usage, cost, item.duration_ms)
        # The settlement deletes the request's database record (if a checkpoint wrote one):
        # never before it is written.
        self.settlements.hand_over(item, flight.written)

    def _count(
        self, api: str, model: str, status: int, usage: Usage, cost: int, duration_ms: int
    ) -> None:
        """The request in the operator's metrics: a few adds on cached label children."""
        m = self.metrics.model(api, model)
        m.request(status).inc()
        m.seconds.observe(duration_ms / 1000)
        if usage.total_tokens:
            tokens = m.tokens
            tokens["input"].inc(usage.input_tokens)
            tokens["output"].inc(usage.output_tokens)
            tokens["cache_read"].inc(usage.cache_read_tokens)
            tokens["cache_write"].inc(usage.cache_write_5m_tokens + usage.cache_write_1h_tokens)
            tokens["reasoning"].inc(usage.reasoning_tokens)
        if cost:
            m.charged.inc(cost / 1e6)
            m.cost.inc(cost * self._list_share)

    def _after_settle(self, item: Settlement, result: SettleResult) -> None:
        self.leases.settled(item.user_id, item.lease_micros, lease_found=result.lease_found)
        if result.paused:
            # Its instances are paused: the next request re-reads them and is refused.
            self.instances.forget_user(item.user_id)
        entry = self._slots.pop(item.request_id, None)
        if entry is not None:
            slot = entry[0]
            try:
                self._journal.remove(slot)  # committed: recovery must not charge it again
            except ValueError:  # the daemon closed its journal: settled all the same
                log.warning(
                    "settled after the journal closed", extra={"request_id": item.request_id}
                )

    # -- timers ----------------------------------------------------------------------------------

    async def _checkpoint(self) -> None:
        """For crash recovery: what each stream in flight has cost so far (in the journal and the
        database), and a database record of each request still in flight (the journal is only
        readable on this host)."""
        stale: list[InFlight] = []
        for flight in list(self.inflight.values()):
            if flight.meter is not None:
                cost = self.prices.cost_micros(
                    flight.price,
                    flight.meter.billable_usage(0),
                    tier=flight.worst.tier,
                    long_ok=flight.worst.long_ok,
                )
                cost = min(cost, flight.reserved)
                if cost != flight.checkpointed:
                    flight.checkpointed = cost
                    self._journal.seen(flight.slot, cost)
            written = flight.written
            if written is not None and written.done() and not written.result():
                written = flight.written = None  # that write failed: try again
            if written is None:
                flight.recorded = flight.checkpointed
                flight.written = self._records.add(
                    replace(flight.record, seen_micros=flight.checkpointed)
                )
            elif written.done() and flight.recorded != flight.checkpointed:
                stale.append(flight)
        try:  # for the host: a process crash needs none
            await asyncio.to_thread(self._journal.sync)
        except OSError as exc:
            log.warning("in-flight journal not synced to disk", extra={"error": repr(exc)})
        if not stale:
            return
        try:
            await records.update_seen(
                self._admission_pool,
                [f.request_id for f in stale],
                [f.checkpointed for f in stale],
            )
        except Exception as exc:
            if not database_trouble(exc):
                raise
            self._failing("checkpoint", exc)
        else:
            self._works("checkpoint")
            for flight in stale:
                flight.recorded = flight.checkpointed

    async def _seed_limits(self, instance_id: str) -> tuple[list[float], int]:
        try:
            return await usage_window(self._pool, instance_id)
        except Exception as exc:  # not seeded: the next request of this instance tries again
            if not dependency_unavailable(exc):
                raise
            raise database_unavailable(exc) from None

    def _notice(
        self, api: ApiSpec, body: dict[str, Any], model: str, notice: notices.Notice, rid: str
    ) -> web.Response:
        """A refusal told as the assistant's answer: not forwarded, not billed, not counted."""
        log.info("answered with a notice", extra={"reason": notice.reason, "model": model})
        return notices.respond(api, body, model, notice, rid)


def _limit(own: int | None, default: int) -> int:
    return default if own is None else own
