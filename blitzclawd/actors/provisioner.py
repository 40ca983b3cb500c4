"""The provisioner: runs durable instance jobs (deploy, configure, restart, teardown).

Jobs live in `instance_jobs`, claimed with FOR UPDATE SKIP LOCKED (locked_by = this daemon), one
job per instance at a time, in order. A job still `running` under a daemon that stopped (or
whose row is gone) is claimed again, so a killed daemon's work resumes elsewhere or after a
restart. Each job runs in its own task; the actor only claims and counts.

deploy / configure: rotate the instance's proxy secret (the new hash is stored before the config
that carries it is written), build openclaw.json (secrets split into a 0600 secrets.json), write
it and the workspace SOUL.md over SFTP with the server's pinned host key, give gog the owner's
attached Google account (or remove it: fleet/google_skill.py), restart the gateway and
wait for its /readyz -> active. restart: the same without the files. teardown: the server is
rebuilt from the image with a fresh server secret (its row back to provisioning, no pinned key,
until its new ready call), or deleted when no provider is configured for rebuilds.

Why one module: the four job kinds share the claim loop, the SSH session and the secret
rotation; what they write is built elsewhere (fleet/openclaw_config.py, fleet/remote.py).
"""

from __future__ import annotations

import asyncio
import logging
import secrets as pysecrets
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg

from blitzclawd import credentials, plugins
from blitzclawd.channels import Channel, ChannelState, unseal
from blitzclawd.config import Settings, price_table
from blitzclawd.crypto import CryptoError, Keyring
from blitzclawd.fleet import google_skill, personas, remote
from blitzclawd.fleet import pool as fleet_pool
from blitzclawd.fleet.cloudinit import user_data_for
from blitzclawd.fleet.openclaw_config import (
    OPENCLAW_ANTHROPIC_API,
    OwnKey,
    ProxyTarget,
    build_config,
    render_config,
    split_secrets,
)
from blitzclawd.fleet.personas import soul_md
from blitzclawd.integrations.google import PROVIDER as GOOGLE
from blitzclawd.integrations.google import GoogleOAuth, refresh_token_context
from blitzclawd.notify.queue import queue_notification
from blitzclawd.providers.base import ProviderError, ServerProvider
from blitzclawd.queries import instances, jobs
from blitzclawd.queries import integrations as integration_rows
from blitzclawd.runtime.actor import Actor
from blitzclawd.runtime.messages import JobsQueued, NotificationQueued, Notify, Tick
from blitzclawd.runtime.outage import dependency_unavailable

log = logging.getLogger("blitzclawd.provisioner")


# What the owner reads when a job fails for good: what happened, what we do, what they can do,
# in their words. The technical reason (hosts, SSH errors, exception names) stays in the job's
# last_error, the instance's status_reason and the log.
_OWNER_TEXT = {
    "deploy": "we could not finish setting it up, even after several attempts",
    "configure": "we could not apply your latest changes to it, even after several attempts",
    "restart": "we could not restart it, even after several attempts",
}
_OWNER_ADVICE = (
    "Nothing you set up is lost: your persona, memory and channel settings are kept. Our team "
    "has been alerted and looks into it. You can try again from your dashboard (save your "
    "assistant's settings again, or restart it); if it still does not work, contact support "
    "and mention the assistant's name."
)


def _owner_note(job: dict[str, Any], owner: asyncpg.Record) -> Notify:
    channel = plugins.channels().get(owner["channel_type"])
    label = channel.label(owner["channel_config"] or {}) if channel is not None else None
    name = label or f"assistant {str(job['instance_id'])[:8]}"
    return Notify(
        owner["user_id"],
        "instance_error",
        f"job:{job['id']}",
        {
            "instance_name": name,
            "error": _OWNER_TEXT.get(job["kind"], _OWNER_TEXT["configure"]),
            "advice": _OWNER_ADVICE,
        },
    )


