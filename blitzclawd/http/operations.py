"""The API listener's operations: every route, what it takes and what it answers.

Why one module: this is the URL table, read as one list (as routes.py was before it); each entry
is a declaration (blitzclawd/http/declare.py) that both checks requests and feeds the OpenAPI
document, so splitting it would only scatter the table. The operators' routes are in
blitzclawd/http/operations_admin.py.
"""

from __future__ import annotations

from blitzclawd import plugins
from blitzclawd.channels import Channel, ChannelRoute
from blitzclawd.fleet import remote
from blitzclawd.fleet.openclaw_config import OFFICIAL_APIS, OWN_API_KEY
from blitzclawd.fleet.personas import PERSONA_NAMES
from blitzclawd.http import api_schemas as s
from blitzclawd.http.declare import (
    Body,
    Boolean,
    Choice,
    Header,
    Integer,
    Object,
    Operation,
    PathChoice,
    PathUuid,
    QueryDate,
    QueryFlag,
    QueryInt,
    Reply,
    Text,
    Uuid,
)
from blitzclawd.http.operations_admin import ADMIN_OPERATIONS
from blitzclawd.http.views import (
    auth,
    billing,
    channel_routes,
    channels,
    device,
    docs,
    health,
    instances,
    integrations,
    internal,
    pairing,
    webhooks,
)

INSTANCE_ID = PathUuid("instance_id", missing="no such instance")


def _channel_names(_settings: object = None) -> tuple[str, ...]:
    return tuple(plugins.channels())


def _ok(schema: s.Schema, description: str = "done") -> dict[int, Reply]:
    return {200: Reply(description, schema)}


def _queued(schema: s.Schema = s.QUEUED) -> dict[int, Reply]:
    return {202: Reply("accepted: the change is queued and runs shortly", schema)}


HEALTH = [
    Operation(
        "GET",
        "/healthz",
        health.healthz,
        "The process answers",
        "health",
        "public",
        replies=_ok(s.obj({"status": s.STRING}), "alive"),
    ),
    Operation(
        "GET",
        "/readyz",
        health.readyz,
        "Ready to serve: database reachable, actors running",
        "health",
        "public",
        replies={200: Reply("ready", s.READY), 503: Reply("not ready, and why", s.READY)},
    ),
]

DOCS = [
    Operation(
        "GET",
        "/api/openapi.json",
        docs.openapi_json,
        "This document (OpenAPI 3.1); operators see their routes too",
        "docs",
        "public",
        replies=_ok(s.ANY_OBJECT, "the OpenAPI document"),
    ),
    Operation(
        "GET",
        "/api/docs",
        docs.reference,
        "The API reference, readable in a browser",
        "docs",
        "public",
        replies={200: Reply("an HTML page", {"type": "string"}, "text/html")},
    ),
    Operation(
        "GET",
        "/api/docs/static/{file}",
        docs.asset,
        "The reference page's scripts and styles",
        "docs",
        "public",
        path_params=(PathChoice("file", options=docs.ASSETS, missing="no such file"),),
        replies={200: Reply("the file (CSS, JavaScript or PNG)", {"type": "string"}, "*/*")},
    ),
]

AUTH = [
    Operation(
        "GET",
        "/api/auth/me",
        auth.me,
        "Who is calling, with their balance",
        "auth",
        "caller",
        replies=_ok(s.ME),
    ),
    Operation(
        "GET",
        "/api/auth/api-keys",
        auth.list_keys,
        "The caller's API keys (never the keys themselves)",
        "auth",
        "user",
        replies=_ok(s.listing("keys", s.API_KEY)),
    ),
    Operation(
        "POST",
        "/api/auth/api-keys",
        auth.create_key,
        "A new API key for the CLI or a script, shown once",
        "auth",
        "user",
        body=Body((Text("name", required=True, max_length=100, example="laptop"),)),
        replies={201: Reply("the new key: keep it now, it is not shown again", s.NEW_API_KEY)},
        errors=(409,),
    ),
    Operation(
        "DELETE",
        "/api/auth/api-keys/{key_id}",
        auth.revoke_key,
        "Revoke an API key",
        "auth",
        "user",
        path_params=(PathUuid("key_id", missing="no such API key"),),
        replies=_ok(s.API_KEY, "revoked"),
    ),
]

