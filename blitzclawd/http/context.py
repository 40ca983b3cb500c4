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

    def actor(self, name: str) -> Any:
        """The running actor `name`, or None while it (re)starts."""
        return self.supervisor.child(name) if self.supervisor is not None else None


CONTEXT = web.AppKey("blitzclaw_context", DaemonContext)
