"""`blitzclaw`: everything a BlitzClaw user can do, from a terminal or a script.

Output: a table on a terminal, JSON when piped (`--format` chooses: table, json, yaml). Errors
are one line on stderr, never a traceback, with an exit status that says what went wrong:

  0 ok · 1 error · 2 usage · 3 not signed in, or not allowed · 4 not found
  5 payment required (top up) · 6 invalid input · 7 conflict (not now) · 8 BlitzClaw unreachable
"""

from __future__ import annotations

import contextlib
import platform
import sys
import time
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console

from blitzclaw import settings as config
from blitzclaw.admin_commands import admin_app
from blitzclaw.channel_commands import WithChannels
from blitzclaw.client import ApiFailure, BlitzClient, ClientError, Unreachable
from blitzclaw.integration_commands import integrations_app
from blitzclaw.output import FORMATS, default_format, emit

EXIT_ERROR, EXIT_USAGE, EXIT_AUTH, EXIT_NOT_FOUND = 1, 2, 3, 4
EXIT_PAYMENT, EXIT_INVALID, EXIT_CONFLICT, EXIT_UNREACHABLE = 5, 6, 7, 8
_BY_STATUS = {
    400: EXIT_INVALID,
    401: EXIT_AUTH,
    402: EXIT_PAYMENT,
    403: EXIT_AUTH,
    404: EXIT_NOT_FOUND,
    409: EXIT_CONFLICT,
    413: EXIT_INVALID,
    415: EXIT_INVALID,
    422: EXIT_INVALID,
}
WAIT_LIMIT = 900.0  # s: the longest --wait waits

app = typer.Typer(
    cls=WithChannels, help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False
)
auth_app = typer.Typer(help="Sign in with an API key, see who you are, sign out.")
billing_app = typer.Typer(help="Balance, the plan, top-ups, usage.")
instances_app = typer.Typer(help="Your assistants.")
app.add_typer(auth_app, name="auth")
app.add_typer(billing_app, name="billing")
app.add_typer(instances_app, name="instances")


@dataclass
class Options:
    api_url: str | None
    api_key: str | None
    fmt: str
    quiet: bool
    verbose: bool
    no_color: bool

    def client(self) -> BlitzClient:
        found = config.load(self.api_url, self.api_key)
        trace = self.say if self.verbose else None
        return BlitzClient(found.api_url, found.api_key, trace=trace)

    def show(self, data: Any, columns: tuple[str, ...] = ()) -> None:
        if not self.quiet:
            emit(data, self.fmt, columns=columns, no_color=self.no_color)

    def say(self, text: str) -> None:
        """Progress and notes go to stderr, so stdout stays the result."""
        if not self.quiet:
            typer.echo(text, err=True)


@app.callback()
def main(
    ctx: typer.Context,
    api_url: str = typer.Option(None, "--api-url", help="Default: $BLITZCLAW_API_URL, config."),
    api_key: str = typer.Option(None, "--api-key", help="Default: $BLITZCLAW_API_KEY, config."),
    fmt: str = typer.Option(
        None, "--format", "-f", help="table, json or yaml (default: table on a terminal, else json)"
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing but errors."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Say what is being done."),
    no_color: bool = typer.Option(False, "--no-color", help="No colours in tables."),
) -> None:
    chosen = fmt or default_format()
    if chosen not in FORMATS:
        raise typer.BadParameter(f"--format must be one of {', '.join(FORMATS)}")
    ctx.obj = Options(api_url, api_key, chosen, quiet, verbose, no_color)


def fail(exc: ClientError) -> NoReturn:
    """One line on stderr, and the exit status that says what went wrong."""
    typer.echo(f"error: {exc}", err=True)
    if isinstance(exc, ApiFailure):
        code = _BY_STATUS.get(exc.status, EXIT_UNREACHABLE if exc.status >= 500 else EXIT_ERROR)
        raise typer.Exit(EXIT_UNREACHABLE if exc.status == 429 else code)
    raise typer.Exit(EXIT_UNREACHABLE if isinstance(exc, Unreachable) else EXIT_ERROR)


def _run(ctx: typer.Context, work: Callable[[Options, BlitzClient], Any]) -> None:
    options: Options = ctx.obj
    try:
        with options.client() as client:
            work(options, client)
    except ClientError as exc:
        fail(exc)


# -- auth ---------------------------------------------------------------------------------------


