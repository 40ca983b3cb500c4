"""The proxy actor: owns upstream connections, prices, limits, and the requests in flight.

Each proxied request runs in its own aiohttp handler task (`serve`); the actor is the owner of the
state those tasks share, not a queue they wait in. Its mailbox only carries timer ticks: the
checkpoint of in-flight streams (for crash recovery) and the retry of settlements that could not
be committed at once.

A request's life: authenticate the instance -> check its limits -> hold the worst-case cost
against this daemon's lease on the user's balance (admission, in memory: blitzclawd.proxy.leases)
-> write its record into this daemon's in-flight journal (a memory-mapped file:
blitzclawd.proxy.journal) -> forward with our master key -> relay the answer chunk by chunk while
metering it -> settle the actual cost (billing actor, group commit) -> clear its journal slot once
that committed. Requests still in flight at a checkpoint are also recorded in the database
(blitzclawd.proxy.records), for recovery from another host.

Instances are cached; every change that matters to a proxy (status, secret, limits) is announced
by the database (NOTIFY blitzclaw_instances) and drops the cached copy at once.

A database outage is ridden out: admission runs from the leases held in memory and the journal is
on local disk, so what fits in a lease is still served, by instances authenticated from their
cached copies (kept past their TTL while the database cannot be asked); what needs the database
(a lease grow, an instance not cached, seeding its limits) is refused with 503 and retry-after.
Settlements wait in a queue, retried on every checkpoint tick, and commit once it is back.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import asyncpg
import orjson
import yarl
from aiohttp import web

from blitzclawd import credentials
from blitzclawd.config import (
    Secrets,
    Settings,
    billing_minimum_micros,
    fee_table,
    model_prices,
    usd_to_micros,
)
from blitzclawd.metering.pricing import ModelPrice, PriceTable, Usage, estimate_input_tokens
from blitzclawd.metering.sse import SSEParser
from blitzclawd.metering.usage import OpenAIChatStreamMeter, warn_once
from blitzclawd.proxy import notices
from blitzclawd.proxy.apis import (
    ANTHROPIC_MESSAGES,
    OPENAI_CHAT,
    OPENAI_RESPONSES,
    ApiSpec,
    Meter,
    Policy,
    Worst,
    assess,
)
from blitzclawd.proxy.connector import MostRecentFirstConnector
from blitzclawd.proxy.errors import PROXY_REQUEST_ID, PROXY_REQUEST_ID_HEADER, ProxyError
from blitzclawd.proxy.journal import InflightJournal, JournalRecord
from blitzclawd.proxy.leases import CHANNEL as LEASE_CHANNEL
from blitzclawd.proxy.leases import InsufficientBalance, LeaseBook
from blitzclawd.proxy.limits import LimitTracker
from blitzclawd.proxy.records import RecordWriter
from blitzclawd.proxy.settlement import SettlementHandoff, Settler, database_trouble
from blitzclawd.runtime.actor import Actor
from blitzclawd.runtime.messages import Settlement, SettleResult, Tick
from blitzclawd.runtime.outage import dependency_unavailable

log = logging.getLogger("blitzclawd.proxy")

INSTANCE_CACHE_TTL = 30.0  # s; a backstop: changes are announced (NOTIFY) and drop the copy
# While the database is unavailable a cached copy serves as it is: asked again at most this often
# (s), and a refresh that hangs (an unreachable host) holds its request at most REFRESH_WAIT s.
DB_RETRY_AFTER = 1.0
REFRESH_WAIT = 2.0
INSTANCE_CHANNEL = "blitzclaw_instances"
ERROR_BODY_MAX = 1 << 20
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"

# Request headers that never go upstream: hop-by-hop, our own credentials, the client's.
_DROP_REQUEST = frozenset(
    {
        "host",
        "content-length",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
        "authorization",
        "x-api-key",
        "cookie",
        "accept-encoding",
        "openai-organization",
        "openai-project",
        "x-blitzclaw-instance",
        "x-blitzclaw-secret",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "forwarded",
        "x-real-ip",
    }
)
# Response headers relayed to the client (request ids and rate limits are useful to SDKs).
_KEEP_RESPONSE = frozenset(
    {
        "content-type",
        "request-id",
        "x-request-id",
        "retry-after",
        "openai-processing-ms",
        "openai-version",
        "cache-control",
    }
)
_KEEP_RESPONSE_PREFIXES = ("anthropic-ratelimit-", "x-ratelimit-")
_ANTHROPIC_STREAM_ERROR = (
    b'event: error\ndata: {"type":"error","error":{"type":"api_error",'
    b'"message":"the upstream connection was lost"}}\n\n'
)


@dataclass(frozen=True, slots=True)
class InstanceAuth:
    id: str
    user_id: str
    secret_hash: bytes
    status: str
    use_own_api_key: bool
    msgs_per_hour: int | None
    tokens_per_day: int | None
    status_reason: str | None
    fetched_at: float


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


@dataclass(slots=True)
class _Outcome:
    """What one relay produced, for settlement."""

    usage: Usage = field(default_factory=Usage)
    status: int | None = None
    upstream_id: str | None = None
    interrupted: bool = False


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
        billing: Callable[[], Settler | None] | None = None,
    ) -> None:
        super().__init__("proxy")
        self._settings = settings
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
        # request id -> (journal slot, user id), until its settlement committed
        self._slots: dict[str, tuple[int, str]] = {}
        self._listener: asyncpg.pool.PoolConnectionProxy | None = None
        self._lost_listener: asyncpg.pool.PoolConnectionProxy | None = None
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
        self._count_tokens_url = yarl.URL(bases["anthropic"] + COUNT_TOKENS_PATH)
        self._count_calls: dict[str, collections.deque[float]] = {}
        self._instances: dict[str, InstanceAuth] = {}
        # Copies fetched before this (monotonic) time are re-read before use: announcements may
        # have been missed (the listener was down). While the database is down they still serve.
        self._stale_before = 0.0
        self._db_failed_at = -DB_RETRY_AFTER  # when a refresh last found the database down
        self._announcements = 0  # instance changes heard so far (see _instance)
        self.limits = LimitTracker(self._seed_limits)
        self.inflight: dict[str, InFlight] = {}
        self._failing_steps: set[str] = set()  # background steps failing since they last worked
        self.settlements = SettlementHandoff(
            billing or (lambda: None),
            admission_pool,
            settled=self._after_settle,
            failing=self._failing,
            works=self._works,
        )
        self._session: aiohttp.ClientSession | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def on_start(self) -> None:
        up = self._settings.upstream
        self._session = aiohttp.ClientSession(
            connector=MostRecentFirstConnector(
                limit=up.max_connections, limit_per_host=0, keepalive_timeout=60, ttl_dns_cache=300
            ),
            timeout=aiohttp.ClientTimeout(
                total=None, connect=up.connect_timeout, sock_read=up.read_timeout
            ),
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
            # One session serves every tenant: a cookie an upstream sets for one request must
            # never ride along on another's (and cookie handling costs every request).
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        await self._listen()
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
            await self._unlisten()
            await self._release_lost_listener()
            if self._session is not None:
                await self._session.close()
            log.info("proxy stopped", extra={"unsettled": len(self.settlements.waiting)})

    @property
    def idle(self) -> bool:
        """Nothing in flight, settling, or waiting to be settled again."""
        return not self.inflight and self.settlements.idle

    async def handle(self, message: object) -> None:
        if isinstance(message, Tick) and message.timer == "checkpoint":
            if self._listener is None:
                await self._release_lost_listener()
                await self._listen()
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

    # -- instance announcements ------------------------------------------------------------------

    async def _listen(self) -> None:
        """Hold one connection that LISTENs for instance changes; on loss, re-read every copy."""
        try:
            conn = await self._pool.acquire()
        except Exception as exc:
            if not database_trouble(exc):
                raise
            self._failing("listening for instance changes", exc)
            return
        try:
            await conn.add_listener(INSTANCE_CHANNEL, self._announced)
            await conn.add_listener(LEASE_CHANNEL, self._lease_note)
        except BaseException as exc:
            await self._pool.release(conn)
            if not isinstance(exc, Exception) or not database_trouble(exc):
                raise
            self._failing("listening for instance changes", exc)
            return
        self._works("listening for instance changes")
        conn.add_termination_listener(self._listener_lost)
        self._listener = conn
        self.leases.listening(True)
        self._stale_before = time.monotonic()  # anything announced before now was not heard

    async def _unlisten(self) -> None:
        conn, self._listener = self._listener, None
        if conn is None:
            return
        self.leases.listening(False)
        try:
            conn.remove_termination_listener(self._listener_lost)
            await conn.remove_listener(INSTANCE_CHANNEL, self._announced)
            await conn.remove_listener(LEASE_CHANNEL, self._lease_note)
        finally:
            await self._pool.release(conn)

    def _announced(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self._announcements += 1
        self._instances.pop(payload, None)

    async def _release_lost_listener(self) -> None:
        """Give a listener connection that died back to the pool, which replaces it."""
        if self._lost_listener is not None:
            lost, self._lost_listener = self._lost_listener, None
            try:
                await self._pool.release(lost)
            except Exception as exc:  # a dead connection: the pool replaces it all the same
                if not database_trouble(exc):
                    raise

    def _lease_note(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self.leases.notified(payload)

    def _listener_lost(self, _conn: object) -> None:
        log.warning("lost the instance-change listener; re-listening on the next tick")
        self._lost_listener, self._listener = self._listener, None
        self.leases.listening(False)
        self._announcements += 1
        # Re-read every copy before use; while the database is down, the copies still serve.
        self._stale_before = time.monotonic()

    def forget_user(self, user_id: str) -> None:
        for instance_id, inst in list(self._instances.items()):
            if inst.user_id == user_id:
                del self._instances[instance_id]

    # -- the hot path ----------------------------------------------------------------------------

    async def serve(self, request: web.Request, api: ApiSpec) -> web.StreamResponse:
        started = time.perf_counter()
        request_id = request[PROXY_REQUEST_ID]
        inst = await self._authenticate(request)
        raw = await request.read()
        body, model, price, worst = self._parse(raw, api, request.headers)
        stream = worst.stream
        hourly = _limit(inst.msgs_per_hour, self._settings.limits.messages_per_hour)
        daily = _limit(inst.tokens_per_day, self._settings.limits.tokens_per_day)
        limit_refusal = await self.limits.admit(inst.id, hourly, daily)
        if limit_refusal is not None:
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
        if inst.status != "active":
            inst = await self._active(inst)
            if inst.status == "paused":  # told in the chat, not as a 402 (proxy/notices.py)
                notice = notices.paused(inst.status_reason, self._topup_url)
                return self._notice(api, body, model, notice, request_id)
        try:
            await self.leases.admit(inst.user_id, amount)
        except InsufficientBalance:
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
        outcome = _Outcome()
        try:
            # Chat streams carry usage only when asked: we ask, and hide the extra chunk again
            # from a client that did not.
            strip_usage = stream and api is OPENAI_CHAT and not _asked_usage(body)
            if strip_usage:
                raw = _with_usage_chunk(body)
            return await self._forward(
                request, api, raw, key, meter, strip_usage, request_id, outcome
            )
        finally:
            # Settled in the background: the client already has its whole answer, and its next
            # request on this keep-alive connection must not wait for our commit. Tracked, so a
            # stop waits for every settlement (and a cancelled handler still settles).
            self._finish_request(flight, inst, api, model, outcome, started)

    async def _authenticate(self, request: web.Request) -> InstanceAuth:
        found = credentials.from_headers(request.headers)
        if found is None:
            raise ProxyError(
                401, "authentication", "missing or malformed BlitzClaw instance credentials"
            )
        instance_id, secret = found
        inst = await self._instance(str(instance_id))
        if inst is not None and not credentials.verify_secret(secret, inst.secret_hash):
            # Every deploy rotates the instance's secret: a cached hash may be the old one.
            inst = await self._instance(str(instance_id), fresh=True)
        if inst is None or not credentials.verify_secret(secret, inst.secret_hash):
            raise ProxyError(401, "authentication", "invalid BlitzClaw instance credentials")
        if inst.status == "deleted":
            raise ProxyError(404, "not_found", "this instance has been deleted")
        if inst.use_own_api_key:
            raise ProxyError(
                403,
                "permission",
                "this instance uses its own API key and calls the provider directly",
            )
        return inst

    async def _instance(self, instance_id: str, *, fresh: bool = False) -> InstanceAuth | None:
        now = time.monotonic()
        cached = self._instances.get(instance_id)
        if (
            cached is not None
            and not fresh
            and now - cached.fetched_at < INSTANCE_CACHE_TTL
            and cached.fetched_at >= self._stale_before
        ):
            return cached
        fallback = cached if not fresh else None  # what serves if the database cannot answer
        if fallback is not None and now - self._db_failed_at < DB_RETRY_AFTER:
            return fallback
        heard = self._announcements
        try:
            async with asyncio.timeout(REFRESH_WAIT if fallback is not None else None):
                row = await self._pool.fetchrow(
                    "SELECT id::text, user_id::text, secret_hash, status, use_own_api_key, "
                    "msgs_per_hour, tokens_per_day, status_reason FROM instances WHERE id = $1",
                    uuid.UUID(instance_id),
                )
        except Exception as exc:
            if not dependency_unavailable(exc):  # (a timeout is: a hung connection attempt)
                raise
            self._db_failed_at = time.monotonic()
            if fallback is not None:
                return fallback  # the database cannot say otherwise: the copy we have serves
            raise database_unavailable(exc) from None
        if row is None:
            self._instances.pop(instance_id, None)
            return None
        inst = InstanceAuth(*row, fetched_at=now)
        # A change announced while we read may be newer than our row: use it, do not keep it.
        if self._announcements == heard:
            self._instances[instance_id] = inst
        return inst

    def _parse(
        self, raw: bytes, api: ApiSpec, headers: Any
    ) -> tuple[dict[str, Any], str, ModelPrice, Worst]:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ProxyError(400, "invalid_request", "the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ProxyError(400, "invalid_request", "the request body must be a JSON object")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise ProxyError(400, "invalid_request", "model: a model name is required")
        price = self.prices.get(model)
        if price is None or price.api != api.provider:
            raise ProxyError(404, "not_found", f"model: {model!r} is not available here")
        # Every fee it can incur priced, every multiplier and server-side read bounded, or a 400.
        worst = assess(api, body, raw, price, headers, self.prices, self._policy)
        return body, model, price, worst

    async def _active(self, inst: InstanceAuth) -> InstanceAuth:
        """The instance, if it is active after all (the cached copy may be stale) or paused;
        else refuse."""
        fresh = await self._instance(inst.id, fresh=True)
        status = fresh.status if fresh else "deleted"
        if fresh is not None and status == "active":
            return fresh
        if fresh is not None and status == "paused":
            return fresh  # serve() answers with a notice to top up
        if status == "deleted":
            raise ProxyError(404, "not_found", "this instance has been deleted")
        raise ProxyError(403, "permission", f"this instance is {status}")

    async def _forward(
        self,
        request: web.Request,
        api: ApiSpec,
        raw: bytes,
        key: Any,
        meter: Meter | None,
        strip_usage: bool,
        request_id: str,
        outcome: _Outcome,
    ) -> web.StreamResponse:
        assert self._session is not None
        headers = _upstream_headers(request, api.provider, key.reveal())
        url = self._urls[api.name]
        if request.query_string:
            url = yarl.URL(str(url) + "?" + request.query_string)
        try:
            upstream = await self._session.post(url, data=raw, headers=headers)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning(
                "upstream unreachable",
                extra={"upstream": api.provider, "error": type(exc).__name__},
            )
            raise ProxyError(502, "api", f"the {api.provider} upstream is unreachable") from None
        try:
            outcome.status = upstream.status
            outcome.upstream_id = upstream.headers.get(api.upstream_id_header)
            out_headers = _client_headers(upstream.headers, request_id)
            if upstream.status != 200:
                # The upstream refused: its status and error body reach the client unchanged,
                # and nothing was used (the reservation is voided).
                body = await upstream.content.read(ERROR_BODY_MAX)
                if _our_key_refused(upstream.status, body):
                    # Our master key's fault, not the instance's: relayed as is, OpenClaw would
                    # disable the instance's provider key (auth: up to 1 h; billing: up to 24 h)
                    # and stay silent after we fixed ours. A 502 is a short retry for it.
                    log.error(
                        "the upstream refused our master key",
                        extra={"upstream": api.provider, "status": upstream.status},
                    )
                    raise ProxyError(
                        502, "api", f"the {api.provider} upstream is unavailable; retry shortly"
                    )
                return web.Response(body=body, status=upstream.status, headers=out_headers)
            if meter is None:
                return await self._relay_whole(request, api, upstream, out_headers, outcome)
            return await self._relay_stream(
                request, api, upstream, out_headers, meter, strip_usage, outcome
            )
        finally:
            upstream.release()

    async def _relay_whole(
        self,
        request: web.Request,
        api: ApiSpec,
        upstream: aiohttp.ClientResponse,
        headers: dict[str, str],
        outcome: _Outcome,
    ) -> web.StreamResponse:
        try:
            body = await upstream.read()
        except (aiohttp.ClientError, TimeoutError):
            outcome.interrupted = True
            raise ProxyError(502, "api", "the upstream connection failed") from None
        try:
            outcome.usage = api.usage_of(orjson.loads(body))
        except (orjson.JSONDecodeError, TypeError, AttributeError):
            log.warning("upstream answer without readable usage", extra={"api": api.name})
        response = web.Response(body=body, status=200, headers=headers)
        try:
            await response.prepare(request)
            await response.write_eof()
        except ConnectionResetError:
            outcome.interrupted = True  # the client left; the upstream still did the work
        return response

    async def _relay_stream(
        self,
        request: web.Request,
        api: ApiSpec,
        upstream: aiohttp.ClientResponse,
        headers: dict[str, str],
        meter: Meter,
        strip_usage: bool,
        outcome: _Outcome,
    ) -> web.StreamResponse:
        """Relay chunk by chunk as they arrive, metering every event on the way."""
        response = web.StreamResponse(status=200, headers=headers)
        parser = SSEParser()
        try:
            await response.prepare(request)
        except ConnectionResetError:  # the client left before the first byte
            outcome.interrupted = True
            return response
        client_gone = False
        try:
            async for chunk in upstream.content.iter_any():
                events = parser.feed(chunk)
                for event, data in events:
                    meter.feed(event, data)
                if client_gone:
                    continue
                if strip_usage:  # rebuilt from whole events (chat streams are data lines only)
                    chunk = b"".join(
                        b"data: " + _without_usage(data) + b"\n\n"
                        for _, data in events
                        if not OpenAIChatStreamMeter.is_usage_only_chunk(data)
                    )
                    if not chunk:
                        continue
                try:
                    await response.write(chunk)
                except ConnectionResetError:
                    # The client left: stop relaying and bill what was produced.
                    client_gone = True
                    outcome.interrupted = True
                    break
        except (aiohttp.ClientError, TimeoutError) as exc:
            outcome.interrupted = True
            log.warning(
                "upstream stream broke", extra={"api": api.name, "error": type(exc).__name__}
            )
            if api.error_style == "anthropic" and not client_gone:
                try:  # tell an Anthropic SDK the way the API itself would
                    await response.write(_ANTHROPIC_STREAM_ERROR)
                except ConnectionResetError:
                    client_gone = True
        if not client_gone:
            try:
                await response.write_eof()
            except ConnectionResetError:
                outcome.interrupted = True
        if not getattr(meter, "completed", True):
            outcome.interrupted = True  # e.g. an `event: error` arrived mid-stream
        return response

    def _finish_request(
        self,
        flight: InFlight,
        inst: InstanceAuth,
        api: ApiSpec,
        model: str,
        outcome: _Outcome,
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
        # The settlement deletes the request's database record (if a checkpoint wrote one):
        # never before it is written.
        self.settlements.hand_over(item, flight.written)

    def _after_settle(self, item: Settlement, result: SettleResult) -> None:
        self.leases.settled(item.user_id, item.lease_micros, lease_found=result.lease_found)
        if result.paused:
            self.forget_user(item.user_id)  # its instances are paused: refuse the next request
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
            await self._admission_pool.execute(
                # Not a finished one: its final cost (marked meanwhile) is what recovery charges.
                """UPDATE reservations r SET seen_micros = LEAST(v.cost, r.amount_micros)
                   FROM unnest($1::uuid[], $2::bigint[]) AS v(id, cost)
                   WHERE r.id = v.id AND NOT r.finished""",
                [uuid.UUID(f.request_id) for f in stale],
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
            return await self._fetch_limits(instance_id)
        except Exception as exc:  # not seeded: the next request of this instance tries again
            if not dependency_unavailable(exc):
                raise
            raise database_unavailable(exc) from None

    async def _fetch_limits(self, instance_id: str) -> tuple[list[float], int]:
        row = await self._pool.fetchrow(
            """SELECT
                 array(SELECT extract(epoch FROM created_at)::float8 FROM usage_logs
                       WHERE instance_id = $1 AND created_at > now() - interval '1 hour'),
                 coalesce((SELECT sum(input_tokens + output_tokens + cache_write_5m_tokens
                                      + cache_write_1h_tokens + cache_read_tokens)
                           FROM usage_logs WHERE instance_id = $1
                             AND created_at >= date_trunc('day', now() AT TIME ZONE 'UTC')
                                               AT TIME ZONE 'UTC'), 0)::bigint""",
            uuid.UUID(instance_id),
        )
        return list(row[0]), int(row[1])

    def _notice(
        self, api: ApiSpec, body: dict[str, Any], model: str, notice: notices.Notice, rid: str
    ) -> web.Response:
        """A refusal told as the assistant's answer: not forwarded, not billed, not counted."""
        log.info("answered with a notice", extra={"reason": notice.reason, "model": model})
        return notices.respond(api, body, model, notice, rid)

    # -- /v1/messages/count_tokens -------------------------------------------------------------

    async def count_tokens(self, request: web.Request) -> web.Response:
        """Forwarded to Anthropic's free token counter: authenticated, never billed, limited
        per instance (`limits.count_tokens_per_minute`) so it cannot be used to flood our key."""
        inst = await self._authenticate(request)
        if inst.status != "active":
            # Counting is free: a paused instance may count (a 402 here would make OpenClaw
            # disable its key); a stopped or deleted one may not.
            await self._active(inst)
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ProxyError(400, "invalid_request", "the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ProxyError(400, "invalid_request", "the request body must be a JSON object")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise ProxyError(400, "invalid_request", "model: a model name is required")
        price = self.prices.get(model)
        if price is None or price.api != "anthropic":
            raise ProxyError(404, "not_found", f"model: {model!r} is not available here")
        self._count_call(inst.id)
        key = self._keys["anthropic"]
        if key is None:
            raise ProxyError(503, "api", "the anthropic upstream is not configured")
        assert self._session is not None
        headers = _upstream_headers(request, "anthropic", key.reveal())
        try:
            async with self._session.post(
                self._count_tokens_url, data=raw, headers=headers
            ) as upstream:
                answer = await upstream.content.read(ERROR_BODY_MAX)
                status = upstream.status
                out = _client_headers(upstream.headers, request[PROXY_REQUEST_ID])
        except (aiohttp.ClientError, TimeoutError):
            raise ProxyError(502, "api", "the anthropic upstream is unreachable") from None
        if _our_key_refused(status, answer):
            log.error("the upstream refused our master key", extra={"status": status})
            raise ProxyError(502, "api", "the anthropic upstream is unavailable; retry shortly")
        return web.Response(body=answer, status=status, headers=out)

    def _count_call(self, instance_id: str) -> None:
        limit = self._settings.limits.count_tokens_per_minute
        if not limit:
            return
        now = time.monotonic()
        calls = self._count_calls.setdefault(instance_id, collections.deque())
        while calls and calls[0] <= now - 60:
            calls.popleft()
        if len(calls) >= limit:
            # A counter is a helper, not a turn: its caller can go on without it, so it is told
            # to stop at once (x-should-retry: false) rather than sleep a retry-after.
            raise ProxyError(
                429,
                "rate_limit",
                f"token counting is limited to {limit} calls a minute per instance; "
                "try again in a minute",
                headers={"x-should-retry": "false"},
            )
        calls.append(now)
        if len(self._count_calls) > 100_000:  # bounded: forget instances idle for a minute
            for iid in [i for i, c in self._count_calls.items() if not c or c[-1] <= now - 60]:
                del self._count_calls[iid]

    # -- /v1/models --------------------------------------------------------------------------------

    async def models(self, request: web.Request) -> web.Response:
        await self._authenticate(request)
        anthropic_style = _anthropic_style(request)
        data = [_model_entry(p, anthropic_style) for p in self.prices.models()]
        if anthropic_style:
            body: dict[str, Any] = {
                "data": data,
                "has_more": False,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        else:
            body = {"object": "list", "data": data}
        return web.json_response(body, dumps=lambda v: orjson.dumps(v).decode())

    async def model(self, request: web.Request) -> web.Response:
        """GET /v1/models/{model_id}: one entry of the price table, in the caller's style."""
        await self._authenticate(request)
        model_id = request.match_info["model_id"]
        price = self.prices.get(model_id)
        if price is None:
            raise ProxyError(404, "not_found", f"model: {model_id!r} is not available here")
        entry = _model_entry(price, _anthropic_style(request))
        return web.json_response(entry, dumps=lambda v: orjson.dumps(v).decode())


def _anthropic_style(request: web.Request) -> bool:
    return "anthropic-version" in request.headers or "x-api-key" in request.headers


def _model_entry(price: ModelPrice, anthropic_style: bool) -> dict[str, Any]:
    if anthropic_style:
        return {
            "type": "model",
            "id": price.model,
            "display_name": price.model,
            "created_at": "2025-01-01T00:00:00Z",
        }
    return {"id": price.model, "object": "model", "created": 0, "owned_by": price.api}


def database_unavailable(cause: BaseException) -> ProxyError:
    """The refusal of a request that needs the database while it is unavailable."""
    log.info("request refused: the database is unavailable", extra={"error": type(cause).__name__})
    return ProxyError(
        503,
        "overloaded",
        "the BlitzClaw database is briefly unavailable; retry shortly",
        headers={"retry-after": "2"},
    )


# What an upstream says when our own account is the problem (a bad or revoked key, no credit
# left with the provider), not the instance's request.
_OUR_BILLING = (b"credit balance is too low", b"insufficient_quota", b"billing_hard_limit")


def _our_key_refused(status: int, body: bytes) -> bool:
    if status in (401, 403):  # the upstream only ever sees our key
        return True
    return status in (400, 402, 429) and any(m in body for m in _OUR_BILLING)


def _limit(own: int | None, default: int) -> int:
    return default if own is None else own


def _upstream_headers(request: web.Request, provider: str, key: str) -> dict[str, str]:
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP_REQUEST}
    headers["Accept-Encoding"] = "identity"  # we must read the stream to meter it
    if provider == "anthropic":
        headers["x-api-key"] = key
    else:
        headers["Authorization"] = f"Bearer {key}"
    return headers


def _client_headers(upstream: Any, request_id: str) -> dict[str, str]:
    headers = {
        k: v
        for k, v in upstream.items()
        if k.lower() in _KEEP_RESPONSE or k.lower().startswith(_KEEP_RESPONSE_PREFIXES)
    }
    headers[PROXY_REQUEST_ID_HEADER] = request_id
    return headers


def _without_usage(data: bytes) -> bytes:
    """A chat chunk without the `"usage": null` that asking for usage adds to every chunk: OpenAI
    sends no usage key to a client that did not ask."""
    if b'"usage"' not in data:
        return data
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return data
    if type(obj) is not dict or "usage" not in obj or obj["usage"] is not None:
        return data
    del obj["usage"]
    return orjson.dumps(obj)


def _asked_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _with_usage_chunk(body: dict[str, Any]) -> bytes:
    """The chat request asking for its usage chunk, otherwise unchanged."""
    options = body.get("stream_options")
    merged = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return orjson.dumps({**body, "stream_options": merged})
