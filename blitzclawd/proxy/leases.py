"""Balance leases: requests are admitted in this daemon's memory, against what it holds.

A lease is an amount of one user's balance that this daemon holds in the database
(`balance_leases`, see migration 0009). A request is admitted when its worst-case cost fits in
what the lease has left beside the requests already in flight — no database round trip. Only when
it does not fit does the lease grow, through `lease_grow`, which refuses (BC402) to take the
user's available balance below the minimum: the database still decides every commitment of money,
just not one request at a time.

Bookkeeping, per user:
    amount   what this daemon holds; never more than the database row (consumptions are
             subtracted here when a request finishes, there when its settlement commits)
    held     the worst cases of the requests in flight (held <= amount)
    pending  settlements that consume from the lease and have not committed yet

A finished request gives up what it spent (its cost, at most what it reserved) from `amount`: the
money is gone from the balance, so the lease shrinks by it and the user's available balance stays
where admission left it. An idle lease is released (only with nothing in flight or pending, so the
row and this copy agree); all of them when the daemon stops, or by recovery when it dies.

Several daemons: when a grow is refused while other daemons hold leases on the user, the daemon
asks them (NOTIFY blitzclaw_leases "want:<user>"), each gives back what it holds beyond its
requests in flight and says so ("released:<user>"), and the grow is tried once more — so money
idling in another daemon's lease does not turn a funded user away.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field

import asyncpg

log = logging.getLogger("blitzclawd.leases")

CHANNEL = "blitzclaw_leases"
WANT_WAIT = 0.5  # s a refused grow waits for other daemons to give back before its last try


class InsufficientBalance(Exception):
    """The request's worst case does not fit in what the user may still commit."""


