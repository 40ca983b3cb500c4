"""`blitzclaw <channel> …`: a group of commands for each channel the daemon offers, built from
its description (GET /api/channels: the channel's fields and routes), so a new channel plugin
needs no change here.

Every channel has `connect ID --<field> …`, `validate --<field> …`, `info ID` and
`pairing ID [--approve CODE]`; each of its own routes becomes a command named after it
(`whatsapp status ID`, `telegram bot ID`, …). A route that answers a QR code to scan has it drawn
in the terminal (segno) and followed as it rotates, until the phone has linked; `qr`, where the
channel has a `login`, starts (or rejoins) the login first.
"""

from __future__ import annotations

import inspect
import io
from collections.abc import Callable
from typing import Any

import segno
import typer
from typer.core import TyperGroup

from blitzclaw import settings as config
from blitzclaw.client import BlitzClient, ClientError

QR_FOLLOW_ROUNDS = 40  # each a long poll of about a minute at most


class WithChannels(TyperGroup):
    """The CLI's root group: its own commands, then the daemon's channels by name."""

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        found = super().get_command(ctx, cmd_name)
        if found is not None:
            return found
        channel = _channels(ctx).get(cmd_name)
        return typer.main.get_command(channel_app(channel)) if channel is not None else None


def _client_for(ctx: Any) -> BlitzClient:
    root = ctx.find_root()
    found = config.load(root.params.get("api_url"), root.params.get("api_key"))
    return BlitzClient(found.api_url, found.api_key)


def _channels(ctx: Any) -> dict[str, dict[str, Any]]:
    try:
        with _client_for(ctx) as client:
            return {c["type"]: c for c in client.channels()["channels"]}
    except ClientError:
        return {}  # not reachable or not signed in: an unknown command, as the parser says


def _run(ctx: typer.Context, work: Callable[[Any, BlitzClient], Any]) -> None:
    from blitzclaw.cli import fail  # one place decides messages and exit codes

    try:
        with _client_for(ctx) as client:
            work(ctx.find_root().obj, client)
    except ClientError as exc:
        fail(exc)


def _call(ctx: typer.Context, method: str, path: str, body: Any = None, key: str = "") -> None:
    def work(o: Any, c: BlitzClient) -> None:
        answer = c.request(method, path, json=body)
        o.show(answer[key] if key else answer)

    _run(ctx, work)


def _with_fields(fn: Callable[..., None], channel: dict[str, Any], *leading: str) -> Any:
    """`fn(ctx, <leading arguments>, **settings)` with one option per channel field, declared
    the way Typer reads a command (its signature and annotations)."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = [inspect.Parameter("ctx", kind, annotation=typer.Context)]
    notes: dict[str, Any] = {"ctx": typer.Context, "return": None}
    for name in leading:
        params.append(inspect.Parameter(name, kind, default=typer.Argument(...), annotation=str))
        notes[name] = str
    for f in channel["fields"]:
        many = f["type"] == "string_list"
        annotation = list[str] | None if many else str | None
        option = typer.Option(None, f"--{f['name'].replace('_', '-')}", help=f["description"])
        params.append(inspect.Parameter(f["name"], kind, default=option, annotation=annotation))
        notes[f["name"]] = annotation

    def command(ctx: typer.Context, *args: Any, **kwargs: Any) -> None:
        bound = inspect.Signature(params).bind(ctx, *args, **kwargs).arguments
        given = {f["name"]: bound.get(f["name"]) for f in channel["fields"]}
        settings = {k: list(v) if isinstance(v, list | tuple) else v for k, v in given.items() if v}
        fn(ctx, *(bound[n] for n in leading), settings)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = notes
    command.__doc__ = fn.__doc__
    return command


def channel_app(channel: dict[str, Any]) -> typer.Typer:
    kind = channel["type"]
    sub = typer.Typer(help=f"{channel['display_name']}: connect, check, pair, and more.")

    def connect(ctx: typer.Context, instance_id: str, settings: dict[str, Any]) -> None:
        """Connect (or change) an assistant's channel; settings left out stay."""
        path = f"/api/instances/{instance_id}/channel"
        _call(ctx, "POST", path, {"channel_config": settings})

    def validate(ctx: typer.Context, settings: dict[str, Any]) -> None:
        """Check settings with the channel's service, storing nothing."""
        _call(ctx, "POST", f"/api/channels/{kind}/validate", {"channel_config": settings})

    sub.command("connect")(_with_fields(connect, channel, "instance_id"))
    sub.command("validate")(_with_fields(validate, channel))

    @sub.command("info")
    def info(ctx: typer.Context, instance_id: str) -> None:
        """The channel's settings (no secrets) and what to do next."""

        def work(o: Any, c: BlitzClient) -> None:
            row = c.instance(instance_id)
            shown = {f"channel.{k}": v for k, v in sorted(row["channel_config"].items())}
            o.show(
                {
                    "channel_type": row["channel_type"],
                    "status": row["status"],
                    "setup_text": row["setup_text"],
                    **shown,
                }
            )

        _run(ctx, work)

    @sub.command("pairing")
    def pairing(
        ctx: typer.Context,
        instance_id: str,
        approve: str = typer.Option(None, "--approve", metavar="CODE", help="Let them in."),
    ) -> None:
        """Who asks to talk to the assistant; --approve CODE lets one in."""
        base = f"/api/instances/{instance_id}/{kind}/pairing"
        if approve:
            _call(ctx, "POST", base + "/approve", {"code": approve})
        else:
            _call(ctx, "GET", base, key="requests")

    routes = {r["path"].rsplit(f"/{kind}/", 1)[1]: r for r in channel["routes"]}
    for name, route in routes.items():
        if name in ("connect", "validate", "info", "pairing") or "/" in name:
            continue
        called = routes["login"] if name == "qr" and "login" in routes else route
        sub.command(name, help=route.get("summary") or f"{route['method']} {route['path']}")(
            _route_command(called)
        )
    return sub


def _route_command(route: dict[str, Any]) -> Callable[..., None]:
    def call(ctx: typer.Context, instance_id: str) -> None:
        path = route["path"].replace("{id}", instance_id)

        def work(o: Any, c: BlitzClient) -> None:
            answer = c.request(route["method"], path, json={} if route["method"] != "GET" else None)
            if isinstance(answer, dict) and answer.get("qr"):
                answer = _follow_qr(o, c, path.rsplit("/", 1)[0] + "/qr", answer)
            o.show(answer)

        _run(ctx, work)

    return call


def _follow_qr(options: Any, client: BlitzClient, qr_path: str, answer: dict[str, Any]) -> Any:
    """Draw each QR code as it comes (on stderr: stdout stays the result) until linked."""
    for _ in range(QR_FOLLOW_ROUNDS):
        if answer.get("status") != "waiting_for_scan" or not answer.get("qr"):
            return answer
        drawn = io.StringIO()
        segno.make(answer["qr"], error="l").terminal(out=drawn, compact=True)
        options.say(drawn.getvalue())
        options.say("Scan it: WhatsApp > Settings > Linked devices > Link a device")
        answer = client.request("GET", qr_path, params={"wait": "1", "since": answer.get("id")})
    return answer
