"""An incremental Server-Sent Events parser for relaying upstream streams chunk by chunk.

Follows the WHATWG event-stream rules that matter on our wires: events end at a blank line;
`event:` names the event ("message" if absent); `data:` lines join with "\\n"; one space after the
colon is dropped; `:` lines are comments (pings); `id:`/`retry:`/unknown fields are ignored; an
event without data is not dispatched. \\n, \\r\\n and \\r line endings are accepted.

Hot path: one `bytes.split` per chunk finds the event boundaries; a partial event is kept as a
list of pieces and joined once, when its end arrives, so a large event costs O(size) overall.
"""

from __future__ import annotations

MAX_EVENT_BYTES = 16 * 1024 * 1024
_BOM = b"\xef\xbb\xbf"
_COLON = 58  # ord(":")


def _event(block: bytes) -> tuple[str, bytes] | None:
    name = "message"
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if not line or line[0] == _COLON:
            continue  # stray blank line (3+ newlines in a row) or a comment
        field, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            data.append(value)
        elif field == b"event":
            name = value.decode("utf-8", "replace") or "message"
    if not data:
        return None
    return name, data[0] if len(data) == 1 else b"\n".join(data)


class SSEParser:
    """feed(chunk) -> complete (event name, data) pairs; the incomplete rest stays buffered."""

    __slots__ = ("_cr", "_max", "_parts", "_size", "_started")

    def __init__(self, *, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._max = max_event_bytes
        self._parts: list[bytes] = []  # pieces of the event in progress (newlines normalised)
        self._size = 0
        self._cr = False  # the last chunk ended in "\r": maybe the first half of "\r\n"
        self._started = False

    @property
    def pending(self) -> int:
        """Bytes buffered for the event in progress."""
        return self._size

    def feed(self, chunk: bytes) -> list[tuple[str, bytes]]:
        if self._cr:
            chunk = b"\r" + chunk
            self._cr = False
        if not self._started and chunk:
            self._started = True
            if chunk.startswith(_BOM):
                chunk = chunk[3:]
        if b"\r" in chunk:
            if chunk.endswith(b"\r"):
                chunk = chunk[:-1]
                self._cr = True
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if not chunk:
            return []
        parts = self._parts
        if parts:
            # Join the buffered pieces only once the event in progress has ended.
            if not (b"\n\n" in chunk or (chunk[0] == 10 and parts[-1].endswith(b"\n"))):
                self._keep(chunk)
                return []
            parts.append(chunk)
            chunk = b"".join(parts)
            parts.clear()
            self._size = 0
        blocks = chunk.split(b"\n\n")
        rest = blocks.pop()
        events = []
        for block in blocks:
            if len(block) > self._max:
                self._reset()
                raise ValueError(f"SSE event larger than {self._max} bytes")
            ev = _event(block)
            if ev is not None:
                events.append(ev)
        if rest:
            self._keep(rest)
        return events

    def flush(self) -> list[tuple[str, bytes]]:
        """End of stream: dispatch a final event that lacked its blank line (lenient, for
        metering an abruptly closed stream). A truncated last line is passed on as is."""
        block = b"".join(self._parts)
        self._reset()
        ev = _event(block)
        return [ev] if ev is not None else []

    def _keep(self, piece: bytes) -> None:
        self._parts.append(piece)
        self._size += len(piece)
        if self._size > self._max:
            self._reset()
            raise ValueError(f"SSE event larger than {self._max} bytes")

    def _reset(self) -> None:
        self._parts.clear()
        self._size = 0
        self._cr = False
