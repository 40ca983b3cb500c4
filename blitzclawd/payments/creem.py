"""Creem, the merchant of record: checkouts over HTTP, webhook signatures, and event facts.

Wire format: ../shared/WIRE.md "Creem" and docs.creem.io "Webhooks". Creem amounts are integer
cents and stay integer cents here; billing converts them to micro-USD. Nothing in this module
logs, and neither the API key nor the webhook secret ever reaches an exception or a repr.

Why one module: Creem's whole wire format (checkouts, signatures, every event's facts), kept next
to each other as WIRE.md describes them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

API_KEY_HEADER = "x-api-key"
SIGNATURE_HEADER = "creem-signature"
_MAX_MESSAGE = 300  # error text kept from a response body; enough to read, too short to flood logs

# -- the API client ---------------------------------------------------------------------------


class CreemError(Exception):
    """A refused or failed Creem API call. `status` is None when no HTTP answer came back."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(f"Creem {'unreachable' if status is None else status}: {message}")
        self.status = status
        self.message = message

    @property
    def bad_key(self) -> bool:
        # Creem's docs say 403 for a bad key, their SDK's tests see 401: both mean the same.
        return self.status in (401, 403)

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status == 429 or self.status >= 500


@dataclass(frozen=True, slots=True)
class Checkout:
    id: str
    checkout_url: str
    request_id: str | None
    status: str


class CreemClient:
    """The few Creem endpoints blitzclawd uses, over the daemon's pooled aiohttp session."""

    def __init__(
        self, session: aiohttp.ClientSession, base_url: str, api_key: str, *, timeout: float = 15.0
    ) -> None:
        if not api_key:
            raise ValueError("the Creem API key is empty")
        self._session = session
        self._base = base_url.rstrip("/")
        self._key = api_key
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    def __repr__(self) -> str:
        return f"CreemClient(base_url={self._base!r})"

    async def create_checkout(
        self,
        *,
        product_id: str,
        request_id: str,
        customer_email: str | None,
        success_url: str | None,
        metadata: dict[str, str],
        units: int = 1,
    ) -> Checkout:
        if not product_id:
            raise ValueError("product_id is empty")
        if type(units) is not int or units < 1:
            raise ValueError("units must be a positive integer")
        body: dict[str, Any] = {
            "product_id": product_id,
            "request_id": request_id,
            "units": units,
            "metadata": metadata,
        }
        if customer_email:
            body["customer"] = {"email": customer_email}
        if success_url:
            body["success_url"] = success_url
        status, data = await self._call("POST", "/v1/checkouts", json=body, ok=(200, 201))
        checkout_id, url = data.get("id"), data.get("checkout_url")
        if not isinstance(checkout_id, str) or not isinstance(url, str) or not url:
            raise CreemError(status, "malformed checkout: no id or checkout_url")
        rid = data.get("request_id")
        return Checkout(
            id=checkout_id,
            checkout_url=url,
            request_id=rid if isinstance(rid, str) else None,
            status=str(data.get("status") or "pending"),
        )

    async def get_checkout(self, checkout_id: str) -> dict[str, Any]:
        _, data = await self._call("GET", "/v1/checkouts", params={"checkout_id": checkout_id})
        return data

    async def cancel_subscription(
        self, subscription_id: str, *, mode: str = "scheduled"
    ) -> dict[str, Any]:
        """`POST /v1/subscriptions/{id}/cancel`: "scheduled" ends it at the period's end (status
        `scheduled_cancel`), "immediate" now. Answers the subscription object."""
        if mode not in ("scheduled", "immediate"):
            raise ValueError("mode is 'scheduled' or 'immediate'")
        if not subscription_id or "/" in subscription_id:
            raise ValueError("a subscription id")
        path = f"/v1/subscriptions/{subscription_id}/cancel"
        _, data = await self._call("POST", path, json={"mode": mode}, ok=(200, 201))
        return data

    async def get_subscription(self, subscription_id: str) -> dict[str, Any]:
        params = {"subscription_id": subscription_id}
        _, data = await self._call("GET", "/v1/subscriptions", params=params)
        return data

    async def get_customer(
        self, *, customer_id: str | None = None, email: str | None = None
    ) -> dict[str, Any]:
        if (customer_id is None) == (email is None):
            raise ValueError("give exactly one of customer_id and email")
        params = {"customer_id": customer_id} if customer_id is not None else {"email": email}
        _, data = await self._call("GET", "/v1/customers", params=params)
        return data

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        ok: tuple[int, ...] = (200,),
    ) -> tuple[int, dict[str, Any]]:
        headers = {API_KEY_HEADER: self._key, "accept": "application/json"}
        data = None
        if json is not None:
            data = orjson.dumps(json)
            headers["content-type"] = "application/json"
        try:
            async with self._session.request(
                method,
                self._base + path,
                params=params,
                data=data,
                headers=headers,
                timeout=self._timeout,
            ) as resp:
                status, raw = resp.status, await resp.read()
        except TimeoutError:
            raise CreemError(None, f"{method} {path} timed out") from None
        except aiohttp.ClientError as exc:
            # `from None`: aiohttp errors can carry the request (headers included) along.
            raise CreemError(None, f"{method} {path} failed ({type(exc).__name__})") from None
        if status not in ok:
            raise CreemError(status, _redact(_error_text(raw), self._key))
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            raise CreemError(status, f"{method} {path}: the answer is not a JSON object")
        return status, body


