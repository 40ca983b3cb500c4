"""Clerk session tokens, verified against a FakeClerk's JWKS over real HTTP on 127.0.0.1.

Time is an injected clock (tokens are minted at ``clock.t``), so expiry, leeway, cache TTL and the
refetch rate limit are exercised without sleeping.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio

from blitzclawd.auth.clerk import ClerkVerifier, KeysUnavailable, Session, TokenError
from blitzclawd.testing.fake_clerk import FakeClerk

ORIGIN = "http://localhost:3000"


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest_asyncio.fixture(loop_scope="function")
async def clerk() -> AsyncIterator[FakeClerk]:
    async with FakeClerk() as fake:
        yield fake


@pytest_asyncio.fixture(loop_scope="function")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def verifier(clerk: FakeClerk, http: aiohttp.ClientSession, clock: Clock) -> ClerkVerifier:
    return make(clerk, http, clock)


def make(clerk: FakeClerk, http: aiohttp.ClientSession, clock: Clock, **kw: Any) -> ClerkVerifier:
    kw.setdefault("secret_key", clerk.secret_key)
    kw.setdefault("allowed_azp", [ORIGIN])
    return ClerkVerifier(http, clerk.jwks_url, clock=clock, **kw)


async def refused(verifier: ClerkVerifier, token: str) -> str:
    with pytest.raises(TokenError) as err:
        await verifier.verify(token)
    if len(token) > 16:  # the reason never echoes the token
        assert token not in str(err.value) and token not in err.value.reason
    return err.value.reason


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# -- accepted --------------------------------------------------------------------------------


async def test_valid_token(clerk: FakeClerk, verifier: ClerkVerifier, clock: Clock) -> None:
    token = clerk.mint("user_2abc", sid="sess_2xyz", now=clock.t)
    session = await verifier.verify(token)
    assert session == Session("user_2abc", "sess_2xyz", session.claims)
    assert session.claims["iss"] == clerk.issuer and session.claims["azp"] == ORIGIN
    assert clerk.jwks_requests == 1


async def test_public_jwks_endpoint_without_secret(
    clerk: FakeClerk, http: aiohttp.ClientSession, clock: Clock
) -> None:
    verifier = ClerkVerifier(http, clerk.public_jwks_url, issuer=clerk.issuer, clock=clock)
    assert (await verifier.verify(clerk.mint("user_1", now=clock.t))).user_id == "user_1"


async def test_azp_rules(clerk: FakeClerk, http: aiohttp.ClientSession, clock: Clock) -> None:
    verifier = make(clerk, http, clock, allowed_azp=["https://app.example.com/", ORIGIN])
    assert await verifier.verify(clerk.mint("user_1", azp="https://app.example.com", now=clock.t))
    assert await verifier.verify(clerk.mint("user_1", azp=None, now=clock.t))  # no azp: fine
    foreign = clerk.mint("user_1", azp="https://evil.example", now=clock.t)
    assert await refused(verifier, foreign) == "foreign azp"
    # Nothing configured: any azp passes (documented; configure origins in production).
    assert await make(clerk, http, clock, allowed_azp=()).verify(foreign)


async def test_issuer_checked_when_configured(
    clerk: FakeClerk, http: aiohttp.ClientSession, clock: Clock
) -> None:
    verifier = make(clerk, http, clock, issuer=clerk.issuer)
    assert await verifier.verify(clerk.mint("user_1", now=clock.t))
    other = clerk.mint("user_1", extra={"iss": "https://other.clerk.accounts.dev"}, now=clock.t)
    assert await refused(verifier, other) == "foreign issuer"


# -- time ------------------------------------------------------------------------------------


async def test_expiry_with_leeway(clerk: FakeClerk, verifier: ClerkVerifier, clock: Clock) -> None:
    token = clerk.mint("user_1", ttl=60, now=clock.t)
    clock.t += 64  # 4 s past exp: inside the 5 s leeway
    assert (await verifier.verify(token)).user_id == "user_1"
    clock.t += 2  # 6 s past exp
    assert await refused(verifier, token) == "expired"


async def test_not_yet_valid(clerk: FakeClerk, verifier: ClerkVerifier, clock: Clock) -> None:
    assert await verifier.verify(clerk.mint("user_1", nbf_offset=4, now=clock.t))  # skew: ok
    assert await refused(verifier, clerk.mint("user_1", nbf_offset=30, now=clock.t)) == (
        "not yet valid"
    )
    future = clerk.mint("user_1", now=clock.t + 600)  # iat (and nbf) ten minutes ahead
    assert await refused(verifier, future) == "not yet valid"


# -- keys ------------------------------------------------------------------------------------


async def test_unknown_kid_refetches_once(
    clerk: FakeClerk, verifier: ClerkVerifier, clock: Clock
) -> None:
    await verifier.verify(clerk.mint("user_1", now=clock.t))
    clock.t += 10  # past the refetch interval: a miss may refetch
    assert await refused(verifier, clerk.mint("user_1", kid="ins_unknown", now=clock.t)) == (
        "unknown signing key"
    )
    assert clerk.jwks_requests == 2


async def test_unknown_kid_on_cold_cache_fetches_once(
    clerk: FakeClerk, verifier: ClerkVerifier, clock: Clock
) -> None:
    token = clerk.mint("user_1", kid="ins_unknown", now=clock.t)
    assert await refused(verifier, token) == "unknown signing key"
    assert clerk.jwks_requests == 1  # the initial load was the refetch


async def test_key_not_published(clerk: FakeClerk, verifier: ClerkVerifier, clock: Clock) -> None:
    forged = clerk.mint("user_1", sign_with=clerk.unpublished_key(), now=clock.t)  # published kid
    assert await refused(verifier, forged) == "bad signature"


async def test_tampered_payload(clerk: FakeClerk, verifier: ClerkVerifier, clock: Clock) -> None:
    header, _, signature = clerk.mint("user_1", now=clock.t).split(".")
    other_payload = clerk.mint("user_admin", now=clock.t).split(".")[1]
    assert await refused(verifier, f"{header}.{other_payload}.{signature}") == "bad signature"


@pytest.mark.parametrize("alg", ["HS256", "none"])
async def test_algorithm_confusion(
    clerk: FakeClerk, verifier: ClerkVerifier, clock: Clock, alg: str
) -> None:
    token = clerk.mint("user_1", alg=alg, now=clock.t)
    assert await refused(verifier, token) == "algorithm not allowed"
    assert clerk.jwks_requests == 0  # refused before any key was looked at


@pytest.mark.parametrize("header", [{"alg": "RS512"}, {"alg": "rs256"}, {"typ": "JWT"}])
async def test_other_algorithms(
    clerk: FakeClerk, verifier: ClerkVerifier, clock: Clock, header: dict[str, Any]
) -> None:
    _, payload, signature = clerk.mint("user_1", now=clock.t).split(".")
    token = f"{b64(orjson.dumps({**header, 'kid': clerk.kid}))}.{payload}.{signature}"
    assert await refused(verifier, token) == "algorithm not allowed"


async def test_key_rotation_followed_without_restart(
    clerk: FakeClerk, verifier: ClerkVerifier, clock: Clock
) -> None:
    old = clerk.mint("user_1", ttl=7200, now=clock.t)
    await verifier.verify(old)
    new_kid = clerk.rotate_key()
    clock.t += 60
    new = clerk.mint("user_1", now=clock.t)
    assert orjson.loads(base64.urlsafe_b64decode(new.split(".")[0] + "=="))["kid"] == new_kid
    assert (await verifier.verify(new)).user_id == "user_1"
    assert clerk.jwks_requests == 2  # exactly one refetch
    assert await verifier.verify(old)  # the old key is still published
    # Clerk drops the old key: once the cache expires it is gone here too.
    clerk.rotate_key(keep_old=False)
    clock.t += 3600
    assert await refused(verifier, old) == "unknown signing key"


async def test_jwks_cached(clerk: FakeClerk, verifier: ClerkVerifier, clock: Clock) -> None:
    for _ in range(3):
        await verifier.verify(clerk.mint("user_1", now=clock.t))
        clock.t += 1000
    assert clerk.jwks_requests == 1
    clock.t += 600  # 3600 s since the fetch: the TTL is up
    await verifier.verify(clerk.mint("user_1", now=clock.t))
    assert clerk.jwks_requests == 2


async def test_refetch_rate_limited(
    clerk: FakeClerk, verifier: ClerkVerifier, clock: Clock
) -> None:
    await verifier.verify(clerk.mint("user_1", now=clock.t))
    clock.t += 10
    for i in range(30):  # a spray of made-up kids
        assert await refused(verifier, clerk.mint("u", kid=f"ins_{i}", now=clock.t))
    assert clerk.jwks_requests == 2
    sprayed = [verifier.verify(clerk.mint("u", kid=f"ins_x{i}", now=clock.t)) for i in range(30)]
    results = await asyncio.gather(*sprayed, return_exceptions=True)
    assert all(isinstance(r, TokenError) for r in results)
    assert clerk.jwks_requests == 2
    clock.t += 5  # one interval later, one more refetch is allowed
    for i in range(10):
        assert await refused(verifier, clerk.mint("u", kid=f"ins_y{i}", now=clock.t))
    assert clerk.jwks_requests == 3
    assert await verifier.verify(clerk.mint("user_1", now=clock.t))  # real tokens unaffected


async def test_concurrent_verifications_share_one_fetch(
    clerk: FakeClerk, verifier: ClerkVerifier, clock: Clock
) -> None:
    clerk.jwks_gate = asyncio.Event()
    tasks = [
        asyncio.create_task(verifier.verify(clerk.mint(f"user_{i}", now=clock.t)))
        for i in range(20)
    ]
    await clerk.wait_for_jwks_requests(1)  # the fetch is in flight; every task started first
    tasks[0].cancel()  # one caller giving up does not cancel the fetch for the others
    clerk.jwks_gate.set()
    results = await asyncio.gather(*tasks[1:])
    assert [s.user_id for s in results] == [f"user_{i}" for i in range(1, 20)]
    assert clerk.jwks_requests == 1
    assert tasks[0].cancelled()


async def test_keys_unavailable(
    clerk: FakeClerk, http: aiohttp.ClientSession, verifier: ClerkVerifier, clock: Clock
) -> None:
    token = clerk.mint("user_1", now=clock.t)
    clerk.jwks_status = 503
    with pytest.raises(KeysUnavailable) as err:
        await verifier.verify(token)
    assert err.value.reason == "signing keys unavailable"
    with pytest.raises(KeysUnavailable):  # within the interval: no new fetch
        await verifier.verify(token)
    assert clerk.jwks_requests == 1
    clerk.jwks_status = 200
    clock.t += 5
    assert await verifier.verify(token)  # recovered
    # A wrong secret key (401) is the same to the caller.
    wrong = make(clerk, http, clock, secret_key="sk_test_wrong")
    with pytest.raises(KeysUnavailable):
        await wrong.verify(token)


async def test_jwks_server_down(http: aiohttp.ClientSession, clock: Clock) -> None:
    clerk = FakeClerk()
    await clerk.start()
    await clerk.stop()  # nothing listens on that port any more
    with pytest.raises(KeysUnavailable):
        await make(clerk, http, clock).verify(clerk.mint("user_1", now=clock.t))


async def test_stale_keys_survive_a_failed_refresh(
    clerk: FakeClerk, verifier: ClerkVerifier, clock: Clock
) -> None:
    await verifier.verify(clerk.mint("user_1", now=clock.t))
    clerk.jwks_status = 503
    clock.t += 4000  # cache expired and the refresh fails: known keys still verify
    assert await verifier.verify(clerk.mint("user_1", now=clock.t))
    assert clerk.jwks_requests == 2
    with pytest.raises(KeysUnavailable):  # a kid we never saw cannot be judged
        await verifier.verify(clerk.mint("user_1", kid="ins_new", now=clock.t))


# -- malformed -------------------------------------------------------------------------------


async def test_malformed_tokens(clerk: FakeClerk, verifier: ClerkVerifier, clock: Clock) -> None:
    good = clerk.mint("user_1", now=clock.t)
    header, payload, signature = good.split(".")
    header_json = {"alg": "RS256", "kid": clerk.kid}
    cases = [
        "",
        "not-a-jwt",
        f"{header}.{payload}",  # two parts
        f"{good}.extra",  # four parts
        f"{header}!.{payload}.{signature}",  # bad base64
        f"{header}.{payload}.{signature}*",
        f"{header}.{payload[:-1]}$.{signature}",
        f"{b64(b'not json')}.{payload}.{signature}",
        f"{b64(b'[1, 2]')}.{payload}.{signature}",  # JSON, not an object
        f"{b64(orjson.dumps({'alg': 'RS256'}))}.{payload}.{signature}",  # no kid
        f"{b64(orjson.dumps({**header_json, 'crit': ['x']}))}.{payload}.{signature}",
        f".{payload}.{signature}",
        good + "é",
        "a" * 20_000,
    ]
    for token in cases:
        assert await refused(verifier, token) == "malformed token", token
    assert clerk.jwks_requests == 0  # none of them cost a fetch


@pytest.mark.parametrize(
    "extra",
    [{"exp": None}, {"exp": "soon"}, {"sub": None}, {"sub": ""}, {"sid": 7}, {"nbf": True}],
)
async def test_signed_but_malformed_claims(
    clerk: FakeClerk, verifier: ClerkVerifier, clock: Clock, extra: dict[str, Any]
) -> None:
    token = clerk.mint("user_1", extra=extra, now=clock.t)
    assert await refused(verifier, token) == "malformed token"
