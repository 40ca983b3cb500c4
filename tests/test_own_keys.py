"""Users' own provider keys (spec "User API Keys"): checked, encrypted, deployed, reverted."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from test_fleet import FleetEnv, active, available, fleet_env, until

from blitzclawd.credentials import own_key_context
from blitzclawd.testing.fake_llm import FakeLLM

USER_KEY = "sk-ant-api03-users-own-key-0123456789"
OPENAI_KEY = "sk-proj-users-own-openai-key-0123456789"


@asynccontextmanager
async def env_with_llm(database: str, tmp_path: Path) -> AsyncIterator[tuple[FleetEnv, FakeLLM]]:
    async with FakeLLM() as llm:
        upstream = {"anthropic_url": llm.base_url, "openai_url": llm.base_url}
        async with fleet_env(database, tmp_path, sections={"upstream": upstream}) as env:
            yield env, llm


async def an_active_instance(env: FleetEnv) -> tuple[dict[str, str], str, Any]:
    await available(env, 1)
    user = await env.user()
    status, body = await env.call(
        "POST", "/api/instances", user, {"channel_type": "whatsapp", "persona_template": "dev"}
    )
    assert status == 201, body
    row = await active(env, body["id"])
    return user, body["id"], env.server_of(row["hetzner_server_id"]).ssh


async def idle(env: FleetEnv, iid: str) -> None:
    async def no_jobs() -> bool:
        n = await env.pool.fetchval(
            "SELECT count(*) FROM instance_jobs WHERE instance_id = $1 "
            "AND status IN ('queued', 'running')",
            uuid.UUID(iid),
        )
        return n == 0

    await until(no_jobs)
    await active(env, iid)


def deployed(server: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    config = json.loads((server.home / ".openclaw/openclaw.json").read_text())
    secrets = json.loads((server.home / ".openclaw/secrets.json").read_text())
    return config, secrets


async def test_an_own_key_points_the_instance_at_the_provider_and_back(
    database: str, tmp_path: Path
) -> None:
    async with env_with_llm(database, tmp_path) as (env, llm):
        user, iid, server = await an_active_instance(env)
        config, _ = deployed(server)
        assert list(config["models"]["providers"]) == ["blitzclaw"]

        llm.user_keys.add(USER_KEY)
        status, body = await env.call(
            "POST",
            f"/api/instances/{iid}/api-key",
            user,
            {"provider": "anthropic", "api_key": USER_KEY},
        )
        assert status == 202, body
        assert body["use_own_api_key"] is True and USER_KEY not in json.dumps(body)
        checked = [r for r in llm.requests if r.path == "/v1/models"]
        assert checked and checked[-1].headers.get("x-api-key") == USER_KEY

        row = await env.instance(iid)
        assert row["use_own_api_key"] and row["own_api_provider"] == "anthropic"
        blob = bytes(row["own_api_key_enc"])
        assert USER_KEY.encode() not in blob
        keyring = env.daemon.context.keyring()
        assert keyring.decrypt_text(blob, own_key_context(iid)) == USER_KEY

        await idle(env, iid)
        config, secrets = deployed(server)
        provider = config["models"]["providers"]["anthropic"]
        assert provider["baseUrl"] == "https://api.anthropic.com"
        assert "headers" not in provider  # no BlitzClaw credential goes to the provider
        assert config["agents"]["defaults"]["model"]["primary"].startswith("anthropic/")
        assert secrets["models"]["providers"]["anthropic"]["apiKey"] == USER_KEY
        assert USER_KEY not in (server.home / ".openclaw/openclaw.json").read_text()

        status, body = await env.call("GET", f"/api/instances/{iid}", user)
        assert status == 200 and body["use_own_api_key"] is True

        # DELETE reverts to the proxy
        status, body = await env.call("DELETE", f"/api/instances/{iid}/api-key", user)
        assert status == 202 and body["use_own_api_key"] is False
        row = await env.instance(iid)
        assert not row["use_own_api_key"] and row["own_api_key_enc"] is None
        await idle(env, iid)
        config, secrets = deployed(server)
        assert list(config["models"]["providers"]) == ["blitzclaw"]
        assert USER_KEY not in json.dumps(secrets)


async def test_an_openai_key(database: str, tmp_path: Path) -> None:
    async with env_with_llm(database, tmp_path) as (env, llm):
        user, iid, server = await an_active_instance(env)
        llm.user_keys.add(OPENAI_KEY)
        status, body = await env.call(
            "POST",
            f"/api/instances/{iid}/api-key",
            user,
            {"provider": "openai", "api_key": OPENAI_KEY},
        )
        assert status == 202, body
        checked = [r for r in llm.requests if r.path == "/v1/models"]
        assert checked[-1].headers.get("authorization") == f"Bearer {OPENAI_KEY}"
        await idle(env, iid)
        config, secrets = deployed(server)
        provider = config["models"]["providers"]["openai"]
        assert provider["baseUrl"] == "https://api.openai.com/v1"
        assert provider["api"] == "openai-completions"
        assert secrets["models"]["providers"]["openai"]["apiKey"] == OPENAI_KEY


async def test_refused_keys_bad_input_and_scoping(database: str, tmp_path: Path) -> None:
    async with env_with_llm(database, tmp_path) as (env, llm):
        user, iid, _ = await an_active_instance(env)
        mallory = await env.user()
        path = f"/api/instances/{iid}/api-key"

        # a key the provider refuses: 422 naming api_key, with the provider's reason
        status, body = await env.call(
            "POST", path, user, {"provider": "anthropic", "api_key": "sk-ant-wrong-key-000000"}
        )
        assert status == 422, body
        assert body["error"]["code"] == "invalid_api_key" and body["error"]["field"] == "api_key"
        assert "anthropic refused" in body["error"]["message"]

        for payload, field in [
            ({"provider": "mistral", "api_key": USER_KEY}, "provider"),
            ({"api_key": USER_KEY}, "provider"),
            ({"provider": "anthropic"}, "api_key"),
            ({"provider": "anthropic", "api_key": "short"}, "api_key"),
            ({"provider": "anthropic", "api_key": "has a space in it"}, "api_key"),
            ({"provider": "openai", "api_key": 12345678}, "api_key"),
        ]:
            status, body = await env.call("POST", path, user, payload)
            assert status == 422 and body["error"]["field"] == field, (payload, body)

        llm.user_keys.add(USER_KEY)
        for method, payload in [
            ("POST", {"provider": "anthropic", "api_key": USER_KEY}),
            ("DELETE", None),
        ]:
            status, _ = await env.call(method, path, mallory, payload)
            assert status == 404, method
        status, _ = await env.call("DELETE", "/api/instances/not-a-uuid/api-key", user)
        assert status == 404

        row = await env.instance(iid)
        assert not row["use_own_api_key"] and row["own_api_key_enc"] is None  # nothing changed
        jobs = await env.pool.fetchval(
            "SELECT count(*) FROM instance_jobs WHERE instance_id = $1 AND kind = 'configure'",
            uuid.UUID(iid),
        )
        assert jobs == 0