@auth_app.command("login")
def auth_login(
    ctx: typer.Context,
    api_key: str = typer.Option(None, "--api-key", help="A key from Settings (for CI)."),
    no_browser: bool = typer.Option(False, "--no-browser", help="Only print the link."),
) -> None:
    """Sign in: confirm a code in the browser (or give --api-key); the key is kept (0600)."""
    options: Options = ctx.obj

    def work(o: Options, c: BlitzClient) -> None:
        key = api_key or _device_login(o, c, open_browser=not no_browser)
        me = BlitzClient(c.api_url, key).me()
        path = config.save({"api_key": key, "api_url": c.api_url})
        o.say(f"Signed in as {me.get('email') or me.get('id')}; key kept in {path}")
        o.show({"id": me.get("id"), "email": me.get("email"), "via": me.get("via")})

    if api_key:
        options.api_key = api_key
    _run(ctx, work)


def _device_login(o: Options, c: BlitzClient, *, open_browser: bool) -> str:
    """The device flow: a code to confirm on the dashboard, then the key minted for us."""
    made = c.request(
        "POST", "/api/auth/device/code", json={"client_name": f"blitzclaw on {platform.node()}"}
    )
    o.say(f"Confirm the code {made['user_code']} at {made['verification_uri_complete']}")
    if open_browser:
        webbrowser.open(made["verification_uri_complete"])

    def issued() -> str | None:
        try:
            answer = c.request(
                "POST", "/api/auth/device/token", json={"device_code": made["device_code"]}
            )
        except ApiFailure as exc:
            if exc.status == 410:
                raise ClientError("the sign-in expired: run `blitzclaw auth login` again") from None
            raise
        return answer.get("key") if isinstance(answer, dict) else None

    return _until(
        issued,
        "the code was not confirmed",
        limit=float(made["expires_in"]),
        every=float(made["interval"]),
    )


@auth_app.command("whoami")
def auth_whoami(ctx: typer.Context) -> None:
    """Who the key belongs to."""

    def work(o: Options, c: BlitzClient) -> None:
        me = c.me()
        o.show({k: me.get(k) for k in ("id", "email", "role", "via")})

    _run(ctx, work)


@auth_app.command("logout")
def auth_logout(ctx: typer.Context) -> None:
    """Revoke the stored key at BlitzClaw and forget it here."""

    def work(o: Options, c: BlitzClient) -> None:
        key = config.load(o.api_url, o.api_key).api_key or ""
        for row in c.request("GET", "/api/auth/api-keys")["keys"]:
            if row["revoked_at"] is None and key.startswith(row["prefix"]):
                c.request("DELETE", f"/api/auth/api-keys/{row['id']}")
        config.save({"api_key": None})
        o.show({"signed_out": True})

    _run(ctx, work)


# -- billing ------------------------------------------------------------------------------------


@billing_app.command("balance")
def billing_balance(ctx: typer.Context) -> None:
    """Balance, what is reserved, the minimum, the plan."""

    def work(o: Options, c: BlitzClient) -> None:
        b = c.balance()
        plan = b.get("plan") or {}
        o.show(
            {
                "balance_usd": b["balance_micros"] / 1e6,
                "available_usd": b["available_micros"] / 1e6,
                "reserved_usd": b["reserved_micros"] / 1e6,
                "minimum_usd": b["minimum_micros"] / 1e6,
                "below_minimum": b["below_minimum"],
                "auto_topup": b["auto_topup"]["enabled"],
                "plan": plan.get("status"),
                "plan_renews_at": plan.get("renews_at"),
                "plan_ends_at": plan.get("ends_at"),
            }
        )

    _run(ctx, work)


@billing_app.command("subscribe")
def billing_subscribe(
    ctx: typer.Context,
    url_only: bool = typer.Option(False, "--url-only", help="Print the checkout URL only."),
    open_browser: bool = typer.Option(False, "--open", help="Open the checkout in a browser."),
    wait: bool = typer.Option(False, "--wait", help="Wait until the plan is active."),
) -> None:
    """Subscribe to the base plan (monthly, usage included): a checkout link to pay at."""

    def work(o: Options, c: BlitzClient) -> None:
        made = c.subscribe()
        if url_only:
            typer.echo(made["checkout_url"])
        else:
            o.show(made)
        if open_browser:
            webbrowser.open(made["checkout_url"])
        if wait:
            o.say("Waiting for the payment…")
            _until(lambda: _subscribed(c), "the payment did not arrive in time")
            o.say("Subscribed.")

    _run(ctx, work)


def _subscribed(c: BlitzClient) -> bool:
    plan = c.balance().get("plan")
    return bool(plan) and plan["status"] not in ("canceled", "expired")


@billing_app.command("unsubscribe")
def billing_unsubscribe(
    ctx: typer.Context,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
) -> None:
    """Cancel the base plan at the end of the paid period."""
    if not yes and sys.stdin.isatty():
        typer.confirm("Cancel the base plan at the end of the paid period?", abort=True)
    _run(ctx, lambda o, c: o.show(c.unsubscribe()))


