"""Money in the proxy: no overdraft by construction, every answer metered or refused, every fee
priced or refused. Real HTTP in, the fake upstream behind (reporting what the real APIs report),
a real ledger. Costs are computed by hand from the listed prices (blitzclawd.toml) and the 1.5
markup: cost = ceil(sum(quantity x list price) x 1.5) micro-USD.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
from conftest import notice_of

from blitzclawd.testing import seed
from blitzclawd.testing.fake_llm import Scenario

SONNET = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "Say hi"}],
}
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Say hi"}]}
RESPONSES = {"model": "gpt-5", "input": "Say hi", "max_output_tokens": 1000}


async def body_of(resp) -> Any:
    async with resp:
        raw = await resp.read()
    return orjson.loads(raw) if raw else None


async def refused(env, path: str, body: dict, **kw: Any) -> tuple[int, str]:
    resp = await env.post(path, body, **kw)
    got = await body_of(resp)
    return resp.status, got["error"]["message"]


async def one_row(env) -> Any:
    await env.settled()
    rows = await env.pool.fetch("SELECT * FROM usage_logs ORDER BY id")
    return rows[-1]


async def ok(env, path: str, body: dict, scenario: Scenario, **kw: Any) -> Any:
    """Send one request answered with `scenario`; its usage row once settled."""
    env.fake.set_next(scenario)
    resp = await env.post(path, body, **kw)
    got = await body_of(resp) if not body.get("stream") else None
    assert resp.status == 200, got
    return await one_row(env)


@asynccontextmanager
async def proxy_with(database: str, pricing: dict[str, Any]) -> AsyncIterator[Any]:
    """The suite's ProxyEnv, with [pricing] settings of our own."""
    from conftest import running_proxy_env

    async with running_proxy_env(database, pricing=pricing) as env:
        yield env


async def ledger_sum(env, user: str) -> int:
    return await env.pool.fetchval(
        "SELECT coalesce(sum(amount_micros), 0)::bigint FROM ledger_entries WHERE user_id = $1",
        uuid.UUID(user),
    )


# -- no overdraft --------------------------------------------------------------------------------


async def test_server_side_context_reserves_the_context_window_so_no_overdraft(proxy_env) -> None:
    """$11 with a $10 minimum; 20 concurrent ~100-byte requests that read server-side context
    (a stored conversation, a file) and whose upstream would report 2M input tokens each: the
    worst case of each is the model's whole context window, far above the $1 available, so none
    is forwarded and nothing is charged."""
    user = await seed.create_user(proxy_env.pool)
    await seed.credit(proxy_env.pool, user, 11_000_000)
    inst = await seed.create_instance(proxy_env.pool, user)
    proxy_env.fake.scenario = Scenario(input_tokens=2_000_000, output_tokens=10)
    proxy = proxy_env.daemon.supervisor.child("proxy")
    gpt5 = proxy.prices.get("gpt-5")
    # 400K window x $1.25 (no cache-write premium on OpenAI) + 128K out x $10 (no
    # max_output_tokens: the model's ceiling) = $1.78; x 1.5
    assert (
        proxy.prices.reserve_micros(gpt5, input_tokens_estimate=400_000, max_output_tokens=None)
        == 2_670_000
    )
    stored = {"model": "gpt-5", "input": "Go on", "previous_response_id": "resp_1"}
    file_ref = {
        **SONNET,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "document", "source": {"type": "file", "file_id": "file_011"}},
                    {"type": "text", "text": "Summarise"},
                ],
            }
        ],
    }
    requests = [proxy_env.post("/v1/responses", stored, instance=inst) for _ in range(10)] + [
        proxy_env.post("/v1/messages", file_ref, instance=inst) for _ in range(10)
    ]
    responses = await asyncio.gather(*requests)
    bodies = await asyncio.gather(*(body_of(r) for r in responses))
    assert [notice_of(r) for r in responses] == ["balance"] * 20, bodies[0]
    assert proxy_env.fake.received == 0
    await proxy_env.settled()
    assert await proxy_env.balance(user) == 11_000_000 == await ledger_sum(proxy_env, user)


