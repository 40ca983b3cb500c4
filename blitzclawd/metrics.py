"""Prometheus metrics of one daemon (prometheus-client), served at ``GET /metrics`` on the API
listener to an operator (the admin key; instances only ever reach the proxy listener).

Two kinds, on the daemon's own registry (several daemons may share a process in tests):

- **This daemon's counters**, counted where things happen: proxied requests by API, model and
  upstream status, their duration, tokens by kind, what users were charged and what the same
  usage costs us upstream at list price (revenue and cost), admission refusals by reason. The
  proxy's are counted once per request, in its finish step, on label children cached per
  (api, model), so the hot path pays a dict lookup and a few adds.
- **Gauges read at scrape time**: what is in flight in this daemon (requests, journal slots,
  leases held, settlements pending), its actors' restarts, and the fleet's state from the
  database (pool servers by status, jobs by kind and outcome, health check results, emails by
  kind and outcome, webhook events by source and outcome) - shared by every daemon, so scrape
  one daemon for those (they carry no daemon label).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

CONTENT_TYPE = CONTENT_TYPE_LATEST
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TOKEN_KINDS = ("input", "output", "cache_read", "cache_write", "reasoning")


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.proxy_requests = Counter(
            "blitzclaw_proxy_requests",
            "Proxied model requests by API, model and upstream status (0: never reached it)",
            ["api", "model", "status"],
            registry=r,
        )
        self.proxy_seconds = Histogram(
            "blitzclaw_proxy_request_seconds",
            "Proxied request duration, first byte in to last byte out",
            ["api"],
            buckets=_SECONDS,
            registry=r,
        )
        self.tokens = Counter(
            "blitzclaw_tokens",
            "Tokens metered by API, model and kind",
            ["api", "model", "kind"],
            registry=r,
        )
        self.charged = Counter(
            "blitzclaw_charged_usd",
            "What users were charged for proxied usage (marked up): revenue",
            ["api", "model"],
            registry=r,
        )
        self.upstream_cost = Counter(
            "blitzclaw_upstream_cost_usd",
            "What the same usage costs at the provider's list price: cost",
            ["api", "model"],
            registry=r,
        )
        self.refusals = Counter(
            "blitzclaw_admission_refusals",
            "Requests refused before going upstream, by reason",
            ["reason"],
            registry=r,
        )
        self.inflight = Gauge(
            "blitzclaw_proxy_inflight", "Requests in flight in this daemon", registry=r
        )
        self.journal_slots = Gauge(
            "blitzclaw_journal_slots_used", "In-flight journal slots in use", registry=r
        )
        self.leases_held = Gauge(
            "blitzclaw_leases_held_usd", "Balance held by this daemon's leases", registry=r
        )
        self.settlements_pending = Gauge(
            "blitzclaw_settlements_pending", "Settlements not yet committed", registry=r
        )
        self.actor_restarts = Gauge(
            "blitzclaw_actor_restarts", "Restarts of each actor since start", ["actor"], registry=r
        )
        self.pool_servers = Gauge(
            "blitzclaw_pool_servers", "Pool servers by status", ["status"], registry=r
        )
        self.jobs = Gauge(
            "blitzclaw_jobs", "Instance jobs by kind and status", ["kind", "status"], registry=r
        )
        self.job_seconds = Gauge(
            "blitzclaw_job_seconds_avg",
            "Average duration of finished jobs of the last day, by kind",
            ["kind"],
            registry=r,
        )
        self.health_checks = Gauge(
            "blitzclaw_health_alerts", "Health alerts raised, by kind", ["kind"], registry=r
        )
        self.health = Gauge(
            "blitzclaw_instance_health",
            "Instances by the result of their last health check",
            ["state"],
            registry=r,
        )
        self.instances = Gauge("blitzclaw_instances", "Instances by status", ["status"], registry=r)
        self.emails = Gauge(
            "blitzclaw_emails", "Emails by kind and outcome", ["kind", "outcome"], registry=r
        )
        self.webhooks = Gauge(
            "blitzclaw_webhook_events",
            "Webhook events received, by source and outcome",
            ["source", "outcome"],
            registry=r,
        )
        self._per_model: dict[tuple[str, str], _ModelCounters] = {}

    def model(self, api: str, model: str) -> _ModelCounters:
        """The counters of one (api, model), made once (label lookups stay off the hot path)."""
        found = self._per_model.get((api, model))
        if found is None:
            if len(self._per_model) >= 1000:  # models come from requests: bound the labels
                model = "other"
                found = self._per_model.get((api, model))
            if found is None:
                found = _ModelCounters(self, api, model)
                self._per_model[(api, model)] = found
        return found

    def set_labelled(self, gauge: Gauge, rows: list[Any], *labels: str) -> None:
        """A gauge's values from rows of (labels..., value), replacing what it held."""
        gauge.clear()
        for row in rows:
            gauge.labels(*(str(row[name]) for name in labels)).set(row["value"])

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _ModelCounters:
    __slots__ = ("charged", "cost", "requests", "seconds", "status", "tokens")

    def __init__(self, metrics: Metrics, api: str, model: str) -> None:
        self.charged = metrics.charged.labels(api, model)
        self.cost = metrics.upstream_cost.labels(api, model)
        self.seconds = metrics.proxy_seconds.labels(api)
        self.tokens = {kind: metrics.tokens.labels(api, model, kind) for kind in TOKEN_KINDS}
        self.requests: Callable[[str], Any] = lambda status: metrics.proxy_requests.labels(
            api, model, status
        )
        self.status: dict[int, Any] = {}

    def request(self, status: int) -> Any:
        child = self.status.get(status)
        if child is None:
            child = self.status[status] = self.requests(str(status))
        return child
