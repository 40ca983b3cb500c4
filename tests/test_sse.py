"""The incremental SSE parser: any chunking of a stream yields the same events."""

from __future__ import annotations

import pytest

from blitzclawd.metering.sse import SSEParser

STREAM = (
    b": keep-alive comment\n"
    b"event: message_start\n"
    b'data: {"type":"message_start"}\n'
    b"\n"
    b"event: ping\n"
    b'data: {"type": "ping"}\n'
    b"\n"
    b"data: first line\n"
    b"data:second line\n"
    b"data\n"
    b"id: 7\n"
    b"retry: 1000\n"
    b"\n"
    b"\n"
    b"\n"
    b"event: only-a-name\n"
    b"\n"
    b": ping\n"
    b"\n"
    b"event: content_block_delta\n"
    b'data: {"text":"a: b\\n"}\n'
    b"\n"
    b"event:\n"
    b"data: [DONE]\n"
    b"\n"
)

EXPECTED = [
    ("message_start", b'{"type":"message_start"}'),
    ("ping", b'{"type": "ping"}'),
    ("message", b"first line\nsecond line\n"),
    ("content_block_delta", b'{"text":"a: b\\n"}'),
    ("message", b"[DONE]"),
]


def feed_all(parser: SSEParser, chunks: list[bytes]) -> list[tuple[str, bytes]]:
    events: list[tuple[str, bytes]] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    return events


def test_whole_stream_in_one_chunk() -> None:
    parser = SSEParser()
    assert parser.feed(STREAM) == EXPECTED
    assert parser.pending == 0


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_split_at_every_byte_offset(newline: bytes) -> None:
    stream = STREAM.replace(b"\n", newline)
    for i in range(len(stream) + 1):
        parser = SSEParser()
        assert feed_all(parser, [stream[:i], stream[i:]]) + parser.flush() == EXPECTED, i


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_byte_by_byte_and_odd_sizes(newline: bytes) -> None:
    stream = STREAM.replace(b"\n", newline)
    for size in (1, 2, 3, 7, 64):
        chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
        assert feed_all(SSEParser(), chunks) == EXPECTED, size


def test_crlf_split_between_cr_and_lf_dispatches_once_complete() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: x\r\n\r") == []
    assert parser.feed(b"\n") == [("message", b"x")]
    assert parser.feed(b"data: y\r") == []
    assert parser.feed(b"\n\r\ndata: z\r\n\r\n") == [("message", b"y"), ("message", b"z")]


def test_remainder_stays_buffered() -> None:
    parser = SSEParser()
    assert parser.feed(b'event: message_delta\ndata: {"usage":') == []
    assert parser.pending == len(b'event: message_delta\ndata: {"usage":')
    assert parser.feed(b'{"output_tokens":15}}\n\nevent: message_stop\n') == [
        ("message_delta", b'{"usage":{"output_tokens":15}}')
    ]
    assert parser.feed(b'data: {"type":"message_stop"}\n\n') == [
        ("message_stop", b'{"type":"message_stop"}')
    ]
    assert parser.pending == 0


def test_mixed_line_endings_and_mixed_mid_chunk() -> None:
    parser = SSEParser()
    got = parser.feed(b"event: a\r\ndata: 1\n\r\nevent: b\rdata: 2\r\r")
    got += parser.feed(b"data: 3\n\n")
    assert got == [("a", b"1"), ("b", b"2"), ("message", b"3")]


def test_leading_bom_is_dropped() -> None:
    assert SSEParser().feed(b"\xef\xbb\xbfdata: hi\n\n") == [("message", b"hi")]


def test_flush_dispatches_a_final_event_without_blank_line() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: [DONE]\n") == []
    assert parser.flush() == [("message", b"[DONE]")]
    assert parser.flush() == []
    assert parser.pending == 0


def test_event_over_the_bound_raises() -> None:
    parser = SSEParser(max_event_bytes=100)
    parser.feed(b"data: " + b"x" * 90)
    with pytest.raises(ValueError, match="larger than 100"):
        parser.feed(b"x" * 20)
    assert parser.pending == 0
    with pytest.raises(ValueError, match="larger than 100"):
        SSEParser(max_event_bytes=100).feed(b"data: " + b"x" * 200 + b"\n\n")
    # Exactly at the bound is fine, and so are many small events in one big chunk.
    ok = SSEParser(max_event_bytes=100)
    assert ok.feed(b"data: " + b"x" * 94 + b"\n\n") == [("message", b"x" * 94)]
    assert len(ok.feed(b"data: y\n\n" * 100)) == 100


def test_large_event_in_many_pieces() -> None:
    payload = b"y" * 1_000_000
    chunks = [b"data: "] + [payload[i : i + 4096] for i in range(0, len(payload), 4096)]
    parser = SSEParser()
    assert feed_all(parser, [*chunks, b"\n", b"\n"]) == [("message", payload)]


def test_empty_chunks_are_harmless() -> None:
    parser = SSEParser()
    assert parser.feed(b"") == []
    assert feed_all(parser, [b"data: a\n", b"", b"\n"]) == [("message", b"a")]
