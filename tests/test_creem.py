"""Creem: the client against the fake over real HTTP, signatures, events, and webhook retries."""

from __future__ import annotations

import copy
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from blitzclawd.payments import creem
from blitzclawd.payments.creem import (
    CreemClient,
    CreemError,
    CreemEvent,
    WebhookSignatureError,
    checkout_payment,
    parse_event,
    sign,
    verify_signature,
)
from blitzclawd.testing.fake_creem import RETRY_DELAYS, FakeCreem

PRODUCT = "prod_credits"
SECRET = "whsec_test_secret_value_42"


@asynccontextmanager
async def running(**kwargs: Any) -> AsyncIterator[tuple[FakeCreem, CreemClient]]:
    kwargs.setdefault("products", {PRODUCT: 100})
    async with FakeCreem(**kwargs) as fake, aiohttp.ClientSession() as http:
        yield fake, CreemClient(http, fake.base_url, fake.api_key)


async def topup(client: CreemClient, user_id: str = "user-1", units: int = 20) -> creem.Checkout:
    return await client.create_checkout(
        product_id=PRODUCT,
        request_id="req-7f3a",
        customer_email="ada@example.test",
        success_url="https://app.example.test/dashboard?topup=done",
        metadata={"user_id": user_id, "amount_cents": str(units * 100)},
        units=units,
    )


# -- the client -------------------------------------------------------------------------------


async def test_checkout_is_created_with_every_field() -> None:
    async with running() as (fake, client):
        checkout = await topup(client)
        assert checkout.id.startswith("ch_")
        assert checkout.checkout_url == f"https://checkout.creem.io/{checkout.id}"
        assert (checkout.request_id, checkout.status) == ("req-7f3a", "pending")
        stored = fake.checkouts[checkout.id]
        assert stored["product"]["id"] == PRODUCT and stored["units"] == 20
        assert stored["customer"] == {"email": "ada@example.test"}
        assert stored["success_url"] == "https://app.example.test/dashboard?topup=done"
        assert stored["metadata"] == {"user_id": "user-1", "amount_cents": "2000"}
        fetched = await client.get_checkout(checkout.id)
        assert fetched["id"] == checkout.id and fetched["status"] == "pending"


async def test_created_status_and_local_checkout_urls() -> None:
    async with running(checkout_status=201, local_checkout_urls=True) as (fake, client):
        checkout = await topup(client)  # 201 is as good as 200
        assert checkout.checkout_url == f"{fake.base_url}/checkout/{checkout.id}"
        async with aiohttp.ClientSession() as http, http.get(checkout.checkout_url) as resp:
            assert resp.status == 200
            assert "BlitzClaw Credits" in await resp.text()


@pytest.mark.parametrize("status", [401, 403])
async def test_a_bad_key_is_refused_without_leaking_it(status: int) -> None:
    wrong = "creem_live_WRONG_key_abcdef0123"
    async with FakeCreem(bad_key_status=status) as fake, aiohttp.ClientSession() as http:
        client = CreemClient(http, fake.base_url, wrong)
        with pytest.raises(CreemError) as caught:
            await client.create_checkout(
                product_id="prod_blitzclaw_credits",
                request_id="r",
                customer_email=None,
                success_url=None,
                metadata={},
            )
        err = caught.value
        assert err.status == status and err.bad_key and not err.retryable
        assert err.message == "Invalid API key"
        for text in (str(err), repr(err), err.message, repr(client)):
            assert wrong not in text
        assert fake.checkouts == {}


async def test_refusals_carry_creems_messages() -> None:
    async with running() as (fake, client):
        with pytest.raises(CreemError) as caught:
            await client.create_checkout(
                product_id="prod_nope",
                request_id="r",
                customer_email=None,
                success_url=None,
                metadata={},
            )
        assert (caught.value.status, caught.value.message) == (404, "Product not found")
        with pytest.raises(CreemError) as caught:
            await client.create_checkout(
                product_id=PRODUCT,
                request_id="r",
                customer_email=None,
                success_url="ftp://nowhere",
                metadata="oops",  # type: ignore[arg-type]
            )
        assert caught.value.status == 400
        assert (
            caught.value.message == "success_url must be a URL address; metadata must be an object"
        )
        with pytest.raises(CreemError) as caught:
            await client.get_checkout("ch_missing")
        assert caught.value.status == 404 and not caught.value.retryable
        assert fake.checkouts == {}