DEVICE = [
    Operation(
        "POST",
        "/api/auth/device/code",
        device.device_login_code,
        "The CLI's sign-in: a code for the person to confirm on the dashboard",
        "auth",
        "public",
        body=Body((Text("client_name", max_length=100, example="blitzclaw on laptop"),)),
        replies={
            201: Reply(
                "confirm user_code at verification_uri; poll /api/auth/device/token",
                s.obj(
                    {
                        "device_code": s.STRING,
                        "user_code": s.STRING,
                        "verification_uri": s.STRING,
                        "verification_uri_complete": s.STRING,
                        "expires_in": s.INTEGER,
                        "interval": s.INTEGER,
                    }
                ),
            )
        },
    ),
    Operation(
        "POST",
        "/api/auth/device/approve",
        device.approve_device_login,
        "Confirm a CLI's sign-in code (the dashboard's /device page)",
        "auth",
        "user",
        body=Body((Text("user_code", required=True, max_length=20, example="ABCD-2345"),)),
        replies=_ok(s.obj({"approved": s.BOOLEAN, "client_name": s.STRING})),
        errors=(404,),
    ),
    Operation(
        "POST",
        "/api/auth/device/token",
        device.device_login_token,
        "The CLI's poll: waiting (202), then its new API key, once",
        "auth",
        "public",
        body=Body((Text("device_code", required=True, max_length=100),)),
        replies={
            200: Reply(
                "approved: the key, shown once",
                s.obj({"status": s.STRING, "key": s.STRING, "key_id": s.UUID}),
            ),
            202: Reply("still waiting for the person", s.obj({"status": s.STRING})),
        },
        errors=(410, 422),
    ),
]

WEBHOOKS = [
    Operation(
        "POST",
        "/api/webhooks/clerk",
        webhooks.clerk,
        "Clerk's user events (Svix-signed)",
        "webhooks",
        "signature",
        body=Body(raw=True, description="Clerk's event, verified against its Svix signature"),
        headers=(
            Header("svix-id", required=True),
            Header("svix-timestamp", required=True),
            Header("svix-signature", required=True),
        ),
        replies=_ok(s.WEBHOOK_OUTCOME, "received (applied, or already applied)"),
    ),
    Operation(
        "POST",
        "/api/billing/webhook",
        webhooks.creem_webhook,
        "Creem's payment events (HMAC-signed)",
        "webhooks",
        "signature",
        body=Body(raw=True, description="Creem's event, verified against creem-signature"),
        headers=(Header("creem-signature", required=True),),
        replies=_ok(s.WEBHOOK_OUTCOME, "received (applied, or already applied)"),
    ),
]

BILLING = [
    Operation(
        "POST",
        "/api/billing/topup",
        billing.topup,
        "Start a top-up: a Creem checkout to send the user to",
        "billing",
        "user",
        body=Body(
            (
                Integer(
                    "amount_cents",
                    required=True,
                    minimum=lambda st: st.billing.topup_min_cents,
                    maximum=lambda st: st.billing.topup_max_cents,
                    multiple_of=lambda st: st.creem.unit_cents,
                    unit=" cents",
                    example=2500,
                ),
            )
        ),
        replies={201: Reply("the checkout", s.CHECKOUT)},
        errors=(502, 503),
    ),
    Operation(
        "POST",
        "/api/billing/subscribe",
        billing.subscribe,
        "Start the base plan ($20/month including usage): a Creem checkout to send the user to",
        "billing",
        "user",
        replies={201: Reply("the checkout", s.SUBSCRIBE_CHECKOUT)},
        errors=(409, 502, 503),
    ),
    Operation(
        "DELETE",
        "/api/billing/subscribe",
        billing.unsubscribe,
        "Cancel the base plan at the end of the paid period",
        "billing",
        "user",
        replies=_ok(s.UNSUBSCRIBED, "cancelled at the period's end"),
        errors=(404, 502, 503),
    ),
    Operation(
        "GET",
        "/api/billing/balance",
        billing.balance,
        "Balance, what is reserved, the minimum, auto-top-up, the plan",
        "billing",
        "user",
        replies=_ok(s.BALANCE_WITH_PLAN),
    ),
    Operation(
        "GET",
        "/api/billing/usage",
        billing.usage,
        "Usage by day, model and instance (default: the last 30 days)",
        "billing",
        "user",
        query=(QueryDate("from"), QueryDate("to")),
        replies=_ok(s.USAGE),
    ),
    Operation(
        "GET",
        "/api/billing/topups",
        billing.topups,
        "Past top-ups, newest first, with Creem's checkout and order ids",
        "billing",
        "user",
        query=(QueryInt("limit", default=50, minimum=1, maximum=200),),
        replies=_ok(s.listing("topups", s.TOPUP)),
    ),
    Operation(
        "PATCH",
        "/api/billing/auto-topup",
        billing.auto_topup,
        "Turn automatic top-ups on (threshold and amount) or off",
        "billing",
        "user",
        body=Body(
            (
                Boolean("enabled", required=True),
                Integer(
                    "threshold_cents",
                    minimum=0,
                    maximum=lambda st: st.billing.topup_max_cents,
                    unit=" cents",
                    description="required when enabled; at least the minimum balance",
                ),
                Integer(
                    "amount_cents",
                    minimum=lambda st: st.billing.topup_min_cents,
                    maximum=lambda st: st.billing.topup_max_cents,
                    unit=" cents",
                    description="required when enabled",
                ),
            ),
            required_when=(("enabled", True, ("threshold_cents", "amount_cents")),),
        ),
        replies=_ok(s.AUTO_TOPUP),
    ),
]

