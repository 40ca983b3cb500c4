"""The daemon: database up, schema current, root supervisor started, listeners open.

Start order: PostgreSQL (embedded when no URL is configured) -> migrations -> pool -> actors ->
listeners, then READY=1. SIGTERM/SIGINT reverse it: STOPPING=1, listeners stop accepting and
drain, actors stop in reverse order, the pool closes, the embedded cluster stops.

The tree of actors is declared in blitzclawd.tree (how each child is built: blitzclawd.children).

A database outage is waited out, not escalated (see blitzclawd.runtime.outage): an external
PostgreSQL is someone else's to bring back; the embedded one is ours, and its keeper (the first
child) starts it again on the same port whenever its postmaster dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp

from blitzclawd import __version__, error_tracking, logs, sdnotify, tree
from blitzclawd.auth.clerk import ClerkVerifier
from blitzclawd.auth.clerk_users import clerk_users
from blitzclawd.children import Children, Resources
from blitzclawd.config import Secrets, Settings
from blitzclawd.context import DaemonContext
from blitzclawd.db import pool as db_pool
from blitzclawd.db.embedded import EmbeddedPostgres
from blitzclawd.db.migrate import migrate
from blitzclawd.metrics import Metrics
from blitzclawd.providers.base import ServerProvider
from blitzclawd.providers.hetzner import HetznerProvider
from blitzclawd.proxy.journal import InflightJournal, journal_path
from blitzclawd.registry import Actors
from blitzclawd.runtime.supervisor import ChildSpec, StartFailed, Supervisor

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
        logs.keep_recent()  # GET /api/admin/logs
        tracking = error_tracking.setup(self.secrets, release=f"blitzclawd@{__version__}")
        db = await open_database(self.settings, self.secrets)
        try:
            return await self._run_on(db.dsn, db.embedded)
        finally:
            if tracking:
                import sentry_sdk

                await asyncio.to_thread(sentry_sdk.flush, 5)
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
        # Everything the tree uses is opened here and closed here, in reverse, after the tree
        # has stopped: actors never open or close a shared resource.
        async with contextlib.AsyncExitStack() as resources:
            pool = await db_pool.create_pool(dsn, min_size=cfg.pool_min, max_size=cfg.pool_max)
            resources.push_async_callback(pool.close)
            admission_pool = await db_pool.create_pool(
                dsn, min_size=1, max_size=cfg.pool_max, async_commit=True
            )
            resources.push_async_callback(admission_pool.close)
            journal = InflightJournal(
                journal_path(self.settings.state_path(), self.daemon_id),
                self.daemon_id,
                self.settings.billing.max_in_flight,
            )
            resources.callback(self._close_journal, journal)
            metrics = Metrics()
            http = await resources.enter_async_context(
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30, connect=10))
            )
            children = Children(
                self.settings,
                Resources(dsn, admission_pool, journal, embedded, metrics),
                lambda: context,
            )
            root = tree.build(
                tree.declare(
                    children,
                    embedded=embedded is not None,
                    pool_manager=self.secrets.get("hetzner_api_token") is not None,
                    extra=self._extra_children,
                ),
                self.settings.supervisor,
            )
            context = DaemonContext(
                self.settings,
                self.secrets,
                pool,
                self.daemon_id,
                supervisor=root,
                actors=Actors.of(root.child),
                http=http,
                clerk=self._clerk(http),
                clerk_users=clerk_users(http, self.settings, self.secrets),
                provider=self._provider(),
                metrics=metrics,
            )
            self.supervisor, self.context = root, context
            return await self._supervise(root)

    @staticmethod
    def _close_journal(journal: InflightJournal) -> None:
        if not journal.close():
            # Left for the next daemon on this state directory to charge by recovery.
            log.warning(
                "in-flight journal kept: requests not settled",
                extra={"journal": str(journal.path), "records": journal.in_use},
            )

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
