"""The fuzzing gate (issue 14): schemathesis, from its own process, against a real daemon with the
fakes, over every operation of the operators' copy of /api/openapi.json (the whole API), as a
stranger and as a signed-in user with money on their balance; then the operators' routes as an
operator.

Every run must end with no server error, every answer in the declared status codes, content
types, headers and schemas, and every request the document calls invalid refused. Requests
that are refused write nothing: the stranger's whole run, and the user's run of invalid
requests only, leave the database as it was.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import asyncpg
import pytest
from conftest import running_api_env

from blitzclawd.testing import seed
from blitzclawd.testing.fake_google import FakeGoogle
from blitzclawd.testing.fake_telegram import FakeTelegram

CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
        "missing_required_header",
        "unsupported_method",
    )
)
EXAMPLES = int(os.environ.get("BLITZCLAW_FUZZ_EXAMPLES", "8"))
RUN_TIMEOUT = 600.0

# What a refused request could have changed, with the columns that move on their own (a key's
# last use, a lease's size, a user's details refreshed from Clerk) left out.
_STATE = {
    "users": "id, role, deleted_at",
    "api_keys": "id, user_id, name, revoked_at",
    "balances": "user_id, balance_micros, auto_topup_enabled, topup_threshold_micros, "
    "topup_amount_micros",
    "ledger_entries": "*",
    "topups": "*",
    "instances": "*",
    "instance_jobs": "*",
    "notifications": "*",
    "admin_actions": "*",
    "processed_webhook_events": "*",
    "unmatched_payments": "*",
    "spend_alerts": "*",
    "user_integrations": "*",
    "instance_integrations": "*",
    "server_pool": "*",
}


async def _state(pool: asyncpg.Pool) -> dict[str, str]:
    out = {}
    for table, columns in _STATE.items():
        out[table] = await pool.fetchval(
            f"SELECT md5(coalesce(string_agg(r::text, '|' ORDER BY r::text), '')) "
            f"FROM (SELECT {columns} FROM {table}) r"
        )
    return out


async def _schemathesis(
    schema: Path, base_url: str, report: Path, *args: str, phases: str = "examples,coverage,fuzzing"
) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        str(schema),
        "--url",
        base_url,
        "--checks",
        CHECKS,
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        "20261204",
        "--workers",
        "1",  # hypothesis' lambda descriptions are not thread-safe on Python 3.11 (ast)
        "--phases",
        phases,
        "--suppress-health-check",
        "all",
        "--request-timeout",
        "30",
        "--report",
        "junit,har",
        "--report-junit-path",
        str(report),
        "--report-har-path",
        str(report.with_suffix(".har")),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=report.parent,  # its cache and reports stay out of the checkout
        env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false"},
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), RUN_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    return process.returncode or 0, out.decode(errors="replace")


# Several schemathesis runs over every operation: more than the suite's default 120 s per test
# when the machine is busy (each run has its own deadline, RUN_TIMEOUT).
@pytest.mark.timeout(360)
async def test_schemathesis_finds_nothing_as_stranger_and_as_user(
    database: str, tmp_path: Path
) -> None:
    async with FakeTelegram() as telegram, FakeGoogle() as google:
        telegram.add_bot("fuzz_assistant_bot", "Fuzz")
        sections = {
            "telegram": {"api_url": telegram.base_url},
            "google": {
                "client_id": google.client_id,
                "authorization_url": google.authorization_url,
                "token_url": google.token_url,
                "revoke_url": google.revoke_url,
                "userinfo_url": google.userinfo_url,
            },
            # Thousands of requests from one address in a few minutes: not a flood here.
            "limits": {"api_per_ip_per_minute": 10**6, "api_per_user_per_minute": 10**6},
        }
        google_secret = {"google_client_secret": google.client_secret}
        async with running_api_env(database, sections, google_secret) as env:
            admin = {"Authorization": f"Bearer {env.admin_key}"}
            _, doc = await env.call("GET", "/api/openapi.json", headers=admin)
            schema = tmp_path / "openapi.json"
            schema.write_text(json.dumps(doc))

            # As a stranger: every operation refused, nothing written.
            before = await _state(env.pool)
            code, out = await _schemathesis(schema, env.api, tmp_path / "stranger.xml")
            assert code == 0, out[-20000:]
            assert await _state(env.pool) == before

            # As a user, with a balance above the minimum (so creating an assistant works).
            session = env.session_headers("user_fuzz")
            status, me = await env.call("GET", "/api/auth/me", headers=session)
            assert status == 200, me
            await seed.credit(env.pool, me["id"], 20_000_000)
            status, key = await env.call(
                "POST", "/api/auth/api-keys", headers=session, json={"name": "fuzz"}
            )
            assert status == 201, key
            bearer = ("--header", f"Authorization: Bearer {key['key']}")
            before = await _state(env.pool)
            code, out = await _schemathesis(
                schema,
                env.api,
                tmp_path / "user-negative.xml",
                "--mode",
                "negative",
                *bearer,
                phases="coverage,fuzzing",  # the examples phase sends the valid examples
            )
            assert code == 0, out[-20000:]
            assert await _state(env.pool) == before  # invalid requests changed nothing

            code, out = await _schemathesis(schema, env.api, tmp_path / "user.xml", *bearer)
            assert code == 0, out[-20000:]

            # And the operators' routes as an operator (the event stream never ends: it has
            # its own tests, tests/test_events.py).
            code, out = await _schemathesis(
                schema,
                env.api,
                tmp_path / "operator.xml",
                "--header",
                f"Authorization: Bearer {env.admin_key}",
                "--include-tag",
                "admin",
                "--exclude-path",
                "/api/admin/events",
            )
            assert code == 0, out[-20000:]
            # The daemon is still whole after it all.
            status, ready = await env.call("GET", "/readyz")
            assert status == 200, ready
