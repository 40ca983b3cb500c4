"""Relaying a request to its upstream and the answer back: the headers that may cross (never
our key's way back, never the client's credentials forward), the upstream session, and the
relay of a whole answer or of a stream chunk by chunk while its meter reads every event.

What the upstream produced (usage, status, its request id, an interruption) is collected in an
Outcome for settlement; nothing here knows about money.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import yarl
from aiohttp import web

from blitzclawd.config import UpstreamSettings
from blitzclawd.metering.pricing import Usage
from blitzclawd.metering.sse import SSEParser
from blitzclawd.metering.usage import OpenAIChatStreamMeter
from blitzclawd.proxy.apis import ApiSpec, Meter
from blitzclawd.proxy.connector import MostRecentFirstConnector
from blitzclawd.proxy.errors import PROXY_REQUEST_ID_HEADER, ProxyError

log = logging.getLogger("blitzclawd.proxy")

ERROR_BODY_MAX = 1 << 20

# Request headers that never go upstream: hop-by-hop, our own credentials, the client's.
_DROP_REQUEST = frozenset(
    {
        "host",
        "content-length",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
        "authorization",
        "x-api-key",
        "cookie",
        "accept-encoding",
        "openai-organization",
        "openai-project",
        "x-blitzclaw-instance",
        "x-blitzclaw-secret",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "forwarded",
        "x-real-ip",
    }
)
# Response headers relayed to the client (request ids and rate limits are useful to SDKs).
_KEEP_RESPONSE = frozenset(
    {
        "content-type",
        "request-id",
        "x-request-id",
        "retry-after",
        "openai-processing-ms",
        "openai-version",
        "cache-control",
    }
)
_KEEP_RESPONSE_PREFIXES = ("anthropic-ratelimit-", "x-ratelimit-")
_ANTHROPIC_STREAM_ERROR = (
    b'event: error\ndata: {"type":"error","error":{"type":"api_error",'
    b'"message":"the upstream connection was lost"}}\n\n'
)


@dataclass(slots=True)
class Outcome:
    """What one relay produced, for settlement."""

    usage: Usage = field(default_factory=Usage)
    status: int | None = None
    upstream_id: str | None = None
    interrupted: bool = False


def open_session(up: UpstreamSettings) -> aiohttp.ClientSession:
    """The one upstream session of a proxy actor."""
    return aiohttp.ClientSession(
        connector=MostRecentFirstConnector(
            limit=up.max_connections, limit_per_host=0, keepalive_timeout=60, ttl_dns_cache=300
        ),
        timeout=aiohttp.ClientTimeout(
            total=None, connect=up.connect_timeout, sock_read=up.read_timeout
        ),
        auto_decompress=False,
        skip_auto_headers=("User-Agent",),
        # One session serves every tenant: a cookie an upstream sets for one request must
        # never ride along on another's (and cookie handling costs every request).
        cookie_jar=aiohttp.DummyCookieJar(),
    )


async def forward(
    session: aiohttp.ClientSession,
    url: yarl.URL,
    request: web.Request,
    api: ApiSpec,
    raw: bytes,
    key: str,
    meter: Meter | None,
    strip_usage: bool,
    request_id: str,
    outcome: Outcome,
) -> web.StreamResponse:
    """Send the request upstream with our key and relay its answer to the client: an error
    as is (unless it is our key's fault), a whole answer, or a stream chunk by chunk."""
    headers = upstream_headers(request, api.provider, key)
    if request.query_string:
        url = yarl.URL(str(url) + "?" + request.query_string)
    try:
        upstream = await session.post(url, data=raw, headers=headers)
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning(
            "upstream unreachable",
            extra={"upstream": api.provider, "error": type(exc).__name__},
        )
        raise ProxyError(502, "api", f"the {api.provider} upstream is unreachable") from None
    try:
        outcome.status = upstream.status
        outcome.upstream_id = upstream.headers.get(api.upstream_id_header)
        out_headers = client_headers(upstream.headers, request_id)
        if upstream.status != 200:
            # The upstream refused: its status and error body reach the client unchanged,
            # and nothing was used (the reservation is voided).
            body = await upstream.content.read(ERROR_BODY_MAX)
            if our_key_refused(upstream.status, body):
                # Our master key's fault, not the instance's: relayed as is, OpenClaw would
                # disable the instance's provider key (auth: up to 1 h; billing: up to 24 h)
                # and stay silent after we fixed ours. A 502 is a short retry for it.
                log.error(
                    "the upstream refused our master key",
                    extra={"upstream": api.provider, "status": upstream.status},
                )
                raise ProxyError(
                    502, "api", f"the {api.provider} upstream is unavailable; retry shortly"
                )
            return web.Response(body=body, status=upstream.status, headers=out_headers)
        if meter is None:
            return await relay_whole(request, api, upstream, out_headers, outcome)
        return await relay_stream(request, api, upstream, out_headers, meter, strip_usage, outcome)
    finally:
        upstream.release()


async def relay_whole(
    request: web.Request,
    api: ApiSpec,
    upstream: aiohttp.ClientResponse,
    headers: dict[str, str],
    outcome: Outcome,
) -> web.StreamResponse:
    try:
        body = await upstream.read()
    except (aiohttp.ClientError, TimeoutError):
        outcome.interrupted = True
        raise ProxyError(502, "api", "the upstream connection failed") from None
    try:
        outcome.usage = api.usage_of(orjson.loads(body))
    except (orjson.JSONDecodeError, TypeError, AttributeError):
        log.warning("upstream answer without readable usage", extra={"api": api.name})
    response = web.Response(body=body, status=200, headers=headers)
    try:
        await response.prepare(request)
        await response.write_eof()
    except ConnectionResetError:
        outcome.interrupted = True  # the client left; the upstream still did the work
    return response


async def relay_stream(
    request: web.Request,
    api: ApiSpec,
    upstream: aiohttp.ClientResponse,
    headers: dict[str, str],
    meter: Meter,
    strip_usage: bool,
    outcome: Outcome,
) -> web.StreamResponse:
    """Relay chunk by chunk as they arrive, metering every event on the way."""
    response = web.StreamResponse(status=200, headers=headers)
    parser = SSEParser()
    try:
        await response.prepare(request)
    except ConnectionResetError:  # the client left before the first byte
        outcome.interrupted = True
        return response
    client_gone = False
    try:
        async for chunk in upstream.content.iter_any():
            events = parser.feed(chunk)
            for event, data in events:
                meter.feed(event, data)
            if client_gone:
                continue
            if strip_usage:  # rebuilt from whole events (chat streams are data lines only)
                chunk = b"".join(
                    b"data: " + without_usage(data) + b"\n\n"
                    for _, data in events
                    if not OpenAIChatStreamMeter.is_usage_only_chunk(data)
                )
                if not chunk:
                    continue
            try:
                await response.write(chunk)
            except ConnectionResetError:
                # The client left: stop relaying and bill what was produced.
                client_gone = True
                outcome.interrupted = True
                break
    except (aiohttp.ClientError, TimeoutError) as exc:
        outcome.interrupted = True
        log.warning("upstream stream broke", extra={"api": api.name, "error": type(exc).__name__})
        if api.error_style == "anthropic" and not client_gone:
            try:  # tell an Anthropic SDK the way the API itself would
                await response.write(_ANTHROPIC_STREAM_ERROR)
            except ConnectionResetError:
                client_gone = True
    if not client_gone:
        try:
            await response.write_eof()
        except ConnectionResetError:
            outcome.interrupted = True
    if not getattr(meter, "completed", True):
        outcome.interrupted = True  # e.g. an `event: error` arrived mid-stream
    return response


# What an upstream says when our own account is the problem (a bad or revoked key, no credit
# left with the provider), not the instance's request.
_OUR_BILLING = (b"credit balance is too low", b"insufficient_quota", b"billing_hard_limit")


def our_key_refused(status: int, body: bytes) -> bool:
    if status in (401, 403):  # the upstream only ever sees our key
        return True
    return status in (400, 402, 429) and any(m in body for m in _OUR_BILLING)


def upstream_headers(request: web.Request, provider: str, key: str) -> dict[str, str]:
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP_REQUEST}
    headers["Accept-Encoding"] = "identity"  # we must read the stream to meter it
    if provider == "anthropic":
        headers["x-api-key"] = key
    else:
        headers["Authorization"] = f"Bearer {key}"
    return headers


def client_headers(upstream: Any, request_id: str) -> dict[str, str]:
    headers = {
        k: v
        for k, v in upstream.items()
        if k.lower() in _KEEP_RESPONSE or k.lower().startswith(_KEEP_RESPONSE_PREFIXES)
    }
    headers[PROXY_REQUEST_ID_HEADER] = request_id
    return headers


def without_usage(data: bytes) -> bytes:
    """A chat chunk without the `"usage": null` that asking for usage adds to every chunk: OpenAI
    sends no usage key to a client that did not ask."""
    if b'"usage"' not in data:
        return data
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return data
    if type(obj) is not dict or "usage" not in obj or obj["usage"] is not None:
        return data
    del obj["usage"]
    return orjson.dumps(obj)


def asked_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def with_usage_chunk(body: dict[str, Any]) -> bytes:
    """The chat request asking for its usage chunk, otherwise unchanged."""
    options = body.get("stream_options")
    merged = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return orjson.dumps({**body, "stream_options": merged})
