"""Per-instance proxy credentials: issued once, stored hashed, compared in constant time.

An instance authenticates with its id and its own secret, sent either as the headers
`X-BlitzClaw-Instance` + `X-BlitzClaw-Secret` or, because OpenClaw has had header bugs, as one
API key `bcl_<instance id hex>_<secret>` inside `x-api-key` or `Authorization: Bearer`.
Secrets are 256 random bits, so a plain SHA-256 is the right hash (no password stretching needed);
the key never contains "sk-ant-oat", which OpenClaw would mistake for an OAuth token.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from collections.abc import Mapping

API_KEY_PREFIX = "bcl_"
_API_KEY = re.compile(r"^bcl_([0-9a-f]{32})_([A-Za-z0-9_-]{20,128})$")
_SECRET = re.compile(r"^[A-Za-z0-9_-]{20,128}$")


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def verify_secret(secret: str, stored_hash: bytes) -> bool:
    return hmac.compare_digest(hash_secret(secret), bytes(stored_hash))


def api_key(instance_id: str | uuid.UUID, secret: str) -> str:
    return f"{API_KEY_PREFIX}{uuid.UUID(str(instance_id)).hex}_{secret}"


def from_headers(headers: Mapping[str, str]) -> tuple[uuid.UUID, str] | None:
    """(instance id, secret) from a request's headers, or None when absent or malformed."""
    instance = headers.get("X-BlitzClaw-Instance")
    secret = headers.get("X-BlitzClaw-Secret")
    if instance and secret:
        try:
            parsed = uuid.UUID(instance.strip())
        except ValueError:
            return None
        secret = secret.strip()
        return (parsed, secret) if _SECRET.match(secret) else None
    for raw in (headers.get("x-api-key"), _bearer(headers.get("Authorization"))):
        if raw:
            match = _API_KEY.match(raw.strip())
            if match:
                return uuid.UUID(hex=match.group(1)), match.group(2)
    return None


def _bearer(value: str | None) -> str | None:
    if value and value[:7].lower() == "bearer ":
        return value[7:]
    return None


# The AAD of each encrypted instance column (blitzclawd.crypto): a value copied to another row
# or column does not decrypt.
def channel_secret_context(instance_id: uuid.UUID | str) -> str:
    return f"instances.channel_secret_enc:{instance_id}"


def channel_session_context(instance_id: uuid.UUID | str) -> str:
    return f"instances.channel_session_enc:{instance_id}"


def own_key_context(instance_id: uuid.UUID | str) -> str:
    return f"instances.own_api_key_enc:{instance_id}"
