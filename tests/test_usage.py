"""Usage extraction from Anthropic and OpenAI responses, streamed and not (WIRE.md shapes)."""

from __future__ import annotations

from fractions import Fraction

import orjson
import pytest

from blitzclawd.metering.pricing import PriceTable, Usage, default_prices
from blitzclawd.metering.sse import SSEParser
from blitzclawd.metering.usage import (
    AnthropicStreamMeter,
    OpenAIChatStreamMeter,
    OpenAIResponsesStreamMeter,
    anthropic_usage,
    openai_chat_usage,
    openai_responses_usage,
)

TABLE = PriceTable(default_prices())


def sse(*events: tuple[str | None, object]) -> bytes:
    """Serialise (event name, payload) pairs as an upstream would; bytes payloads go raw."""
    out = []
    for name, payload in events:
        data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        out.append((f"event: {name}\n".encode() if name else b"") + b"data: " + data + b"\n\n")
    return b"".join(out)


# --- Anthropic ----------------------------------------------------------------------------------

A_START = {
    "type": "message_start",
    "message": {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": "claude-sonnet-4-5-20250929",
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {
            "input_tokens": 25,
            "cache_creation_input_tokens": 100,
            "cache_read_input_tokens": 200,
            "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 0},
            "output_tokens": 1,
        },
    },
}


def a_text(text: str) -> tuple[str, dict]:
    return (
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
    )


A_STREAM = sse(
    ("message_start", A_START),
    ("ping", {"type": "ping"}),
    (
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ),
    a_text("Hello"),
    ("ping", {"type": "ping"}),
    a_text(", world!"),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": None, "stop_sequence": None},
            "usage": {"output_tokens": 10},
        },
    ),
    (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {
                "input_tokens": 25,
                "cache_creation_input_tokens": 100,
                "cache_read_input_tokens": 200,
                "output_tokens": 15,
            },
        },
    ),
    ("some_future_event", {"type": "some_future_event", "x": [1, 2]}),
    ("message_stop", {"type": "message_stop"}),
)

SONNET_735 = Usage(
    input_tokens=25, cache_write_5m_tokens=100, cache_read_tokens=200, output_tokens=15
)


def meter_anthropic(stream: bytes, chunks: int | None = None) -> AnthropicStreamMeter:
    meter = AnthropicStreamMeter()
    parser = SSEParser()
    pieces = [stream] if chunks is None else [stream[:chunks], stream[chunks:]]
    for piece in pieces:
        for name, data in parser.feed(piece):
            meter.feed(name, data)
    return meter


def test_anthropic_stream_full() -> None:
    meter = meter_anthropic(A_STREAM)
    # message_delta is cumulative: the last output_tokens (15) wins, never 1 + 10 + 15.
    assert meter.usage == SONNET_735
    assert meter.model == "claude-sonnet-4-5-20250929"
    assert meter.upstream_id == "msg_01XFDUDYJgAACzvnptvVoYEL"
    assert meter.completed and meter.usage_reported and meter.saw_tokens
    assert meter.error is None
    assert meter.approx_output_tokens == 4  # "Hello, world!" = 13 chars -> ceil(13 / 4)
    assert meter.billable_usage(input_tokens_estimate=999) == SONNET_735
    price = TABLE.get(meter.model)
    assert price is not None and price.model == "claude-sonnet-4-5"
    assert TABLE.list_cost(price, meter.usage) == Fraction(735)  # WIRE.md: $0.000735
    assert TABLE.cost_micros(price, meter.usage) == 1103


def test_anthropic_stream_any_split_gives_same_usage() -> None:
    for i in range(0, len(A_STREAM) + 1, 3):
        meter = meter_anthropic(A_STREAM, chunks=i)
        assert (meter.usage, meter.completed) == (SONNET_735, True), i


