"""`blitzclaw billing subscribe | unsubscribe | balance` through the installed script, against a
running daemon and the fake Creem."""

from __future__ import annotations

from pathlib import Path

from test_blitzclaw_cli import _cli, _json
from test_dashboard import dashboard_env

HOOK = "/api/billing/webhook"


async def test_subscribe_and_unsubscribe_from_the_command_line(
    database: str, tmp_path: Path
) -> None:
    async with dashboard_env(database) as env:
        api = env.api
        user = {"Authorization": f"Bearer {env.clerk.mint('user_cli_plan', azp=api)}"}
        status, made = await env.call(
            "POST", "/api/auth/api-keys", headers={**user, "Origin": api}, json={"name": "cli"}
        )
        assert status == 201, made
        home = tmp_path / "config"
        code, _, err = await _cli(home, "--api-url", api, "auth", "login", "--api-key", made["key"])
        assert code == 0, err
        before = await _json(home, "billing", "balance")
        assert before["plan"] is None and before["plan_renews_at"] is None

        # Nothing to cancel yet: a clear error, exit status for "not found".
        code, _, err = await _cli(home, "billing", "unsubscribe", "--yes")
        assert code != 0 and "no subscription" in err

        # --url-only prints the checkout link alone; paying it starts the plan.
        code, out, err = await _cli(home, "billing", "subscribe", "--url-only")
        assert code == 0, err
        url = out.strip()
        checkout_id = url.rsplit("/", 1)[1]
        assert env.creem.checkouts[checkout_id]["product"]["billing_type"] == "recurring"
        await env.creem.pay(checkout_id, api + HOOK)
        sub = next(iter(env.creem.subscriptions.values()))
        balance = await _json(home, "billing", "balance")
        assert balance["plan"] == "active" and balance["balance_usd"] == 10
        assert balance["plan_renews_at"][:10] == sub["current_period_end_date"][:10]

        # Subscribed already: refused (409), no second checkout.
        code, _, err = await _cli(home, "billing", "subscribe")
        assert code != 0 and "subscribed already" in err

        # --yes: no question (one is asked only on a terminal).
        done = await _json(home, "billing", "unsubscribe", "--yes")
        assert done["status"] == "scheduled_cancel" and done["ends_at"]
        assert sub["status"] == "scheduled_cancel"
        balance = await _json(home, "billing", "balance")
        assert balance["plan"] == "scheduled_cancel" and balance["plan_renews_at"] is None
        assert balance["plan_ends_at"] == done["ends_at"]
