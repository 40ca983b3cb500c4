"""`blitzclaw admin …`: the operators' commands (the admin key, or an admin user's key). To anyone
else the daemon answers that these do not exist (404: exit status 4)."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

admin_app = typer.Typer(
    help="Operators only: pool, health, instances, users, jobs, actors, events."
)
pool_app = typer.Typer(help="The pool of ready servers.")
admin_app.add_typer(pool_app, name="pool")
for_instances = typer.Typer(help="Every user's assistants.")
admin_app.add_typer(for_instances, name="instances")
for_users = typer.Typer(help="Users, their money and their assistants.")
admin_app.add_typer(for_users, name="users")
health_app = typer.Typer(help="The health monitor.")
admin_app.add_typer(health_app, name="health")
jobs_app = typer.Typer(help="Provisioning jobs.")
admin_app.add_typer(jobs_app, name="jobs")
actors_app = typer.Typer(help="This daemon's actors.")
admin_app.add_typer(actors_app, name="actors")


def _call(ctx: typer.Context, method: str, path: str, body: Any = None, **params: Any) -> None:
    from blitzclaw.cli import _run

    query = {k: v for k, v in params.items() if v is not None}

    def work(o: Any, c: Any) -> None:
        o.show(c.request(method, path, json=body, params=query or None))

    _run(ctx, work)


@pool_app.command("status")
def pool_status(ctx: typer.Context) -> None:
    """Servers by status, age and location; whether the pool is held."""
    _call(ctx, "GET", "/api/admin/pool")


@pool_app.command("provision")
def pool_provision(ctx: typer.Context, count: int = typer.Option(..., "--count")) -> None:
    """Create servers now, within fleet.max_size."""
    _call(ctx, "POST", "/api/admin/pool/provision", {"count": count})


@pool_app.command("drain")
def pool_drain(
    ctx: typer.Context,
    count: int = typer.Option(None, "--count", help="At most this many (default: every one)."),
    location: str = typer.Option(None, "--location"),
) -> None:
    """Delete ready, unassigned servers and hold the pool until `pool resume`."""
    body = {k: v for k, v in (("count", count), ("location", location)) if v is not None}
    _call(ctx, "POST", "/api/admin/pool/drain", body)


@pool_app.command("resume")
def pool_resume(ctx: typer.Context) -> None:
    """Lift the hold: spares are made again."""
    _call(ctx, "POST", "/api/admin/pool/resume")


@health_app.command("check")
def health_check(ctx: typer.Context) -> None:
    """A health sweep now, and every instance's result."""
    _call(ctx, "POST", "/api/admin/health/check")


@for_instances.command("list")
def instances_list(
    ctx: typer.Context,
    q: str = typer.Option(None, "--search", "-s", help="Part of an id, an email, an address."),
    status: str = typer.Option(None, "--status"),
) -> None:
    """Every user's assistants."""
    from blitzclaw.cli import _run

    _run(ctx, lambda o, c: o.show(c.admin_instances(q, status)))


def _instance_action(action: str, help_text: str) -> None:
    def command(ctx: typer.Context, instance_id: str) -> None:
        from blitzclaw.cli import _run

        _run(ctx, lambda o, c: o.show(c.admin_instance_action(instance_id, action)))

    command.__doc__ = help_text
    for_instances.command(action)(command)


for _action, _help in (
    ("restart", "Restart any user's assistant."),
    ("stop", "Stop any user's assistant."),
    ("start", "Start any user's assistant."),
    ("pause", "Pause an active assistant: its model requests are refused at once."),
    ("resume", "Resume an assistant an operator paused."),
):
    _instance_action(_action, _help)


@for_instances.command("delete")
def instance_delete(
    ctx: typer.Context,
    instance_id: str,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
) -> None:
    """Delete any user's assistant and wipe its server (asks first; --yes does not)."""
    from blitzclaw.cli import EXIT_USAGE, _run

    if not yes:
        if not sys.stdin.isatty():
            sys.stderr.write("error: not deleting without --yes (nobody here to ask)\n")
            raise typer.Exit(EXIT_USAGE)
        typer.confirm(f"Delete {instance_id}, someone's assistant, and its server?", abort=True)
    _run(ctx, lambda o, c: o.show(c.admin_instance_action(instance_id, "delete")))


