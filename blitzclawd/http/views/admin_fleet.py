"""/api/admin/{pool,jobs,instances,audit}: the fleet as an operator sees it, across users, and
the actions an operator on call needs. Every action is recorded in admin_actions (who, what,
which row, when); to anyone but an operator these routes do not exist (404)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from typing import Any

import orjson
from aiohttp import web

from blitzclawd import logs
from blitzclawd.fleet.remote import LOGIN_USER
from blitzclawd.http.admin_access import actor_of, plain
from blitzclawd.http.context import CONTEXT
from blitzclawd.http.declare import args_of
from blitzclawd.http.errors import ApiError
from blitzclawd.http.instance_access import gateway_log
from blitzclawd.http.jsonutil import json_response
from blitzclawd.payments.unmatched import list_unmatched
from blitzclawd.queries import admin as rows
from blitzclawd.queries import health
from blitzclawd.queries import instances as instance_rows
from blitzclawd.registry import ActorUnavailable
from blitzclawd.runtime.messages import Adjust, JobsQueued, Provision, SweepNow
from blitzclawd.runtime.supervisor import NoSuchChild
from blitzclawd.services import instances as service

_RESTARTS: set[asyncio.Task[None]] = set()  # kept until done (the loop holds tasks weakly)
JOB_STATUSES = ("queued", "running", "done", "failed")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


async def jobs(request: web.Request) -> web.Response:
    actor_of(request)
    ctx = request.app[CONTEXT]
    query = args_of(request).query
    found = await rows.jobs(ctx.pool, query["status"], query["limit"])
    return json_response({"jobs": [plain(r) for r in found]})


async def retry_job(request: web.Request) -> web.Response:
    """A failed job runs again from its first attempt."""
    actor = actor_of(request)
    ctx = request.app[CONTEXT]
    job = await rows.retry_job(ctx.pool, args_of(request).path["job_id"], actor)
    if job is None:
        raise ApiError(404, "not_found", "no failed job with this id")
    ctx.actors.provisioner.tell(JobsQueued())
    return json_response({"id": job["id"], "status": "queued"}, status=202)


async def instances(request: web.Request) -> web.Response:
    """Every user's instances: search by instance id, owner id or email, server address; with
    `total`, how many match regardless of `limit`."""
    actor_of(request)
    ctx = request.app[CONTEXT]
    query = args_of(request).query
    found = [
        plain(r)
        for r in await rows.instances(ctx.pool, query["q"], query["status"], query["limit"])
    ]
    total = found[0]["total"] if found else 0
    for row in found:
        del row["total"]
    return json_response({"instances": found, "total": total})


async def _instance_action(request: web.Request, action: str) -> web.Response:
    """restart, stop or start any user's instance (the owner's own routes' rules apply)."""
    actor = actor_of(request)
    ctx = request.app[CONTEXT]
    instance_id = args_of(request).path["instance_id"]
    if not await rows.instance_exists(ctx.pool, instance_id):
        raise ApiError(404, "not_found", "no such instance")
    await getattr(service, action)(ctx.pool, ctx.actors, instance_id)
    await rows.audit(ctx.pool, actor, f"instance.{action}", str(instance_id), {})
    return json_response({"id": str(instance_id), "queued": action}, status=202)


async def restart_instance(request: web.Request) -> web.Response:
    return await _instance_action(request, "restart")


async def stop_instance(request: web.Request) -> web.Response:
    return await _instance_action(request, "stop")


async def start_instance(request: web.Request) -> web.Response:
    return await _instance_action(request, "start")