def _welcome_note(inst: asyncpg.Record) -> Notify:
    """The instance_created email: the channel's own first steps (its plugin's setup text)."""
    public = inst["channel_config"] or {}
    channel = plugins.channels().get(inst["channel_type"])
    label = channel.label(public) if channel is not None else None
    facts: dict[str, Any] = {
        "instance_name": label or f"assistant {str(inst['id'])[:8]}",
        "instance_id": str(inst["id"]),
    }
    if channel is not None:
        facts["setup_text"] = channel.setup_text(public)
    return Notify(str(inst["user_id"]), "instance_created", f"instance:{inst['id']}", facts)


class JobFailed(Exception):
    """A job that must not be retried (the instance goes to error with this reason)."""


class Provisioner(Actor):
    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        daemon_id: str,
        *,
        keyring: Callable[[], Keyring],
        ssh_key: Callable[[], Any],
        ssh_public_key: Callable[[], str],
        provider: ServerProvider | None,
        notify: Callable[[object], None] | None = None,
        google: Callable[[], GoogleOAuth | None] = lambda: None,
    ) -> None:
        super().__init__("provisioner")
        self._pool = pool
        self._settings = settings
        self._cfg = settings.fleet
        self._daemon_id = uuid.UUID(daemon_id)
        self._keyring = keyring
        self._ssh_key = ssh_key
        self._ssh_public_key = ssh_public_key
        self._provider = provider
        self._prices = price_table(settings.pricing)
        self._notify = notify  # the notifier: a job's final failure is emailed to the owner
        self._google = google  # our OAuth client: gog refreshes the users' grants with it
        self._tasks: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._followups: set[asyncio.Task[None]] = set()  # channels' follow-ups after a deploy
        self._waiting = False  # for the database: claims fail (logged once)

    async def on_start(self) -> None:
        self.every(self._cfg.job_poll, "jobs")
        self.tell(JobsQueued())

    async def on_stop(self) -> None:
        tasks = [*self._tasks.values(), *self._followups]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # What we were running goes back to the queue for whoever runs next.
        await jobs.requeue_ours(self._pool, self._daemon_id)

    async def handle(self, message: object) -> int | None:
        if isinstance(message, (Tick, JobsQueued)):
            try:
                claimed = await self.claim()
            except Exception as exc:
                # Jobs already running go on (their own database writes may fail: the job is
                # then claimed again); claiming waits for the next tick.
                if not dependency_unavailable(exc):
                    raise
                if not self._waiting:
                    self._waiting = True
                    log.warning("no jobs claimed until the database is back")
                return 0
            self._waiting = False
            return claimed
        return None

    async def claim(self) -> int:
        free = self._cfg.job_concurrency - len(self._tasks)
        if free <= 0:
            return 0
        claimed = await jobs.claim(self._pool, self._daemon_id, free, list(self._tasks))
        for job in claimed:
            instance_id = job["instance_id"]
            task = asyncio.get_running_loop().create_task(
                self._run_job(dict(job)), name=f"job:{job['kind']}:{job['id']}"
            )
            self._tasks[instance_id] = task
            task.add_done_callback(lambda _t, i=instance_id: self._finished(i))
        return len(claimed)

    def _finished(self, instance_id: uuid.UUID) -> None:
        self._tasks.pop(instance_id, None)
        try:
            self.tell(JobsQueued())  # the next job of this instance may be waiting
        except Exception:  # stopping: the next daemon picks it up
            pass

    async def _run_job(self, job: dict[str, Any]) -> None:
        kind, instance_id = job["kind"], job["instance_id"]
        try:
            await getattr(self, f"_do_{kind}")(instance_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            final = isinstance(exc, JobFailed) or job["attempts"] >= self._cfg.job_max_attempts
            reason = (
                str(exc)
                if isinstance(exc, (JobFailed, remote.RemoteError))
                else (f"{kind} failed: {type(exc).__name__}")
            )
            if not isinstance(exc, (JobFailed, remote.RemoteError, ProviderError)):
                log.exception("job crashed", extra={"job": job["id"], "kind": kind})
            else:
                log.warning("job failed", extra={"job": job["id"], "kind": kind, "error": reason})
            await self._fail(job, reason, final)
            return
        await jobs.done(self._pool, job["id"])

    async def _fail(self, job: dict[str, Any], reason: str, final: bool) -> None:
        queued: int | None = None
        async with self._pool.acquire() as conn, conn.transaction():
            if final:
                await jobs.failed(conn, job["id"], reason)
                if job["kind"] != "teardown":
                    owner = await instances.mark_error(conn, job["instance_id"], reason)
                    if owner is not None:
                        # In the transaction that records the failure: the email exists exactly
                        # when the failure does, once per job (its id is the period).
                        queued = await queue_notification(conn, _owner_note(job, owner))
                    log.error(
                        "job failed for good; the instance is in error",
                        extra={"job": job["id"], "kind": job["kind"], "error": reason},
                    )
            else:
                backoff = min(2.0 ** job["attempts"], 300.0) * 0.5
                await jobs.retry_later(conn, job["id"], reason, backoff)
        if queued is not None and self._notify is not None:
            self._notify(NotificationQueued(queued))  # else the notifier's sweep sends it

    # -- the jobs --------------------------------------------------------------------------------

    async def _instance(self, instance_id: uuid.UUID) -> asyncpg.Record | None:
        return await instances.for_job(self._pool, instance_id)

    def _target(self, inst: asyncpg.Record) -> remote.Target:
        if inst["server_ip"] is None or not inst["ssh_host_key"]:
            raise remote.RemoteError("the instance's server is not ready")
        return remote.Target(inst["server_ip"], self._cfg.ssh_port, inst["ssh_host_key"])

    async def _do_deploy(self, instance_id: uuid.UUID) -> None:
        inst = await self._instance(instance_id)
        if inst is None or inst["status"] == "deleted" or inst["server_id"] is None:
            return  # deleted meanwhile, or waiting for a server (its ready call re-queues it)
        target = self._target(inst)
        await instances.mark_provisioning(self._pool, instance_id)
        soul = soul_md(inst["persona_template"] or "assistant", inst["soul_md"])
        plugin, state, channel = self._channel(inst)
        secret = credentials.new_secret()
        own_key = self._own_key(inst)
        google = await self._google_account(inst)
        async with await remote.connect(
            target, self._ssh_key(), timeout=self._cfg.ssh_connect_timeout
        ) as conn:
            # Google first: a server where gog fails gets the assistant without it, never no
            # assistant (the new secret below is only stored once nothing else can fail first).
            google = await self._put_google(conn, inst, google)
            cfg = build_config(
                gateway_token=pysecrets.token_urlsafe(32),
                channel=channel,
                # The user's own key: straight to the provider. Else our proxy, with a fresh
                # secret (rotated either way, so a reverted instance never reuses an old one).
                proxy=None
                if own_key is not None
                else ProxyTarget(
                    base_url=self._cfg.proxy_url,
                    api=OPENCLAW_ANTHROPIC_API,
                    instance_id=str(instance_id),
                    secret=secret,
                    models=[(self._cfg.model, self._cfg.model)],
                    primary=self._cfg.model,
                    # Capabilities and marked-up costs from the daemon's own price table (the
                    # one the proxy charges by): a price change reaches the instance at its next
                    # configure.
                    prices=self._prices,
                ),
                own_key=own_key,
                skills={google_skill.SKILL: google_skill.skill_entry(google)},
            )
            config, secret_doc = split_secrets(cfg)
            # The new credential is the only valid one from here on: stored before it is written.
            await instances.set_secret_hash(
                self._pool, instance_id, credentials.hash_secret(secret)
            )
            await remote.write_instance_files(
                conn,
                config=render_config(config),
                secrets=render_config(secret_doc),
                soul=soul,
            )
            await self._restore_session(conn, inst, plugin)
            if inst["status"] == "stopped":
                return  # its owner stopped it: the new files wait for its start
            await remote.restart_and_wait(conn, timeout=self._cfg.ready_timeout)
        await self._became_active(instance_id, inst)
        # In its own task: the job (and the instance's next one) never waits on the channel's
        # outside service.
        task = asyncio.get_running_loop().create_task(self._tell_channel(plugin, state, inst))
        self._followups.add(task)
        task.add_done_callback(self._followups.discard)

    _do_configure = _do_deploy

    async def _restore_session(self, conn: Any, inst: asyncpg.Record, plugin: Channel) -> None:
        """A server that lost the channel's linked session (rebuilt, or a new one) gets the
        backup back before the gateway starts: the user does not scan again."""
        blob = inst["channel_session_enc"]
        if blob is None or not plugin.session_dirs:
            return
        try:
            if await remote.has_session(conn, plugin.session_dirs):
                return
            context = credentials.channel_session_context(inst["id"])
            archive = self._keyring().decrypt(blob, context)
            count = await remote.write_session(conn, archive)
        except Exception as exc:
            # Unusable backup (a key gone, a corrupt blob): deploy unlinked rather than never;
            # the user links again.
            log.warning(
                "channel session not restored",
                extra={"instance": str(inst["id"]), "error": f"{type(exc).__name__}: {exc}"},
            )
            return
        log.info("channel session restored", extra={"instance": str(inst["id"]), "files": count})

    async def _do_stop(self, instance_id: uuid.UUID) -> None:
        """Its owner stopped it (already `stopped` for the proxy): the gateway stops too."""
        inst = await self._instance(instance_id)
        if inst is None or inst["status"] != "stopped" or inst["server_id"] is None:
            return  # started again, or deleted, meanwhile
        async with await remote.connect(
            self._target(inst), self._ssh_key(), timeout=self._cfg.ssh_connect_timeout
        ) as conn:
            await remote.run(conn, remote.STOP, "stopping the gateway")
        log.info("instance stopped", extra={"instance": str(instance_id)})

    async def _do_start(self, instance_id: uuid.UUID) -> None:
        inst = await self._instance(instance_id)
        if inst is None or inst["status"] != "stopped" or inst["server_id"] is None:
            return
        async with await remote.connect(
            self._target(inst), self._ssh_key(), timeout=self._cfg.ssh_connect_timeout
        ) as conn:
            await remote.restart_and_wait(conn, timeout=self._cfg.ready_timeout)
        await self._became_active(instance_id, inst)

    async def _do_restart(self, instance_id: uuid.UUID) -> None:
        inst = await self._instance(instance_id)
        if inst is None or inst["status"] in ("deleted", "stopped") or inst["server_id"] is None:
            return
        async with await remote.connect(
            self._target(inst), self._ssh_key(), timeout=self._cfg.ssh_connect_timeout
        ) as conn:
            await remote.restart_and_wait(conn, timeout=self._cfg.ready_timeout)
        await self._became_active(instance_id, inst)

    async def _became_active(self, instance_id: uuid.UUID, inst: asyncpg.Record) -> None:
        """Active; the first time, the owner is emailed how to start (once per instance: the
        instance id is the email's period, queued in the same transaction)."""
        async with self._pool.acquire() as conn, conn.transaction():
            await instances.mark_active(conn, instance_id)
            queued = await queue_notification(conn, _welcome_note(inst))
        log.info("instance active", extra={"instance": str(instance_id)})
        if queued is not None and self._notify is not None:
            self._notify(NotificationQueued(queued))

    async def _put_google(
        self, conn: Any, inst: asyncpg.Record, account: google_skill.GoogleAccount | None
    ) -> google_skill.GoogleAccount | None:
        """The account given to gog on the server, or gog's state removed; the account when it
        is there. gog failing (a server from before gog was in the image: no blitzclaw-gog) is
        logged for the operators and the assistant deploys without Google."""
        if account is not None:
            try:
                mkdir = f"mkdir -p -m 700 {remote.OPENCLAW_DIR}"
                await remote.run(conn, mkdir, "creating ~/.openclaw")
                await google_skill.install(conn, account)
                return account
            except remote.RemoteError as exc:
                log.warning(
                    "Google account not deployed: gog failed on the server",
                    extra={"instance": str(inst["id"]), "error": str(exc)},
                )
        await google_skill.remove(conn)
        return None

    async def _google_account(self, inst: asyncpg.Record) -> google_skill.GoogleAccount | None:
        """The owner's Google account attached to this instance, ready for gog; None when none
        is attached, or it cannot be used (logged: the instance deploys without it)."""
        row = await integration_rows.attached_to(self._pool, inst["id"], GOOGLE)
        if row is None:
            return None
        client = self._google()
        why = "Google integrations are not configured (google.client_id, google_client_secret)"
        if client is not None:
            try:
                token = self._keyring().decrypt_text(
                    row["refresh_token_enc"], refresh_token_context(row["id"])
                )
                return google_skill.checked(
                    google_skill.GoogleAccount(
                        email=row["account_email"] or "",
                        client_id=client.client_id,
                        client_secret=client.client_secret,
                        refresh_token=token,
                        scopes=tuple(row["scopes"]),
                    )
                )
            except (CryptoError, TypeError) as exc:
                why = f"its refresh token cannot be read ({type(exc).__name__})"
            except ValueError as exc:  # e.g. no Gmail/Calendar scope granted, an odd address
                why = f"gog cannot use it: {exc}"
        log.warning(
            "Google account not deployed",
            extra={"instance": str(inst["id"]), "integration": str(row["id"]), "error": why},
        )
        return None

    def _own_key(self, inst: asyncpg.Record) -> OwnKey | None:
        if not inst["use_own_api_key"]:
            return None
        provider = inst["own_api_provider"]
        key = self._keyring().decrypt_text(
            inst["own_api_key_enc"], credentials.own_key_context(inst["id"])
        )
        model = self._cfg.model if provider == "anthropic" else self._cfg.own_key_openai_model
        return OwnKey(provider=provider, api_key=key, model=model, prices=self._prices)

    async def _tell_channel(
        self, plugin: Channel, state: ChannelState, inst: asyncpg.Record
    ) -> None:
        """The channel's own follow-up (a bot profile after the persona); never fails a job."""
        try:
            await plugin.activated(self._settings, state, personas.about(inst["persona_template"]))
        except Exception as exc:  # a plugin's outside service: its trouble is not the deploy's
            log.warning(
                "channel follow-up failed",
                extra={"instance": str(inst["id"]), "error": f"{type(exc).__name__}: {exc}"},
            )

    def _channel(self, inst: asyncpg.Record) -> tuple[Channel, ChannelState, tuple[str, Any]]:
        """The instance's channel plugin, its settings and its block of openclaw.json."""
        kind = inst["channel_type"]
        plugin = plugins.channels().get(kind)
        if plugin is None:
            raise JobFailed(f"channel_type: the channel {kind!r} is not installed")
        secrets = unseal(
            self._keyring(),
            credentials.channel_secret_context(inst["id"]),
            inst["channel_secret_enc"],
            plugin,
        )
        state = ChannelState(inst["channel_config"] or {}, secrets)
        try:
            return plugin, state, (kind, plugin.openclaw(state))
        except (KeyError, ValueError) as exc:
            raise JobFailed(f"channel_config: {kind} settings are incomplete ({exc})") from None

    async def _do_teardown(self, instance_id: uuid.UUID) -> None:
        server = await fleet_pool.server_of_instance(self._pool, instance_id)
        if server is not None:
            await self._wipe(server)
        await instances.mark_torn_down(self._pool, instance_id)

    async def _wipe(self, server: asyncpg.Record) -> None:
        """The server never serves anyone again with this instance's files or credentials."""
        hid = server["hetzner_server_id"]
        if self._provider is None or hid is None:
            # Nothing can rebuild it: it leaves the pool for good.
            await fleet_pool.retire(self._pool, server["id"])
            return
        secret = credentials.new_secret()
        user_data = user_data_for(
            self._cfg, name=server["name"], secret=secret, ssh_public_key=self._ssh_public_key()
        )
        await fleet_pool.rebuilding(self._pool, server["id"], credentials.hash_secret(secret))
        await self._provider.rebuild(hid, user_data=user_data)
        log.info("server rebuilt", extra={"server_name": server["name"]})
