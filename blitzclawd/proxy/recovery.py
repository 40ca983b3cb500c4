"""Settling what a dead daemon left open, by a rule written down here and in README.

A request in flight has a `reservations` row (its record) until its settlement deletes it, and
its daemon holds a lease on the user's balance. If the daemon dies (SIGKILL, power loss) the
request can never settle itself, and the lease would hold the user's balance forever. Once the
daemon is known dead (its `daemons` row is stopped: a clean stop, a successor on the same host
finding its pid gone, or the janitor after `dead_after` seconds of silence) each of its
reservations is settled as follows, and then its leases are released:

    charge = min(amount reserved, max(checkpointed cost, prompt cost estimate))

- checkpointed cost: the proxy writes, every `billing.checkpoint_interval` seconds, what each
  in-flight stream has cost so far (tokens seen, priced, marked up);
- prompt cost estimate: the prompt at the plain input rate with markup — the upstream bills the
  prompt as soon as it accepts a request, so a request cut off early still cost us that.

The charge is written like any settlement (ledger debit + usage_logs row, `recovered = true`,
`interrupted = true`), idempotent on the request id, and logged. A request whose upstream answer
completed just before the crash is therefore charged exactly once — never lost, never twice —
at a bounded estimate of its real cost. Nothing is ever left silently open or held.
"""

from __future__ import annotations

import logging

import asyncpg

from blitzclawd import ledger
from blitzclawd.runtime.messages import Settlement, SettleResult

log = logging.getLogger("blitzclawd.recovery")

_RELEASE = """
    SELECT d.id::text, lease_release(d.id, NULL) FROM daemons d
    WHERE d.stopped_at IS NOT NULL
      AND EXISTS (SELECT FROM balance_leases l WHERE l.daemon_id = d.id)
"""
_ORPHANS = """
    SELECT r.id::text, r.user_id::text, r.instance_id::text, r.amount_micros, r.seen_micros,
           r.input_estimate_micros, r.api, r.model, r.daemon_id::text
    FROM reservations r JOIN daemons d ON d.id = r.daemon_id
    WHERE d.stopped_at IS NOT NULL
    ORDER BY r.created_at
    LIMIT $1
"""


def recovery_charge(amount: int, seen: int, input_estimate: int) -> int:
    return min(amount, max(seen, input_estimate))


async def recover_orphaned_reservations(
    pool: asyncpg.Pool, minimum_micros: int, *, batch: int = 500, max_batches: int = 1000
) -> list[SettleResult]:
    """Settle every reservation of stopped daemons, release their leases; returns the settled."""
    settled: list[SettleResult] = []
    for _ in range(max_batches):
        rows = await pool.fetch(_ORPHANS, batch)
        if not rows:
            break
        items = [
            Settlement(
                request_id=r[0],
                user_id=r[1],
                instance_id=r[2],
                api=r[6] or "anthropic-messages",
                model=r[7] or "unknown",
                cost_micros=recovery_charge(r[3], r[4], r[5]),
                interrupted=True,
                recovered=True,
                daemon_id=r[8],
                lease_micros=recovery_charge(r[3], r[4], r[5]),
            )
            for r in rows
        ]
        results = await ledger.settle(pool, items, minimum_micros)
        settled.extend(results)
        for item, row, result in zip(items, rows, results, strict=True):
            log.warning(
                "orphaned reservation settled by recovery",
                extra={
                    "request_id": item.request_id,
                    "dead_daemon": row[8],
                    "reserved_micros": row[3],
                    "charged_micros": item.cost_micros,
                    "outcome": result.outcome,
                },
            )
    for row in await pool.fetch(_RELEASE):
        log.info(
            "leases of a stopped daemon released",
            extra={"dead_daemon": row[0], "released_micros": row[1]},
        )
    return settled