_SOUL = Text(
    "soul_md",
    multiline=True,
    nullable=True,
    max_length=instances.MAX_SOUL_INPUT,
    description="the assistant's SOUL.md (persona); at most 20,000 characters",
)
_CHANNEL_CONFIG = Object(
    "channel_config",
    description="the channel's settings, as GET /api/channels describes them",
)

INSTANCES = [
    Operation(
        "POST",
        "/api/instances",
        instances.create,
        "A new assistant; without its channel's settings it waits for them",
        "instances",
        "user",
        body=Body(
            (
                Choice("channel_type", required=True, options=_channel_names),
                Choice("persona_template", required=True, options=PERSONA_NAMES),
                _SOUL,
                _CHANNEL_CONFIG,
            )
        ),
        replies={201: Reply("created; it deploys in the background", s.INSTANCE)},
        errors=(402, 409, 502),
    ),
    Operation(
        "GET",
        "/api/instances",
        instances.list_instances,
        "The caller's assistants",
        "instances",
        "user",
        replies=_ok(s.listing("instances", s.INSTANCE)),
    ),
    Operation(
        "GET",
        "/api/instances/{instance_id}",
        instances.get,
        "One assistant, with its last 24 hours of usage",
        "instances",
        "user",
        path_params=(INSTANCE_ID,),
        replies=_ok(s.INSTANCE_DETAIL),
    ),
    Operation(
        "DELETE",
        "/api/instances/{instance_id}",
        instances.delete,
        "Delete an assistant and its server",
        "instances",
        "user",
        path_params=(INSTANCE_ID,),
        replies=_queued(),
    ),
    *(
        Operation(
            "POST",
            f"/api/instances/{{instance_id}}/{action}",
            handler,
            summary,
            "instances",
            "user",
            path_params=(INSTANCE_ID,),
            replies=_queued(),
            errors=errors,
        )
        for action, handler, summary, errors in (
            ("restart", instances.restart, "Restart the assistant's gateway", (409,)),
            (
                "stop",
                instances.stop,
                "Stop an idle assistant (nothing is spent while stopped)",
                (409,),
            ),
            ("start", instances.start, "Start a stopped assistant", (402, 409)),
        )
    ),
    Operation(
        "POST",
        "/api/instances/{instance_id}/configure",
        instances.configure,
        "Change the persona (SOUL.md) and/or the channel's settings",
        "instances",
        "user",
        path_params=(INSTANCE_ID,),
        body=Body((_SOUL, _CHANNEL_CONFIG), any_of=("soul_md", "channel_config")),
        replies=_queued(),
        errors=(402, 409, 502),
    ),
    Operation(
        "POST",
        "/api/instances/{instance_id}/channel",
        instances.connect_channel,
        "Connect (or change) the channel; settings left out keep their stored values",
        "instances",
        "user",
        path_params=(INSTANCE_ID,),
        body=Body((_CHANNEL_CONFIG,)),
        replies=_queued(s.CHANNEL_CONNECTED),
        errors=(402, 409, 502),
    ),
    Operation(
        "GET",
        "/api/instances/{instance_id}/logs",
        instances.logs,
        "The gateway's log (plain text); follow=1 streams it",
        "instances",
        "user",
        path_params=(INSTANCE_ID,),
        query=(
            QueryInt("lines", default=100, minimum=1, maximum=remote.MAX_LOG_LINES),
            QueryFlag("follow"),
        ),
        replies={200: Reply("log lines", {"type": "string"}, "text/plain")},
        errors=(409, 502),
    ),
    Operation(
        "POST",
        "/api/instances/{instance_id}/api-key",
        instances.set_api_key,
        "Use the user's own provider key (checked with the provider first)",
        "instances",
        "user",
        path_params=(INSTANCE_ID,),
        body=Body(
            (
                Choice("provider", required=True, options=OFFICIAL_APIS),
                Text(
                    "api_key",
                    required=True,
                    max_length=512,
                    pattern=OWN_API_KEY.pattern,
                    mismatch="api_key must be 8-512 printable characters without spaces",
                ),
            )
        ),
        replies=_queued(s.OWN_KEY),
        errors=(409, 502),
    ),
    Operation(
        "DELETE",
        "/api/instances/{instance_id}/api-key",
        instances.remove_api_key,
        "Back to BlitzClaw's metered key",
        "instances",
        "user",
        path_params=(INSTANCE_ID,),
        replies=_queued(s.OWN_KEY),
        errors=(409,),
    ),
]

