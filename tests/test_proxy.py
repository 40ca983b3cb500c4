"""The metering proxy end to end: real HTTP in, the fake upstream behind, a real ledger.

Every cost below is computed by hand from WIRE.md's list prices and the 1.5 markup:
cost = ceil(sum(tokens x USD per Mtok) x 1.5) micro-USD.
"""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest
from conftest import notice_of

from blitzclawd import ledger
from blitzclawd.testing import seed
from blitzclawd.testing.fake_llm import Scenario

ANTHROPIC_BODY = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 1024,
    "messages": [{"role": "user", "content": "Say hi"}],
}
CHAT_BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Say hi"}]}
RESPONSES_BODY = {"model": "gpt-4o", "input": "Say hi"}


async def usage_rows(env) -> list:
    return await env.pool.fetch("SELECT * FROM usage_logs ORDER BY id")


async def read_all(resp) -> bytes:
    async with resp:
        return await resp.read()


def sse_events(raw: bytes) -> list[tuple[str | None, dict | str]]:
    out = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        event, data = None, None
        for line in block.split("\n"):
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        out.append((event, data if data == "[DONE]" else orjson.loads(data)))
    return out


# -- counters and costs, to the micro-dollar ------------------------------------------------------

ANTHROPIC_SCENARIO = Scenario(
    input_tokens=1000,
    output_tokens=200,
    cache_read_tokens=300,
    cache_write_5m_tokens=100,
    cache_write_1h_tokens=50,
    tokens_per_chunk=7,
)
# 1000x3 + 100x3.75 + 50x6 + 300x0.30 + 200x15 = 6765 micro-USD at list; x1.5 = 10147.5 -> 10148
ANTHROPIC_COST = 10148
OPENAI_SCENARIO = Scenario(input_tokens=1000, output_tokens=200, cache_read_tokens=300)
# gpt-4o: 1000x2.50 + 300x1.25 + 200x10 = 4875 at list; x1.5 = 7312.5 -> 7313
OPENAI_COST = 7313


@pytest.mark.parametrize("stream", [False, True])
async def test_anthropic_counters_and_cost(proxy_env, stream: bool) -> None:
    before = await proxy_env.balance()
    proxy_env.fake.set_next(ANTHROPIC_SCENARIO)
    resp = await proxy_env.post("/v1/messages", {**ANTHROPIC_BODY, "stream": stream})
    body = await read_all(resp)
    assert resp.status == 200, body
    assert resp.headers["request-id"].startswith("req_")  # upstream's id reaches the client
    assert "anthropic-ratelimit-requests-limit" in resp.headers
    await proxy_env.settled()
    (row,) = await usage_rows(proxy_env)
    assert (
        row["input_tokens"],
        row["output_tokens"],
        row["cache_read_tokens"],
        row["cache_write_5m_tokens"],
        row["cache_write_1h_tokens"],
    ) == (1000, 200, 300, 100, 50)
    assert row["cost_micros"] == ANTHROPIC_COST
    assert row["api"] == "anthropic-messages" and row["model"] == "claude-sonnet-4-6"
    assert row["upstream_request_id"] == resp.headers["request-id"]
    assert row["interrupted"] is False and row["status_code"] == 200
    assert str(row["request_id"]) == resp.headers["X-BlitzClaw-Request-Id"]
    assert await proxy_env.balance() == before - ANTHROPIC_COST
    # The upstream got our master key, never the instance's credentials.
    sent = proxy_env.fake.requests[-1]
    assert sent.headers["x-api-key"] == proxy_env.fake.anthropic_key
    assert "x-blitzclaw-secret" not in sent.headers