@billing_app.command("topup")
def billing_topup(
    ctx: typer.Context,
    amount: int = typer.Option(..., "--amount", help="Whole US dollars."),
    url_only: bool = typer.Option(False, "--url-only", help="Print the checkout URL only."),
    wait: bool = typer.Option(False, "--wait", help="Wait until the payment has arrived."),
) -> None:
    """Start a top-up: a checkout link to pay at."""

    def work(o: Options, c: BlitzClient) -> None:
        made = c.topup(amount * 100)
        if url_only:
            typer.echo(made["checkout_url"])
        else:
            o.show(made)
        if wait:
            o.say("Waiting for the payment…")
            _until(lambda: _paid(c, made["topup_id"]), "the payment did not arrive in time")
            o.say("Payment received.")

    _run(ctx, work)


def _paid(c: BlitzClient, topup_id: str) -> bool:
    return any(t["id"] == topup_id and t["status"] == "paid" for t in c.topups()["topups"])


@billing_app.command("usage")
def billing_usage(
    ctx: typer.Context,
    frm: str = typer.Option(None, "--from", help="YYYY-MM-DD (default: 30 days before --to)"),
    to: str = typer.Option(None, "--to", help="YYYY-MM-DD (default: today)"),
    by: str = typer.Option("day", "--by", help="day, model or instance"),
) -> None:
    """What your assistants cost."""
    if by not in ("day", "model", "instance"):
        raise typer.BadParameter("--by must be day, model or instance")

    def work(o: Options, c: BlitzClient) -> None:
        u = c.usage(frm, to)
        if o.fmt == "table":
            o.show(u[f"by_{by}"], columns=(by, "requests", "cost_micros"))
        else:
            o.show(u)

    _run(ctx, work)


@billing_app.command("history")
def billing_history(ctx: typer.Context) -> None:
    """Past top-ups."""

    def work(o: Options, c: BlitzClient) -> None:
        o.show(c.topups()["topups"], columns=("created_at", "amount_cents", "status", "order_id"))

    _run(ctx, work)


# -- instances ----------------------------------------------------------------------------------

_COLUMNS = ("id", "status", "channel_type", "persona_template")


@instances_app.command("list")
def instances_list(ctx: typer.Context) -> None:
    """Your assistants."""
    _run(ctx, lambda o, c: o.show(c.instances()["instances"], columns=_COLUMNS))


@instances_app.command("get")
def instances_get(ctx: typer.Context, instance_id: str) -> None:
    """One assistant."""
    _run(ctx, lambda o, c: o.show(c.instance(instance_id)))


@instances_app.command("create")
def instances_create(
    ctx: typer.Context,
    persona: str = typer.Option("assistant", "--persona", help="assistant, dev, creative, custom"),
    channel: str = typer.Option(..., "--channel", help="telegram, whatsapp, …"),
    token: str = typer.Option(None, "--token", help="The Telegram bot token."),
    soul: Path = typer.Option(None, "--soul", help="A SOUL.md file.", exists=True),
    no_wait: bool = typer.Option(False, "--no-wait", help="Do not wait until it is active."),
) -> None:
    """A new assistant; waits until it is active unless --no-wait."""

    def work(o: Options, c: BlitzClient) -> None:
        body: dict[str, Any] = {"channel_type": channel, "persona_template": persona}
        if token:
            body["channel_config"] = {"bot_token": token}
        if soul is not None:
            body["soul_md"] = soul.read_text()
        made = c.create_instance(body)
        if not no_wait and made["status"] != "waiting_for_channel":
            o.say(f"Setting up {made['id']}…")
            with _progress(o, "Setting up your assistant's server (a few minutes)…"):
                made = _until(lambda: _settled(c, made["id"]), "it is still being set up")
        o.show(made)

    _run(ctx, work)


def _progress(o: Options, text: str) -> Any:
    """A spinner on a terminal's stderr; nothing when piped or quiet."""
    if o.quiet or not sys.stderr.isatty():
        return contextlib.nullcontext()
    return Console(stderr=True, no_color=o.no_color).status(text)


def _settled(c: BlitzClient, instance_id: str) -> Any:
    row = c.instance(instance_id)
    if row["status"] == "error":
        raise ClientError(f"setting it up failed: {row.get('status_reason') or 'unknown'}")
    return row if row["status"] == "active" else None


def _action(name: str, help_text: str) -> None:
    def command(
        ctx: typer.Context,
        instance_id: str,
        force: bool = typer.Option(False, "--force", help="Do not ask (delete)."),
    ) -> None:
        if name == "delete" and not force and sys.stdin.isatty():
            typer.confirm(f"Delete {instance_id} and its server?", abort=True)
        _run(ctx, lambda o, c: o.show(c.instance_action(instance_id, name)))

    command.__doc__ = help_text
    instances_app.command(name)(command)


