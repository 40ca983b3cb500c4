"""Clerk session tokens: RS256 JWTs checked against Clerk's published signing keys (JWKS).

    verifier = ClerkVerifier(http, "https://api.clerk.com/v1/jwks", secret_key=sk,
                             allowed_azp=["https://app.example.com"])
    session = await verifier.verify(token)   # TokenError (401) / KeysUnavailable (503)

Keys are cached for ``cache_ttl``. A token naming an unknown ``kid`` triggers one refetch (Clerk
rotated its key), at most once per ``min_refetch_interval`` so a stream of made-up kids cannot
turn us into a load generator against Clerk; concurrent verifications share one in-flight fetch.
(So a key first seen less than that interval after the last fetch is refused until it passes.)
When a refresh fails, the keys we already have keep working (tokens live ~60 s, so an outage at
the JWKS endpoint must not log everyone out); only a kid we have never seen is then unverifiable.

PyJWT parses the token and the JWKS entries and verifies the signature, with the algorithm pinned
to RS256. Ours are only what PyJWT cannot do for an asyncio daemon: fetching the JWKS without
blocking the loop (its PyJWKClient fetches with urllib), the rate-limited refetch on an unknown
kid, and the time claims, checked against an injectable clock with the same semantics as PyJWT's
(exp, nbf and iat with `leeway`), so key rotation and expiry are testable without waiting.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import rsa

log = logging.getLogger("blitzclawd.auth")

MAX_TOKEN_LENGTH = 16 * 1024  # Clerk tokens are ~1 KiB; refuse megabyte "tokens" before parsing
MIN_KEY_BITS = 2048
_FETCH_TIMEOUT = aiohttp.ClientTimeout(total=10)
# Signature only: the time claims are ours (see the module's docstring), audience unused by Clerk.
_DECODE_OPTIONS: Any = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
}


class TokenError(Exception):
    """A refused token. ``reason`` is short and safe to show; it never quotes the token."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KeysUnavailable(TokenError):
    """The signing keys could not be fetched: the token was not judged (map to 503, not 401)."""

    def __init__(self, reason: str = "signing keys unavailable") -> None:
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class Session:
    user_id: str  # `sub`, "user_…"
    session_id: str | None  # `sid`, "sess_…"
    claims: dict[str, Any]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _origin(url: str) -> str:
    return url.rstrip("/")


def parse_jwks(document: Any) -> dict[str, rsa.RSAPublicKey]:
    """The usable RS256 signing keys of a JWKS document, by kid; anything else is skipped."""
    keys: dict[str, rsa.RSAPublicKey] = {}
    entries = document.get("keys") if isinstance(document, dict) else None
    for jwk in entries if isinstance(entries, list) else ():
        if not isinstance(jwk, dict) or jwk.get("kty") != "RSA":
            continue
        if jwk.get("use", "sig") != "sig" or jwk.get("alg", "RS256") != "RS256":
            continue
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid:
            continue
        try:
            key = jwt.PyJWK(jwk, algorithm="RS256").key
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
            continue
        if isinstance(key, rsa.RSAPublicKey) and key.key_size >= MIN_KEY_BITS:
            keys[kid] = key
    return keys


