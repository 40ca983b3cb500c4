"""A faithful fake of Google's OAuth 2.0 endpoints for web server apps, on loopback.

    async with FakeGoogle() as google:
        google.client_id, google.client_secret          # the one registered OAuth client
        back = await google.approve(consent_url, "ada@gmail.test")  # the browser's redirect
        back = await google.deny(consent_url)           # ...?error=access_denied&state=...
        google.expire_access_tokens()                   # every access token expires now
        google.access_token_lifetime = 60               # new ones say expires_in 60
        google.outage = True                            # /token answers 503
        google.revoke_grant("ada@gmail.test")            # the user removed the app at Google
        google.token_is_live(token)                     # is this access/refresh token usable?

The wire format is Google's (developers.google.com/identity/protocols/oauth2/web-server):

- ``GET /o/oauth2/v2/auth`` (client_id, redirect_uri, response_type=code, scope, state,
  code_challenge + code_challenge_method=S256, access_type, prompt): the consent page, an HTML
  form with "Allow" (as the Google account typed in) and "Deny"; both redirect (302) to
  redirect_uri with ``code``, ``state`` and ``scope``, or ``error=access_denied`` and ``state``.
  An unknown client or a redirect_uri it did not register is an error page (400), never a
  redirect.
- ``POST /token`` (form; the client's id and secret in the body or HTTP Basic):
  ``grant_type=authorization_code`` (code, redirect_uri exactly as in the request,
  code_verifier that hashes to the challenge; a code is single use and lives 10 minutes; a
  reused code also revokes what it gave) and ``grant_type=refresh_token`` (a new access token,
  no new refresh token). Success: ``{"access_token", "expires_in": 3599, "scope",
  "token_type": "Bearer", "refresh_token" (offline access, first exchange only), "id_token"}``.
  Refusals: 400 ``{"error": "invalid_grant", "error_description": ...}``, 401
  ``invalid_client``, 400 ``invalid_request`` / ``unsupported_grant_type``.
- ``POST /revoke`` (``token=`` form or query): 200 ``{}``; the token and its whole grant are
  unusable after; an unknown or revoked token is 400 ``{"error": "invalid_token",
  "error_description": "Token expired or revoked"}``.
- ``GET /v1/userinfo`` (``Authorization: Bearer <access token>``): OpenID userinfo (sub,
  email, email_verified); an unknown, expired or revoked token is 401 with
  ``WWW-Authenticate``.

Refresh tokens are rotated on refresh when ``google.rotate_refresh_tokens`` is set (Google may do
so): the answer carries a new ``refresh_token`` and the old one stops working.

Why one module: the four endpoints share one set of grants, codes and tokens; a fake split
across modules could let them disagree.
"""

from __future__ import annotations

import base64
import hashlib
import html
import secrets
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from blitzclawd.testing.local_server import LocalHTTPServer

ACCESS_TOKEN_LIFETIME = 3599
CODE_LIFETIME = 600.0


@dataclass
class Grant:
    """What one consent gave: a refresh token and the access tokens minted from it."""

    id: str
    email: str
    sub: str
    scopes: tuple[str, ...]
    refresh_token: str | None
    access_tokens: set[str] = field(default_factory=set)
    revoked: bool = False


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    challenge: str
    challenge_method: str
    scopes: tuple[str, ...]
    email: str
    offline: bool
    expires: float
    used: bool = False
    grant_id: str | None = None


@dataclass
class _Pending:
    """A consent page shown, waiting for Allow or Deny."""

    client_id: str
    redirect_uri: str
    state: str | None
    scopes: tuple[str, ...]
    challenge: str
    challenge_method: str
    offline: bool


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _error(status: int, error: str, description: str) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=status)


