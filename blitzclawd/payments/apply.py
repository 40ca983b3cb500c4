"""What a Creem webhook does to our books, in ONE transaction with the record of its event id.

Creem retries and may deliver concurrently; the event id's row in processed_webhook_events is
inserted first in the same transaction as the effect, so a replay finds it and changes nothing.
Ledger keys are derived from the top-up / refund / event ids as a second line of defence.

Money comes in only for what we sold: `checkout.completed` credits the top-up its `request_id`
names, to that top-up's user, what was paid up to the top-up's amount, in USD. Anything else is
recorded in unmatched_payments (see blitzclawd.payments.unmatched), logged at error level and
acknowledged (200): the event is Creem's signed word, a retry would say the same again.

An event's bad data is that event's answer, never a crash: a field we refuse (missing, of the
wrong type, an amount beyond creem.MAX_CENTS) or data the database refuses rolls back only the
event's effect (a savepoint); the event id and the unmatched row still commit.

Only the billing actor calls this (money's one writer); every balance change here is a
blitzclawd.ledger entry. Subscription events also keep the plan's row (queries.subscriptions),
in the same transaction.

Why one module: every event's effect on the books, side by side, sharing the one transaction's
helpers (the user an event names, the ledger adjustment, the pause and resume).
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson

from blitzclawd import ledger
from blitzclawd.config import Settings, billing_minimum_micros, usd_to_micros
from blitzclawd.notify.queue import queue_notification
from blitzclawd.payments import creem, unmatched
from blitzclawd.payments.creem import CreemEvent
from blitzclawd.payments.unmatched import Unmatched
from blitzclawd.queries import subscriptions
from blitzclawd.runtime.messages import Notify

log = logging.getLogger("blitzclawd.payments")

MICROS_PER_CENT = 10_000
TOPUP_CURRENCY = "USD"  # top-ups are sold in USD (creem.unit_cents is a USD price)
PROVIDER = "creem"


@dataclass(slots=True)
class WebhookOutcome:
    # "applied" | "duplicate" | "recorded" (acknowledged, no effect) | "unmatched" (acknowledged,
    # kept for the operator) | "failed" (not processed: answered 500, so Creem retries)
    status: str
    user_id: str | None = None
    balance_micros: int | None = None
    notifications: list[Notify] = field(default_factory=list)
    # Emails already written in the event's transaction: the notifier only has to send them.
    queued: list[int] = field(default_factory=list)


async def apply_creem_event(
    pool: asyncpg.Pool, event: CreemEvent, settings: Settings
) -> WebhookOutcome:
    payload = orjson.dumps(event.object).decode()  # parse_event cleaned it for jsonb
    async with pool.acquire() as conn, conn.transaction():
        first = await conn.fetchval(
            """INSERT INTO processed_webhook_events (provider, event_id, event_type, payload)
               VALUES ($1, $2, $3, $4::text::jsonb)
               ON CONFLICT DO NOTHING RETURNING true""",
            PROVIDER,
            event.id,
            event.type,
            payload,
        )
        if not first:
            return WebhookOutcome("duplicate")
        handler = _HANDLERS.get(event.type)
        if handler is None:
            return WebhookOutcome("recorded")
        try:
            async with conn.transaction():  # a savepoint: a refused effect keeps the record
                return await handler(conn, event, settings)
        except Unmatched as exc:
            miss = exc
        except ValueError as exc:  # creem's extractors name the field; asyncpg's encoders too
            miss = Unmatched("invalid_data", str(exc))
        except (
            asyncpg.DataError,  # a value the database refuses (out of range, bad text)
            asyncpg.IntegrityConstraintViolationError,  # e.g. an order id paying two top-ups
            asyncpg.ProgramLimitExceededError,  # e.g. a value too large for an index
        ) as exc:
            miss = Unmatched("rejected_by_database", f"{type(exc).__name__}: {exc}")
        await _record(conn, event, miss)
        return WebhookOutcome("unmatched", miss.user_id)


async def _record(conn: asyncpg.Connection, event: CreemEvent, miss: Unmatched) -> None:
    await unmatched.record(conn, PROVIDER, event.id, event.type, event.object, miss)
    log.error(
        "payment event not applied as sent; recorded for the operator",
        extra={
            "event_id": event.id,
            "event_type": event.type,
            "reason": miss.reason,
            "detail": miss.detail,
            "amount_cents": miss.amount_cents,
            "currency": miss.currency,
            "topup_id": str(miss.topup_id) if miss.topup_id else None,
            "user_id": miss.user_id,
        },
    )


async def _adjust(
    conn: asyncpg.Connection,
    user_id: str,
    micros: int,
    kind: str,
    reference: str,
    key: str,
    settings: Settings,
    pause_reason: str = "balance_depleted",
) -> ledger.Adjusted:
    entry = ledger.Entry(user_id, micros, kind, reference, key)
    return await ledger.adjust(conn, entry, billing_minimum_micros(settings), pause_reason)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


async def _user_for(conn: asyncpg.Connection, obj: dict[str, Any]) -> str:
    """A subscription event's user: the metadata's user, else the known Creem customer."""
    metadata = _dict(obj.get("metadata"))
    raw = metadata.get("user_id")
    if isinstance(raw, str):
        try:
            found = await conn.fetchval("SELECT id::text FROM users WHERE id = $1", uuid.UUID(raw))
        except ValueError:
            found = None
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
    raise Unmatched(
        "unknown_user",
        "neither metadata.user_id nor the customer id names a user",
        claimed_user=raw if isinstance(raw, str) else None,
    )


def _same_user(claimed: str, user_id: str) -> bool:
    try:
        return uuid.UUID(claimed) == uuid.UUID(user_id)
    except ValueError:
        return False


async def _checkout_completed(
    conn: asyncpg.Connection, event: CreemEvent, settings: Settings
) -> WebhookOutcome:
    """Credit the top-up `request_id` names: to its user, what was paid up to its amount.

    Paid less than asked (a discount): what was paid is credited, and the top-up is done. Paid
    more, in another currency, for another user, or for no top-up of ours: nothing is credited.
    `order.amount` is read as the order before tax (Creem, the merchant of record, adds sales tax
    on top and keeps it: transaction.amount vs amount_paid in its refund sample). Should it ever
    include the tax (UNVERIFIED), an amount above the top-up that `order.tax_amount` accounts for
    is credited without the tax; either way never more than the top-up.
    """
    if event.object.get("subscription") is not None:
        return await _subscription_checkout(conn, event)
    p = creem.checkout_payment(event)
    facts: dict[str, Any] = {
        "amount_cents": p.amount_cents,
        "currency": p.currency,
        "request_id": p.request_id,
        "claimed_user": p.user_id,
    }
    if p.request_id is None:
        raise Unmatched("no_request_id", "the checkout names no top-up of ours", **facts)
    try:
        topup_id = uuid.UUID(p.request_id)
    except ValueError:
        raise Unmatched("unknown_topup", "request_id is not a top-up id", **facts) from None
    # FOR UPDATE: two events for one top-up (a replay under a new id) apply one after the other.
    topup = await conn.fetchrow(
        "SELECT id, user_id::text AS user_id, amount_cents, checkout_id, status, order_id "
        "FROM topups WHERE id = $1 FOR UPDATE",
        topup_id,
    )
    if topup is None:
        raise Unmatched("unknown_topup", "request_id names no top-up we created", **facts)
    facts.update(topup_id=topup["id"], user_id=topup["user_id"])
    if topup["checkout_id"] is not None and topup["checkout_id"] != p.checkout_id:
        raise Unmatched(
            "checkout_mismatch", f"the top-up was created with {topup['checkout_id']}", **facts
        )
    if p.user_id is not None and not _same_user(p.user_id, topup["user_id"]):
        raise Unmatched("user_mismatch", "metadata.user_id is not the top-up's user", **facts)
    if p.currency != TOPUP_CURRENCY:
        raise Unmatched("currency", f"paid in {p.currency}, sold in {TOPUP_CURRENCY}", **facts)
    paid = p.amount_cents
    if paid > topup["amount_cents"] and p.tax_cents and paid - p.tax_cents <= topup["amount_cents"]:
        paid -= p.tax_cents  # the sales tax was counted in: it is Creem's, not credit
    if paid > topup["amount_cents"]:
        raise Unmatched(
            "amount_above_topup", f"the top-up is {topup['amount_cents']} cents", **facts
        )
    if topup["status"] == "paid":
        if topup["order_id"] == p.order_id:  # the same order under another event id
            return WebhookOutcome("duplicate", topup["user_id"])
        raise Unmatched("topup_already_paid", f"paid by order {topup['order_id']}", **facts)
    user_id = topup["user_id"]
    credit = paid * MICROS_PER_CENT
    await conn.execute(
        "UPDATE topups SET status = 'paid', paid_at = now(), credited_micros = $2, "
        "order_id = $3, transaction_id = $4 WHERE id = $1",
        topup["id"],
        credit,
        p.order_id,
        p.transaction_id,
    )
    await conn.execute(
        "UPDATE users SET creem_customer_id = $2 WHERE id = $1 AND creem_customer_id IS NULL "
        "AND NOT EXISTS (SELECT FROM users WHERE creem_customer_id = $2)",
        uuid.UUID(user_id),
        p.customer_id,
    )
    if credit == 0:  # a 100 % discount: the top-up is paid, and nothing was
        log.warning("top-up paid with 0", extra={"topup_id": str(topup["id"]), "event": event.id})
        return WebhookOutcome("applied", user_id)
    row = await _adjust(
        conn, user_id, credit, "topup", p.order_id, f"creem-topup:{topup['id']}", settings
    )
    out = WebhookOutcome(row.outcome, user_id, row.balance_micros)
    if row.outcome == "applied":
        # A paid top-up is a payment that went through: what the payment_failed email and the
        # paused notice ask for ("update your payment or top up"). Prepaid credit covers usage.
        await _resume_payment_failed(conn, user_id)
        out.notifications.append(
            Notify(
                user_id,
                "topup_receipt",
                f"order:{p.order_id}",
                {"amount_micros": credit, "balance_micros": row.balance_micros},
            )
        )
    return out


def _when(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        at = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)


async def _track(
    conn: asyncpg.Connection,
    event: CreemEvent,
    obj: dict[str, Any],
    user_id: str,
    status: str | None = None,
) -> None:
    """Keep the plan's row (queries.subscriptions) as this event says, unless a newer event did
    already. A subscription is one user's for good: an event naming it for another changes
    nothing (Unmatched, recorded for the operator)."""
    state = creem.subscription_state(obj)
    owner = await subscriptions.owner_of(conn, state.subscription_id)
    if owner is not None and not _same_user(owner, user_id):
        raise Unmatched(
            "user_mismatch",
            f"subscription {state.subscription_id} belongs to another user",
            claimed_user=user_id,
            user_id=owner,
        )
    at = (
        dt.datetime.fromtimestamp(event.created_at_ms / 1000, dt.UTC)
        if event.created_at_ms is not None and 0 <= event.created_at_ms < 10**14
        else dt.datetime.now(dt.UTC)
    )
    status = status or state.status
    await subscriptions.record(
        conn,
        subscription_id=state.subscription_id,
        user_id=uuid.UUID(user_id),
        product_id=state.product_id,
        status=status,
        period_end=_when(state.period_end),
        ended_at=(_when(state.canceled_at) or at) if status in subscriptions.ENDED else None,
        event_at=at,
    )


async def _subscription_checkout(conn: asyncpg.Connection, event: CreemEvent) -> WebhookOutcome:
    """A paid checkout of the plan: the subscription starts; its credit comes with
    `subscription.paid` (Creem sends one for the first period too), never with the checkout."""
    user_id = await _user_for(conn, event.object)
    sub = event.object["subscription"]
    if isinstance(sub, str):
        sub = {"id": sub}
    if not isinstance(sub, dict):
        raise ValueError("object.subscription must be an id or an object")
    await _track(conn, event, sub, user_id)
    return WebhookOutcome("applied", user_id)


async def _subscription_changed(
    conn: asyncpg.Connection, event: CreemEvent, settings: Settings
) -> WebhookOutcome:
    """subscription.active, .scheduled_cancel, .canceled, .expired, .update, .trialing, .paused:
    the plan's row follows; no money moves. One that names no user of ours (not a subscription
    we sold) is acknowledged and recorded like any event we do not act on."""
    try:
        user_id = await _user_for(conn, event.object)
    except Unmatched as miss:
        if miss.reason == "unknown_user":
            return WebhookOutcome("recorded")
        raise
    kind = event.type.removeprefix("subscription.")
    forced = {"canceled": "canceled", "expired": "expired", "scheduled_cancel": "scheduled_cancel"}
    await _track(conn, event, event.object, user_id, forced.get(kind))
    return WebhookOutcome("applied", user_id)


async def _subscription_past_due(
    conn: asyncpg.Connection, event: CreemEvent, settings: Settings
) -> WebhookOutcome:
    user_id = await _user_for(conn, event.object)
    await _track(conn, event, event.object, user_id, "past_due")
    return await _payment_failed(conn, event, settings)


async def _subscription_paid(
    conn: asyncpg.Connection, event: CreemEvent, settings: Settings
) -> WebhookOutcome:
    user_id = await _user_for(conn, event.object)
    await _track(conn, event, event.object, user_id)
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
    return WebhookOutcome(row.outcome, user_id, row.balance_micros)


async def _refund_created(
    conn: asyncpg.Connection, event: CreemEvent, settings: Settings
) -> WebhookOutcome:
    """Take back what a top-up credited: never more than is left of that credit.

    The refund is matched to the top-up by its order, transaction or checkout; the debit is the
    refund's pre-tax share (Creem refunds include the tax we never credited), capped at the
    top-up's credit less what earlier refunds took. A refund of anything else (a subscription
    payment, an order we never credited) moves nothing and is kept for the operator.
    """
    r = creem.refund(event)
    facts: dict[str, Any] = {
        "amount_cents": r.amount_cents,
        "currency": r.currency,
        "claimed_user": r.user_id,
    }
    rows = await conn.fetch(
        "SELECT id, user_id::text AS user_id, credited_micros, refunded_micros FROM topups "
        "WHERE status = 'paid' AND (order_id = $1 OR transaction_id = $2 OR checkout_id = $3) "
        "FOR UPDATE",
        r.order_id,
        r.transaction_id,
        r.checkout_id,
    )
    if len(rows) != 1:
        detail = "it names no top-up we credited" if not rows else "it names several top-ups"
        raise Unmatched("unknown_payment", detail, **facts)
    topup = rows[0]
    facts.update(topup_id=topup["id"], user_id=topup["user_id"])
    if r.currency != TOPUP_CURRENCY:
        raise Unmatched("currency", f"refunded in {r.currency}, sold in {TOPUP_CURRENCY}", **facts)
    asked = r.credited_share_cents() * MICROS_PER_CENT
    left = (topup["credited_micros"] or 0) - topup["refunded_micros"]
    debit = min(asked, left)
    if debit <= 0:
        raise Unmatched("refund_above_credit", "the top-up's credit is refunded already", **facts)
    user_id = topup["user_id"]
    row = await _adjust(
        conn,
        user_id,
        -debit,
        "refund",
        r.refund_id,
        f"creem-refund:{r.refund_id}",
        settings,
    )
    if row.outcome != "applied":
        return WebhookOutcome(row.outcome, user_id, row.balance_micros)
    await conn.execute(
        "UPDATE topups SET refunded_micros = refunded_micros + $2 WHERE id = $1",
        topup["id"],
        debit,
    )
    if debit < asked:  # applied up to the credit; the rest is the operator's to look at
        await _record(
            conn,
            event,
            Unmatched(
                "refund_above_credit",
                f"debited {debit} of {asked} micro-USD: the rest exceeds the top-up's credit",
                **facts,
            ),
        )
    return WebhookOutcome("applied", user_id, row.balance_micros)


async def _payment_failed(
    conn: asyncpg.Connection, event: CreemEvent, settings: Settings
) -> WebhookOutcome:
    user_id = await _user_for(conn, event.object)
    paused = await conn.fetch(
        "UPDATE instances SET status = 'paused', status_reason = 'payment_failed' "
        "WHERE user_id = $1 AND status = 'active' RETURNING id",
        uuid.UUID(user_id),
    )
    # Told once per event, in this transaction (a replay is a duplicate before it gets here;
    # the event id as the period guards the rest): what happened, what we did, what they can do.
    note = Notify(
        user_id,
        "payment_failed",
        f"creem:{event.id}",
        {
            "dashboard_url": settings.notify.app_url.rstrip("/") + "/dashboard",
            "paused_instances": len(paused),
        },
    )
    out = WebhookOutcome("applied", user_id)
    queued = await queue_notification(conn, note)
    if queued is not None:
        out.queued.append(queued)
    return out


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
    "subscription.past_due": _subscription_past_due,
    "payment.failed": _payment_failed,
    **{
        f"subscription.{kind}": _subscription_changed
        for kind in (
            "active",
            "scheduled_cancel",
            "canceled",
            "expired",
            "update",
            "trialing",
            "paused",
        )
    },
}
