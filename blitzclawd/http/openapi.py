"""The OpenAPI 3.1 document of the API listener, built from the operations' declarations
(blitzclawd/http/declare.py): the same objects that check every request describe it here.

Operators' routes appear only in the document an operator asks for: to everyone else they do
not exist (404), and the public document does not list them either.
"""

from __future__ import annotations

from typing import Any

from blitzclawd import __version__
from blitzclawd.config import Settings
from blitzclawd.http import api_schemas as s
from blitzclawd.http.declare import Operation
from blitzclawd.http.rate_limit import EXEMPT_PREFIXES

_ERRORS: dict[int, tuple[str, str, str]] = {
    # status: (component name, when, an example code)
    400: ("BadRequest", "the body is not a JSON object", "invalid_json"),
    401: (
        "Unauthenticated",
        "no credential, or an unknown, revoked or expired one",
        "unauthenticated",
    ),
    402: ("PaymentRequired", "the balance is below the minimum: top up first", "payment_required"),
    403: ("Forbidden", "this credential may not do this (e.g. email not verified)", "forbidden"),
    404: ("NotFound", "no such thing (another user's looks exactly the same)", "not_found"),
    409: ("Conflict", "not now: the state does not allow it, and says why", "not_ready"),
    413: ("TooLarge", "the body is over 8 MB", "request_entity_too_large"),
    410: ("Gone", "it expired or was used: start again", "expired"),
    415: ("NotJson", "the body must be sent as application/json", "unsupported_media_type"),
    422: ("Invalid", "a field is missing or wrong: `field` names it", "invalid_field"),
    429: ("RateLimited", "too many requests: retry after `Retry-After` seconds", "rate_limited"),
    502: (
        "BadGateway",
        "an outside service or the assistant's server did not answer",
        "server_unreachable",
    ),
    503: ("Unavailable", "a dependency is unavailable: retry shortly", "database_unavailable"),
    504: ("Timeout", "still running: the result will show up later", "timeout"),
}

_USER = [{"apiKey": []}, {"clerkSession": []}, {"sessionCookie": []}]
_SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "caller": [*_USER, {"adminKey": []}],
    "user": _USER,
    "admin": [{"adminKey": []}, *_USER],  # the admin key, or an admin user's own credentials
    "instance": [{"serverSecret": []}],
    "signature": [],
    "public": [],
}

_TAGS = [
    ("auth", "Who is calling; API keys"),
    ("billing", "Prepaid balance, top-ups through Creem, usage"),
    ("instances", "The user's OpenClaw assistants"),
    ("channels", "Messaging channels (plugins) and pairing"),
    ("admin", "Operators only (admin key or admin role); every action is audited"),
    ("webhooks", "Signed callbacks from Clerk and Creem"),
    ("internal", "Pool servers calling home"),
    ("health", "Liveness and readiness"),
    ("docs", "This document and its reference page"),
]

DESCRIPTION = """\
BlitzClaw runs a dedicated OpenClaw assistant for each user, billed from a prepaid balance.

**Authentication.** Send `Authorization: Bearer <credential>`, where the credential is one of
your API keys (`sk_…`, from `POST /api/auth/api-keys`), a Clerk session token, or, for
operators, the admin key. In a browser signed in with Clerk, the `__session` cookie is enough.

**Errors** always have the shape `{"error": {"code", "message", "field"?, "request_id"}}`:
`code` is stable for programs, `message` is for people, `field` names the request field at
fault. Every answer carries `X-Request-Id`.

**Money** is in micro-USD (`_micros`: 1,000,000 = $1) or cents (`_cents`), always integers.
"""


def _error_component(status: int) -> dict[str, Any]:
    _, when, code = _ERRORS[status]
    reply: dict[str, Any] = {
        "description": when,
        "content": {
            "application/json": {
                "schema": {"$ref": "#/components/schemas/Error"},
                "example": {"error": {"code": code, "message": when, "request_id": "4f1c…"}},
            }
        },
    }
    if status in (429, 503):
        reply["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
    return reply


def _error_statuses(op: Operation) -> set[int]:
    statuses = {503, *op.errors}
    if not op.path.startswith(EXEMPT_PREFIXES) and op.path.startswith(("/api/", "/metrics")):
        statuses.add(429)
    if op.auth in ("caller", "user", "admin"):
        statuses |= {401, 403}
    if op.auth == "admin" or op.path_params:
        statuses.add(404)
    if op.auth in ("instance", "signature"):
        statuses.add(401)
    if op.body is not None:
        statuses |= {400, 413} | (set() if op.body.raw else {415, 422})
    if op.query:
        statuses.add(422)
    return statuses


def _operation(op: Operation, settings: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {
        "operationId": op.id,
        "summary": op.summary,
        "tags": [op.tag],
        "security": _SECURITY[op.auth],
    }
    if op.description:
        out["description"] = op.description
    params: list[dict[str, Any]] = [
        {"name": p.name, "in": "path", "required": True, "schema": p.schema(settings)}
        | ({"description": p.description} if p.description else {})
        for p in op.path_params
    ]
    params += [
        {"name": p.name, "in": "query", "required": False, "schema": p.schema(settings)}
        | ({"description": p.description} if p.description else {})
        for p in op.query
    ]
    params += [
        {"name": h.name, "in": "header", "required": h.required, "schema": {"type": "string"}}
        | ({"description": h.description} if h.description else {})
        for h in op.headers
    ]
    if params:
        out["parameters"] = params
    if op.body is not None:
        schema = op.body.schema(settings) if not op.body.raw else {"type": "object"}
        if op.body.raw and op.body.description:
            schema["description"] = op.body.description
        required = not op.body.optional
        out["requestBody"] = {
            "required": required,
            "content": {"application/json": {"schema": schema}},
        }
    responses: dict[str, Any] = {}
    for status, reply in sorted(op.replies.items()):
        body: dict[str, Any] = {}
        if reply.schema is not None:
            body["schema"] = reply.schema
        if reply.example is not None:
            body["example"] = reply.example
        responses[str(status)] = {
            "description": reply.description,
            "content": {reply.content_type: body},
        }
    for status in sorted(_error_statuses(op) - set(op.replies)):
        responses[str(status)] = {"$ref": f"#/components/responses/{_ERRORS[status][0]}"}
    out["responses"] = responses
    return out


def document(ops: list[Operation], settings: Settings, *, operators: bool) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        if op.auth == "admin" and not operators:
            continue
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, settings)
    used = {tag for item in paths.values() for o in item.values() for tag in o["tags"]}
    return {
        "openapi": "3.1.0",
        "info": {"title": "BlitzClaw API", "version": __version__, "description": DESCRIPTION},
        "tags": [{"name": n, "description": d} for n, d in _TAGS if n in used],
        "paths": paths,
        "components": {
            "schemas": {"Error": s.ERROR},
            "responses": {name: _error_component(st) for st, (name, _, _) in _ERRORS.items()},
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "sk_…",
                    "description": "one of the user's API keys (POST /api/auth/api-keys)",
                },
                "clerkSession": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "a Clerk session token (RS256, from Clerk's frontend API)",
                },
                "sessionCookie": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "__session",
                    "description": "Clerk's session cookie, in a signed-in browser",
                },
                "adminKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "the operators' key (the admin_api_key secret)",
                },
                "serverSecret": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a pool server's own secret, from its cloud-init",
                },
            },
        },
    }
