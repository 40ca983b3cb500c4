"""The fake Google speaks Google's OAuth 2.0 wire format (the daemon's tests rely on it)."""

from __future__ import annotations

import base64
import hashlib
import urllib.parse
from typing import Any

import aiohttp

from blitzclawd.testing.fake_google import FakeGoogle

REDIRECT = "http://localhost:3000/integrations/google/callback"
VERIFIER = "v" * 43 + "-._~abc"


def challenge(verifier: str) -> str:
    return (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )


def consent_url(google: FakeGoogle, **extra: str) -> str:
    params = {
        "client_id": google.client_id,
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": "openid email https://www.googleapis.com/auth/gmail.readonly",
        "state": "s" * 40,
        "code_challenge": challenge(VERIFIER),
        "code_challenge_method": "S256",
        "access_type": "offline",
        "prompt": "consent",
        **extra,
    }
    return google.authorization_url + "?" + urllib.parse.urlencode(params)


def query_of(location: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))


async def post(url: str, data: dict[str, str], **kw: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.post(url, data=data, **kw) as resp:
        return resp.status, await resp.json(content_type=None)


async def exchange(google: FakeGoogle, code: str, **over: str) -> tuple[int, Any]:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": VERIFIER,
        "client_id": google.client_id,
        "client_secret": google.client_secret,
        **over,
    }
    return await post(google.token_url, form)


async def userinfo(google: FakeGoogle, token: str) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.get(google.userinfo_url, headers={"Authorization": f"Bearer {token}"}) as resp,
    ):
        return resp.status


async def test_consent_page_code_exchange_refresh_revoke_and_userinfo() -> None:
    async with FakeGoogle() as google:
        async with aiohttp.ClientSession() as http, http.get(consent_url(google)) as page:
            text = await page.text()
            assert page.status == 200 and "Allow" in text and "Deny" in text
        back = await google.approve(consent_url(google), "ada@gmail.test")
        assert back.startswith(REDIRECT + "?")
        q = query_of(back)
        assert q["state"] == "s" * 40 and "gmail.readonly" in q["scope"]
        status, token = await exchange(google, q["code"])
        assert status == 200, token
        assert token["token_type"] == "Bearer" and token["expires_in"] == 3599
        assert token["refresh_token"] and token["id_token"] and "openid" in token["scope"]
        assert await userinfo(google, token["access_token"]) == 200
        # Single use: the replay is invalid_grant, and what it gave is revoked.
        status, body = await exchange(google, q["code"])
        assert (status, body["error"]) == (400, "invalid_grant")
        assert await userinfo(google, token["access_token"]) == 401


async def test_refresh_gives_a_new_access_token_and_no_new_refresh_token() -> None:
    async with FakeGoogle() as google:
        q = query_of(await google.approve(consent_url(google), "ada@gmail.test"))
        _, token = await exchange(google, q["code"])
        google.expire_access_tokens()
        assert await userinfo(google, token["access_token"]) == 401
        basic = aiohttp.BasicAuth(google.client_id, google.client_secret)
        form = {"grant_type": "refresh_token", "refresh_token": token["refresh_token"]}
        status, new = await post(google.token_url, form, auth=basic)  # HTTP Basic works too
        assert status == 200 and "refresh_token" not in new
        assert new["access_token"] != token["access_token"]
        assert await userinfo(google, new["access_token"]) == 200
        # Revoked from Google's side: the refresh is invalid_grant.
        google.revoke_grant("ada@gmail.test")
        status, body = await post(google.token_url, form, auth=basic)
        assert (status, body["error"]) == (400, "invalid_grant")
        status, body = await post(
            google.token_url, {**form, "refresh_token": "1//nope"}, auth=basic
        )
        assert (status, body["error"]) == (400, "invalid_grant")


async def test_pkce_redirect_uri_client_and_denial_are_checked() -> None:
    async with FakeGoogle() as google:
        q = query_of(await google.approve(consent_url(google), "ada@gmail.test"))
        status, body = await exchange(google, q["code"], code_verifier="w" * 43)
        assert (status, body["error"]) == (400, "invalid_grant")
        q = query_of(await google.approve(consent_url(google), "ada@gmail.test"))
        status, body = await exchange(google, q["code"], redirect_uri="http://evil.test/cb")
        assert (status, body["error"]) == (400, "redirect_uri_mismatch")
        q = query_of(await google.approve(consent_url(google), "ada@gmail.test"))
        status, body = await exchange(google, q["code"], client_secret="wrong")
        assert (status, body["error"]) == (401, "invalid_client")
        denied = query_of(await google.deny(consent_url(google)))
        assert denied == {"error": "access_denied", "state": "s" * 40}
        async with aiohttp.ClientSession() as http:
            async with http.get(consent_url(google, client_id="someone-else")) as page:
                assert page.status == 401


async def test_revoke_ends_the_grant_and_a_second_revoke_is_invalid_token() -> None:
    async with FakeGoogle() as google:
        q = query_of(await google.approve(consent_url(google), "ada@gmail.test"))
        _, token = await exchange(google, q["code"])
        status, body = await post(google.revoke_url, {"token": token["refresh_token"]})
        assert status == 200 and body == {}
        assert not google.token_is_live(token["access_token"])
        assert await userinfo(google, token["access_token"]) == 401
        status, body = await post(google.revoke_url, {"token": token["refresh_token"]})
        assert (status, body["error"]) == (400, "invalid_token")
