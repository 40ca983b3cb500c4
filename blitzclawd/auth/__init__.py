"""Authentication: Clerk session tokens (RS256 JWTs) and Svix-signed Clerk webhooks."""

from blitzclawd.auth.clerk import ClerkVerifier, KeysUnavailable, Session, TokenError
from blitzclawd.auth.svix import WebhookSignatureError, sign_svix, verify_svix

__all__ = [
    "ClerkVerifier",
    "KeysUnavailable",
    "Session",
    "TokenError",
    "WebhookSignatureError",
    "sign_svix",
    "verify_svix",
]
