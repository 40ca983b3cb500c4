"""`blitzclaw integrations` through the installed script against a real daemon and the fake
Google (issue 18): connect starts the consent (approved in the fake, the callback opened by the
user's signed-in browser), list shows the account, attach and detach an assistant, remove
revokes it at Google."""

from __future__ import annotations

from pathlib import Path

from test_blitzclaw_cli import _cli, _json
from test_integrations import Session, google_env

from blitzclawd.testing import seed


async def test_integrations_from_the_command_line(database: str, tmp_path: Path) -> None:
    async with google_env(database) as (env, google):
        browser = Session(env, "user_cli_google")
        status, made = await browser.call("POST", "/api/auth/api-keys", {"name": "cli"})
        assert status == 201, made
        home = tmp_path / "config"
        code, _, err = await _cli(
            home, "--api-url", env.api, "auth", "login", "--api-key", made["key"]
        )
        assert code == 0, err

        assert await _json(home, "integrations", "list") == {"integrations": []}
        code, _, err = await _cli(home, "integrations", "connect", "gmail", "--no-browser")
        assert code == 2 and "google" in err  # only known providers

        started = await _json(
            home, "integrations", "connect", "google", "--no-browser", "--no-wait"
        )
        location = await google.approve(started["url"], "ada@gmail.example")
        status, page, _ = await browser.open_callback(location)
        assert status == 303, page
        (found,) = (await _json(home, "integrations", "list"))["integrations"]
        assert found["status"] == "connected" and found["account_email"] == "ada@gmail.example"

        instance = await seed.create_instance(env.pool, await browser.user_id())
        attached = await _json(home, "integrations", "attach", instance.id)
        assert attached["attached"] is True and attached["instance_id"] == instance.id
        (found,) = (await _json(home, "integrations", "list"))["integrations"]
        assert found["attached_instances"] == [instance.id]
        detached = await _json(home, "integrations", "detach", instance.id)
        assert detached["attached"] is False

        issued = list(google.issued)
        assert await _json(home, "integrations", "remove", "google") == {"removed": "google"}
        assert await _json(home, "integrations", "list") == {"integrations": []}
        assert not any(google.token_is_live(token) for token in issued)
        code, _, err = await _cli(home, "integrations", "remove", "google")
        assert code == 4, err  # nothing connected any more
