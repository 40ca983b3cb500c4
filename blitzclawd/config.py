"""blitzclawd.toml -> typed, frozen settings; secrets from the environment or credential files.

Settings are plain frozen dataclasses: the field list IS the schema. The loader walks the TOML
against those dataclasses, so an unknown key or a wrong type is reported with its full key path
(``api.port: expected an integer, got "80"``) and every problem is reported at once.

Secrets never come from the TOML (it is world-readable config, often in git). Each secret is read
from, in order: ``$BLITZCLAW_<NAME>``, the file named by ``$BLITZCLAW_<NAME>_FILE``, or
``$CREDENTIALS_DIRECTORY/<name>`` (systemd's ``LoadCredential=``).

Why one module: every setting's schema, default and check, and the loader that reports them by key
path: one table an operator reads next to blitzclawd.toml.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "BLITZCLAW_"
# An address Resend takes: one @, a dotted domain, no spaces or angle brackets (no display name).
_EMAIL = re.compile(r"[^@\s<>,]+@[^@\s<>,]+\.[^@\s<>,.]+", re.ASCII)
DEFAULT_CONFIG_PATHS = (Path("/etc/blitzclawd/blitzclawd.toml"),)


class ConfigError(Exception):
    """Every problem found in a configuration, each naming its key path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _range(lo: float | None = None, hi: float | None = None) -> dict[str, Any]:
    return {"min": lo, "max": hi}


def _choices(*values: str) -> dict[str, Any]:
    return {"choices": values}


@dataclass(frozen=True, slots=True)
class DaemonSettings:
    # Empty: $STATE_DIRECTORY (systemd), else /var/lib/blitzclawd as root, else
    # ~/.local/state/blitzclawd. Holds the embedded PostgreSQL cluster when no database URL is set.
    state_dir: str = ""
    log_level: str = field(default="info", metadata=_choices("debug", "info", "warning", "error"))
    log_format: str = field(default="json", metadata=_choices("json", "text"))
    # Seconds in-flight HTTP requests get to finish after SIGTERM before they are cut.
    shutdown_grace: float = field(default=10.0, metadata=_range(0, 3600))
    # Liveness row in the `daemons` table; peers presume a daemon dead after `dead_after` s.
    heartbeat_interval: float = field(default=2.0, metadata=_range(0.05, 3600))
    dead_after: float = field(default=15.0, metadata=_range(0.1, 86400))


@dataclass(frozen=True, slots=True)
class ListenerSettings:
    host: str = "127.0.0.1"
    port: int = field(default=8080, metadata=_range(0, 65535))


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    pool_min: int = field(default=2, metadata=_range(1, 1000))
    pool_max: int = field(default=20, metadata=_range(1, 1000))
    # Embedded cluster only: the unprivileged user PostgreSQL runs as when the daemon is root.
    # Empty: "postgres" if that user exists, else "nobody".
    embedded_user: str = ""


@dataclass(frozen=True, slots=True)
class SupervisorSettings:
    # Erlang's restart intensity: more than max_restarts within `within` seconds -> exit non-zero.
    max_restarts: int = field(default=3, metadata=_range(0, 1000))
    within: float = field(default=5.0, metadata=_range(0.001, 86400))
    backoff_base: float = field(default=0.1, metadata=_range(0, 60))
    backoff_max: float = field(default=5.0, metadata=_range(0, 3600))
    # How often a standby daemon tries to take over a singleton actor's advisory lock.
    singleton_poll: float = field(default=1.0, metadata=_range(0.01, 60))


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    # Where the proxy forwards, with the master keys (secrets anthropic_api_key, openai_api_key).
    anthropic_url: str = "https://api.anthropic.com"
    openai_url: str = "https://api.openai.com"
    connect_timeout: float = field(default=10.0, metadata=_range(0.01, 600))
    # Longest silence tolerated between two chunks of an upstream answer (thinking can be slow).
    read_timeout: float = field(default=300.0, metadata=_range(0.01, 3600))
    # Pooled keep-alive connections to the upstreams, all streams included.
    max_connections: int = field(default=4096, metadata=_range(1, 100000))