async def _pause_or_resume(request: web.Request, pause: bool) -> web.Response:
    actor = actor_of(request)
    ctx = request.app[CONTEXT]
    instance_id = args_of(request).path["instance_id"]
    change = rows.pause_instance if pause else rows.resume_instance
    before = await change(ctx.pool, instance_id)
    if before is None:
        raise ApiError(404, "not_found", "no such instance")
    if not before["done"]:
        if pause:
            raise ApiError(
                409,
                "not_running",
                f"only an active instance can be paused; this one is {_state(before)}",
            )
        raise ApiError(
            409,
            "not_paused",
            f"only an instance an operator paused can be resumed; this one is {_state(before)}"
            + _RESUMES_BY_ITSELF.get(before["status_reason"], ""),
        )
    action = "instance.pause" if pause else "instance.resume"
    await rows.audit(ctx.pool, actor, action, str(instance_id), {})
    return json_response({"id": str(instance_id), "status": "paused" if pause else "active"})


async def pause_instance(request: web.Request) -> web.Response:
    """One active instance paused by an operator: the proxy refuses it at once."""
    return await _pause_or_resume(request, True)


async def resume_instance(request: web.Request) -> web.Response:
    """One instance an operator paused, active again; not one paused for its balance (that
    resumes when the user tops up)."""
    return await _pause_or_resume(request, False)


_RESUMES_BY_ITSELF = {
    "balance_depleted": ": it resumes by itself once the user's balance is above the minimum",
    "payment_failed": ": it resumes by itself once the user pays or tops up",
}


def _state(row: Any) -> str:
    reason = row["status_reason"]
    return f"{row['status']} ({reason})" if reason else row["status"]


async def delete_instance(request: web.Request) -> web.Response:
    """Any user's instance deleted: the proxy refuses it from now on, the teardown job wipes
    its server."""
    actor = actor_of(request)
    ctx = request.app[CONTEXT]
    instance_id = args_of(request).path["instance_id"]
    if not await rows.instance_exists(ctx.pool, instance_id):
        raise ApiError(404, "not_found", "no such instance")
    await service.delete(ctx.pool, ctx.actors, instance_id)
    await rows.audit(ctx.pool, actor, "instance.delete", str(instance_id), {})
    return json_response({"id": str(instance_id), "queued": "teardown"}, status=202)


async def audit_log(request: web.Request) -> web.Response:
    actor_of(request)
    ctx = request.app[CONTEXT]
    found = await rows.recent_actions(ctx.pool, args_of(request).query["limit"])
    return json_response({"actions": [plain(r) for r in found]})


async def provision(request: web.Request) -> web.Response:
    """`{"count": N}` more servers now, within fleet.max_size (the pool manager's own rules)."""
    actor = actor_of(request)
    ctx = request.app[CONTEXT]
    count = args_of(request).body["count"]
    try:
        made = await ctx.actors.pool_manager.ask(Provision(count), timeout=120)
    except ActorUnavailable:
        raise ApiError(
            409, "elsewhere", "the pool manager runs on another daemon (or no provider is set)"
        ) from None
    except TimeoutError:
        raise ApiError(504, "timeout", "the provider is slow: servers may still appear") from None
    await rows.audit(ctx.pool, actor, "pool.provision", None, {"asked": count, "created": made})
    return json_response({"asked": count, "created": made}, status=202)


async def health_check(request: web.Request) -> web.Response:
    """A health sweep now; its report and every instance's result."""
    actor = actor_of(request)
    ctx = request.app[CONTEXT]
    try:
        report = await ctx.actors.health_monitor.ask(SweepNow(), timeout=300)
    except ActorUnavailable:
        raise ApiError(409, "elsewhere", "the health monitor runs on another daemon") from None
    except TimeoutError:
        raise ApiError(
            504, "timeout", "the sweep is still running; see GET /api/health/instances"
        ) from None
    await rows.audit(ctx.pool, actor, "health.check", None, dataclasses.asdict(report))
    results = await health.health_results(ctx.pool)
    return json_response(
        {"report": dataclasses.asdict(report), "instances": [plain(r) for r in results]}
    )


