"""/settings: the user's account — profile, API keys (a new key is shown once, by the page that
made it), automatic top-ups and past payments; /instances/{id}/soul, the persona editor; and
/device, where the command line's sign-in is confirmed."""

from __future__ import annotations

import uuid

import aiohttp_jinja2
from aiohttp import web

from blitzclawd.config import billing_minimum_micros
from blitzclawd.fleet.personas import PERSONAS, SOUL_MAX_CHARS
from blitzclawd.http.context import CONTEXT
from blitzclawd.queries import accounts
from blitzclawd.queries import device_logins as device_rows
from blitzclawd.queries import instances as instance_rows
from blitzclawd.queries import integrations as integration_rows
from blitzclawd.queries.billing import balance_summary, topups_of
from blitzclawd.web.pages import base_context, owned_instance, plan_context, user_of


async def settings_page(request: web.Request) -> web.Response:
    user = await user_of(request)
    ctx = request.app[CONTEXT]
    user_id = uuid.UUID(user.user_id or "")
    profile = await accounts.profile(ctx.pool, user_id)
    keys = [k for k in await accounts.keys_of(ctx.pool, user_id) if k["revoked_at"] is None]
    balance = await balance_summary(ctx.pool, str(user_id), billing_minimum_micros(ctx.settings))
    payments = await topups_of(ctx.pool, user_id, 50)
    cfg = ctx.settings.billing
    return aiohttp_jinja2.render_template(
        "settings.html",
        request,
        base_context(
            request,
            user,
            email=profile["email"],
            keys=keys,
            auto=balance["auto_topup"],
            minimum_dollars=balance["minimum_cents"] // 100,
            min_dollars=cfg.topup_min_cents // 100,
            max_dollars=cfg.topup_max_cents // 100,
            **await plan_context(request, user_id),
            payments=[
                {
                    "when": (p["paid_at"] or p["created_at"]).date().isoformat(),
                    "amount": f"${p['amount_cents'] / 100:,.2f}",
                    "status": p["status"],
                    "order_id": p["order_id"],
                }
                for p in payments
            ],
        ),
    )


async def soul_page(request: web.Request) -> web.Response:
    user = await user_of(request)
    row = await owned_instance(request, user)
    instance_id = row["id"]
    persona = row["persona_template"] or "assistant"
    # A template persona's SOUL.md is the template, then the user's additions (what is stored);
    # a custom persona's is the user's whole text.
    template = PERSONAS.get(persona, "")
    return aiohttp_jinja2.render_template(
        "soul.html",
        request,
        base_context(
            request,
            user,
            instance_id=str(instance_id),
            persona=persona,
            template=template,
            custom=row["soul_md"] or "",
            soul_max=SOUL_MAX_CHARS,
        ),
    )


async def device_page(request: web.Request) -> web.Response:
    """Where a person confirms the code `blitzclaw auth login` shows them."""
    user = await user_of(request)
    raw = request.query.get("code", "")[:20].upper()
    found = await device_rows.pending_by_user_code(request.app[CONTEXT].pool, raw) if raw else None
    return aiohttp_jinja2.render_template(
        "device.html",
        request,
        base_context(
            request,
            user,
            code=raw,
            client_name=found["client_name"] if found else None,
        ),
    )


async def integrations_page(request: web.Request) -> web.Response:
    """/settings/integrations: the user's Google account (Gmail and Calendar, read only), which
    assistants may use it, connect and remove; the API does the changes (integrations.js)."""
    user = await user_of(request)
    ctx = request.app[CONTEXT]
    user_id = uuid.UUID(user.user_id or "")
    found = await integration_rows.of_user(ctx.pool, user_id)
    instances = [
        {"id": str(r["id"]), "name": str(r["id"])[:8], "status": r["status"]}
        for r in await instance_rows.of_user(ctx.pool, user_id)
    ]
    google = next((i for i in found if i["provider"] == "google"), None)
    attached = {str(x) for x in google["attached_instances"]} if google else set()
    return aiohttp_jinja2.render_template(
        "integrations.html",
        request,
        base_context(
            request,
            user,
            configured=bool(
                ctx.settings.google.client_id and ctx.secrets.get("google_client_secret")
            ),
            connected_now=request.query.get("connected") == "google",
            google=None
            if google is None
            else {
                "id": str(google["id"]),
                "status": google["status"],
                "email": google["account_email"],
                "broken_reason": google["broken_reason"],
                "scopes": [s.rsplit("/", 1)[-1] for s in google["scopes"] if "/" in s],
            },
            instances=[{**i, "attached": i["id"] in attached} for i in instances],
        ),
    )
