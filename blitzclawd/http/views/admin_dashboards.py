"""GET /api/admin/metrics: the operators' dashboards over time (per hour or day): traffic,
revenue against cost and margin, pool server-hours, failures."""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web

from blitzclawd.http.admin_access import actor_of, plain
from blitzclawd.http.context import CONTEXT
from blitzclawd.http.declare import args_of
from blitzclawd.http.errors import ApiError
from blitzclawd.http.jsonutil import json_response
from blitzclawd.queries import dashboards as dashboard_rows

MAX_BUCKETS = {"hour": 24 * 31, "day": 366}


async def dashboards(request: web.Request) -> web.Response:
    """`?from=&to=&step=hour|day` (ISO dates or times, UTC; default the last 7 days by day):
    requests, proxy errors, active instances, tokens, revenue (charged usage; top-ups and
    subscriptions received) against cost (the same usage at list price, at the current markup;
    pool server-hours by location, priced by the provider when it lists prices), and failures
    (jobs, health alerts, emails) per step."""
    actor_of(request)
    ctx = request.app[CONTEXT]
    query = args_of(request).query
    step = query["step"] or "day"
    end = query["to"] or dt.datetime.now(dt.UTC)
    start = query["from"] or end - dt.timedelta(days=7)
    if start >= end:
        raise ApiError(422, "invalid_field", "from must be before to", field="from")
    unit = dt.timedelta(hours=1) if step == "hour" else dt.timedelta(days=1)
    if (end - start) / unit > MAX_BUCKETS[step]:
        raise ApiError(
            422, "invalid_field", f"at most {MAX_BUCKETS[step]} {step}s at once", field="from"
        )
    rows_, hours = await dashboard_rows.series(ctx.pool, start, end, step)
    markup = float(ctx.settings.pricing.markup)
    prices = await _hourly_prices(ctx)
    by_bucket: dict[dt.datetime, list[Any]] = {}
    for h in hours:
        by_bucket.setdefault(h["at"], []).append(h)
    points = []
    for r in rows_:
        servers = by_bucket.get(r["at"], [])
        server_cost = (
            sum(h["hours"] * prices[h["location"]] for h in servers if h["location"] in prices)
            if prices
            else None
        )
        points.append(
            {
                **plain(r),
                "upstream_cost_micros": round(r["charged_micros"] / markup),
                "margin_micros": r["charged_micros"] - round(r["charged_micros"] / markup),
                "server_hours": {h["location"]: round(h["hours"], 4) for h in servers},
                "server_cost": None if server_cost is None else round(server_cost, 6),
            }
        )
    return json_response(
        {
            "from": start.isoformat(),
            "to": end.isoformat(),
            "step": step,
            "server_cost_currency": "EUR" if prices else None,
            "points": points,
        }
    )


async def _hourly_prices(ctx: Any) -> dict[str, float]:
    """The pool server type's hourly gross price per location, as the provider lists it."""
    prices = getattr(ctx.provider, "prices", None)
    if prices is None:
        return {}
    try:
        listed = await prices()
    except Exception:  # the provider unreachable: costs shown as unknown, not as zero
        return {}
    return {location: float(p.hourly_gross) for location, p in listed.items()}
