"""The refresh round (run by the janitor, a singleton, every google.refresh_interval): access
tokens expiring within google.refresh_margin are refreshed server-side, each row locked so two
daemons never refresh one; a refresh Google refuses (invalid_grant) marks the integration broken
and emails the user; Google not answering leaves it for the next round."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from typing import Any

import asyncpg

from blitzclawd.config import Settings
from blitzclawd.crypto import CryptoError, Keyring
from blitzclawd.integrations.google import (
    GoogleOAuth,
    GoogleRefused,
    GoogleUnreachable,
    Tokens,
    access_token_context,
    refresh_token_context,
)
from blitzclawd.notify.queue import queue_notification
from blitzclawd.queries import integrations as rows
from blitzclawd.registry import Actors
from blitzclawd.runtime.messages import NotificationQueued, Notify
from blitzclawd.services.integrations import deploy_changed

log = logging.getLogger("blitzclawd.integrations")

REFRESH_BATCH = 50
REFRESH_CONCURRENCY = 8


async def refresh_due(
    pool: asyncpg.Pool,
    actors: Actors,
    keyring: Keyring,
    google: GoogleOAuth,
    settings: Settings,
) -> dict[str, int]:
    """One round: every connected integration whose access token expires within the margin,
    locked while it is refreshed (two daemons never refresh one). Refused (invalid_grant):
    broken, and the user is emailed; Google unreachable: left for the next round."""
    outcome = {"refreshed": 0, "broken": 0, "later": 0}
    changed: list[uuid.UUID] = []
    queued: list[int] = []
    await rows.purge_states(pool)
    async with pool.acquire() as conn, conn.transaction():
        due = await rows.due_for_refresh(conn, settings.google.refresh_margin, REFRESH_BATCH)
        if not due:
            return outcome
        limit = asyncio.Semaphore(REFRESH_CONCURRENCY)

        async def one(row: Any) -> tuple[Tokens | Exception, str | None]:
            async with limit:
                token = None
                try:
                    token = keyring.decrypt_text(
                        row["refresh_token_enc"], refresh_token_context(row["id"])
                    )
                    return await google.refresh(token), token
                except (GoogleRefused, GoogleUnreachable, CryptoError) as exc:
                    return exc, token

        answers = await asyncio.gather(*(one(row) for row in due))
        for row, (result, old_refresh) in zip(due, answers, strict=True):
            if isinstance(result, Tokens):
                # gog on the servers refreshes access tokens itself: an instance is configured
                # again only when Google rotated the refresh token (that restarts its gateway).
                rotated = result.refresh_token not in (None, old_refresh)
                await rows.refreshed(
                    conn,
                    row["id"],
                    keyring.encrypt_text(result.access_token, access_token_context(row["id"])),
                    result.expires_at,
                    result.scopes,
                    keyring.encrypt_text(result.refresh_token, refresh_token_context(row["id"]))
                    if rotated and result.refresh_token is not None
                    else None,
                )
                outcome["refreshed"] += 1
                if rotated:
                    changed.append(row["id"])
            elif isinstance(result, GoogleRefused) and result.error in ("invalid_grant",):
                reason = "Google no longer accepts this connection (access was revoked or expired)"
                await rows.mark_broken(conn, row["id"], reason)
                note = Notify(
                    str(row["user_id"]),
                    "integration_broken",
                    f"integration:{row['id']}:{dt.datetime.now(dt.UTC).isoformat()}",
                    {
                        "integration": "Google",
                        "account_email": row["account_email"],
                        "reconnect_url": settings.notify.app_url.rstrip("/")
                        + "/settings/integrations",
                    },
                )
                notification_id = await queue_notification(conn, note)
                if notification_id is not None:
                    queued.append(notification_id)
                outcome["broken"] += 1
                changed.append(row["id"])  # its instances stop using it
                log.warning("integration broken", extra={"integration": str(row["id"])})
            elif isinstance(result, CryptoError):
                await rows.mark_broken(conn, row["id"], "its stored token cannot be read")
                outcome["broken"] += 1
                changed.append(row["id"])
            else:
                outcome["later"] += 1
                log.info(
                    "integration refresh postponed",
                    extra={"integration": str(row["id"]), "error": str(result)},
                )
        instances = {
            i for integration in changed for i in await rows.instances_of(conn, integration)
        }
    for notification_id in queued:
        actors.notifier.tell(NotificationQueued(notification_id))
    for instance_id in instances:
        await deploy_changed(pool, actors, instance_id)
    return outcome
