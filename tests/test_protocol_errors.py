"""Requests aiohttp's HTTP parser refuses (before any route or middleware) still answer in the
listener's error shape: the API's JSON error, the proxy's provider-shaped error. Raw sockets, since
no HTTP client will send these."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import orjson
import pytest

HOST_LINE = b"Host: localhost\r\n"
MALFORMED = {
    "oversized_header": b"GET /api/auth/me HTTP/1.1\r\n"
    + HOST_LINE
    + b"X-Big: "
    + b"a" * 9000
    + b"\r\n\r\n",
    "te_and_cl": b"POST /api/auth/api-keys HTTP/1.1\r\n"
    + HOST_LINE
    + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n"
    + b"0\r\n\r\n",
    "two_content_lengths": b"POST /v1/messages HTTP/1.1\r\n"
    + HOST_LINE
    + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    "bad_request_line": b"GET\x01 / HTTP/1.1\r\n" + HOST_LINE + b"\r\n",
}


async def raw_exchange(base_url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `request` as is; (status, headers lower-cased, body) of the answer."""
    url = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        writer.write(request)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 30)  # the server closes after a parser error
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {
        k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])
    }
    return status, headers, body[: int(headers.get("content-length", len(body)))]


@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_parser_errors_on_the_api_listener_are_the_json_error_shape(api_env, case) -> None:
    status, headers, body = await raw_exchange(api_env.api, MALFORMED[case])
    assert status == 400, body
    assert headers["content-type"].startswith("application/json")
    err = orjson.loads(body)["error"]
    assert set(err) == {"code", "message", "request_id"}
    assert err["code"] in ("bad_request", "header_too_large") and err["message"]
    assert headers["x-request-id"] == err["request_id"]
    assert b"aaaa" not in body  # the offending bytes are never echoed


@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_parser_errors_on_the_proxy_listener_are_provider_shaped(api_env, case) -> None:
    status, headers, body = await raw_exchange(api_env.proxy, MALFORMED[case])
    assert status == 400, body
    assert headers["content-type"].startswith("application/json")
    err = orjson.loads(body)["error"]
    assert err["type"] == "invalid_request_error" and err["message"]
    assert headers["x-blitzclaw-request-id"]
    # The path was never parsed: the id goes where either SDK reads it; no retry can help.
    rid = headers["x-blitzclaw-request-id"]
    assert headers["request-id"] == headers["x-request-id"] == rid
    assert headers["x-should-retry"] == "false"


async def test_a_well_formed_request_after_all_that_is_served(api_env) -> None:
    status, _, body = await raw_exchange(
        api_env.api, b"GET /healthz HTTP/1.1\r\n" + HOST_LINE + b"Connection: close\r\n\r\n"
    )
    assert status == 200, body
