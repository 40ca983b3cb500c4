"""What the HTTP views may reach in the daemon: one object under one typed AppKey."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import asyncpg
from aiohttp import web

from blitzclawd.config import Secrets, Settings

if TYPE_CHECKING:
    from blitzclawd.auth.clerk import ClerkVerifier
    from blitzclawd.crypto import Keyring
    from blitzclawd.providers.base import ServerProvider
    from blitzclawd.runtime.supervisor import Supervisor


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


CONTEXT = web.AppKey("blitzclaw_context", DaemonContext)
