"""What the HTTP views may reach in the daemon: one object under one typed AppKey."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import asyncpg
from aiohttp import web

from blitzclawd.config import Secrets, Settings

if TYPE_CHECKING:
    from blitzclawd.auth.clerk import ClerkVerifier
    from blitzclawd.auth.clerk_users import ClerkUsers
    from blitzclawd.crypto import Keyring
    from blitzclawd.providers.base import ServerProvider
    from blitzclawd.runtime.supervisor import Supervisor

log = logging.getLogger("blitzclawd.http")


@dataclass(slots=True)
class DaemonContext:
    settings: Settings
    secrets: Secrets
    pool: asyncpg.Pool
    daemon_id: str
    # Set once the root supervisor exists (it is built after the context, as it runs the listeners).
    supervisor: Supervisor | None = field(default=None)
    # Outbound HTTP (Clerk keys, Creem) — one pooled session for the daemon's lifetime.
    http: aiohttp.ClientSession | None = None
    clerk: ClerkVerifier | None = None
    # Clerk's Backend API user lookups (None without the clerk_secret_key secret).
    clerk_users: ClerkUsers | None = None
    # clerk user id -> (our user id, role, fetched at): spares a write per authenticated call.
    user_cache: dict[str, tuple[str, str, float]] = field(default_factory=dict)
    # Where servers come from (None without the hetzner_api_token secret).
    provider: ServerProvider | None = None
    # Loaded on first use (blitzclawd.fleet.keys): at-rest encryption and the provisioner's key.
    _keyring: Keyring | None = None
    _ssh_key: Any = None

    def keyring(self) -> Keyring:
        if self._keyring is None:
            from blitzclawd.fleet.keys import load_keyring

            self._keyring = load_keyring(self.settings, self.secrets)
        return self._keyring

    def ssh_key(self) -> Any:
        """The provisioner's asyncssh private key."""
        if self._ssh_key is None:
            from blitzclawd.fleet.keys import load_ssh_key

            self._ssh_key = load_ssh_key(self.settings, self.secrets)
        return self._ssh_key

    def actor(self, name: str) -> Any:
        """The running actor `name`, or None while it (re)starts."""
        return self.supervisor.child(name) if self.supervisor is not None else None

    def tell(self, name: str, message: object) -> bool:
        """Best-effort `tell` to actor `name` (a singleton's inner actor when this daemon holds it).

        Used for wake-ups and emails after work is committed: a missing or full actor must not
        fail the caller. Durable work is still found by the actor's own timer; a dropped message
        is logged. Returns whether it was delivered.
        """
        actor = self.actor(name)
        actor = getattr(actor, "inner", actor)  # SingletonChild runs its actor inside
        if actor is None or not hasattr(actor, "tell"):
            log.info(
                "actor not here: message not delivered",
                extra={"actor": name, "message": type(message).__name__},
            )
            return False
        try:
            actor.tell(message)
        except Exception as exc:  # a full mailbox or a stopping actor
            log.warning(
                "message not delivered",
                extra={"actor": name, "message": type(message).__name__, "error": repr(exc)},
            )
            return False
        return True


CONTEXT = web.AppKey("blitzclaw_context", DaemonContext)