_CHANNEL = PathChoice("channel", options=_channel_names, missing="no such channel")
_CODE = Body(
    (
        Text(
            "code",
            required=True,
            max_length=32,
            description="the 8-character code the assistant sent",
            example="ABCD2345",
        ),
    )
)
_PAIRING_ERRORS = (409, 502)

CHANNELS = [
    Operation(
        "GET",
        "/api/channels",
        channels.list_channels,
        "The messaging channels this service offers, and their settings",
        "channels",
        "user",
        replies=_ok(s.listing("channels", s.CHANNEL)),
    ),
    Operation(
        "POST",
        "/api/channels/{channel_type}/validate",
        channels.validate_channel,
        "Check a channel's settings with its service, storing nothing",
        "channels",
        "user",
        path_params=(
            PathChoice("channel_type", options=_channel_names, missing="no such channel"),
        ),
        body=Body((_CHANNEL_CONFIG,)),
        replies=_ok(s.CHANNEL_CHECKED, "valid: what the user would be shown of them"),
        errors=(502,),
    ),
    Operation(
        "GET",
        "/api/instances/{instance_id}/pairing",
        pairing.list_requests,
        "Who is asking to talk to the assistant",
        "channels",
        "user",
        path_params=(INSTANCE_ID,),
        replies=_ok(s.listing("requests", s.PAIRING_REQUEST)),
        errors=_PAIRING_ERRORS,
    ),
    Operation(
        "POST",
        "/api/instances/{instance_id}/pairing/approve",
        pairing.approve,
        "Let a sender talk to the assistant (the first becomes its owner)",
        "channels",
        "user",
        path_params=(INSTANCE_ID,),
        body=_CODE,
        replies=_ok(s.obj({"approved": s.PAIRING_REQUEST})),
        errors=_PAIRING_ERRORS,
    ),
    Operation(
        "GET",
        "/api/instances/{instance_id}/{channel}/pairing",
        pairing.list_requests,
        "Who is asking to talk to the assistant (under the channel's prefix)",
        "channels",
        "user",
        path_params=(INSTANCE_ID, _CHANNEL),
        replies=_ok(s.listing("requests", s.PAIRING_REQUEST)),
        errors=_PAIRING_ERRORS,
        operation_id="list_channel_pairing_requests",
    ),
    Operation(
        "POST",
        "/api/instances/{instance_id}/{channel}/pairing/approve",
        pairing.approve,
        "Let a sender talk to the assistant (under the channel's prefix)",
        "channels",
        "user",
        path_params=(INSTANCE_ID, _CHANNEL),
        body=_CODE,
        replies=_ok(s.obj({"approved": s.PAIRING_REQUEST})),
        errors=_PAIRING_ERRORS,
        operation_id="approve_channel_pairing",
    ),
]