@for_instances.command("ssh")
def instance_ssh(
    ctx: typer.Context,
    instance_id: str,
    print_only: bool = typer.Option(False, "--print", help="Print the ssh command only."),
) -> None:
    """ssh to its server with your own key, trusting only the host key BlitzClaw pinned."""
    import os
    import shlex
    import tempfile

    from blitzclaw.cli import _run

    def work(o: Any, c: Any) -> None:
        target = c.request("GET", f"/api/admin/instances/{instance_id}/ssh")
        known = os.path.join(tempfile.mkdtemp(prefix="blitzclaw-"), "known_hosts")
        host = target["host"] if target["port"] == 22 else f"[{target['host']}]:{target['port']}"
        with open(known, "w") as f:
            f.write(f"{host} {target['host_key']}\n")
        command = [
            "ssh",
            "-o",
            f"UserKnownHostsFile={known}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-p",
            str(target["port"]),
            f"{target['user']}@{target['host']}",
        ]
        if print_only:
            sys.stdout.write(shlex.join(command) + "\n")
            return
        os.execvp("ssh", command)

    _run(ctx, work)


@for_instances.command("limits")
def instance_limits(
    ctx: typer.Context,
    instance_id: str,
    per_hour: int = typer.Option(None, "--messages-per-hour"),
    per_day: int = typer.Option(None, "--tokens-per-day"),
) -> None:
    """One assistant's own limits."""
    body = {
        k: v
        for k, v in (("messages_per_hour", per_hour), ("tokens_per_day", per_day))
        if v is not None
    }
    _call(ctx, "PATCH", f"/api/admin/instances/{instance_id}/limits", body)


@for_users.command("list")
def users_list(ctx: typer.Context, q: str = typer.Option(None, "--search", "-s")) -> None:
    """Users with balance, leases, assistants, spending and top-ups."""
    from blitzclaw.cli import _run

    _run(ctx, lambda o, c: o.show(c.admin_users(q)))


@for_users.command("adjust")
def users_adjust(
    ctx: typer.Context,
    user_id: str,
    amount: float = typer.Option(..., "--amount", help="US dollars; negative debits."),
    reason: str = typer.Option(..., "--reason"),
) -> None:
    """A manual ledger entry, with its reason."""
    body = {"amount_micros": round(amount * 1_000_000), "reason": reason}
    _call(ctx, "POST", f"/api/admin/users/{user_id}/adjust", body)


for _verb in ("pause", "resume"):

    def _user_command(ctx: typer.Context, user_id: str, _verb: str = _verb) -> None:
        _call(ctx, "POST", f"/api/admin/users/{user_id}/{_verb}")

    _user_command.__doc__ = f"{_verb.capitalize()} a user's assistants."
    for_users.command(_verb)(_user_command)


@jobs_app.command("list")
def jobs(ctx: typer.Context, status: str = typer.Option(None, "--status")) -> None:
    """Provisioning jobs, newest first."""
    _call(ctx, "GET", "/api/admin/jobs", status=status)


@jobs_app.command("retry")
def jobs_retry(ctx: typer.Context, job_id: int) -> None:
    """Run a failed job again from its first attempt."""
    _call(ctx, "POST", f"/api/admin/jobs/{job_id}/retry")


@actors_app.command("restart")
def actor_restart(ctx: typer.Context, path: str) -> None:
    """Restart one of the daemon's actors (e.g. core/notifier)."""
    from urllib.parse import quote

    _call(ctx, "POST", f"/api/admin/actors/{quote(path, safe='')}/restart")


@admin_app.command("events")
def events(
    ctx: typer.Context, limit: int = typer.Option(0, "--limit", help="Stop after N.")
) -> None:
    """Follow the live events (one JSON object a line)."""
    from blitzclaw.cli import _run

    def work(o: Any, c: Any) -> None:
        seen = 0
        for event in c.events():
            sys.stdout.write(json.dumps(event, sort_keys=True) + "\n")
            sys.stdout.flush()
            seen += 1
            if limit and seen >= limit:
                return

    _run(ctx, work)