async def test_an_upstream_cookie_never_rides_along_on_another_request(database: str) -> None:
    """One upstream session serves every tenant: cookies the upstream sets (as the real APIs'
    CDN does) are neither kept for later requests nor passed to the client. (The upstream is
    reached by name: a cookie jar would refuse cookies of a bare IP address anyway.)"""
    from conftest import running_proxy_env

    async with running_proxy_env(database, upstream_host="localhost") as env:
        env.fake.set_cookie = "__cf_bm=tenant-a; path=/; HttpOnly"
        first = await env.post("/v1/messages", ANTHROPIC_BODY)
        assert first.status == 200
        await read_all(first)
        assert "Set-Cookie" not in first.headers
        other = await seed.create_instance(env.pool, env.instance.user_id)
        second = await env.post("/v1/messages", ANTHROPIC_BODY, instance=other)
        assert second.status == 200
        await read_all(second)
        assert len(env.fake.requests) == 2
        assert "cookie" not in env.fake.requests[-1].headers
        await env.settled()


@pytest.mark.parametrize("stream", [False, True])
async def test_openai_chat_counters_and_cost(proxy_env, stream: bool) -> None:
    before = await proxy_env.balance()
    proxy_env.fake.set_next(OPENAI_SCENARIO)
    resp = await proxy_env.post("/v1/chat/completions", {**CHAT_BODY, "stream": stream})
    raw = await read_all(resp)
    assert resp.status == 200, raw
    await proxy_env.settled()
    (row,) = await usage_rows(proxy_env)
    # prompt_tokens (1300) includes the 300 cached: only 1000 are billed as plain input.
    assert (row["input_tokens"], row["cache_read_tokens"], row["output_tokens"]) == (1000, 300, 200)
    assert row["cost_micros"] == OPENAI_COST
    assert await proxy_env.balance() == before - OPENAI_COST
    if stream:
        events = sse_events(raw)
        # We asked the upstream for the usage chunk; the client, who did not, never sees it.
        assert all(data == "[DONE]" or data["choices"] for _, data in events)
        # Nor the `"usage": null` asking adds to every chunk: OpenAI sends no usage key then.
        assert all(data == "[DONE]" or "usage" not in data for _, data in events)
        assert proxy_env.fake.requests[-1].json["stream_options"] == {"include_usage": True}


async def test_openai_chat_stream_keeps_usage_chunk_the_client_asked_for(proxy_env) -> None:
    proxy_env.fake.set_next(OPENAI_SCENARIO)
    body = {**CHAT_BODY, "stream": True, "stream_options": {"include_usage": True}}
    resp = await proxy_env.post("/v1/chat/completions", body)
    events = sse_events(await read_all(resp))
    usage_chunks = [d for _, d in events if d != "[DONE]" and not d["choices"]]
    assert len(usage_chunks) == 1 and usage_chunks[0]["usage"]["prompt_tokens"] == 1300
    await proxy_env.settled()
    assert (await usage_rows(proxy_env))[0]["cost_micros"] == OPENAI_COST


@pytest.mark.parametrize("stream", [False, True])
async def test_openai_responses_counters_and_cost(proxy_env, stream: bool) -> None:
    proxy_env.fake.set_next(OPENAI_SCENARIO)
    resp = await proxy_env.post("/v1/responses", {**RESPONSES_BODY, "stream": stream})
    assert resp.status == 200, await read_all(resp)
    await read_all(resp)
    await proxy_env.settled()
    (row,) = await usage_rows(proxy_env)
    assert (row["input_tokens"], row["cache_read_tokens"], row["output_tokens"]) == (1000, 300, 200)
    assert row["cost_micros"] == OPENAI_COST and row["api"] == "openai-responses"


async def test_wire_md_cross_checks(proxy_env) -> None:
    # gpt-4o, 225 prompt tokens of which 200 cached, 15 output: $0.0004625 at list.
    proxy_env.fake.set_next(Scenario(input_tokens=25, cache_read_tokens=200, output_tokens=15))
    await read_all(await proxy_env.post("/v1/chat/completions", {**CHAT_BODY, "stream": True}))
    # claude-sonnet-4-5: 25 input, 100 cache write (5m), 200 cache read, 15 output: $0.000735.
    proxy_env.fake.set_next(
        Scenario(
            input_tokens=25, cache_write_5m_tokens=100, cache_read_tokens=200, output_tokens=15
        )
    )
    body = {**ANTHROPIC_BODY, "model": "claude-sonnet-4-5", "stream": True}
    await read_all(await proxy_env.post("/v1/messages", body))
    await proxy_env.settled()
    claude, gpt = sorted(await usage_rows(proxy_env), key=lambda r: r["api"])
    assert gpt["cost_micros"] == 694  # 462.5 x 1.5 = 693.75, rounded up once
    assert claude["cost_micros"] == 1103  # 735 x 1.5 = 1102.5, rounded up once


