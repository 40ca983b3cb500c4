"""/dashboard/usage: what the user's assistants cost, by day, model and assistant: a chart (an SVG
drawn here: no script, nothing to load), the table, and the same lines as CSV."""

from __future__ import annotations

import csv
import datetime as dt
import io
import uuid
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from blitzclawd.http.context import CONTEXT
from blitzclawd.queries.billing import usage_lines
from blitzclawd.web.pages import base_context, dollars, user_of

MAX_DAYS = 366
PALETTE = ("#4f46e5", "#0ea5e9", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#64748b")
CHART_W, CHART_H, BAR_GAP = 720, 220, 2


def _range(request: web.Request) -> tuple[dt.date, dt.date, str | None]:
    """The asked-for days (default: the last 30), or the default and why the asked ones are not."""
    today = dt.datetime.now(dt.UTC).date()
    default = (today - dt.timedelta(days=29), today)
    try:
        frm = dt.date.fromisoformat(request.query["from"]) if request.query.get("from") else None
        to = dt.date.fromisoformat(request.query["to"]) if request.query.get("to") else None
    except ValueError:
        return (*default, "Dates look like 2026-12-31.")
    to = to or today
    frm = frm or to - dt.timedelta(days=29)
    if frm > to:
        return (*default, "The first day must not be after the last.")
    if (to - frm).days >= MAX_DAYS:
        return (*default, f"At most {MAX_DAYS} days at once.")
    return frm, to, None


async def _lines(request: web.Request) -> tuple[Any, dt.date, dt.date, str | None, list[Any]]:
    user = await user_of(request)
    frm, to, problem = _range(request)
    rows = await usage_lines(request.app[CONTEXT].pool, uuid.UUID(user.user_id or ""), frm, to)
    return user, frm, to, problem, rows


def chart(rows: list[Any], frm: dt.date, to: dt.date) -> dict[str, Any]:
    """Bars per day, stacked by model, scaled to the costliest day."""
    days = [frm + dt.timedelta(days=n) for n in range((to - frm).days + 1)]
    models = sorted({r["model"] for r in rows})
    colour = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(models)}
    per_day: dict[dt.date, dict[str, int]] = {}
    for r in rows:
        cell = per_day.setdefault(r["day"], {})
        cell[r["model"]] = cell.get(r["model"], 0) + r["cost_micros"]
    top = max((sum(v.values()) for v in per_day.values()), default=0) or 1
    width = CHART_W / len(days)
    bars = []
    for i, day in enumerate(days):
        y = CHART_H
        for model in models:
            cost = per_day.get(day, {}).get(model, 0)
            if not cost:
                continue
            height = max(1.0, cost / top * (CHART_H - 10))
            y -= height
            bars.append(
                {
                    "x": round(i * width + BAR_GAP / 2, 2),
                    "y": round(y, 2),
                    "w": round(max(width - BAR_GAP, 1), 2),
                    "h": round(height, 2),
                    "fill": colour[model],
                    "title": f"{day.isoformat()} · {model}: {dollars(cost)}",
                }
            )
    return {
        "width": CHART_W,
        "height": CHART_H,
        "bars": bars,
        "legend": [{"model": m, "fill": colour[m]} for m in models],
        "top": dollars(top if per_day else 0),
    }


async def usage(request: web.Request) -> web.Response:
    user, frm, to, problem, rows = await _lines(request)
    assistants = sorted({str(r["instance_id"]) for r in rows if r["instance_id"]})
    chosen = request.query.get("instance", "")
    if chosen in assistants:  # one assistant's lines (else all of them)
        rows = [r for r in rows if str(r["instance_id"]) == chosen]
    else:
        chosen = ""
    total = sum(r["cost_micros"] for r in rows)
    return aiohttp_jinja2.render_template(
        "usage.html",
        request,
        base_context(
            request,
            user,
            frm=frm.isoformat(),
            to=to.isoformat(),
            problem=problem,
            assistants=assistants,
            chosen=chosen,
            chart=chart(rows, frm, to),
            lines=[{**dict(r), "cost": dollars(r["cost_micros"])} for r in rows],
            total=dollars(total),
            requests=sum(r["requests"] for r in rows),
        ),
    )


def _cell(value: Any) -> Any:
    # A spreadsheet runs a cell that starts like a formula: never from our data.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


async def usage_csv(request: web.Request) -> web.Response:
    _, frm, to, _, rows = await _lines(request)
    out = io.StringIO()
    writer = csv.writer(out)
    columns = (
        "day",
        "model",
        "instance_id",
        "requests",
        "input_tokens",
        "output_tokens",
        "cache_write_tokens",
        "cache_read_tokens",
        "cost_micros",
    )
    writer.writerow((*columns, "cost_usd"))
    for r in rows:
        writer.writerow(
            [_cell(str(r[c]) if c in ("day", "instance_id") else r[c]) for c in columns]
            + [f"{r['cost_micros'] / 1_000_000:.6f}"]
        )
    return web.Response(
        text=out.getvalue(),
        content_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="blitzclaw-usage-{frm}-{to}.csv"'},
    )
