"""A faithful fake of the Clerk pieces the daemon talks to: JWKS, session tokens, webhooks.

    async with FakeClerk() as clerk:
        verifier = ClerkVerifier(http, clerk.jwks_url, secret_key=clerk.secret_key)
        token = clerk.mint("user_123")                    # a valid session token
        clerk.rotate_key()                                # Clerk rotated its signing key
        headers, body = clerk.webhook("user.created", clerk.user_created("user_123", "a@b.c"))
        clerk.add_user("user_456", "c@d.e", verified=False)  # known to the Backend API only
        headers, body = clerk.webhook("user.updated", clerk.user_updated("user_123", "new@b.c"))

Serves ``GET /v1/jwks`` (Backend API, needs ``Authorization: Bearer <secret_key>``) and the public
``GET /.well-known/jwks.json`` (Frontend API), and the Backend API's ``GET /v1/users/{user_id}``
(Bearer secret key; the user object of every user this fake made with ``user_created``,
``add_user`` or ``user_updated``, their emails verified unless said otherwise; 404 in Clerk's
error shape for anyone else). ``mint`` also forges the hostile tokens a verifier
must refuse: ``alg="HS256"`` keyed with the public key PEM (algorithm confusion), ``alg="none"``,
unknown kids and keys that were never published (``sign_with=clerk.unpublished_key()``).

Why one module: a fake of the Clerk pieces we use (JWKS, tokens, Svix webhooks, Backend API users)
sharing one user table.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from blitzclawd.auth.svix import sign_svix
from blitzclawd.testing.fake_clerk_frontend import add_frontend_routes
from blitzclawd.testing.local_server import LocalHTTPServer

# RSA-2048 generation takes ~50 ms; keys are shared by every FakeClerk in the process (each
# publishes them under its own kids), so a test suite generates a handful, not one per test.
_KEY_POOL: list[rsa.RSAPrivateKey] = []


def _pooled_key(index: int) -> rsa.RSAPrivateKey:
    while len(_KEY_POOL) <= index:
        _KEY_POOL.append(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    return _KEY_POOL[index]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _uint(value: int) -> str:
    return _b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def _clerk_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(13)}"


def _verification(verified: bool) -> dict[str, Any]:
    if verified:
        return {"attempts": 1, "expire_at": None, "status": "verified", "strategy": "email_code"}
    return {
        "attempts": 0,
        "expire_at": int(time.time() * 1000) + 600_000,
        "status": "unverified",
        "strategy": "email_code",
    }


@dataclass(frozen=True, slots=True)
class _SigningKey:
    kid: str
    private: rsa.RSAPrivateKey

    def jwk(self) -> dict[str, str]:
        numbers = self.private.public_key().public_numbers()
        return {
            "use": "sig",
            "kty": "RSA",
            "kid": self.kid,
            "alg": "RS256",
            "n": _uint(numbers.n),
            "e": _uint(numbers.e),
        }


class FakeClerk(LocalHTTPServer):
    secret_key = "sk_test_fake"

    def __init__(self, *, issuer: str | None = None) -> None:
        self.webhook_secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        self.instance_id = _clerk_id("ins")
        self.base_url = ""
        self.jwks_requests = 0  # requests to either JWKS route, refused ones included
        self.jwks_status = 200  # set to e.g. 503 to make the JWKS routes fail
        self.jwks_gate: asyncio.Event | None = None  # when set, JWKS answers wait for it
        self._issuer = issuer
        self._published: list[_SigningKey] = []  # newest first; [0] signs
        self._pool_index = 0
        self._runner: web.AppRunner | None = None
        self._requests_changed = asyncio.Condition()
        self.users: dict[str, dict[str, Any]] = {}  # what GET /v1/users/{id} answers
        self.user_requests: list[str] = []  # user ids asked for, refused requests included
        self.users_status = 200  # set to e.g. 503 or 429 to make the users route fail
        self.sign_ins: list[str] = []  # email addresses signed in through the widget

    # -- server --------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/jwks", self._backend_jwks)
        app.router.add_get("/.well-known/jwks.json", self._frontend_jwks)
        app.router.add_get("/v1/users/{user_id}", self._backend_user)
        add_frontend_routes(app, self)  # ClerkJS's stand-in, for pages in a browser
        return app

    @property
    def frontend_api(self) -> str:
        """The Frontend API (the daemon's ``auth.clerk_frontend_api``): ClerkJS comes from it."""
        return self.base_url

    @property
    def jwks_url(self) -> str:
        return self.base_url + "/v1/jwks"

    @property
    def api_url(self) -> str:
        """The Backend API's base (the daemon's ``auth.clerk_api_url``)."""
        return self.base_url + "/v1"

    @property
    def public_jwks_url(self) -> str:
        return self.base_url + "/.well-known/jwks.json"

    @property
    def issuer(self) -> str:
        """The token ``iss``: Clerk's Frontend API URL, which is this server unless overridden."""
        return self._issuer or self.base_url or "https://clerk.fake.invalid"

    async def wait_for_jwks_requests(self, count: int) -> None:
        """Return once ``jwks_requests >= count`` (no polling: the handler notifies)."""
        async with self._requests_changed:
            await self._requests_changed.wait_for(lambda: self.jwks_requests >= count)

    async def _backend_jwks(self, request: web.Request) -> web.Response:
        await self._count()
        if request.headers.get("Authorization") != f"Bearer {self.secret_key}":
            return self._unauthenticated()
        return await self._serve_keys()

    def _unauthenticated(self) -> web.Response:
        return self._error(
            401,
            "Invalid authentication",
            "Unable to authenticate the request, you need to supply an active API key",
            "authentication_invalid",
        )

    def _error(self, status: int, message: str, long_message: str, code: str) -> web.Response:
        error = {"message": message, "long_message": long_message, "code": code}
        return self._json({"errors": [error], "clerk_trace_id": secrets.token_hex(16)}, status)

    async def _backend_user(self, request: web.Request) -> web.Response:
        user_id = request.match_info["user_id"]
        self.user_requests.append(user_id)
        if request.headers.get("Authorization") != f"Bearer {self.secret_key}":
            return self._unauthenticated()
        if self.users_status == 429:
            return self._error(
                429, "Too many requests", "Too many requests, retry later", "too_many_requests"
            )
        if self.users_status != 200:
            return self._error(
                self.users_status, "Oops, an unexpected error occurred", "", "internal_clerk_error"
            )
        user = self.users.get(user_id)
        if user is None:
            return self._error(
                404, "not found", f"No user was found with id {user_id}", "resource_not_found"
            )
        return self._json(user)

    async def _frontend_jwks(self, request: web.Request) -> web.Response:
        await self._count()
        return await self._serve_keys()

    async def _serve_keys(self) -> web.Response:
        if self.jwks_gate is not None:
            await self.jwks_gate.wait()
        if self.jwks_status != 200:
            return self._json({"errors": [{"message": "unavailable"}]}, self.jwks_status)
        return self._json(self.jwks())

    async def _count(self) -> None:
        async with self._requests_changed:
            self.jwks_requests += 1
            self._requests_changed.notify_all()

    @staticmethod
    def _json(body: Any, status: int = 200) -> web.Response:
        return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")

    # -- keys and tokens -----------------------------------------------------------------------

    def jwks(self) -> dict[str, Any]:
        self._signing()
        return {"keys": [key.jwk() for key in self._published]}

    def _next_private_key(self) -> rsa.RSAPrivateKey:
        key = _pooled_key(self._pool_index)
        self._pool_index += 1
        return key

    def _signing(self) -> _SigningKey:
        if not self._published:
            self._published.append(_SigningKey(_clerk_id("ins"), self._next_private_key()))
        return self._published[0]

    @property
    def kid(self) -> str:
        """The kid of the current signing key."""
        return self._signing().kid

    def rotate_key(self, *, keep_old: bool = True) -> str:
        """A new key signs from now on; the old ones stay published if ``keep_old``. Its kid."""
        self._signing()
        new = _SigningKey(_clerk_id("ins"), self._next_private_key())
        self._published = [new, *self._published] if keep_old else [new]
        return new.kid

    def unpublished_key(self) -> rsa.RSAPrivateKey:
        """An RSA key this fake never publishes, for ``mint(sign_with=...)``."""
        return self._next_private_key()

    def mint(
        self,
        sub: str,
        *,
        ttl: float = 60,
        nbf_offset: float = 0,
        azp: str | None = "http://localhost:3000",
        sid: str | None = None,
        kid: str | None = None,
        alg: str = "RS256",
        extra: dict[str, Any] | None = None,
        now: float | None = None,
        sign_with: rsa.RSAPrivateKey | None = None,
    ) -> str:
        """A session token shaped like Clerk's (v2). ``sid`` None: a fresh ``sess_…``; ``extra``
        is merged over the claims, and a None value there removes that claim."""
        signing = self._signing()
        now = time.time() if now is None else now
        claims: dict[str, Any] = {
            "exp": int(now + ttl),
            "iat": int(now),
            "iss": self.issuer,
            "nbf": int(now + nbf_offset),
            "sid": sid or _clerk_id("sess"),
            "sub": sub,
            "v": 2,
        }
        if azp is not None:
            claims["azp"] = azp
        for name, value in (extra or {}).items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        header = {"alg": alg, "kid": kid or signing.kid, "typ": "JWT"}
        signing_input = f"{_b64url(orjson.dumps(header))}.{_b64url(orjson.dumps(claims))}"
        data = signing_input.encode()
        if alg == "RS256":
            private = sign_with or signing.private
            signature = private.sign(data, padding.PKCS1v15(), hashes.SHA256())
        elif alg == "HS256":  # the confusion attack: HMAC keyed with the (public) verification key
            public = (sign_with or signing.private).public_key()
            pem = public.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            signature = hmac.new(pem, data, hashlib.sha256).digest()
        elif alg == "none":
            signature = b""
        else:
            raise ValueError(f"mint cannot sign with {alg!r}")
        return f"{signing_input}.{_b64url(signature)}"

    # -- webhooks ------------------------------------------------------------------------------

    def webhook(
        self,
        event_type: str,
        data: dict[str, Any],
        *,
        msg_id: str | None = None,
        timestamp: int | None = None,
    ) -> tuple[dict[str, str], bytes]:
        """(headers, raw body) of one Svix-signed delivery of a Clerk event."""
        msg_id = msg_id or _clerk_id("msg")
        timestamp = int(time.time()) if timestamp is None else timestamp
        envelope = {
            "data": data,
            "instance_id": self.instance_id,
            "object": "event",
            "timestamp": timestamp * 1000,
            "type": event_type,
        }
        body = orjson.dumps(envelope)
        headers = {
            "content-type": "application/json",
            "svix-id": msg_id,
            "svix-timestamp": str(timestamp),
            "svix-signature": sign_svix(msg_id, timestamp, body, self.webhook_secret),
        }
        return headers, body

    async def deliver(
        self, url: str, event_type: str, data: dict[str, Any], **kwargs: Any
    ) -> tuple[int, bytes]:
        """POST one signed delivery to ``url`` (as Svix would); (status, response body)."""
        headers, body = self.webhook(event_type, data, **kwargs)
        async with (
            aiohttp.ClientSession() as http,
            http.post(url, data=body, headers=headers) as resp,
        ):
            return resp.status, await resp.read()

    def user_created(
        self,
        user_id: str,
        email: str,
        *,
        first_name: str | None = None,
        last_name: str | None = None,
        verified: bool = True,
    ) -> dict[str, Any]:
        """``data`` of a ``user.created`` event for an email sign-up (the Backend API knows the
        user from now on)."""
        return self.add_user(
            user_id, email, first_name=first_name, last_name=last_name, verified=verified
        )

    def add_user(
        self,
        user_id: str,
        email: str,
        *,
        first_name: str | None = None,
        last_name: str | None = None,
        verified: bool = True,
    ) -> dict[str, Any]:
        """A user Clerk knows (served by ``GET /v1/users/{id}``), without sending any webhook;
        returns the user object."""
        now_ms = int(time.time() * 1000)
        email_id = _clerk_id("idn")
        user = {
            "backup_code_enabled": False,
            "banned": False,
            "created_at": now_ms,
            "email_addresses": [
                {
                    "email_address": email,
                    "id": email_id,
                    "linked_to": [],
                    "object": "email_address",
                    "reserved": False,
                    "verification": _verification(verified),
                }
            ],
            "external_accounts": [],
            "external_id": None,
            "first_name": first_name,
            "has_image": False,
            "id": user_id,
            "image_url": "https://img.clerk.com/placeholder",
            "last_name": last_name,
            "last_sign_in_at": None,
            "locked": False,
            "object": "user",
            "password_enabled": True,
            "phone_numbers": [],
            "primary_email_address_id": email_id,
            "primary_phone_number_id": None,
            "primary_web3_wallet_id": None,
            "private_metadata": {},
            "public_metadata": {},
            "two_factor_enabled": False,
            "unsafe_metadata": {},
            "updated_at": now_ms,
            "username": None,
            "web3_wallets": [],
        }
        self.users[user_id] = user
        return orjson.loads(orjson.dumps(user))  # a copy: later changes are the fake's own

    def user_updated(
        self, user_id: str, email: str | None = None, *, verified: bool = True
    ) -> dict[str, Any]:
        """``data`` of a ``user.updated`` event: with ``email``, a new primary address (the old
        one stays, as in Clerk); else the primary address's verification set to ``verified``."""
        user = self.users[user_id]
        if email is not None:
            entry = {
                "email_address": email,
                "id": _clerk_id("idn"),
                "linked_to": [],
                "object": "email_address",
                "reserved": False,
                "verification": _verification(verified),
            }
            user["email_addresses"].append(entry)
            user["primary_email_address_id"] = entry["id"]
        else:
            for entry in user["email_addresses"]:
                if entry["id"] == user["primary_email_address_id"]:
                    entry["verification"] = _verification(verified)
        user["updated_at"] = int(time.time() * 1000)
        return orjson.loads(orjson.dumps(user))

    def user_deleted(self, user_id: str) -> dict[str, Any]:
        """``data`` of a ``user.deleted`` event (the Backend API forgets the user)."""
        self.users.pop(user_id, None)
        return {"deleted": True, "id": user_id, "object": "user"}
