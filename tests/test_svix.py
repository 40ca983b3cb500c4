"""Svix webhook signatures (Clerk webhooks): Svix's published example and every refusal."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from blitzclawd.auth.svix import WebhookSignatureError, sign_svix, verify_svix
from blitzclawd.testing.fake_clerk import FakeClerk

# The example from Svix's "verifying manually" docs: an independent known answer.
DOC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
DOC_ID, DOC_TS, DOC_BODY = "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'
DOC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
DOC_HEADERS = {"svix-id": DOC_ID, "svix-timestamp": str(DOC_TS), "svix-signature": DOC_SIGNATURE}


def refused(headers: dict[str, str], body: bytes, secret: str, now: float) -> str:
    with pytest.raises(WebhookSignatureError) as err:
        verify_svix(headers, body, secret, now=now)
    return err.value.reason


def test_known_answer() -> None:
    assert sign_svix(DOC_ID, DOC_TS, DOC_BODY, DOC_SECRET) == DOC_SIGNATURE
    verify_svix(DOC_HEADERS, DOC_BODY, DOC_SECRET, now=DOC_TS)


def test_fake_clerk_delivery_verifies() -> None:
    clerk = FakeClerk()
    headers, body = clerk.webhook("user.created", clerk.user_created("user_1", "a@example.com"))
    verify_svix(headers, body, clerk.webhook_secret)
    verify_svix(CIMultiDict(headers), body, clerk.webhook_secret)  # as aiohttp hands them over
    title_case = {k.title(): v for k, v in headers.items()}  # a plain dict in another case
    verify_svix(title_case, body, clerk.webhook_secret)


def test_tampered_body() -> None:
    reason = refused(DOC_HEADERS, b'{"test": 2432232315}', DOC_SECRET, DOC_TS)
    assert reason == "no matching signature"


def test_tampered_id_or_timestamp() -> None:
    assert refused({**DOC_HEADERS, "svix-id": "msg_other"}, DOC_BODY, DOC_SECRET, DOC_TS)
    moved = {**DOC_HEADERS, "svix-timestamp": str(DOC_TS + 1)}
    assert refused(moved, DOC_BODY, DOC_SECRET, DOC_TS) == "no matching signature"


def test_wrong_secret() -> None:
    other = FakeClerk().webhook_secret
    assert refused(DOC_HEADERS, DOC_BODY, other, DOC_TS) == "no matching signature"


def test_timestamp_tolerance() -> None:
    verify_svix(DOC_HEADERS, DOC_BODY, DOC_SECRET, now=DOC_TS + 300)
    verify_svix(DOC_HEADERS, DOC_BODY, DOC_SECRET, now=DOC_TS - 300)
    assert refused(DOC_HEADERS, DOC_BODY, DOC_SECRET, DOC_TS + 301) == "timestamp too old"
    assert refused(DOC_HEADERS, DOC_BODY, DOC_SECRET, DOC_TS - 301) == "timestamp in the future"


@pytest.mark.parametrize("missing", ["svix-id", "svix-timestamp", "svix-signature"])
def test_missing_header(missing: str) -> None:
    headers = {k: v for k, v in DOC_HEADERS.items() if k != missing}
    assert refused(headers, DOC_BODY, DOC_SECRET, DOC_TS) == "missing svix headers"
    assert refused({**DOC_HEADERS, missing: ""}, DOC_BODY, DOC_SECRET, DOC_TS)


FULLWIDTH = str(DOC_TS).translate({ord("0") + d: 0xFF10 + d for d in range(10)})  # isdigit()!


@pytest.mark.parametrize("value", ["1614265330.5", "-1614265330", "abc", FULLWIDTH, " 1", "1e9"])
def test_non_integer_timestamp(value: str) -> None:
    headers = {**DOC_HEADERS, "svix-timestamp": value}
    assert refused(headers, DOC_BODY, DOC_SECRET, DOC_TS) == "invalid svix-timestamp"


def test_one_of_several_signatures_matches() -> None:
    # Svix sends several entries while a secret rotates; junk entries are skipped, not fatal.
    entries = ["v1,bm90IHRoZSBzaWduYXR1cmU=", "v1,%%%", "v1a,AAAA", "garbage", DOC_SIGNATURE]
    headers = {**DOC_HEADERS, "svix-signature": " ".join(entries)}
    verify_svix(headers, DOC_BODY, DOC_SECRET, now=DOC_TS)
    headers["svix-signature"] = " ".join(entries[:-1])
    assert refused(headers, DOC_BODY, DOC_SECRET, DOC_TS) == "no matching signature"


def test_signature_under_another_version_is_not_accepted() -> None:
    headers = {**DOC_HEADERS, "svix-signature": DOC_SIGNATURE.replace("v1,", "v2,")}
    assert refused(headers, DOC_BODY, DOC_SECRET, DOC_TS) == "no matching signature"


def test_bad_secret_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="whsec_"):
        verify_svix(DOC_HEADERS, DOC_BODY, "whsec_not base64!", now=DOC_TS)