async def test_usage_beyond_the_worst_case_never_takes_the_balance_below_zero(
    proxy_env, caplog: pytest.LogCaptureFixture
) -> None:
    """The issue's 20 concurrent tiny Sonnet requests whose upstream reports 2,000,000 input
    tokens: a ~100-byte body cannot read that many, so each is admitted at its true bound, and
    the upstream's report breaks the bound. The settlement debits down to zero and no further,
    records the rest as unbilled, logs the broken bound, and pauses the user."""
    user = await seed.create_user(proxy_env.pool)
    await seed.credit(proxy_env.pool, user, 11_000_000)
    inst = await seed.create_instance(proxy_env.pool, user)
    proxy_env.fake.scenario = Scenario(input_tokens=2_000_000, output_tokens=10)
    caplog.set_level(logging.ERROR, logger="blitzclawd.proxy")
    responses = await asyncio.gather(
        *(proxy_env.post("/v1/messages", SONNET, instance=inst) for _ in range(20))
    )
    await asyncio.gather(*(body_of(r) for r in responses))
    assert [r.status for r in responses] == [200] * 20  # 20 x ~$0.04 fit in the $1 available
    await proxy_env.settled()
    balance = await proxy_env.balance(user)
    assert balance == 0 == await ledger_sum(proxy_env, user)
    # Each cost (2M x $3 + 10 x $15) x 1.5 = 9_000_225; $11 of it debited in all.
    charged, unbilled, count = await proxy_env.pool.fetchrow(
        "SELECT sum(cost_micros), sum(unbilled_micros), count(*) FROM usage_logs "
        "WHERE user_id = $1",
        uuid.UUID(user),
    )
    assert (charged, unbilled, count) == (11_000_000, 20 * 9_000_225 - 11_000_000, 20)
    broken = [r for r in caplog.records if r.getMessage().startswith("a request cost more")]
    assert len(broken) == 20 and broken[0].cost_micros == 9_000_225
    status = await proxy_env.pool.fetchval(
        "SELECT status FROM instances WHERE id = $1", uuid.UUID(inst.id)
    )
    assert status == "paused"


# -- every answer metered or refused -------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [("/v1/messages", SONNET), ("/v1/chat/completions", CHAT), ("/v1/responses", RESPONSES)],
)
@pytest.mark.parametrize("value", [1, "true", 0, {}])
async def test_stream_must_be_a_boolean(proxy_env, path: str, body: dict, value: Any) -> None:
    status, message = await refused(proxy_env, path, {**body, "stream": value})
    assert status == 400 and message.startswith("stream:")
    assert proxy_env.fake.received == 0


@pytest.mark.parametrize("value", [True, "yes", 1])
async def test_background_mode_is_refused_before_forwarding(proxy_env, value: Any) -> None:
    status, message = await refused(proxy_env, "/v1/responses", {**RESPONSES, "background": value})
    assert status == 400 and message.startswith("background:")
    assert proxy_env.fake.received == 0
    # background: false is an ordinary request.
    row = await ok(
        proxy_env,
        "/v1/responses",
        {**RESPONSES, "background": False},
        Scenario(input_tokens=100, output_tokens=10),
    )
    assert row["cost_micros"] == 338  # (100 x $1.25 + 10 x $10) x 1.5 = 337.5, rounded up