def test_anthropic_usage_so_far_before_message_delta() -> None:
    meter = AnthropicStreamMeter()
    meter.feed("message_start", orjson.dumps(A_START))
    assert meter.usage == Usage(
        input_tokens=25, cache_write_5m_tokens=100, cache_read_tokens=200, output_tokens=1
    )
    assert not meter.completed and not meter.usage_reported


def test_anthropic_mid_stream_overloaded_error() -> None:
    stream = sse(
        ("message_start", A_START),
        a_text("Hello, wor"),
        (
            "error",
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        ),
    )
    meter = meter_anthropic(stream)
    assert meter.error == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    assert not meter.completed and not meter.usage_reported
    assert meter.usage.output_tokens == 1  # only message_start's
    assert meter.approx_output_tokens == 3  # 10 chars -> ceil(10 / 4)
    # Interrupted: input side as reported, output at least what we saw generated.
    assert meter.billable_usage(input_tokens_estimate=10_000) == Usage(
        input_tokens=25, cache_write_5m_tokens=100, cache_read_tokens=200, output_tokens=3
    )


def test_anthropic_error_before_anything_bills_nothing() -> None:
    meter = AnthropicStreamMeter()
    meter.feed("error", b'{"type":"error","error":{"type":"api_error","message":"x"}}')
    assert meter.error is not None and not meter.saw_tokens
    assert meter.billable_usage(input_tokens_estimate=500) == Usage()
    garbled = AnthropicStreamMeter()
    garbled.feed("error", b"{not json")
    assert garbled.error == {"type": "error", "error": {"type": "unparseable_error_event"}}


def test_anthropic_cache_write_split() -> None:
    one_hour = {
        "input_tokens": 3,
        "cache_creation_input_tokens": 1500,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 500, "ephemeral_1h_input_tokens": 1000},
        "output_tokens": 7,
    }
    assert anthropic_usage({"usage": one_hour}) == Usage(
        input_tokens=3, cache_write_5m_tokens=500, cache_write_1h_tokens=1000, output_tokens=7
    )
    no_breakdown = {"input_tokens": 3, "cache_creation_input_tokens": 300, "output_tokens": 7}
    assert anthropic_usage({"usage": no_breakdown}) == Usage(
        input_tokens=3, cache_write_5m_tokens=300, output_tokens=7
    )
    null_breakdown = no_breakdown | {"cache_creation": None, "cache_read_input_tokens": None}
    assert anthropic_usage({"usage": null_breakdown}) == Usage(
        input_tokens=3, cache_write_5m_tokens=300, output_tokens=7
    )


def test_anthropic_non_streaming() -> None:
    body = {
        "id": "msg_1",
        "type": "message",
        "model": "claude-sonnet-4-5-20250929",
        "content": [{"type": "text", "text": "Hi"}],
        "usage": A_START["message"]["usage"] | {"output_tokens": 15},
    }
    assert anthropic_usage(body) == SONNET_735
    assert anthropic_usage({}) == Usage()
    assert anthropic_usage({"usage": None}) == Usage()
    assert anthropic_usage("junk") == Usage()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("event", "data"),
    [
        ("message_delta", b"{not json"),
        ("message_delta", b'{"type":"message_delta","usage":null}'),
        ("message_delta", b'{"type":"message_delta","usage":{"output_tokens":"99"}}'),
        ("message_delta", b'{"type":"message_delta","usage":[1]}'),
        ("message_start", b'{"type":"message_start","message":null}'),
        ("message_start", b"[1, 2]"),
        ("content_block_delta", b'{"type":"content_block_delta","delta":"x"}'),
        ("content_block_delta", b'{"type":"content_block_delta","delta":{"text":null}}'),
        ("message", b'{"type":["message_delta"]}'),
        ("message", b"not json"),
        ("ping", b"{not json"),
        ("wat", b"\xff\xfe"),
    ],
)
def test_anthropic_tolerates_odd_events(event: str, data: bytes) -> None:
    meter = AnthropicStreamMeter()
    meter.feed("message_start", orjson.dumps(A_START))
    before = meter.usage
    meter.feed(event, data)
    assert meter.usage == before
    assert meter.error is None and not meter.completed


