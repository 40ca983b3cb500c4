"""Who is calling the user API: a Clerk session, one of the user's API keys, or the admin key.

Every user-facing query is scoped by the Caller this returns; an unauthenticated call is a 401
before any view runs. The first authenticated call of a Clerk user creates their row.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import urllib.parse
from dataclasses import dataclass

from aiohttp import web

from blitzclawd.auth.clerk import KeysUnavailable, TokenError
from blitzclawd.auth.clerk_users import refresh_user
from blitzclawd.http.context import CONTEXT, DaemonContext
from blitzclawd.http.errors import ApiError
from blitzclawd.queries import accounts

API_KEY_PREFIX = "sk_"
SESSION_COOKIE = "__session"
_LAST_USED_EVERY = 60.0  # s: record an API key's last use at most this often (not per request)
_USER_CACHE_TTL = 30.0


@dataclass(frozen=True, slots=True)
class Caller:
    user_id: str | None  # None only for the admin key
    role: str  # "user" | "admin"
    via: str  # "session" | "api_key" | "admin_key"

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


CALLER = web.RequestKey("blitzclaw_caller", Caller)


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def caller_of(request: web.Request) -> Caller:
    return request[CALLER]


async def authenticate(request: web.Request) -> Caller:
    ctx = request.app[CONTEXT]
    token = _bearer(request) or request.cookies.get(SESSION_COOKIE)
    if not token:
        raise ApiError(401, "unauthenticated", "sign in or send an API key (Authorization: Bearer)")
    # Keys and session tokens are printable ASCII; other header bytes arrive as lone surrogates,
    # which cannot be encoded to hash or compare.
    if not (token.isascii() and token.isprintable()):
        raise ApiError(401, "unauthenticated", "the credential is not a key or a session token")
    admin_key = ctx.secrets.get("admin_api_key")
    if admin_key is not None and hmac.compare_digest(token.encode(), admin_key.reveal().encode()):
        caller = Caller(None, "admin", "admin_key")
    elif token.startswith(API_KEY_PREFIX):
        caller = await _api_key_caller(ctx, token)
    else:
        caller = await _session_caller(ctx, token)
    request[CALLER] = caller
    return caller


def require_admin(request: web.Request) -> Caller:
    caller = caller_of(request)
    if not caller.is_admin:
        # Operators' routes do not exist for anyone else: nothing to probe.
        raise ApiError(404, "not_found", "no such endpoint")
    return caller


def require_user(request: web.Request) -> str:
    """The calling user's id (the admin key has no user of its own)."""
    caller = caller_of(request)
    if caller.user_id is None:
        raise ApiError(403, "forbidden", "the admin key acts on no user's account")
    return caller.user_id


def _bearer(request: web.Request) -> str | None:
    value = request.headers.get("Authorization", "")
    return value[7:].strip() or None if value[:7].lower() == "bearer " else None


async def _api_key_caller(ctx: DaemonContext, key: str) -> Caller:
    row = await accounts.key_holder(ctx.pool, hash_key(key), _LAST_USED_EVERY)
    if row is None or row["deleted_at"] is not None:
        raise ApiError(401, "unauthenticated", "unknown or revoked API key")
    _require_verified(ctx, row["email_verified"])
    if row["stale"]:
        await accounts.touch_key(ctx.pool, row["id"])
    return Caller(row["user_id"], _role(ctx, row["role"], row["clerk_user_id"]), "api_key")


async def _session_caller(ctx: DaemonContext, token: str) -> Caller:
    if ctx.clerk is None:
        raise ApiError(401, "unauthenticated", "session sign-in is not configured")
    try:
        session = await ctx.clerk.verify(token)
    except KeysUnavailable:
        raise ApiError(503, "auth_unavailable", "sign-in keys are unavailable; retry") from None
    except TokenError as exc:
        raise ApiError(401, "unauthenticated", f"invalid session token: {exc.reason}") from None
    cached = ctx.user_cache.get(session.user_id)
    if cached is not None and time.monotonic() - cached[2] < _USER_CACHE_TTL:
        return Caller(cached[0], cached[1], "session")
    # The first authenticated call creates the user (Clerk's webhook may not have arrived yet).
    # A deleted account's id is a tombstone: its still-valid sessions find it and stay out.
    row = await accounts.user_for_session(ctx.pool, session.user_id)
    if row is None or row["deleted_at"] is not None:
        raise ApiError(401, "unauthenticated", "this account has been deleted")
    if (not row["email"] or row["email_verified"] is not True) and ctx.clerk_users is not None:
        # First sight without the user.created webhook (no email yet), or a state still to
        # learn: ask Clerk now (bounded by a short timeout, at most once a minute per user), so
        # a checkout right after sign-in carries the address. A failure only logs.
        if await refresh_user(ctx.pool, ctx.clerk_users, session.user_id):
            row = await accounts.user_by_clerk_id(ctx.pool, session.user_id)
            if row is None or row["deleted_at"] is not None:
                raise ApiError(401, "unauthenticated", "this account has been deleted")
    _require_verified(ctx, row["email_verified"])
    role = _role(ctx, row["role"], session.user_id)
    ctx.user_cache[session.user_id] = (row["id"], role, time.monotonic())
    return Caller(row["id"], role, "session")


def _require_verified(ctx: DaemonContext, email_verified: bool | None) -> None:
    """403 for a user whose primary email Clerk reports as not verified.

    Only a known "not verified" refuses. Unknown (NULL: Clerk not asked yet, or unreachable, or
    not knowing the user) lets the user in: Clerk issues sessions only after its own sign-in
    checks, so refusing on "unknown" would lock every verified user out during a Clerk blip,
    for no gain against an attacker, who cannot make Clerk unreachable for us on demand. The
    state is learnt at first sight, from the webhooks, and re-asked while it is not "verified".
    """
    if email_verified is False and ctx.settings.auth.require_verified_email:
        raise ApiError(
            403,
            "email_unverified",
            "verify your email address first: open the link Clerk sent you, then sign in again",
            field="email",
        )


def _role(ctx: DaemonContext, role: str, clerk_user_id: str | None) -> str:
    if role == "admin" or (clerk_user_id and clerk_user_id in ctx.settings.auth.admin_user_ids):
        return "admin"
    return "user"


@web.middleware
async def require_auth(request: web.Request, handler) -> web.StreamResponse:
    """Authenticate every /api/ route except the public ones (webhooks verify signatures).

    A change made with the browser's session cookie must come from a page of this site (its
    `Origin`): another site's form or script would carry the cookie too (CSRF). Calls with
    `Authorization: Bearer` carry their credential explicitly and need no such check."""
    path = request.path
    if path.startswith("/api/") and not path.startswith(PUBLIC_PREFIXES):
        await authenticate(request)
        if request.method not in SAFE_METHODS and _bearer(request) is None:
            _require_same_site(request)
    return await handler(request)


SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def _require_same_site(request: web.Request) -> None:
    origin = request.headers.get("Origin", "")
    allowed = request.app[CONTEXT].settings.auth.allowed_origins
    if origin and (urllib.parse.urlsplit(origin).netloc == request.host or origin in allowed):
        return
    raise ApiError(
        403,
        "cross_site",
        "this change must come from a BlitzClaw page (or send an API key as a Bearer token)",
    )


# The API document and its page are public (an operator sending a credential sees more).
PUBLIC_PREFIXES = (
    "/api/webhooks/",
    "/api/billing/webhook",
    "/internal/",
    "/api/openapi.json",
    "/api/docs",
    # The CLI's device sign-in: it has no credential yet (the approval itself is not public).
    "/api/auth/device/code",
    "/api/auth/device/token",
)
