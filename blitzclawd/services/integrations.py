"""Connecting a user's Google account, and the instances that use it.

    url = await start_google(pool, keyring, google, user_id)          # a new single-use state
    row = await complete_google(pool, actors, keyring, google, user_id, state, code)
    await disconnect(pool, actors, keyring, google, user_id, "google")  # revoked, then deleted
    await attach(pool, actors, user_id, instance_id, integration_id)    # / detach
    # the refresh round: blitzclawd/services/integration_refresh.py (run by the janitor)

Tokens exist in plaintext only between Google's answer and the keyring (and, later, while a
configure job writes them to the instance's server). The state binds a consent to the user who
started it: another user's state is refused before it is consumed, a used or expired one is
refused, and nothing is stored unless Google exchanged the code.

`deploy_changed` is the one seam to the instance side: it queues the instance's configure job,
which gives the attached account to gog on its server or removes it
(blitzclawd/fleet/google_skill.py).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import asyncpg

from blitzclawd.crypto import CryptoError, Keyring
from blitzclawd.errors import ApiError
from blitzclawd.fleet import pool as fleet_pool
from blitzclawd.integrations.google import (
    PROVIDER,
    GoogleOAuth,
    GoogleRefused,
    GoogleUnreachable,
    Tokens,
    access_token_context,
    code_verifier_context,
    new_code_verifier,
    new_state,
    refresh_token_context,
)
from blitzclawd.queries import instances as instance_rows
from blitzclawd.queries import integrations as rows
from blitzclawd.registry import Actors
from blitzclawd.runtime.messages import JobsQueued

log = logging.getLogger("blitzclawd.integrations")

STATE_LIFETIME = 600.0  # seconds a consent may take
REFRESH_BATCH = 50
REFRESH_CONCURRENCY = 8
_NOT_DEPLOYED = ("waiting_for_channel", "deleted")


def not_configured() -> ApiError:
    return ApiError(
        503,
        "not_configured",
        "Google integrations are not set up on this service (google.client_id and the "
        "google_client_secret secret)",
    )


async def deploy_changed(pool: asyncpg.Pool, actors: Actors, instance_id: uuid.UUID) -> bool:
    """The instance's integrations changed (attached, detached, disconnected, broken, a new
    refresh token): its configure job carries that to its server; an instance without a server
    yet gets them with its deploy. True when a job was queued."""
    async with pool.acquire() as conn, conn.transaction():
        row = await instance_rows.lock_for_change(conn, instance_id)
        if row is None or row["status"] in _NOT_DEPLOYED:
            return False
        await fleet_pool.enqueue_job(conn, instance_id, "configure")
    actors.provisioner.tell(JobsQueued())
    return True


# -- connecting --------------------------------------------------------------------------------


async def start_google(
    pool: asyncpg.Pool, keyring: Keyring, google: GoogleOAuth, user_id: uuid.UUID
) -> str:
    """The consent URL to send the user to; its state is single use, bound to this user."""
    state, verifier = new_state(), new_code_verifier()
    await rows.insert_state(
        pool,
        state=state,
        user_id=user_id,
        provider=PROVIDER,
        code_verifier_enc=keyring.encrypt_text(verifier, code_verifier_context(state)),
        redirect_uri=google.redirect_uri,
        scopes=google.scopes,
        lifetime=STATE_LIFETIME,
    )
    return google.consent_url(state, verifier)


def _state_refusal(row: Any, user_id: uuid.UUID) -> ApiError | None:
    if row is None or row["provider"] != PROVIDER:
        return ApiError(
            400,
            "invalid_state",
            "this sign-in link is unknown; start connecting again",
            field="state",
        )
    if row["user_id"] != user_id:
        return ApiError(
            403,
            "wrong_session",
            "this link was started by another session; start connecting again from your "
            "own settings",
            field="state",
        )
    if row["used_at"] is not None:
        return ApiError(
            409, "state_used", "this link was used already; start connecting again", field="state"
        )
    if row["expired"]:
        return ApiError(
            410,
            "state_expired",
            "this link expired (10 minutes); start connecting again",
            field="state",
        )
    return None


async def check_state(pool: asyncpg.Pool, user_id: uuid.UUID, state: str) -> None:
    """Refuse (as complete_google would) without consuming anything."""
    refusal = _state_refusal(await rows.peek_state(pool, state), user_id)
    if refusal is not None:
        raise refusal


async def deny_google(pool: asyncpg.Pool, user_id: uuid.UUID, state: str) -> None:
    """The user did not allow access: the state is spent, nothing else stored."""
    async with pool.acquire() as conn, conn.transaction():
        row = await rows.lock_state(conn, state)
        refusal = _state_refusal(row, user_id)
        if refusal is not None:
            raise refusal
        await rows.use_state(conn, state)


async def complete_google(
    pool: asyncpg.Pool,
    actors: Actors,
    keyring: Keyring,
    google: GoogleOAuth,
    user_id: uuid.UUID,
    state: str,
    code: str,
) -> asyncpg.Record:
    """The callback: the state consumed, the code exchanged, the tokens stored encrypted."""
    async with pool.acquire() as conn, conn.transaction():
        row = await rows.lock_state(conn, state)
        refusal = _state_refusal(row, user_id)
        if refusal is not None:
            raise refusal
        await rows.use_state(conn, state)  # single use, whatever Google says next
    try:
        verifier = keyring.decrypt_text(row["code_verifier_enc"], code_verifier_context(state))
    except CryptoError:
        raise ApiError(400, "invalid_state", "this link cannot be used; start again") from None
    try:
        tokens = await google.exchange(code, verifier)
    except GoogleRefused as exc:
        log.info("google refused a code", extra={"user": str(user_id), "error": exc.error})
        raise ApiError(
            400,
            "code_refused",
            f"Google refused the sign-in ({exc.error}): it may have been used already or "
            "expired; start connecting again",
            field="code",
        ) from None
    except GoogleUnreachable:
        raise ApiError(502, "google_unreachable", "Google did not answer; try again") from None
    try:
        email = await google.account_email(tokens.access_token)
    except (GoogleRefused, GoogleUnreachable):
        email = None
    return await _store(pool, actors, keyring, google, user_id, tokens, email)


async def _store(
    pool: asyncpg.Pool,
    actors: Actors,
    keyring: Keyring,
    google: GoogleOAuth,
    user_id: uuid.UUID,
    tokens: Tokens,
    email: str | None,
) -> asyncpg.Record:
    old_refresh: str | None = None
    async with pool.acquire() as conn, conn.transaction():
        old = await rows.lock_of_user(conn, user_id, PROVIDER)
        integration_id = old["id"] if old is not None else uuid.uuid4()
        if old is not None and old["refresh_token_enc"] is not None:
            try:
                old_refresh = keyring.decrypt_text(
                    old["refresh_token_enc"], refresh_token_context(integration_id)
                )
            except CryptoError:
                old_refresh = None
        refresh = tokens.refresh_token or old_refresh  # no new one: the old grant goes on
        await rows.store(
            conn,
            integration_id=integration_id,
            user_id=user_id,
            provider=PROVIDER,
            access_token_enc=keyring.encrypt_text(
                tokens.access_token, access_token_context(integration_id)
            ),
            refresh_token_enc=(
                keyring.encrypt_text(refresh, refresh_token_context(integration_id))
                if refresh
                else None
            ),
            scopes=tokens.scopes or google.scopes,
            expires_at=tokens.expires_at,
            account_email=email,
        )
        attached = await rows.instances_of(conn, integration_id)
        stored = await rows.owned(conn, user_id, integration_id)
    if old_refresh and old_refresh != tokens.refresh_token and tokens.refresh_token:
        try:  # the replaced grant: revoked at Google too
            await google.revoke(old_refresh)
        except (GoogleRefused, GoogleUnreachable) as exc:
            log.warning("old Google grant not revoked", extra={"error": str(exc)})
    for instance_id in attached:
        await deploy_changed(pool, actors, instance_id)
    log.info("google connected", extra={"user": str(user_id), "integration": str(integration_id)})
    assert stored is not None
    return stored


# -- disconnecting -----------------------------------------------------------------------------


async def disconnect(
    pool: asyncpg.Pool,
    actors: Actors,
    keyring: Keyring,
    google: GoogleOAuth | None,
    user_id: uuid.UUID,
    provider: str,
) -> None:
    """Revoked at Google (already revoked counts as done; Google not answering is a 502 and
    the row is kept), then detached from every instance and deleted."""
    async with pool.acquire() as conn:
        row = await rows.lock_of_user(conn, user_id, provider)  # outside a transaction: a read
    if row is None:
        raise ApiError(404, "not_found", f"no {provider} integration")
    token = _token_to_revoke(keyring, row)
    if token is not None:
        if google is None:
            raise not_configured()
        try:
            await google.revoke(token)
        except GoogleUnreachable:
            raise ApiError(
                502,
                "google_unreachable",
                "Google did not answer, so access was not revoked; nothing was removed; try again",
            ) from None
        except GoogleRefused as exc:
            raise ApiError(
                502, "google_refused", f"Google refused to revoke access ({exc.error})"
            ) from None
    async with pool.acquire() as conn, conn.transaction():
        detached = await rows.detach_all(conn, row["id"])
        await rows.delete(conn, row["id"])
    for instance_id in detached:
        await deploy_changed(pool, actors, instance_id)
    log.info("integration removed", extra={"user": str(user_id), "integration": str(row["id"])})


def _token_to_revoke(keyring: Keyring, row: Any) -> str | None:
    """The refresh token (revoking it ends the whole grant), else the access token."""
    for column, context in (
        ("refresh_token_enc", refresh_token_context),
        ("access_token_enc", access_token_context),
    ):
        if row[column] is not None:
            try:
                return keyring.decrypt_text(row[column], context(row["id"]))
            except CryptoError:
                continue
    return None


# -- instances ---------------------------------------------------------------------------------


async def _owned_pair(
    pool: asyncpg.Pool, user_id: uuid.UUID, instance_id: uuid.UUID, integration_id: uuid.UUID
) -> Any:
    if await instance_rows.owned(pool, user_id, instance_id) is None:
        raise ApiError(404, "not_found", "no such instance")
    integration = await rows.owned(pool, user_id, integration_id)
    if integration is None:
        raise ApiError(404, "not_found", "no such integration", field="integration_id")
    return integration


async def attach(
    pool: asyncpg.Pool,
    actors: Actors,
    user_id: uuid.UUID,
    instance_id: uuid.UUID,
    integration_id: uuid.UUID,
) -> bool:
    integration = await _owned_pair(pool, user_id, instance_id, integration_id)
    if integration["status"] != "connected":
        raise ApiError(
            409,
            "integration_broken",
            "this integration needs to be connected again before an assistant can use it",
            field="integration_id",
        )
    changed = await rows.attach(pool, instance_id, integration_id)
    if changed:
        await deploy_changed(pool, actors, instance_id)
    return changed


async def detach(
    pool: asyncpg.Pool,
    actors: Actors,
    user_id: uuid.UUID,
    instance_id: uuid.UUID,
    integration_id: uuid.UUID,
) -> bool:
    await _owned_pair(pool, user_id, instance_id, integration_id)
    changed = await rows.detach(pool, instance_id, integration_id)
    if changed:
        await deploy_changed(pool, actors, instance_id)
    return changed