# -- authentication and refusals -----------------------------------------------------------------


async def test_credentials_in_headers_x_api_key_or_bearer(proxy_env) -> None:
    inst = proxy_env.instance
    for headers in (
        inst.headers,
        {"x-api-key": inst.api_key},
        {"Authorization": f"Bearer {inst.api_key}"},
    ):
        resp = await proxy_env.http.post(
            proxy_env.url + "/v1/messages",
            json=ANTHROPIC_BODY,
            headers={**headers, "anthropic-version": "2023-06-01"},
        )
        assert resp.status == 200, await read_all(resp)
        await read_all(resp)


async def error_of(resp) -> tuple[int, dict]:
    return resp.status, orjson.loads(await read_all(resp))


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"X-BlitzClaw-Instance": str(uuid.uuid4()), "X-BlitzClaw-Secret": "x" * 43}, 401),
        ({"x-api-key": "sk-ant-not-ours"}, 401),
    ],
)
async def test_bad_credentials_are_401_in_each_providers_shape(proxy_env, headers, status) -> None:
    resp = await proxy_env.http.post(
        proxy_env.url + "/v1/messages", json=ANTHROPIC_BODY, headers=headers
    )
    code, body = await error_of(resp)
    assert code == status
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
    resp = await proxy_env.http.post(
        proxy_env.url + "/v1/chat/completions", json=CHAT_BODY, headers=headers
    )
    code, body = await error_of(resp)
    assert code == status and body["error"]["code"] == "invalid_api_key"
    assert proxy_env.fake.received == 0  # nothing was forwarded


async def test_wrong_secret_of_a_real_instance_is_401(proxy_env) -> None:
    inst = proxy_env.instance
    headers = {"X-BlitzClaw-Instance": inst.id, "X-BlitzClaw-Secret": "y" * 43}
    resp = await proxy_env.http.post(
        proxy_env.url + "/v1/messages", json=ANTHROPIC_BODY, headers=headers
    )
    assert (await error_of(resp))[0] == 401


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        ("stopped", 403, "permission_error"),
        ("error", 403, "permission_error"),
        ("deleted", 404, "not_found_error"),
    ],
)
async def test_instance_states_are_refused(proxy_env, status, code, kind) -> None:
    inst = await seed.create_instance(proxy_env.pool, proxy_env.instance.user_id, status=status)
    resp = await proxy_env.post("/v1/messages", ANTHROPIC_BODY, instance=inst)
    got, body = await error_of(resp)
    assert (got, body["error"]["type"]) == (code, kind)
    assert proxy_env.fake.received == 0


async def test_a_paused_instance_is_told_to_top_up_in_its_chat(proxy_env) -> None:
    inst = await seed.create_instance(proxy_env.pool, proxy_env.instance.user_id, status="paused")
    resp = await proxy_env.post("/v1/messages", ANTHROPIC_BODY, instance=inst)
    body = orjson.loads(await read_all(resp))
    assert notice_of(resp) == "paused"
    assert "Top up at http://localhost:3000/dashboard/topup" in body["content"][0]["text"]
    assert proxy_env.fake.received == 0


async def test_instance_with_its_own_key_is_not_served(proxy_env) -> None:
    inst = await seed.create_instance(proxy_env.pool, proxy_env.instance.user_id)
    await proxy_env.pool.execute(
        "UPDATE instances SET use_own_api_key = true, own_api_provider = 'anthropic', "
        "own_api_key_enc = '\\x00' WHERE id = $1",
        uuid.UUID(inst.id),
    )
    got, body = await error_of(await proxy_env.post("/v1/messages", ANTHROPIC_BODY, instance=inst))
    assert got == 403 and "own API key" in body["error"]["message"]


