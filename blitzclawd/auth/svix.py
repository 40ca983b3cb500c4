"""Svix webhook signatures, as Clerk sends them.

Headers ``svix-id``, ``svix-timestamp`` (unix seconds) and ``svix-signature`` (space-separated
``v1,<base64>`` entries, several while a secret rotates). The signed content is
``f"{id}.{timestamp}.".encode() + raw_body``, HMAC-SHA256 keyed with the base64-decoded part of
``whsec_…``. Verify the raw bytes before parsing them: re-serialised JSON would not match.

Why not the ``svix`` package: it is Svix's whole API client (httpx, attrs, python-dateutil and
more) for these few lines of HMAC, and its ``Webhook.verify`` reads the wall clock itself, where
this takes ``now`` and ``tolerance`` (tests/test_svix.py pins the window's edges). The checks are
the standard library's constant-time ``hmac.compare_digest`` over the documented signed content.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Mapping

_TIMESTAMP = re.compile(r"[0-9]{1,12}")


class WebhookSignatureError(Exception):
    """A refused delivery. ``reason`` is safe to log and to return to the sender."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _key(secret: str) -> bytes:
    # A bad secret is an operator's configuration error, not a forged request: ValueError.
    try:
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except binascii.Error:
        raise ValueError("webhook secret is not whsec_<base64>") from None


def _digest(key: bytes, msg_id: str, timestamp: str, body: bytes) -> bytes:
    return hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:  # a plain dict is case sensitive; HTTP header names are not
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value


def sign_svix(msg_id: str, timestamp: int, body: bytes, secret: str) -> str:
    """The ``svix-signature`` entry Svix would send: ``v1,<base64>``."""
    digest = _digest(_key(secret), msg_id, str(timestamp), body)
    return "v1," + base64.b64encode(digest).decode()


def verify_svix(
    headers: Mapping[str, str],
    body: bytes,
    secret: str,
    *,
    now: float | None = None,
    tolerance: float = 300.0,
) -> None:
    """Return if one ``v1`` signature matches and the timestamp is fresh; else raise
    WebhookSignatureError. The timestamp window is what makes a captured delivery unreplayable
    later; deduplicating on ``svix-id`` within it is the caller's job."""
    key = _key(secret)
    msg_id = _header(headers, "svix-id")
    timestamp = _header(headers, "svix-timestamp")
    signatures = _header(headers, "svix-signature")
    if not msg_id or not timestamp or not signatures:
        raise WebhookSignatureError("missing svix headers")
    if not _TIMESTAMP.fullmatch(timestamp):
        raise WebhookSignatureError("invalid svix-timestamp")
    skew = (time.time() if now is None else now) - int(timestamp)
    if skew > tolerance:
        raise WebhookSignatureError("timestamp too old")
    if skew < -tolerance:
        raise WebhookSignatureError("timestamp in the future")
    expected = _digest(key, msg_id, timestamp, body)
    for entry in signatures.split():
        version, _, encoded = entry.partition(",")
        if version != "v1":  # e.g. v1a (asymmetric) entries: not ours to check
            continue
        try:
            candidate = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            continue
        if hmac.compare_digest(candidate, expected):
            return
    raise WebhookSignatureError("no matching signature")
