"""A user's own provider key (spec "User API Keys"): checked with the provider before it is
stored, so a wrong key is a clear 422 at once, not an assistant that fails later."""

from __future__ import annotations

import aiohttp

from blitzclawd.config import UpstreamSettings
from blitzclawd.errors import ApiError


async def check_with_provider(
    http: aiohttp.ClientSession, up: UpstreamSettings, provider: str, key: str
) -> None:
    """GET /v1/models with the key at the provider: 422 when refused, 502 when unreachable."""
    if provider == "anthropic":
        url = up.anthropic_url.rstrip("/") + "/v1/models"
        headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    else:
        url = up.openai_url.rstrip("/").removesuffix("/v1") + "/v1/models"
        headers = {"Authorization": f"Bearer {key}"}
    try:
        async with http.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=15)) as resp:
            status = resp.status
            await resp.read()
    except (aiohttp.ClientError, TimeoutError):
        raise ApiError(
            502, "provider_unavailable", f"could not reach {provider} to check the key; retry"
        ) from None
    if status in (401, 403):
        raise ApiError(
            422,
            "invalid_api_key",
            f"{provider} refused this API key (HTTP {status})",
            field="api_key",
        )
    if status != 200:
        raise ApiError(
            502, "provider_unavailable", f"{provider} answered HTTP {status} checking the key"
        )
