"""The daemon's context as the views reach it: one object under one typed AppKey."""

from __future__ import annotations

from aiohttp import web

from blitzclawd.context import DaemonContext

CONTEXT = web.AppKey("blitzclaw_context", DaemonContext)

__all__ = ["CONTEXT", "DaemonContext"]
