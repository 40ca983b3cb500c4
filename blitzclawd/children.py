"""How each child of the supervision tree is built from the daemon's resources.

The shape of the tree is blitzclawd.tree; this module only knows, for each leaf, its actor, what
it is given, and its timeouts. Every factory runs at each (re)start, so a restarted child is a
fresh object built from the same long-lived resources (pools, journal, context).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg

from blitzclawd.actors.billing import BillingActor
from blitzclawd.actors.health_monitor import HealthMonitor
from blitzclawd.actors.heartbeat import Heartbeat
from blitzclawd.actors.janitor import Janitor
from blitzclawd.actors.notifier import NotifierActor
from blitzclawd.actors.pool_manager import PoolManager
from blitzclawd.actors.provisioner import Provisioner
from blitzclawd.actors.proxy import ProxyActor
from blitzclawd.config import Settings
from blitzclawd.context import DaemonContext
from blitzclawd.db import pool as db_pool
from blitzclawd.db.embedded import EmbeddedPostgres
from blitzclawd.db.keeper import PostgresKeeper
from blitzclawd.fleet.keys import public_key_line
from blitzclawd.http.app import make_api_app, make_proxy_app
from blitzclawd.http.listener import HttpListener
from blitzclawd.integrations.google import GoogleOAuth
from blitzclawd.metering.spikes import check_spikes
from blitzclawd.metrics import Metrics
from blitzclawd.proxy.journal import InflightJournal
from blitzclawd.runtime.messages import JobsQueued, RecoverOrphans
from blitzclawd.runtime.singleton import SingletonChild
from blitzclawd.runtime.supervisor import ChildSpec
from blitzclawd.services.integration_refresh import refresh_due


@dataclass(frozen=True, slots=True)
class Resources:
    """What the daemon opened before the tree (and closes after it)."""

    dsn: str
    # Admission and checkpoints commit without waiting for the WAL flush (see actors/proxy.py).
    admission_pool: asyncpg.Pool
    # The daemon's, not the proxy actor's: a restarted proxy actor goes on with the same file,
    # while the requests its crashed predecessor had in flight still settle into it.
    journal: InflightJournal
    embedded: EmbeddedPostgres | None
    # The daemon's Prometheus metrics: a restarted proxy actor goes on counting into them.
    metrics: Metrics = field(default_factory=Metrics)


class Children:
    """One ChildSpec per leaf. `context` is the daemon's context, complete by the time any
    child starts (it holds the supervisor these specs are given to)."""

    def __init__(
        self, settings: Settings, resources: Resources, context: Callable[[], DaemonContext]
    ) -> None:
        self._s = settings
        self._r = resources
        self._ctx = context

    def _singleton(self, name: str, build: Callable[[], object], **spec: float) -> ChildSpec:
        """An actor only one daemon sharing the database runs (an advisory lock decides)."""
        return ChildSpec(
            name,
            lambda: SingletonChild(
                name,
                build,  # type: ignore[arg-type]
                lambda: db_pool.connect(self._r.dsn),
                poll_interval=self._s.supervisor.singleton_poll,
            ),
            **spec,
        )

    # -- root ------------------------------------------------------------------------------------

    def postgres(self) -> ChildSpec:
        def build() -> PostgresKeeper:
            assert self._r.embedded is not None, "a keeper only for the daemon's own cluster"
            return PostgresKeeper(self._r.embedded)

        return ChildSpec("postgres", build)

    # -- core ------------------------------------------------------------------------------------

    def heartbeat(self) -> ChildSpec:
        ctx = self._ctx
        return ChildSpec(
            "heartbeat",
            lambda: Heartbeat(
                ctx().pool, ctx().daemon_id, ctx().settings.daemon.heartbeat_interval
            ),
        )

    def janitor(self) -> ChildSpec:
        ctx = self._ctx

        async def recover_orphans(_pool: asyncpg.Pool) -> None:
            ctx().actors.billing.tell(RecoverOrphans())  # billing charges; money's one writer

        last_check = [float("-inf")]

        async def spikes(pool: asyncpg.Pool) -> None:
            # At most every spike_check_interval: the sweep runs every heartbeat.
            now = time.monotonic()
            if now - last_check[0] < ctx().settings.alerts.spike_check_interval:
                return
            last_check[0] = now
            await check_spikes(pool, ctx().settings, ctx().actors.notifier.tell)

        last_refresh = [float("-inf")]

        async def integrations(pool: asyncpg.Pool) -> None:
            # Google access tokens, at most every google.refresh_interval.
            c = ctx()
            now = time.monotonic()
            if now - last_refresh[0] < c.settings.google.refresh_interval:
                return
            last_refresh[0] = now
            google = GoogleOAuth.from_settings(c.settings, c.secrets)
            if google is not None:
                await refresh_due(pool, c.actors, c.keyring(), google, c.settings)

        def build() -> Janitor:
            c = ctx()
            return Janitor(
                c.pool,
                interval=c.settings.daemon.heartbeat_interval,
                dead_after=c.settings.daemon.dead_after,
                # Every sweep, not only for the daemons it finds dead: a stopped daemon may have
                # left records or leases however it stopped.
                every_sweep=[recover_orphans, spikes, integrations],
            )

        return self._singleton("janitor", build)

    def notifier(self) -> ChildSpec:
        ctx = self._ctx
        return ChildSpec(
            "notifier", lambda: NotifierActor(ctx().pool, ctx().settings, ctx().secrets)
        )

    # -- money -----------------------------------------------------------------------------------

    def billing(self) -> ChildSpec:
        ctx = self._ctx
        return ChildSpec(
            "billing",
            lambda: BillingActor(
                ctx().pool,
                ctx().settings,
                notify=ctx().actors.notifier.tell,  # email trouble never touches the money path
                journals=(ctx().settings.state_path(), ctx().daemon_id),
            ),
            shutdown_timeout=30,
        )

    def proxy(self) -> ChildSpec:
        ctx = self._ctx

        def billing() -> BillingActor | None:
            child = ctx().supervisor.child("money/billing")
            return child if isinstance(child, BillingActor) else None

        return ChildSpec(
            "proxy",
            lambda: ProxyActor(
                ctx().settings,
                ctx().secrets,
                pool=ctx().pool,
                admission_pool=self._r.admission_pool,
                daemon_id=ctx().daemon_id,
                journal=self._r.journal,
                metrics=self._r.metrics,
                billing=billing,
            ),
            # Its stop waits up to 30 s for the settlements of the last requests.
            shutdown_timeout=45,
        )

    # -- fleet -----------------------------------------------------------------------------------

    def _ssh_public_key(self) -> str:
        return public_key_line(self._ctx().ssh_key())

    def provisioner(self) -> ChildSpec:
        ctx = self._ctx
        grace = self._s.daemon.shutdown_grace
        return ChildSpec(
            "provisioner",
            lambda: Provisioner(
                ctx().pool,
                ctx().settings,
                ctx().daemon_id,
                keyring=ctx().keyring,
                ssh_key=ctx().ssh_key,
                ssh_public_key=self._ssh_public_key,
                provider=ctx().provider,
                notify=ctx().actors.notifier.tell,
                google=lambda: GoogleOAuth.from_settings(ctx().settings, ctx().secrets),
            ),
            shutdown_timeout=grace + 5,
        )

    def health_monitor(self) -> ChildSpec:
        ctx = self._ctx
        return self._singleton(
            "health-monitor",
            lambda: HealthMonitor(
                ctx().pool, ctx().settings.fleet, ctx().ssh_key, notify=ctx().actors.notifier.tell
            ),
            shutdown_timeout=self._s.daemon.shutdown_grace + 5,
        )

    def pool_manager(self) -> ChildSpec:
        ctx = self._ctx

        def build() -> PoolManager:
            c = ctx()
            assert c.provider is not None
            return PoolManager(
                c.pool,
                c.settings.fleet,
                c.provider,
                self._ssh_public_key(),
                # Else the provisioner's poll picks the deploy job up.
                on_deploy=lambda: c.actors.provisioner.tell(JobsQueued()),
            )

        return self._singleton("pool-manager", build)

    # -- edge ------------------------------------------------------------------------------------

    def proxy_listener(self) -> ChildSpec:
        ctx, s = self._ctx, self._s
        return ChildSpec(
            "proxy-listener",
            lambda: HttpListener(
                "proxy-listener",
                lambda: make_proxy_app(ctx()),
                s.proxy.host,
                s.proxy.port,
                grace=s.daemon.shutdown_grace,
            ),
            shutdown_timeout=s.daemon.shutdown_grace + 5,
        )

    def api_listener(self) -> ChildSpec:
        ctx, s = self._ctx, self._s
        return ChildSpec(
            "api-listener",
            lambda: HttpListener(
                "api-listener",
                lambda: make_api_app(ctx()),
                s.api.host,
                s.api.port,
                grace=s.daemon.shutdown_grace,
            ),
            shutdown_timeout=s.daemon.shutdown_grace + 5,
        )