_INTEGRATION_ID = Body(
    (Uuid("integration_id", required=True, description="one of GET /api/integrations"),)
)
_INTEGRATION_ERRORS = (503,)

INTEGRATIONS = [
    Operation(
        "GET",
        "/api/integrations",
        integrations.list_integrations,
        "The caller's connected accounts (Google), never their tokens",
        "integrations",
        "user",
        replies=_ok(s.listing("integrations", s.INTEGRATION)),
        errors=_INTEGRATION_ERRORS,
    ),
    Operation(
        "POST",
        "/api/integrations/google/connect",
        integrations.connect_google,
        "Start connecting Google: the consent URL to send the browser to (10 minutes, once)",
        "integrations",
        "user",
        replies=_ok(s.CONSENT_URL),
        errors=_INTEGRATION_ERRORS,
    ),
    Operation(
        "POST",
        "/api/integrations/google/callback",
        integrations.google_callback,
        "Finish connecting Google with the code and state Google redirected with",
        "integrations",
        "user",
        body=Body(
            (
                Text("code", required=True, max_length=2048),
                Text("state", required=True, max_length=128),
            )
        ),
        replies=_ok(s.INTEGRATION, "connected (tokens stored encrypted)"),
        errors=(400, 403, 409, 410, 502, 503),
    ),
    Operation(
        "DELETE",
        "/api/integrations/{provider}",
        integrations.disconnect,
        "Disconnect: access revoked at the provider, then removed from every assistant",
        "integrations",
        "user",
        path_params=(PathChoice("provider", options=("google",), missing="no such integration"),),
        replies=_ok(s.obj({"provider": s.STRING, "deleted": s.BOOLEAN}), "revoked and deleted"),
        errors=(502, 503),
    ),
    *(
        Operation(
            "POST",
            f"/api/instances/{{instance_id}}/integrations/{action}",
            handler,
            summary,
            "integrations",
            "user",
            path_params=(INSTANCE_ID,),
            body=_INTEGRATION_ID,
            replies=_ok(s.INTEGRATION_ATTACHMENT),
            errors=errors,
            operation_id=f"{action}_integration",
        )
        for action, handler, summary, errors in (
            ("attach", integrations.attach, "Let the assistant use an integration", (409, 503)),
            ("detach", integrations.detach, "Stop the assistant using an integration", (503,)),
        )
    ),
]

INTERNAL = [
    Operation(
        "POST",
        "/internal/instance-ready",
        internal.instance_ready,
        "A pool server reports that it booted (its own secret as the bearer)",
        "internal",
        "instance",
        body=Body(
            (
                Text("server_name", required=True, max_length=63),
                Text("host_key", required=True, max_length=16384),
            ),
            raw=True,
        ),
        replies=_ok(s.obj({"ok": s.BOOLEAN, "outcome": s.STRING})),
        errors=(409,),
    ),
]


def channel_operation(channel: Channel, route: ChannelRoute) -> Operation:
    """A plugin's route, under the core's checks (blitzclawd/http/views/channel_routes.py)."""
    return Operation(
        route.method,
        f"/api/instances/{{instance_id}}/{channel.name}/{route.path}",
        channel_routes.handler(channel, route),
        route.summary or f"{channel.display_name}: {route.path}",
        "channels",
        "user",
        description=route.description,
        path_params=(INSTANCE_ID,),
        query=route.query,
        body=Body(route.body) if route.body else None,  # else the handler reads it, if at all
        replies=_ok(route.answer or s.ANY_OBJECT),
        errors=(409, 429, 502),
        operation_id=f"{channel.name}_{route.path.replace('/', '_')}",
    )


def api_operations() -> list[Operation]:
    """Every operation of the API listener, the plugins' routes included."""
    ops = [*HEALTH, *DOCS, *AUTH, *DEVICE, *WEBHOOKS, *BILLING, *INSTANCES, *CHANNELS]
    ops.extend(INTEGRATIONS)
    for channel in plugins.channels().values():
        ops.extend(channel_operation(channel, route) for route in channel.routes())
    return [*ops, *ADMIN_OPERATIONS, *INTERNAL]
