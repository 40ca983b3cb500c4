"""Every email BlitzClaw sends, in one place: plain text and simple HTML from the same blocks.

    email = render("topup_receipt", app_url=..., support_url=..., amount_micros=20_000_000,
                   balance_micros=27_450_000)

Facts are plain JSON-friendly values, because the notifier stores them in a jsonb column and
renders later: amounts are integer micro-USD, dates ISO strings, lists of dicts. Every kind takes
`app_url` and `support_url` (footer) and an optional `name`; a missing, unknown or ill-typed fact
is a ValueError naming it. Every interpolated value is escaped for HTML (paragraphs carry no
markup of their own, so each is escaped whole) and flattened to one line in subjects.

Rounding (micro-USD to cents): balances are shown rounded DOWN, so "available" never promises
money that is not there (a user with $9.999 has not got $10.00 to spend); costs are shown rounded
UP, so a summary never understates what was spent. Top-up amounts are whole cents already.

Why one module: every email and the type of every fact it takes; one place to read what users
(and operators, about them) are told.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

MICROS_PER_CENT = 10_000
BRAND = "BlitzClaw"


@dataclass(frozen=True, slots=True)
class Email:
    subject: str
    text: str
    html: str


# -- money and numbers ------------------------------------------------------------------------


def usd(micros: int, *, round_up: bool = False) -> str:
    """Integer micro-USD as dollars with 2 decimals: "$1,234.56", "-$0.38"."""
    if type(micros) is not int:
        raise ValueError("an amount must be integer micro-USD")
    cents = -(-micros // MICROS_PER_CENT) if round_up else micros // MICROS_PER_CENT
    sign = "-" if cents < 0 else ""
    whole, frac = divmod(abs(cents), 100)
    return f"{sign}${whole:,}.{frac:02d}"


def balance_usd(micros: int) -> str:
    return usd(micros)  # floored: never show more than is really available


def cost_usd(micros: int) -> str:
    return usd(micros, round_up=True)  # ceiled: never understate spending


# -- blocks: one description, two renderings --------------------------------------------------


@dataclass(frozen=True, slots=True)
class _P:
    text: str


@dataclass(frozen=True, slots=True)
class _List:
    items: tuple[str, ...]
    ordered: bool = False


@dataclass(frozen=True, slots=True)
class _Button:
    label: str
    url: str


_Block = _P | _List | _Button


def _text(blocks: Sequence[_Block]) -> str:
    out = []
    for block in blocks:
        if isinstance(block, _P):
            out.append(block.text)
        elif isinstance(block, _List):
            marks = [f"{i}." if block.ordered else "-" for i in range(1, len(block.items) + 1)]
            out.append("\n".join(f"{m} {item}" for m, item in zip(marks, block.items, strict=True)))
        else:
            out.append(f"{block.label}: {block.url}")
    return "\n\n".join(out) + "\n"


def _html(title: str, blocks: Sequence[_Block]) -> str:
    e = html.escape
    parts = [f'<h1 style="font-size:20px;margin:0 0 16px">{e(title)}</h1>']
    for block in blocks:
        if isinstance(block, _P):
            parts.append(f"<p>{e(block.text)}</p>")
        elif isinstance(block, _List):
            tag = "ol" if block.ordered else "ul"
            items = "".join(f"<li>{e(item)}</li>" for item in block.items)
            parts.append(f"<{tag}>{items}</{tag}>")
        else:
            parts.append(
                f'<p><a href="{e(block.url)}" style="display:inline-block;padding:10px 16px;'
                'background:#111;color:#fff;text-decoration:none;border-radius:6px">'
                f"{e(block.label)}</a></p>"
            )
    return (
        '<!doctype html><html><body style="font-family:-apple-system,Segoe UI,Helvetica,Arial,'
        'sans-serif;color:#111;line-height:1.5;max-width:560px;margin:0 auto;padding:24px">'
        + "".join(parts)
        + "</body></html>"
    )


def _email(subject: str, title: str, blocks: list[_Block], f: Mapping[str, Any]) -> Email:
    greeting = _P(f"Hi {f['name']}," if f.get("name") else "Hi,")
    support = f["support_url"].removeprefix("mailto:")
    footer = _P(f"{BRAND} · help: {support} · dashboard: {f['app_url']}")
    body = [greeting, *blocks, footer]
    return Email(subject=_line(subject), text=_text(body), html=_html(title, body))


def _line(value: str, limit: int = 120) -> str:
    """One line, no control characters: safe in a subject or a greeting."""
    flat = re.sub(r"[\x00-\x1f\x7f]+", " ", value).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# -- the kinds --------------------------------------------------------------------------------


def _welcome(f: Mapping[str, Any]) -> Email:
    blocks: list[_Block] = [
        _P(f"Welcome to {BRAND}: your own OpenClaw assistant, hosted and kept running for you."),
        _P("Getting started takes a few minutes:"),
        _List(
            (
                f"Top up your balance{_from_minimum(f)}. You pay only for the tokens your "
                "assistant uses; there is no subscription to forget.",
                "Create an instance and pick a persona: personal assistant, dev assistant, "
                "creative partner or your own.",
                "Connect a Telegram bot: we walk you through BotFather step by step.",
                "Say hi to your assistant in Telegram.",
            ),
            ordered=True,
        ),
        _Button("Open your dashboard", f["app_url"]),
    ]
    return _email(f"Welcome to {BRAND}", f"Welcome to {BRAND}", blocks, f)


def _topup_receipt(f: Mapping[str, Any]) -> Email:
    amount, balance = usd(f["amount_micros"]), balance_usd(f["balance_micros"])
    blocks: list[_Block] = [
        _P(f"Thank you: your top-up of {amount} has been added to your balance."),
        _P(f"Your balance is now {balance}."),
        _P("Creem, our payment provider and merchant of record, emails the tax invoice."),
        _Button("Open your dashboard", f["app_url"]),
    ]
    return _email(f"Receipt: {amount} added to your balance", "Top-up received", blocks, f)


def _balance_low(f: Mapping[str, Any]) -> Email:
    balance = balance_usd(f["balance_micros"])
    blocks: list[_Block] = [
        _P(f"Your {BRAND} balance is down to {balance}."),
        _P(
            "When it runs out, your assistants pause until you top up. Top up now to keep them "
            "answering."
        ),
        _Button("Top up now", f.get("topup_url") or f["app_url"]),
    ]
    return _email(f"Your balance is low ({balance} left)", "Your balance is low", blocks, f)


def _balance_depleted(f: Mapping[str, Any]) -> Email:
    balance = balance_usd(f["balance_micros"])
    paused = f.get("paused_instances")
    which = "your assistants" if paused is None else _plural(paused, "assistant")
    blocks: list[_Block] = [
        _P(f"Your balance has run out ({balance}), so we paused {which}."),
        _P(
            "Nothing is lost: memory, persona and channels stay as they are, and everything "
            f"resumes as soon as your balance is back above the{_minimum(f)} minimum."
        ),
        _Button("Top up now", f.get("topup_url") or f["app_url"]),
    ]
    return _email("Action needed: your assistants are paused", "Assistants paused", blocks, f)


def _instance_created(f: Mapping[str, Any]) -> Email:
    name = f["instance_name"]
    if f.get("setup_text"):  # the channel's own first steps (its plugin's setup text)
        return _email(
            f"{name} is ready",
            f"{name} is ready",
            [
                _P(f"Your assistant {name} is up and running."),
                _P(str(f["setup_text"])),
                _Button("Open your dashboard", f.get("setup_url") or f["app_url"]),
            ],
            f,
        )
    cli = (
        f"blitzclaw telegram connect {f['instance_id']} --token <token>"
        if f.get("instance_id")
        else "blitzclaw telegram connect <instance> --token <token>"
    )
    blocks: list[_Block] = [
        _P(f"Your assistant {name} is up. To talk to it, connect a Telegram bot:"),
        _List(
            (
                "Open Telegram and start a chat with @BotFather.",
                "Send /newbot and choose a display name (e.g. My AI Assistant).",
                'Choose a username ending in "bot" (e.g. myai_assistant_bot).',
                "Copy the token BotFather gives you (it looks like 123456789:AAE…).",
                f"Paste it into your assistant's Telegram setup in the dashboard, or run: {cli}",
                "Open the link to your bot and send it a message.",
            ),
            ordered=True,
        ),
        _P("Keep the token secret: whoever has it controls your bot."),
        _Button("Set up Telegram", f.get("setup_url") or f["app_url"]),
    ]
    return _email(f"{name} is ready: connect Telegram", f"{name} is ready", blocks, f)


def _integration_broken(f: Mapping[str, Any]) -> Email:
    which = f["integration"]
    account = f" ({f['account_email']})" if f.get("account_email") else ""
    blocks: list[_Block] = [
        _P(
            f"Your assistants can no longer use your {which} account{account}: {which} "
            "stopped accepting the connection (access was removed, or it expired)."
        ),
        _P("Connect it again to let your assistants read your mail and calendar again."),
        _Button(f"Reconnect {which}", f["reconnect_url"]),
    ]
    return _email(f"Reconnect your {which} account", f"{which} disconnected", blocks, f)


def _instance_error(f: Mapping[str, Any]) -> Email:
    name = f["instance_name"]
    blocks: list[_Block] = [
        _P(f"Your assistant {name} ran into a problem: {f['error']}"),
        _P(
            f.get("advice")
            or "We are on it and will restore it automatically if we can. If it keeps "
            "happening, contact support and mention the assistant's name."
        ),
        _Button("Contact support", f["support_url"]),
    ]
    return _email(f"Problem with your assistant {name}", "Something went wrong", blocks, f)


def _usage_spike(f: Mapping[str, Any]) -> Email:
    name = f["instance_name"]
    spent = f["spent_micros"] / 1e6
    baseline = f["baseline_micros"] / 1e6
    usual = f"usually about ${baseline:.2f} an hour" if baseline else "far more than usual"
    blocks: list[_Block] = [
        _P(
            f"Your assistant {name} spent ${spent:.2f} in the last hour ({usual}). If you did "
            "not expect this, something may be talking to it in a loop, or someone else may be "
            "using your bot."
        ),
        _P(
            "We paused it so it spends nothing more; resume it from your dashboard once you "
            "have had a look."
            if f.get("paused")
            else "It is still running. You can stop it from your dashboard at any time."
        ),
        _Button("Open your dashboard", f["app_url"]),
    ]
    return _email(f"Unusual spending by {name}", "Unusual spending", blocks, f)


# -- operators' alerts (alerts.operator_emails): about a user, to an operator ------------------


def _owner(f: Mapping[str, Any]) -> str:
    email = f.get("owner_email")
    return f"user {f['user_id']} ({email})" if email else f"user {f['user_id']}"


def _operator_usage_spike(f: Mapping[str, Any]) -> Email:
    spent, baseline = f["spent_micros"], f["baseline_micros"]
    usual = f"a baseline of {cost_usd(baseline)} an hour" if baseline else "no spending before"
    blocks: list[_Block] = [
        _P(
            f"Instance {f['instance_id']} of {_owner(f)} spent {cost_usd(spent)} in the last "
            f"hour, against {usual}."
        ),
        _P(
            "It was paused (alerts.spike_pause); the owner was emailed and can resume it."
            if f.get("paused")
            else "It is still running; the owner was emailed."
        ),
        _P(f"See it with GET /api/admin/instances?q={f['instance_id']}."),
    ]
    return _email(
        f"Operator alert: usage spike on instance {f['instance_id']}", "Usage spike", blocks, f
    )


def _operator_balance_paused(f: Mapping[str, Any]) -> Email:
    paused = f["paused_instances"]
    which = "1 instance was" if paused == 1 else f"{paused:,} instances were"
    blocks: list[_Block] = [
        _P(
            f"The balance of {_owner(f)} ran out mid-conversation: "
            f"{balance_usd(f['balance_micros'])}, below the minimum, so {which} paused."
        ),
        _P(
            "They resume by themselves when the user tops up; the user was emailed. A manual "
            f"credit: POST /api/admin/users/{f['user_id']}/adjust."
        ),
    ]
    return _email(
        f"Operator alert: user {f['user_id']} ran out of balance", "Balance ran out", blocks, f
    )


def _payment_failed(f: Mapping[str, Any]) -> Email:
    paused = f.get("paused_instances")
    if paused:
        which = _plural(paused, "assistant")
        what_we_did = f"Until it is sorted out, we paused {which}."
        resume = "It resumes" if paused == 1 else "They resume"
        comeback = (
            f"Nothing is lost: memory, persona and channels stay as they are. {resume} "
            "automatically as soon as the payment goes through."
        )
    else:
        what_we_did = "You have no running assistants right now, so nothing was paused."
        comeback = "Nothing is lost: everything stays as it is."
    blocks: list[_Block] = [
        _P(f"Your latest payment to {BRAND} did not go through."),
        _P(what_we_did),
        _P(comeback),
        _P(
            "What you can do: update your payment details, or top up your balance, from your "
            "dashboard. If you think this is a mistake, contact support."
        ),
        _Button("Open your dashboard", f["dashboard_url"]),
    ]
    return _email(
        "Action needed: your payment did not go through", "Payment did not go through", blocks, f
    )


def _weekly_digest(f: Mapping[str, Any]) -> Email:
    cost = cost_usd(f["cost_micros"])
    blocks: list[_Block] = [
        _P(
            f"Your week {f['week']}: {f['requests']:,} requests, {f['tokens']:,} tokens, "
            f"{cost} in total."
        ),
    ]
    instances = f.get("instances") or []
    if instances:
        lines = tuple(
            f"{i['name']}: {cost_usd(i['cost_micros'])}, {i['tokens']:,} tokens" for i in instances
        )
        blocks += [_P("Per assistant:"), _List(lines)]
    if f.get("balance_micros") is not None:
        blocks.append(_P(f"Balance available: {balance_usd(f['balance_micros'])}."))
    blocks += [
        _P(
            "Tip: every message resends the conversation so far; starting a fresh chat for a "
            "new topic keeps each message cheaper."
        ),
        _Button("See your usage", f["app_url"]),
    ]
    return _email(f"Your week {f['week']}: {cost}", "Your weekly usage", blocks, f)


def _minimum(f: Mapping[str, Any]) -> str:
    return f" {usd(f['minimum_micros'])}" if f.get("minimum_micros") is not None else ""


def _from_minimum(f: Mapping[str, Any]) -> str:
    return f" (from {usd(f['minimum_micros'])})" if f.get("minimum_micros") is not None else ""


def _plural(n: int, word: str) -> str:
    return f"your {word}" if n == 1 else f"your {n:,} {word}s"


# -- facts: what each kind needs, and the type of every fact ----------------------------------


def _str(kind: str, name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{kind}: fact {name!r} must be a non-empty string")
    return _line(value, 200)


def _micros(kind: str, name: str, value: Any) -> int:
    if type(value) is not int:  # bool and float are refused: money is integer micro-USD
        raise ValueError(f"{kind}: fact {name!r} must be integer micro-USD")
    return value


def _count(kind: str, name: str, value: Any) -> int:
    if type(value) is not int or value < 0:
        raise ValueError(f"{kind}: fact {name!r} must be a non-negative integer")
    return value


def _flag(kind: str, name: str, value: Any) -> bool:
    if type(value) is not bool:
        raise ValueError(f"{kind}: fact {name!r} must be true or false")
    return value


def _url(kind: str, name: str, value: Any) -> str:
    url = _str(kind, name, value)
    if not url.startswith(("https://", "http://", "mailto:")):
        raise ValueError(f"{kind}: fact {name!r} must be an http(s) or mailto URL")
    return url


def _week(kind: str, name: str, value: Any) -> str:
    """An ISO week ("2026-W19") or a date ("2026-05-04"), as the notifier's period."""
    text = _str(kind, name, value)
    if not re.fullmatch(r"\d{4}-W\d{2}", text):
        try:
            date.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{kind}: fact {name!r} must be an ISO week or date") from None
    return text


