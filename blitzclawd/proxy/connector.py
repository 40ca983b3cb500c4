"""Upstream keep-alive connections, most recently used first.

aiohttp's connector hands out its idle connections oldest first. After a burst of 1,000
concurrent streams, a steady trickle of requests then rotates through all 1,000 sockets, touching
a cold one each time (on both ends: measurably slower per request), and none of them ever stays
idle long enough to expire. Reusing the connection released last keeps one warm socket busy and
lets the others reach `keepalive_timeout` and close.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import aiohttp


class MostRecentFirstConnector(aiohttp.TCPConnector):
    def _release(self, key: Any, protocol: Any, *args: Any, **kwargs: Any) -> None:
        super()._release(key, protocol, *args, **kwargs)
        # The connector takes idle connections from the left and returns them on the right:
        # move the one just returned to the left. (If aiohttp changes how it keeps them, this
        # does nothing and tests/test_connector.py says so.)
        conns = getattr(self, "_conns", {}).get(key)
        if isinstance(conns, deque) and conns and conns[-1][0] is protocol:
            conns.rotate(1)
