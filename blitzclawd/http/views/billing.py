"""/api/billing/*: top-ups through Creem, the base plan, balance, usage, auto-top-up. Every query
is scoped by the caller's own user id."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import Iterator

from aiohttp import web

from blitzclawd.config import billing_minimum_micros
from blitzclawd.http.auth import require_user
from blitzclawd.http.context import CONTEXT
from blitzclawd.http.declare import args_of
from blitzclawd.http.errors import ApiError
from blitzclawd.http.jsonutil import json_response
from blitzclawd.payments import subscriptions as plan
from blitzclawd.payments.creem import CreemError
from blitzclawd.payments.topups import PaymentsUnconfigured, create_topup
from blitzclawd.queries.billing import (
    MICROS_PER_CENT,
    balance_summary,
    cents,
    set_auto_topup,
    topups_of,
    usage_lines,
)
from blitzclawd.queries.subscriptions import plan_of

log = logging.getLogger("blitzclawd.billing")

MAX_USAGE_DAYS = 366


async def balance(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    minimum = billing_minimum_micros(ctx.settings)
    user_id = require_user(request)
    summary = await balance_summary(ctx.pool, user_id, minimum)
    included = ctx.settings.billing.subscription_included_usd
    summary["plan"] = await plan_of(ctx.pool, uuid.UUID(user_id), included)
    return json_response(summary)


@contextlib.contextmanager
def _plan_call(what: str, unchanged: str) -> Iterator[None]:
    """The plan's and Creem's failures common to subscribing and cancelling, as API errors."""
    try:
        yield
    except plan.PlanUnconfigured:
        raise _not_configured() from None
    except CreemError as exc:
        log.error(f"subscription {what} failed", extra={"status": exc.status})
        raise ApiError(
            502, "payments_unavailable", f"the payment provider did not answer; {unchanged}"
        ) from None


def _not_configured() -> ApiError:
    return ApiError(
        503, "not_configured", "the base plan is not offered here (no Creem subscription product)"
    )


async def subscribe(request: web.Request) -> web.Response:
    """Start the base plan: a Creem checkout of the subscription product."""
    ctx = request.app[CONTEXT]
    user_id = require_user(request)
    if ctx.http is None:
        raise _not_configured()
    with _plan_call("checkout", "nothing was charged"):
        try:
            checkout = await plan.subscribe(ctx.pool, ctx.http, ctx.settings, ctx.secrets, user_id)
        except plan.AlreadySubscribed:
            raise ApiError(
                409,
                "already_subscribed",
                "you are subscribed already; cancel first to subscribe again",
            ) from None
        except plan.CheckoutOpening:
            raise ApiError(
                409,
                "checkout_opening",
                "your checkout is still being opened; try again in a minute",
            ) from None
    return json_response(
        {"checkout_url": checkout.checkout_url, "checkout_id": checkout.id}, status=201
    )


async def unsubscribe(request: web.Request) -> web.Response:
    """Cancel the base plan at the end of the paid period (Creem's scheduled cancel)."""
    ctx = request.app[CONTEXT]
    user_id = require_user(request)
    if ctx.http is None:
        raise _not_configured()
    with _plan_call("cancel", "your subscription is unchanged"):
        try:
            done = await plan.cancel(ctx.pool, ctx.http, ctx.settings, ctx.secrets, user_id)
        except plan.NoSubscription:
            raise ApiError(404, "no_subscription", "you have no subscription to cancel") from None
    return json_response(
        {
            "status": done.status,
            "ends_at": done.ends_at.isoformat() if done.ends_at else None,
        }
    )


async def topup(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    user_id = require_user(request)
    amount = args_of(request).body["amount_cents"]  # within the range, in Creem's units
    if ctx.http is None:
        raise ApiError(503, "payments_unavailable", "payments are not configured")
    try:
        made = await create_topup(ctx.pool, ctx.http, ctx.settings, ctx.secrets, user_id, amount)
    except PaymentsUnconfigured:
        raise ApiError(503, "payments_unavailable", "payments are not configured") from None
    except CreemError as exc:
        log.error("checkout creation failed", extra={"status": exc.status})
        raise ApiError(
            502, "payments_unavailable", "the payment provider did not answer; nothing was charged"
        ) from None
    return json_response(
        {
            "checkout_url": made.checkout.checkout_url,
            "checkout_id": made.checkout.id,
            "topup_id": made.id,
            "amount_cents": amount,
        },
        status=201,
    )


async def usage(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    user_id = uuid.UUID(require_user(request))
    today = dt.datetime.now(dt.UTC).date()
    query = args_of(request).query
    to = query["to"] or today
    frm = query["from"]
    if frm is None:  # the 30 days up to `to`, computed only when no `from` was given
        frm = (
            to - dt.timedelta(days=30) if to > dt.date.min + dt.timedelta(days=30) else dt.date.min
        )
    if frm > to:
        raise ApiError(422, "invalid_field", "from must not be after to", field="from")
    if (to - frm).days > MAX_USAGE_DAYS:
        raise ApiError(422, "invalid_field", f"at most {MAX_USAGE_DAYS} days at once", field="from")
    rows = await usage_lines(ctx.pool, user_id, frm, to)
    lines = [
        {
            "day": r["day"].isoformat(),
            "model": r["model"],
            "instance_id": r["instance_id"],
            "requests": r["requests"],
            "input_tokens": r["input_tokens"],
            "output_tokens": r["output_tokens"],
            "cache_write_tokens": r["cache_write_tokens"],
            "cache_read_tokens": r["cache_read_tokens"],
            "cost_micros": r["cost_micros"],
            "cost_cents": cents(r["cost_micros"]),
        }
        for r in rows
    ]
    total = sum(line["cost_micros"] for line in lines)
    return json_response(
        {
            "from": frm.isoformat(),
            "to": to.isoformat(),
            "lines": lines,
            "by_day": _group(lines, "day"),
            "by_model": _group(lines, "model"),
            "by_instance": _group(lines, "instance_id"),
            "total": {
                "cost_micros": total,
                "cost_cents": cents(total),
                "requests": sum(line["requests"] for line in lines),
            },
        }
    )


def _group(lines: list[dict], key: str) -> list[dict]:
    out: dict[str, dict] = {}
    for line in lines:
        g = out.setdefault(
            line[key],
            {
                key: line[key],
                "requests": 0,
                "input_tokens": 0,
                "output_tokens": 0,
                "cost_micros": 0,
            },
        )
        for f in ("requests", "input_tokens", "output_tokens", "cost_micros"):
            g[f] += line[f]
    for g in out.values():
        g["cost_cents"] = cents(g["cost_micros"])
    return list(out.values())


async def auto_topup(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    user_id = require_user(request)
    body = args_of(request).body
    enabled = body["enabled"]
    threshold, amount = body.get("threshold_cents"), body.get("amount_cents")
    minimum_cents = cents(billing_minimum_micros(ctx.settings))
    if enabled and threshold is not None and threshold < minimum_cents:
        raise ApiError(
            422,
            "invalid_field",
            f"threshold_cents must be at least the {minimum_cents}-cent minimum "
            "balance (below it your assistant is already paused)",
            field="threshold_cents",
        )
    await set_auto_topup(
        ctx.pool,
        uuid.UUID(user_id),
        enabled,
        None if threshold is None else threshold * MICROS_PER_CENT,
        None if amount is None else amount * MICROS_PER_CENT,
    )
    summary = await balance_summary(ctx.pool, user_id, billing_minimum_micros(ctx.settings))
    return json_response(summary["auto_topup"])


async def topups(request: web.Request) -> web.Response:
    """The caller's top-ups, newest first: amount, status, what was credited (and refunded),
    and Creem's checkout and order ids (what Creem's own receipts and support refer to)."""
    ctx = request.app[CONTEXT]
    user_id = uuid.UUID(require_user(request))
    found = await topups_of(ctx.pool, user_id, args_of(request).query["limit"])
    return json_response(
        {
            "topups": [
                {
                    **dict(r),
                    "created_at": r["created_at"].isoformat(),
                    "paid_at": r["paid_at"].isoformat() if r["paid_at"] else None,
                }
                for r in found
            ]
        }
    )
