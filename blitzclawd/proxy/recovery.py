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

A daemon's requests in flight are recorded first in its own in-flight journal, a file in its state
directory (blitzclawd.proxy.journal), and in `reservations` only once they are still in flight at
a checkpoint. The same rule charges both: a daemon charges the records left in the journals of
stopped daemons of its database found in its state directory (a restart on the same host; first
thing at start-up, before their leases are released), and any daemon charges the `reservations`
rows of stopped daemons. A journal also knows the requests that were over: those are charged
their final cost (nothing, for one the upstream refused). A request in both places is charged
once (settlement is idempotent on the request id).
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

import asyncpg

from blitzclawd import ledger
from blitzclawd.proxy.journal import (
    JournalError,
    JournalInUse,
    JournalRecord,
    other_journals,
    take_journal,
)
from blitzclawd.runtime.messages import Settlement, SettleResult

log = logging.getLogger("blitzclawd.recovery")

_RELEASE = """
    SELECT d.id::text, lease_release(d.id, NULL) FROM daemons d
    WHERE d.stopped_at IS NOT NULL
      AND EXISTS (SELECT FROM balance_leases l WHERE l.daemon_id = d.id)
"""
_ORPHANS = """
    SELECT r.id::text, r.user_id::text, r.instance_id::text, r.amount_micros, r.seen_micros,
           r.input_estimate_micros, r.api, r.model, r.daemon_id::text, r.finished
    FROM reservations r JOIN daemons d ON d.id = r.daemon_id
    WHERE d.stopped_at IS NOT NULL
    ORDER BY r.created_at
    LIMIT $1
"""


def recovery_charge(amount: int, seen: int, input_estimate: int) -> int:
    return min(amount, max(seen, input_estimate))


def recovered_settlement(r: JournalRecord, daemon_id: str) -> Settlement:
    """The settlement recovery writes for a request its dead daemon left unsettled (from its
    journal or its database record): one that was over is charged its final cost (a void: 0,
    nothing), one cut in flight by the rule."""
    charge = (
        r.seen_micros
        if r.finished
        else recovery_charge(r.amount_micros, r.seen_micros, r.input_estimate_micros)
    )
    return Settlement(
        request_id=r.request_id,
        user_id=r.user_id,
        instance_id=r.instance_id,
        api=r.api or "anthropic-messages",
        model=r.model or "unknown",
        cost_micros=charge,
        interrupted=not r.finished,
        recovered=True,
        daemon_id=daemon_id,
        lease_micros=min(charge, r.amount_micros),
    )


def _log_recovered(item: Settlement, result: SettleResult, source: str) -> None:
    log.warning(
        "orphaned reservation settled by recovery",
        extra={
            "request_id": item.request_id,
            "dead_daemon": item.daemon_id,
            "source": source,
            "charged_micros": item.cost_micros,
            "outcome": result.outcome,
        },
    )


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
            recovered_settlement(
                JournalRecord(r[0], r[1], r[2], r[3], r[5], r[6] or "", r[7] or "", r[4], r[9]),
                r[8],
            )
            for r in rows
        ]
        results = await ledger.settle(pool, items, minimum_micros)
        settled.extend(results)
        for item, result in zip(items, results, strict=True):
            _log_recovered(item, result, "database")
    for row in await pool.fetch(_RELEASE):
        log.info(
            "leases of a stopped daemon released",
            extra={"dead_daemon": row[0], "released_micros": row[1]},
        )
    return settled


async def recover_journals(
    pool: asyncpg.Pool, state_dir: Path, daemon_id: str, minimum_micros: int, *, batch: int = 500
) -> list[SettleResult]:
    """Charge what the journals of stopped daemons in `state_dir` hold; delete those journals.

    A request that was over when its daemon died is charged its final cost (0 for one the
    upstream refused: nothing); one still in flight by the recovery rule. A journal whose daemon is
    not in this database belongs to another one and is left alone, as is one whose daemon is not
    known to be stopped yet or still holds it (the next round takes it). Records that cannot be
    charged at all are logged and their journal kept as `<name>.failed` for an operator.
    """
    settled: list[SettleResult] = []
    for path, owner in other_journals(state_dir, daemon_id):
        stopped = await pool.fetchval(
            "SELECT stopped_at IS NOT NULL FROM daemons WHERE id = $1", uuid.UUID(owner)
        )
        if not stopped:
            continue
        try:
            fd, writer, records = take_journal(path)
        except JournalInUse:
            continue  # stopped in the database, yet running: not ours to charge
        except (JournalError, OSError) as exc:
            log.error("unreadable in-flight journal left as it is", extra={"error": str(exc)})
            continue
        try:
            failed = 0
            for start in range(0, len(records), batch):
                chunk = records[start : start + batch]
                results, bad = await _settle_records(pool, writer, chunk, minimum_micros)
                settled.extend(results)
                failed += bad
            if failed:
                path.rename(path.with_name(path.name + ".failed"))
                log.error(
                    "in-flight journal records could not be charged; journal kept for an operator",
                    extra={"journal": str(path) + ".failed", "records": failed},
                )
            else:
                path.unlink(missing_ok=True)
            log.info(
                "in-flight journal of a stopped daemon recovered",
                extra={"dead_daemon": writer, "records": len(records)},
            )
        finally:
            os.close(fd)
    return settled


async def _settle_records(
    pool: asyncpg.Pool, writer: str, records: list[JournalRecord], minimum_micros: int
) -> tuple[list[SettleResult], int]:
    """Settle journal records together, or one by one if that fails: (results, failures)."""
    items = [recovered_settlement(r, writer) for r in records]
    try:
        pairs = list(zip(items, await ledger.settle(pool, items, minimum_micros), strict=True))
    except asyncpg.PostgresError:
        pairs, failed = [], 0
        for item in items:
            try:
                (result,) = await ledger.settle(pool, [item], minimum_micros)
            except asyncpg.PostgresError as exc:
                if not _refused_for_good(exc):
                    raise  # the database is unwell, not the record: the next round retries
                failed += 1
                log.error(
                    "a journal record cannot be charged",
                    extra={"request_id": item.request_id, "error": repr(exc)},
                )
                continue
            pairs.append((item, result))
    else:
        failed = 0
    for item, result in pairs:
        _log_recovered(item, result, "journal")
    return [result for _, result in pairs], failed


def _refused_for_good(exc: asyncpg.PostgresError) -> bool:
    """The record itself is refused (bad data, a constraint, our own check), not the moment."""
    state = getattr(exc, "sqlstate", None) or ""
    return state[:2] in ("22", "23") or state == "P0001"