@dataclass(slots=True)
class Lease:
    amount: int = 0
    held: int = 0
    pending: int = 0  # settlements that consume from it and have not committed yet
    pending_micros: int = 0  # what they consume
    used_at: float = 0.0
    growing: int = 0  # admissions in (or waiting for) the slow path
    version: int = 0  # bumped by every change made through the database (grow, give back)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class LeaseBook:
    def __init__(
        self, pool: asyncpg.Pool, daemon_id: str, *, floor_micros: int, headroom_micros: int
    ) -> None:
        self._pool = pool
        self._daemon = uuid.UUID(daemon_id)
        self._floor = floor_micros
        self._headroom = headroom_micros
        self._leases: dict[str, Lease] = {}
        self._listening = False
        self._released: dict[str, asyncio.Event] = {}  # users whose release we are waiting for
        self._giving: set[asyncio.Task[None]] = set()

    # -- other daemons ------------------------------------------------------------------------

    def held_micros(self) -> int:
        """Balance this daemon holds in leases (a gauge for operators)."""
        return sum(lease.amount for lease in self._leases.values())

    def listening(self, on: bool) -> None:
        """Whether notifications reach `notified` (the proxy's listener connection is up)."""
        self._listening = on

    def notified(self, payload: str) -> None:
        """A `blitzclaw_leases` notification: "want|released:<user>:<daemon>"."""
        kind, _, rest = payload.partition(":")
        user_id, _, daemon = rest.partition(":")
        if daemon == str(self._daemon):
            return  # our own
        if kind == "released":
            event = self._released.get(user_id)
            if event is not None:
                event.set()
        elif kind == "want":
            lease = self._leases.get(user_id)
            if lease is not None and lease.amount > lease.held and not lease.growing:
                task = asyncio.ensure_future(self._give_back(user_id, lease))
                self._giving.add(task)
                task.add_done_callback(self._giving.discard)

    async def _give_back(self, user_id: str, lease: Lease) -> None:
        """Give back what the lease holds beyond the requests in flight."""
        async with lease.lock:
            give = lease.amount - lease.held
            if give <= 0:
                return
            lease.amount -= give  # before the await: admissions no longer count on it
            lease.version += 1
            try:
                await self._pool.execute(
                    "SELECT lease_shrink($1, $2, $3)", self._daemon, uuid.UUID(user_id), give
                )
            except Exception as exc:
                lease.amount += give  # not given back: still held there
                log.warning("giving back a lease failed", extra={"error": repr(exc)})
                return
            try:
                await self._notify("released", user_id)
            except Exception as exc:  # given back all the same; the asker retries on timeout
                log.warning("announcing a given-back lease failed", extra={"error": repr(exc)})

    async def _notify(self, kind: str, user_id: str) -> None:
        await self._pool.execute(
            "SELECT pg_notify($1, $2)", CHANNEL, f"{kind}:{user_id}:{self._daemon}"
        )

    async def _ask_others(self, user_id: str) -> bool:
        """Ask the other daemons holding a lease on the user to give back; True if one did."""
        held_elsewhere = await self._pool.fetchval(
            "SELECT EXISTS (SELECT FROM balance_leases WHERE user_id = $1 AND daemon_id <> $2 "
            "AND amount_micros > 0)",
            uuid.UUID(user_id),
            self._daemon,
        )
        if not held_elsewhere or not self._listening:
            return False
        event = self._released.setdefault(user_id, asyncio.Event())
        try:
            await self._notify("want", user_id)
            await asyncio.wait_for(event.wait(), WANT_WAIT)
            return True
        except TimeoutError:
            return False
        finally:
            self._released.pop(user_id, None)

    def get(self, user_id: str) -> Lease | None:
        return self._leases.get(user_id)

    async def admit(self, user_id: str, amount: int) -> None:
        """Hold `amount` for a request of `user_id`, or raise InsufficientBalance."""
        lease = self._leases.get(user_id)
        if lease is None:
            lease = self._leases[user_id] = Lease()
        if lease.held + amount <= lease.amount:  # the fast path: no await at all
            lease.held += amount
            lease.used_at = time.monotonic()
            return
        lease.growing += 1
        try:
            await self._grow_and_hold(user_id, lease, amount)
        finally:
            lease.growing -= 1

    async def _grow_and_hold(self, user_id: str, lease: Lease, amount: int) -> None:
        async with lease.lock:  # one grow per user at a time; the others then fit or grow again
            if lease.held + amount > lease.amount:
                needed = lease.held + amount - lease.amount
                try:
                    granted = await self._grow(user_id, needed)
                except InsufficientBalance:
                    if not await self._ask_others(user_id):
                        raise
                    granted = await self._grow(user_id, needed)  # the last try
                lease.amount += granted
                lease.version += 1
            lease.held += amount
            lease.used_at = time.monotonic()

    async def _grow(self, user_id: str, needed: int) -> int:
        try:
            return await self._pool.fetchval(
                "SELECT lease_grow($1, $2, $3, $4, $5)",
                uuid.UUID(user_id),
                self._daemon,
                needed,
                needed + self._headroom,
                self._floor,
            )
        except asyncpg.PostgresError as exc:
            if getattr(exc, "sqlstate", None) == "BC402":
                raise InsufficientBalance from None
            raise

    def finish(self, user_id: str, reserved: int, consumed: int) -> None:
        """A request admitted with `reserved` is over and spent `consumed` (<= reserved) of it."""
        lease = self._leases.get(user_id)
        if lease is None:  # given back at a stop while the request ran: nothing to account
            return
        lease.held -= reserved
        lease.amount -= consumed
        if consumed:
            lease.pending += 1
            lease.pending_micros += consumed

    def settled(self, user_id: str, consumed: int, *, lease_found: bool) -> None:
        """The settlement of a finished request committed."""
        lease = self._leases.get(user_id)
        if lease is None or not consumed:
            return
        lease.pending -= 1
        lease.pending_micros -= consumed
        if not lease_found:
            # Recovery released our row (we were presumed dead): hold nothing until the next
            # grow, which covers what is still in flight (held) as well.
            log.warning("balance lease lost; regrowing", extra={"user_id": user_id})
            lease.amount = 0

    async def release_idle(self, idle_seconds: float) -> int:
        """Give back the leases nobody used for `idle_seconds`; returns how many."""
        now = time.monotonic()
        idle: list[tuple[str, Lease]] = []
        for user_id, lease in list(self._leases.items()):
            if lease.held or lease.pending or lease.growing:
                continue
            # An empty copy goes too (its row may not be empty after a failure somewhere).
            if not lease.amount or now - lease.used_at >= idle_seconds:
                idle.append((user_id, lease))
        if not idle:
            return 0
        amounts = []
        for _, lease in idle:
            await lease.lock.acquire()  # free (nobody is growing): admissions now wait for us
            amounts.append(lease.amount)
            lease.amount = 0
        try:
            await self._pool.execute(
                "SELECT lease_release($1, $2::uuid[])",
                self._daemon,
                [uuid.UUID(user_id) for user_id, _ in idle],
            )
        except BaseException:
            for (_, lease), amount in zip(idle, amounts, strict=True):
                lease.amount = amount  # still held there: keep using it
            raise
        finally:
            for _, lease in idle:
                lease.version += 1
                lease.lock.release()
        for user_id, lease in idle:
            if self._leases.get(user_id) is lease and not (
                lease.amount or lease.held or lease.pending or lease.growing
            ):
                del self._leases[user_id]  # nothing held here or there: forget it
        return len(idle)

    async def reconcile(self) -> int:
        """Bring down any copy that holds more than its row, less what is pending; a safety net.

        The copy can only be ahead of the row after something went wrong behind its back (the
        daemon was presumed dead and recovery released its leases, a failure half-way through
        giving back). Copies changed while the rows were read are left for the next round.
        """
        versions = {user_id: lease.version for user_id, lease in self._leases.items()}
        if not versions:
            return 0
        rows = {
            r[0]: r[1]
            for r in await self._pool.fetch(
                "SELECT user_id::text, amount_micros FROM balance_leases WHERE daemon_id = $1",
                self._daemon,
            )
        }
        corrected = 0
        for user_id, version in versions.items():
            lease = self._leases.get(user_id)
            if lease is None or lease.version != version or lease.growing:
                continue
            most = max(rows.get(user_id, 0) - lease.pending_micros, 0)
            if lease.amount > most:
                log.warning(
                    "balance lease copy above its row: corrected",
                    extra={"user_id": user_id, "copy_micros": lease.amount, "row_micros": most},
                )
                lease.amount = most
                corrected += 1
        return corrected

    async def release_all(self, keep: set[str] | frozenset[str] = frozenset()) -> None:
        """Stopping: give every lease back, but those of the users in `keep`."""
        if keep:
            await self._pool.execute(
                """SELECT lease_release($1, array(
                       SELECT user_id FROM balance_leases
                       WHERE daemon_id = $1 AND NOT user_id = ANY($2::uuid[])))""",
                self._daemon,
                [uuid.UUID(u) for u in keep],
            )
        else:
            await self._pool.execute("SELECT lease_release($1, NULL)", self._daemon)
        self._leases.clear()