@pytest.mark.parametrize("huge", [2**62, 2**63, 2**64 - 1, None])
async def test_max_tokens_beyond_the_models_ceiling_is_a_400(proxy_env, huge: int | None) -> None:
    """Never a 500 (the reservation once overflowed a bigint): one past each model's ceiling, or
    far past it, is a 400 naming the field."""
    for path, body, name, ceiling in (
        ("/v1/messages", SONNET, "max_tokens", 64_000),
        ("/v1/chat/completions", CHAT, "max_completion_tokens", 16_384),
        ("/v1/chat/completions", CHAT, "max_tokens", 16_384),
        ("/v1/responses", RESPONSES, "max_output_tokens", 128_000),
    ):
        value = ceiling + 1 if huge is None else huge
        status, message = await refused(proxy_env, path, {**body, name: value})
        assert status == 400 and message.startswith(f"{name}:") and str(ceiling) in message
    assert proxy_env.fake.received == 0


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (
            "/v1/messages",
            {**SONNET, "tools": [{"type": "code_execution_20250825", "name": "code_execution"}]},
            "tools:",
        ),
        (
            "/v1/messages",
            {**SONNET, "tools": [{"type": "teleport_20991231", "name": "x"}]},
            "tools:",
        ),
        (
            "/v1/messages",
            {**SONNET, "mcp_servers": [{"type": "url", "url": "https://x", "name": "x"}]},
            "mcp_servers:",
        ),
        ("/v1/messages", {**SONNET, "inference_geo": "us"}, "inference_geo:"),
        ("/v1/messages", {**SONNET, "service_tier": "priority"}, "service_tier:"),
        ("/v1/responses", {**RESPONSES, "tools": [{"type": "code_interpreter"}]}, "tools:"),
        ("/v1/responses", {**RESPONSES, "tools": [{"type": "image_generation"}]}, "tools:"),
        ("/v1/responses", {**RESPONSES, "service_tier": "scale"}, "service_tier:"),
        ("/v1/chat/completions", {**CHAT, "service_tier": "flex"}, "service_tier:"),
        ("/v1/chat/completions", {**CHAT, "n": 0}, "n:"),
        ("/v1/chat/completions", {**CHAT, "n": 129}, "n:"),
        ("/v1/chat/completions", {**CHAT, "modalities": ["text", "audio"]}, "modalities:"),
        ("/v1/chat/completions", {**CHAT, "web_search_options": {}}, "web_search_options:"),
        ("/v1/chat/completions", {**CHAT, "tools": [{"type": "web_search"}]}, "tools:"),
    ],
)
async def test_unpriceable_requests_are_refused_before_forwarding(
    proxy_env, path: str, body: dict, field: str
) -> None:
    status, message = await refused(proxy_env, path, body)
    assert status == 400 and message.startswith(field), message
    assert proxy_env.fake.received == 0
    assert await proxy_env.pool.fetchval("SELECT count(*) FROM reservations") == 0


async def test_a_type_name_hidden_in_escapes_is_still_seen(proxy_env) -> None:
    """JSON lets "document" be spelled "\\u0064ocument": the scan for server-side content sees
    through it, so the request still reserves its whole context window."""
    user = await seed.create_user(proxy_env.pool)
    await seed.credit(proxy_env.pool, user, 11_000_000)
    inst = await seed.create_instance(proxy_env.pool, user)
    raw = (
        b'{"model":"claude-sonnet-4-6","max_tokens":100,"messages":[{"role":"user","content":'
        b'[{"type":"\\u0064ocument","source":{"type":"file","file_\\u0069d":"file_1"}}]}]}'
    )
    resp = await proxy_env.http.post(
        proxy_env.url + "/v1/messages",
        data=raw,
        headers={
            **inst.headers,
            "content-type": "application/json",
            "anthropic-version": "2023-06-01",
        },
    )
    await body_of(resp)
    # 200K x $6 x 1.5 = $1.80 > the $1 available
    assert notice_of(resp) == "balance" and proxy_env.fake.received == 0


# -- every fee priced ----------------------------------------------------------------------------


async def test_anthropic_web_search_is_priced_per_search(proxy_env) -> None:
    tool = {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}
    sc = Scenario(input_tokens=1000, output_tokens=200, web_search_requests=3)
    row = await ok(proxy_env, "/v1/messages", {**SONNET, "max_tokens": 500, "tools": [tool]}, sc)
    # 1000 x $3 + 200 x $15 + 3 searches x $10/1K = 3000 + 3000 + 30000 = 36000; x 1.5
    assert row["cost_micros"] == 54_000 and row["web_search_requests"] == 3
    assert proxy_env.fake.requests[-1].json["tools"] == [tool]  # forwarded as sent