def _error_text(raw: bytes) -> str:
    """Creem's `message` list joined; the raw text for anything else."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict):
        message = body.get("message")
        if isinstance(message, list) and message:
            return "; ".join(str(m) for m in message)[:_MAX_MESSAGE]
        if isinstance(message, str) and message:
            return message[:_MAX_MESSAGE]
        if isinstance(body.get("error"), str):
            return body["error"][:_MAX_MESSAGE]
    return raw.decode("utf-8", "replace").strip()[:_MAX_MESSAGE] or "no error message"


def _redact(text: str, secret: str) -> str:
    # A server (or a proxy in front of it) echoing the key must not carry it into our logs.
    return text.replace(secret, "[redacted]") if secret else text


# -- webhook signatures -----------------------------------------------------------------------


class WebhookSignatureError(Exception):
    """The body is not provably from Creem: answer 401 and change nothing."""


def sign(raw_body: bytes, webhook_secret: str) -> str:
    """`creem-signature`: hex HMAC-SHA256 of the raw body, keyed with the webhook secret."""
    return hmac.new(webhook_secret.encode(), raw_body, hashlib.sha256).hexdigest()


def verify_signature(raw_body: bytes, signature_header: str | None, webhook_secret: str) -> None:
    """Raise WebhookSignatureError unless `signature_header` signs exactly `raw_body`.

    Verify the bytes as received, before any parsing: re-serialised JSON would not match. The
    signature has no timestamp, so replays are stopped by deduplicating on the event id.
    """
    if not webhook_secret:
        raise WebhookSignatureError("no webhook secret is configured")
    if signature_header is None or not signature_header.strip():
        raise WebhookSignatureError(f"missing {SIGNATURE_HEADER} header")
    expected = sign(raw_body, webhook_secret).encode()
    given = signature_header.strip().lower().encode("utf-8", "replace")
    if not hmac.compare_digest(expected, given):  # constant time, any length or garbage
        raise WebhookSignatureError(f"{SIGNATURE_HEADER} does not match the body")


# -- events -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreemEvent:
    id: str
    type: str
    created_at_ms: int | None
    object: dict[str, Any]


# Every amount is bounded where it enters: $100 million in cents is far above anything we sell
# and, times 10^4 micro-USD per cent, far below bigint's 9.2 * 10^18. Above it an event is refused
# as that event's bad data, never an overflow in the database.
MAX_CENTS = 10**10
_INT64 = 2**63
MAX_FIELD = 500  # characters in any text field we read (ids, emails, currencies)
MAX_DEPTH = 64  # Creem's objects nest a few levels; deeper is not an event we can read
# PostgreSQL text and jsonb refuse U+0000; UTF-8 (hence both) cannot hold a lone surrogate.
_NUL = re.compile("\x00")
_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(value: str) -> str:
    """`value` without U+0000, lone surrogates replaced by U+FFFD: storable as text and jsonb."""
    if "\x00" in value:
        value = _NUL.sub("", value)
    return _SURROGATE.sub("\ufffd", value)


def clean_json(value: Any, depth: int = 0) -> Any:
    """A parsed JSON value that PostgreSQL (text, jsonb) and orjson accept as it is.

    Text is cleaned (clean_text); an integer beyond 64 bits becomes its decimal string (so no
    field reads it as a number) and a non-finite float null. ValueError when nested too deeply.
    """
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if -_INT64 <= value < _INT64 else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth >= MAX_DEPTH:
        raise ValueError(f"the event is nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, dict):
        return {clean_text(str(k)): clean_json(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [clean_json(v, depth + 1) for v in value]
    return clean_text(str(value))


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _loads(raw_body: bytes) -> Any:
    try:
        return orjson.loads(raw_body)
    except orjson.JSONDecodeError as exc:
        if "surrogate" not in str(exc):
            raise ValueError(f"the body is not valid JSON ({exc})") from None
    # Valid JSON that orjson refuses: a lone surrogate escape ("\ud800"). The standard library
    # reads it (and clean_json replaces it); NaN and Infinity are still refused.
    try:
        return json.loads(raw_body, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"the body is not valid JSON ({type(exc).__name__})") from None


def parse_event(raw_body: bytes) -> CreemEvent:
    """The envelope `{"id", "eventType", "created_at", "object"}`; ValueError names what's wrong.

    Everything in it is cleaned (clean_json) before anyone reads it, so no text from a webhook
    can be refused by the database later.
    """
    data = clean_json(_loads(raw_body))
    if not isinstance(data, dict):
        raise ValueError("the body is not a JSON object")
    event_id, event_type, obj = data.get("id"), data.get("eventType"), data.get("object")
    if not isinstance(event_id, str) or not event_id:
        raise ValueError("missing or empty 'id'")
    if not isinstance(event_type, str) or not event_type:
        raise ValueError("missing or empty 'eventType'")
    if len(event_id) > 200 or len(event_type) > 200:
        raise ValueError("'id' and 'eventType' are at most 200 characters")
    if not isinstance(obj, dict):
        raise ValueError("missing 'object' (must be a JSON object)")
    created = data.get("created_at")
    # Informational only (dedup is on the id), so a malformed timestamp does not refuse the event.
    created_ms = created if type(created) is int else None
    return CreemEvent(event_id, event_type, created_ms, obj)


# Paths into an event's `object`. The ones below are NOT in Creem's published webhook samples
# (docs.creem.io "Webhooks"): they come from Creem's OpenAPI entities or third-party
# integrations, and are read as optional so their absence never refuses an event. UNVERIFIED.
UNVERIFIED_PATHS = (
    "checkout.completed: object.order.transaction (OrderEntity in the OpenAPI)",
    "checkout.completed: object.order.tax_amount, and whether order.amount excludes the tax",
    "subscription.*: object.metadata.user_id (set only if the checkout passed it on)",
    "refund.created: object.order, object.checkout, object.checkout.metadata.user_id",
    "refund.created: object.transaction.order",
)


@dataclass(frozen=True, slots=True)
class Payment:
    """`checkout.completed`: a paid one-time order, to be credited once (key: order_id)."""

    checkout_id: str
    order_id: str
    amount_cents: int  # order.amount
    tax_cents: int | None  # order.tax_amount (OrderEntity in the OpenAPI)
    currency: str
    customer_id: str
    customer_email: str | None
    # metadata.user_id, set by us when creating the checkout: a claim, never who gets the credit
    user_id: str | None
    request_id: str | None  # our top-up's id, when we created the checkout (not a product link)
    transaction_id: str | None  # UNVERIFIED path; matches a later refund's transaction
    metadata: dict[str, str]


@dataclass(frozen=True, slots=True)
class SubscriptionPayment:
    """`subscription.paid`: a period paid (first or renewal); key: transaction_id or period."""

    subscription_id: str
    status: str | None
    customer_id: str
    customer_email: str | None
    product_id: str | None
    price_cents: int | None  # product.price: the plan's price, not a receipt
    currency: str | None
    transaction_id: str | None  # last_transaction_id
    period_start: str | None  # ISO 8601, as Creem sends it
    period_end: str | None
    user_id: str | None  # UNVERIFIED path


@dataclass(frozen=True, slots=True)
class SubscriptionChange:
    """Any other `subscription.*` event: past_due, canceled, paused, expired, ..."""

    event_type: str
    subscription_id: str
    status: str | None
    customer_id: str | None
    customer_email: str | None
    user_id: str | None  # UNVERIFIED path


@dataclass(frozen=True, slots=True)
class SubscriptionState:
    """Where a subscription stands, as an event (or the cancel answer) tells it."""

    subscription_id: str
    status: str
    product_id: str | None
    period_end: str | None  # current_period_end_date, ISO 8601 as Creem sends it
    canceled_at: str | None


_STATUS = re.compile("^[a-z_]{1,40}$")


def subscription_state(o: Mapping[str, Any], default_status: str = "active") -> SubscriptionState:
    """A subscription object's state (a `subscription.*` event's object, the cancel answer, or a
    checkout.completed's expanded `subscription`). A status we cannot read is `default_status`."""
    status = _opt_str(o, "status")
    return SubscriptionState(
        subscription_id=_req_str(o, "id"),
        status=status if status and _STATUS.match(status) else default_status,
        product_id=_opt_ref(o, "product"),
        period_end=_opt_str(o, "current_period_end_date"),
        canceled_at=_opt_str(o, "canceled_at"),
    )