@dataclass(frozen=True, slots=True)
class BillingSettings:
    # Admission keeps every user's available balance (balance - what daemons hold for requests)
    # at or above this; a settlement that leaves the balance below it pauses the user's instances.
    minimum_balance_usd: float = field(default=10.0, metadata=_range(0, 1_000_000))
    # USD a daemon holds of an active user's balance beyond the request that made it ask (its
    # lease), so that the following requests are admitted without a database round trip. Never
    # more than the user's balance above the minimum.
    lease_headroom_usd: float = field(default=1.0, metadata=_range(0, 1_000_000))
    # Seconds after which an unused lease is given back to the user's available balance.
    lease_idle_seconds: float = field(default=60.0, metadata=_range(0, 86400))
    # Seconds between checkpoints of the tokens in-flight streams have used (crash recovery);
    # requests still in flight at a checkpoint are recorded in the database as well.
    checkpoint_interval: float = field(default=1.0, metadata=_range(0.05, 3600))
    # Requests one daemon may have in flight at once (each has a slot of 256 bytes in its
    # in-flight journal, a file in the state directory); more are refused with 503.
    max_in_flight: int = field(default=65536, metadata=_range(1, 1_000_000))
    # Most settlements committed in one transaction (group commit).
    settle_batch_max: int = field(default=256, metadata=_range(1, 10000))
    # Seconds a settlement waits for others to share its transaction (0: at the next turn of the
    # event loop). Clients never wait for it.
    settle_linger: float = field(default=0.007, metadata=_range(0, 1))
    # Top-up bounds in cents (the spec's minimum is $10).
    topup_min_cents: int = field(default=1000, metadata=_range(1, 10**9))
    topup_max_cents: int = field(default=100_000, metadata=_range(1, 10**9))
    # What a paid month of the subscription credits as included usage (spec: $20 includes ~$10).
    subscription_included_usd: float = field(default=10.0, metadata=_range(0, 1_000_000))
    # The plan's monthly price as the dashboard offers it (what is charged is Creem's product's).
    subscription_price_usd: float = field(default=20.0, metadata=_range(0, 1_000_000))


@dataclass(frozen=True, slots=True)
class AuthSettings:
    # Clerk's keys: https://api.clerk.com/v1/jwks (sent the clerk_secret_key secret) or your
    # frontend API's /.well-known/jwks.json.
    clerk_jwks_url: str = "https://api.clerk.com/v1/jwks"
    # Clerk's Backend API, for user lookups (email address and its verification); sent the
    # clerk_secret_key secret.
    clerk_api_url: str = "https://api.clerk.com/v1"
    # Refuse API calls of users whose primary email Clerk reports as not verified (403).
    require_verified_email: bool = True
    # Origins allowed in a session token's `azp` claim (your dashboard's URLs).
    allowed_origins: tuple[str, ...] = ("http://localhost:3000",)
    # Expected `iss` of session tokens (your Clerk frontend API URL); empty: not checked.
    clerk_issuer: str = ""
    # Clerk user ids with the admin role (operator endpoints), besides users.role = 'admin' and
    # the admin_api_key secret.
    admin_user_ids: tuple[str, ...] = ()
    # The dashboard's sign-in: Clerk's frontend API (https://clerk.<your domain>, where ClerkJS
    # is loaded from) and the publishable key; empty: the sign-in page says it is not set up.
    clerk_frontend_api: str = ""
    clerk_publishable_key: str = ""


@dataclass(frozen=True, slots=True)
class CreemSettings:
    api_url: str = "https://api.creem.io"
    # The one-time "BlitzClaw Credits" product; a top-up buys amount / unit_cents units of it.
    product_id: str = ""
    unit_cents: int = field(default=100, metadata=_range(1, 100000))
    # Where Creem sends the user after paying (the dashboard).
    success_url: str = "http://localhost:3000/dashboard?topup=done"
    # The recurring base plan (spec: $20/month including $10 of usage, billing.
    # subscription_included_usd); empty: POST /api/billing/subscribe answers 503 not_configured.
    subscription_product_id: str = ""
    # Where Creem sends the user after subscribing.
    subscription_success_url: str = "http://localhost:3000/dashboard?subscribed=1"


@dataclass(frozen=True, slots=True)
class TelegramSettings:
    # The Bot API that checks a user's bot token (getMe) before an instance is set up with it.
    api_url: str = "https://api.telegram.org"
    # Seconds that check may take before the user is told Telegram cannot be reached.
    timeout: float = field(default=10.0, metadata=_range(0.1, 120))


@dataclass(frozen=True, slots=True)
class NotifySettings:
    resend_url: str = "https://api.resend.com"
    sender: str = "BlitzClaw <hello@blitzclaw.com>"
    app_url: str = "http://localhost:3000"
    support_url: str = "mailto:support@blitzclaw.com"
    # "Balance low" goes out when the balance falls below the minimum plus this (USD).
    low_balance_margin_usd: float = field(default=5.0, metadata=_range(0, 1_000_000))
    # Seconds between sweeps for emails due (retries with backoff, weekly digests).
    sweep_interval: float = field(default=30.0, metadata=_range(0.05, 86400))


GOOGLE_SCOPES = (
    "openid",
    "email",
    "https://www.googleapis.com/auth/gmail.readonly",
    "https://www.googleapis.com/auth/calendar.readonly",
)


