"""`blitzclaw integrations …`: a user's connected accounts (Google: Gmail and Calendar, read only)
and which assistants may use them. Connecting happens in the browser: the command opens Google's
consent page (or prints its link) and waits until the daemon has the account."""

from __future__ import annotations

import time
import webbrowser
from typing import Any

import typer

integrations_app = typer.Typer(help="Connected accounts (Google) and the assistants using them.")
PROVIDERS = ("google",)
CONNECT_WAIT = 600.0  # seconds `connect` waits for the consent to come back


def _run(ctx: typer.Context, work: Any) -> None:
    from blitzclaw.cli import _run as run

    run(ctx, work)


def _listed(client: Any) -> list[dict[str, Any]]:
    return client.request("GET", "/api/integrations")["integrations"]


def _provider(value: str) -> str:
    if value not in PROVIDERS:
        raise typer.BadParameter(f"one of: {', '.join(PROVIDERS)}")
    return value


@integrations_app.command("list")
def integrations_list(ctx: typer.Context) -> None:
    """Your connected accounts, their state and the assistants they are attached to."""

    def work(o: Any, c: Any) -> None:
        o.show({"integrations": _listed(c)})

    _run(ctx, work)


@integrations_app.command("connect")
def integrations_connect(
    ctx: typer.Context,
    provider: str = typer.Argument(..., callback=_provider, help="google"),
    no_browser: bool = typer.Option(False, "--no-browser", help="Only print the link."),
    no_wait: bool = typer.Option(False, "--no-wait", help="Do not wait for the consent."),
) -> None:
    """Open the provider's consent page; wait until the account is connected. The browser must
    be signed in to the dashboard as you (the consent comes back there)."""

    def work(o: Any, c: Any) -> None:
        before = {i["id"]: i for i in _listed(c) if i["provider"] == provider}
        url = c.request("POST", f"/api/integrations/{provider}/connect")["url"]
        o.say(f"Allow access in the browser: {url}")
        if not no_browser:
            webbrowser.open(url)
        if no_wait:
            o.show({"url": url})
            return
        deadline = time.monotonic() + CONNECT_WAIT
        while time.monotonic() < deadline:
            for found in _listed(c):
                old = before.get(found["id"])
                fresh = old is None or old.get("created_at") != found.get("created_at")
                if found["provider"] == provider and found["status"] == "connected" and fresh:
                    o.show(found)
                    return
            time.sleep(2.0)
        from blitzclaw.client import ClientError

        raise ClientError(f"no {provider} account was connected within {CONNECT_WAIT:.0f} s")

    _run(ctx, work)


@integrations_app.command("remove")
def integrations_remove(
    ctx: typer.Context,
    provider: str = typer.Argument(..., callback=_provider, help="google"),
) -> None:
    """Revoke the access at the provider and forget the account (detached everywhere)."""

    def work(o: Any, c: Any) -> None:
        c.request("DELETE", f"/api/integrations/{provider}")
        o.say(f"{provider}: access revoked and removed")
        o.show({"removed": provider})

    _run(ctx, work)


def _attachment(ctx: typer.Context, instance_id: str, provider: str, action: str) -> None:
    def work(o: Any, c: Any) -> None:
        found = [i for i in _listed(c) if i["provider"] == provider]
        if not found:
            from blitzclaw.client import ApiFailure

            raise ApiFailure(404, "not_found", f"no {provider} account is connected")
        body = {"integration_id": found[0]["id"]}
        o.show(c.request("POST", f"/api/instances/{instance_id}/integrations/{action}", json=body))

    _run(ctx, work)


@integrations_app.command("attach")
def integrations_attach(
    ctx: typer.Context,
    instance_id: str = typer.Argument(..., help="The assistant's id"),
    provider: str = typer.Argument("google", callback=_provider),
) -> None:
    """Let an assistant use the connected account (its server gets the credential)."""
    _attachment(ctx, instance_id, provider, "attach")


@integrations_app.command("detach")
def integrations_detach(
    ctx: typer.Context,
    instance_id: str = typer.Argument(..., help="The assistant's id"),
    provider: str = typer.Argument("google", callback=_provider),
) -> None:
    """Take the account away from an assistant (the credential is removed from its server)."""
    _attachment(ctx, instance_id, provider, "detach")
