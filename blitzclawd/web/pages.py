"""The dashboard's pages: sign-in, the dashboard itself, topping up.

Each page renders what the signed-in user may see, read through the same named queries as the
API; the buttons call the JSON API from the page (static/*.js), so every change is checked by the
API's own declarations.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from blitzclawd import plugins
from blitzclawd.config import billing_minimum_micros
from blitzclawd.http.auth import Caller
from blitzclawd.http.context import CONTEXT
from blitzclawd.queries import instances as instance_rows
from blitzclawd.queries.billing import balance_summary, usage_lines
from blitzclawd.queries.subscriptions import ENDED, plan_of
from blitzclawd.web.prices import markup_text, price_rows
from blitzclawd.web.security import safe_return, signed_in, to_sign_in

TOPUP_AMOUNTS = (1000, 2500, 5000)  # cents: the spec's $10, $25, $50
CLERK_SCRIPT = "/npm/@clerk/clerk-js@5/dist/clerk.browser.js"

STATUS_WORDS = {
    "waiting_for_channel": "Waiting for its channel",
    "pending": "Setting up",
    "provisioning": "Setting up",
    "active": "Active",
    "paused": "Paused",
    "stopped": "Stopped",
    "error": "Needs attention",
}


def base_context(request: web.Request, user: Caller | None, **extra: Any) -> dict[str, Any]:
    auth = request.app[CONTEXT].settings.auth
    frontend = auth.clerk_frontend_api.rstrip("/")
    return {
        "user": user,
        "clerk_script": frontend + CLERK_SCRIPT if frontend else None,
        "clerk_key": auth.clerk_publishable_key,
        **extra,
    }


async def user_of(request: web.Request) -> Caller:
    user = await signed_in(request)
    if user is None:
        raise to_sign_in(request)
    return user


async def owned_instance(request: web.Request, user: Caller) -> Any:
    """The signed-in user's instance named in the path; another user's (or a malformed id) is a
    404 like a missing one."""
    try:
        instance_id = uuid.UUID(request.match_info["instance_id"])
    except ValueError:
        raise web.HTTPNotFound() from None
    pool = request.app[CONTEXT].pool
    row = await instance_rows.owned(pool, uuid.UUID(user.user_id or ""), instance_id)
    if row is None:
        raise web.HTTPNotFound()
    return row


def dollars(micros: int) -> str:
    return f"${micros / 1_000_000:,.2f}"


def _usd(amount: float) -> str:
    return f"${amount:,.0f}" if amount == int(amount) else f"${amount:,.2f}"


async def plan_context(request: web.Request, user_id: uuid.UUID) -> dict[str, Any]:
    """The base plan for a page: the live subscription (dates as YYYY-MM-DD), else the offer."""
    settings = request.app[CONTEXT].settings
    billing = settings.billing
    plan = await plan_of(request.app[CONTEXT].pool, user_id, billing.subscription_included_usd)
    live = plan if plan and plan["status"] not in ENDED else None
    if live:
        live = {
            **live,
            "renews_on": (live["renews_at"] or "")[:10] or None,
            "ends_on": (live["ends_at"] or "")[:10] or None,
        }
    return {
        "plan": live,
        "plan_offer": bool(settings.creem.subscription_product_id),
        "plan_price": _usd(billing.subscription_price_usd),
        "plan_included": _usd(billing.subscription_included_usd),
    }


async def landing(request: web.Request) -> web.Response:
    settings = request.app[CONTEXT].settings
    return aiohttp_jinja2.render_template(
        "landing.html",
        request,
        base_context(
            request,
            await signed_in(request),
            markup=markup_text(settings),
            minimum=dollars(billing_minimum_micros(settings)),
            models=price_rows(settings),  # exact: what the proxy charges per million tokens
        ),
    )


async def sign_in(request: web.Request) -> web.StreamResponse:
    back = safe_return(request.query.get("redirect_url"))
    if await signed_in(request) is not None:
        raise web.HTTPSeeOther(back)
    mode = "sign-up" if request.path == "/sign-up" else "sign-in"
    return aiohttp_jinja2.render_template(
        "sign_in.html", request, base_context(request, None, mode=mode, back=back)
    )


async def sign_out(request: web.Request) -> web.Response:
    return aiohttp_jinja2.render_template("sign_out.html", request, base_context(request, None))


async def dashboard(request: web.Request) -> web.Response:
    user = await user_of(request)
    ctx = request.app[CONTEXT]
    user_id = uuid.UUID(user.user_id or "")
    balance = await balance_summary(ctx.pool, str(user_id), billing_minimum_micros(ctx.settings))
    instances = await instance_rows.of_user(ctx.pool, user_id)
    today = dt.datetime.now(dt.UTC).date()
    month = await usage_lines(ctx.pool, user_id, today.replace(day=1), today)
    channels = plugins.channels()
    cards = [
        {
            "id": str(r["id"]),
            "status": r["status"],
            "status_text": STATUS_WORDS.get(r["status"], r["status"]),
            "channel": channels[r["channel_type"]].display_name
            if r["channel_type"] in channels
            else r["channel_type"],
            "label": channels[r["channel_type"]].label(r["channel_config"] or {})
            if r["channel_type"] in channels
            else None,
            "persona": r["persona_template"],
        }
        for r in instances
    ]
    return aiohttp_jinja2.render_template(
        "dashboard.html",
        request,
        base_context(
            request,
            user,
            balance=balance,
            available=dollars(balance["available_micros"]),
            reserved=dollars(balance["reserved_micros"]),
            minimum=dollars(balance["minimum_micros"]),
            instances=cards,
            month_cost=dollars(sum(r["cost_micros"] for r in month)),
            month_requests=sum(r["requests"] for r in month),
            subscribed_return=request.query.get("subscribed") == "1",
            **await plan_context(request, user_id),
        ),
    )


async def topup(request: web.Request) -> web.Response:
    user = await user_of(request)
    cfg = request.app[CONTEXT].settings.billing
    amounts = [a for a in TOPUP_AMOUNTS if cfg.topup_min_cents <= a <= cfg.topup_max_cents]
    return aiohttp_jinja2.render_template(
        "topup.html",
        request,
        base_context(
            request,
            user,
            amounts=[(a, f"${a / 100:,.0f}") for a in amounts],
            min_dollars=cfg.topup_min_cents // 100,
            max_dollars=cfg.topup_max_cents // 100,
        ),
    )


async def topup_return(request: web.Request) -> web.Response:
    user = await user_of(request)
    checkout = request.query.get("checkout_id", "")[:100]
    return aiohttp_jinja2.render_template(
        "topup_return.html", request, base_context(request, user, checkout_id=checkout)
    )
