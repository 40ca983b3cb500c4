"""Bad input over real HTTP: every refusal is a 4xx in the JSON error shape naming the field, and
changes nothing; per-user limits hold when requests race."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest
from test_protocol_errors import raw_exchange

from blitzclawd.http.views.auth import MAX_KEYS_PER_USER
from blitzclawd.testing import seed

BOT_TOKEN = "123456:AAE" + "k" * 32


def refused(status: int, body: dict, field: str, code: int = 422) -> None:
    assert status == code, (status, body)
    err = body["error"]
    assert err["field"] == field, err
    assert err["code"] and err["message"] and err["request_id"], err


async def test_api_key_names_refuse_nul_controls_and_non_strings(api_env) -> None:
    session = api_env.session_headers("user_names")
    for bad in ("ci\u0000key", "line\nbreak", "tab\there", ["k"], {"k": 1}, True, 1.5):
        status, body = await api_env.call(
            "POST", "/api/auth/api-keys", headers=session, json={"name": bad}
        )
        refused(status, body, "name")
    assert await api_env.pool.fetchval("SELECT count(*) FROM api_keys") == 0
    status, body = await api_env.call(
        "POST", "/api/auth/api-keys", headers=session, json={"name": "  laptop ✓ "}
    )
    assert status == 201 and body["name"] == "laptop ✓"


async def test_forty_concurrent_key_creations_leave_exactly_the_limit(api_env) -> None:
    session = api_env.session_headers("user_race")
    await api_env.call("GET", "/api/auth/me", headers=session)  # the user row exists first

    async def create(i: int) -> int:
        status, _ = await api_env.call(
            "POST", "/api/auth/api-keys", headers=session, json={"name": f"k{i}"}
        )
        return status

    statuses = await asyncio.gather(*(create(i) for i in range(40)))
    assert sorted(statuses) == [201] * MAX_KEYS_PER_USER + [422] * (40 - MAX_KEYS_PER_USER)
    live = await api_env.pool.fetchval("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL")
    assert live == MAX_KEYS_PER_USER


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("to=0001-01-01&from=0001-01-01T00", "from"),
        ("to=20260101", "to"),
        ("to=2026-01-01%00", "to"),
        ("from=0001-01-01&to=9999-12-31", "from"),
        ("to=١٢٣٤-01-01", "to"),
    ],
)
async def test_usage_query_dates_are_4xx_never_500(api_env, query: str, field: str) -> None:
    status, body = await api_env.call(
        "GET", f"/api/billing/usage?{query}", headers=api_env.session_headers("user_dates")
    )
    refused(status, body, field)


async def test_usage_at_the_edges_of_the_calendar_answers(api_env) -> None:
    session = api_env.session_headers("user_edges")
    for query, frm, to in (
        ("to=0001-01-01", "0001-01-01", "0001-01-01"),
        ("to=0001-01-20", "0001-01-01", "0001-01-20"),
        ("to=9999-12-31", "9999-12-01", "9999-12-31"),
        ("from=9999-12-31&to=9999-12-31", "9999-12-31", "9999-12-31"),
    ):
        status, body = await api_env.call("GET", f"/api/billing/usage?{query}", headers=session)
        assert status == 200, body
        assert (body["from"], body["to"], body["lines"]) == (frm, to, [])


async def test_logs_lines_must_be_ascii_digits_in_range(api_env) -> None:
    session = api_env.session_headers("user_logs")
    _, me = await api_env.call("GET", "/api/auth/me", headers=session)
    inst = await seed.create_instance(api_env.pool, me["id"])
    for query, field in (
        ("lines=²", "lines"),
        ("lines=٣", "lines"),
        ("lines=0", "lines"),
        ("lines=-1", "lines"),
        ("lines=99999999999999999999999", "lines"),
        ("lines=1e3", "lines"),
        ("follow=yes", "follow"),
    ):
        status, body = await api_env.call(
            "GET", f"/api/instances/{inst.id}/logs?{query}", headers=session
        )
        refused(status, body, field)
    # A valid request gets past validation: this instance has no server yet.
    status, body = await api_env.call(
        "GET", f"/api/instances/{inst.id}/logs?lines=5", headers=session
    )
    assert status == 409 and body["error"]["code"] == "not_ready"


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"bot_token": BOT_TOKEN, "allow_from": "123456789"}, "channel_config.allow_from"),
        ({"bot_token": BOT_TOKEN, "allow_from": 123456789}, "channel_config.allow_from"),
        ({"bot_token": BOT_TOKEN, "allow_from": {"id": "1"}}, "channel_config.allow_from"),
        ({"bot_token": BOT_TOKEN, "allow_from": ["12", "abc"]}, "channel_config.allow_from"),
        ({"bot_token": BOT_TOKEN, "allow_from": [True]}, "channel_config.allow_from"),
        ({"bot_token": BOT_TOKEN, "allow_from": [-5]}, "channel_config.allow_from"),
        ({"bot_token": BOT_TOKEN, "allow_from": ["²"]}, "channel_config.allow_from"),
        ({"bot_token": BOT_TOKEN, "allow_from": ["1"] * 101}, "channel_config.allow_from"),
        ({"bot_token": BOT_TOKEN, "allowFrom": ["1"]}, "channel_config.allowFrom"),
        ({"bot_token": ["x"]}, "channel_config.bot_token"),
        ({"bot_token": "1:" + "a" * 30 + "\u0000"}, "channel_config.bot_token"),
    ],
)
async def test_channel_config_is_validated_before_anything_happens(
    api_env, config: dict, field: str
) -> None:
    session = api_env.session_headers("user_chan")
    body = {"channel_type": "telegram", "persona_template": "assistant", "channel_config": config}
    status, err = await api_env.call("POST", "/api/instances", headers=session, json=body)
    refused(status, err, field)
    assert await api_env.pool.fetchval("SELECT count(*) FROM instances") == 0


async def test_instance_fields_of_the_wrong_type_are_422(api_env) -> None:
    session = api_env.session_headers("user_types")
    base = {"channel_type": "whatsapp", "persona_template": "assistant"}
    for patch, field in (
        ({"channel_type": ["telegram"]}, "channel_type"),
        ({"persona_template": {"x": 1}}, "persona_template"),
        ({"soul_md": 5}, "soul_md"),
        ({"persona_template": "custom", "soul_md": "a\u0000b"}, "soul_md"),
        ({"channel_config": "telegram"}, "channel_config"),
        ({"channel_config": {"bot_token": BOT_TOKEN}}, "channel_config.bot_token"),
    ):
        status, err = await api_env.call(
            "POST", "/api/instances", headers=session, json={**base, **patch}
        )
        refused(status, err, field)
    _, me = await api_env.call("GET", "/api/auth/me", headers=session)
    inst = await seed.create_instance(api_env.pool, me["id"])
    for body, field in (
        ({"provider": ["anthropic"], "api_key": "sk-ant-xxxxxxxx"}, "provider"),
        ({"provider": {"a": 1}, "api_key": "sk-ant-xxxxxxxx"}, "provider"),
        ({"provider": "anthropic", "api_key": "sk-ant-\u0000xxxxxxx"}, "api_key"),
    ):
        status, err = await api_env.call(
            "POST", f"/api/instances/{inst.id}/api-key", headers=session, json=body
        )
        refused(status, err, field)
    status, err = await api_env.call(
        "POST", f"/api/instances/{inst.id}/configure", headers=session, json={"soul_md": "\u0000"}
    )
    refused(status, err, "soul_md")


async def test_billing_integers_stay_inside_bigint(api_env) -> None:
    session = api_env.session_headers("user_ints")
    for body, field in (
        ({"amount_cents": 2**63}, "amount_cents"),
        ({"amount_cents": -(2**70)}, "amount_cents"),
        ({"amount_cents": "2000"}, "amount_cents"),
    ):
        status, err = await api_env.call("POST", "/api/billing/topup", headers=session, json=body)
        refused(status, err, field)
    for body, field in (
        ({"enabled": True, "threshold_cents": 2**63, "amount_cents": 2000}, "threshold_cents"),
        ({"enabled": "yes"}, "enabled"),
        ({"enabled": True, "threshold_cents": 1000, "amount_cents": 10**30}, "amount_cents"),
    ):
        status, err = await api_env.call(
            "PATCH", "/api/billing/auto-topup", headers=session, json=body
        )
        refused(status, err, field)
    assert await api_env.pool.fetchval("SELECT count(*) FROM topups") == 0


async def test_ids_in_paths_of_any_shape_are_404(api_env) -> None:
    session = api_env.session_headers("user_ids")
    for raw in ("x", "%00", "0" * 5000, str(uuid.uuid4()) + "0"):
        status, err = await api_env.call("DELETE", f"/api/auth/api-keys/{raw}", headers=session)
        assert status == 404 and err["error"]["code"] == "not_found"
        status, err = await api_env.call("GET", f"/api/instances/{raw}", headers=session)
        assert status == 404 and err["error"]["code"] == "not_found"


async def test_concurrent_instance_creations_stop_at_the_per_user_limit(api_env) -> None:
    session = api_env.session_headers("user_many")
    _, me = await api_env.call("GET", "/api/auth/me", headers=session)
    await seed.credit(api_env.pool, me["id"], 50_000_000)
    limit = api_env.daemon.settings.fleet.max_instances_per_user

    async def create() -> int:
        status, _ = await api_env.call(
            "POST",
            "/api/instances",
            headers=session,
            json={"channel_type": "whatsapp", "persona_template": "assistant"},
        )
        return status

    statuses = await asyncio.gather(*(create() for _ in range(12)))
    assert sorted(statuses) == [201] * limit + [409] * (12 - limit)
    assert await api_env.pool.fetchval("SELECT count(*) FROM instances") == limit


@pytest.mark.parametrize(
    ("path", "header"),
    [
        ("/api/auth/me", b"Authorization: Bearer sk_\xff\xfe"),
        ("/api/auth/me", b"Authorization: Bearer eyJ\xff.e30.sig"),
        ("/api/auth/me", b"Cookie: __session=\xff\xfe"),
        ("/internal/instance-ready", b"Authorization: Bearer \xffsecret"),
    ],
)
async def test_credentials_that_are_not_ascii_are_401_not_500(api_env, path, header) -> None:
    body = b'{"server_name": "blitz-pool-1", "host_key": "x"}'
    request = (
        f"POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n".encode()
        + header
        + b"\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    if path == "/api/auth/me":
        request = request.replace(b"POST ", b"GET ", 1)
    status, _, raw = await raw_exchange(api_env.api, request)
    err = orjson.loads(raw)["error"]
    assert status == 401 and err["code"] == "unauthenticated" and err["request_id"], raw