@dataclass(frozen=True, slots=True)
class Refund:
    """`refund.created`. Creem refunds what the customer paid, tax included."""

    refund_id: str
    status: str | None  # "succeeded" in Creem's sample
    amount_cents: int  # refund_amount
    currency: str  # refund_currency
    transaction_id: str | None
    transaction_amount_cents: int | None  # transaction.amount (before tax)
    transaction_paid_cents: int | None  # transaction.amount_paid (after tax)
    order_id: str | None  # UNVERIFIED path
    checkout_id: str | None  # UNVERIFIED path
    subscription_id: str | None
    customer_id: str | None
    customer_email: str | None
    user_id: str | None  # UNVERIFIED path

    def credited_share_cents(self) -> int:
        """The pre-tax part of the refund: what the original payment had credited.

        Creem's sample refunds 1210 of a transaction of amount 1000 / amount_paid 1210 (21 % VAT):
        debiting 1210 would take back more than was credited. Rounded up and capped at the
        transaction amount, so the debit never leaves credit that was paid back.
        """
        amount, paid = self.transaction_amount_cents, self.transaction_paid_cents
        if amount is None or not paid or amount >= paid:
            return self.amount_cents
        return min(amount, -(-self.amount_cents * amount // paid))


@dataclass(frozen=True, slots=True)
class Dispute:
    """`dispute.created`: a chargeback opened; the money is gone until it is won."""

    dispute_id: str
    amount_cents: int
    currency: str
    transaction_id: str | None
    customer_id: str | None
    customer_email: str | None


def checkout_payment(ev: CreemEvent) -> Payment:
    _expect(ev, "checkout.completed")
    o = ev.object
    if not isinstance(o.get("order"), dict):
        raise ValueError("missing object.order")
    status = _opt_str(o, "order.status")
    if status != "paid":
        raise ValueError(f"object.order.status is {status!r}, not 'paid'")
    metadata = o.get("metadata")
    if metadata is None:
        metadata = {}  # an order through a product link carries none
    if not isinstance(metadata, dict):
        raise ValueError("object.metadata must be an object")
    return Payment(
        checkout_id=_req_str(o, "id"),
        order_id=_req_str(o, "order.id"),
        amount_cents=_req_cents(o, "order.amount"),
        tax_cents=_opt_cents(o, "order.tax_amount"),
        currency=_req_str(o, "order.currency").upper(),
        customer_id=_req_ref(o, "customer"),
        customer_email=_opt_str(o, "customer.email"),
        user_id=_opt_str(o, "metadata.user_id"),
        request_id=_opt_str(o, "request_id"),
        transaction_id=_opt_ref(o, "order.transaction"),
        metadata={str(k): str(v) for k, v in metadata.items() if v is not None},
    )


def subscription_payment(ev: CreemEvent) -> SubscriptionPayment:
    _expect(ev, "subscription.paid")
    o = ev.object
    currency = _opt_str(o, "product.currency")
    return SubscriptionPayment(
        subscription_id=_req_str(o, "id"),
        status=_opt_str(o, "status"),
        customer_id=_req_ref(o, "customer"),
        customer_email=_opt_str(o, "customer.email"),
        product_id=_opt_ref(o, "product"),
        price_cents=_opt_cents(o, "product.price"),
        currency=currency.upper() if currency else None,
        transaction_id=_opt_str(o, "last_transaction_id"),
        period_start=_opt_str(o, "current_period_start_date"),
        period_end=_opt_str(o, "current_period_end_date"),
        user_id=_opt_str(o, "metadata.user_id"),
    )


def subscription_change(ev: CreemEvent) -> SubscriptionChange:
    if not ev.type.startswith("subscription."):
        raise ValueError(f"expected a subscription.* event, got {ev.type!r}")
    o = ev.object
    return SubscriptionChange(
        event_type=ev.type,
        subscription_id=_req_str(o, "id"),
        status=_opt_str(o, "status"),
        customer_id=_opt_ref(o, "customer"),
        customer_email=_opt_str(o, "customer.email"),
        user_id=_opt_str(o, "metadata.user_id"),
    )


def refund(ev: CreemEvent) -> Refund:
    _expect(ev, "refund.created")
    o = ev.object
    order_id = _opt_ref(o, "order") or _opt_ref(o, "transaction.order")
    return Refund(
        refund_id=_req_str(o, "id"),
        status=_opt_str(o, "status"),
        amount_cents=_req_cents(o, "refund_amount"),
        currency=_req_str(o, "refund_currency").upper(),
        transaction_id=_opt_ref(o, "transaction"),
        transaction_amount_cents=_opt_cents(o, "transaction.amount"),
        transaction_paid_cents=_opt_cents(o, "transaction.amount_paid"),
        order_id=order_id,
        checkout_id=_opt_ref(o, "checkout"),
        subscription_id=_opt_ref(o, "subscription"),
        customer_id=_opt_ref(o, "customer"),
        customer_email=_opt_str(o, "customer.email"),
        user_id=_opt_str(o, "checkout.metadata.user_id"),
    )


def dispute(ev: CreemEvent) -> Dispute:
    _expect(ev, "dispute.created")
    o = ev.object
    return Dispute(
        dispute_id=_req_str(o, "id"),
        amount_cents=_req_cents(o, "amount"),
        currency=_req_str(o, "currency").upper(),
        transaction_id=_opt_ref(o, "transaction"),
        customer_id=_opt_ref(o, "customer"),
        customer_email=_opt_str(o, "customer.email"),
    )


# -- field access: every error names the field as `object.<path>` ----------------------------

_ABSENT = object()


def _expect(ev: CreemEvent, event_type: str) -> None:
    if ev.type != event_type:
        raise ValueError(f"expected a {event_type} event, got {ev.type!r}")


def _at(obj: Mapping[str, Any], path: str) -> Any:
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, Mapping) or value.get(part) is None:
            return _ABSENT
        value = value[part]
    return value


def _bounded(value: str, path: str) -> str:
    # Ids end up in unique (btree) indexes, whose entries are limited to ~2.7 kB.
    if len(value) > MAX_FIELD:
        raise ValueError(f"object.{path} is longer than {MAX_FIELD} characters")
    return value


def _opt_str(obj: Mapping[str, Any], path: str) -> str | None:
    value = _at(obj, path)
    return _bounded(value, path) if isinstance(value, str) and value else None


def _req_str(obj: Mapping[str, Any], path: str) -> str:
    value = _at(obj, path)
    if value is _ABSENT:
        raise ValueError(f"missing object.{path}")
    if not isinstance(value, str) or not value:
        raise ValueError(f"object.{path} must be a non-empty string")
    return _bounded(value, path)


def _opt_ref(obj: Mapping[str, Any], path: str) -> str | None:
    """An id that Creem sends either bare ("cust_…") or expanded ({"id": "cust_…", ...})."""
    value = _at(obj, path)
    if isinstance(value, Mapping):
        value = value.get("id")
    return _bounded(value, path) if isinstance(value, str) and value else None


def _req_ref(obj: Mapping[str, Any], path: str) -> str:
    value = _opt_ref(obj, path)
    if value is None:
        raise ValueError(f"missing object.{path}.id")
    return value


def _req_cents(obj: Mapping[str, Any], path: str) -> int:
    value = _at(obj, path)
    if value is _ABSENT:
        raise ValueError(f"missing object.{path}")
    # bool is an int subclass and 10.0 is a float: money is whole cents or refused.
    if type(value) is not int or not 0 <= value <= MAX_CENTS:
        raise ValueError(f"object.{path} must be a non-negative integer (cents) up to {MAX_CENTS}")
    return value


def _opt_cents(obj: Mapping[str, Any], path: str) -> int | None:
    value = _at(obj, path)
    return value if type(value) is int and 0 <= value <= MAX_CENTS else None