@dataclass(frozen=True, slots=True)
class GoogleSettings:
    # Google OAuth for users' assistants (/api/integrations). Off (503 not_configured) until
    # client_id and the google_client_secret secret are both set.
    client_id: str = ""
    authorization_url: str = "https://accounts.google.com/o/oauth2/v2/auth"
    token_url: str = "https://oauth2.googleapis.com/token"
    revoke_url: str = "https://oauth2.googleapis.com/revoke"
    userinfo_url: str = "https://openidconnect.googleapis.com/v1/userinfo"
    scopes: tuple[str, ...] = GOOGLE_SCOPES
    # Where Google sends the browser back; empty: <notify.app_url>/integrations/google/callback
    # (register exactly this URL with the OAuth client at Google).
    redirect_url: str = ""
    # Seconds between refresh rounds; access tokens expiring within refresh_margin seconds are
    # refreshed (by the one daemon running the janitor).
    refresh_interval: float = field(default=60.0, metadata=_range(0.05, 86400))
    refresh_margin: float = field(default=600.0, metadata=_range(0, 86400))
    # Seconds one call to Google may take.
    timeout: float = field(default=15.0, metadata=_range(0.1, 120))


def google_redirect_url(s: Settings) -> str:
    return s.google.redirect_url or s.notify.app_url.rstrip("/") + "/integrations/google/callback"


@dataclass(frozen=True, slots=True)
class WebSettings:
    # The operator's own terms of service and privacy policy, shown at /terms and /privacy:
    # files of plain text or Markdown (shown as written, escaped, at most 1 MB), checked when the
    # page is asked for (kept while unchanged), so an edit shows without a restart. Absolute
    # paths (a service's working directory is /). Empty or unreadable: the page says they are
    # not published yet.
    terms_path: str = ""
    privacy_path: str = ""


@dataclass(frozen=True, slots=True)
class LimitsSettings:
    # Per instance; an instance's own limits (instances.msgs_per_hour/tokens_per_day) override.
    messages_per_hour: int = field(default=100, metadata=_range(0, 10**9))
    tokens_per_day: int = field(default=1_000_000, metadata=_range(0, 10**15))
    # POST /v1/messages/count_tokens (free upstream, so not billed): calls a minute per instance.
    count_tokens_per_minute: int = field(default=60, metadata=_range(0, 10**6))
    # The API listener (not the proxy): requests a minute per client address and per user
    # (bursts up to that many at once); beyond, 429 with Retry-After. 0: no limit.
    api_per_ip_per_minute: int = field(default=1200, metadata=_range(0, 10**7))
    api_per_user_per_minute: int = field(default=600, metadata=_range(0, 10**7))


@dataclass(frozen=True, slots=True)
class AlertsSettings:
    # Usage spikes: an instance whose spend in the last hour is above `spike_factor` times its
    # own hourly average over the `spike_baseline_hours` before, and above `spike_floor_usd`
    # (tiny users never alert), raises one alert per instance per clock hour: its owner is
    # emailed, operators see it (log, live events); `spike_pause` also pauses the instance.
    spike_factor: float = field(default=5.0, metadata=_range(1, 10**6))
    spike_floor_usd: float = field(default=1.0, metadata=_range(0, 10**6))
    spike_baseline_hours: int = field(default=24, metadata=_range(1, 24 * 30))
    spike_pause: bool = False
    # Seconds between spike checks (on the janitor's sweeps, at most this often).
    spike_check_interval: float = field(default=60.0, metadata=_range(1, 86400))
    # Operators' addresses: each gets its own email per usage spike and per user whose balance
    # ran out mid-conversation (their instances paused). Empty: operators are not emailed.
    operator_emails: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RateSettings:
    # A service tier's list prices in USD per million tokens; no input price: not offered.
    input: float | None = None
    output: float | None = None
    cache_write_5m: float | None = None  # left out: plain input (OpenAI has no cache writes)
    cache_write_1h: float | None = None
    cache_read: float | None = None


@dataclass(frozen=True, slots=True)
class LongContextSettings:
    # Above `threshold` input tokens every token of the request is billed at these rates (USD per
    # Mtok); a request may then read up to `context_window` tokens. threshold 0: none.
    threshold: int = field(default=0, metadata=_range(0, 10**9))
    context_window: int = field(default=0, metadata=_range(0, 10**9))
    beta: str = ""  # the anthropic-beta value that enables it; "" = always on
    input: float = field(default=0.0, metadata=_range(0))
    output: float = field(default=0.0, metadata=_range(0))
    cache_write_5m: float = field(default=0.0, metadata=_range(0))
    cache_write_1h: float = field(default=0.0, metadata=_range(0))
    cache_read: float = field(default=0.0, metadata=_range(0))


