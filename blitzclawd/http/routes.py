"""URL table of each listener."""

from __future__ import annotations

from aiohttp import web

from blitzclawd.http.views import (
    admin,
    admin_dashboards,
    admin_fleet,
    admin_pool,
    auth,
    billing,
    channel_routes,
    channels,
    health,
    instances,
    internal,
    metrics,
    pairing,
    proxy,
    webhooks,
)


def setup_health_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)


def setup_api_routes(app: web.Application) -> None:
    setup_health_routes(app)
    r = app.router
    r.add_get("/api/auth/me", auth.me)
    r.add_get("/api/auth/api-keys", auth.list_keys)
    r.add_post("/api/auth/api-keys", auth.create_key)
    r.add_delete("/api/auth/api-keys/{key_id}", auth.revoke_key)
    r.add_post("/api/webhooks/clerk", webhooks.clerk)
    r.add_post("/api/billing/topup", billing.topup)
    r.add_post("/api/billing/webhook", webhooks.creem_webhook)
    r.add_get("/api/billing/balance", billing.balance)
    r.add_get("/api/billing/usage", billing.usage)
    r.add_get("/api/billing/topups", billing.topups)
    r.add_patch("/api/billing/auto-topup", billing.auto_topup)
    r.add_get("/api/admin/daemons", admin.daemons)
    r.add_get("/api/admin/pool", admin_pool.pool)
    r.add_get("/api/admin/jobs", admin_fleet.jobs)
    r.add_post("/api/admin/jobs/{job_id}/retry", admin_fleet.retry_job)
    r.add_get("/api/admin/instances", admin_fleet.instances)
    r.add_post("/api/admin/instances/{instance_id}/{action}", admin_fleet.instance_action)
    r.add_get("/api/admin/audit", admin_fleet.audit_log)
    r.add_post("/api/admin/pool/provision", admin_fleet.provision)
    r.add_post("/api/admin/pool/drain", admin_pool.drain)
    r.add_post("/api/admin/pool/resume", admin_pool.resume)
    r.add_post("/api/admin/health/check", admin_fleet.health_check)
    r.add_get("/api/admin/events", admin_fleet.events)
    r.add_patch("/api/admin/instances/{instance_id}/limits", admin_fleet.instance_limits)
    r.add_post("/api/admin/actors/{path:.+}/restart", admin_fleet.restart_actor)
    r.add_get("/api/admin/payments/unmatched", admin_fleet.unmatched_payments)
    r.add_get("/api/admin/logs", admin_fleet.log_tail)
    r.add_get("/api/admin/users", admin_fleet.users)
    r.add_get("/api/admin/metrics", admin_dashboards.dashboards)
    r.add_post("/api/admin/users/{user_id}/adjust", admin_fleet.adjust_balance)
    r.add_post("/api/admin/users/{user_id}/{action}", admin_fleet.user_action)
    r.add_post("/api/instances", instances.create)
    r.add_get("/api/instances", instances.list_instances)
    r.add_get("/api/instances/{instance_id}", instances.get)
    r.add_delete("/api/instances/{instance_id}", instances.delete)
    r.add_post("/api/instances/{instance_id}/restart", instances.restart)
    r.add_post("/api/instances/{instance_id}/stop", instances.stop)
    r.add_post("/api/instances/{instance_id}/start", instances.start)
    r.add_post("/api/instances/{instance_id}/configure", instances.configure)
    r.add_post("/api/instances/{instance_id}/channel", instances.connect_channel)
    r.add_get("/api/channels", channels.list_channels)
    r.add_get("/api/instances/{instance_id}/pairing", pairing.list_requests)
    r.add_post("/api/instances/{instance_id}/pairing/approve", pairing.approve)
    r.add_post("/api/channels/{channel_type}/validate", channels.validate_channel)
    r.add_get("/api/instances/{instance_id}/logs", instances.logs)
    r.add_post("/api/instances/{instance_id}/api-key", instances.set_api_key)
    r.add_delete("/api/instances/{instance_id}/api-key", instances.remove_api_key)
    channel_routes.add_channel_routes(r)  # the plugins' own, under /api/instances/{id}/<name>/
    # DM pairing is OpenClaw's, for any channel; also under each channel's own prefix.
    r.add_get("/api/instances/{instance_id}/{channel}/pairing", pairing.list_requests)
    r.add_post("/api/instances/{instance_id}/{channel}/pairing/approve", pairing.approve)
    r.add_get("/api/health/instances", admin.instance_health)
    r.add_post("/internal/instance-ready", internal.instance_ready)
    r.add_get("/metrics", metrics.metrics)


def setup_proxy_routes(app: web.Application) -> None:
    setup_health_routes(app)
    app.router.add_post("/v1/messages", proxy.messages)
    app.router.add_post("/v1/chat/completions", proxy.chat_completions)
    app.router.add_post("/v1/responses", proxy.responses)
    app.router.add_post("/v1/messages/count_tokens", proxy.count_tokens)
    app.router.add_get("/v1/models", proxy.models)
    app.router.add_get("/v1/models/{model_id}", proxy.model)
