"""Request ids: random (version 4) UUIDs, drawn from the OS's CSPRNG in blocks.

uuid.uuid4() asks the kernel for 16 bytes per call; on the proxy's hot path one getrandom call per
256 ids is enough. The bytes are just as random: only the system calls are fewer.
"""

from __future__ import annotations

import os
import uuid

_BLOCK = 256 * 16


class _Pool:
    __slots__ = ("buf", "pos")

    def __init__(self) -> None:
        self.buf = b""
        self.pos = _BLOCK


_pool = _Pool()


def new_request_id() -> str:
    pool = _pool
    if pool.pos >= len(pool.buf):
        pool.buf = os.urandom(_BLOCK)
        pool.pos = 0
    raw = pool.buf[pool.pos : pool.pos + 16]
    pool.pos += 16
    return str(uuid.UUID(bytes=raw, version=4))