@dataclass(frozen=True, slots=True)
class ModelPriceSettings:
    # List prices in USD per million tokens, exact (decimal), before the markup.
    id: str = ""
    api: str = field(default="anthropic", metadata=_choices("anthropic", "openai"))
    input: float = field(default=0.0, metadata=_range(0))
    output: float = field(default=0.0, metadata=_range(0))
    cache_write_5m: float | None = None
    cache_write_1h: float | None = None
    cache_read: float | None = None
    max_output_tokens: int = field(default=64000, metadata=_range(1, 10**7))
    # Most input tokens one model call reads; 0: unknown (requests pulling in server-side
    # context — files, stored conversations, server tools — are then refused).
    context_window: int = field(default=0, metadata=_range(0, 10**9))
    audio_input: float | None = None  # audio tokens' own rates; none: audio is refused
    audio_output: float | None = None
    long_context: LongContextSettings = LongContextSettings()
    # Capabilities instances' OpenClaw is told about: extended thinking / reasoning effort, and
    # the input kinds it reads ("text", "image", "audio", "video"; text always).
    reasoning: bool = False
    modalities: tuple[str, ...] = ("text", "image")
    priority: RateSettings = RateSettings()  # OpenAI service_tier "priority"
    flex: RateSettings = RateSettings()  # OpenAI service_tier "flex"


def _default_models() -> tuple[ModelPriceSettings, ...]:
    from blitzclawd.metering.pricing import Rates, default_prices

    def usd(v: int) -> float:
        return v / 1e6

    def tier(r: Rates | None) -> RateSettings:
        if r is None:
            return RateSettings()
        # OpenAI tiers: no cache-write price (a write costs plain input).
        return RateSettings(usd(r.input), usd(r.output), cache_read=usd(r.cache_read))

    out = []
    for p in default_prices():
        lc = p.long_context
        long = LongContextSettings()
        if lc is not None:
            long = LongContextSettings(
                lc.threshold,
                lc.context_window,
                lc.beta,
                usd(lc.rates.input),
                usd(lc.rates.output),
                usd(lc.rates.cache_write_5m),
                usd(lc.rates.cache_write_1h),
                usd(lc.rates.cache_read),
            )
        out.append(
            ModelPriceSettings(
                id=p.model,
                api=p.api,
                input=usd(p.input),
                output=usd(p.output),
                cache_write_5m=usd(p.cache_write_5m),
                cache_write_1h=usd(p.cache_write_1h),
                cache_read=usd(p.cache_read),
                max_output_tokens=p.max_output_tokens,
                context_window=p.context_window,
                audio_input=None if p.audio_input is None else usd(p.audio_input),
                audio_output=None if p.audio_output is None else usd(p.audio_output),
                long_context=long,
                reasoning=p.reasoning,
                modalities=p.modalities,
                priority=tier(p.tier("priority")),
                flex=tier(p.tier("flex")),
            )
        )
    return tuple(out)


@dataclass(frozen=True, slots=True)
class FeeSettings:
    # Server-side tools billed per use, in USD per 1,000 uses, before the markup.
    anthropic_web_search: float = field(default=10.0, metadata=_range(0))
    anthropic_web_fetch: float = field(default=0.0, metadata=_range(0))
    openai_web_search: float = field(default=10.0, metadata=_range(0))
    openai_file_search: float = field(default=2.5, metadata=_range(0))