async def test_unknown_model_and_bad_bodies_are_refused_before_forwarding(proxy_env) -> None:
    got, body = await error_of(
        await proxy_env.post("/v1/messages", {**ANTHROPIC_BODY, "model": "claude-9"})
    )
    assert got == 404 and "claude-9" in body["error"]["message"]
    # An OpenAI model on the Anthropic endpoint is not available there either.
    got, _ = await error_of(
        await proxy_env.post("/v1/messages", {**ANTHROPIC_BODY, "model": "gpt-4o"})
    )
    assert got == 404
    got, body = await error_of(
        await proxy_env.post("/v1/messages", {**ANTHROPIC_BODY, "max_tokens": -5})
    )
    assert got == 400 and "max_tokens" in body["error"]["message"]
    resp = await proxy_env.http.post(
        proxy_env.url + "/v1/chat/completions",
        data=b"{not json",
        headers={**proxy_env.instance.headers, "content-type": "application/json"},
    )
    got, body = await error_of(resp)
    assert got == 400 and body["error"]["type"] == "invalid_request_error"
    assert proxy_env.fake.received == 0
    assert await proxy_env.pool.fetchval("SELECT count(*) FROM reservations") == 0


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v1/messages", ANTHROPIC_BODY, 401),
        ("/v1/messages", ANTHROPIC_BODY, 403),
        ("/v1/chat/completions", CHAT_BODY, 401),
    ],
)
async def test_an_upstream_refusing_our_key_is_not_blamed_on_the_instance(
    proxy_env, path, body, status
) -> None:
    """Relayed as is, OpenClaw would disable the instance's provider key for up to an hour and
    stay silent after we fixed ours: the instance hears a short, retryable 502 instead."""
    before = await proxy_env.balance()
    proxy_env.fake.set_next(Scenario(status=status))
    got, answer = await error_of(await proxy_env.post(path, body))
    assert got == 502, answer
    kind = answer["error"]["type"]
    assert kind == ("api_error" if path == "/v1/messages" else "server_error")
    assert "unavailable" in answer["error"]["message"]
    await proxy_env.settled()
    assert await proxy_env.balance() == before


async def test_upstream_errors_reach_the_client_unchanged_and_charge_nothing(proxy_env) -> None:
    before = await proxy_env.balance()
    proxy_env.fake.set_next(Scenario(status=529))
    got, body = await error_of(await proxy_env.post("/v1/messages", ANTHROPIC_BODY))
    assert got == 529 and body["error"]["type"] == "overloaded_error"
    proxy_env.fake.set_next(Scenario(status=429))
    resp = await proxy_env.post("/v1/chat/completions", {**CHAT_BODY, "stream": True})
    assert resp.headers.get("retry-after") == "1"
    got, body = await error_of(resp)
    assert got == 429 and body["error"]["code"] == "rate_limit_exceeded"
    await proxy_env.settled()  # both voided: their records are gone, nothing was charged
    assert await proxy_env.balance() == before
    assert await usage_rows(proxy_env) == []
    assert proxy_env.fake.received == 2


async def test_models_lists_the_price_table(proxy_env) -> None:
    resp = await proxy_env.http.get(
        proxy_env.url + "/v1/models",
        headers={**proxy_env.instance.headers, "anthropic-version": "2023-06-01"},
    )
    ids = [m["id"] for m in orjson.loads(await read_all(resp))["data"]]
    assert "claude-sonnet-4-6" in ids and "gpt-4o" in ids
    resp = await proxy_env.http.get(proxy_env.url + "/v1/models")
    assert resp.status == 401


# -- interrupted streams ---------------------------------------------------------------------------


async def test_midstream_error_is_relayed_and_billed_on_tokens_seen(proxy_env) -> None:
    proxy_env.fake.set_next(
        Scenario(input_tokens=500, output_tokens=40, tokens_per_chunk=5, fail_after_chunks=3)
    )
    raw = await read_all(await proxy_env.post("/v1/messages", {**ANTHROPIC_BODY, "stream": True}))
    assert (b"event: error" in raw) and (b"overloaded_error" in raw)
    await proxy_env.settled()
    (row,) = await usage_rows(proxy_env)
    assert row["interrupted"] is True
    assert row["input_tokens"] == 500 and row["output_tokens"] >= 15  # 3 chunks x 5 seen
    assert row["cost_micros"] > 0