def _instances(kind: str, name: str, value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"{kind}: fact {name!r} must be a list")
    out = []
    for n, item in enumerate(value):
        where = f"{name}[{n}]"
        if not isinstance(item, Mapping):
            raise ValueError(f"{kind}: fact {where!r} must be an object")
        for key in ("name", "cost_micros", "tokens"):
            if key not in item:
                raise ValueError(f"{kind}: missing fact {where + '.' + key!r}")
        out.append(
            {
                "name": _str(kind, where + ".name", item["name"]),
                "cost_micros": _micros(kind, where + ".cost_micros", item["cost_micros"]),
                "tokens": _count(kind, where + ".tokens", item["tokens"]),
            }
        )
    return out


_Check = Callable[[str, str, Any], Any]
_TYPES: dict[str, _Check] = {
    "app_url": _url,
    "support_url": _url,
    "topup_url": _url,
    "setup_url": _url,
    "name": _str,
    "amount_micros": _micros,
    "balance_micros": _micros,
    "minimum_micros": _micros,
    "cost_micros": _micros,
    "spent_micros": _micros,
    "baseline_micros": _micros,
    "paused": _flag,
    "tokens": _count,
    "requests": _count,
    "paused_instances": _count,
    "instance_name": _str,
    "instance_id": _str,
    "user_id": _str,
    "owner_email": _str,
    "error": _str,
    "advice": _str,
    "setup_text": _str,
    "dashboard_url": _url,
    "reconnect_url": _url,
    "integration": _str,
    "account_email": _str,
    "week": _week,
    "instances": _instances,
}
_COMMON_REQUIRED = ("app_url", "support_url")
_COMMON_OPTIONAL = ("name",)


