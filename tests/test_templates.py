"""Email templates: every kind renders, values are escaped, amounts are formatted exactly."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest

from blitzclawd.notify.templates import KINDS, Email, balance_usd, cost_usd, facts_for, render, usd

COMMON = {"app_url": "https://app.blitzclaw.test", "support_url": "mailto:support@blitzclaw.test"}
REQUIRED: dict[str, dict[str, Any]] = {
    "welcome": {},
    "topup_receipt": {"amount_micros": 20_000_000, "balance_micros": 27_459_999},
    "balance_low": {"balance_micros": 4_999_999},
    "balance_depleted": {"balance_micros": -3_712_000},
    "instance_created": {"instance_name": "Jarvis"},
    "instance_error": {"instance_name": "Jarvis", "error": "the gateway stopped answering"},
    "integration_broken": {
        "integration": "Google",
        "reconnect_url": "https://app.blitzclaw.test/settings/integrations",
    },
    "payment_failed": {"dashboard_url": "https://app.blitzclaw.test/dashboard"},
    "usage_spike": {"instance_name": "Jarvis", "spent_micros": 12_340_000, "baseline_micros": 0},
    "operator_usage_spike": {
        "instance_id": "0b7d9c1e-inst",
        "user_id": "5f1e2d3c-user",
        "spent_micros": 12_340_000,
        "baseline_micros": 250_000,
    },
    "operator_balance_paused": {
        "user_id": "5f1e2d3c-user",
        "balance_micros": 9_990_000,
        "paused_instances": 2,
    },
    "weekly_digest": {
        "week": "2026-W19",
        "cost_micros": 1_234_501,
        "tokens": 1_234_567,
        "requests": 321,
    },
}
OPTIONAL: dict[str, dict[str, Any]] = {
    "welcome": {"minimum_micros": 10_000_000},
    "topup_receipt": {},
    "balance_low": {"topup_url": "https://checkout.creem.test/ch_1"},
    "balance_depleted": {
        "topup_url": "https://checkout.creem.test/ch_2",
        "paused_instances": 2,
        "minimum_micros": 10_000_000,
    },
    "instance_created": {
        "instance_id": "inst_42",
        "setup_url": "https://app.blitzclaw.test/i/42",
        "setup_text": "Open https://t.me/jarvis_bot in Telegram and send it a message.",
    },
    "instance_error": {"advice": "Try again from your dashboard."},
    "integration_broken": {"account_email": "ada@gmail.test"},
    "payment_failed": {"paused_instances": 2},
    "usage_spike": {"paused": True},
    "operator_usage_spike": {"owner_email": "ada@example.test", "paused": True},
    "operator_balance_paused": {"owner_email": "ada@example.test"},
    "weekly_digest": {
        "balance_micros": 12_345_678,
        "instances": [
            {"name": "Jarvis", "cost_micros": 1_000_001, "tokens": 1_000_000},
            {"name": "Friday", "cost_micros": 234_500, "tokens": 234_567},
        ],
    },
}
HOSTILE = '<script>alert("x")</script> & <b>Co</b>'


def facts(kind: str, **extra: Any) -> dict[str, Any]:
    return {**COMMON, **REQUIRED[kind], **extra}


def test_the_test_covers_every_kind() -> None:
    assert set(REQUIRED) == set(OPTIONAL) == set(KINDS)
    for kind in KINDS:
        required, optional = facts_for(kind)
        assert set(required) == set(COMMON) | set(REQUIRED[kind])
        assert set(optional) == {"name"} | set(OPTIONAL[kind])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("with_optional", [False, True])
def test_every_kind_renders(kind: str, with_optional: bool) -> None:
    extra = {"name": "Ada", **OPTIONAL[kind]} if with_optional else {}
    email = render(kind, **facts(kind, **extra))
    assert isinstance(email, Email)
    assert email.subject and "\n" not in email.subject
    assert email.text.startswith("Hi Ada," if with_optional else "Hi,")
    assert email.html.startswith("<!doctype html>") and email.html.endswith("</body></html>")
    assert "help: support@blitzclaw.test" in email.text and "support@blitzclaw.test" in email.html
    # Facts come back from a jsonb column: the JSON round trip renders the same email.
    assert render(kind, **orjson.loads(orjson.dumps(facts(kind, **extra)))) == email


@pytest.mark.parametrize("kind", KINDS)
def test_html_escapes_a_hostile_name(kind: str) -> None:
    hostile = {"name": HOSTILE}
    if "instance_name" in REQUIRED[kind]:
        hostile["instance_name"] = HOSTILE
    if "error" in REQUIRED[kind]:
        hostile["error"] = HOSTILE
    email = render(kind, **facts(kind, **hostile))
    assert "<script>" not in email.html and "<b>" not in email.html
    assert (
        "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;Co&lt;/b&gt;"
        in email.html
    )
    assert HOSTILE in email.text  # plain text stays as written


def test_urls_are_escaped_in_attributes_and_must_be_web_or_mail() -> None:
    url = 'https://app.test/?a="><script>x</script>'
    email = render("balance_low", **facts("balance_low", topup_url=url))
    assert 'href="https://app.test/?a=&quot;&gt;&lt;script&gt;x&lt;/script&gt;"' in email.html
    with pytest.raises(ValueError, match="'topup_url'"):
        render("balance_low", **facts("balance_low", topup_url="javascript:alert(1)"))


def test_subjects_are_one_line() -> None:
    email = render("instance_error", **facts("instance_error", instance_name="evil\r\nBcc: x"))
    assert email.subject == "Problem with your assistant evil Bcc: x"


@pytest.mark.parametrize(
    ("micros", "balance", "cost"),
    [
        (0, "$0.00", "$0.00"),
        (1, "$0.00", "$0.01"),
        (9_999, "$0.00", "$0.01"),
        (10_000, "$0.01", "$0.01"),
        (9_999_999, "$9.99", "$10.00"),
        (10_000_000, "$10.00", "$10.00"),
        (1_234_567_890_000, "$1,234,567.89", "$1,234,567.89"),
        (-1, "-$0.01", "$0.00"),
        (-3_712_000, "-$3.72", "-$3.71"),
    ],
)
def test_amount_formatting_is_exact(micros: int, balance: str, cost: str) -> None:
    # Balances round down (never show money that is not there), costs round up (never understate).
    assert (balance_usd(micros), cost_usd(micros)) == (balance, cost)
    assert usd(micros) == balance


@pytest.mark.parametrize("bad", [1.5, True, "100", None])
def test_amounts_must_be_integer_micros(bad: Any) -> None:
    with pytest.raises(ValueError, match="micro-USD"):
        usd(bad)
    with pytest.raises(ValueError, match="'balance_micros'"):
        render("balance_low", **facts("balance_low", balance_micros=bad or 1.0))


def test_amounts_in_the_emails() -> None:
    receipt = render("topup_receipt", **facts("topup_receipt"))
    assert receipt.subject == "Receipt: $20.00 added to your balance"
    assert "top-up of $20.00" in receipt.text and "balance is now $27.45." in receipt.text
    low = render("balance_low", **facts("balance_low"))
    assert low.subject == "Your balance is low ($4.99 left)"
    depleted = render("balance_depleted", **facts("balance_depleted", paused_instances=2))
    assert "run out (-$3.72), so we paused your 2 assistants." in depleted.text
    assert (
        "back above the $10.00 minimum."
        in render(
            "balance_depleted", **facts("balance_depleted", **OPTIONAL["balance_depleted"])
        ).text
    )
    one = render("balance_depleted", **facts("balance_depleted", paused_instances=1))
    assert "so we paused your assistant." in one.text and "above the minimum." in one.text
    welcome = render("welcome", **facts("welcome", minimum_micros=10_000_000))
    assert "Top up your balance (from $10.00)." in welcome.text
    digest = render("weekly_digest", **facts("weekly_digest", **OPTIONAL["weekly_digest"]))
    assert digest.subject == "Your week 2026-W19: $1.24"
    assert "321 requests, 1,234,567 tokens, $1.24 in total." in digest.text
    assert "- Jarvis: $1.01, 1,000,000 tokens\n- Friday: $0.24, 234,567 tokens" in digest.text
    assert "Balance available: $12.34." in digest.text
    assert "<li>Jarvis: $1.01, 1,000,000 tokens</li>" in digest.html


def test_instance_created_has_the_botfather_steps() -> None:
    email = render("instance_created", **facts("instance_created", instance_id="inst_42"))
    steps = re.findall(r"^\d\. (.*)$", email.text, flags=re.M)
    assert len(steps) == 6 and "@BotFather" in steps[0] and "/newbot" in steps[1]
    assert "blitzclaw telegram connect inst_42 --token <token>" in steps[4]
    assert email.html.count("<li>") == 6


def test_instance_created_tells_the_channels_own_first_steps() -> None:
    step = "Open https://t.me/jarvis_bot in Telegram & say <hi>."
    email = render("instance_created", **facts("instance_created", setup_text=step))
    assert email.subject == "Jarvis is ready"
    assert step in email.text and "@BotFather" not in email.text
    assert "Open https://t.me/jarvis_bot in Telegram &amp; say &lt;hi&gt;." in email.html


@pytest.mark.parametrize(
    ("kind", "change", "reason"),
    [
        ("postcard", {}, "unknown email kind 'postcard'"),
        ("topup_receipt", {"amount_micros": None}, "topup_receipt: missing fact 'amount_micros'"),
        ("welcome", {"app_url": None}, "welcome: missing fact 'app_url'"),
        ("welcome", {"nmae": "Ada"}, "welcome: unknown fact 'nmae'"),
        ("instance_error", {"error": ""}, "fact 'error' must be a non-empty string"),
        ("weekly_digest", {"tokens": -1}, "fact 'tokens' must be a non-negative integer"),
        ("weekly_digest", {"week": "last week"}, "fact 'week' must be an ISO week or date"),
        (
            "weekly_digest",
            {"instances": [{"name": "Jarvis", "tokens": 1}]},
            "missing fact 'instances[0].cost_micros'",
        ),
        (
            "weekly_digest",
            {"instances": [{"name": "J", "tokens": 1, "cost_micros": 0.5}]},
            "fact 'instances[0].cost_micros' must be integer micro-USD",
        ),
    ],
)
def test_bad_facts_are_named(kind: str, change: dict[str, Any], reason: str) -> None:
    given = {**facts(kind if kind in REQUIRED else "welcome"), **change}
    given = {k: v for k, v in given.items() if v is not None}
    with pytest.raises(ValueError, match=re.escape(reason)):
        render(kind, **given)