async def events(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: actors, instances, pool, health, alerts, webhooks, a per-second proxy
    summary; `Last-Event-ID` resumes (a "lost" event says when it cannot)."""
    actor_of(request)
    ctx = request.app[CONTEXT]
    raw = request.headers.get("Last-Event-ID", "")
    # A browser's EventSource resends the header by itself; a malformed one starts afresh.
    last_id = int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 19 else None
    if last_id is None:
        last_id = args_of(request).query["last_event_id"]
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    stream = ctx.events.subscribe(last_id)
    first = asyncio.ensure_future(anext(stream))  # subscribed from here on
    await asyncio.sleep(0)
    watch = ctx.event_watch()
    watch.ensure_running()
    with contextlib.suppress(TimeoutError):
        # The answer starts once the watch has its baseline: what happens after it is reported.
        await asyncio.wait_for(watch.ready.wait(), 5)
    await response.prepare(request)
    await response.write(b"retry: 2000\n\n")
    try:
        event = await first
        while True:
            if event is None:
                await response.write(b": keep-alive\n\n")
            else:
                data = orjson.dumps(event.data, default=str).decode()
                await response.write(
                    f"id: {event.id}\nevent: {event.type}\ndata: {data}\n\n".encode()
                )
            event = await anext(stream)
    except ConnectionResetError:
        pass  # the operator left
    finally:
        first.cancel()
        await stream.aclose()
    return response


async def instance_limits(request: web.Request) -> web.Response:
    """`{"messages_per_hour": N | null, "tokens_per_day": N | null}` for one instance (null: the
    global limit); every daemon's proxy picks it up at once (the instances announcement)."""
    actor = actor_of(request)
    ctx = request.app[CONTEXT]
    given = args_of(request)
    instance_id = given.path["instance_id"]
    changes: dict[str, int | None] = dict(given.body)
    row = await rows.set_limits(ctx.pool, instance_id, changes)
    if row is None:
        raise ApiError(404, "not_found", "no such instance")
    await rows.audit(ctx.pool, actor, "instance.limits", str(instance_id), changes)
    return json_response({"id": str(instance_id), **dict(row)})


async def restart_actor(request: web.Request) -> web.Response:
    """Restart one of this daemon's actors through its supervisor (its path in the tree, e.g.
    fleet/health-monitor, as GET /api/admin/daemons lists them)."""
    actor = actor_of(request)
    ctx = request.app[CONTEXT]
    path = args_of(request).path["path"]

    async def restart() -> None:
        await ctx.supervisor.terminate_child(path)  # OTP: stop it, then start it again
        await ctx.supervisor.restart_child(path)

    # Restarting the API listener stops the very handler asking for it: the restart must not
    # die with this request (it would leave the listener down), so it runs on its own.
    task = asyncio.get_running_loop().create_task(restart(), name=f"restart {path[:60]}")
    _RESTARTS.add(task)
    task.add_done_callback(_RESTARTS.discard)
    try:
        await asyncio.shield(task)
    except NoSuchChild:
        raise ApiError(404, "not_found", f"no actor {path[:100]!r} on this daemon") from None
    except RuntimeError as exc:
        raise ApiError(409, "not_restarted", str(exc)[:300]) from None
    await rows.audit(ctx.pool, actor, "actor.restart", path, {"daemon": ctx.daemon_id})
    return json_response({"restarted": path, "daemon": ctx.daemon_id}, status=202)


async def unmatched_payments(request: web.Request) -> web.Response:
    """Webhook events carrying money we did not (fully) apply, newest first (?before_id=)."""
    actor_of(request)
    ctx = request.app[CONTEXT]
    query = args_of(request).query
    found = await list_unmatched(ctx.pool, limit=query["limit"], before_id=query["before_id"])
    return json_response({"events": [plain(dataclasses.asdict(u)) for u in found]})


async def log_tail(request: web.Request) -> web.Response:
    """This daemon's last log lines (at most 2,000 kept in memory), oldest first."""
    actor_of(request)
    query = args_of(request).query
    lines, level = query["lines"], query["level"]
    wanted = LOG_LEVELS[LOG_LEVELS.index(level) :] if level else LOG_LEVELS
    found = [orjson.loads(line) for line in list(logs.RECENT.lines)]
    found = [e for e in found if e.get("level") in wanted][-lines:]
    return json_response({"lines": found})


async def users(request: web.Request) -> web.Response:
    """Users (search by id, email, Clerk id) with balance, reserved (their leases) and
    instances."""
    actor_of(request)
    ctx = request.app[CONTEXT]
    query = args_of(request).query
    found = await rows.users(ctx.pool, query["q"], query["limit"])
    return json_response({"users": [plain(r) for r in found]})


async def adjust_balance(request: web.Request) -> web.Response:
    """`{"amount_micros": N, "reason": "...", "idempotency_key"?: "..."}`: a manual ledger
    entry (positive credits, negative debits), booked by billing like every balance change;
    the user's instances pause or resume as the balance crosses the minimum."""
    actor = actor_of(request)
    ctx = request.app[CONTEXT]
    given = args_of(request)
    user_id = given.path["user_id"]
    amount, reason = given.body["amount_micros"], given.body["reason"]
    key = given.body.get("idempotency_key") or str(uuid.uuid4())
    if not await rows.user_exists(ctx.pool, user_id):
        raise ApiError(404, "not_found", "no such user")
    try:
        done = await ctx.actors.billing.ask(
            Adjust(str(user_id), amount, f"{actor}: {reason.strip()}", key), timeout=30
        )
    except ActorUnavailable:
        raise ApiError(409, "elsewhere", "billing runs on another daemon; try that one") from None
    await rows.audit(
        ctx.pool,
        actor,
        "user.adjust",
        str(user_id),
        {"amount_micros": amount, "reason": reason.strip(), "outcome": done.outcome},
    )
    return json_response(
        {"user_id": str(user_id), "outcome": done.outcome, "balance_micros": done.balance_micros}
    )


async def pause_user(request: web.Request) -> web.Response:
    """Every active instance of the user; the proxy refuses them at once."""
    return await _user_action(request, "pause")


async def resume_user(request: web.Request) -> web.Response:
    """Those an operator paused; not those paused for their balance."""
    return await _user_action(request, "resume")


async def _user_action(request: web.Request, action: str) -> web.Response:
    actor = actor_of(request)
    ctx = request.app[CONTEXT]
    user_id = args_of(request).path["user_id"]
    if not await rows.user_exists(ctx.pool, user_id):
        raise ApiError(404, "not_found", "no such user")
    count = await (rows.pause_user if action == "pause" else rows.resume_user)(ctx.pool, user_id)
    await rows.audit(ctx.pool, actor, f"user.{action}", str(user_id), {"instances": count})
    return json_response({"user_id": str(user_id), "action": action, "instances": count})


async def instance_log(request: web.Request) -> web.StreamResponse:
    """Any user's gateway log, as its owner reads it (audited: an operator read it)."""
    actor = actor_of(request)
    ctx = request.app[CONTEXT]
    instance_id = args_of(request).path["instance_id"]
    if not await rows.instance_exists(ctx.pool, instance_id):
        raise ApiError(404, "not_found", "no such instance")
    await rows.audit(ctx.pool, actor, "instance.logs", str(instance_id), {})
    return await gateway_log(request, instance_id)


async def ssh_target(request: web.Request) -> web.Response:
    """Where an operator's own ssh reaches an instance's server, with the host key we pinned
    (`blitzclaw admin instance-ssh` writes it into a known_hosts file of its own). Audited."""
    actor = actor_of(request)
    ctx = request.app[CONTEXT]
    instance_id = args_of(request).path["instance_id"]
    server = await instance_rows.server_of(ctx.pool, instance_id)
    if server is None or server["ip"] is None or not server["ssh_host_key"]:
        raise ApiError(404, "not_found", "this instance has no server with a pinned host key")
    await rows.audit(ctx.pool, actor, "instance.ssh", str(instance_id), {"ip": server["ip"]})
    return json_response(
        {
            "host": server["ip"],
            "port": ctx.settings.fleet.ssh_port,
            "user": LOGIN_USER,
            "host_key": server["ssh_host_key"],
        }
    )