for _name, _help in (
    ("restart", "Restart its gateway."),
    ("stop", "Stop it (nothing is spent while stopped)."),
    ("start", "Start it again."),
    ("delete", "Delete it and its server."),
):
    _action(_name, _help)


@instances_app.command("soul")
def instances_soul(
    ctx: typer.Context,
    instance_id: str,
    file: Path = typer.Option(None, "--file", help="Set SOUL.md from this file."),
    edit: bool = typer.Option(False, "--edit", help="Edit it in $EDITOR."),
) -> None:
    """Show or change an assistant's persona (SOUL.md additions, or a custom persona's text)."""

    def work(o: Options, c: BlitzClient) -> None:
        current = c.instance(instance_id).get("soul_md") or ""
        text: str | None = None
        if file is not None:
            text = file.read_text()
        elif edit:
            text = typer.edit(current)
            if text is None:  # the editor was closed without saving
                o.say("Nothing changed.")
                return
        if text is None:
            o.show({"id": instance_id, "soul_md": current})
            return
        body = {"soul_md": text if text.strip() else None}
        o.show(c.request("POST", f"/api/instances/{instance_id}/configure", json=body))

    _run(ctx, work)


@instances_app.command("logs")
def instances_logs(
    ctx: typer.Context,
    instance_id: str,
    lines: int = typer.Option(100, "--lines", "-n", help="How many of the last lines."),
    follow: bool = typer.Option(False, "--follow", help="Keep printing new lines."),
) -> None:
    """The assistant's gateway log (Ctrl-C stops --follow)."""

    def work(o: Options, c: BlitzClient) -> None:
        params = {"lines": lines, **({"follow": "1"} if follow else {})}
        for chunk in c.stream(f"/api/instances/{instance_id}/logs", params=params):
            sys.stdout.write(chunk)
            sys.stdout.flush()

    _run(ctx, work)


@billing_app.command("auto-topup")
def billing_auto_topup(
    ctx: typer.Context,
    on: bool = typer.Option(None, "--on/--off", help="Turn automatic top-ups on or off."),
    threshold: int = typer.Option(None, "--threshold", help="Dollars: top up below this."),
    amount: int = typer.Option(None, "--amount", help="Dollars to add each time."),
) -> None:
    """Show or set automatic top-ups."""

    def work(o: Options, c: BlitzClient) -> None:
        if on is None:
            o.show(c.balance()["auto_topup"])
            return
        body: dict[str, Any] = {"enabled": on}
        if threshold is not None:
            body["threshold_cents"] = threshold * 100
        if amount is not None:
            body["amount_cents"] = amount * 100
        o.show(c.request("PATCH", "/api/billing/auto-topup", json=body))

    _run(ctx, work)


apikey_app = typer.Typer(help="Your own provider key for an assistant (billed by your provider).")
app.add_typer(apikey_app, name="apikey")


@apikey_app.command("set")
def apikey_set(
    ctx: typer.Context,
    instance_id: str,
    provider: str = typer.Option(..., "--provider", help="anthropic, openai, …"),
    key: str = typer.Option(..., "--key", help="The provider's API key."),
) -> None:
    """Use your own key (checked with the provider first)."""
    body = {"provider": provider, "api_key": key}
    _run(
        ctx,
        lambda o, c: o.show(c.request("POST", f"/api/instances/{instance_id}/api-key", json=body)),
    )


@apikey_app.command("remove")
def apikey_remove(ctx: typer.Context, instance_id: str) -> None:
    """Back to BlitzClaw's metered access."""
    _run(ctx, lambda o, c: o.show(c.request("DELETE", f"/api/instances/{instance_id}/api-key")))


app.add_typer(admin_app, name="admin")
app.add_typer(integrations_app, name="integrations")


@app.command("console")
def console(
    ctx: typer.Context,
    daemon: list[str] = typer.Option(
        [],
        "--daemon",
        metavar="URL",
        help="Another daemon sharing the database (repeat): its actors and events join in",
    ),
) -> None:
    """The operators' live console (Textual: the package's tui extra)."""
    options: Options = ctx.obj
    try:
        from blitzclawd_tui.app import run as run_console
    except ImportError:
        typer.echo("error: the console needs Textual: pip install 'blitzclawd[tui]'", err=True)
        raise typer.Exit(EXIT_ERROR) from None
    found = config.load(options.api_url, options.api_key)
    run_console(found.api_url, found.api_key, daemon)


def _until(
    check: Callable[[], Any], why: str, limit: float = WAIT_LIMIT, every: float = 1.0
) -> Any:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise ClientError(f"gave up waiting: {why}")


def run() -> None:
    app()
