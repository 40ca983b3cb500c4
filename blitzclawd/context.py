"""What the daemon's parts may reach: built once, complete, by the composition root (daemon.py).

Views get it under one typed AppKey (blitzclawd.http.context.CONTEXT); actors get what they need
of it as constructor arguments. Actors are reached through `actors` (typed references,
blitzclawd.registry), never as objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import asyncpg

from blitzclawd.config import Secrets, Settings
from blitzclawd.events import EventBus
from blitzclawd.metrics import Metrics
from blitzclawd.registry import Actors

if TYPE_CHECKING:
    from blitzclawd.auth.clerk import ClerkVerifier
    from blitzclawd.auth.clerk_users import ClerkUsers
    from blitzclawd.crypto import Keyring
    from blitzclawd.providers.base import ServerProvider
    from blitzclawd.runtime.supervisor import Supervisor


@dataclass(slots=True, eq=False)
class DaemonContext:
    settings: Settings
    secrets: Secrets
    pool: asyncpg.Pool
    daemon_id: str
    # The root of the supervision tree (blitzclawd.tree): /readyz, the admin API.
    supervisor: Supervisor
    actors: Actors
    # Outbound HTTP (Clerk keys, Creem) — one pooled session for the daemon's lifetime.
    http: aiohttp.ClientSession
    clerk: ClerkVerifier
    # Clerk's Backend API user lookups (None without the clerk_secret_key secret).
    clerk_users: ClerkUsers | None
    # Where servers come from (None without the hetzner_api_token secret).
    provider: ServerProvider | None
    # The operators' live events (GET /api/admin/events) and what feeds them while listened to.
    events: EventBus = field(default_factory=EventBus)
    _event_watch: Any = None
    # Prometheus metrics (GET /metrics): the proxy counts into them.
    metrics: Metrics = field(default_factory=Metrics)
    # clerk user id -> (our user id, role, fetched at): spares a write per authenticated call.
    user_cache: dict[str, tuple[str, str, float]] = field(default_factory=dict)
    # Loaded on first use (blitzclawd.fleet.keys): at-rest encryption and the provisioner's key.
    _keyring: Keyring | None = None
    _ssh_key: Any = None

    def event_watch(self) -> Any:
        """Feeds `events` while someone listens (blitzclawd.event_watch), made on first use."""
        if self._event_watch is None:
            from blitzclawd.event_watch import EventWatch

            self._event_watch = EventWatch(self)
        return self._event_watch

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
