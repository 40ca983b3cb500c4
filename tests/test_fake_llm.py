"""The fake Anthropic/OpenAI upstream speaks the real wire format, driven over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson
import pytest

from blitzclawd.testing.fake_llm import FakeLLM, Scenario

ANTHROPIC = {"x-api-key": FakeLLM.anthropic_key, "anthropic-version": "2023-06-01"}
OPENAI = {"authorization": f"Bearer {FakeLLM.openai_key}"}
MESSAGES = [{"role": "user", "content": "Say hi"}]


@asynccontextmanager
async def running(**kwargs: Any) -> AsyncIterator[tuple[FakeLLM, aiohttp.ClientSession]]:
    async with FakeLLM(**kwargs) as fake, aiohttp.ClientSession(base_url=fake.base_url) as http:
        yield fake, http


def anthropic_body(**extra: Any) -> dict[str, Any]:
    return {"model": "claude-sonnet-4-6", "max_tokens": 8192, "messages": MESSAGES, **extra}


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": MESSAGES, **extra}


def sse(raw: bytes) -> list[tuple[str | None, Any]]:
    """Split an SSE body into (event name, data) pairs, the way the SDKs do."""
    out: list[tuple[str | None, Any]] = []
    for block in raw.decode().split("\n\n"):
        if not block:
            continue
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        data = fields["data"]
        out.append((fields.get("event"), data if data == "[DONE]" else orjson.loads(data)))
    return out


async def post(
    http: aiohttp.ClientSession, path: str, body: Any, headers: dict[str, str]
) -> tuple[int, Any, bytes]:
    # Compact JSON, like the SDKs send, so size-derived input_tokens are predictable.
    data, headers = orjson.dumps(body), {**headers, "content-type": "application/json"}
    async with http.post(path, data=data, headers=headers) as resp:
        return resp.status, resp.headers, await resp.read()


# -- Anthropic ---------------------------------------------------------------------------------


async def test_anthropic_non_streaming_message() -> None:
    scenario = Scenario(input_tokens=25, cache_read_tokens=200, cache_write_5m_tokens=100)
    async with running(scenario=scenario) as (fake, http):
        status, headers, raw = await post(http, "/v1/messages", anthropic_body(), ANTHROPIC)
    assert status == 200
    assert headers["request-id"].startswith("req_")
    assert headers["anthropic-ratelimit-requests-remaining"] == "3999"
    assert headers["content-type"].startswith("application/json")
    msg = orjson.loads(raw)
    assert msg["id"].startswith("msg_")
    assert (msg["type"], msg["role"], msg["model"]) == ("message", "assistant", "claude-sonnet-4-6")
    assert (msg["stop_reason"], msg["stop_sequence"]) == ("end_turn", None)
    [block] = msg["content"]
    assert block["type"] == "text" and len(block["text"].split()) == 12
    assert msg["usage"] == {
        "input_tokens": 25,
        "cache_creation_input_tokens": 100,
        "cache_read_input_tokens": 200,
        "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 0},
        "output_tokens": 12,
        "service_tier": "standard",
    }
    assert fake.completed == 1
    [rec] = fake.requests
    assert rec.path == "/v1/messages" and rec.headers["x-api-key"] == FakeLLM.anthropic_key
    assert rec.json == anthropic_body()


async def test_anthropic_stream_event_order_and_cumulative_usage() -> None:
    scenario = Scenario(output_tokens=12, tokens_per_chunk=4, cache_write_1h_tokens=7)
    async with running(scenario=scenario) as (fake, http):
        body = anthropic_body(stream=True)
        status, headers, raw = await post(http, "/v1/messages", body, ANTHROPIC)
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = sse(raw)
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "ping",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == name for name, data in events)
    start = events[0][1]["message"]
    input_tokens = len(orjson.dumps(body)) // 4  # derived from the body's size by default
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["usage"]["input_tokens"] == input_tokens
    assert start["usage"]["cache_creation_input_tokens"] == 7
    assert start["usage"]["cache_creation"]["ephemeral_1h_input_tokens"] == 7
    assert start["usage"]["output_tokens"] == 1
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert len(text.split()) == 12
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"] == {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": 7,
        "cache_read_input_tokens": 0,
        "output_tokens": 12,
    }
    assert fake.completed == 1


async def test_anthropic_max_tokens_caps_output() -> None:
    scenario = Scenario(output_tokens=50, delta_repeats_input=False, ping_every=0)
    async with running(scenario=scenario) as (_, http):
        body = anthropic_body(max_tokens=5, stream=True)
        _, _, raw = await post(http, "/v1/messages", body, ANTHROPIC)
        _, _, plain = await post(http, "/v1/messages", anthropic_body(max_tokens=5), ANTHROPIC)
    events = sse(raw)
    assert [n for n, _ in events].count("ping") == 1  # only the one after content_block_start
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert len(text.split()) == 5
    assert events[-2][1]["delta"]["stop_reason"] == "max_tokens"
    assert events[-2][1]["usage"] == {"output_tokens": 5}
    msg = orjson.loads(plain)
    assert msg["stop_reason"] == "max_tokens" and msg["usage"]["output_tokens"] == 5


async def test_anthropic_mid_stream_error_event() -> None:
    async with running(scenario=Scenario(fail_after_chunks=1)) as (fake, http):
        _, _, raw = await post(http, "/v1/messages", anthropic_body(stream=True), ANTHROPIC)
    events = sse(raw)
    assert [n for n, _ in events] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "error",
    ]
    error = events[-1][1]
    assert error["type"] == "error" and error["error"]["type"] == "overloaded_error"
    assert fake.completed == 0


async def test_anthropic_refusals() -> None:
    async with running() as (fake, http):
        wrong = {**ANTHROPIC, "x-api-key": "sk-ant-nope"}
        status, headers, raw = await post(http, "/v1/messages", anthropic_body(), wrong)
        assert status == 401 and headers["request-id"].startswith("req_")
        body = orjson.loads(raw)
        assert body["type"] == "error" and body["request_id"] == headers["request-id"]
        assert body["error"] == {"type": "authentication_error", "message": "invalid x-api-key"}

        no_version = {"x-api-key": FakeLLM.anthropic_key}
        status, _, raw = await post(http, "/v1/messages", anthropic_body(), no_version)
        assert status == 400
        assert orjson.loads(raw)["error"]["message"] == "anthropic-version: header is required"

        bad = anthropic_body()
        del bad["max_tokens"]
        status, _, raw = await post(http, "/v1/messages", bad, ANTHROPIC)
        assert status == 400
        assert orjson.loads(raw)["error"] == {
            "type": "invalid_request_error",
            "message": "max_tokens: Field required",
        }
        status, _, raw = await post(http, "/v1/messages", anthropic_body(messages="hi"), ANTHROPIC)
        assert status == 400
        assert orjson.loads(raw)["error"]["type"] == "invalid_request_error"
    assert fake.completed == 0 and len(fake.requests) == 4


async def test_anthropic_accepts_bearer_key_like_the_sdk() -> None:
    # anthropic-python 2.x sends the API key as `Authorization: Bearer`, not x-api-key.
    async with running() as (_, http):
        sdk_style = {"authorization": f"Bearer {FakeLLM.anthropic_key}", "anthropic-version": "x"}
        status, _, _ = await post(http, "/v1/messages", anthropic_body(), sdk_style)
        assert status == 200
        sdk_style["authorization"] = "Bearer sk-ant-other"
        status, _, raw = await post(http, "/v1/messages", anthropic_body(), sdk_style)
        assert status == 401 and orjson.loads(raw)["error"]["type"] == "authentication_error"


async def test_set_next_scenarios_are_one_shot_provider_errors() -> None:
    async with running() as (fake, http):
        fake.set_next(Scenario(status=429, retry_after=3), Scenario(status=529))
        status, headers, raw = await post(http, "/v1/messages", anthropic_body(), ANTHROPIC)
        assert (status, headers["retry-after"]) == (429, "3")
        assert orjson.loads(raw)["error"]["type"] == "rate_limit_error"
        status, _, raw = await post(http, "/v1/messages", anthropic_body(), ANTHROPIC)
        assert status == 529 and orjson.loads(raw)["error"]["type"] == "overloaded_error"
        status, _, _ = await post(http, "/v1/messages", anthropic_body(), ANTHROPIC)
        assert status == 200

        fake.set_next(Scenario(status=429))
        status, headers, raw = await post(http, "/v1/chat/completions", chat_body(), OPENAI)
        assert status == 429 and headers["retry-after"] == "1"
        error = orjson.loads(raw)["error"]
        assert (error["type"], error["code"], error["param"]) == (
            "requests",
            "rate_limit_exceeded",
            None,
        )
    assert fake.completed == 1


# -- OpenAI Chat Completions -------------------------------------------------------------------


async def test_chat_non_streaming_and_length_cap() -> None:
    scenario = Scenario(input_tokens=25, cache_read_tokens=200, output_tokens=15)
    async with running(scenario=scenario) as (fake, http):
        status, headers, raw = await post(http, "/v1/chat/completions", chat_body(), OPENAI)
        body = chat_body(max_completion_tokens=4)
        _, _, capped = await post(http, "/v1/chat/completions", body, OPENAI)
    assert status == 200 and headers["x-request-id"].startswith("req_")
    assert headers["x-ratelimit-remaining-requests"] == "9999"
    out = orjson.loads(raw)
    assert out["id"].startswith("chatcmpl-") and out["object"] == "chat.completion"
    assert out["model"] == "gpt-4o" and isinstance(out["created"], int)
    [choice] = out["choices"]
    assert choice["finish_reason"] == "stop" and choice["message"]["role"] == "assistant"
    assert len(choice["message"]["content"].split()) == 15
    usage = out["usage"]
    assert (usage["prompt_tokens"], usage["prompt_tokens_details"]["cached_tokens"]) == (225, 200)
    assert (usage["completion_tokens"], usage["total_tokens"]) == (15, 240)
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 0
    capped_out = orjson.loads(capped)
    assert capped_out["choices"][0]["finish_reason"] == "length"
    assert capped_out["usage"]["completion_tokens"] == 4
    assert fake.completed == 2


@pytest.mark.parametrize("include_usage", [True, False])
async def test_chat_stream_usage_chunk_only_when_asked(include_usage: bool) -> None:
    async with running(scenario=Scenario(cache_read_tokens=3, input_tokens=10)) as (fake, http):
        body = chat_body(stream=True)
        if include_usage:
            body["stream_options"] = {"include_usage": True}
        status, headers, raw = await post(http, "/v1/chat/completions", body, OPENAI)
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert b"event:" not in raw
    events = sse(raw)
    assert events[-1] == (None, "[DONE]")
    chunks = [data for _, data in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    if include_usage:
        *chunks, last = chunks
        assert last["choices"] == []
        assert last["usage"]["prompt_tokens"] == 13
        assert last["usage"]["prompt_tokens_details"]["cached_tokens"] == 3
        assert last["usage"]["completion_tokens"] == 12
        assert all(c["usage"] is None for c in chunks)
    else:
        assert all("usage" not in c for c in chunks)
    assert [c["choices"][0]["finish_reason"] for c in chunks][-2:] == [None, "stop"]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert len(text.split()) == 12
    assert fake.completed == 1


async def test_chat_mid_stream_failure_cuts_without_usage() -> None:
    async with running(scenario=Scenario(fail_after_chunks=2)) as (fake, http):
        body = chat_body(stream=True, stream_options={"include_usage": True})
        status, _, raw = await post(http, "/v1/chat/completions", body, OPENAI)
    assert status == 200
    chunks = [data for _, data in sse(raw)]
    assert "[DONE]" not in chunks
    assert len(chunks) == 3  # the role chunk and two content chunks, nothing after
    assert all(c["usage"] is None and c["choices"][0]["finish_reason"] is None for c in chunks)
    assert fake.completed == 0


async def test_openai_refusals() -> None:
    async with running() as (fake, http):
        wrong = {"authorization": "Bearer sk-wrong-key-123"}
        status, headers, raw = await post(http, "/v1/chat/completions", chat_body(), wrong)
        assert status == 401 and headers["x-request-id"].startswith("req_")
        error = orjson.loads(raw)["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_api_key")
        assert "sk-wrong-key-123" not in error["message"]  # masked, like the real API

        status, _, raw = await post(http, "/v1/chat/completions", {"model": "gpt-4o"}, OPENAI)
        assert status == 400
        error = orjson.loads(raw)["error"]
        assert (error["type"], error["param"]) == ("invalid_request_error", "messages")

        async with http.post("/v1/chat/completions", data=b"{nope", headers=OPENAI) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["type"] == "invalid_request_error"

        body = chat_body(stream_options={"include_usage": True})  # without stream: true
        status, _, _ = await post(http, "/v1/chat/completions", body, OPENAI)
        assert status == 400
    assert fake.completed == 0


# -- OpenAI Responses --------------------------------------------------------------------------


async def test_responses_non_streaming() -> None:
    scenario = Scenario(input_tokens=20, cache_read_tokens=5)
    async with running(scenario=scenario) as (_, http):
        body = {"model": "gpt-5", "input": "Say hi"}
        status, _, raw = await post(http, "/v1/responses", body, OPENAI)
    assert status == 200
    out = orjson.loads(raw)
    assert out["id"].startswith("resp_") and out["object"] == "response"
    assert (out["status"], out["model"]) == ("completed", "gpt-5")
    [item] = out["output"]
    assert (item["type"], item["role"]) == ("message", "assistant")
    assert item["content"][0]["type"] == "output_text"
    assert len(item["content"][0]["text"].split()) == 12
    assert out["usage"] == {
        "input_tokens": 25,
        "input_tokens_details": {"cached_tokens": 5},
        "output_tokens": 12,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 37,
    }


async def test_responses_stream_events() -> None:
    async with running(scenario=Scenario(output_tokens=10, input_tokens=8)) as (fake, http):
        body = {"model": "gpt-5", "input": [{"role": "user", "content": "hi"}], "stream": True}
        _, _, raw = await post(http, "/v1/responses", body, OPENAI)
        capped = {**body, "max_output_tokens": 3}
        _, _, raw_capped = await post(http, "/v1/responses", capped, OPENAI)
    events = sse(raw)
    names = [n for n, _ in events]
    assert names == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 3,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert all(d["type"] == n for n, d in events)
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
    text = "".join(d["delta"] for n, d in events if n == "response.output_text.delta")
    assert len(text.split()) == 10 and events[7][1]["text"] == text
    final = events[-1][1]["response"]
    assert final["status"] == "completed" and final["output"][0]["content"][0]["text"] == text
    assert final["usage"]["input_tokens"] == 8 and final["usage"]["output_tokens"] == 10
    assert events[0][1]["response"]["status"] == "in_progress"

    capped_events = sse(raw_capped)
    assert capped_events[-1][0] == "response.incomplete"
    final = capped_events[-1][1]["response"]
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["usage"]["output_tokens"] == 3
    assert fake.completed == 2


async def test_responses_mid_stream_failure_cuts() -> None:
    async with running(scenario=Scenario(fail_after_chunks=1)) as (fake, http):
        body = {"model": "gpt-5", "input": "hi", "stream": True}
        _, _, raw = await post(http, "/v1/responses", body, OPENAI)
    assert sse(raw)[-1][0] == "response.output_text.delta"
    assert fake.completed == 0


# -- both --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        ("/v1/messages", anthropic_body(stream=True), ANTHROPIC),
        ("/v1/chat/completions", chat_body(stream=True), OPENAI),
        ("/v1/responses", {"model": "gpt-5", "input": "hi", "stream": True}, OPENAI),
    ],
)
async def test_dropped_connection_is_a_payload_error(
    path: str, body: dict[str, Any], headers: dict[str, str]
) -> None:
    async with running(scenario=Scenario(drop_connection_after_chunks=2)) as (fake, http):
        async with http.post(path, json=body, headers=headers) as resp:
            assert resp.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()
        with pytest.raises(aiohttp.ServerDisconnectedError):  # non-streaming: no answer at all
            await post(http, path, {**body, "stream": False}, headers)
    assert fake.completed == 0


async def test_slow_stream_completes() -> None:
    scenario = Scenario(output_tokens=6, tokens_per_chunk=1, chunk_delay=0.005)
    async with running(scenario=scenario) as (fake, http):
        _, _, raw = await post(http, "/v1/messages", anthropic_body(stream=True), ANTHROPIC)
    assert sse(raw)[-1][0] == "message_stop"
    assert fake.completed == 1


async def test_scenario_header_steers_one_request() -> None:
    async with running() as (fake, http):
        steer = {**OPENAI, "x-fake-scenario": '{"output_tokens": 7, "input_tokens": 1}'}
        _, _, raw = await post(http, "/v1/chat/completions", chat_body(), steer)
        out = orjson.loads(raw)
        assert len(out["choices"][0]["message"]["content"].split()) == 7
        assert out["usage"]["prompt_tokens"] == 1
        steer = {**ANTHROPIC, "x-fake-scenario": '{"status": 529}'}
        status, _, _ = await post(http, "/v1/messages", anthropic_body(), steer)
        assert status == 529
        steer = {**ANTHROPIC, "x-fake-scenario": '{"no_such_field": 1}'}
        status, _, raw = await post(http, "/v1/messages", anthropic_body(), steer)
        assert status == 400 and orjson.loads(raw)["type"] == "error"
        _, _, raw = await post(http, "/v1/messages", anthropic_body(), ANTHROPIC)
        assert orjson.loads(raw)["usage"]["output_tokens"] == 12  # the default is untouched
    assert fake.scenario == Scenario()


async def test_models_and_bounded_recording() -> None:
    async with running(record_limit=2) as (fake, http):
        async with http.get("/v1/models", headers=OPENAI) as resp:
            listing = await resp.json()
        assert listing["object"] == "list" and {"id", "object"} <= set(listing["data"][0])
        async with http.get("/v1/models", headers=ANTHROPIC) as resp:
            listing = await resp.json()
        assert listing["has_more"] is False and listing["data"][0]["type"] == "model"
        async with http.get("/v1/models", headers={"x-api-key": "bad"}) as resp:
            assert resp.status == 401
            assert (await resp.json())["error"]["type"] == "authentication_error"
        async with http.get("/_fake/stats") as resp:
            assert await resp.json() == {"received": 3, "completed": 0}
    assert len(fake.requests) == 2 and fake.requests[-1].headers["x-api-key"] == "bad"
