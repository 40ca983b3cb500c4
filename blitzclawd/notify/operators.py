"""Operators' alert emails (alerts.operator_emails): one per operator per alert, about a user and
sent to the operator's address, queued in the transaction that records the alert. The alert's
own UNIQUE row makes it once; each email's period names the alert and the operator, so the
notifications' UNIQUE (user, kind, period) holds it once again for a replay."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence

import asyncpg

from blitzclawd.notify.queue import queue_notification
from blitzclawd.queries import alerts
from blitzclawd.runtime.messages import Fact, Notify


async def queue_for_operators(
    conn: asyncpg.Connection, addresses: Sequence[str], note: Notify
) -> list[int]:
    """`note` queued once for each operator address; the ids of those not queued before."""
    queued = []
    for address in addresses:
        one = dataclasses.replace(note, period=f"{note.period}:{address}", to=address)
        notification_id = await queue_notification(conn, one)
        if notification_id is not None:
            queued.append(notification_id)
    return queued


async def balance_ran_out(
    pool: asyncpg.Pool,
    addresses: Sequence[str],
    user_id: str,
    balance_micros: int,
    paused: int,
    period: str,
) -> list[int]:
    """A settlement paused the user's instances for their balance: the alert recorded once per
    pause (`period`: their top-up cycle; the operators' live `balance_paused` event reads it)
    and each operator's email queued. The emails' ids; [] when this pause was alerted before."""
    uid = uuid.UUID(user_id)
    async with pool.acquire() as conn, conn.transaction():
        if not await alerts.record_balance_pause(conn, uid, period, balance_micros, paused):
            return []
        facts: dict[str, Fact] = {
            "user_id": user_id,
            "balance_micros": balance_micros,
            "paused_instances": paused,
        }
        email = await alerts.email_of(conn, uid)
        if email:
            facts["owner_email"] = email
        note = Notify(user_id, "operator_balance_paused", f"pause:{period}", facts)
        return await queue_for_operators(conn, addresses, note)
