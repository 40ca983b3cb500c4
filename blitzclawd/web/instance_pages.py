"""The pages of an assistant: the new-assistant wizard, and one assistant's own page.

The wizard's channels come from the loaded channel plugins (their fields, as GET /api/channels
describes them), so a plugin's channel needs no page of its own; creating and every later change
go through the JSON API from the page.
"""

from __future__ import annotations

import uuid

import aiohttp_jinja2
from aiohttp import web

from blitzclawd import plugins
from blitzclawd.fleet.openclaw_config import OFFICIAL_APIS
from blitzclawd.fleet.personas import ABOUT, PERSONAS, SOUL_MAX_CHARS
from blitzclawd.http.context import CONTEXT
from blitzclawd.queries import instances as instance_rows
from blitzclawd.web.pages import STATUS_WORDS, base_context, dollars, owned_instance, user_of

PERSONA_TITLES = {"assistant": "Personal assistant", "dev": "Developer", "creative": "Creative"}


async def new_instance(request: web.Request) -> web.Response:
    user = await user_of(request)
    personas = [
        {"name": n, "title": PERSONA_TITLES.get(n, n.title()), "about": ABOUT.get(n, ""), "soul": s}
        for n, s in PERSONAS.items()
    ]
    channels = [
        {"type": c.name, "display_name": c.display_name, "fields": [f.as_dict() for f in c.fields]}
        for c in plugins.channels().values()
    ]
    return aiohttp_jinja2.render_template(
        "new_instance.html",
        request,
        base_context(request, user, personas=personas, channels=channels, soul_max=SOUL_MAX_CHARS),
    )


async def instance_page(request: web.Request) -> web.Response:
    user = await user_of(request)
    ctx = request.app[CONTEXT]
    row = await owned_instance(request, user)
    instance_id = uuid.UUID(row["id"])
    usage = await instance_rows.usage_24h(ctx.pool, uuid.UUID(user.user_id or ""), instance_id)
    own = await instance_rows.own_limits(ctx.pool, instance_id)
    glob = ctx.settings.limits
    per_hour = (
        own["msgs_per_hour"] if own and own["msgs_per_hour"] is not None else glob.messages_per_hour
    )
    per_day = (
        own["tokens_per_day"] if own and own["tokens_per_day"] is not None else glob.tokens_per_day
    )
    channel = plugins.channels().get(row["channel_type"])
    public = row["channel_config"] or {}
    return aiohttp_jinja2.render_template(
        "instance.html",
        request,
        base_context(
            request,
            user,
            instance={
                "id": str(row["id"]),
                "status": row["status"],
                "status_text": STATUS_WORDS.get(row["status"], row["status"]),
                "reason": row["status_reason"],
                "channel_type": row["channel_type"],
                "channel": channel.display_name if channel else row["channel_type"],
                "label": channel.label(public) if channel else None,
                "setup_text": channel.setup_text(public) if channel else None,
                "persona": row["persona_template"],
                # In error after it ran (a health failure) or before (its set-up failed).
                "was_set_up": row["ip_address"] is not None and bool(row["channel_config"]),
            },
            usage={**usage, "cost": dollars(usage["cost_micros"])},
            limits={
                "per_hour": f"{per_hour:,} messages an hour" if per_hour else "no hourly limit",
                "per_day": f"{per_day:,} tokens a day" if per_day else "no daily limit",
            },
            fields=[f.as_dict() for f in channel.fields] if channel else [],
            providers=OFFICIAL_APIS,
            own_key=bool(row["use_own_api_key"]),
        ),
    )