async def test_a_server_tool_without_max_uses_is_capped_and_reserved_so(proxy_env) -> None:
    tools = [
        {"type": "web_search_20250305", "name": "web_search"},
        {"type": "web_fetch_20250910", "name": "web_fetch"},
    ]
    sc = Scenario(input_tokens=1000, output_tokens=200, web_search_requests=5, web_fetch_requests=4)
    row = await ok(proxy_env, "/v1/messages", {**SONNET, "max_tokens": 500, "tools": tools}, sc)
    # The default cap (5 uses each) is written into what the upstream receives.
    assert [t["max_uses"] for t in proxy_env.fake.requests[-1].json["tools"]] == [5, 5]
    # 3000 + 3000 + 5 x $0.01 = 56000; web fetch has no fee beyond its tokens; x 1.5
    assert row["cost_micros"] == 84_000
    assert (row["web_search_requests"], row["web_fetch_requests"]) == (5, 4)
    proxy = proxy_env.daemon.supervisor.child("proxy")
    # Reserved: 11 model calls (1 + 5 + 5 uses) each reading up to 200K tokens at $6 (1h cache
    # write), 500 out at $15, 5 searches at $0.01: far more than the $0.084 it cost.
    price = proxy.prices.get("claude-sonnet-4-6")
    worst = proxy.prices.reserve_micros(
        price, input_tokens_estimate=200_000, max_output_tokens=500, passes=11, fee_micros=50_000
    )
    assert worst == (11 * 200_000 * 6 + 500 * 15 + 50_000) * 3 // 2  # 19_886_250 (exact)


async def test_long_context_rates_above_200k_with_the_1m_beta(proxy_env) -> None:
    long_text = "word " * 45_000  # 225 KB: its worst case reaches the long-context threshold
    body = {
        **SONNET,
        "model": "claude-sonnet-4-5",
        "max_tokens": 1000,
        "messages": [{"role": "user", "content": long_text}],
    }
    sc = Scenario(input_tokens=150_000, cache_read_tokens=60_000, output_tokens=1000)
    beta = {"anthropic-beta": "context-1m-2025-08-07"}
    row = await ok(proxy_env, "/v1/messages", body, sc, headers=beta)
    # 210K input > 200K: every token at the long rates: 150K x $6 + 60K x $0.60 + 1000 x $22.50
    # = 900000 + 36000 + 22500 = 958500; x 1.5
    assert row["cost_micros"] == 1_437_750
    # Under the threshold, the same request costs the standard rates.
    sc = Scenario(input_tokens=140_000, cache_read_tokens=60_000, output_tokens=1000)
    row = await ok(proxy_env, "/v1/messages", body, sc, headers=beta)
    # 140K x $3 + 60K x $0.30 + 1000 x $15 = 420000 + 18000 + 15000 = 453000; x 1.5
    assert row["cost_micros"] == 679_500


@pytest.mark.parametrize(
    ("path", "body", "tier", "cost"),
    [
        # gpt-5 priority: 800 x $2.50 + 200 x $0.25 + 100 x $20 = 4050; x 1.5 = 6075
        ("/v1/responses", RESPONSES, "priority", 6075),
        # gpt-5 flex: 800 x $0.625 + 200 x $0.0625 + 100 x $5 = 1012.5; x 1.5 = 1518.75 -> 1519
        ("/v1/responses", RESPONSES, "flex", 1519),
        # gpt-4o priority: 800 x $4.25 + 200 x $2.125 + 100 x $17 = 5525; x 1.5 = 8287.5 -> 8288
        ("/v1/chat/completions", CHAT, "priority", 8288),
        # standard: gpt-4o 800 x $2.50 + 200 x $1.25 + 100 x $10 = 3250; x 1.5 = 4875
        ("/v1/chat/completions", CHAT, "default", 4875),
    ],
)
async def test_service_tiers_are_billed_at_their_rates(
    proxy_env, path: str, body: dict, tier: str, cost: int
) -> None:
    sc = Scenario(input_tokens=800, cache_read_tokens=200, output_tokens=100)
    row = await ok(proxy_env, path, {**body, "service_tier": tier}, sc)
    assert row["cost_micros"] == cost and row["service_tier"] == tier


async def test_the_tier_the_upstream_reports_wins(proxy_env) -> None:
    """A request naming no tier, served at priority (the project's default): billed at priority."""
    sc = Scenario(
        input_tokens=800, cache_read_tokens=200, output_tokens=100, service_tier="priority"
    )
    row = await ok(proxy_env, "/v1/responses", RESPONSES, sc)
    assert row["cost_micros"] == 6075 and row["service_tier"] == "priority"


