"""The in-flight journal: a daemon's crash record of its requests in flight, in a file of its own.

Before a request is forwarded, its record (request id, user, instance, worst case, prompt
estimate, api, model) goes into a slot of a memory-mapped file in the state directory,
`inflight-<daemon id>.journal`; the slot is cleared once the request's settlement has committed.
Writing it is a few memory stores: no database round trip, nothing to wait for, so no request is
ever forwarded unrecorded. A SIGKILL loses nothing written (the kernel holds the file's pages); a
power cut may lose what was written since the last checkpoint (`flush`, every checkpoint tick).

Requests still in flight at a checkpoint are also written to the database (`reservations`), so a
daemon on another host can charge them should this host never come back. When a daemon finds the
journal of a stopped daemon of its database in its state directory, it charges every record left
in it by the recovery rule and deletes the file (blitzclawd.proxy.recovery.recover_journals).

A slot is written field by field with its `used` byte last and cleared by that byte first, so a
process killed half-way leaves either a whole record or a free slot.
"""

from __future__ import annotations

import mmap
import os
import re
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"BCJRNL01"
HEADER_SIZE = 4096  # one page: magic, slot size, slot count, the writing daemon's id
SLOT_SIZE = 256
_HEADER = struct.Struct("<8sII16s")
# used, request id, user id, instance id (zeros: none), worst case, prompt estimate, seen so far,
# len(api), len(model), api, model
_SLOT = struct.Struct("<B7x16s16s16sqqqBB24s150s")
_SEEN_OFFSET = 1 + 7 + 16 * 3 + 8 * 2
_NO_ID = bytes(16)
_NAME = re.compile(r"^inflight-([0-9a-f-]{36})\.journal$")

assert _SLOT.size <= SLOT_SIZE


class JournalError(Exception):
    """A journal file that is not one (wrong magic or layout, truncated)."""


@dataclass(frozen=True, slots=True)
class JournalRecord:
    request_id: str
    user_id: str
    instance_id: str | None
    amount_micros: int  # the request's worst case
    input_estimate_micros: int  # its prompt at the plain input rate, marked up
    api: str
    model: str
    seen_micros: int = 0  # what the stream had cost at the last checkpoint


def journal_path(state_dir: Path, daemon_id: str) -> Path:
    return state_dir / f"inflight-{daemon_id}.journal"


class InflightJournal:
    """This daemon's journal: `add` before forwarding, `remove` once settled."""

    def __init__(self, path: Path, daemon_id: str, slots: int) -> None:
        if slots < 1:
            raise ValueError("a journal needs at least one slot")
        self.path = path
        self.slots = slots
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, HEADER_SIZE + slots * SLOT_SIZE)  # sparse: pages appear when used
            self._map = mmap.mmap(fd, HEADER_SIZE + slots * SLOT_SIZE)
        finally:
            os.close(fd)
        _HEADER.pack_into(self._map, 0, MAGIC, SLOT_SIZE, slots, uuid.UUID(daemon_id).bytes)
        self._free = list(range(slots - 1, -1, -1))  # a stack: the same few pages stay hot

    @property
    def in_use(self) -> int:
        return self.slots - len(self._free)

    def add(self, r: JournalRecord) -> int | None:
        """Write a record; its slot, or None when every slot is taken."""
        if not self._free:
            return None
        slot = self._free.pop()
        api, model = r.api.encode()[:24], r.model.encode()[:150]
        _SLOT.pack_into(
            self._map,
            HEADER_SIZE + slot * SLOT_SIZE,
            0,
            uuid.UUID(r.request_id).bytes,
            uuid.UUID(r.user_id).bytes,
            uuid.UUID(r.instance_id).bytes if r.instance_id else _NO_ID,
            r.amount_micros,
            r.input_estimate_micros,
            r.seen_micros,
            len(api),
            len(model),
            api,
            model,
        )
        self._map[HEADER_SIZE + slot * SLOT_SIZE] = 1  # last: the record is whole
        return slot

    def seen(self, slot: int, micros: int) -> None:
        struct.pack_into("<q", self._map, HEADER_SIZE + slot * SLOT_SIZE + _SEEN_OFFSET, micros)

    def remove(self, slot: int) -> None:
        self._map[HEADER_SIZE + slot * SLOT_SIZE] = 0
        self._free.append(slot)

    def flush(self) -> None:
        """Write the pages to disk (they already survive this process; this is for the host)."""
        self._map.flush()

    def close(self) -> bool:
        """Unmap; delete the file if nothing is left in it. True if deleted."""
        empty = self.in_use == 0
        if empty:
            self.path.unlink(missing_ok=True)
        else:
            self._map.flush()
        self._map.close()
        return empty


def read_journal(path: Path) -> tuple[str, list[JournalRecord]]:
    """(the writing daemon's id, the records left in it) of a journal file."""
    data = path.read_bytes()
    if len(data) < HEADER_SIZE:
        raise JournalError(f"{path}: shorter than its header")
    magic, slot_size, slots, daemon = _HEADER.unpack_from(data, 0)
    if magic != MAGIC or slot_size != SLOT_SIZE or len(data) < HEADER_SIZE + slots * slot_size:
        raise JournalError(f"{path}: not an in-flight journal of this version")
    records = []
    for slot in range(slots):
        offset = HEADER_SIZE + slot * SLOT_SIZE
        if data[offset] != 1:
            continue
        _, rid, user, inst, amount, estimate, seen, n_api, n_model, api, model = _SLOT.unpack_from(
            data, offset
        )
        records.append(
            JournalRecord(
                str(uuid.UUID(bytes=rid)),
                str(uuid.UUID(bytes=user)),
                str(uuid.UUID(bytes=inst)) if inst != _NO_ID else None,
                amount,
                estimate,
                api[:n_api].decode(errors="replace"),
                model[:n_model].decode(errors="replace"),
                seen,
            )
        )
    return str(uuid.UUID(bytes=daemon)), records


def other_journals(state_dir: Path, daemon_id: str) -> list[tuple[Path, str]]:
    """(path, daemon id) of the journals in `state_dir` written by other daemons."""
    try:
        names = os.listdir(state_dir)
    except FileNotFoundError:
        return []
    found = []
    for name in sorted(names):
        match = _NAME.match(name)
        if match and match.group(1) != daemon_id:
            found.append((state_dir / name, match.group(1)))
    return found
