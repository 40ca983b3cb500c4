"""The notifier actor: transactional email through Resend, each at most once, never on a hot path.

Every email is first a row in `notifications`, unique per (user, kind, period), written before
anything is sent: a second request for the same email (a replayed webhook, another daemon) finds
the row and stops. Sending failures are retried with backoff from the table on a timer, so a
restart loses nothing; Resend's Idempotency-Key (the row id) covers the crash between "sent" and
"recorded as sent".
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import Any

import aiohttp
import asyncpg
import orjson

from blitzclawd.auth.clerk_users import ClerkUsers, clerk_users, ensure_email
from blitzclawd.config import Secrets, Settings
from blitzclawd.notify import queue
from blitzclawd.notify.operators import balance_ran_out
from blitzclawd.notify.queue import queue_notification
from blitzclawd.notify.resend import ResendClient, ResendError
from blitzclawd.notify.templates import render
from blitzclawd.payments.creem import CreemError
from blitzclawd.payments.topups import PaymentsUnconfigured, create_topup
from blitzclawd.queries.billing import last_credit_id, usage_without_digest
from blitzclawd.runtime.actor import Actor
from blitzclawd.runtime.messages import (
    AutoTopupDue,
    BalanceDepleted,
    LowBalance,
    NotificationQueued,
    Notify,
    Tick,
)

log = logging.getLogger("blitzclawd.notifier")

MAX_ATTEMPTS = 8
BACKOFF_BASE = 30.0  # s, doubled per attempt, capped at an hour
SWEEP_BATCH = 100


def backoff(attempts: int) -> float:
    return min(3600.0, BACKOFF_BASE * 2 ** max(0, attempts - 1))


class NotifierActor(Actor):
    def __init__(self, pool: asyncpg.Pool, settings: Settings, secrets: Secrets) -> None:
        super().__init__("notifier", mailbox_size=10_000)
        self._pool = pool
        self._settings = settings
        self._secrets = secrets
        self._key = secrets.get("resend_api_key")
        self._session: aiohttp.ClientSession | None = None
        self._client: ResendClient | None = None
        self._clerk: ClerkUsers | None = None  # looks up a missing email address

    async def on_start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        self._clerk = clerk_users(self._session, self._settings, self._secrets)
        if self._key is None:
            log.warning("no resend_api_key: emails are recorded but not sent")
        else:
            cfg = self._settings.notify
            self._client = ResendClient(
                self._session, cfg.resend_url, self._key.reveal(), cfg.sender
            )
        self.every(self._settings.notify.sweep_interval, "sweep")

    async def on_stop(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def handle(self, message: object) -> object | None:
        if isinstance(message, Notify):
            return await self.notify(message)
        if isinstance(message, BalanceDepleted):
            note = await self._balance_note(message)
            await self._alert_operators(message, note.period)
            return await self.notify(note)
        if isinstance(message, LowBalance):
            return await self.notify(await self._balance_note(message))
        if isinstance(message, NotificationQueued):
            return await self._send(message.notification_id)
        if isinstance(message, AutoTopupDue):
            return await self._auto_topup(message)
        if isinstance(message, Tick):
            await self.sweep()
        return None

    async def notify(self, n: Notify) -> int | None:
        """Record the email (once per user, kind, period) and try to send it; returns its id."""
        notification_id = await queue_notification(self._pool, n)
        if notification_id is not None:
            await self._send(notification_id)
        return notification_id

    async def sweep(self) -> None:
        await self._queue_weekly_digests()
        for notification_id in await queue.due(self._pool, SWEEP_BATCH):
            await self._send(notification_id)

    async def _send(self, notification_id: int) -> None:
        if self._client is None:
            return  # stays pending until a key is configured
        row = await queue.to_send(self._pool, notification_id)
        if row is None or row["status"] != "pending":
            return
        address = row["email"] or await ensure_email(self._pool, self._clerk, row["user_id"])
        if not address:
            if self._clerk is None:
                await self._finish(notification_id, "failed", error="the user has no email address")
            else:  # Clerk may know it later (it was down, or the user has not added one yet)
                await self._retry(notification_id, row["attempts"] + 1, "no email address yet")
            return
        facts = row["facts"] if isinstance(row["facts"], dict) else orjson.loads(row["facts"])
        try:
            email = render(row["kind"], **self._common_facts(), **facts)
        except (ValueError, TypeError) as exc:
            await self._finish(notification_id, "failed", error=f"template: {exc}")
            return
        try:
            provider_id = await self._client.send(
                to=address,
                subject=email.subject,
                text=email.text,
                html=email.html,
                idempotency_key=f"blitzclaw-notification-{notification_id}",
                tags={"kind": row["kind"]},
            )
        except (ResendError, aiohttp.ClientError, TimeoutError) as exc:
            attempts = row["attempts"] + 1
            retryable = getattr(exc, "retryable", True)
            if retryable:
                await self._retry(notification_id, attempts, _short(exc))
            else:
                await self._finish(notification_id, "failed", error=_short(exc), attempts=attempts)
            return
        await self._finish(
            notification_id, "sent", provider_id=provider_id, attempts=row["attempts"] + 1
        )

    async def _retry(self, notification_id: int, attempts: int, error: str) -> None:
        """Try again after a backoff; give up (failed) after MAX_ATTEMPTS."""
        if attempts >= MAX_ATTEMPTS:
            await self._finish(notification_id, "failed", error=error, attempts=attempts)
            return
        await queue.retry_after(self._pool, notification_id, attempts, error, backoff(attempts))

    async def _finish(
        self,
        notification_id: int,
        status: str,
        *,
        error: str | None = None,
        provider_id: str | None = None,
        attempts: int | None = None,
    ) -> None:
        await queue.finish(
            self._pool,
            notification_id,
            status,
            error=error,
            provider_id=provider_id,
            attempts=attempts,
        )
        if status == "failed":
            log.warning(
                "email not sent", extra={"notification_id": notification_id, "error": error}
            )

    async def _balance_note(self, message: BalanceDepleted | LowBalance) -> Notify:
        # Once per top-up cycle: the period is the user's latest credit, so the next warning
        # comes only after they topped up and ran low again.
        last_credit = await last_credit_id(self._pool, uuid.UUID(message.user_id))
        kind = "balance_depleted" if isinstance(message, BalanceDepleted) else "balance_low"
        return Notify(
            message.user_id,
            kind,
            f"credit:{last_credit}",
            {"balance_micros": message.balance_micros},
        )

    async def _alert_operators(self, message: BalanceDepleted, period: str) -> None:
        """Operators hear of a balance that ran out mid-conversation once per pause: the pause's
        period is the user's top-up cycle, as their own email's (a live event and an email)."""
        queued = await balance_ran_out(
            self._pool,
            self._settings.alerts.operator_emails,
            message.user_id,
            message.balance_micros,
            message.paused_instances,
            period,
        )
        for notification_id in queued:
            await self._send(notification_id)

    async def _auto_topup(self, message: AutoTopupDue) -> int | None:
        """Email a checkout prepared for the user's auto-top-up amount, once per top-up cycle."""
        note = await self._balance_note(message)
        notification_id = await queue.queue_notification(
            self._pool, Notify(message.user_id, "balance_low", "auto-" + note.period, note.facts)
        )
        if notification_id is None:
            return None
        assert self._session is not None
        try:
            topup = await create_topup(
                self._pool,
                self._session,
                self._settings,
                self._secrets,
                message.user_id,
                message.amount_micros // 10_000,
            )
        except (PaymentsUnconfigured, CreemError) as exc:
            log.warning("auto top-up checkout not created", extra={"error": repr(exc)})
        else:
            await queue.add_facts(
                self._pool, notification_id, {"topup_url": topup.checkout.checkout_url}
            )
        await self._send(notification_id)
        return notification_id

    def _common_facts(self) -> dict[str, Any]:
        cfg = self._settings.notify
        return {"app_url": cfg.app_url, "support_url": cfg.support_url}

    async def _queue_weekly_digests(self) -> None:
        """One digest per user with usage last ISO week, queued once (the period is the week)."""
        today = dt.datetime.now(dt.UTC).date()
        monday = today - dt.timedelta(days=today.weekday())
        last_monday = monday - dt.timedelta(days=7)
        year, week, _ = last_monday.isocalendar()
        period = f"{year}-W{week:02d}"
        for r in await usage_without_digest(self._pool, last_monday, monday, period):
            facts = {
                "week": period,
                "cost_micros": r["cost"],
                "tokens": r["tokens"],
                "requests": r["requests"],
            }
            await queue.queue_notification(
                self._pool, Notify(r["user_id"], "weekly_digest", period, facts)
            )


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]
