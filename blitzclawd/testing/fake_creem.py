"""A faithful fake of the Creem API and its webhook deliveries, on 127.0.0.1.

    async with FakeCreem(products={"prod_credits": 100}) as creem:
        client = CreemClient(http, creem.base_url, creem.api_key)
        checkout = await client.create_checkout(product_id="prod_credits", units=20, ...)
        envelope, raw = creem.complete_checkout(checkout.id)      # the customer paid
        statuses = await creem.deliver(webhook_url, raw)         # signed, retried like Creem

Subscriptions: a checkout of a product in `subscription_products` (recurring) makes a subscription
when paid; `await creem.pay(checkout_id, url)` delivers `checkout.completed`,
`subscription.active` and `subscription.paid`; `await creem.renew(sub_id, url)` the next period's
`subscription.paid` (or, once a cancel was scheduled, `subscription.canceled`).

Wire facts (WIRE.md "Creem", docs.creem.io): `x-api-key` auth, error bodies
`{"trace_id","status","error","message":[...],"timestamp"}`, ids like `ch_…`/`ord_…`, amounts in
integer cents, webhooks signed with `creem-signature` and retried on any non-200 answer.

Why one module: a fake of one API (Creem checkouts, refunds, signed deliveries) sharing its state.
"""

from __future__ import annotations

import asyncio
import copy
import hmac
import html
import http
import json
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from blitzclawd.payments.creem import API_KEY_HEADER, SIGNATURE_HEADER, sign
from blitzclawd.testing.local_server import LocalHTTPServer

DEFAULT_PRODUCT = "prod_blitzclaw_credits"
SUBSCRIPTION_PRODUCT = "prod_blitzclaw_monthly"  # the base plan: $20 a month, recurring
CHECKOUT_HOST = "https://checkout.creem.io"
# WIRE.md and docs.creem.io "Webhooks": retried after 30 s, 1 min, 5 min, 1 h. Creem's agent
# "skills" reference says 30 s, 5 min, 30 min, 6 h instead: UNVERIFIED which one is current.
RETRY_DELAYS: tuple[float, ...] = (30, 60, 300, 3600)
DELIVERY_TIMEOUT = 10.0  # seconds per attempt before it counts as failed; Creem's is UNVERIFIED
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_KEEP: Any = object()  # an override left as the checkout has it
OMIT: Any = object()  # an override that drops the field from the event


def splice_escape(raw_body: bytes, marker: str, escape: str) -> bytes:
    """`raw_body` with the JSON string content `marker` replaced by a raw escape, e.g. a lone
    surrogate `\\ud800`: valid JSON that no JSON encoder emits. Sign the result, not the input."""
    spliced = raw_body.replace(marker.encode(), escape.encode())
    if spliced == raw_body:
        raise ValueError(f"{marker!r} is not in the body")
    return spliced


