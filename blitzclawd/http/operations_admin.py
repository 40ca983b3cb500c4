"""The operators' operations (admin key or admin role). To anyone else each of these routes does
not exist: 404, checked before anything in the request is read (blitzclawd/http/declare.bind).
Every action is audited (admin_actions)."""

from __future__ import annotations

from blitzclawd.fleet import remote
from blitzclawd.http import api_schemas as s
from blitzclawd.http.declare import (
    Body,
    Header,
    Integer,
    Operation,
    PathNumber,
    PathText,
    PathUuid,
    QueryChoice,
    QueryFlag,
    QueryInt,
    QueryText,
    QueryTime,
    Reply,
    Text,
)
from blitzclawd.http.views import admin, admin_dashboards, admin_fleet, admin_pool, metrics

_LIMIT = QueryInt("limit", default=100, minimum=1, maximum=1000)
_SEARCH = QueryText("q", max_length=200, description="part of an id, an email or an address")
_INSTANCE = PathUuid("instance_id", missing="no such instance")
_USER = PathUuid("user_id", missing="no such user")
_QUEUED = {202: Reply("queued", s.obj({"id": s.UUID, "queued": s.STRING}))}


def _ok(schema: s.Schema = s.ANY_OBJECT) -> dict[int, Reply]:
    return {200: Reply("done", schema)}


def _op(method: str, path: str, handler, summary: str, **kw) -> Operation:
    return Operation(method, path, handler, summary, "admin", "admin", **kw)


