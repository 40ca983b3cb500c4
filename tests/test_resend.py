"""Resend: the client against the fake over real HTTP (send, idempotency, errors, retryability)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from blitzclawd.notify.resend import ResendClient, ResendError
from blitzclawd.testing.fake_resend import FakeResend

SENDER = "BlitzClaw <hello@blitzclaw.test>"


@asynccontextmanager
async def running(**kwargs: Any) -> AsyncIterator[tuple[FakeResend, ResendClient]]:
    async with FakeResend(**kwargs) as fake, aiohttp.ClientSession() as http:
        yield fake, ResendClient(http, fake.base_url, fake.api_key, SENDER)


async def send(client: ResendClient, key: str = "notification-1", **overrides: Any) -> str:
    fields: dict[str, Any] = {
        "to": "ada@example.test",
        "subject": "Welcome",
        "text": "Hi Ada",
        "html": "<p>Hi Ada</p>",
        "idempotency_key": key,
        "tags": {"kind": "welcome"},
    }
    return await client.send(**(fields | overrides))


class Clock:
    """A clock that only moves when told to: the rate limit test decides nothing by timing."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_send_returns_the_id_and_records_the_email() -> None:
    async with running() as (fake, client):
        email_id = await send(client)
        assert len(email_id) == 36  # a UUID, as Resend answers
        assert fake.sent == [
            {
                "id": email_id,
                "from": SENDER,
                "to": ["ada@example.test"],
                "subject": "Welcome",
                "text": "Hi Ada",
                "html": "<p>Hi Ada</p>",
                "tags": {"kind": "welcome"},
                "idempotency_key": "notification-1",
            }
        ]


async def test_the_same_idempotency_key_sends_once() -> None:
    async with running() as (fake, client):
        first = await send(client)
        assert await send(client) == first  # a retry after an unknown outcome: same id
        assert len(fake.sent) == 1
        assert await send(client, key="notification-2") != first
        assert len(fake.sent) == 2
        with pytest.raises(ResendError) as caught:
            await send(client, subject="Something else")  # same key, other email
        err = caught.value
        assert (err.status, err.name, err.retryable) == (409, "invalid_idempotent_request", False)
        assert len(fake.sent) == 2
        with pytest.raises(ValueError, match="idempotency_key"):
            await send(client, key="k" * 257)


async def test_rate_limit_is_retryable() -> None:
    clock = Clock()
    async with running(rate_limit=2, clock=clock) as (fake, client):
        await send(client, key="a")
        await send(client, key="b")
        with pytest.raises(ResendError) as caught:
            await send(client, key="c")
        err = caught.value
        assert (err.status, err.name, err.retryable) == (429, "rate_limit_exceeded", True)
        assert "2 requests per second" in err.message
        clock.now += 1.0  # the next second
        await send(client, key="c")
        assert [e["idempotency_key"] for e in fake.sent] == ["a", "b", "c"]
        assert fake.statuses == [200, 200, 429, 200]


async def test_rate_limit_headers_on_429() -> None:
    async with FakeResend(rate_limit=1, clock=Clock()) as fake, aiohttp.ClientSession() as http:
        headers = {"authorization": f"Bearer {fake.api_key}"}
        body = {"from": SENDER, "to": "a@example.test", "subject": "s", "text": "t"}
        async with http.post(f"{fake.base_url}/emails", json=body, headers=headers) as resp:
            assert resp.status == 200 and resp.headers["ratelimit-remaining"] == "0"
        async with http.post(f"{fake.base_url}/emails", json=body, headers=headers) as resp:
            assert resp.status == 429 and resp.headers["retry-after"] == "1"
            assert (await resp.json())["statusCode"] == 429


async def test_server_errors_are_retryable_and_a_retry_sends_once() -> None:
    async with running() as (fake, client):
        fake.fail_next(2)
        for _ in range(2):
            with pytest.raises(ResendError) as caught:
                await send(client)
            assert (caught.value.status, caught.value.retryable) == (500, True)
            assert caught.value.name == "internal_server_error"
        first = await send(client)
        fake.fail_next(1, 503)
        with pytest.raises(ResendError) as caught:
            await send(client)
        assert caught.value.status == 503 and caught.value.retryable
        assert await send(client) == first
        assert len(fake.sent) == 1


async def test_a_bad_key_is_refused_without_leaking_it() -> None:
    wrong = "re_WRONG_secret_key_0123456789"
    async with FakeResend() as fake, aiohttp.ClientSession() as http:
        client = ResendClient(http, fake.base_url, wrong, SENDER)
        with pytest.raises(ResendError) as caught:
            await send(client)
        err = caught.value
        assert (err.status, err.name, err.retryable) == (403, "invalid_api_key", False)
        for text in (str(err), repr(err), err.message, repr(client)):
            assert wrong not in text
        assert fake.sent == []
        async with http.post(f"{fake.base_url}/emails", json={}) as resp:  # no key at all
            assert resp.status == 401
            assert await resp.json() == {
                "statusCode": 401,
                "message": "Missing API key in the authorization header.",
                "name": "missing_api_key",
            }
    with pytest.raises(ValueError):
        ResendClient(http, "http://127.0.0.1:1", "", SENDER)


async def test_validation_errors_are_not_retryable() -> None:
    async with running() as (fake, client):
        with pytest.raises(ResendError) as caught:
            await send(client, to="not-an-address")
        assert (caught.value.status, caught.value.name) == (400, "validation_error")
        assert not caught.value.retryable
        with pytest.raises(ResendError) as caught:
            await send(client, subject="")
        assert (caught.value.status, caught.value.name) == (422, "missing_required_field")
        assert "`subject`" in caught.value.message
        with pytest.raises(ResendError) as caught:
            await send(client, text="", html="")
        assert "`html` or `text`" in caught.value.message
        with pytest.raises(ValueError, match="tag"):
            await send(client, tags={"user": "ada@example.test"})  # refused before sending
        assert fake.sent == []
    async with FakeResend() as fake, aiohttp.ClientSession() as http:
        client = ResendClient(http, fake.base_url, fake.api_key, "not an address")
        with pytest.raises(ResendError) as caught:
            await send(client)
        assert (caught.value.status, caught.value.name) == (422, "invalid_from_address")


async def test_no_answer_is_retryable() -> None:
    async with FakeResend() as fake:
        base = fake.base_url
    async with aiohttp.ClientSession() as http:
        client = ResendClient(http, base, "re_key", SENDER)  # the fake has stopped
        with pytest.raises(ResendError) as caught:
            await send(client)
        assert caught.value.status is None and caught.value.retryable
        assert "re_key" not in str(caught.value)