@dataclass(frozen=True, slots=True)
class _Kind:
    build: Callable[[Mapping[str, Any]], Email]
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()


_KINDS: dict[str, _Kind] = {
    "welcome": _Kind(_welcome, (), ("minimum_micros",)),
    "topup_receipt": _Kind(_topup_receipt, ("amount_micros", "balance_micros")),
    "balance_low": _Kind(_balance_low, ("balance_micros",), ("topup_url",)),
    "balance_depleted": _Kind(
        _balance_depleted, ("balance_micros",), ("topup_url", "paused_instances", "minimum_micros")
    ),
    "instance_created": _Kind(
        _instance_created, ("instance_name",), ("instance_id", "setup_url", "setup_text")
    ),
    "integration_broken": _Kind(
        _integration_broken, ("integration", "reconnect_url"), ("account_email",)
    ),
    "instance_error": _Kind(_instance_error, ("instance_name", "error"), ("advice",)),
    "usage_spike": _Kind(
        _usage_spike, ("instance_name", "spent_micros", "baseline_micros"), ("paused",)
    ),
    "payment_failed": _Kind(_payment_failed, ("dashboard_url",), ("paused_instances",)),
    "operator_usage_spike": _Kind(
        _operator_usage_spike,
        ("instance_id", "user_id", "spent_micros", "baseline_micros"),
        ("owner_email", "paused"),
    ),
    "operator_balance_paused": _Kind(
        _operator_balance_paused,
        ("user_id", "balance_micros", "paused_instances"),
        ("owner_email",),
    ),
    "weekly_digest": _Kind(
        _weekly_digest,
        ("week", "cost_micros", "tokens", "requests"),
        ("instances", "balance_micros"),
    ),
}
KINDS: tuple[str, ...] = tuple(_KINDS)


def facts_for(kind: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(required, optional) fact names of `kind`."""
    spec = _kind(kind)
    return _COMMON_REQUIRED + spec.required, _COMMON_OPTIONAL + spec.optional


def render(kind: str, **facts: Any) -> Email:
    """The email `kind` with `facts`; ValueError names an unknown kind or a bad fact."""
    required, optional = facts_for(kind)
    for name in required:
        if facts.get(name) is None:
            raise ValueError(f"{kind}: missing fact {name!r}")
    unknown = sorted(set(facts) - set(required) - set(optional))
    if unknown:
        raise ValueError(f"{kind}: unknown fact {unknown[0]!r}")
    checked = {
        name: _TYPES[name](kind, name, value) for name, value in facts.items() if value is not None
    }
    return _KINDS[kind].build(checked)


def _kind(kind: str) -> _Kind:
    spec = _KINDS.get(kind)
    if spec is None:
        raise ValueError(f"unknown email kind {kind!r}")
    return spec