ADMIN_OPERATIONS = [
    _op(
        "GET",
        "/api/admin/daemons",
        admin.daemons,
        "Every daemon on the database, and this one's actors",
        replies=_ok(
            s.obj(
                {
                    "this_daemon": s.STRING,
                    "actors": s.array(s.ANY_OBJECT),
                    "daemons": s.array(s.ANY_OBJECT),
                }
            )
        ),
    ),
    _op(
        "GET",
        "/api/admin/pool",
        admin_pool.pool,
        "Pool servers by status, with age and location; whether the pool is held",
        replies=_ok(
            s.obj(
                {
                    "held": s.BOOLEAN,
                    "hold": s.maybe(s.ANY_OBJECT),
                    "by_status": s.ANY_OBJECT,
                    "servers": s.array(s.ANY_OBJECT),
                }
            )
        ),
    ),
    _op(
        "POST",
        "/api/admin/pool/drain",
        admin_pool.drain,
        "Delete ready, unassigned servers and hold the pool (no new spares) until resumed",
        body=Body(
            (
                Integer("count", minimum=1, maximum=1000, description="default: every one"),
                Text(
                    "location",
                    max_length=32,
                    pattern=admin_pool.LOCATION,
                    mismatch="location must be a location name such as fsn1",
                    description="default: every location",
                ),
            ),
            closed=True,
            optional=True,
        ),
        replies=_ok(
            s.obj({"held": s.BOOLEAN, "deleted": s.array(s.STRING), "failed": s.array(s.STRING)})
        ),
        errors=(409, 504),
    ),
    _op(
        "POST",
        "/api/admin/pool/resume",
        admin_pool.resume,
        "Lift the hold: the pool is refilled to fleet.min_available again",
        replies=_ok(s.obj({"held": s.BOOLEAN, "was_held": s.BOOLEAN})),
    ),
    _op(
        "POST",
        "/api/admin/pool/provision",
        admin_fleet.provision,
        "Create servers now, within fleet.max_size",
        body=Body((Integer("count", required=True, minimum=1, maximum=50),)),
        replies={
            202: Reply("asked of the provider", s.obj({"asked": s.INTEGER, "created": s.INTEGER}))
        },
        errors=(409, 504),
    ),
    _op(
        "GET",
        "/api/admin/jobs",
        admin_fleet.jobs,
        "Provisioning jobs, newest first",
        query=(QueryChoice("status", options=admin_fleet.JOB_STATUSES), _LIMIT),
        replies=_ok(s.listing("jobs")),
    ),
    _op(
        "POST",
        "/api/admin/jobs/{job_id}/retry",
        admin_fleet.retry_job,
        "Run a failed job again from its first attempt",
        path_params=(PathNumber("job_id", missing="no such job"),),
        replies={202: Reply("queued", s.obj({"id": s.INTEGER, "status": s.STRING}))},
    ),
    _op(
        "GET",
        "/api/admin/instances",
        admin_fleet.instances,
        "Every user's instances (search by id, owner, email or address)",
        query=(
            _SEARCH,
            QueryChoice("status", options=s.LIVE_INSTANCE_STATUSES),
            QueryInt("limit", default=100, minimum=1, maximum=10000),
        ),
        replies=_ok(s.ADMIN_INSTANCES),
    ),
    *(
        _op(
            "POST",
            f"/api/admin/instances/{{instance_id}}/{action}",
            handler,
            f"{action.capitalize()} any user's instance",
            path_params=(_INSTANCE,),
            replies=_QUEUED,
            errors=(402, 409),
        )
        for action, handler in (
            ("restart", admin_fleet.restart_instance),
            ("stop", admin_fleet.stop_instance),
            ("start", admin_fleet.start_instance),
        )
    ),
    _op(
        "POST",
        "/api/admin/instances/{instance_id}/pause",
        admin_fleet.pause_instance,
        "Pause an active instance: the proxy refuses it at once",
        path_params=(_INSTANCE,),
        replies=_ok(s.INSTANCE_PAUSED),
        errors=(409,),
    ),
    _op(
        "POST",
        "/api/admin/instances/{instance_id}/resume",
        admin_fleet.resume_instance,
        "Resume an instance an operator paused (not one paused for its balance)",
        path_params=(_INSTANCE,),
        replies=_ok(s.INSTANCE_PAUSED),
        errors=(409,),
    ),
    _op(
        "DELETE",
        "/api/admin/instances/{instance_id}",
        admin_fleet.delete_instance,
        "Delete any user's instance; its server is wiped (a teardown job)",
        path_params=(_INSTANCE,),
        replies=_QUEUED,
    ),
    _op(
        "GET",
        "/api/admin/instances/{instance_id}/logs",
        admin_fleet.instance_log,
        "Any user's gateway log (plain text); follow=1 streams it (audited)",
        path_params=(_INSTANCE,),
        query=(
            QueryInt("lines", default=100, minimum=1, maximum=remote.MAX_LOG_LINES),
            QueryFlag("follow"),
        ),
        replies={200: Reply("log lines", {"type": "string"}, "text/plain")},
        errors=(409, 502),
    ),
    _op(
        "GET",
        "/api/admin/instances/{instance_id}/ssh",
        admin_fleet.ssh_target,
        "Where to ssh to an instance's server, with its pinned host key (audited)",
        path_params=(_INSTANCE,),
        replies=_ok(
            s.obj({"host": s.STRING, "port": s.INTEGER, "user": s.STRING, "host_key": s.STRING})
        ),
    ),
    _op(
        "PATCH",
        "/api/admin/instances/{instance_id}/limits",
        admin_fleet.instance_limits,
        "One instance's own limits (null: back to the global limit)",
        path_params=(_INSTANCE,),
        body=Body(
            (
                Integer("messages_per_hour", nullable=True, minimum=0, maximum=10**9),
                Integer("tokens_per_day", nullable=True, minimum=0, maximum=10**15),
            ),
            any_of=("messages_per_hour", "tokens_per_day"),
        ),
        replies=_ok(),
    ),
    _op(
        "POST",
        "/api/admin/actors/{path}/restart",
        admin_fleet.restart_actor,
        "Restart one of this daemon's actors through its supervisor",
        description="`path` is the actor's path in the tree (e.g. `fleet/health-monitor`, "
        "with `/` sent as `%2F`), as GET /api/admin/daemons lists them.",
        path_params=(PathText("path", max_length=200, slashes=True),),
        replies={202: Reply("restarted", s.obj({"restarted": s.STRING, "daemon": s.STRING}))},
        errors=(409,),
    ),
    _op(
        "GET",
        "/api/admin/payments/unmatched",
        admin_fleet.unmatched_payments,
        "Webhook events carrying money that was not (fully) applied",
        query=(_LIMIT, QueryInt("before_id", default=None, minimum=0, maximum=10**18 - 1)),
        replies=_ok(s.listing("events")),
    ),
    _op(
        "GET",
        "/api/admin/logs",
        admin_fleet.log_tail,
        "This daemon's recent log lines (oldest first)",
        query=(
            QueryInt("lines", default=200, minimum=1, maximum=2000),
            QueryChoice("level", options=admin_fleet.LOG_LEVELS),
        ),
        replies=_ok(s.listing("lines")),
    ),
    _op(
        "GET",
        "/api/admin/users",
        admin_fleet.users,
        "Users with balance, leases, instances, spending and top-ups",
        query=(_SEARCH, _LIMIT),
        replies=_ok(s.listing("users", s.ADMIN_USER)),
    ),
    _op(
        "POST",
        "/api/admin/users/{user_id}/adjust",
        admin_fleet.adjust_balance,
        "A manual ledger entry with a reason (positive credits, negative debits)",
        path_params=(_USER,),
        body=Body(
            (
                Integer(
                    "amount_micros", required=True, minimum=-(10**12), maximum=10**12, nonzero=True
                ),
                Text("reason", required=True, max_length=500, multiline=True),
                Text(
                    "idempotency_key",
                    max_length=100,
                    description="the same key twice books once",
                ),
            )
        ),
        replies=_ok(
            s.obj({"user_id": s.UUID, "outcome": s.STRING, "balance_micros": s.maybe(s.INTEGER)})
        ),
        errors=(409,),
    ),
    *(
        _op(
            "POST",
            f"/api/admin/users/{{user_id}}/{action}",
            handler,
            summary,
            path_params=(_USER,),
            replies=_ok(s.obj({"user_id": s.UUID, "action": s.STRING, "instances": s.INTEGER})),
        )
        for action, handler, summary in (
            ("pause", admin_fleet.pause_user, "Pause every active instance of a user"),
            ("resume", admin_fleet.resume_user, "Resume the instances an operator paused"),
        )
    ),
    _op(
        "GET",
        "/api/admin/audit",
        admin_fleet.audit_log,
        "Operators' actions, newest first",
        query=(_LIMIT,),
        replies=_ok(s.listing("actions")),
    ),
    _op(
        "POST",
        "/api/admin/health/check",
        admin_fleet.health_check,
        "A health sweep now, and every instance's result",
        replies=_ok(s.obj({"report": s.ANY_OBJECT, "instances": s.array(s.ANY_OBJECT)})),
        errors=(409, 504),
    ),
    _op(
        "GET",
        "/api/admin/events",
        admin_fleet.events,
        "Live events (Server-Sent Events)",
        description="Actor states, instance and pool changes, health results, alerts, webhook "
        "outcomes and a per-second proxy summary. `Last-Event-ID` resumes; an event of type "
        "`lost` says when events could not be kept for a slow or late reader.",
        headers=(Header("Last-Event-ID", "resume after this event"),),
        query=(QueryInt("last_event_id", default=None, minimum=0, maximum=10**18 - 1),),
        replies={200: Reply("the event stream", {"type": "string"}, "text/event-stream")},
    ),
    _op(
        "GET",
        "/api/admin/metrics",
        admin_dashboards.dashboards,
        "Dashboards over time: traffic, revenue against cost, failures",
        query=(
            QueryTime("from", description="default: 7 days before `to`"),
            QueryTime("to", description="default: now"),
            QueryChoice("step", options=tuple(admin_dashboards.MAX_BUCKETS)),
        ),
        replies=_ok(),
    ),
    _op(
        "GET",
        "/api/health/instances",
        admin.instance_health,
        "The health monitor's last result for every instance, worst first",
        replies=_ok(
            s.obj(
                {
                    "instances": s.array(s.ANY_OBJECT),
                    "summary": s.ANY_OBJECT,
                    "alerts": s.array(s.ANY_OBJECT),
                }
            )
        ),
    ),
    _op(
        "GET",
        "/metrics",
        metrics.metrics,
        "Prometheus metrics of this daemon and the fleet",
        replies={200: Reply("Prometheus text format", {"type": "string"}, "text/plain")},
    ),
]
