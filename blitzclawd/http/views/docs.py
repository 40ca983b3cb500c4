"""/api/openapi.json and /api/docs: the API's description, and a page to read and try it.

The page is Swagger UI 5 (Apache-2.0), shipped as the files of the pinned `swagger-ui-py`
distribution and served from here (same origin: no CDN, and "try it out" uses the signed-in
browser's own session cookie). The document is built once per daemon and audience.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import jinja2
from aiohttp import web

from blitzclawd.errors import ApiError
from blitzclawd.http.auth import authenticate
from blitzclawd.http.context import CONTEXT
from blitzclawd.http.declare import OPERATIONS, args_of
from blitzclawd.http.jsonutil import json_response
from blitzclawd.http.openapi import document

# The renderer's files a page needs (nothing else of the distribution is served).
VENDOR_ASSETS = ("swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png")
ASSETS = (*VENDOR_ASSETS, "init.js")
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
)

_PAGE = jinja2.Environment(autoescape=True).from_string(
    """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{{ title }}</title>
  <link rel="icon" type="image/png" href="/api/docs/static/favicon-32x32.png">
  <link rel="stylesheet" href="/api/docs/static/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"><noscript>This reference needs JavaScript; the document itself is at
    <a href="{{ spec_url }}">{{ spec_url }}</a>.</noscript></div>
  <script src="/api/docs/static/swagger-ui-bundle.js"></script>
  <script src="/api/docs/static/init.js"></script>
</body>
</html>
"""
)

# Our own few lines, served as a file: the page's policy allows no inline script.
_INIT_JS = """window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/api/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    displayRequestDuration: true,
    withCredentials: true,
    presets: [SwaggerUIBundle.presets.apis],
  });
});
"""


def _vendor_dir() -> Path:
    spec = importlib.util.find_spec("swagger_ui")  # located, not imported: it is only files
    if spec is None or spec.origin is None:
        raise ApiError(503, "docs_unavailable", "the reference page's files are not installed")
    return Path(spec.origin).parent / "static"


async def _is_operator(request: web.Request) -> bool:
    """An operator's credential, if one was sent; a public page otherwise (never a 401)."""
    if not (request.headers.get("Authorization") or request.cookies.get("__session")):
        return False
    try:
        return (await authenticate(request)).is_admin
    except ApiError:
        return False


async def openapi_json(request: web.Request) -> web.Response:
    operators = await _is_operator(request)
    table = request.app[OPERATIONS]
    if operators not in table.documents:
        settings = request.app[CONTEXT].settings
        table.documents[operators] = document(table.operations, settings, operators=operators)
    return json_response(table.documents[operators], headers={"Cache-Control": "no-cache"})


async def reference(request: web.Request) -> web.Response:
    html = _PAGE.render(title="BlitzClaw API", spec_url="/api/openapi.json")
    return web.Response(
        text=html,
        content_type="text/html",
        headers={"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff"},
    )


async def asset(request: web.Request) -> web.StreamResponse:
    name = args_of(request).path["file"]  # one of ASSETS (else the declaration's 404)
    headers = {"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"}
    if name == "init.js":
        return web.Response(text=_INIT_JS, content_type="text/javascript", headers=headers)
    return web.FileResponse(_vendor_dir() / name, headers=headers)
