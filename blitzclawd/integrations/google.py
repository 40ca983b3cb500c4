"""Google's OAuth 2.0 for web server apps, through Authlib (authorization code + PKCE).

    google = GoogleOAuth.from_settings(settings, secrets)   # None when not configured
    url = google.consent_url(state, verifier)
    tokens = await google.exchange(code, verifier)          # Tokens
    tokens = await google.refresh(refresh_token)
    await google.revoke(token)
    email = await google.account_email(access_token)

Refusals come back as GoogleRefused (its OAuth `error`, e.g. invalid_grant); a Google that does
not answer as GoogleUnreachable. Neither carries a token in its message: they reach logs and
error bodies.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import httpx
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError

from blitzclawd.config import Secrets, Settings, google_redirect_url

PROVIDER = "google"

# Authlib's client runs on httpx2 where it is installed (else httpx): catch either's errors.
try:
    import httpx2  # type: ignore[import-not-found]

    _HTTP_ERRORS: tuple[type[Exception], ...] = (httpx.HTTPError, httpx2.HTTPError)
    _STATUS_ERRORS: tuple[type[Exception], ...] = (httpx.HTTPStatusError, httpx2.HTTPStatusError)
except ImportError:  # pragma: no cover - depends on what else is installed
    _HTTP_ERRORS = (httpx.HTTPError,)
    _STATUS_ERRORS = (httpx.HTTPStatusError,)


class GoogleRefused(Exception):
    """Google answered with an OAuth error (invalid_grant, invalid_token, ...)."""

    def __init__(self, error: str, description: str = "") -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error
        self.description = description


class GoogleUnreachable(Exception):
    """Google did not answer (network, timeout, 5xx): try again later."""


@dataclass(frozen=True, slots=True)
class Tokens:
    access_token: str
    refresh_token: str | None
    expires_at: dt.datetime
    scopes: tuple[str, ...]

    def __repr__(self) -> str:  # never the tokens themselves
        return f"Tokens(expires_at={self.expires_at.isoformat()}, scopes={self.scopes})"


def new_state() -> str:
    return generate_token(48)


def new_code_verifier() -> str:
    return generate_token(64)  # RFC 7636: 43-128 characters of [A-Za-z0-9-._~]


@dataclass(frozen=True, slots=True)
class GoogleOAuth:
    client_id: str
    client_secret: str
    authorization_url: str
    token_url: str
    revoke_url: str
    userinfo_url: str
    redirect_uri: str
    scopes: tuple[str, ...]
    timeout: float

    def __repr__(self) -> str:
        return f"GoogleOAuth(client_id={self.client_id!r})"

    @classmethod
    def from_settings(cls, settings: Settings, secrets: Secrets) -> GoogleOAuth | None:
        g = settings.google
        secret = secrets.get("google_client_secret")
        if not g.client_id or secret is None:
            return None
        return cls(
            client_id=g.client_id,
            client_secret=secret.reveal(),
            authorization_url=g.authorization_url,
            token_url=g.token_url,
            revoke_url=g.revoke_url,
            userinfo_url=g.userinfo_url,
            redirect_uri=google_redirect_url(settings),
            scopes=tuple(g.scopes),
            timeout=g.timeout,
        )

    def _client(self) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self.client_id,
            client_secret=self.client_secret,
            token_endpoint_auth_method="client_secret_post",
            revocation_endpoint_auth_method="none",
            redirect_uri=self.redirect_uri,
            code_challenge_method="S256",
            timeout=self.timeout,
        )

    def consent_url(self, state: str, code_verifier: str) -> str:
        client = self._client()
        url, _ = client.create_authorization_url(
            self.authorization_url,
            state=state,
            code_verifier=code_verifier,
            scope=" ".join(self.scopes),
            access_type="offline",  # a refresh token
            prompt="consent",  # a refresh token again on a reconnect
            include_granted_scopes="true",
        )
        return url

    async def exchange(self, code: str, code_verifier: str) -> Tokens:
        async with self._client() as client:
            token = await _call(
                client.fetch_token(
                    self.token_url,
                    grant_type="authorization_code",
                    code=code,
                    code_verifier=code_verifier,
                )
            )
        return _tokens(token, None)

    async def refresh(self, refresh_token: str) -> Tokens:
        async with self._client() as client:
            token = await _call(client.refresh_token(self.token_url, refresh_token=refresh_token))
        return _tokens(token, refresh_token)

    async def revoke(self, token: str) -> bool:
        """True when revoked now, False when Google says it was expired or revoked already."""
        async with self._client() as client:
            try:
                resp = await client.revoke_token(self.revoke_url, token=token)
            except _HTTP_ERRORS as exc:
                raise GoogleUnreachable(type(exc).__name__) from None
        if resp.status_code == 200:
            return True
        if resp.status_code >= 500:
            raise GoogleUnreachable(f"Google answered {resp.status_code}")
        error = _error_of(resp)
        if error == "invalid_token":
            return False
        raise GoogleRefused(error or f"http_{resp.status_code}")

    async def account_email(self, access_token: str) -> str | None:
        async with httpx.AsyncClient(timeout=self.timeout) as http:
            try:
                resp = await http.get(
                    self.userinfo_url, headers={"Authorization": f"Bearer {access_token}"}
                )
            except httpx.HTTPError as exc:
                raise GoogleUnreachable(type(exc).__name__) from None
        if resp.status_code >= 500:
            raise GoogleUnreachable(f"Google answered {resp.status_code}")
        if resp.status_code != 200:
            raise GoogleRefused("invalid_token", "userinfo refused the new access token")
        email = resp.json().get("email")
        return email if isinstance(email, str) else None


async def _call(pending):  # type: ignore[no-untyped-def]
    try:
        return await pending
    except OAuthError as exc:
        raise GoogleRefused(exc.error or "oauth_error", exc.description or "") from None
    except _STATUS_ERRORS as exc:
        status = getattr(getattr(exc, "response", None), "status_code", "?")
        raise GoogleUnreachable(f"Google answered {status}") from None
    except _HTTP_ERRORS as exc:
        raise GoogleUnreachable(type(exc).__name__) from None
    except ValueError:  # a body that is not a token (a proxy's page)
        raise GoogleUnreachable("Google's answer was not a token") from None


def _tokens(token: dict, refresh_token: str | None) -> Tokens:
    access = token.get("access_token")
    if not isinstance(access, str) or not access:
        raise GoogleRefused("invalid_response", "no access token in Google's answer")
    expires_in = token.get("expires_in")
    seconds = int(expires_in) if isinstance(expires_in, int | float | str) else 3599
    scope = token.get("scope") or ""
    return Tokens(
        access_token=access,
        refresh_token=token.get("refresh_token") or refresh_token,
        expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds),
        scopes=tuple(str(scope).split()),
    )


def _error_of(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return ""
    return str(body.get("error", "")) if isinstance(body, dict) else ""


# The AAD of each encrypted column (blitzclawd.crypto): a ciphertext moved elsewhere fails.
def access_token_context(integration_id: object) -> str:
    return f"user_integrations.access_token_enc:{integration_id}"


def refresh_token_context(integration_id: object) -> str:
    return f"user_integrations.refresh_token_enc:{integration_id}"


def code_verifier_context(state: str) -> str:
    return f"oauth_states.code_verifier_enc:{state}"