@dataclass(frozen=True, slots=True)
class PricingSettings:
    # What users pay = list price x markup (the spec's 1.5: Sonnet $3/$15 sold at $4.50/$22.50).
    markup: float = field(default=1.5, metadata=_range(1, 100))
    # The models the proxy serves; a request for any other model is refused before forwarding.
    models: tuple[ModelPriceSettings, ...] = field(default_factory=_default_models)
    fees: FeeSettings = FeeSettings()
    # A server tool (web search, web fetch) without max_uses gets this many (set in the body we
    # forward: what bounds its cost); on OpenAI Responses, max_tool_calls likewise.
    server_tool_default_max_uses: int = field(default=5, metadata=_range(1, 100))
    # The tiers an OpenAI request that names none (or "auto") may be served at: the OpenAI
    # project's default tier ("default"; add "priority" if the project defaults to it).
    openai_default_tiers: tuple[str, ...] = ("default",)
    # What is refused because it cannot be priced, unless listed here (then billed for its
    # tokens only): "code_execution" (Anthropic code execution / OpenAI code_interpreter:
    # billed per container time), "mcp_servers" (Anthropic MCP connector),
    # "web_search_preview", "image_generation", "computer_use", or any other tool type by name.
    allow_unpriced: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FleetSettings:
    # Where servers come from; the pool manager runs only when the hetzner_api_token secret is set.
    provider: str = field(default="hetzner", metadata=_choices("hetzner"))
    hetzner_api_endpoint: str = "https://api.hetzner.cloud/v1"
    # Seconds between polls of a Hetzner action (create, rebuild, delete).
    hetzner_poll_interval: float = field(default=1.0, metadata=_range(0.001, 60))
    server_type: str = "cx23"
    image: str = "debian-12"
    # Tried in order; the next one when a location is out of capacity.
    locations: tuple[str, ...] = ("fsn1", "nbg1")
    # The Hetzner project SSH key (root's); empty: none. The provisioner's own key (secret
    # ssh_private_key, else generated in the state directory) logs in as the `openclaw` user.
    ssh_key_name: str = "blitzclaw-provisioner"
    ssh_port: int = field(default=22, metadata=_range(1, 65535))
    # The pool keeps at least min_available servers available or provisioning, at most max_size.
    min_available: int = field(default=5, metadata=_range(0, 10000))
    max_size: int = field(default=20, metadata=_range(0, 10000))
    # Seconds between pool manager passes (and on demand when the pool runs dry).
    pool_interval: float = field(default=300.0, metadata=_range(0.01, 86400))
    # A server that has not called back this many seconds after creation is deleted.
    stuck_after: float = field(default=600.0, metadata=_range(0.01, 86400))
    # Most servers one pool pass creates (all at once) or deletes (bounded work per tick); a pass
    # that stops here with more wanted runs again at once.
    max_actions_per_pass: int = field(default=10, metadata=_range(1, 1000))
    max_instances_per_user: int = field(default=3, metadata=_range(0, 1000))
    # The model instances use by default (one of pricing.models).
    model: str = "claude-sonnet-4-6"
    # What instances call: our proxy listener as they reach it (Anthropic style: no /v1).
    proxy_url: str = "http://127.0.0.1:8787"
    # The public URL of POST /internal/instance-ready on the API listener (cloud-init calls it).
    ready_url: str = "http://127.0.0.1:8080/internal/instance-ready"
    # The API host's address: the only source a pool server's firewall lets in on SSH.
    api_host_cidr: str = "127.0.0.1/32"
    # Seconds between provisioner polls for queued jobs (it is also woken when one is queued).
    job_poll: float = field(default=2.0, metadata=_range(0.01, 3600))
    # Jobs one daemon runs at once (a deploy mostly waits on the gateway's start: 50 lets the
    # spec's burst of 50 deploy side by side); a failed job is retried up to job_max_attempts times.
    job_concurrency: int = field(default=50, metadata=_range(1, 1000))
    job_max_attempts: int = field(default=5, metadata=_range(1, 100))
    # Seconds a deploy waits for the gateway's /readyz after restarting it.
    ready_timeout: float = field(default=120.0, metadata=_range(0.1, 3600))
    ssh_connect_timeout: float = field(default=15.0, metadata=_range(0.1, 600))
    # The model an instance uses with the user's own OpenAI key (Anthropic keys use `model`).
    own_key_openai_model: str = "gpt-4.1"
    # Seconds between health sweeps over every active instance (one SSH connection per server,
    # kept open between sweeps); at most health_concurrency checks at once.
    health_interval: float = field(default=300.0, metadata=_range(0.01, 86400))
    health_concurrency: int = field(default=50, metadata=_range(1, 10000))
    # Seconds /readyz may take (curl --max-time) before the check is a timeout; a timeout alone
    # restarts nothing: health_timeouts_before_restart of them in a row do.
    health_timeout: float = field(default=30.0, metadata=_range(0.1, 600))
    health_timeouts_before_restart: int = field(default=3, metadata=_range(1, 100))
    # A healthy answer slower than this is reported as slow (and acted on never).
    health_slow_after: float = field(default=5.0, metadata=_range(0.01, 600))
    # Seconds over which a sweep's checks start (at most half of health_interval): a steady
    # trickle of SSH sessions rather than a burst every interval.
    health_spread: float = field(default=30.0, metadata=_range(0, 86400))
    # Automatic restarts of a failing gateway before the instance goes to error (and alerts).
    health_max_restarts: int = field(default=3, metadata=_range(0, 100))
    # Seconds a restarted gateway has to answer /readyz again.
    health_restart_timeout: float = field(default=60.0, metadata=_range(0.1, 3600))
    # An instance down this many seconds raises an alert.
    health_down_alert_after: float = field(default=900.0, metadata=_range(0.01, 86400))