async def test_the_error_body_has_creems_shape() -> None:
    async with FakeCreem() as fake, aiohttp.ClientSession() as http:
        async with http.post(f"{fake.base_url}/v1/checkouts", json={}) as resp:
            assert resp.status == 401
            body = await resp.json()
        assert set(body) == {"trace_id", "status", "error", "message", "timestamp"}
        assert body["status"] == 401 and body["error"] == "Unauthorized"
        assert isinstance(body["message"], list) and isinstance(body["timestamp"], int)


async def test_server_errors_and_no_answer_are_retryable() -> None:
    async with running() as (fake, client):
        fake.fail_next(1, 503)
        with pytest.raises(CreemError) as caught:
            await topup(client)
        assert caught.value.status == 503 and caught.value.retryable
        assert (await topup(client)).id in fake.checkouts  # the next call goes through
        base = fake.base_url
    async with aiohttp.ClientSession() as http:
        client = CreemClient(http, base, "creem_test_key")  # the fake has stopped: nobody home
        with pytest.raises(CreemError) as caught:
            await client.get_checkout("ch_x")
        assert caught.value.status is None and caught.value.retryable


async def test_customers_are_found_by_id_or_email() -> None:
    async with running() as (fake, client):
        checkout = await topup(client)
        envelope, _ = fake.complete_checkout(checkout.id)
        customer_id = envelope["object"]["customer"]["id"]
        by_email = await client.get_customer(email="ada@example.test")
        by_id = await client.get_customer(customer_id=customer_id)
        assert by_email == by_id and by_id["email"] == "ada@example.test"
        with pytest.raises(CreemError) as caught:
            await client.get_customer(email="nobody@example.test")
        assert caught.value.status == 404
        with pytest.raises(ValueError):
            await client.get_customer()


# -- signatures -------------------------------------------------------------------------------

BODY = b'{"id":"evt_1","eventType":"checkout.completed","created_at":1,"object":{}}'


def test_a_valid_signature_passes() -> None:
    signature = sign(BODY, SECRET)
    assert len(signature) == 64 and int(signature, 16) >= 0
    verify_signature(BODY, signature, SECRET)
    verify_signature(BODY, f" {signature.upper()} ", SECRET)  # hex case and padding don't matter


@pytest.mark.parametrize(
    ("body", "header", "reason"),
    [
        (BODY.replace(b"evt_1", b"evt_2"), sign(BODY, SECRET), "does not match"),  # tampered
        (BODY, sign(BODY, "whsec_someone_else"), "does not match"),  # another secret
        (BODY, sign(BODY, SECRET)[:-1], "does not match"),  # truncated
        (BODY, "sha256=" + sign(BODY, SECRET), "does not match"),  # wrong format
        (BODY, "not hex at all ☃", "does not match"),  # garbage, non-ASCII too
        (BODY, None, "missing"),
        (BODY, "", "missing"),
        (BODY, "   ", "missing"),
    ],
)
def test_bad_signatures_are_refused(body: bytes, header: str | None, reason: str) -> None:
    with pytest.raises(WebhookSignatureError, match=re.escape(reason)) as caught:
        verify_signature(body, header, SECRET)
    assert SECRET not in str(caught.value) and sign(BODY, SECRET) not in str(caught.value)


def test_no_secret_configured_refuses_everything() -> None:
    with pytest.raises(WebhookSignatureError, match="no webhook secret"):
        verify_signature(BODY, sign(BODY, ""), "")


# -- events -----------------------------------------------------------------------------------


