"""The help pages (/docs, /docs/{slug}) and the operator's terms and privacy policy (/terms,
/privacy).

All public: anyone can read how the service works and what it costs before signing up. The help
texts live in templates (doc-<slug>.html); the numbers in them (minimum balance, top-up range,
prices) come from the configuration, so they are the ones the daemon enforces. The legal texts are
the operator's own files ([web] terms_path, privacy_path), shown escaped as written.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from blitzclawd.config import Settings, billing_minimum_micros
from blitzclawd.http.context import CONTEXT
from blitzclawd.web.pages import base_context, dollars
from blitzclawd.web.prices import cents, markup_text, price_rows, web_search_price
from blitzclawd.web.security import signed_in

log = logging.getLogger("blitzclawd.web")

MAX_LEGAL_BYTES = 1 << 20  # a legal text is pages, not megabytes: more is a wrong path


@dataclass(frozen=True, slots=True)
class Doc:
    slug: str
    title: str
    summary: str


DOCS = (
    Doc("getting-started", "Getting started", "From signing up to your first chat, in five steps."),
    Doc("telegram", "Connect Telegram", "Make a bot with @BotFather and make it yours."),
    Doc("whatsapp", "Connect WhatsApp", "Link your number with a QR code, like WhatsApp Web."),
    Doc("billing", "Billing and pricing", "Your prepaid balance, top-ups and the price list."),
    Doc("faq", "Questions and answers", "Running out of balance, stopping, deleting, your data."),
)
BY_SLUG = {d.slug: d for d in DOCS}


def facts(settings: Settings) -> dict[str, Any]:
    """The configured numbers the help texts quote."""
    billing = settings.billing
    return {
        "minimum": dollars(billing_minimum_micros(settings)),
        "topup_min": cents(billing.topup_min_cents),
        "topup_max": cents(billing.topup_max_cents),
        "markup": markup_text(settings),
        "models": price_rows(settings),
        "web_search": web_search_price(settings),
        "default_model": settings.fleet.model,
        "max_instances": settings.fleet.max_instances_per_user,
        "support_url": settings.notify.support_url,
    }


async def docs_index(request: web.Request) -> web.Response:
    return aiohttp_jinja2.render_template(
        "docs.html", request, base_context(request, await signed_in(request), docs=DOCS)
    )


async def doc_page(request: web.Request) -> web.Response:
    doc = BY_SLUG.get(request.match_info["slug"])
    user = await signed_in(request)
    if doc is None:  # the index, said to be a 404, so a mistyped link still leads somewhere
        return aiohttp_jinja2.render_template(
            "docs.html", request, base_context(request, user, docs=DOCS, missing=True), status=404
        )
    settings = request.app[CONTEXT].settings
    return aiohttp_jinja2.render_template(
        f"doc-{doc.slug}.html",
        request,
        base_context(request, user, doc=doc, docs=DOCS, **facts(settings)),
    )


@dataclass(frozen=True, slots=True)
class OperatorText:
    text: str
    updated: dt.date


# path -> ((mtime_ns, size), text): a busy public page does not reread an unchanged file.
_texts: dict[str, tuple[tuple[int, int], OperatorText | None]] = {}
_warned: set[tuple[str, str]] = set()


def _warn_once(path: str, problem: str) -> None:
    # A public page can be asked for in a loop: one log line per problem, not per visit.
    if (path, problem) not in _warned:
        _warned.add((path, problem))
        log.warning("operator text %s: %s; showing the placeholder", path, problem)


def read_operator_text(path: str) -> OperatorText | None:
    """The file's text, or None (unset, missing, unreadable, too big or blank). Blocking."""
    if not path:
        return None
    try:
        info = Path(path).stat()
        if not stat.S_ISREG(info.st_mode):
            _warn_once(path, "not a regular file")
            return None
        key = (info.st_mtime_ns, info.st_size)
        cached = _texts.get(path)
        if cached is not None and cached[0] == key:
            return cached[1]
        if info.st_size > MAX_LEGAL_BYTES:
            _warn_once(path, f"larger than {MAX_LEGAL_BYTES} bytes")
            return None
        with open(path, "rb") as f:
            data = f.read(MAX_LEGAL_BYTES + 1)
    except OSError as exc:
        _warn_once(path, f"cannot read: {exc.strerror}")
        return None
    if len(data) > MAX_LEGAL_BYTES:  # it grew since the stat
        return None
    text = data.decode("utf-8", errors="replace").strip()
    updated = dt.datetime.fromtimestamp(info.st_mtime, dt.UTC).date()
    found = OperatorText(text, updated) if text else None
    _texts[path] = (key, found)
    return found


async def _legal(request: web.Request, kind: str, title: str) -> web.Response:
    cfg = request.app[CONTEXT].settings.web
    path = cfg.terms_path if kind == "terms" else cfg.privacy_path
    found = await asyncio.to_thread(read_operator_text, path)
    return aiohttp_jinja2.render_template(
        "legal.html",
        request,
        base_context(
            request,
            await signed_in(request),
            kind=kind,
            title=title,
            legal=found,
            support_url=request.app[CONTEXT].settings.notify.support_url,
        ),
    )


async def terms(request: web.Request) -> web.Response:
    return await _legal(request, "terms", "Terms of service")


async def privacy(request: web.Request) -> web.Response:
    return await _legal(request, "privacy", "Privacy policy")
