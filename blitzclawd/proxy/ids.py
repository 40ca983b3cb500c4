"""Request ids: time-ordered UUIDs (version 7, RFC 9562), random bits from the OS's CSPRNG.

Every proxied request adds its id to unique indexes (its usage row; a long one's database record
too). Random (version 4) ids land on a random leaf page of each
index every time, and as the tables grow those pages fall out of the CPU's caches: each request
costs PostgreSQL more the longer the service runs. Ids that start with the time land next to
each other, on the pages touched last. 74 random bits per millisecond keep them unique, and the
random bytes come from one getrandom call per 256 ids rather than one per id.
"""

from __future__ import annotations

import os
import time
import uuid

_BLOCK = 256 * 10


class _Random:
    __slots__ = ("buf", "pos")

    def __init__(self) -> None:
        self.buf = b""
        self.pos = _BLOCK


_random = _Random()


def new_request_id() -> str:
    r = _random
    if r.pos >= len(r.buf):
        r.buf = os.urandom(_BLOCK)
        r.pos = 0
    tail = r.buf[r.pos : r.pos + 10]
    r.pos += 10
    raw = bytearray((time.time_ns() // 1_000_000).to_bytes(6, "big") + tail)
    raw[6] = 0x70 | (raw[6] & 0x0F)  # version 7
    raw[8] = 0x80 | (raw[8] & 0x3F)  # RFC 9562 variant
    return str(uuid.UUID(bytes=bytes(raw)))