def test_anthropic_payload_type_used_when_event_line_missing() -> None:
    meter = AnthropicStreamMeter()
    meter.feed("message", orjson.dumps(A_START))
    meter.feed("message", b'{"type":"message_delta","usage":{"output_tokens":15}}')
    meter.feed("message", b'{"type":"message_stop"}')
    assert meter.usage == SONNET_735 and meter.completed and meter.model is not None


# --- OpenAI Chat Completions --------------------------------------------------------------------


def chat_chunk(delta: dict, finish: str | None = None, usage: object = None) -> dict:
    return {
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion.chunk",
        "created": 1741570283,
        "model": "gpt-4o-2024-08-06",
        "system_fingerprint": "fp_eb9dce56a8",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        "usage": usage,
    }


CHAT_USAGE = {
    "prompt_tokens": 225,
    "completion_tokens": 15,
    "total_tokens": 240,
    "prompt_tokens_details": {"cached_tokens": 200, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}
USAGE_ONLY = chat_chunk({}) | {"choices": [], "usage": CHAT_USAGE}
CHAT_STREAM = [
    orjson.dumps(chat_chunk({"role": "assistant", "content": "", "refusal": None})),
    orjson.dumps(chat_chunk({"content": "Hello"})),
    orjson.dumps(chat_chunk({"content": " there!"})),
    orjson.dumps(chat_chunk({}, finish="stop")),
    orjson.dumps(USAGE_ONLY),
    b"[DONE]",
]


def test_openai_chat_stream_with_usage() -> None:
    meter = OpenAIChatStreamMeter()
    for data in CHAT_STREAM:
        meter.feed(data)
    gpt_usage = Usage(input_tokens=25, cache_read_tokens=200, output_tokens=15)
    assert meter.usage == gpt_usage  # prompt 225 includes the 200 cached
    assert meter.model == "gpt-4o-2024-08-06"
    assert meter.upstream_id == "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG"
    assert meter.completed and meter.usage_reported and meter.saw_tokens
    assert meter.error is None
    assert meter.approx_output_tokens == 3  # "Hello there!" = 12 chars
    assert meter.billable_usage(input_tokens_estimate=999) == gpt_usage
    price = TABLE.get(meter.model)
    assert price is not None
    assert TABLE.list_cost(price, meter.usage) == Fraction(925, 2)  # WIRE.md: $0.0004625


def test_openai_chat_stream_through_sse_parser() -> None:
    stream = b"".join(b"data: " + d + b"\n\n" for d in CHAT_STREAM)
    parser, meter = SSEParser(), OpenAIChatStreamMeter()
    for i in range(0, len(stream), 5):
        for _, data in parser.feed(stream[i : i + 5]):
            meter.feed(data)
    assert meter.usage == Usage(input_tokens=25, cache_read_tokens=200, output_tokens=15)
    assert meter.completed


def test_is_usage_only_chunk() -> None:
    flags = [OpenAIChatStreamMeter.is_usage_only_chunk(d) for d in CHAT_STREAM]
    assert flags == [False, False, False, False, True, False]
    content_with_brackets = orjson.dumps(chat_chunk({"content": "[]"}))
    assert not OpenAIChatStreamMeter.is_usage_only_chunk(content_with_brackets)
    no_usage = orjson.dumps(chat_chunk({}) | {"choices": []})
    assert not OpenAIChatStreamMeter.is_usage_only_chunk(no_usage)
    assert not OpenAIChatStreamMeter.is_usage_only_chunk(b"[]")


def test_openai_chat_interrupted_stream_is_estimated() -> None:
    meter = OpenAIChatStreamMeter()
    meter.feed(orjson.dumps(chat_chunk({"role": "assistant", "content": ""})))
    meter.feed(orjson.dumps(chat_chunk({"content": "The weather in Paris"})))  # 20 chars
    call = {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":'},  # 11 + 8 chars
    }
    meter.feed(orjson.dumps(chat_chunk({"tool_calls": [call]})))
    # connection drops: no usage chunk, no [DONE]
    assert not meter.completed and not meter.usage_reported
    assert meter.usage == Usage()
    assert meter.saw_tokens
    assert meter.approx_output_tokens == 10  # 39 chars -> ceil(39 / 4)
    assert meter.billable_usage(input_tokens_estimate=50) == Usage(
        input_tokens=50, output_tokens=10
    )


def test_openai_chat_nothing_generated_bills_nothing() -> None:
    meter = OpenAIChatStreamMeter()
    meter.feed(orjson.dumps(chat_chunk({"role": "assistant", "content": ""})))
    assert not meter.saw_tokens
    assert meter.billable_usage(input_tokens_estimate=50) == Usage()


def test_openai_chat_mid_stream_error_and_junk() -> None:
    meter = OpenAIChatStreamMeter()
    for data in (
        b"{not json",
        b"null",
        b"[1]",
        orjson.dumps(chat_chunk({"content": None})),
        b'{"choices":[null, {"delta":[]}],"usage":[]}',
        b'{"error":{"message":"The server had an error","type":"server_error","code":null}}',
    ):
        meter.feed(data)
    assert meter.error == {
        "error": {"message": "The server had an error", "type": "server_error", "code": None}
    }
    assert meter.usage == Usage() and not meter.saw_tokens and not meter.completed


def test_openai_chat_non_streaming_with_reasoning() -> None:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-5-2025-08-07",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "4"}}],
        "usage": {
            "prompt_tokens": 1200,
            "completion_tokens": 100,
            "total_tokens": 1300,
            "prompt_tokens_details": {"cached_tokens": 1024},
            "completion_tokens_details": {"reasoning_tokens": 64},
        },
    }
    assert openai_chat_usage(body) == Usage(
        input_tokens=176, cache_read_tokens=1024, output_tokens=100, reasoning_tokens=64
    )
    no_details = {"usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}}
    assert openai_chat_usage(no_details) == Usage(input_tokens=10, output_tokens=2)
    nulls = {"usage": {"prompt_tokens": 10, "prompt_tokens_details": None}}
    assert openai_chat_usage(nulls) == Usage(input_tokens=10)
    # A cached count above the prompt total is clamped, never a negative input.
    odd = {"usage": {"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 50}}}
    assert openai_chat_usage(odd) == Usage(input_tokens=0, cache_read_tokens=10)
    assert openai_chat_usage({}) == Usage()


# --- OpenAI Responses ---------------------------------------------------------------------------


def response_obj(status: str, usage: object = None, **extra: object) -> dict:
    return {
        "id": "resp_67ccd2bed1ec8190b14f964abc054267",
        "object": "response",
        "created_at": 1741476542,
        "status": status,
        "model": "gpt-5-2025-08-07",
        "output": [],
        "usage": usage,
        **extra,
    }


R_USAGE = {
    "input_tokens": 1200,
    "input_tokens_details": {"cached_tokens": 1000},
    "output_tokens": 300,
    "output_tokens_details": {"reasoning_tokens": 256},
    "total_tokens": 1500,
}
R_HEAD = [
    (
        "response.created",
        {"type": "response.created", "sequence_number": 0, "response": response_obj("in_progress")},
    ),
    (
        "response.in_progress",
        {
            "type": "response.in_progress",
            "sequence_number": 1,
            "response": response_obj("in_progress"),
        },
    ),
    (
        "response.output_item.added",
        {
            "type": "response.output_item.added",
            "sequence_number": 2,
            "output_index": 0,
            "item": {"id": "msg_1", "type": "message", "status": "in_progress", "content": []},
        },
    ),
]


def r_delta(text: str, seq: int) -> tuple[str, dict]:
    return (
        "response.output_text.delta",
        {
            "type": "response.output_text.delta",
            "sequence_number": seq,
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "delta": text,
            "logprobs": [],
        },
    )


def feed_responses(stream: bytes) -> OpenAIResponsesStreamMeter:
    parser, meter = SSEParser(), OpenAIResponsesStreamMeter()
    for name, data in parser.feed(stream):
        meter.feed(name, data)
    return meter


R_EXPECTED = Usage(
    input_tokens=200, cache_read_tokens=1000, output_tokens=300, reasoning_tokens=256
)


def test_openai_responses_stream_completed() -> None:
    stream = sse(
        *R_HEAD,
        r_delta("Hi", 3),
        r_delta(" there", 4),
        ("response.output_text.done", {"type": "response.output_text.done", "text": "Hi there"}),
        (
            "response.completed",
            {
                "type": "response.completed",
                "sequence_number": 9,
                "response": response_obj("completed", R_USAGE),
            },
        ),
    )
    meter = feed_responses(stream)
    assert meter.usage == R_EXPECTED  # input 1200 includes the 1000 cached
    assert meter.model == "gpt-5-2025-08-07"
    assert meter.upstream_id == "resp_67ccd2bed1ec8190b14f964abc054267"
    assert meter.completed and meter.usage_reported and meter.error is None
    assert meter.approx_output_tokens == 2  # "Hi there" = 8 chars
    price = TABLE.get(meter.model)
    assert price is not None and price.model == "gpt-5"
    # 200 * 1.25 + 1000 * 0.125 + 300 * 10 = 250 + 125 + 3000 = 3375; * 1.5 = 5062.5 -> 5063
    assert TABLE.cost_micros(price, meter.usage) == 5063


def test_openai_responses_interrupted_is_estimated() -> None:
    meter = feed_responses(sse(*R_HEAD, r_delta("Once upon a time", 3)))  # 16 chars
    assert not meter.completed and not meter.usage_reported and meter.saw_tokens
    assert meter.usage == Usage()
    assert meter.approx_output_tokens == 4
    assert meter.billable_usage(input_tokens_estimate=40) == Usage(input_tokens=40, output_tokens=4)


def test_openai_responses_incomplete_and_failed() -> None:
    incomplete = response_obj(
        "incomplete", R_USAGE, incomplete_details={"reason": "max_output_tokens"}
    )
    meter = feed_responses(
        sse(
            *R_HEAD,
            ("response.incomplete", {"type": "response.incomplete", "response": incomplete}),
        )
    )
    assert meter.usage == R_EXPECTED and meter.completed and meter.error is None

    error = {"code": "server_error", "message": "The model failed"}
    failed = response_obj("failed", R_USAGE, error=error)
    meter = feed_responses(
        sse(*R_HEAD, ("response.failed", {"type": "response.failed", "response": failed}))
    )
    assert meter.usage == R_EXPECTED and not meter.completed and meter.error == error


def test_openai_responses_error_event_and_junk() -> None:
    meter = OpenAIResponsesStreamMeter()
    meter.feed("response.completed", b"{not json")
    meter.feed("response.completed", b'{"type":"response.completed","response":null}')
    meter.feed("response.output_text.delta", b'{"delta":null}')
    meter.feed("response.audio.delta", b'{"delta":"AAAA"}')  # not text: not counted
    meter.feed("message", b'{"type":7}')
    assert meter.usage == Usage() and not meter.saw_tokens
    err = {"type": "error", "code": "rate_limit_exceeded", "message": "slow down", "param": None}
    meter.feed("error", orjson.dumps(err))
    assert meter.error == err


def test_openai_responses_non_streaming() -> None:
    assert openai_responses_usage(response_obj("completed", R_USAGE)) == R_EXPECTED
    assert openai_responses_usage({"usage": None}) == Usage()


# --- fees, tiers, audio, unknown fields -----------------------------------------------------------


def test_anthropic_server_tool_uses_and_tier() -> None:
    usage = {
        "input_tokens": 10,
        "output_tokens": 5,
        "server_tool_use": {"web_search_requests": 3, "web_fetch_requests": 2},
        "service_tier": "standard",
        "inference_geo": "global",
    }
    want = Usage(
        input_tokens=10,
        output_tokens=5,
        web_search_requests=3,
        web_fetch_requests=2,
        service_tier="standard",
    )
    assert anthropic_usage({"usage": usage}) == want
    meter = AnthropicStreamMeter()
    meter.feed("message_start", orjson.dumps({"message": {"usage": {"input_tokens": 10}}}))
    meter.feed(
        "message_delta",
        orjson.dumps({"usage": {k: usage[k] for k in usage if k != "input_tokens"}}),
    )
    assert meter.billable_usage() == want
    # $3 x 10 + $15 x 5 + 3 searches x $10/1K (fetches free) = 30 + 75 + 30000 = 30105; x 1.5
    assert TABLE.cost_micros(TABLE.get("claude-sonnet-4-6"), want) == 45158


def test_interrupted_stream_keeps_its_server_tool_uses() -> None:
    meter = AnthropicStreamMeter()
    start = {"input_tokens": 10, "server_tool_use": {"web_search_requests": 1}}
    meter.feed("message_start", orjson.dumps({"message": {"usage": start}}))
    meter.feed("content_block_delta", orjson.dumps({"delta": {"text": "abcdefgh"}}))
    got = meter.billable_usage()  # cut before message_delta
    # Output at least the text seen, and the search already made is still billed.
    assert (got.input_tokens, got.output_tokens, got.web_search_requests) == (10, 2, 1)


def test_openai_audio_tokens_and_tier() -> None:
    body = {
        "service_tier": "priority",
        "usage": {
            "prompt_tokens": 1000,
            "completion_tokens": 200,
            "total_tokens": 1200,
            "prompt_tokens_details": {"cached_tokens": 100, "audio_tokens": 400},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 150},
        },
    }
    assert openai_chat_usage(body) == Usage(
        input_tokens=900,
        output_tokens=200,
        cache_read_tokens=100,
        audio_input_tokens=400,
        audio_output_tokens=150,
        service_tier="priority",
    )


def test_openai_responses_built_in_tool_calls_and_tier() -> None:
    resp = {
        "service_tier": "flex",
        "output": [
            {"type": "web_search_call", "id": "ws_1"},
            {"type": "web_search_call", "id": "ws_2"},
            {"type": "file_search_call", "id": "fs_1"},
            {"type": "message", "content": []},
        ],
        "usage": {"input_tokens": 50, "output_tokens": 5, "total_tokens": 55},
    }
    want = Usage(
        input_tokens=50,
        output_tokens=5,
        web_search_requests=2,
        file_search_calls=1,
        service_tier="flex",
    )
    assert openai_responses_usage(resp) == want
    meter = OpenAIResponsesStreamMeter()
    meter.feed("response.completed", orjson.dumps({"response": resp}))
    assert meter.billable_usage() == want


def test_unknown_usage_fields_are_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    import uuid

    name = f"teleport_tokens_{uuid.uuid4().hex[:8]}"
    caplog.set_level("WARNING", logger="blitzclawd.metering")
    for _ in range(3):
        got = anthropic_usage({"usage": {"input_tokens": 7, name: 99}})
        assert got == Usage(input_tokens=7)  # what is known is charged
        openai_chat_usage({"usage": {"prompt_tokens": 7, "prompt_tokens_details": {name: 1}}})
    fields = [getattr(r, "field", None) for r in caplog.records]
    assert fields.count(f"anthropic.usage.{name}") == 1
    assert fields.count(f"openai.usage.prompt_tokens_details.{name}") == 1
    # Known informational fields are not reported.
    openai_chat_usage({"usage": {"prompt_tokens_details": {"image_tokens": 5, "text_tokens": 1}}})
    assert not [r for r in caplog.records if "image_tokens" in str(getattr(r, "field", ""))]