class FakeGoogle(LocalHTTPServer):
    def __init__(self, redirect_uris: tuple[str, ...] = ()) -> None:
        self.client_id = f"{secrets.randbelow(10**12):012d}-fake.apps.googleusercontent.com"
        self.client_secret = "GOCSPX-" + secrets.token_urlsafe(21)
        # Empty: any http(s) redirect_uri is taken (tests register theirs with `allow_redirect`).
        self.redirect_uris: set[str] = set(redirect_uris)
        self.grants: dict[str, Grant] = {}
        self._codes: dict[str, _Code] = {}
        self._pending: dict[str, _Pending] = {}
        self._access: dict[str, tuple[str, float]] = {}  # token -> (grant id, expires at)
        self.issued: list[str] = []  # every token and code handed out (for plaintext scans)
        self.token_requests = 0
        # Seconds new access tokens live (Google: 3599); lower it to have them refreshed soon.
        self.access_token_lifetime = ACCESS_TOKEN_LIFETIME
        # True: the token endpoint answers 503 (a Google outage), counted in token_requests.
        self.outage = False
        self.refusals: list[str] = []  # the error of every refused /token call
        # True: a refresh also answers a new refresh token, and the old one stops working
        # (Google may rotate them; clients must keep the newest).
        self.rotate_refresh_tokens = False

    # -- URLs ------------------------------------------------------------------------------------

    @property
    def authorization_url(self) -> str:
        return self.base_url + "/o/oauth2/v2/auth"

    @property
    def token_url(self) -> str:
        return self.base_url + "/token"

    @property
    def revoke_url(self) -> str:
        return self.base_url + "/revoke"

    @property
    def userinfo_url(self) -> str:
        return self.base_url + "/v1/userinfo"

    def allow_redirect(self, uri: str) -> None:
        self.redirect_uris.add(uri)

    # -- test knobs ------------------------------------------------------------------------------

    def expire_access_tokens(self, within: float = 0.0) -> None:
        """Every live access token expires `within` seconds from now."""
        deadline = time.time() + within
        for token, (grant_id, expires) in self._access.items():
            self._access[token] = (grant_id, min(expires, deadline))

    def revoke_grant(self, email: str | None = None) -> int:
        """The user removed the app in their Google account (every grant, or `email`'s)."""
        found = [g for g in self.grants.values() if email is None or g.email == email]
        for grant in found:
            grant.revoked = True
        return len(found)

    def token_is_live(self, token: str) -> bool:
        grant = self._grant_of(token)
        if grant is None or grant.revoked:
            return False
        if token in self._access:
            return self._access[token][1] > time.time()
        return True

    def grant_of(self, token: str) -> Grant | None:
        return self._grant_of(token)

    async def approve(self, consent_url: str, email: str) -> str:
        """Open the consent page and press Allow as `email`: the URL Google redirects to."""
        return await self._decide(consent_url, {"decision": "allow", "email": email})

    async def deny(self, consent_url: str) -> str:
        return await self._decide(consent_url, {"decision": "deny"})

    async def _decide(self, consent_url: str, form: dict[str, str]) -> str:
        async with aiohttp.ClientSession() as http:
            async with http.get(consent_url) as page:
                text = await page.text()
                if page.status != 200:
                    raise AssertionError(f"consent page {page.status}: {text[:200]}")
            request_id = text.split('name="request" value="', 1)[1].split('"', 1)[0]
            async with http.post(
                self.base_url + "/o/oauth2/v2/auth/decide",
                data={**form, "request": request_id},
                allow_redirects=False,
            ) as resp:
                assert resp.status == 302, await resp.text()
                return resp.headers["Location"]

    # -- the service -----------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/o/oauth2/v2/auth", self._consent_page)
        app.router.add_post("/o/oauth2/v2/auth/decide", self._decision)
        app.router.add_post("/token", self._token)
        app.router.add_post("/revoke", self._revoke)
        app.router.add_get("/v1/userinfo", self._userinfo)
        return app

    def _redirect_ok(self, uri: str) -> bool:
        if self.redirect_uris:
            return uri in self.redirect_uris
        return uri.startswith(("http://", "https://"))

    async def _consent_page(self, request: web.Request) -> web.Response:
        q = request.query
        if q.get("client_id") != self.client_id:
            return web.Response(
                status=401, text="Error 401: invalid_client", content_type="text/html"
            )
        redirect_uri = q.get("redirect_uri", "")
        if not self._redirect_ok(redirect_uri):
            return web.Response(
                status=400, text="Error 400: redirect_uri_mismatch", content_type="text/html"
            )
        problem = None
        if q.get("response_type") != "code":
            problem = "unsupported_response_type"
        elif not q.get("scope", "").split():
            problem = "invalid_request: Missing required parameter: scope"
        elif q.get("code_challenge") and q.get("code_challenge_method", "plain") not in (
            "S256",
            "plain",
        ):
            problem = "invalid_request: code_challenge_method"
        if problem:
            return web.Response(status=400, text=f"Error 400: {problem}", content_type="text/html")
        request_id = secrets.token_urlsafe(16)
        self._pending[request_id] = _Pending(
            client_id=self.client_id,
            redirect_uri=redirect_uri,
            state=q.get("state"),
            scopes=tuple(q["scope"].split()),
            challenge=q.get("code_challenge", ""),
            challenge_method=q.get("code_challenge_method", "plain"),
            offline=q.get("access_type") == "offline",
        )
        scopes = "".join(f"<li>{html.escape(s)}</li>" for s in q["scope"].split())
        rid = html.escape(request_id)
        page = (
            "<!doctype html><title>Sign in - Google Accounts</title>"
            f"<h1>BlitzClaw wants to access your Google Account</h1><ul>{scopes}</ul>"
            '<form method="post" action="/o/oauth2/v2/auth/decide">'
            f'<input type="hidden" name="request" value="{rid}">'
            '<input name="email" type="email" value="user@gmail.test">'
            '<button name="decision" value="allow" id="allow">Allow</button></form>'
            '<form method="post" action="/o/oauth2/v2/auth/decide">'
            f'<input type="hidden" name="request" value="{rid}">'
            '<button name="decision" value="deny" id="deny">Deny</button></form>'
        )
        return web.Response(text=page, content_type="text/html")

    async def _decision(self, request: web.Request) -> web.Response:
        form = await request.post()
        pending = self._pending.pop(str(form.get("request", "")), None)
        if pending is None:
            return web.Response(status=400, text="Error 400: this page expired")
        params: dict[str, str] = {}
        if form.get("decision") == "allow":
            code = "4/0" + secrets.token_urlsafe(40)
            self.issued.append(code)
            self._codes[code] = _Code(
                client_id=pending.client_id,
                redirect_uri=pending.redirect_uri,
                challenge=pending.challenge,
                challenge_method=pending.challenge_method,
                scopes=pending.scopes,
                email=str(form.get("email") or "user@gmail.test"),
                offline=pending.offline,
                expires=time.time() + CODE_LIFETIME,
            )
            params["code"] = code
            params["scope"] = " ".join(pending.scopes)
        else:
            params["error"] = "access_denied"
        if pending.state is not None:
            params["state"] = pending.state
        sep = "&" if "?" in pending.redirect_uri else "?"
        location = pending.redirect_uri + sep + urllib.parse.urlencode(params)
        raise web.HTTPFound(location)

    def _client_ok(self, request: web.Request, form: Any) -> bool:
        client_id, secret = form.get("client_id"), form.get("client_secret")
        auth = request.headers.get("Authorization", "")
        if auth.lower().startswith("basic "):
            try:
                raw = base64.b64decode(auth[6:]).decode()
            except (ValueError, UnicodeDecodeError):
                return False
            user, _, password = raw.partition(":")
            client_id, secret = urllib.parse.unquote(user), urllib.parse.unquote(password)
        return client_id == self.client_id and secrets.compare_digest(
            str(secret or ""), self.client_secret
        )

    def _mint(self, grant: Grant) -> str:
        token = "ya29." + secrets.token_urlsafe(48)
        self._access[token] = (grant.id, time.time() + self.access_token_lifetime)
        grant.access_tokens.add(token)
        self.issued.append(token)
        return token

    def _refuse(self, status: int, error: str, description: str) -> web.Response:
        self.refusals.append(error)
        return _error(status, error, description)

    async def _token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        if self.outage:
            return web.Response(status=503, text="Service Unavailable")
        form = await request.post()
        if not self._client_ok(request, form):
            return self._refuse(401, "invalid_client", "Unauthorized")
        kind = form.get("grant_type")
        if kind == "authorization_code":
            return self._exchange(form)
        if kind == "refresh_token":
            return self._refresh(form)
        if not kind:
            return self._refuse(400, "invalid_request", "Missing required parameter: grant_type")
        return self._refuse(400, "unsupported_grant_type", "Invalid grant_type: " + str(kind))

    def _exchange(self, form: Any) -> web.Response:
        code = self._codes.get(str(form.get("code", "")))
        if code is None:
            return self._refuse(400, "invalid_grant", "Malformed auth code.")
        if code.used:
            # RFC 6749 4.1.2: a reused code revokes what it gave.
            if code.grant_id in self.grants:
                self.grants[code.grant_id].revoked = True
            return self._refuse(400, "invalid_grant", "Bad Request")
        code.used = True
        if code.expires < time.time():
            return self._refuse(400, "invalid_grant", "Bad Request")
        if form.get("redirect_uri") != code.redirect_uri:
            return self._refuse(400, "redirect_uri_mismatch", "Bad Request")
        if code.challenge:
            verifier = str(form.get("code_verifier", ""))
            expected = _s256(verifier) if code.challenge_method == "S256" else verifier
            if not verifier or not secrets.compare_digest(expected, code.challenge):
                return self._refuse(400, "invalid_grant", "Invalid code verifier.")
        grant = Grant(
            id=secrets.token_hex(8),
            email=code.email,
            sub=str(int(hashlib.sha256(code.email.encode()).hexdigest()[:15], 16)),
            scopes=code.scopes,
            refresh_token=("1//0" + secrets.token_urlsafe(60)) if code.offline else None,
        )
        if grant.refresh_token:
            self.issued.append(grant.refresh_token)
        self.grants[grant.id] = grant
        code.grant_id = grant.id
        body: dict[str, Any] = {
            "access_token": self._mint(grant),
            "expires_in": self.access_token_lifetime,
            "scope": " ".join(grant.scopes),
            "token_type": "Bearer",
        }
        if grant.refresh_token:
            body["refresh_token"] = grant.refresh_token
        if "openid" in grant.scopes:
            body["id_token"] = self._id_token(grant)
        return web.json_response(body)

    def _refresh(self, form: Any) -> web.Response:
        token = str(form.get("refresh_token", ""))
        grant = next((g for g in self.grants.values() if g.refresh_token == token), None)
        if grant is None or grant.revoked:
            return self._refuse(400, "invalid_grant", "Token has been expired or revoked.")
        body = {
            "access_token": self._mint(grant),
            "expires_in": self.access_token_lifetime,
            "scope": " ".join(grant.scopes),
            "token_type": "Bearer",
        }
        if self.rotate_refresh_tokens:
            grant.refresh_token = "1//0" + secrets.token_urlsafe(60)
            self.issued.append(grant.refresh_token)
            body["refresh_token"] = grant.refresh_token
        return web.json_response(body)

    def _id_token(self, grant: Grant) -> str:
        """Unsigned-looking JWT shape (the daemon reads the email from userinfo, not here)."""

        def part(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        claims = f'{{"iss":"{self.base_url}","sub":"{grant.sub}","aud":"{self.client_id}"}}'
        header = part(b'{"alg":"RS256","typ":"JWT"}')
        return f"{header}.{part(claims.encode())}.{part(b'sig')}"

    def _grant_of(self, token: str) -> Grant | None:
        if token in self._access:
            return self.grants.get(self._access[token][0])
        return next((g for g in self.grants.values() if g.refresh_token == token), None)

    async def _revoke(self, request: web.Request) -> web.Response:
        form = await request.post()
        token = str(form.get("token") or request.query.get("token") or "")
        grant = self._grant_of(token)
        if grant is None or grant.revoked:
            return _error(400, "invalid_token", "Token expired or revoked")
        grant.revoked = True  # Google revokes the refresh token with any of its tokens
        return web.json_response({})

    async def _userinfo(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        if not token or token not in self._access or not self.token_is_live(token):
            return web.json_response(
                {"error": "invalid_request", "error_description": "Invalid Credentials"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'},
            )
        grant = self.grants[self._access[token][0]]
        info: dict[str, Any] = {"sub": grant.sub}
        if "email" in grant.scopes:
            info.update(email=grant.email, email_verified=True)
        return web.json_response(info)
