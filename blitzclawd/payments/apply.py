"""What a Creem webhook does to our books, in ONE transaction with the record of its event id.

Creem retries and may deliver concurrently; the event id's row in processed_webhook_events is
inserted first in the same transaction as the effect, so a replay finds it and changes nothing.
Ledger keys are derived from the order / refund / event ids as a second line of defence.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson

from blitzclawd.config import Settings, billing_minimum_micros, usd_to_micros
from blitzclawd.payments import creem
from blitzclawd.payments.creem import CreemEvent
from blitzclawd.runtime.messages import Notify

log = logging.getLogger("blitzclawd.payments")

MICROS_PER_CENT = 10_000


@dataclass(slots=True)
class WebhookOutcome:
    status: str  # "applied" | "duplicate" | "recorded" (acknowledged, no effect)
    user_id: str | None = None
    balance_micros: int | None = None
    notifications: list[Notify] = field(default_factory=list)


class UnmatchedEvent(Exception):
    """The event names no user we know: recorded, acknowledged, and logged for the operator."""


async def apply_creem_event(
    pool: asyncpg.Pool, event: CreemEvent, settings: Settings
) -> WebhookOutcome:
    async with pool.acquire() as conn, conn.transaction():
        first = await conn.fetchval(
            """INSERT INTO processed_webhook_events (provider, event_id, event_type, payload)
               VALUES ('creem', $1, $2, $3::text::jsonb)
               ON CONFLICT DO NOTHING RETURNING true""",
            event.id,
            event.type,
            orjson.dumps(event.object).decode(),
        )
        if not first:
            return WebhookOutcome("duplicate")
        handler = _HANDLERS.get(event.type)
        if handler is None:
            return WebhookOutcome("recorded")
        try:
            return await handler(conn, event, settings)
        except UnmatchedEvent as exc:
            log.error(
                "payment event matches no user; recorded for the operator",
                extra={"event_id": event.id, "event_type": event.type, "reason": str(exc)},
            )
            return WebhookOutcome("recorded")


async def _adjust(
    conn: asyncpg.Connection,
    user_id: str,
    micros: int,
    kind: str,
    reference: str,
    key: str,
    settings: Settings,
    pause_reason: str = "balance_depleted",
) -> asyncpg.Record:
    return await conn.fetchrow(
        "SELECT outcome, balance_micros, paused, resumed "
        "FROM adjust_balance($1, $2, $3, $4, $5, $6, $7)",
        uuid.UUID(user_id),
        micros,
        kind,
        reference,
        key,
        billing_minimum_micros(settings),
        pause_reason,
    )


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


async def _user_for(conn: asyncpg.Connection, obj: dict[str, Any]) -> str:
    """Our user: from the metadata we put on the checkout, else the Creem customer id."""
    metadata = _dict(obj.get("metadata"))
    raw = metadata.get("user_id")
    if isinstance(raw, str):
        try:
            user_id = uuid.UUID(raw)
        except ValueError:
            raise UnmatchedEvent(f"metadata.user_id {raw!r} is not a user id") from None
        found = await conn.fetchval("SELECT id::text FROM users WHERE id = $1", user_id)
        if found:
            return found
    customer = obj.get("customer")
    customer_id = customer.get("id") if isinstance(customer, dict) else customer
    if isinstance(customer_id, str):
        found = await conn.fetchval(
            "SELECT id::text FROM users WHERE creem_customer_id = $1", customer_id
        )
        if found:
            return found
    raise UnmatchedEvent("neither metadata.user_id nor the customer id names a user")


async def _checkout_completed(
    conn: asyncpg.Connection, event: CreemEvent, settings: Settings
) -> WebhookOutcome:
    obj = event.object
    order = _dict(obj.get("order"))
    paid = order.get("amount")
    if type(paid) is not int or paid <= 0:
        raise UnmatchedEvent("order.amount is missing")
    user_id = await _user_for(conn, obj)
    topup = None
    request_id = obj.get("request_id") or _dict(obj.get("metadata")).get("topup_id")
    if isinstance(request_id, str):
        try:
            topup = await conn.fetchrow(
                "SELECT id, amount_cents FROM topups WHERE id = $1 AND user_id = $2 FOR UPDATE",
                uuid.UUID(request_id),
                uuid.UUID(user_id),
            )
        except ValueError:
            topup = None
    # Credit what was paid, but never more than was asked for: sales tax that Creem (merchant of
    # record) adds to the order is not credit; a discount lowers it.
    credit_cents = min(paid, topup["amount_cents"]) if topup else paid
    order_id = order.get("id") or event.id
    row = await _adjust(
        conn,
        user_id,
        credit_cents * MICROS_PER_CENT,
        "topup",
        str(order_id),
        f"creem-order:{order_id}",
        settings,
    )
    if topup is not None:
        await conn.execute(
            "UPDATE topups SET status = 'paid', paid_at = now(), credited_micros = $2 "
            "WHERE id = $1",
            topup["id"],
            credit_cents * MICROS_PER_CENT,
        )
    customer = obj.get("customer")
    if isinstance(customer, dict) and isinstance(customer.get("id"), str):
        await conn.execute(
            "UPDATE users SET creem_customer_id = $2 WHERE id = $1 AND creem_customer_id IS NULL "
            "AND NOT EXISTS (SELECT FROM users WHERE creem_customer_id = $2)",
            uuid.UUID(user_id),
            customer["id"],
        )
    out = WebhookOutcome(row["outcome"], user_id, row["balance_micros"])
    if row["outcome"] == "applied":
        out.notifications.append(
            Notify(
                user_id,
                "topup_receipt",
                f"order:{order_id}",
                {
                    "amount_micros": credit_cents * MICROS_PER_CENT,
                    "balance_micros": row["balance_micros"],
                },
            )
        )
    return out


async def _subscription_paid(
    conn: asyncpg.Connection, event: CreemEvent, settings: Settings
) -> WebhookOutcome:
    user_id = await _user_for(conn, event.object)
    included = usd_to_micros(
        "subscription_included_usd", settings.billing.subscription_included_usd
    )
    await _resume_payment_failed(conn, user_id)
    if included <= 0:
        return WebhookOutcome("applied", user_id)
    row = await _adjust(
        conn,
        user_id,
        included,
        "subscription",
        event.id,
        f"creem-subscription-paid:{event.id}",
        settings,
    )
    return WebhookOutcome(row["outcome"], user_id, row["balance_micros"])


async def _refund_created(
    conn: asyncpg.Connection, event: CreemEvent, settings: Settings
) -> WebhookOutcome:
    try:
        refund = creem.refund(event)
    except ValueError as exc:
        raise UnmatchedEvent(str(exc)) from None
    hints: dict[str, Any] = {"customer": {"id": refund.customer_id}}
    if refund.user_id:
        hints["metadata"] = {"user_id": refund.user_id}
    user_id = await _user_for(conn, hints)
    # Take back what the payment credited: the refund includes sales tax we never credited.
    cents = refund.credited_share_cents()
    row = await _adjust(
        conn,
        user_id,
        -cents * MICROS_PER_CENT,
        "refund",
        refund.refund_id,
        f"creem-refund:{refund.refund_id}",
        settings,
    )
    return WebhookOutcome(row["outcome"], user_id, row["balance_micros"])


async def _payment_failed(
    conn: asyncpg.Connection, event: CreemEvent, settings: Settings
) -> WebhookOutcome:
    user_id = await _user_for(conn, event.object)
    await conn.execute(
        "UPDATE instances SET status = 'paused', status_reason = 'payment_failed' "
        "WHERE user_id = $1 AND status = 'active'",
        uuid.UUID(user_id),
    )
    return WebhookOutcome("applied", user_id)


async def _resume_payment_failed(conn: asyncpg.Connection, user_id: str) -> None:
    await conn.execute(
        "UPDATE instances SET status = 'active', status_reason = NULL "
        "WHERE user_id = $1 AND status = 'paused' AND status_reason = 'payment_failed'",
        uuid.UUID(user_id),
    )


_HANDLERS = {
    "checkout.completed": _checkout_completed,
    "subscription.paid": _subscription_paid,
    "refund.created": _refund_created,
    "subscription.past_due": _payment_failed,
    "payment.failed": _payment_failed,
}
