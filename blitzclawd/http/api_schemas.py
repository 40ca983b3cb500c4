"""JSON Schemas of what the API answers, for the OpenAPI document (blitzclawd/http/openapi.py).

Objects list the keys every answer has (`required`) and stay open to keys added later, so a
client written against today's document keeps working.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
BOOLEAN: Schema = {"type": "boolean"}
NUMBER: Schema = {"type": "number"}
UUID: Schema = {"type": "string", "format": "uuid"}
TIME: Schema = {"type": "string", "format": "date-time"}
ANY_OBJECT: Schema = {"type": "object"}


def maybe(schema: Schema) -> Schema:
    kind = schema.get("type")
    if isinstance(kind, str):
        return {**schema, "type": [kind, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def obj(properties: dict[str, Schema], *, optional: tuple[str, ...] = ()) -> Schema:
    return {
        "type": "object",
        "properties": properties,
        "required": [k for k in properties if k not in optional],
    }


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def listing(key: str, items: Schema = ANY_OBJECT) -> Schema:
    """`{"<key>": [...]}`, the shape of every list the API answers."""
    return obj({key: array(items)})


ERROR: Schema = obj(
    {
        "error": obj(
            {
                "code": {**STRING, "description": "stable, machine-readable"},
                "message": {**STRING, "description": "for people: what went wrong, what to do"},
                "field": {**STRING, "description": "the request field at fault, if one is"},
                "request_id": {**STRING, "description": "quote it to support (X-Request-Id)"},
            },
            optional=("field", "request_id"),
        )
    }
)

AUTO_TOPUP = obj(
    {"enabled": BOOLEAN, "threshold_cents": maybe(INTEGER), "amount_cents": maybe(INTEGER)}
)

BALANCE = obj(
    {
        "balance_micros": {**INTEGER, "description": "micro-USD (1,000,000 = $1)"},
        "balance_cents": INTEGER,
        "reserved_micros": {**INTEGER, "description": "what requests in flight may still cost"},
        "available_micros": INTEGER,
        "available_cents": INTEGER,
        "minimum_micros": {**INTEGER, "description": "below it the assistants pause"},
        "minimum_cents": INTEGER,
        "below_minimum": BOOLEAN,
        "warning": maybe(STRING),
        "auto_topup": AUTO_TOPUP,
    }
)

PLAN = obj(
    {
        "status": {
            **STRING,
            "description": "Creem's: active, scheduled_cancel, past_due, canceled, expired, …",
        },
        "renews_at": {**maybe(TIME), "description": "the next period is paid (while it renews)"},
        "ends_at": {**maybe(TIME), "description": "when it ends or ended (after a cancel)"},
        "included_usd": {**NUMBER, "description": "usage credited with each paid month"},
    }
)

BALANCE_WITH_PLAN = {
    **BALANCE,
    "properties": {
        **BALANCE["properties"],
        "plan": {**maybe(PLAN), "description": "the base plan; null: never subscribed"},
    },
    "required": [*BALANCE["required"], "plan"],
}

SUBSCRIBE_CHECKOUT = obj(
    {
        "checkout_url": {**STRING, "description": "send the user here to pay"},
        "checkout_id": STRING,
    }
)

UNSUBSCRIBED = obj(
    {
        "status": {**STRING, "enum": ["scheduled_cancel"]},
        "ends_at": {**maybe(TIME), "description": "the end of the paid period"},
    }
)

ME = obj(
    {
        "id": maybe(UUID),
        "clerk_user_id": maybe(STRING),
        "email": maybe(STRING),
        "role": {"type": "string", "enum": ["user", "admin"]},
        "via": {"type": "string", "enum": ["session", "api_key", "admin_key"]},
        "created_at": TIME,
        "balance": BALANCE,
    },
    optional=("clerk_user_id", "email", "created_at", "balance"),
)

API_KEY = obj(
    {
        "id": UUID,
        "name": STRING,
        "prefix": {**STRING, "description": "the key's first characters, to recognise it"},
        "created_at": TIME,
        "last_used_at": maybe(TIME),
        "revoked_at": maybe(TIME),
    }
)
NEW_API_KEY = {
    **API_KEY,
    "properties": {**API_KEY["properties"], "key": {**STRING, "description": "shown only now"}},
    "required": [*API_KEY["required"], "key"],
}

CHECKOUT = obj(
    {
        "checkout_url": {**STRING, "description": "send the user here to pay"},
        "checkout_id": STRING,
        "topup_id": UUID,
        "amount_cents": INTEGER,
    }
)

TOPUP = obj(
    {
        "id": UUID,
        "amount_cents": INTEGER,
        "status": STRING,
        "credited_micros": maybe(INTEGER),
        "refunded_micros": maybe(INTEGER),
        "checkout_id": maybe(STRING),
        "order_id": maybe(STRING),
        "created_at": TIME,
        "paid_at": maybe(TIME),
    }
)

_USAGE_SUMS = {
    "requests": INTEGER,
    "input_tokens": INTEGER,
    "output_tokens": INTEGER,
    "cost_micros": INTEGER,
    "cost_cents": INTEGER,
}
USAGE = obj(
    {
        "from": {"type": "string", "format": "date"},
        "to": {"type": "string", "format": "date"},
        "lines": array(
            obj(
                {
                    "day": {"type": "string", "format": "date"},
                    "model": STRING,
                    "instance_id": maybe(UUID),
                    **_USAGE_SUMS,
                    "cache_write_tokens": INTEGER,
                    "cache_read_tokens": INTEGER,
                }
            )
        ),
        "by_day": array(obj({"day": {"type": "string", "format": "date"}, **_USAGE_SUMS})),
        "by_model": array(obj({"model": STRING, **_USAGE_SUMS})),
        "by_instance": array(obj({"instance_id": maybe(UUID), **_USAGE_SUMS})),
        "total": obj({"cost_micros": INTEGER, "cost_cents": INTEGER, "requests": INTEGER}),
    }
)

# An instance's statuses while it lives (the admin listing filters by them); "deleted" after.
LIVE_INSTANCE_STATUSES = (
    "waiting_for_channel",
    "pending",
    "provisioning",
    "active",
    "paused",
    "stopped",
    "error",
)
INSTANCE_STATUS: Schema = {"type": "string", "enum": [*LIVE_INSTANCE_STATUSES, "deleted"]}

INSTANCE = obj(
    {
        "id": UUID,
        "status": INSTANCE_STATUS,
        "status_reason": maybe(STRING),
        "channel_type": STRING,
        "channel_config": {**ANY_OBJECT, "description": "the channel's settings, secrets left out"},
        "persona_template": maybe(STRING),
        "soul_md": maybe(STRING),
        "ip_address": maybe(STRING),
        "use_own_api_key": BOOLEAN,
        "setup_text": {**maybe(STRING), "description": "what the user does next"},
        "created_at": TIME,
        "updated_at": TIME,
    }
)
INSTANCE_DETAIL = {
    **INSTANCE,
    "properties": {
        **INSTANCE["properties"],
        "usage_24h": obj(
            {
                "requests": INTEGER,
                "input_tokens": INTEGER,
                "output_tokens": INTEGER,
                "cost_micros": INTEGER,
            }
        ),
    },
    "required": [*INSTANCE["required"], "usage_24h"],
}

QUEUED = obj(
    {"id": UUID, "queued": maybe(STRING), "status": STRING},
    optional=("status",),
)

CHANNEL_CONNECTED = obj(
    {
        "id": UUID,
        "channel_type": STRING,
        "channel_config": ANY_OBJECT,
        "queued": maybe(STRING),
        "setup_text": maybe(STRING),
    }
)

OWN_KEY = obj(
    {
        "id": UUID,
        "use_own_api_key": BOOLEAN,
        "provider": STRING,
        "queued": STRING,
    },
    optional=("provider",),
)

CHANNEL = obj(
    {
        "type": STRING,
        "display_name": STRING,
        "fields": array(
            obj(
                {
                    "name": STRING,
                    "label": STRING,
                    "description": STRING,
                    "secret": BOOLEAN,
                    "required": BOOLEAN,
                    "type": STRING,
                    "example": maybe(STRING),
                }
            )
        ),
        "routes": array(obj({"method": STRING, "path": STRING, "summary": STRING})),
    }
)

CHANNEL_CHECKED = obj({"valid": BOOLEAN, "type": STRING, "channel_config": ANY_OBJECT})

PAIRING_REQUEST = obj(
    {
        "code": maybe(STRING),
        "sender_id": maybe(STRING),
        "username": maybe(STRING),
        "name": maybe(STRING),
        "requested_at": maybe(STRING),
    }
)

WEBHOOK_OUTCOME = obj({"status": STRING})

READY = obj(
    {
        "status": {"type": "string", "enum": ["ready", "not_ready"]},
        "reason": maybe(STRING),
        "daemon_id": STRING,
        "database": STRING,
        "tree": ANY_OBJECT,
        "actors": array(ANY_OBJECT),
    }
)

# -- what operators see (/api/admin/...) ---------------------------------------------------------

MICROS: Schema = {**INTEGER, "description": "micro-USD (1,000,000 = $1)"}
_NO_LIMIT = "null: the global limit applies"

ADMIN_INSTANCE = obj(
    {
        "id": UUID,
        "user_id": UUID,
        "email": maybe(STRING),
        "status": INSTANCE_STATUS,
        "status_reason": maybe(STRING),
        "channel_type": STRING,
        "server_ip": maybe(STRING),
        "server_name": maybe(STRING),
        "health": {
            "type": ["string", "null"],
            "enum": ["ok", "not_ready", "down", "unreachable", "error", None],
            "description": "the health monitor's last result (null: not checked yet)",
        },
        "health_detail": maybe(STRING),
        "health_checked_at": maybe(TIME),
        "messages_per_hour": {**maybe(INTEGER), "description": _NO_LIMIT},
        "tokens_per_day": {**maybe(INTEGER), "description": _NO_LIMIT},
        "spend_today_micros": {
            **MICROS,
            "description": "what its usage was charged since 00:00 UTC, in micro-USD",
        },
        "created_at": TIME,
    }
)
ADMIN_INSTANCES = obj(
    {
        "instances": array(ADMIN_INSTANCE),
        "total": {**INTEGER, "description": "how many match, regardless of `limit`"},
    }
)

ADMIN_USER = obj(
    {
        "id": UUID,
        "email": maybe(STRING),
        "clerk_user_id": maybe(STRING),
        "role": {"type": "string", "enum": ["user", "admin"]},
        "created_at": TIME,
        "balance_micros": MICROS,
        "reserved_micros": {**MICROS, "description": "what the daemons' leases hold"},
        "instances": {**INTEGER, "description": "live (not deleted) instances"},
        "spend_today_micros": {**MICROS, "description": "usage charged since 00:00 UTC"},
        "spend_30d_micros": {**MICROS, "description": "usage charged in the last 30 days"},
        "topped_up_micros": {
            **MICROS,
            "description": "what paid top-ups credited, ever (refunds not taken off)",
        },
        "last_topup_at": {**maybe(TIME), "description": "when the last top-up was paid"},
        "leases": {**INTEGER, "description": "open balance leases (one per daemon at most)"},
    }
)

INSTANCE_PAUSED = obj(
    {"id": UUID, "status": {"type": "string", "enum": ["paused", "active"]}},
)

INTEGRATION = obj(
    {
        "id": UUID,
        "provider": STRING,
        "status": {"type": "string", "enum": ["connected", "broken"]},
        "account_email": maybe(STRING),
        "scopes": array(STRING),
        "expires_at": maybe(TIME),
        "attached_instances": array(UUID),
        "created_at": TIME,
        "broken_reason": maybe(STRING),
    }
)
CONSENT_URL = obj({"url": {**STRING, "description": "send the user's browser here"}})
INTEGRATION_ATTACHMENT = obj(
    {"instance_id": UUID, "integration_id": UUID, "attached": BOOLEAN, "changed": BOOLEAN}
)