async def test_audio_tokens_at_audio_rates(proxy_env) -> None:
    body = {
        "model": "gpt-audio",
        "modalities": ["text", "audio"],
        "audio": {"voice": "alloy", "format": "wav"},
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}}
                ],
            }
        ],
    }
    sc = Scenario(
        input_tokens=1000, output_tokens=200, audio_input_tokens=400, audio_output_tokens=150
    )
    row = await ok(proxy_env, "/v1/chat/completions", body, sc)
    # 600 text x $2.50 + 400 audio x $32 + 50 text x $10 + 150 audio x $64
    # = 1500 + 12800 + 500 + 9600 = 24400; x 1.5
    assert row["cost_micros"] == 36_600
    assert (row["audio_input_tokens"], row["audio_output_tokens"]) == (400, 150)
    # A model without audio prices refuses audio input.
    status, message = await refused(proxy_env, "/v1/chat/completions", {**body, "model": "gpt-4o"})
    assert status == 400 and "audio" in message


async def test_image_tokens_are_input_tokens_and_each_image_is_reserved(proxy_env) -> None:
    body = {
        **CHAT,
        "max_tokens": 100,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                ],
            }
        ],
    }
    row = await ok(
        proxy_env, "/v1/chat/completions", body, Scenario(input_tokens=1200, output_tokens=10)
    )
    # OpenAI bills image input as input tokens (inside prompt_tokens): 1200 x $2.50 + 10 x $10
    assert row["cost_micros"] == 4650  # 3100 x 1.5
    from blitzclawd.metering.pricing import FRAMING_TOKENS, IMAGE_MAX_TOKENS, max_input_tokens

    # A URL is a few bytes but may be a large image: its worst case is counted apart.
    assert max_input_tokens(200, 1) == 200 + FRAMING_TOKENS + IMAGE_MAX_TOKENS


async def test_responses_built_in_tool_calls_are_priced_per_call(proxy_env) -> None:
    body = {
        **RESPONSES,
        "model": "gpt-4o",
        "max_output_tokens": 100,
        "tools": [{"type": "web_search"}, {"type": "file_search", "vector_store_ids": ["vs_1"]}],
    }
    sc = Scenario(input_tokens=1000, output_tokens=100, web_search_requests=2, file_search_calls=1)
    row = await ok(proxy_env, "/v1/responses", body, sc)
    # 1000 x $2.50 + 100 x $10 + 2 x $0.01 + 1 x $0.0025 = 2500 + 1000 + 20000 + 2500; x 1.5
    assert row["cost_micros"] == 39_000
    assert (row["web_search_requests"], row["file_search_calls"]) == (2, 1)
    # max_tool_calls bounds the calls: the default cap went upstream with the request.
    assert proxy_env.fake.requests[-1].json["max_tool_calls"] == 5


async def test_n_choices_multiply_the_reserved_output(proxy_env) -> None:
    user = await seed.create_user(proxy_env.pool)
    await seed.credit(proxy_env.pool, user, 10_100_000)  # $0.10 available
    inst = await seed.create_instance(proxy_env.pool, user)
    body = {**CHAT, "max_tokens": 4000}  # one choice: <= 4000 x $10 x 1.5 = $0.06 (+ input)
    resp = await proxy_env.post("/v1/chat/completions", body, instance=inst)
    await body_of(resp)
    assert resp.status == 200
    resp = await proxy_env.post("/v1/chat/completions", {**body, "n": 2}, instance=inst)
    await body_of(resp)
    assert notice_of(resp) == "balance"  # two choices may cost $0.12


async def test_an_unknown_usage_field_is_logged_once_and_the_rest_charged(
    proxy_env, caplog: pytest.LogCaptureFixture
) -> None:
    field = f"quantum_tokens_{uuid.uuid4().hex[:8]}"  # the log is once per process
    caplog.set_level(logging.WARNING, logger="blitzclawd.metering")
    sc = Scenario(input_tokens=1000, output_tokens=200, extra_usage={field: 7})
    for stream in (False, True, False):
        row = await ok(
            proxy_env, "/v1/messages", {**SONNET, "max_tokens": 500, "stream": stream}, sc
        )
        assert row["cost_micros"] == 9000  # (1000 x $3 + 200 x $15) x 1.5: what is known
    logged = [r for r in caplog.records if getattr(r, "field", "") == f"anthropic.usage.{field}"]
    assert len(logged) == 1