async def test_openai_stream_cut_without_usage_is_never_billed_at_zero(proxy_env) -> None:
    proxy_env.fake.set_next(
        Scenario(input_tokens=500, output_tokens=40, tokens_per_chunk=5, fail_after_chunks=4)
    )
    await read_all(await proxy_env.post("/v1/chat/completions", {**CHAT_BODY, "stream": True}))
    await proxy_env.settled()
    (row,) = await usage_rows(proxy_env)
    assert row["interrupted"] is True
    assert row["output_tokens"] > 0 and row["input_tokens"] > 0 and row["cost_micros"] > 0


async def test_dropped_upstream_connection_is_billed_on_tokens_seen(proxy_env) -> None:
    proxy_env.fake.set_next(
        Scenario(
            input_tokens=100, output_tokens=40, tokens_per_chunk=5, drop_connection_after_chunks=2
        )
    )
    raw = await read_all(await proxy_env.post("/v1/messages", {**ANTHROPIC_BODY, "stream": True}))
    assert b"event: error" in raw  # told the client, the way Anthropic would
    await proxy_env.settled()
    (row,) = await usage_rows(proxy_env)
    assert row["interrupted"] is True and row["output_tokens"] >= 10


async def test_client_leaving_midstream_is_billed_on_tokens_seen(proxy_env) -> None:
    proxy_env.fake.set_next(
        Scenario(input_tokens=100, output_tokens=400, tokens_per_chunk=4, chunk_delay=0.02)
    )
    resp = await proxy_env.post("/v1/messages", {**ANTHROPIC_BODY, "stream": True})
    seen = 0
    async for _chunk in resp.content.iter_any():
        seen += 1
        if seen >= 3:
            break
    resp.close()  # the client hangs up mid-stream
    await proxy_env.settled(deadline=20)
    (row,) = await usage_rows(proxy_env)
    assert row["interrupted"] is True
    assert 0 < row["output_tokens"] < 400


# -- money: admission under concurrency, depletion, resume, limits --------------------------------


async def test_concurrent_requests_cannot_overdraw(proxy_env) -> None:
    """$10.50 balance, $10 minimum, 200 simultaneous requests of ~$0.10 each: exactly 5 pass."""
    user = await seed.create_user(proxy_env.pool)
    await seed.credit(proxy_env.pool, user, 10_500_000)
    inst = await seed.create_instance(proxy_env.pool, user, msgs_per_hour=0)
    proxy = proxy_env.daemon.supervisor.child("proxy")
    price = proxy.prices.get("claude-sonnet-4-6")
    body = {**ANTHROPIC_BODY, "max_tokens": 2500, "stream": True}
    from blitzclawd.metering.pricing import max_input_tokens

    reserve = proxy.prices.reserve_micros(
        price,
        input_tokens_estimate=max_input_tokens(len(orjson.dumps(body))),
        max_output_tokens=2500,
    )
    # The client's JSON has a few more bytes (spaces): a few more micro-USD, still in range.
    assert 5 * (reserve + 100) <= 500_000 < 6 * reserve  # each reserves just under $0.10
    # Slow answers (2 s) keep the admitted five in flight while the other 195 knock, even on a
    # busy machine: their holds are not released before every request has been answered.
    proxy_env.fake.scenario = Scenario(
        input_tokens=50, output_tokens=10, tokens_per_chunk=5, chunk_delay=1.0
    )
    responses = await asyncio.gather(
        *(proxy_env.post("/v1/messages", body, instance=inst) for _ in range(200))
    )
    bodies = await asyncio.gather(*(read_all(r) for r in responses))
    statuses = [r.status for r in responses]
    told = [notice_of(r) for r in responses]
    assert statuses.count(200) == 200 and told.count(None) == 5 and told.count("balance") == 195
    refused = notice_text("/v1/messages", bodies[told.index("balance")])
    assert "balance is too low for this message (it may cost up to $0.10, and $10.00" in refused
    await proxy_env.settled()
    costs = await proxy_env.pool.fetchval(
        "SELECT sum(cost_micros) FROM usage_logs WHERE user_id = $1", uuid.UUID(user)
    )
    assert (
        await proxy_env.pool.fetchval(
            "SELECT count(*) FROM usage_logs WHERE user_id = $1", uuid.UUID(user)
        )
        == 5
    )
    assert await proxy_env.balance(user) == 10_500_000 - costs
    # The daemon's lease holds what the five did not spend: the balance minus that hold is
    # still the minimum, and reserved is exactly the lease (the trigger's invariant).
    reserved, lease = await proxy_env.pool.fetchrow(
        "SELECT b.reserved_micros, (SELECT sum(amount_micros) FROM balance_leases l "
        "WHERE l.user_id = b.user_id) FROM balances b WHERE b.user_id = $1",
        uuid.UUID(user),
    )
    assert reserved == lease
    assert await proxy_env.balance(user) - reserved >= 10_000_000
    # Given back when idle: the available balance is whole again.
    await proxy.leases.release_idle(0)
    assert (
        await proxy_env.pool.fetchval(
            "SELECT reserved_micros FROM balances WHERE user_id = $1", uuid.UUID(user)
        )
        == 0
    )


