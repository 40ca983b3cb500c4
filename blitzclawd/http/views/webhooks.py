"""Webhooks from Clerk (Svix-signed) and Creem (HMAC-signed): verified over the raw body before
anything is parsed; a forged or missing signature is 401 and changes nothing."""

from __future__ import annotations

import logging

import orjson
from aiohttp import web

from blitzclawd.accounts import apply_clerk_event
from blitzclawd.auth.svix import WebhookSignatureError as SvixSignatureError
from blitzclawd.auth.svix import verify_svix
from blitzclawd.http.context import CONTEXT, DaemonContext
from blitzclawd.http.errors import ApiError
from blitzclawd.http.jsonutil import json_response
from blitzclawd.payments import creem
from blitzclawd.registry import ActorUnavailable
from blitzclawd.runtime.messages import CreemWebhook, JobsQueued, NotificationQueued

log = logging.getLogger("blitzclawd.webhooks")


def _secret(ctx: DaemonContext, name: str) -> str:
    secret = ctx.secrets.get(name)
    if secret is None:
        # 503: the sender retries later, once the operator has configured the secret.
        raise ApiError(503, "webhook_unconfigured", "this webhook is not configured")
    return secret.reveal()


async def clerk(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    secret = _secret(ctx, "clerk_webhook_secret")
    raw = await request.read()
    try:
        verify_svix(request.headers, raw, secret)
    except SvixSignatureError as exc:
        raise ApiError(401, "bad_signature", f"webhook signature refused: {exc.reason}") from None
    try:
        envelope = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(400, "invalid_json", "the webhook body is not valid JSON") from None
    if not isinstance(envelope, dict) or not isinstance(envelope.get("type"), str):
        raise ApiError(400, "invalid_event", "type is required", field="type")
    data = envelope.get("data")
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_event", "data must be an object", field="data")
    try:
        outcome = await apply_clerk_event(
            ctx.pool, request.headers["svix-id"], envelope["type"], data
        )
    except ValueError as exc:  # "data.<field>: reason"
        where, _, reason = str(exc).partition(": ")
        raise ApiError(400, "invalid_event", reason or str(exc), field=where) from None
    if envelope["type"] in ("user.deleted", "user.updated") and isinstance(data.get("id"), str):
        # This daemon applies the change to its sessions at once (a deletion, an unverified
        # primary email), not when the cached entry expires.
        ctx.user_cache.pop(data["id"], None)
    if outcome.notify is not None:
        ctx.actors.notifier.tell(outcome.notify)
    if outcome.deleted_instances:
        ctx.actors.provisioner.tell(JobsQueued())  # else its next poll finds the teardown jobs
    return json_response({"status": outcome.status})


async def creem_webhook(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    secret = _secret(ctx, "creem_webhook_secret")
    raw = await request.read()
    try:
        creem.verify_signature(raw, request.headers.get("creem-signature"), secret)
    except creem.WebhookSignatureError:
        raise ApiError(401, "bad_signature", "creem-signature does not match the body") from None
    try:
        event = creem.parse_event(raw)
    except ValueError as exc:
        raise ApiError(400, "invalid_event", str(exc)) from None
    # Billing is money's one writer: no second path applies the event while it is away, and
    # Creem retries a 503 (30 s, 1 min, ...) until it is back.
    try:
        outcome = await ctx.actors.billing.ask(CreemWebhook(event), timeout=30.0)
    except ActorUnavailable:
        raise ApiError(503, "billing_unavailable", "billing is restarting; retry later") from None
    for note in outcome.notifications:
        ctx.actors.notifier.tell(note)
    for notification_id in outcome.queued:
        ctx.actors.notifier.tell(NotificationQueued(notification_id))
    if outcome.status == "failed":  # nothing was recorded: Creem retries (30 s, 1 min, ...)
        raise ApiError(500, "webhook_failed", "the event could not be processed; retry later")
    return json_response({"status": outcome.status})
