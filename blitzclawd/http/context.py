"""What the HTTP views may reach in the daemon: one object under one typed AppKey."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import asyncpg
from aiohttp import web

from blitzclawd.config import Secrets, Settings

if TYPE_CHECKING:
    from blitzclawd.runtime.supervisor import Supervisor


@dataclass(slots=True)
class DaemonContext:
    settings: Settings
    secrets: Secrets
    pool: asyncpg.Pool
    daemon_id: str
    # Set once the root supervisor exists (it is built after the context, as it runs the listeners).
    supervisor: Supervisor | None = field(default=None)


CONTEXT = web.AppKey("blitzclaw_context", DaemonContext)