@dataclass(frozen=True, slots=True)
class Settings:
    daemon: DaemonSettings = DaemonSettings()
    api: ListenerSettings = ListenerSettings(port=8080)
    proxy: ListenerSettings = ListenerSettings(port=8787)
    database: DatabaseSettings = DatabaseSettings()
    supervisor: SupervisorSettings = SupervisorSettings()
    upstream: UpstreamSettings = UpstreamSettings()
    billing: BillingSettings = BillingSettings()
    limits: LimitsSettings = LimitsSettings()
    alerts: AlertsSettings = AlertsSettings()
    pricing: PricingSettings = field(default_factory=PricingSettings)
    auth: AuthSettings = AuthSettings()
    creem: CreemSettings = CreemSettings()
    notify: NotifySettings = NotifySettings()
    telegram: TelegramSettings = TelegramSettings()
    web: WebSettings = WebSettings()
    google: GoogleSettings = GoogleSettings()
    fleet: FleetSettings = FleetSettings()

    def state_path(self) -> Path:
        return resolve_state_dir(self.daemon.state_dir)


class Secret:
    """A secret value that never prints itself (logs, reprs, tracebacks, the TUI)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


# Names of every secret the daemon knows; each is looked up as described in the module docstring.
SECRET_NAMES = (
    "database_url",
    "anthropic_api_key",
    "openai_api_key",
    "creem_api_key",
    "creem_webhook_secret",
    "clerk_secret_key",
    "clerk_webhook_secret",
    "hetzner_api_token",
    "resend_api_key",
    "encryption_keys",
    "admin_api_key",
    "ssh_private_key",
    "sentry_dsn",
    "google_client_secret",
)


@dataclass(frozen=True, slots=True)
class Secrets:
    values: Mapping[str, Secret] = field(default_factory=dict)

    def get(self, name: str) -> Secret | None:
        if name not in SECRET_NAMES:
            raise KeyError(f"unknown secret {name!r}")
        return self.values.get(name)


def load_secrets(env: Mapping[str, str] | None = None) -> Secrets:
    env = os.environ if env is None else env
    cred_dir = env.get("CREDENTIALS_DIRECTORY")
    found: dict[str, Secret] = {}
    problems: list[str] = []
    for name in SECRET_NAMES:
        var = ENV_PREFIX + name.upper()
        value: str | None = env.get(var) or None
        if value is None and env.get(var + "_FILE"):
            value = _read_secret_file(Path(env[var + "_FILE"]), var + "_FILE", problems)
        if value is None and cred_dir:
            path = Path(cred_dir) / name
            if path.exists():
                value = _read_secret_file(path, f"credential {name}", problems)
        if value:
            found[name] = Secret(value)
    if problems:
        raise ConfigError(problems)
    return Secrets(found)


def _read_secret_file(path: Path, what: str, problems: list[str]) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError as exc:
        problems.append(f"{what}: cannot read {path}: {exc.strerror}")
        return None


def resolve_state_dir(configured: str, env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if configured:
        return Path(configured).expanduser()
    if env.get("BLITZCLAW_STATE_DIR"):
        return Path(env["BLITZCLAW_STATE_DIR"]).expanduser()
    if env.get("STATE_DIRECTORY"):  # systemd StateDirectory=; may list several, take the first
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    if os.geteuid() == 0:
        return Path("/var/lib/blitzclawd")
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "blitzclawd"


def find_config_path(explicit: str | None, env: Mapping[str, str] | None = None) -> Path | None:
    """--config wins, then $BLITZCLAW_CONFIG, then /etc/blitzclawd/blitzclawd.toml if present."""
    env = os.environ if env is None else env
    if explicit:
        return Path(explicit)
    if env.get("BLITZCLAW_CONFIG"):
        return Path(env["BLITZCLAW_CONFIG"])
    for path in DEFAULT_CONFIG_PATHS:
        if path.exists():
            return path
    return None


def load_settings(path: Path | None) -> Settings:
    """Parse and validate; raises ConfigError listing every problem with its key path."""
    if path is None:
        return Settings()
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    return parse_settings(raw)


def parse_settings(raw: Mapping[str, Any]) -> Settings:
    problems: list[str] = []
    settings = _build(Settings, raw, "", problems)
    if not problems:
        _cross_checks(settings, problems)
    if problems:
        raise ConfigError(problems)
    return settings


def _cross_checks(s: Settings, problems: list[str]) -> None:
    if s.database.pool_min > s.database.pool_max:
        problems.append("database.pool_min: must not exceed database.pool_max")
    if s.supervisor.backoff_base > s.supervisor.backoff_max:
        problems.append("supervisor.backoff_base: must not exceed supervisor.backoff_max")
    if s.daemon.dead_after <= s.daemon.heartbeat_interval:
        problems.append("daemon.dead_after: must be longer than daemon.heartbeat_interval")
    if (s.api.host, s.api.port) == (s.proxy.host, s.proxy.port) and s.api.port != 0:
        problems.append("proxy.port: the api and proxy listeners need different addresses")
    for where in (
        "upstream.anthropic_url",
        "upstream.openai_url",
        "auth.clerk_jwks_url",
        "auth.clerk_api_url",
        "creem.api_url",
        "creem.subscription_success_url",
        "notify.resend_url",
        "telegram.api_url",
        "fleet.hetzner_api_endpoint",
        "fleet.proxy_url",
        "fleet.ready_url",
        "google.authorization_url",
        "google.token_url",
        "google.revoke_url",
        "google.userinfo_url",
    ):
        section, name = where.split(".")
        url = getattr(getattr(s, section), name)
        if not url.startswith(("http://", "https://")):
            problems.append(f"{where}: must be an http:// or https:// URL, got {url!r}")
    if s.google.redirect_url and not s.google.redirect_url.startswith(("http://", "https://")):
        problems.append("google.redirect_url: must be an http:// or https:// URL")
    if not s.google.scopes:
        problems.append("google.scopes: at least one scope")
    for name in ("terms_path", "privacy_path"):
        path = getattr(s.web, name)
        if path and not Path(path).is_absolute():
            problems.append(f"web.{name}: must be an absolute path, got {path!r}")
    if s.billing.topup_min_cents > s.billing.topup_max_cents:
        problems.append("billing.topup_min_cents: must not exceed billing.topup_max_cents")
    if s.fleet.min_available > s.fleet.max_size:
        problems.append("fleet.min_available: must not exceed fleet.max_size")
    if not s.fleet.locations:
        problems.append("fleet.locations: at least one location")
    for i, address in enumerate(s.alerts.operator_emails):
        if not _EMAIL.fullmatch(address):
            problems.append(f"alerts.operator_emails[{i}]: not an email address: {address!r}")
    if s.fleet.model not in {m.id for m in s.pricing.models}:
        problems.append(f"fleet.model: {s.fleet.model!r} is not one of pricing.models")
    try:
        billing_minimum_micros(s)
    except ValueError as exc:
        problems.append(f"billing.minimum_balance_usd: {exc}")
    _check_prices(s.pricing, problems)


def billing_minimum_micros(s: Settings) -> int:
    return usd_to_micros("minimum_balance_usd", s.billing.minimum_balance_usd)


def usd_to_micros(field: str, usd: float) -> int:
    """Exact: 10.5 -> 10_500_000; ValueError for amounts finer than a micro-dollar."""
    from blitzclawd.metering.pricing import usd_per_mtok_to_micros

    # USD -> micro-USD is the same exact scaling as USD/Mtok -> micro-USD/Mtok.
    return usd_per_mtok_to_micros(field, usd)


def _check_prices(p: PricingSettings, problems: list[str]) -> None:
    from blitzclawd.metering.pricing import PriceTable

    seen: set[str] = set()
    for i, m in enumerate(p.models):
        where = f"pricing.models[{i}]"
        if not m.id:
            problems.append(f"{where}.id: must name the model")
        elif m.id in seen:
            problems.append(f"{where}.id: {m.id!r} is priced twice")
        seen.add(m.id)
    if problems:
        return
    try:
        PriceTable(model_prices(p), markup=p.markup, fees=fee_table(p))
    except ValueError as exc:
        problems.append(f"pricing: {exc}")


def model_prices(p: PricingSettings) -> list:
    """The configured models as metering ModelPrice objects (ValueError names model and field)."""
    from blitzclawd.metering.pricing import LongContext, ModelPrice, Rates, usd_per_mtok_to_micros

    def rate(field: str, v: float | None) -> int | None:
        return None if v is None else usd_per_mtok_to_micros(field, v)

    out = []
    for m in p.models:
        try:
            price = ModelPrice.from_usd(
                m.id,
                m.api,
                input=m.input,
                output=m.output,
                cache_write_5m=m.cache_write_5m,
                cache_write_1h=m.cache_write_1h,
                cache_read=m.cache_read,
                max_output_tokens=m.max_output_tokens,
            )
            tiers = []
            for name in ("priority", "flex"):
                t: RateSettings = getattr(m, name)
                if t.input is None:
                    continue
                if t.output is None or t.cache_read is None:
                    raise ValueError(f"{name}: input, output and cache_read are all required")
                tiers.append(
                    (
                        name,
                        Rates.from_usd(
                            input=t.input,
                            output=t.output,
                            cache_read=t.cache_read,
                            cache_write_5m=t.cache_write_5m,
                            cache_write_1h=t.cache_write_1h,
                        ),
                    )
                )
            lc = m.long_context
            long = None
            if lc.threshold:
                long = LongContext(
                    lc.threshold,
                    lc.context_window,
                    lc.beta,
                    Rates.from_usd(
                        input=lc.input,
                        output=lc.output,
                        cache_read=lc.cache_read,
                        cache_write_5m=lc.cache_write_5m,
                        cache_write_1h=lc.cache_write_1h,
                    ),
                )
            out.append(
                dataclasses.replace(
                    price,
                    context_window=m.context_window,
                    long_context=long,
                    tiers=tuple(tiers),
                    audio_input=rate("audio_input", m.audio_input),
                    audio_output=rate("audio_output", m.audio_output),
                    reasoning=m.reasoning,
                    modalities=tuple(m.modalities),
                )
            )
        except ValueError as exc:
            raise ValueError(f"model {m.id!r}: {exc}") from None
    return out


def price_table(p: PricingSettings) -> Any:
    """[pricing] as the metering PriceTable (models, markup, fees): what the proxy charges and
    what instances' OpenClaw configs declare."""
    from blitzclawd.metering.pricing import PriceTable

    return PriceTable(model_prices(p), markup=p.markup, fees=fee_table(p))


