"""The dashboard's URL table, its templates and its static files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from blitzclawd.web import docs_pages, instance_pages, pages, settings_pages, usage_pages
from blitzclawd.web.security import secured

STATIC = "/static/"
# Google's redirect back (blitzclawd/http/views/integrations.py registers it: it changes state,
# through the integrations service, which pages do not import).
GOOGLE_CALLBACK = "/integrations/google/callback"

PAGES: tuple[tuple[str, Any], ...] = (
    ("/", pages.landing),
    ("/sign-in", pages.sign_in),
    ("/sign-up", pages.sign_in),
    ("/sign-out", pages.sign_out),
    ("/dashboard", pages.dashboard),
    ("/dashboard/topup", pages.topup),
    ("/dashboard/topup/return", pages.topup_return),
    ("/dashboard/usage", usage_pages.usage),
    ("/dashboard/usage.csv", usage_pages.usage_csv),
    ("/instances/new", instance_pages.new_instance),
    ("/instances/{instance_id}", instance_pages.instance_page),
    ("/instances/{instance_id}/soul", settings_pages.soul_page),
    ("/settings", settings_pages.settings_page),
    ("/settings/integrations", settings_pages.integrations_page),
    ("/device", settings_pages.device_page),
    ("/docs", docs_pages.docs_index),
    ("/docs/{slug}", docs_pages.doc_page),
    ("/terms", docs_pages.terms),
    ("/privacy", docs_pages.privacy),
)


def page_paths() -> set[str]:
    """Every route of the dashboard (not the API's: /api/openapi.json does not list them)."""
    return {path for path, _ in PAGES} | {STATIC.rstrip("/"), GOOGLE_CALLBACK}


def setup_pages(app: web.Application) -> None:
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("blitzclawd.web", "templates"),
        autoescape=jinja2.select_autoescape(default=True),
        undefined=jinja2.StrictUndefined,
    )
    for path, view in PAGES:
        app.router.add_route("GET", path, secured(view))
    app.router.add_static(STATIC, Path(__file__).parent / "static")