async def test_depletion_pauses_and_a_credit_resumes(proxy_env) -> None:
    user = await seed.create_user(proxy_env.pool)
    await seed.credit(proxy_env.pool, user, 10_050_000)  # $0.05 above the minimum
    inst = await seed.create_instance(proxy_env.pool, user)
    # Admission holds the worst case, so only a prompt far larger than estimated can take the
    # balance under the minimum: 20,000 input tokens cost $0.09 at 1.5x, above the $0.05 margin.
    proxy_env.fake.set_next(Scenario(input_tokens=20_000, output_tokens=100))
    body = {**ANTHROPIC_BODY, "max_tokens": 100}
    resp = await proxy_env.post("/v1/messages", body, instance=inst)
    assert resp.status == 200, await read_all(resp)
    await read_all(resp)
    await proxy_env.settled()
    assert await proxy_env.balance(user) < 10_000_000
    status = await proxy_env.pool.fetchval(
        "SELECT status FROM instances WHERE id = $1", uuid.UUID(inst.id)
    )
    assert status == "paused"
    resp = await proxy_env.post("/v1/messages", ANTHROPIC_BODY, instance=inst)
    await read_all(resp)
    assert notice_of(resp) == "paused"
    # A credit through the ledger brings the user back over the minimum: resumed.
    adjusted = await ledger.adjust(
        proxy_env.pool, ledger.Entry(user, 5_000_000, "topup", "test", "topup:test-1"), 10_000_000
    )
    assert adjusted.outcome == "applied" and adjusted.resumed == 1
    resp = await proxy_env.post("/v1/messages", ANTHROPIC_BODY, instance=inst)
    assert resp.status == 200 and notice_of(resp) is None
    await read_all(resp)