def fee_table(p: PricingSettings) -> dict:
    """[pricing.fees] (USD per 1,000 uses) as metering Fees (exact micro-USD per use)."""
    from blitzclawd.metering.pricing import Fees, usd_per_mtok_to_micros

    def per_use(name: str) -> int:
        per_1k = usd_per_mtok_to_micros(f"fees.{name}", getattr(p.fees, name))
        if per_1k % 1000:
            raise ValueError(f"fees.{name}: not a whole number of micro-USD per use")
        return per_1k // 1000

    return {
        "anthropic": Fees(
            web_search=per_use("anthropic_web_search"), web_fetch=per_use("anthropic_web_fetch")
        ),
        "openai": Fees(
            web_search=per_use("openai_web_search"), file_search=per_use("openai_file_search")
        ),
    }


def _build(cls: type, raw: Any, prefix: str, problems: list[str]) -> Any:
    if not isinstance(raw, Mapping):
        problems.append(f"{prefix.rstrip('.') or '<root>'}: expected a table")
        return cls()
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    default = cls()
    values: dict[str, Any] = {}
    for key, value in raw.items():
        path = prefix + key
        if key not in fields:
            hint = ""
            if key in SECRET_NAMES or f"{prefix.rstrip('.')}_{key}" in SECRET_NAMES:
                hint = " (secrets are read from the environment or credential files, not the toml)"
            problems.append(f"{path}: unknown key{hint}")
            continue
        values[key] = _convert(hints[key], value, path, getattr(default, key), problems)
        _check_metadata(fields[key].metadata, values[key], path, problems)
    return dataclasses.replace(default, **values)


