"""Headers every page carries, and who is signed in on a page.

Pages allow scripts only from this origin and Clerk's frontend API (no inline script), are never
framed, and send no referrer to other sites. A page that needs a user sends a stranger to the
sign-in page, with a way back that can only lead to this site.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Awaitable, Callable

from aiohttp import web

from blitzclawd.errors import ApiError
from blitzclawd.http.auth import SESSION_COOKIE, Caller, authenticate
from blitzclawd.http.context import CONTEXT

Page = Callable[[web.Request], Awaitable[web.StreamResponse]]


def clerk_origin(request: web.Request) -> str:
    frontend = request.app[CONTEXT].settings.auth.clerk_frontend_api
    parts = urllib.parse.urlsplit(frontend)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


def policy(request: web.Request) -> str:
    clerk = clerk_origin(request)
    extra = f" {clerk}" if clerk else ""
    return (
        f"default-src 'self'; script-src 'self'{extra}; connect-src 'self'{extra}; "
        "img-src 'self' data:; style-src 'self'; font-src 'self'; object-src 'none'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )


def secured(view: Page) -> Page:
    async def page(request: web.Request) -> web.StreamResponse:
        response = await view(request)
        response.headers["Content-Security-Policy"] = policy(request)
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "strict-origin-when-cross-origin"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers.setdefault("Cache-Control", "no-store")  # pages hold a user's data
        return response

    page.__name__ = view.__name__
    return page


async def signed_in(request: web.Request) -> Caller | None:
    """The browser's user (Clerk's session cookie), or None: an expired or forged cookie is
    simply no session."""
    if not request.cookies.get(SESSION_COOKIE) and "Authorization" not in request.headers:
        return None
    try:
        caller = await authenticate(request)
    except ApiError:
        return None
    return caller if caller.user_id is not None else None


def to_sign_in(request: web.Request) -> web.HTTPSeeOther:
    back = request.rel_url.path_qs if request.rel_url.path.startswith("/") else "/dashboard"
    return web.HTTPSeeOther("/sign-in?" + urllib.parse.urlencode({"redirect_url": back}))


def safe_return(raw: str | None) -> str:
    """Where to go after signing in: a path on this site only (never //elsewhere)."""
    if not raw or not raw.startswith("/") or raw.startswith("//") or "\\" in raw:
        return "/dashboard"
    return raw