def test_parse_event_reads_the_envelope() -> None:
    ev = parse_event(BODY)
    assert ev == CreemEvent("evt_1", "checkout.completed", 1, {})
    # The timestamp is informational: a malformed one does not refuse the event.
    assert (
        parse_event(BODY.replace(b'"created_at":1', b'"created_at":"soon"')).created_at_ms is None
    )


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"eventType":"x","object":{}}', "'id'"),
        (b'{"id":"","eventType":"x","object":{}}', "'id'"),
        (b'{"id":"evt","object":{}}', "'eventType'"),
        (b'{"id":"evt","eventType":7,"object":{}}', "'eventType'"),
        (b'{"id":"evt","eventType":"x"}', "'object'"),
        (b'{"id":"evt","eventType":"x","object":[]}', "'object'"),
        (b'{"id":"' + b"e" * 201 + b'","eventType":"x","object":{}}', "at most 200"),
    ],
)
def test_parse_event_names_what_is_wrong(raw: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_event(raw)


async def test_a_completed_checkout_becomes_a_payment() -> None:
    async with running() as (fake, client):
        checkout = await topup(client, units=25)
        envelope, raw = fake.complete_checkout(checkout.id)
        assert orjson.loads(raw) == envelope and envelope["id"].startswith("evt_")
        payment = checkout_payment(parse_event(raw))
        order = fake.checkouts[checkout.id]["order"]
        assert payment.checkout_id == checkout.id and payment.order_id == order["id"]
        assert (payment.amount_cents, payment.currency) == (2500, "USD")
        assert payment.customer_id.startswith("cust_")
        assert payment.customer_email == "ada@example.test"
        assert (payment.user_id, payment.request_id) == ("user-1", "req-7f3a")
        assert payment.transaction_id == order["transaction"]
        assert payment.metadata == {"user_id": "user-1", "amount_cents": "2500"}
        assert (await client.get_checkout(checkout.id))["status"] == "completed"
        with pytest.raises(ValueError, match="already completed"):
            fake.complete_checkout(checkout.id)

        other = await topup(client, user_id="user-2")
        _, raw = fake.complete_checkout(other.id, amount_cents=999)  # paid less than asked
        assert checkout_payment(parse_event(raw)).amount_cents == 999


# Creem's published `checkout.completed` sample (docs.creem.io "Webhooks"), trimmed.
SAMPLE_CHECKOUT = {
    "id": "evt_5WHHcZPv7VS0YUsberIuOz",
    "eventType": "checkout.completed",
    "created_at": 1728734325927,
    "object": {
        "id": "ch_4l0N34kxo16AhRKUHFUuXr",
        "object": "checkout",
        "request_id": "my-request-id",
        "status": "completed",
        "order": {
            "id": "ord_4aDwWXjMLpes4Kj4XqNnUA",
            "customer": "cust_1OcIK1GEuVvXZwD19tjq2z",
            "amount": 1000,
            "currency": "EUR",
            "status": "paid",
        },
        "product": {"id": "prod_d1AY2Sadk9YAvLI0pj97f", "price": 1000},
        "customer": {"id": "cust_1OcIK1GEuVvXZwD19tjq2z", "email": "customer@example.com"},
        "metadata": {"user_id": "user-9", "internal_customer_id": "internal_123"},
    },
}


def _event(sample: dict[str, Any], path: str | None = None, value: Any = ...) -> CreemEvent:
    """The sample with object.<path> set to `value` (... deletes it)."""
    data = copy.deepcopy(sample)
    if path is not None:
        *parents, leaf = path.split(".")
        node = data["object"]
        for part in parents:
            node = node[part]
        if value is ...:
            del node[leaf]
        else:
            node[leaf] = value
    return parse_event(orjson.dumps(data))


def test_creems_own_sample_is_a_payment() -> None:
    payment = checkout_payment(_event(SAMPLE_CHECKOUT))
    assert (payment.order_id, payment.amount_cents, payment.currency) == (
        "ord_4aDwWXjMLpes4Kj4XqNnUA",
        1000,
        "EUR",
    )
    assert payment.transaction_id is None  # not in the published sample


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        ("order", ..., "missing object.order"),
        ("order.status", ..., "object.order.status is None, not 'paid'"),
        ("order.status", "pending", "not 'paid'"),
        ("order.id", ..., "missing object.order.id"),
        ("order.amount", ..., "missing object.order.amount"),
        ("order.amount", 10.0, "object.order.amount must be a non-negative integer (cents)"),
        ("order.amount", "1000", "object.order.amount must be"),
        ("order.amount", True, "object.order.amount must be"),
        ("order.amount", -5, "object.order.amount must be"),
        ("order.currency", ..., "missing object.order.currency"),
        ("customer", ..., "missing object.customer.id"),
        ("metadata", [], "object.metadata must be an object"),
        ("order.amount", 10**18, "object.order.amount must be a non-negative integer (cents)"),
        ("order.amount", 10**10 + 1, "up to 10000000000"),
        ("id", 42, "object.id must be a non-empty string"),
    ],
)
def test_payment_extraction_names_the_missing_field(path: str, value: Any, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        checkout_payment(_event(SAMPLE_CHECKOUT, path, value))


def test_metadata_is_a_claim_that_may_be_absent() -> None:
    # An order through a product link carries no metadata and no request_id: still a payment,
    # that billing then matches to no top-up.
    bare = checkout_payment(_event(_event_dict(SAMPLE_CHECKOUT, drop=("metadata",))))
    assert (bare.user_id, bare.metadata) == (None, {})
    assert checkout_payment(_event(SAMPLE_CHECKOUT, "metadata.user_id")).user_id is None
    assert checkout_payment(_event(SAMPLE_CHECKOUT, "order.amount", 10**10)).amount_cents == 10**10


def _event_dict(sample: dict[str, Any], drop: tuple[str, ...]) -> dict[str, Any]:
    data = copy.deepcopy(sample)
    for key in drop:
        del data["object"][key]
    return data


@pytest.mark.parametrize(
    ("raw", "expect"),
    [
        # U+0000 is valid JSON but refused by PostgreSQL text and jsonb: removed.
        (rb'{"id":"evt_1","eventType":"t","object":{"name":"a\u0000b"}}', {"name": "ab"}),
        # A lone surrogate is valid JSON that orjson refuses and UTF-8 cannot hold: U+FFFD.
        (rb'{"id":"evt_1","eventType":"t","object":{"name":"a\ud800b"}}', {"name": "a\ufffdb"}),
        (rb'{"id":"evt_1","eventType":"t","object":{"k\u0000":"\udfff"}}', {"k": "\ufffd"}),
        # An integer beyond 64 bits reads as no number at all.
        (
            rb'{"id":"evt_1","eventType":"t","object":{"n":"\ud800","a":100000000000000000000000}}',
            {"n": "\ufffd", "a": "100000000000000000000000"},
        ),
    ],
)
def test_event_text_is_cleaned_for_the_database(raw: bytes, expect: dict[str, Any]) -> None:
    ev = parse_event(raw)
    assert ev.object == expect
    orjson.dumps(ev.object)  # and serialisable again, for the jsonb payload


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"id":"evt_1","eventType":"t","object":{"a":NaN}}', "not valid JSON"),
        (rb'{"id":"evt_1","eventType":"t","object":{"a":"\ud800","b":Infinity}}', "not valid"),
        (
            b'{"id":"evt_1","eventType":"t","object":' + b"[" * 2000 + b"]" * 2000 + b"}",
            "not valid",
        ),
        (b'{"id":"evt_1","eventType":"t","object":{"a":' + b"[" * 100 + b"]" * 100 + b"}}", "deep"),
    ],
)
def test_unreadable_events_are_refused(raw: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_event(raw)


def test_extractors_check_the_event_type() -> None:
    ev = _event(SAMPLE_CHECKOUT)
    for extract in (creem.refund, creem.subscription_payment, creem.dispute):
        with pytest.raises(ValueError, match=re.escape("got 'checkout.completed'")):
            extract(ev)
    with pytest.raises(ValueError, match="subscription"):
        creem.subscription_change(ev)


SAMPLE_CUSTOMER = "cust_1OcIK1GEuVvXZwD19tjq2z"

# Creem's published `refund.created` sample: 21 % VAT on top of a 1000-cent transaction.
SAMPLE_REFUND = {
    "id": "evt_61eTsJHUgInFw2BQKhTiPV",
    "eventType": "refund.created",
    "created_at": 1728734351631,
    "object": {
        "id": "ref_3DB9NQFvk18TJwSqd0N6bd",
        "object": "refund",
        "status": "succeeded",
        "refund_amount": 1210,
        "refund_currency": "EUR",
        "reason": "requested_by_customer",
        "transaction": {
            "id": "tran_5yMaWzAl3jxuGJMCOrYWwk",
            "amount": 1000,
            "amount_paid": 1210,
            "status": "refunded",
        },
        "subscription": {"id": "sub_6pC2lNB6joCRQIZ1aMrTpi", "status": "canceled"},
        "customer": {"id": "cust_1OcIK1GEuVvXZwD19tjq2z", "email": "customer@example.com"},
        "created_at": 1728734351525,
    },
}


def test_creems_refund_sample_debits_only_what_was_credited() -> None:
    r = creem.refund(_event(SAMPLE_REFUND))
    assert (r.refund_id, r.amount_cents, r.currency) == ("ref_3DB9NQFvk18TJwSqd0N6bd", 1210, "EUR")
    assert r.transaction_id == "tran_5yMaWzAl3jxuGJMCOrYWwk"
    assert (r.subscription_id, r.customer_id) == ("sub_6pC2lNB6joCRQIZ1aMrTpi", SAMPLE_CUSTOMER)
    assert (r.order_id, r.checkout_id, r.user_id) == (None, None, None)
    assert r.credited_share_cents() == 1000  # the tax went back too, but was never credited
    half = creem.refund(_event(SAMPLE_REFUND, "refund_amount", 605))
    assert half.credited_share_cents() == 500
    odd = creem.refund(_event(SAMPLE_REFUND, "refund_amount", 1))
    assert odd.credited_share_cents() == 1  # rounded up: a debit never leaves unpaid credit
    bare = creem.refund(_event(SAMPLE_REFUND, "transaction", ...))
    assert bare.credited_share_cents() == 1210  # nothing known about tax: the full refund
    with pytest.raises(ValueError, match=re.escape("missing object.refund_amount")):
        creem.refund(_event(SAMPLE_REFUND, "refund_amount"))
    with pytest.raises(ValueError, match=re.escape("missing object.refund_currency")):
        creem.refund(_event(SAMPLE_REFUND, "refund_currency"))


async def test_a_refund_from_the_fake_finds_its_payment() -> None:
    async with running() as (fake, client):
        checkout = await topup(client)
        _, raw = fake.complete_checkout(checkout.id)
        payment = checkout_payment(parse_event(raw))
        _, raw = fake.refund_checkout(checkout.id)
        full = creem.refund(parse_event(raw))
        assert (full.amount_cents, full.currency, full.credited_share_cents()) == (
            2000,
            "USD",
            2000,
        )
        assert (full.order_id, full.checkout_id, full.user_id) == (
            payment.order_id,
            checkout.id,
            "user-1",
        )
        assert full.transaction_id == payment.transaction_id
        assert full.customer_id == payment.customer_id
        _, raw = fake.refund_checkout(checkout.id, amount_cents=500, unverified_fields=False)
        documented_only = creem.refund(parse_event(raw))
        assert documented_only.amount_cents == 500
        assert (documented_only.order_id, documented_only.user_id) == (None, None)
        assert documented_only.customer_id == payment.customer_id  # still enough to find the user


def test_subscription_events() -> None:
    fake = FakeCreem()
    _, raw = fake.subscription_event(
        "subscription.paid", customer_email="ada@example.test", metadata={"user_id": "user-1"}
    )
    paid = creem.subscription_payment(parse_event(raw))
    assert paid.subscription_id.startswith("sub_") and paid.customer_id.startswith("cust_")
    assert (paid.price_cents, paid.currency, paid.user_id) == (2000, "USD", "user-1")
    assert paid.transaction_id is not None and paid.period_start is not None
    _, raw = fake.subscription_event(
        "subscription.past_due", customer_email="ada@example.test", subscription_id="sub_1"
    )
    change = creem.subscription_change(parse_event(raw))
    assert (change.event_type, change.subscription_id, change.status) == (
        "subscription.past_due",
        "sub_1",
        "past_due",
    )
    assert change.customer_id == paid.customer_id and change.user_id is None


def test_dispute_sample() -> None:
    sample = {
        "id": "evt_6mfLDL7P0NYwYQqCrICvDH",
        "eventType": "dispute.created",
        "created_at": 1750941264812,
        "object": {
            "id": "disp_6vSsOdTANP5PhOzuDlUuXE",
            "amount": 1331,
            "currency": "EUR",
            "transaction": {"id": "tran_4Dk8CxWFdceRUQgMFhCCXX", "status": "chargeback"},
            "customer": {"id": "cust_OJPZd2GMxgo1MGPNXXBSN", "email": "customer@example.com"},
        },
    }
    d = creem.dispute(parse_event(orjson.dumps(sample)))
    assert (d.amount_cents, d.currency, d.transaction_id) == (
        1331,
        "EUR",
        "tran_4Dk8CxWFdceRUQgMFhCCXX",
    )


# -- webhook delivery with Creem's retries ----------------------------------------------------


class Receiver:
    """A webhook endpoint on 127.0.0.1 that checks the signature and answers from a script."""

    def __init__(self, secret: str, answers: list[int]) -> None:
        self.secret, self.answers = secret, answers
        self.received: list[tuple[bytes, str | None]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _hook(self, request: web.Request) -> web.Response:
        raw, signature = await request.read(), request.headers.get("creem-signature")
        self.received.append((raw, signature))
        try:
            verify_signature(raw, signature, self.secret)
        except WebhookSignatureError:
            return web.Response(status=401)
        return web.Response(status=self.answers.pop(0) if self.answers else 200)

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = "http://{}:{}/hook".format(*self._runner.addresses[0][:2])
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


class Sleeps:
    """Records the delays instead of waiting them out."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


async def test_deliver_retries_on_creems_schedule_until_a_200() -> None:
    fake = FakeCreem()
    raw = fake.event("checkout.completed", {"id": "ch_1"})
    async with Receiver(fake.webhook_secret, [500, 500, 200]) as hook:
        sleeps = Sleeps()
        assert await fake.deliver(hook.url, raw, sleep=sleeps) == [500, 500, 200]
        assert sleeps.delays == [30, 60]
        assert hook.received == [(raw, fake.sign(raw))] * 3  # the same signed bytes each time


async def test_deliver_gives_up_after_the_last_retry() -> None:
    fake = FakeCreem()
    raw = fake.event("refund.created", {"id": "ref_1"})
    async with Receiver(fake.webhook_secret, [503] * 10) as hook:
        sleeps = Sleeps()
        assert await fake.deliver(hook.url, raw, sleep=sleeps) == [503] * 5
        assert sleeps.delays == list(RETRY_DELAYS) == [30, 60, 300, 3600]
        sleeps = Sleeps()
        assert await fake.deliver(hook.url, raw, sleep=sleeps, max_attempts=2) == [503, 503]
        assert sleeps.delays == [30]


async def test_deliver_unsigned_forged_and_unreachable() -> None:
    fake = FakeCreem()
    raw = fake.event("checkout.completed", {"id": "ch_1"})
    async with Receiver(fake.webhook_secret, []) as hook:
        assert await fake.deliver(hook.url, raw, signature=None, max_attempts=1) == [401]
        assert await fake.deliver(hook.url, raw, signature="deadbeef", max_attempts=1) == [401]
        assert [sig for _, sig in hook.received] == [None, "deadbeef"]
        url = hook.url
    sleeps = Sleeps()
    assert await fake.deliver(url, raw, sleep=sleeps, max_attempts=3) == [0, 0, 0]  # no answer
    assert sleeps.delays == [30, 60]
