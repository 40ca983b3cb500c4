"""Every message actors exchange, in one place, so the protocol reads top to bottom.

Messages are frozen, slotted dataclasses with immutable, typed fields: once sent, neither side
can change what the other sees (a mapping is read-only, never a shared dict).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from blitzclawd.payments.creem import CreemEvent

# An email fact: JSON-friendly, as the notifier stores it (blitzclawd.notify.templates).
Fact = str | int | float | bool | None | list | dict


@dataclass(frozen=True, slots=True)
class Tick:
    """A periodic timer fired; `timer` names which one (an actor may run several)."""

    timer: str


@dataclass(frozen=True, slots=True)
class Settlement:
    """One proxy request's final bill, for the billing actor (the ledger's writer of record).

    Token counters are what the upstream reported (or, for an interrupted stream, what was seen);
    cost_micros is already marked up. Idempotent on request_id.
    """

    request_id: str
    user_id: str
    instance_id: str | None
    api: str  # "anthropic-messages" | "openai-chat" | "openai-responses"
    model: str
    cost_micros: int
    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    cache_read_tokens: int = 0
    reasoning_tokens: int = 0
    # Audio tokens (parts of input/output), server-side tool uses billed per use, and the tier
    # that served the request (as the upstream reported it).
    audio_input_tokens: int = 0
    audio_output_tokens: int = 0
    web_search_requests: int = 0
    web_fetch_requests: int = 0
    file_search_calls: int = 0
    service_tier: str | None = None
    upstream_request_id: str | None = None
    status_code: int | None = None
    duration_ms: int = 0
    interrupted: bool = False
    recovered: bool = False
    # The daemon whose balance lease admitted the request, and what the settlement consumes of
    # that lease: the cost, at most what the request reserved (0 for a void).
    daemon_id: str | None = None
    lease_micros: int = 0


@dataclass(frozen=True, slots=True)
class SettleResult:
    request_id: str
    outcome: str  # "settled" | "recovered" | "voided" | "duplicate"
    user_id: str
    balance_micros: int | None  # after the debit; None when nothing was debited
    paused: int  # instances this settlement paused (the user fell below the minimum)
    auto_topup_micros: int | None = None  # this debit crossed the auto-top-up threshold
    # False when the settlement was to consume a lease its daemon no longer holds (recovery
    # released it): that daemon must stop admitting against its copy.
    lease_found: bool = True


@dataclass(frozen=True, slots=True)
class Adjust:
    """An operator's manual ledger adjustment (asked of billing, money's one writer; answered
    with blitzclawd.ledger.Adjusted). `key` makes a retried request apply once."""

    user_id: str
    amount_micros: int
    reason: str
    key: str


@dataclass(frozen=True, slots=True)
class RecoverOrphans:
    """Charge what stopped daemons left in `reservations` (the janitor asks after each sweep;
    billing, money's one writer, charges)."""


@dataclass(frozen=True, slots=True)
class BalanceDepleted:
    """A settlement left the user below the minimum: their instances are paused (for notifier)."""

    user_id: str
    balance_micros: int
    paused_instances: int


@dataclass(frozen=True, slots=True)
class Notify:
    """Email `kind` to the user, at most once per `period` (for the notifier actor); with `to`,
    an email about the user to that address instead (an operator's alert)."""

    user_id: str
    kind: str  # a template of blitzclawd.notify.templates
    period: str  # what makes this kind due again: "once", "2026-W48", "credit:1234", ...
    facts: Mapping[str, Fact] = field(default_factory=lambda: MappingProxyType({}))
    to: str | None = None

    def __post_init__(self) -> None:
        # A read-only copy: the sender's dict stays the sender's.
        object.__setattr__(self, "facts", MappingProxyType(dict(self.facts)))


@dataclass(frozen=True, slots=True)
class CreemWebhook:
    """A verified, parsed Creem event for the billing actor to apply (one transaction)."""

    event: CreemEvent


@dataclass(frozen=True, slots=True)
class LowBalance:
    """A settlement took the balance under the minimum plus the warning margin."""

    user_id: str
    balance_micros: int


@dataclass(frozen=True, slots=True)
class AutoTopupDue:
    """The balance crossed the user's auto-top-up threshold: email them a prepared checkout."""

    user_id: str
    balance_micros: int
    amount_micros: int


@dataclass(frozen=True, slots=True)
class Provision:
    """An operator asks for `count` more servers now (within fleet.max_size); asked, answered
    with how many were created."""

    count: int


@dataclass(frozen=True, slots=True)
class Drain:
    """An operator empties the pool: the pool is held (no spare servers are made again until
    resumed) and up to `count` (None: all) of its ready, unassigned servers, in `location` (None:
    any), are deleted; asked, answered with Drained. `actor` is who, for the hold."""

    count: int | None
    location: str | None
    actor: str


@dataclass(frozen=True, slots=True)
class Drained:
    """What a Drain deleted, and what it could not (still `deleting`: the next pass retries)."""

    deleted: tuple[str, ...]
    failed: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SweepNow:
    """An operator asks for a health sweep now; asked, answered with its SweepReport."""


@dataclass(frozen=True, slots=True)
class PoolCheck:
    """Run a pool pass now (the instances API took a server, or found none). A pass that
    started after `at` (time.monotonic() when it was sent) has seen what it was sent for: the
    pool manager answers with that pass's report instead of running another, so a burst of
    creates costs a pass or two, not one each."""

    reason: str = ""
    at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True, slots=True)
class JobsQueued:
    """Instance jobs were queued: the provisioner claims what it can now instead of next poll."""


@dataclass(frozen=True, slots=True)
class NotificationQueued:
    """A `notifications` row was written in the transaction of what it tells (a job's final
    failure): the notifier sends it now instead of at its next sweep."""

    notification_id: int