def _convert(hint: Any, value: Any, path: str, default: Any, problems: list[str]) -> Any:
    if dataclasses.is_dataclass(hint):
        # Section defaults may differ from the class defaults (api vs proxy port): build on them.
        section = _build(hint, value, path + ".", problems)
        if isinstance(value, Mapping):
            known = {f.name for f in dataclasses.fields(hint)}
            given = {k: getattr(section, k) for k in value if k in known}
            return dataclasses.replace(default, **given)
        return default
    origin = typing.get_origin(hint)
    if origin in (tuple, list) or hint in (tuple, list):
        (item,) = typing.get_args(hint)[:1] or (Any,)
        if not isinstance(value, list):
            problems.append(f"{path}: expected an array, got {_describe(value)}")
            return default
        return tuple(
            _convert(
                item,
                v,
                f"{path}[{i}]",
                item() if dataclasses.is_dataclass(item) else None,
                problems,
            )
            for i, v in enumerate(value)
        )
    if origin in (types.UnionType, typing.Union):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return _convert(options[0], value, path, default, problems)
    expected = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    ok = {
        str: isinstance(value, str),
        bool: isinstance(value, bool),
        # TOML distinguishes ints and floats; bools are ints in Python but never in TOML terms.
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
    }.get(hint, True)
    if not ok:
        problems.append(f"{path}: expected {expected[hint]}, got {_describe(value)}")
        return default
    return float(value) if hint is float else value


def _check_metadata(meta: Mapping[str, Any], value: Any, path: str, problems: list[str]) -> None:
    if meta.get("choices") and value not in meta["choices"]:
        allowed = ", ".join(repr(c) for c in meta["choices"])
        problems.append(f"{path}: must be one of {allowed}, got {value!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        lo, hi = meta.get("min"), meta.get("max")
        if lo is not None and value < lo:
            problems.append(f"{path}: must be at least {lo}, got {value}")
        if hi is not None and value > hi:
            problems.append(f"{path}: must be at most {hi}, got {value}")


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return f'a string "{value[:40]}"'
    return f"{type(value).__name__} {value!r}"