def creem_id(prefix: str) -> str:
    """An id shaped like Creem's: prefix, underscore, 22 base62 characters."""
    return prefix + "_" + "".join(secrets.choice(_ALPHABET) for _ in range(22))


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _iso(at: datetime | None = None) -> str:
    return (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class _Refusal(Exception):
    def __init__(self, status: int, *messages: str) -> None:
        super().__init__(*messages)
        self.status, self.messages = status, list(messages)


class FakeCreem(LocalHTTPServer):
    """Checkouts, customers and signed webhook deliveries, recorded for assertions."""

    def __init__(
        self,
        *,
        products: dict[str, int] | None = None,
        subscription_products: dict[str, int] | None = None,
        api_key: str = "creem_test_fakekey0123456789",
        webhook_secret: str = "whsec_fake_creem_0123456789",
        bad_key_status: int = 401,
        checkout_status: int = 200,
        local_checkout_urls: bool = False,
    ) -> None:
        self.api_key = api_key
        self.webhook_secret = webhook_secret
        self.products: dict[str, int] = dict(products or {DEFAULT_PRODUCT: 100})
        # Recurring (monthly) products, price in cents; apart so `products` stays the one-time.
        self.subscription_products: dict[str, int] = dict(
            {SUBSCRIPTION_PRODUCT: 2000} if subscription_products is None else subscription_products
        )
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.checkouts: dict[str, dict[str, Any]] = {}
        self.customers: dict[str, dict[str, Any]] = {}
        self.orders: dict[str, dict[str, Any]] = {}  # order id -> order (with its checkout id)
        self.bad_key_status = bad_key_status  # 401 (their SDK's tests) or 403 (their docs)
        self.checkout_status = checkout_status  # 200 or 201: clients must accept both
        self.local_checkout_urls = local_checkout_urls  # checkout_url on this server, not Creem
        self.base_url = ""
        self.webhook_url = ""  # where the checkout page's "Pay now" delivers checkout.completed
        self._deliveries: set[asyncio.Task[list[int]]] = set()
        self._fail_next: list[int] = []
        self._runner: web.AppRunner | None = None

    def __repr__(self) -> str:
        return f"FakeCreem(base_url={self.base_url!r}, checkouts={len(self.checkouts)})"

    # -- lifecycle -------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors])
        app.router.add_post("/v1/checkouts", self._create_checkout)
        app.router.add_get("/v1/checkouts", self._get_checkout)
        app.router.add_get("/v1/customers", self._get_customer)
        app.router.add_get("/v1/subscriptions", self._get_subscription)
        app.router.add_post("/v1/subscriptions/{subscription_id}/cancel", self._cancel)
        app.router.add_get("/checkout/{checkout_id}", self._checkout_page)
        app.router.add_post("/checkout/{checkout_id}/pay", self._pay)
        return app

    def fail_next(self, count: int = 1, status: int = 500) -> None:
        """The next `count` authenticated API calls answer `status` with Creem's error body."""
        self._fail_next.extend([status] * count)

    # -- API -------------------------------------------------------------------------------------

    @web.middleware
    async def _errors(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            if request.path.startswith("/v1/"):
                self._authenticate(request)
            return await handler(request)
        except _Refusal as refusal:
            return _error(refusal.status, refusal.messages)

    def _authenticate(self, request: web.Request) -> None:
        given = request.headers.get(API_KEY_HEADER, "").encode()
        if not hmac.compare_digest(given, self.api_key.encode()):
            raise _Refusal(self.bad_key_status, "Invalid API key")
        if self._fail_next:
            raise _Refusal(self._fail_next.pop(0), "Internal server error")

    async def _create_checkout(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            raise _Refusal(400, "Invalid JSON body") from None
        if not isinstance(body, dict):
            raise _Refusal(400, "The body must be a JSON object")
        problems = _checkout_problems(body)
        if problems:
            raise _Refusal(400, *problems)
        price = self.products.get(body["product_id"])
        if price is None:
            price = self.subscription_products.get(body["product_id"])
        if price is None:
            raise _Refusal(404, "Product not found")
        checkout_id = creem_id("ch")
        host = f"{self.base_url}/checkout" if self.local_checkout_urls else CHECKOUT_HOST
        checkout = {
            "id": checkout_id,
            "object": "checkout",
            "mode": "test",
            "status": "pending",
            "product": self._product(body["product_id"]),
            "units": body.get("units", 1),
            "request_id": body.get("request_id"),
            "checkout_url": f"{host}/{checkout_id}",
            "success_url": body.get("success_url"),
            "metadata": body.get("metadata") or {},
            "customer": body.get("customer"),
            "custom_fields": body.get("custom_fields") or [],
            "order": None,
        }
        self.checkouts[checkout_id] = checkout
        return _json(self.checkout_status, checkout)

    async def _get_checkout(self, request: web.Request) -> web.Response:
        checkout_id = request.query.get("checkout_id")
        if not checkout_id:
            raise _Refusal(400, "checkout_id must be a string")
        checkout = self.checkouts.get(checkout_id)
        if checkout is None:
            raise _Refusal(404, "Checkout not found")
        return _json(200, checkout)

    async def _get_customer(self, request: web.Request) -> web.Response:
        customer_id, email = request.query.get("customer_id"), request.query.get("email")
        if not customer_id and not email:
            raise _Refusal(400, "customer_id or email is required")
        found = self.customers.get(customer_id or "") or next(
            (c for c in self.customers.values() if email and c["email"] == email), None
        )
        if found is None:
            raise _Refusal(404, "Customer not found")
        return _json(200, found)

    async def _checkout_page(self, request: web.Request) -> web.Response:
        checkout = self.checkouts.get(request.match_info["checkout_id"])
        if checkout is None:
            raise web.HTTPNotFound()
        product = checkout["product"]
        text = (
            f"<h1>Fake Creem checkout</h1><p>{html.escape(product['name'])} x "
            f"{int(checkout['units'])}: {product['price'] * checkout['units']} cents "
            f"({html.escape(checkout['status'])})</p>"
        )
        if checkout["status"] == "pending":
            action = f"/checkout/{html.escape(checkout['id'])}/pay"
            text += f'<form method="post" action="{action}"><button>Pay now</button></form>'
        return web.Response(text=text, content_type="text/html")

    async def _pay(self, request: web.Request) -> web.StreamResponse:
        """The customer pays on the checkout page: the order completes, the webhook goes to
        `webhook_url` (delivered in the background, retried like Creem), and the browser is sent
        to the checkout's success_url with Creem's query parameters."""
        checkout = self.checkouts.get(request.match_info["checkout_id"])
        if checkout is None or checkout["status"] != "pending":
            raise web.HTTPNotFound()
        events = self.payment_events(checkout["id"])
        self._deliver_later(events)
        envelope = orjson.loads(events[0])
        order = envelope["object"].get("order") or {}
        target = checkout.get("success_url") or f"{self.base_url}/checkout/{checkout['id']}"
        query = f"checkout_id={checkout['id']}&order_id={order.get('id', '')}"
        raise web.HTTPSeeOther(target + ("&" if "?" in target else "?") + query)

    def _deliver_later(self, events: Sequence[bytes]) -> None:
        """Deliver `events` to `webhook_url` one after the other, in the background (as Creem)."""
        if not self.webhook_url or not events:
            return

        async def send(url: str) -> list[int]:
            statuses: list[int] = []
            for raw in events:
                statuses += await self.deliver(url, raw)
            return statuses

        task = asyncio.get_running_loop().create_task(send(self.webhook_url))
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    async def stop(self) -> None:
        for task in list(self._deliveries):
            task.cancel()
        await asyncio.gather(*self._deliveries, return_exceptions=True)
        await super().stop()

    # -- subscriptions ---------------------------------------------------------------------------

    async def _get_subscription(self, request: web.Request) -> web.Response:
        subscription_id = request.query.get("subscription_id")
        if not subscription_id:
            raise _Refusal(400, "subscription_id must be a string")
        found = self.subscriptions.get(subscription_id)
        if found is None:
            raise _Refusal(404, "Subscription not found")
        return _json(200, found)

    async def _cancel(self, request: web.Request) -> web.Response:
        """`{"mode": "scheduled"}` ends it at the period's end (status scheduled_cancel), and
        "immediate" now (canceled). No body: immediate (UNVERIFIED: Creem's default mode)."""
        raw = await request.read()
        try:
            body = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            raise _Refusal(400, "Invalid JSON body") from None
        mode = body.get("mode", "immediate") if isinstance(body, dict) else None
        if mode not in ("scheduled", "immediate"):
            raise _Refusal(400, "mode must be one of the following values: immediate, scheduled")
        sub = self.subscriptions.get(request.match_info["subscription_id"])
        if sub is None:
            raise _Refusal(404, "Subscription not found")
        if sub["status"] in ("canceled", "expired"):
            raise _Refusal(400, "Subscription is already canceled")
        now = _iso()
        if mode == "scheduled":
            sub.update(status="scheduled_cancel", updated_at=now)
            event_type = "subscription.scheduled_cancel"
        else:
            sub.update(status="canceled", canceled_at=now, updated_at=now)
            event_type = "subscription.canceled"
        self._deliver_later([self.event(event_type, copy.deepcopy(sub))])
        return _json(200, sub)

    async def pay(self, checkout_id: str, url: str | None = None) -> list[dict[str, Any]]:
        """The customer pays (as "Pay now" does): every event it makes, delivered to `url`
        (default `webhook_url`) in order and awaited; returns the envelopes."""
        events = self.payment_events(checkout_id)
        target = url or self.webhook_url
        if target:
            for raw in events:
                await self.deliver(target, raw)
        return [orjson.loads(raw) for raw in events]

    def payment_events(self, checkout_id: str) -> list[bytes]:
        """Paying a checkout: `checkout.completed`; for a recurring product the subscription
        starts too, and `subscription.active` and the first `subscription.paid` follow."""
        _, raw = self.complete_checkout(checkout_id)
        sub_id = self.checkouts[checkout_id].get("subscription")
        if sub_id is None:
            return [raw]
        sub = self.subscriptions[sub_id]
        return [
            raw,
            self.event("subscription.active", copy.deepcopy(sub)),
            self.event("subscription.paid", copy.deepcopy(sub)),
        ]

    def renewal_event(self, subscription_id: str) -> tuple[dict[str, Any], bytes]:
        """The period ends: the next one is paid (`subscription.paid`), or a subscription whose
        cancel was scheduled ends (`subscription.canceled`) and is never paid again."""
        sub = self.subscriptions[subscription_id]
        if sub["status"] in ("canceled", "expired"):
            raise ValueError(f"subscription {subscription_id} has ended")
        end = datetime.fromisoformat(sub["current_period_end_date"])
        if sub["status"] == "scheduled_cancel":
            sub.update(status="canceled", canceled_at=_iso(end), updated_at=_iso())
            raw = self.event("subscription.canceled", copy.deepcopy(sub))
        else:
            sub.update(
                status="active",
                current_period_start_date=_iso(end),
                current_period_end_date=_iso(_next_month(end)),
                last_transaction_id=creem_id("tran"),
                last_transaction_date=_iso(),
                next_transaction_date=_iso(_next_month(end)),
                updated_at=_iso(),
            )
            raw = self.event("subscription.paid", copy.deepcopy(sub))
        return orjson.loads(raw), raw

    async def renew(
        self, subscription_id: str, url: str | None = None
    ) -> tuple[dict[str, Any], list[int]]:
        """renewal_event, delivered to `url` (default `webhook_url`): (envelope, statuses)."""
        envelope, raw = self.renewal_event(subscription_id)
        target = url or self.webhook_url
        return envelope, (await self.deliver(target, raw) if target else [])

    def _start_subscription(
        self, checkout: dict[str, Any], customer: dict[str, Any], transaction: str
    ) -> dict[str, Any]:
        start = datetime.now(UTC)
        now = _iso(start)
        sub = {
            "id": creem_id("sub"),
            "object": "subscription",
            "product": copy.deepcopy(checkout["product"]),
            "customer": {k: customer[k] for k in ("id", "object", "email", "name", "country")},
            "collection_method": "charge_automatically",
            "status": "active",
            "last_transaction_id": transaction,
            "last_transaction_date": now,
            "next_transaction_date": _iso(_next_month(start)),
            "current_period_start_date": now,
            "current_period_end_date": _iso(_next_month(start)),
            "canceled_at": None,
            "created_at": now,
            "updated_at": now,
            "metadata": copy.deepcopy(checkout["metadata"]),
            "mode": "test",
        }
        self.subscriptions[sub["id"]] = sub
        checkout["subscription"] = sub["id"]
        return sub

    # -- state changes the real Creem makes when a customer acts ---------------------------------

    def add_customer(self, email: str) -> dict[str, Any]:
        """The customer with this email, created on first use (as Creem does at checkout)."""
        for customer in self.customers.values():
            if customer["email"] == email:
                return customer
        now = _iso()
        customer = {
            "id": creem_id("cust"),
            "object": "customer",
            "email": email,
            "name": None,
            "country": "US",
            "created_at": now,
            "updated_at": now,
            "mode": "test",
        }
        self.customers[customer["id"]] = customer
        return customer

    def complete_checkout(
        self,
        checkout_id: str,
        *,
        amount_cents: Any = None,
        tax_cents: int = 0,
        currency: str = "USD",
        metadata: Any = _KEEP,
        request_id: Any = _KEEP,
        customer_fields: dict[str, Any] | None = None,
    ) -> tuple[dict[str, Any], bytes]:
        """The customer paid: the checkout completes and a `checkout.completed` event is made.

        Overrides make the hostile-but-signed events a receiver must survive (Creem signs
        whatever its merchants and customers put in): `amount_cents` (default: product price
        times units) may be any JSON value (10**18, -5, "1000"); `tax_cents` the sales tax
        Creem adds (amount_paid = amount + tax, as in its transactions); `currency` the order's;
        `metadata` and `request_id` replace what the checkout was created with (`OMIT` drops the
        field, for `amount_cents` every amount of the order); `customer_fields` are set on the
        event's customer (e.g. a name with U+0000).
        """
        checkout = self.checkouts[checkout_id]
        if checkout["status"] == "completed":
            raise ValueError(f"checkout {checkout_id} is already completed")
        product = checkout["product"]
        amount = product["price"] * checkout["units"] if amount_cents is None else amount_cents
        given = checkout.get("customer") or {}
        if given.get("id") in self.customers:
            customer = self.customers[given["id"]]
        else:
            customer = self.add_customer(
                given.get("email") or f"buyer-{uuid.uuid4().hex[:8]}@example.test"
            )
        now = _iso()
        order = {
            "id": creem_id("ord"),
            "object": "order",
            "customer": customer["id"],
            "product": product["id"],
            "transaction": creem_id("tran"),
            "amount": amount,
            "sub_total": amount,
            "tax_amount": tax_cents,
            "amount_due": amount + tax_cents if isinstance(amount, int) else amount,
            "amount_paid": amount + tax_cents if isinstance(amount, int) else amount,
            "currency": "USD",
            "status": "paid",
            "type": "recurring" if product["billing_type"] == "recurring" else "onetime",
            "mode": "test",
            "created_at": now,
            "updated_at": now,
        }
        self.orders[order["id"]] = {**order, "checkout_id": checkout_id}
        checkout.update(status="completed", order=order, customer=customer)
        obj = {
            key: copy.deepcopy(checkout[key])
            for key in ("id", "object", "request_id", "status", "mode", "order", "product")
        }
        obj.update(
            customer={k: customer[k] for k in ("id", "object", "email", "name", "country")},
            custom_fields=copy.deepcopy(checkout["custom_fields"]),
            metadata=copy.deepcopy(checkout["metadata"]),
        )
        if product["billing_type"] == "recurring":
            sub = self._start_subscription(checkout, customer, order["transaction"])
            obj["subscription"] = {
                k: copy.deepcopy(sub[k])
                for k in ("id", "object", "status", "collection_method", "canceled_at", "metadata")
            } | {"product": product["id"], "customer": customer["id"]}
        obj["order"]["currency"] = currency
        if amount_cents is OMIT:
            for key in ("amount", "sub_total", "amount_due", "amount_paid"):
                del obj["order"][key]
        obj["customer"].update(customer_fields or {})
        for key, value in (("metadata", metadata), ("request_id", request_id)):
            if value is OMIT:
                obj.pop(key, None)
            elif value is not _KEEP:
                obj[key] = copy.deepcopy(value)
        raw = self.event("checkout.completed", obj)
        return orjson.loads(raw), raw

    def product_link_order(
        self, product_id: str, *, customer_email: str, units: int = 1, **overrides: Any
    ) -> tuple[dict[str, Any], bytes]:
        """An order through a product link (a checkout Creem created, not us): no request_id,
        no metadata. `overrides` as for complete_checkout (e.g. metadata naming a user)."""
        checkout_id = creem_id("ch")
        self.checkouts[checkout_id] = {
            "id": checkout_id,
            "object": "checkout",
            "mode": "test",
            "status": "pending",
            "product": self._product(product_id),
            "units": units,
            "request_id": None,
            "checkout_url": f"{CHECKOUT_HOST}/{checkout_id}",
            "success_url": None,
            "metadata": {},
            "customer": {"email": customer_email},
            "custom_fields": [],
            "order": None,
        }
        overrides.setdefault("request_id", OMIT)
        overrides.setdefault("metadata", OMIT)
        return self.complete_checkout(checkout_id, **overrides)

    def refund_checkout(
        self,
        checkout_id: str,
        *,
        amount_cents: Any = None,
        unverified_fields: bool = True,
        currency: str | None = None,
    ) -> tuple[dict[str, Any], bytes]:
        """A `refund.created` for a completed checkout's order (default: refunded in full).

        Creem's published sample has no order or checkout on a refund; `unverified_fields`
        adds `order`, `checkout` and `transaction.order` (see creem.UNVERIFIED_PATHS) so billing
        can be tested both with and without them.
        """
        checkout = self.checkouts[checkout_id]
        order = checkout.get("order")
        if order is None:
            raise ValueError(f"checkout {checkout_id} was never paid")
        amount = order["amount_paid"] if amount_cents is None else amount_cents
        customer = checkout["customer"]
        transaction = {
            "id": order["transaction"],
            "object": "transaction",
            "amount": order["amount"],
            "amount_paid": order["amount_paid"],
            "currency": order["currency"],
            "status": "refunded"
            if not isinstance(amount, int) or amount >= order["amount_paid"]
            else "partially_refunded",
        }
        obj: dict[str, Any] = {
            "id": creem_id("ref"),
            "object": "refund",
            "status": "succeeded",
            "refund_amount": amount,
            "refund_currency": currency or order["currency"],
            "reason": "requested_by_customer",
            "transaction": transaction,
            "customer": {"id": customer["id"], "email": customer["email"]},
            "created_at": _now_ms(),
            "mode": "test",
        }
        if unverified_fields:
            transaction["order"] = order["id"]
            obj["order"] = copy.deepcopy(order)
            obj["checkout"] = {"id": checkout_id, "metadata": copy.deepcopy(checkout["metadata"])}
        raw = self.event("refund.created", obj)
        return orjson.loads(raw), raw

    def subscription_event(
        self,
        event_type: str,
        *,
        customer_email: str,
        price_cents: int = 2000,
        subscription_id: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> tuple[dict[str, Any], bytes]:
        """A `subscription.*` event shaped like Creem's samples (paid, past_due, canceled, ...)."""
        customer = self.add_customer(customer_email)
        start = datetime.now(UTC)
        status = event_type.removeprefix("subscription.")
        obj = {
            "id": subscription_id or creem_id("sub"),
            "object": "subscription",
            "status": "active" if status in ("paid", "update", "expired") else status,
            "product": {
                "id": "prod_blitzclaw_monthly",
                "name": "BlitzClaw Monthly",
                "price": price_cents,
                "currency": "USD",
                "billing_type": "recurring",
                "billing_period": "every-month",
            },
            "customer": {k: customer[k] for k in ("id", "email", "name", "country")},
            "collection_method": "charge_automatically",
            "last_transaction_id": creem_id("tran"),
            "last_transaction_date": _iso(start),
            "next_transaction_date": _iso(start + timedelta(days=30)),
            "current_period_start_date": _iso(start),
            "current_period_end_date": _iso(start + timedelta(days=30)),
            "canceled_at": _iso(start) if status == "canceled" else None,
            "metadata": metadata or {},
        }
        raw = self.event(event_type, obj)
        return orjson.loads(raw), raw

    # -- webhooks --------------------------------------------------------------------------------

    def event(self, event_type: str, obj: dict[str, Any], *, event_id: str | None = None) -> bytes:
        """The raw body Creem would POST: `{"id","eventType","created_at","object"}`."""
        envelope = {
            "id": event_id or creem_id("evt"),
            "eventType": event_type,
            "created_at": _now_ms(),
            "object": obj,
        }
        try:
            return orjson.dumps(envelope)
        except orjson.JSONEncodeError:  # an integer beyond 64 bits: still JSON, and Creem's to send
            return json.dumps(envelope, separators=(",", ":")).encode()

    def sign(self, raw_body: bytes) -> str:
        return sign(raw_body, self.webhook_secret)

    async def deliver(
        self,
        url: str,
        raw_body: bytes,
        *,
        signature: str | None = "auto",
        retry_delays: Sequence[float] = RETRY_DELAYS,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_attempts: int | None = None,
    ) -> list[int]:
        """POST `raw_body` like Creem: signed, retried after each delay until a 200.

        `signature`: "auto" signs with the webhook secret, None sends no header, anything else
        is sent as is (forgeries). Returns every attempt's status, 0 for no answer at all.
        Tests pass a `sleep` that records the delays instead of waiting them out.
        """
        attempts = 1 + len(retry_delays)
        if max_attempts is not None:
            if max_attempts < 1:
                raise ValueError("max_attempts must be at least 1")
            attempts = min(attempts, max_attempts)
        headers = {"content-type": "application/json", "user-agent": "creem-webhooks (fake)"}
        if signature is not None:
            headers[SIGNATURE_HEADER] = self.sign(raw_body) if signature == "auto" else signature
        statuses: list[int] = []
        timeout = aiohttp.ClientTimeout(total=DELIVERY_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as client:
            for attempt in range(attempts):
                if attempt:
                    await sleep(retry_delays[attempt - 1])
                try:
                    async with client.post(url, data=raw_body, headers=headers) as resp:
                        await resp.read()
                        statuses.append(resp.status)
                except (aiohttp.ClientError, TimeoutError):
                    statuses.append(0)
                if statuses[-1] == 200:  # Creem's docs: anything but 200 is retried
                    break
        return statuses

    def _product(self, product_id: str) -> dict[str, Any]:
        recurring = product_id in self.subscription_products and product_id not in self.products
        return {
            "id": product_id,
            "object": "product",
            "name": "BlitzClaw Monthly" if recurring else "BlitzClaw Credits",
            "description": "Base plan" if recurring else "Prepaid usage credits",
            "price": (self.subscription_products if recurring else self.products)[product_id],
            "currency": "USD",
            "billing_type": "recurring" if recurring else "onetime",
            "billing_period": "every-month" if recurring else "once",
            "status": "active",
            "tax_mode": "exclusive",
            "tax_category": "saas",
            "mode": "test",
        }


def _next_month(at: datetime) -> datetime:
    """The same day and time a month later (the month's last day when it has no such day)."""
    year, month = (at.year + 1, 1) if at.month == 12 else (at.year, at.month + 1)
    days = (datetime(year + (month == 12), month % 12 + 1, 1) - datetime(year, month, 1)).days
    return at.replace(year=year, month=month, day=min(at.day, days))


def _checkout_problems(body: dict[str, Any]) -> list[str]:
    """class-validator style messages, one per broken field, as Creem's API answers them."""
    problems = []
    product_id = body.get("product_id")
    if not isinstance(product_id, str) or not product_id:
        problems.append("product_id must be a non-empty string")
    units = body.get("units", 1)
    if type(units) is not int or units < 1:
        problems.append("units must be a positive integer")
    for name in ("request_id", "success_url", "discount_code"):
        if body.get(name) is not None and not isinstance(body[name], str):
            problems.append(f"{name} must be a string")
    url = body.get("success_url")
    if isinstance(url, str) and not url.startswith(("https://", "http://")):
        problems.append("success_url must be a URL address")
    if body.get("metadata") is not None and not isinstance(body["metadata"], dict):
        problems.append("metadata must be an object")
    customer = body.get("customer")
    if customer is not None and not (
        isinstance(customer, dict)
        and any(isinstance(customer.get(k), str) and customer[k] for k in ("id", "email"))
    ):
        problems.append("customer must be an object with an id or an email")
    return problems


def _json(status: int, body: Any) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _error(status: int, messages: list[str]) -> web.Response:
    return _json(
        status,
        {
            "trace_id": str(uuid.uuid4()),
            "status": status,
            "error": _phrase(status),
            "message": messages,
            "timestamp": _now_ms(),
        },
    )
