"""The daemon: database up, schema current, root supervisor started, listeners open.

Start order: PostgreSQL (embedded when no URL is configured) -> migrations -> pool -> actors ->
listeners, then READY=1. SIGTERM/SIGINT reverse it: STOPPING=1, listeners stop accepting and
drain, actors stop in reverse order, the pool closes, the embedded cluster stops.

A database outage is waited out, not escalated (see blitzclawd.runtime.outage): an external
PostgreSQL is someone else's to bring back; the embedded one is ours, and its keeper (the first
child) starts it again on the same port whenever its postmaster dies.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp
import asyncpg

from blitzclawd import sdnotify
from blitzclawd.actors.billing import BillingActor
from blitzclawd.actors.health_monitor import HealthMonitor
from blitzclawd.actors.heartbeat import Heartbeat
from blitzclawd.actors.janitor import Janitor
from blitzclawd.actors.notifier import NotifierActor
from blitzclawd.actors.pool_manager import PoolManager
from blitzclawd.actors.provisioner import Provisioner
from blitzclawd.actors.proxy import ProxyActor
from blitzclawd.auth.clerk import ClerkVerifier
from blitzclawd.auth.clerk_users import clerk_users
from blitzclawd.config import Secrets, Settings, billing_minimum_micros
from blitzclawd.db import pool as db_pool
from blitzclawd.db.embedded import EmbeddedPostgres, EmbeddedPostgresError
from blitzclawd.db.migrate import migrate
from blitzclawd.fleet.keys import public_key_line
from blitzclawd.http.app import make_api_app, make_proxy_app
from blitzclawd.http.context import DaemonContext
from blitzclawd.http.listener import HttpListener
from blitzclawd.providers.base import ServerProvider
from blitzclawd.providers.hetzner import HetznerProvider
from blitzclawd.proxy.journal import InflightJournal, journal_path
from blitzclawd.proxy.recovery import recover_orphaned_reservations
from blitzclawd.runtime.messages import JobsQueued
from blitzclawd.runtime.singleton import SingletonChild
from blitzclawd.runtime.supervisor import ChildSpec, StartFailed, Supervisor, backoff_delay

log = logging.getLogger("blitzclawd.daemon")

EXIT_OK = 0
EXIT_ESCALATED = 70  # EX_SOFTWARE: the restart window was exceeded; systemd restarts us
EXIT_START_FAILED = 69  # EX_UNAVAILABLE: a dependency (database, a port) is not there


@dataclass(frozen=True, slots=True)
class Database:
    dsn: str
    embedded: EmbeddedPostgres | None


async def open_database(settings: Settings, secrets: Secrets) -> Database:
    """The configured database, or a private cluster under the state directory."""
    url = secrets.get("database_url")
    if url is not None:
        return Database(url.reveal(), None)
    state = settings.state_path()
    # 0711: as root, the unprivileged PostgreSQL user must traverse it (not list it).
    state.mkdir(parents=True, exist_ok=True, mode=0o711)
    run_as = settings.database.embedded_user or None
    if os.geteuid() == 0 and run_as is not None:
        pwd.getpwnam(run_as)  # fail early with KeyError naming a user that does not exist
    embedded = EmbeddedPostgres(state / "postgres", run_as=run_as)
    log.info("starting embedded PostgreSQL", extra={"dir": str(state / "postgres")})
    return Database(await embedded.start(), embedded)


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


class Daemon:
    def __init__(
        self, settings: Settings, secrets: Secrets, *, extra_children: Sequence[ChildSpec] = ()
    ) -> None:
        self.settings = settings
        self.secrets = secrets
        self.daemon_id = str(uuid.uuid4())
        self._extra_children = tuple(extra_children)
        self._stop = asyncio.Event()
        self.supervisor: Supervisor | None = None
        self.context: DaemonContext | None = None
        self.ready = asyncio.Event()

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        db = await open_database(self.settings, self.secrets)
        try:
            return await self._run_on(db.dsn, db.embedded)
        finally:
            if db.embedded is not None:
                await db.embedded.stop()

    async def _run_on(self, dsn: str, embedded: EmbeddedPostgres | None = None) -> int:
        conn = await db_pool.connect(dsn)
        try:
            applied = await migrate(conn)
        finally:
            await conn.close()
        if applied:
            log.info("migrations applied", extra={"migrations": applied})
        cfg = self.settings.database
        pool = await db_pool.create_pool(dsn, min_size=cfg.pool_min, max_size=cfg.pool_max)
        admission_pool = await db_pool.create_pool(
            dsn, min_size=1, max_size=cfg.pool_max, async_commit=True
        )
        journal: InflightJournal | None = None
        try:
            # The daemon's, not the proxy actor's: a restarted proxy actor goes on with the same
            # file, while the requests its crashed predecessor had in flight still settle into it.
            journal = InflightJournal(
                journal_path(self.settings.state_path(), self.daemon_id),
                self.daemon_id,
                self.settings.billing.max_in_flight,
            )
            self.context = DaemonContext(self.settings, self.secrets, pool, self.daemon_id)
            self.context.http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=30, connect=10)
            )
            self.context.clerk = self._clerk(self.context.http)
            self.context.clerk_users = clerk_users(self.context.http, self.settings, self.secrets)
            self.context.provider = self._provider()
            self.supervisor = self._build_supervisor(
                dsn, self.context, admission_pool, journal, embedded
            )
            self.context.supervisor = self.supervisor
            return await self._supervise(self.supervisor)
        finally:
            if journal is not None and not journal.close():
                # Left for the next daemon on this state directory to charge by recovery.
                log.warning(
                    "in-flight journal kept: requests not settled",
                    extra={"journal": str(journal.path), "records": journal.in_use},
                )
            if self.context is not None and self.context.http is not None:
                await self.context.http.close()
            await admission_pool.close()
            await pool.close()

    async def _supervise(self, supervisor: Supervisor) -> int:
        try:
            await supervisor.start()
        except StartFailed:
            log.exception("start-up failed")
            return EXIT_START_FAILED
        self.ready.set()
        sdnotify.notify("READY=1")
        log.info("ready", extra={"daemon_id": self.daemon_id})
        stop = asyncio.ensure_future(self._stop.wait())
        done = asyncio.ensure_future(supervisor.wait())
        await asyncio.wait({stop, done}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        done.cancel()
        sdnotify.notify("STOPPING=1")
        if supervisor.escalated.is_set():
            log.critical(
                "restart intensity exceeded; exiting", extra={"reason": str(supervisor.escalation)}
            )
            await supervisor.stop()
            return EXIT_ESCALATED
        log.info("stopping")
        await supervisor.stop()
        log.info("stopped")
        return EXIT_OK

    def _clerk(self, http: aiohttp.ClientSession) -> ClerkVerifier:
        cfg = self.settings.auth
        key = self.secrets.get("clerk_secret_key")
        return ClerkVerifier(
            http,
            cfg.clerk_jwks_url,
            secret_key=key.reveal() if key else None,
            allowed_azp=cfg.allowed_origins,
            issuer=cfg.clerk_issuer or None,
        )

    def _provider(self) -> ServerProvider | None:
        token = self.secrets.get("hetzner_api_token")
        if token is None:
            return None
        f = self.settings.fleet
        return HetznerProvider(
            token.reveal(),
            api_endpoint=f.hetzner_api_endpoint,
            server_type=f.server_type,
            image=f.image,
            locations=f.locations,
            ssh_keys=[f.ssh_key_name] if f.ssh_key_name else [],
            poll_interval=f.hetzner_poll_interval,
        )

    def _build_supervisor(
        self,
        dsn: str,
        ctx: DaemonContext,
        admission_pool: asyncpg.Pool,
        journal: InflightJournal,
        embedded: EmbeddedPostgres | None = None,
    ) -> Supervisor:
        s = self.settings
        grace = s.daemon.shutdown_grace
        minimum = billing_minimum_micros(s)

        def billing() -> BillingActor | None:
            child = supervisor.child("billing")
            return child if isinstance(child, BillingActor) else None

        def tell_notifier(message: object) -> None:
            ctx.tell("notifier", message)  # never lets email trouble touch the money path

        def wake_provisioner() -> None:
            ctx.tell("provisioner", JobsQueued())  # else its poll picks the job up

        def ssh_public_key() -> str:
            return public_key_line(ctx.ssh_key())

        fleet: list[ChildSpec] = [
            ChildSpec(
                "provisioner",
                lambda: Provisioner(
                    ctx.pool,
                    s,
                    self.daemon_id,
                    keyring=ctx.keyring,
                    ssh_key=ctx.ssh_key,
                    ssh_public_key=ssh_public_key,
                    provider=ctx.provider,
                    notify=tell_notifier,
                ),
                shutdown_timeout=grace + 5,
            ),
            ChildSpec(
                "health-monitor",
                lambda: SingletonChild(
                    "health-monitor",
                    lambda: HealthMonitor(ctx.pool, s.fleet, ctx.ssh_key, notify=tell_notifier),
                    lambda: db_pool.connect(dsn),
                    poll_interval=s.supervisor.singleton_poll,
                ),
                shutdown_timeout=grace + 5,
            ),
        ]
        provider = ctx.provider
        if provider is not None:
            fleet.append(
                ChildSpec(
                    "pool-manager",
                    lambda: SingletonChild(
                        "pool-manager",
                        lambda: PoolManager(
                            ctx.pool,
                            s.fleet,
                            provider,
                            ssh_public_key(),
                            on_deploy=wake_provisioner,
                        ),
                        lambda: db_pool.connect(dsn),
                        poll_interval=s.supervisor.singleton_poll,
                    ),
                )
            )

        # The embedded cluster's keeper first (stopped last); listeners last: they open only
        # once the actors they serve are up, and close first.
        keeper: list[ChildSpec] = []
        if embedded is not None:
            keeper.append(ChildSpec("postgres", lambda: PostgresKeeper(embedded)))
        specs: list[ChildSpec] = [
            *keeper,
            ChildSpec(
                "heartbeat",
                lambda: Heartbeat(ctx.pool, self.daemon_id, s.daemon.heartbeat_interval),
            ),
            ChildSpec(
                "janitor",
                lambda: SingletonChild(
                    "janitor",
                    lambda: Janitor(
                        ctx.pool,
                        interval=s.daemon.heartbeat_interval,
                        dead_after=s.daemon.dead_after,
                        # Every sweep, not only for the daemons it finds dead: a stopped
                        # daemon may have left records or leases however it stopped.
                        every_sweep=[lambda pool: recover_orphaned_reservations(pool, minimum)],
                    ),
                    lambda: db_pool.connect(dsn),
                    poll_interval=s.supervisor.singleton_poll,
                ),
            ),
            ChildSpec("notifier", lambda: NotifierActor(ctx.pool, s, self.secrets)),
            ChildSpec(
                "billing",
                lambda: BillingActor(
                    ctx.pool,
                    s,
                    notify=tell_notifier,
                    journals=(s.state_path(), self.daemon_id),
                ),
                shutdown_timeout=30,
            ),
            ChildSpec(
                "proxy",
                lambda: ProxyActor(
                    s,
                    self.secrets,
                    pool=ctx.pool,
                    admission_pool=admission_pool,
                    daemon_id=self.daemon_id,
                    journal=journal,
                    billing=billing,
                ),
                # Its stop waits up to 30 s for the settlements of the last requests.
                shutdown_timeout=45,
            ),
            *fleet,
            *self._extra_children,
            ChildSpec(
                "proxy-listener",
                lambda: HttpListener(
                    "proxy-listener",
                    lambda: make_proxy_app(ctx),
                    s.proxy.host,
                    s.proxy.port,
                    grace=grace,
                ),
                shutdown_timeout=grace + 5,
            ),
            ChildSpec(
                "api-listener",
                lambda: HttpListener(
                    "api-listener", lambda: make_api_app(ctx), s.api.host, s.api.port, grace=grace
                ),
                shutdown_timeout=grace + 5,
            ),
        ]
        sv = s.supervisor
        supervisor = Supervisor(
            specs,
            max_restarts=sv.max_restarts,
            within=sv.within,
            backoff_base=sv.backoff_base,
            backoff_max=sv.backoff_max,
        )
        return supervisor
