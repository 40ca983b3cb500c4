"""Database records of the requests in flight, for recovery by a daemon on another host.

A request's first record is in its daemon's in-flight journal (blitzclawd.proxy.journal), written
before it is forwarded. Requests still in flight at a checkpoint are also written here, one
`reservations` row per request, in batches by one writer task, so that any daemon can charge them
if this one dies and its host does not come back. A settlement deletes the row; it waits for the
row's write first, so its DELETE never precedes the INSERT.

The rows go through the admission pool (asynchronous commit): a database crash may lose the
newest few, which the journal still holds.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

import asyncpg

from blitzclawd.proxy.journal import JournalRecord as Record

log = logging.getLogger("blitzclawd.records")

BATCH_MAX = 512

_INSERT_ONE = """
    INSERT INTO reservations (id, user_id, instance_id, amount_micros, daemon_id,
                              input_estimate_micros, api, model, seen_micros)
    VALUES ($2, $3, $4, $5, $1, $6, $7, $8, LEAST($9::bigint, $5::bigint))
    ON CONFLICT (id) DO UPDATE SET seen_micros = EXCLUDED.seen_micros
"""
_INSERT = """
    INSERT INTO reservations (id, user_id, instance_id, amount_micros, daemon_id,
                              input_estimate_micros, api, model, seen_micros)
    SELECT r.id, r.user_id, r.instance_id, r.amount, $1, r.estimate, r.api, r.model,
           LEAST(r.seen, r.amount)
    FROM unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::bigint[], $6::bigint[], $7::text[],
                $8::text[], $9::bigint[])
         AS r(id, user_id, instance_id, amount, estimate, api, model, seen)
    ON CONFLICT (id) DO UPDATE SET seen_micros = EXCLUDED.seen_micros
"""


class RecordWriter:
    """One long-lived writer task, on a connection it keeps from its first write to close()."""

    def __init__(self, pool: asyncpg.Pool, daemon_id: str) -> None:
        self._pool = pool
        self._daemon = uuid.UUID(daemon_id)
        self._queue: list[tuple[Record, asyncio.Future[bool]]] = []
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Future[None] | None = None  # the idle writer waits on it
        self._closing = False
        self._conn: asyncpg.pool.PoolConnectionProxy | None = None
        self._kicked = False
        self._unwritten = 0  # records lost in the current failure streak

    @property
    def failing(self) -> bool:
        """The last write failed (the database is unreachable or refusing)."""
        return self._unwritten > 0

    def add(self, record: Record) -> asyncio.Future[bool]:
        """Queue the record; the future says, once known, whether it was written."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self._queue.append((record, future))
        if not self._kicked:
            # One turn of the loop later: the request being admitted is sent upstream first
            # (aiohttp writes its body from a task of its own), then its record.
            self._kicked = True
            loop.call_soon(self._kick)
        return future

    def _kick(self) -> None:
        self._kicked = False
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())
        elif self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def close(self) -> None:
        self._closing = True
        if self._task is None and self._queue:
            self._kick()  # a kick may still be scheduled: write now
        elif self._wake is not None and not self._wake.done():
            self._wake.set_result(None)
        if self._task is not None:
            await asyncio.shield(self._task)
        await self._release()

    async def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._pool.release(conn)

    async def _run(self) -> None:
        """Write what is queued, in batches; then wait for more (no task per batch)."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                while self._queue:
                    batch, self._queue = self._queue[:BATCH_MAX], self._queue[BATCH_MAX:]
                    await self._write(batch)
                if self._closing:
                    return
                self._wake = loop.create_future()
                try:
                    await self._wake
                finally:
                    self._wake = None
        finally:
            self._task = None

    async def _write(self, batch: list[tuple[Record, asyncio.Future[bool]]]) -> None:
        try:
            await self._insert([r for r, _ in batch])
        except Exception as exc:
            if not isinstance(exc, asyncpg.PostgresError):
                await self._release()  # a broken connection: the next batch takes a fresh one
            if len(batch) > 1 and isinstance(exc, asyncpg.PostgresError):
                for one in batch:  # one bad row must not cost the others their record
                    await self._write([one])
                return
            # Once per failure streak (a database outage would otherwise log every request).
            if not self._unwritten:
                log.warning(
                    "in-flight records not written to the database: until they are, only "
                    "this host's journal holds these requests for recovery",
                    extra={"requests": [str(r.request_id) for r, _ in batch], "error": repr(exc)},
                )
            self._unwritten += len(batch)
            for _, future in batch:
                if not future.done():
                    future.set_result(False)
            return
        else:
            if self._unwritten:
                log.warning(
                    "in-flight records are written again", extra={"unwritten": self._unwritten}
                )
                self._unwritten = 0
        for _, future in batch:
            if not future.done():
                future.set_result(True)

    async def _insert(self, records: list[Record]) -> None:
        if self._conn is None:
            self._conn = await self._pool.acquire()
        if len(records) == 1:
            r = records[0]
            await self._conn.execute(
                _INSERT_ONE,
                self._daemon,
                r.request_id,
                r.user_id,
                r.instance_id,
                r.amount_micros,
                r.input_estimate_micros,
                r.api,
                r.model,
                r.seen_micros,
            )
            return
        await self._conn.execute(
            _INSERT,
            self._daemon,
            [r.request_id for r in records],
            [r.user_id for r in records],
            [r.instance_id for r in records],
            [r.amount_micros for r in records],
            [r.input_estimate_micros for r in records],
            [r.api for r in records],
            [r.model for r in records],
            [r.seen_micros for r in records],
        )


async def mark_finished(pool: asyncpg.Pool, request_id: str, cost_micros: int) -> None:
    """The request is over at `cost_micros`: should its settlement never commit, recovery
    charges that (after the settlement's DELETE this changes nothing, as it should)."""
    await pool.execute(
        "UPDATE reservations SET seen_micros = $2, finished = true WHERE id = $1",
        uuid.UUID(request_id),
        cost_micros,
    )


async def delete(pool: asyncpg.Pool, request_id: str) -> None:
    """Drop a record its settlement could not (it was written after the settlement)."""
    await pool.execute("DELETE FROM reservations WHERE id = $1", request_id)


async def update_seen(pool: asyncpg.Pool, request_ids: list[str], costs: list[int]) -> None:
    """What each request has cost so far, for recovery; not for a finished one (its final cost,
    marked meanwhile, is what recovery charges)."""
    await pool.execute(
        """UPDATE reservations r SET seen_micros = LEAST(v.cost, r.amount_micros)
           FROM unnest($1::uuid[], $2::bigint[]) AS v(id, cost)
           WHERE r.id = v.id AND NOT r.finished""",
        [uuid.UUID(r) for r in request_ids],
        costs,
    )