def notice_text(path: str, raw: bytes) -> str:
    """What the client shows of a notice, read the way its SDK assembles the answer."""
    if raw.startswith(b"{"):
        body = orjson.loads(raw)
        if path == "/v1/messages":
            return body["content"][0]["text"]
        if path == "/v1/chat/completions":
            return body["choices"][0]["message"]["content"]
        return body["output"][0]["content"][0]["text"]
    text = ""
    for _event, data in sse_events(raw):
        if not isinstance(data, dict):
            continue
        if data.get("type") == "content_block_delta":
            text += data["delta"]["text"]
        elif data.get("type") == "response.output_text.delta":
            text += data["delta"]
        elif data.get("object") == "chat.completion.chunk":
            assert "usage" not in data  # the client did not ask for usage
            text += "".join(c["delta"].get("content") or "" for c in data["choices"])
    return text


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_the_hourly_limit_is_told_in_the_chat_and_never_billed(proxy_env, stream) -> None:
    inst = await seed.create_instance(proxy_env.pool, proxy_env.instance.user_id, msgs_per_hour=2)
    for _ in range(2):
        await read_all(await proxy_env.post("/v1/messages", ANTHROPIC_BODY, instance=inst))
    await proxy_env.settled()
    forwarded, before = proxy_env.fake.received, await proxy_env.balance()
    for path, body in (
        ("/v1/messages", ANTHROPIC_BODY),
        ("/v1/chat/completions", CHAT_BODY),
        ("/v1/responses", RESPONSES_BODY),
    ):
        resp = await proxy_env.post(path, {**body, "stream": stream}, instance=inst)
        raw = await read_all(resp)
        assert notice_of(resp) == "messages_per_hour", raw
        assert resp.headers["content-type"].startswith(
            "text/event-stream" if stream else "application/json"
        )
        assert "retry-after" not in resp.headers
        text = notice_text(path, raw)
        assert "this hour's limit of 2 messages" in text and " UTC)" in text, text
    # Nothing forwarded, billed or counted for them.
    await proxy_env.settled()
    assert proxy_env.fake.received == forwarded and await proxy_env.balance() == before
    logged = await proxy_env.pool.fetchval(
        "SELECT count(*) FROM usage_logs WHERE instance_id = $1", uuid.UUID(inst.id)
    )
    assert logged == 2


async def test_the_daily_token_limit_is_told_in_the_chat(proxy_env) -> None:
    inst = await seed.create_instance(
        proxy_env.pool, proxy_env.instance.user_id, tokens_per_day=500
    )
    proxy_env.fake.set_next(Scenario(input_tokens=400, output_tokens=200))
    resp = await proxy_env.post("/v1/messages", ANTHROPIC_BODY, instance=inst)
    assert resp.status == 200
    await read_all(resp)
    await proxy_env.settled()
    body = {**CHAT_BODY, "stream": True, "stream_options": {"include_usage": True}}
    resp = await proxy_env.post("/v1/chat/completions", body, instance=inst)
    raw = await read_all(resp)
    assert notice_of(resp) == "tokens_per_day"
    chunks = [d for _, d in sse_events(raw) if isinstance(d, dict)]
    # Asked for usage: every chunk says null but the last, which reports nothing used.
    assert chunks[-1]["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    assert all(c["usage"] is None for c in chunks[:-1])
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1])
    assert "today's allowance of 500 tokens" in text and "midnight UTC" in text


async def test_settlement_is_idempotent_on_the_request_id(proxy_env) -> None:
    from blitzclawd import ledger
    from blitzclawd.runtime.messages import Settlement

    await read_all(await proxy_env.post("/v1/messages", ANTHROPIC_BODY))
    await proxy_env.settled()
    (row,) = await usage_rows(proxy_env)
    before = await proxy_env.balance()
    again = Settlement(
        str(row["request_id"]),
        proxy_env.instance.user_id,
        proxy_env.instance.id,
        "anthropic-messages",
        "claude-sonnet-4-6",
        cost_micros=999_999,
    )
    (result,) = await ledger.settle(proxy_env.pool, [again], 10_000_000)
    assert result.outcome == "duplicate"
    assert await proxy_env.balance() == before
    assert len(await usage_rows(proxy_env)) == 1


async def test_a_rotated_instance_secret_is_honoured_at_once(proxy_env) -> None:
    from blitzclawd import credentials

    inst = proxy_env.instance
    await read_all(await proxy_env.post("/v1/messages", ANTHROPIC_BODY))  # cached now
    new_secret = credentials.new_secret()
    await proxy_env.pool.execute(
        "UPDATE instances SET secret_hash = $2 WHERE id = $1",
        uuid.UUID(inst.id),
        credentials.hash_secret(new_secret),
    )
    rotated = seed.SeededInstance(inst.id, inst.user_id, new_secret)
    resp = await proxy_env.post("/v1/messages", ANTHROPIC_BODY, instance=rotated)
    assert resp.status == 200, await read_all(resp)
    await read_all(resp)
    got, _ = await error_of(await proxy_env.post("/v1/messages", ANTHROPIC_BODY))
    assert got == 401  # the old secret no longer works