class ClerkVerifier:
    """Verifies Clerk session tokens. One per process; safe for concurrent use on one loop.

    ``allowed_azp``: the origins our frontend runs on. A token's ``azp`` (the origin that asked
    Clerk for it), when present, must be one of them; an empty list means "not configured" and any
    ``azp`` is accepted. ``issuer``: when set, ``iss`` must equal it (the Clerk Frontend API URL).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        jwks_url: str,
        *,
        secret_key: str | None = None,
        allowed_azp: Sequence[str] = (),
        issuer: str | None = None,
        leeway: float = 5.0,
        cache_ttl: float = 3600.0,
        min_refetch_interval: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._http = session
        self._jwks_url = jwks_url
        self._headers = {"Authorization": f"Bearer {secret_key}"} if secret_key else {}
        self._allowed_azp = frozenset(_origin(a) for a in allowed_azp)
        self._issuer = _origin(issuer) if issuer else None
        self._leeway = leeway
        self._cache_ttl = cache_ttl
        self._min_refetch_interval = min_refetch_interval
        self._clock = clock
        self._keys: dict[str, rsa.RSAPublicKey] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last fetch started, successful or not
        self._last_ok = False
        self._inflight: asyncio.Task[bool] | None = None

    async def verify(self, token: str) -> Session:
        if not isinstance(token, str) or not token.isascii() or len(token) > MAX_TOKEN_LENGTH:
            raise TokenError("malformed token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise TokenError("malformed token") from None
        # Only RS256, decided from the header before any key is looked at (and pinned again in
        # the decode): a verifier that lets the token pick can be fed HS256 "signed" with the
        # public key, or none.
        if header.get("alg") != "RS256":
            raise TokenError("algorithm not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenError("malformed token")
        if "crit" in header:  # extensions we don't implement must not be silently ignored
            raise TokenError("malformed token")
        try:  # structurally a JWT (its payload a JSON object) before we may fetch keys for it
            jwt.decode(token, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            raise TokenError("malformed token") from None
        key = await self._signing_key(kid)
        try:
            claims = jwt.decode(token, key, algorithms=["RS256"], options=_DECODE_OPTIONS)
        except jwt.InvalidSignatureError:
            raise TokenError("bad signature") from None
        except jwt.InvalidTokenError:
            raise TokenError("malformed token") from None
        if not isinstance(claims, dict):
            raise TokenError("malformed token")
        return self._check_claims(claims)

    def _check_claims(self, claims: dict[str, Any]) -> Session:
        now = self._clock()
        exp, nbf, iat = claims.get("exp"), claims.get("nbf"), claims.get("iat")
        if not _number(exp) or (nbf is not None and not _number(nbf)):
            raise TokenError("malformed token")
        if iat is not None and not _number(iat):
            raise TokenError("malformed token")
        if now >= exp + self._leeway:
            raise TokenError("expired")
        if nbf is not None and now + self._leeway < nbf:
            raise TokenError("not yet valid")
        if iat is not None and now + self._leeway < iat:  # issued in the future: clock trouble
            raise TokenError("not yet valid")
        azp = claims.get("azp")
        if azp is not None:
            if not isinstance(azp, str):
                raise TokenError("malformed token")
            if self._allowed_azp and _origin(azp) not in self._allowed_azp:
                raise TokenError("foreign azp")
        if self._issuer is not None:
            iss = claims.get("iss")
            if not isinstance(iss, str) or _origin(iss) != self._issuer:
                raise TokenError("foreign issuer")
        sub, sid = claims.get("sub"), claims.get("sid")
        if not isinstance(sub, str) or not sub or (sid is not None and not isinstance(sid, str)):
            raise TokenError("malformed token")
        return Session(user_id=sub, session_id=sid, claims=claims)

    # -- keys ----------------------------------------------------------------------------------

    async def _signing_key(self, kid: str) -> rsa.RSAPublicKey:
        key = self._keys.get(kid)
        if key is not None and self._fresh():
            return key
        ok = await self._refresh()  # cache expired, or an unknown kid (rotation): one fetch
        key = self._keys.get(kid)
        if key is not None:  # also after a failed refresh: stale keys beat a lockout
            return key
        if not ok:
            raise KeysUnavailable()
        raise TokenError("unknown signing key")

    def _fresh(self) -> bool:
        return self._fetched_at is not None and self._clock() - self._fetched_at < self._cache_ttl

    async def _refresh(self) -> bool:
        """Join the in-flight fetch or start one (rate limited). True if the keys are current."""
        task = self._inflight
        if task is None or task.done():
            now = self._clock()
            if (
                self._attempted_at is not None
                and now - self._attempted_at < self._min_refetch_interval
            ):
                return self._last_ok
            self._attempted_at = now
            task = self._inflight = asyncio.create_task(self._fetch())
        # Shielded: one caller giving up (client disconnect) must not cancel it for the others.
        return await asyncio.shield(task)

    async def _fetch(self) -> bool:
        try:
            async with self._http.get(
                self._jwks_url, headers=self._headers, timeout=_FETCH_TIMEOUT
            ) as resp:
                if resp.status != 200:
                    raise ValueError(f"HTTP {resp.status}")
                keys = parse_jwks(orjson.loads(await resp.read()))
            if not keys:
                raise ValueError("no usable RS256 signing key")
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("clerk JWKS fetch failed: %s", exc, extra={"jwks_url": self._jwks_url})
            self._last_ok = False
            return False
        self._keys, self._fetched_at, self._last_ok = keys, self._clock(), True
        return True
