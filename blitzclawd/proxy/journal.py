"""The in-flight journal: a daemon's crash record of its requests in flight, in a file of its own.

Before a request is forwarded, its record (request id, user, instance, worst case, prompt
estimate, api, model) goes into a slot of a memory-mapped file in the state directory,
`inflight-<daemon id>.journal`. When the request is over, its slot says so and holds its final
cost (`finish`: 0 for a request the upstream refused); the slot is cleared once the request's
settlement has committed. Writing it is a few memory stores: no database round trip, nothing to
wait for, so no request is ever forwarded unrecorded. A SIGKILL loses nothing written (the kernel
holds the file's pages); a power cut may lose what was written since the last `flush` (every
checkpoint). The daemon holds an exclusive flock on its journal while it runs: recovery never
reads a journal that is still in use.

Requests still in flight at a checkpoint are also written to the database (`reservations`), so a
daemon on another host can charge them should this host never come back. When a daemon finds the
journal of a stopped daemon of its database in its state directory, it charges every record left
in it by the recovery rule and deletes the file (blitzclawd.proxy.recovery.recover_journals).

A slot is written field by field with its state byte last and cleared by that byte first, so a
process killed half-way leaves either a whole record or a free slot.
"""

from __future__ import annotations

import fcntl
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
# state, request id, user id, instance id (zeros: none), worst case, prompt estimate, seen so far
# (the final cost once finished), len(api), len(model), api, model
_SLOT = struct.Struct("<B7x16s16s16sqqqBB24s150s")
_SEEN_OFFSET = 1 + 7 + 16 * 3 + 8 * 2
_FREE, _IN_FLIGHT, _FINISHED = 0, 1, 2
_NO_ID = bytes(16)
_NAME = re.compile(
    r"^inflight-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.journal$"
)

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
    seen_micros: int = 0  # what the stream had cost at the last checkpoint; once finished, all
    finished: bool = False  # the request is over and seen_micros is its final cost


def journal_path(state_dir: Path, daemon_id: str) -> Path:
    return state_dir / f"inflight-{daemon_id}.journal"


class InflightJournal:
    """This daemon's journal: `add` before forwarding, `finish` when over, `remove` once settled."""

    def __init__(self, path: Path, daemon_id: str, slots: int) -> None:
        if slots < 1:
            raise ValueError("a journal needs at least one slot")
        self.path = path
        self.slots = slots
        path.parent.mkdir(parents=True, exist_ok=True)
        size = HEADER_SIZE + slots * SLOT_SIZE
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ours while we run
            os.ftruncate(self._fd, 0)
            os.ftruncate(self._fd, size)
            # Real blocks now: a full disk fails here, not later as a SIGBUS on a page store.
            os.posix_fallocate(self._fd, 0, size)
            self._map = mmap.mmap(self._fd, size)
        except BaseException:
            os.close(self._fd)
            path.unlink(missing_ok=True)  # nothing was recorded in it
            raise
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
        self._map[HEADER_SIZE + slot * SLOT_SIZE] = _IN_FLIGHT  # last: the record is whole
        return slot

    def seen(self, slot: int, micros: int) -> None:
        struct.pack_into("<q", self._map, HEADER_SIZE + slot * SLOT_SIZE + _SEEN_OFFSET, micros)

    def finish(self, slot: int, cost_micros: int) -> None:
        """The request is over and cost this much (0: nothing to charge): recovery charges that,
        not its estimate, should its settlement not commit."""
        self.seen(slot, cost_micros)
        self._map[HEADER_SIZE + slot * SLOT_SIZE] = _FINISHED

    def remove(self, slot: int) -> None:
        self._map[HEADER_SIZE + slot * SLOT_SIZE] = _FREE
        self._free.append(slot)

    def sync(self) -> None:
        """Write the pages to disk (they already survive this process; this is for the host).
        fdatasync, not mmap.flush: it lets go of the GIL, so it can run in a thread."""
        os.fdatasync(self._fd)

    def close(self) -> bool:
        """Unmap; delete the file if nothing is left in it. True if deleted."""
        empty = self.in_use == 0
        if empty:
            self.path.unlink(missing_ok=True)
        else:
            self.sync()
        self._map.close()
        os.close(self._fd)  # and with it the lock
        return empty


def read_journal(path: Path) -> tuple[str, list[JournalRecord]]:
    """(the writing daemon's id, the records left in it) of a journal file."""
    return parse_journal(path.read_bytes(), path)


def parse_journal(data: bytes, path: Path) -> tuple[str, list[JournalRecord]]:
    if len(data) < HEADER_SIZE:
        raise JournalError(f"{path}: shorter than its header")
    magic, slot_size, slots, daemon = _HEADER.unpack_from(data, 0)
    if magic != MAGIC or slot_size != SLOT_SIZE or len(data) < HEADER_SIZE + slots * slot_size:
        raise JournalError(f"{path}: not an in-flight journal of this version")
    records = []
    for slot in range(slots):
        offset = HEADER_SIZE + slot * SLOT_SIZE
        if data[offset] not in (_IN_FLIGHT, _FINISHED):
            continue
        state, rid, user, inst, amount, estimate, seen, n_api, n_model, api, model = (
            _SLOT.unpack_from(data, offset)
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
                state == _FINISHED,
            )
        )
    return str(uuid.UUID(bytes=daemon)), records


class JournalInUse(Exception):
    """Its daemon (in another process, or in this one) still holds the journal, or another
    recovery just took it."""


def take_journal(path: Path) -> tuple[int, str, list[JournalRecord]]:
    """Lock a journal another daemon left and read it: (fd holding the lock, writer, records).

    Raises JournalInUse while its daemon still holds it. Close the fd when done with it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JournalInUse(str(path)) from None
        try:
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = None
        if current != os.fstat(fd).st_ino:  # recovered and deleted while we waited to lock it
            raise JournalInUse(str(path))
        return (fd, *parse_journal(os.pread(fd, os.fstat(fd).st_size, 0), path))
    except BaseException:
        os.close(fd)
        raise


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
