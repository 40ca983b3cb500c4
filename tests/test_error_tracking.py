"""Errors to Sentry (issue 14): with the sentry_dsn secret, an error logged anywhere (an actor's
crash, a failed job, an unhandled view error) reaches the Sentry ingest (a fake one on loopback,
real sentry-sdk) with every secret the daemon holds filtered out; without it nothing is sent."""

from __future__ import annotations

import asyncio
import json
import logging

import sentry_sdk

from blitzclawd import error_tracking
from blitzclawd.config import Secret, Secrets
from blitzclawd.testing.fake_sentry import FakeSentry

API_KEY = "sk-ant-api03-" + "S" * 40
ADMIN = "admin-" + "A" * 40


async def test_errors_reach_sentry_without_secrets() -> None:
    assert not error_tracking.setup(Secrets({}), release="t")  # no DSN: nothing set up
    async with FakeSentry() as sentry:
        secrets = Secrets(
            {
                "sentry_dsn": Secret(sentry.dsn),
                "anthropic_api_key": Secret(API_KEY),
                "admin_api_key": Secret(ADMIN),
            }
        )
        assert error_tracking.setup(secrets, release="blitzclawd@test", environment="test")
        try:
            log = logging.getLogger("blitzclawd.test")
            try:
                raise RuntimeError(f"upstream refused key {API_KEY}")
            except RuntimeError:
                log.exception(
                    "job failed for good", extra={"authorization": f"Bearer {ADMIN}", "job": 7}
                )
            log.info("an ordinary line, not an error")
            await asyncio.to_thread(sentry_sdk.flush, 10)
        finally:
            sentry_sdk.get_client().close()
            sentry_sdk.init()  # back to no client for the rest of the process

        assert len(sentry.events) == 1
        event = sentry.events[0]
        assert event["release"] == "blitzclawd@test" and event["environment"] == "test"
        assert event["logentry"]["message"] == "job failed for good"
        assert event["exception"]["values"][0]["type"] == "RuntimeError"
        text = b"".join(sentry.raw).decode()
        assert API_KEY not in text and ADMIN not in text
        assert error_tracking.FILTERED in json.dumps(event)