async def test_allowed_unpriced_tools_pass_and_reserve_their_loops(database: str) -> None:
    async with proxy_with(database, {"allow_unpriced": ["code_execution"]}) as env:
        tool = {"type": "code_execution_20250825", "name": "code_execution"}
        row = await ok(
            env,
            "/v1/messages",
            {**SONNET, "tools": [tool]},
            Scenario(input_tokens=10, output_tokens=10),
        )
        assert row["cost_micros"] == 270  # (10 x $3 + 10 x $15) x 1.5: its tokens only
        assert env.fake.requests[-1].json["tools"] == [tool]


# -- what a request reads: its bytes, its images, or the context window --------------------------


def _assess(api_name: str, body: dict, headers: dict | None = None) -> Any:
    from blitzclawd.config import fee_table, model_prices, parse_settings
    from blitzclawd.metering.pricing import PriceTable
    from blitzclawd.proxy import apis

    pricing = parse_settings({}).pricing
    table = PriceTable(model_prices(pricing), fees=fee_table(pricing))
    api = {a.name: a for a in (apis.ANTHROPIC_MESSAGES, apis.OPENAI_CHAT, apis.OPENAI_RESPONSES)}
    raw = orjson.dumps(body)
    price = table.get(body["model"])
    return apis.assess(api[api_name], body, raw, price, headers or {}, table, apis.Policy()), raw


def _user(*blocks: dict) -> list[dict]:
    return [{"role": "user", "content": list(blocks)}]


IMAGE = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.webp"}}


@pytest.mark.parametrize(
    ("api", "body", "images", "window"),
    [
        ("anthropic-messages", {**SONNET}, 0, None),
        ("anthropic-messages", {**SONNET, "messages": _user(IMAGE, IMAGE)}, 2, None),
        (
            "anthropic-messages",
            {
                **SONNET,
                "messages": _user(
                    {"type": "tool_result", "tool_use_id": "t", "content": [IMAGE]},
                    {"type": "text", "text": "x"},
                ),
            },
            1,
            None,
        ),
        (
            "anthropic-messages",
            {**SONNET, "messages": _user({"type": "redacted_thinking", "data": "EmwK"})},
            0,
            200_000,
        ),
        (
            "anthropic-messages",
            {**SONNET, "messages": _user({"type": "hologram", "data": "?"})},
            0,
            200_000,
        ),
        (
            "openai-chat",
            {**CHAT, "messages": _user({"type": "file", "file": {"file_id": "file-1"}})},
            0,
            128_000,
        ),
        (
            "openai-responses",
            {**RESPONSES, "input": [{"type": "item_reference", "id": "msg_1"}]},
            0,
            400_000,
        ),
        (
            "openai-responses",
            {
                **RESPONSES,
                "input": [{"type": "reasoning", "encrypted_content": "gAAA", "summary": []}],
            },
            0,
            400_000,
        ),
        (
            "openai-responses",
            {
                **RESPONSES,
                "input": [
                    {
                        "role": "user",
                        "content": [{"type": "input_image", "image_url": "https://x"}],
                    },
                    {"type": "function_call_output", "call_id": "c", "output": "ok"},
                ],
            },
            1,
            None,
        ),
    ],
)
def test_input_bound(api: str, body: dict, images: int, window: int | None) -> None:
    from blitzclawd.metering.pricing import max_input_tokens

    worst, raw = _assess(api, body)
    assert worst.input_bound == (window or max_input_tokens(len(raw), images))


def test_the_1m_beta_widens_the_window_of_server_side_reads() -> None:
    body = {**SONNET, "model": "claude-sonnet-4-5", "messages": _user({"type": "document"})}
    worst, _ = _assess("anthropic-messages", body)
    assert (worst.input_bound, worst.long_ok) == (200_000, False)
    beta = {"anthropic-beta": "interleaved-thinking-2025-05-14, context-1m-2025-08-07"}
    worst, _ = _assess("anthropic-messages", body, beta)
    assert (worst.input_bound, worst.long_ok) == (1_000_000, True)
