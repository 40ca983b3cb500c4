"""Errors to Sentry (sentry-sdk) when the `sentry_dsn` secret is set; nothing is sent otherwise.

What reaches it: every log record at ERROR or above (uncaught exceptions in views, actor crashes,
jobs that failed for good, webhook failures are all logged so), with its traceback. Before an
event leaves, every secret the daemon holds is replaced wherever it appears (messages, local
variables, request data), and credential-looking fields are dropped: a DSN is not a reason to
ship an API key to a third party. No request bodies or personal data are attached.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from blitzclawd.config import SECRET_NAMES, Secrets

log = logging.getLogger("blitzclawd.errors")
FILTERED = "[Filtered]"
_SENSITIVE_KEYS = ("authorization", "cookie", "token", "secret", "password", "api_key", "apikey")


def scrubber(secrets: Secrets) -> Any:
    values = sorted(
        {
            s.reveal()
            for name in SECRET_NAMES
            if (s := secrets.get(name)) is not None and len(s.reveal()) >= 8
        },
        key=len,
        reverse=True,
    )

    def scrub(value: Any) -> Any:
        if isinstance(value, str):
            for secret in values:
                if secret in value:
                    value = value.replace(secret, FILTERED)
            return value
        if isinstance(value, dict):
            return {
                k: FILTERED
                if isinstance(k, str) and any(m in k.lower() for m in _SENSITIVE_KEYS)
                else scrub(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [scrub(v) for v in value]
        return value

    def before_send(event: dict[str, Any], _hint: Any) -> dict[str, Any]:
        # Round-trip through JSON first: what leaves is what is scrubbed (no object reprs later).
        plain = orjson.loads(orjson.dumps(event, default=str))
        return scrub(plain)

    return before_send


def setup(secrets: Secrets, *, release: str, environment: str = "production") -> bool:
    """Start sending errors if a DSN is configured; whether it did."""
    dsn = secrets.get("sentry_dsn")
    if dsn is None:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.logging import LoggingIntegration

    sentry_sdk.init(
        dsn=dsn.reveal(),
        release=release,
        environment=environment,
        max_request_body_size="never",
        include_local_variables=False,
        traces_sample_rate=0.0,
        default_integrations=False,
        integrations=[LoggingIntegration(level=None, event_level=logging.ERROR)],
        before_send=scrubber(secrets),
    )
    log.info("errors are sent to Sentry")
    return True
