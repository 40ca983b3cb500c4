"""The operator console's screens and actions (issue 17), driven by Textual's pilot against real
daemons with the fakes: each screen shows what the daemon's API says; each action changes the
daemon's state (checked in the database and through the API) and is audited; the command
palette reaches every action; the events can be paused and filtered; a daemon restarted under
the console is survived, and the gap is said."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from conftest import running_api_env
from test_fleet import ADMIN_KEY, active, available, create_active, fleet_env

from blitzclaw.client import BlitzClient
from blitzclawd.http.auth import hash_key, new_api_key
from blitzclawd.testing import seed
from blitzclawd.testing.daemon_process import DaemonProcess
from blitzclawd_tui import commands
from blitzclawd_tui.app import LOST, ConsoleApp
from blitzclawd_tui.format import dollars

SIZE = (150, 45)


def _text(app: ConsoleApp, selector: str) -> str:
    return str(app.query_one(selector).render())


def _screen(app: ConsoleApp) -> str:
    return app.screen.__class__.__name__


async def _until(pilot: Any, check: Callable[[], Any], seconds: float = 20.0) -> None:
    try:
        async with asyncio.timeout(seconds):
            while not check():
                await pilot.pause(0.05)
    except TimeoutError:
        status = _text(pilot.app, "#status-line")
        raise AssertionError(f"not within {seconds} s; the status line says {status!r}") from None


async def _until_true(pilot: Any, check: Callable[[], Awaitable[Any]], seconds: float = 20.0):
    try:
        async with asyncio.timeout(seconds):
            while not (found := await check()):
                await pilot.pause(0.05)
            return found
    except TimeoutError:
        status = _text(pilot.app, "#status-line")
        raise AssertionError(f"not within {seconds} s; the status line says {status!r}") from None


def _cells(app: ConsoleApp, selector: str) -> dict[str, tuple[str, ...]]:
    table = app.query_one(selector)
    return {str(k.value): tuple(str(c) for c in table.get_row(k)) for k in table.rows}


async def _select(pilot: Any, selector: str, key: str) -> None:
    """Move a table's cursor to the row `key` with the arrow keys, as an operator would."""
    table = pilot.app.query_one(selector)
    table.focus()
    target = table.get_row_index(key)
    await pilot.press("home")
    for _ in range(target):
        await pilot.press("down")
    assert table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value == key


async def _type(pilot: Any, text: str) -> None:
    await pilot.press(*("space" if c == " " else c for c in text))


async def _get(client: BlitzClient, path: str) -> Any:
    """The API's own answer (the client blocks: off the loop the daemon runs on)."""
    return await asyncio.to_thread(client.request, "GET", path)


async def _held(client: BlitzClient) -> bool:
    return (await _get(client, "/api/admin/pool"))["held"]


async def _not_held(client: BlitzClient) -> bool:
    return not await _held(client)


async def _audited(pool: Any, action: str) -> int:
    return await pool.fetchval("SELECT count(*) FROM admin_actions WHERE action = $1", action)


def test_every_action_has_a_key_a_handler_and_a_palette_entry() -> None:
    app_methods = set(dir(ConsoleApp))
    keys: dict[tuple[str, str | None], str] = {}
    for command in commands.COMMANDS:
        assert "do_" + command.name.replace("-", "_") in app_methods, command.name
        clash = keys.get((command.key, command.tab)) or keys.get((command.key, None))
        assert clash is None, (command.name, clash)
        keys[(command.key, command.tab)] = command.name


async def proxied(http: aiohttp.ClientSession, proxy: str, headers: dict[str, str]) -> None:
    """One request through the metering proxy with an instance's credential (answered 200)."""
    message = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 20,
        "messages": [{"role": "user", "content": "hi"}],
    }
    async with http.post(
        proxy + "/v1/messages",
        json=message,
        headers={**headers, "anthropic-version": "2023-06-01"},
    ) as resp:
        assert resp.status == 200, await resp.text()


async def test_users_and_money(api_env) -> None:
    """Balances, spend, top-ups and revenue as the API says; a manual adjustment with a reason
    (a wrong amount is refused in the form first); a user paused and resumed; the range
    changed; a webhook with money nobody could be matched to is listed."""
    pool = api_env.pool
    ada = await seed.create_user(pool, email="ada@example.test")
    await seed.credit(pool, ada, 25_000_000)
    inst = await seed.create_instance(pool, ada)
    bob = await seed.create_user(pool, email="bob@example.test")
    await seed.credit(pool, bob, 12_340_000)
    await proxied(api_env.http, api_env.proxy, inst.headers)  # revenue the money tab shows
    product = next(iter(api_env.creem.products))
    _, raw = api_env.creem.product_link_order(product, customer_email="nobody@example.test")
    await api_env.creem.deliver(api_env.api + "/api/billing/webhook", raw)

    client = BlitzClient(api_env.api, api_env.admin_key)
    app = ConsoleApp(client)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("u")
        assert app.tab == "money"
        await _until(
            pilot, lambda: ada in _cells(app, "#user-table") and bob in _cells(app, "#user-table")
        )
        users = {u["id"]: u for u in (await _get(client, "/api/admin/users"))["users"]}
        for user_id in (ada, bob):
            row = _cells(app, "#user-table")[user_id]
            assert row[0] == users[user_id]["email"]
            assert row[1] == dollars(users[user_id]["balance_micros"])
            assert row[2] == dollars(users[user_id]["reserved_micros"])
        assert _cells(app, "#user-table")[bob][1] == "$12.34"

        # Revenue against cost, as GET /api/admin/metrics says for the same range.
        await _until(pilot, lambda: "Revenue $" in _text(app, "#money-summary"))
        charged = await pool.fetchval("SELECT sum(cost_micros) FROM usage_logs")
        assert charged > 0
        await _until(pilot, lambda: f"Revenue {dollars(charged)}" in _text(app, "#money-summary"))
        assert _text(app, "#money-summary").startswith("Last 7 days")
        await pilot.press("m")
        await _until(pilot, lambda: _text(app, "#money-summary").startswith("Last 30 days"))
        assert f"Revenue {dollars(charged)}" in _text(app, "#money-summary")

        # The unmatched payment.
        await _until(pilot, lambda: app.query_one("#unmatched-table").row_count >= 1)
        unmatched = (await _get(client, "/api/admin/payments/unmatched"))["events"]
        assert app.query_one("#unmatched-table").row_count == len(unmatched)

        # A manual adjustment: a wrong amount is refused in the form, then $5.25 is booked.
        await _select(pilot, "#user-table", bob)
        await pilot.press("a")
        await _until(pilot, lambda: _screen(app) == "Form")
        await _type(pilot, "five")
        await pilot.press("enter")
        await _type(pilot, "goodwill for the outage")
        await pilot.press("enter")
        await _until(pilot, lambda: "not an amount" in _text(app.screen, "#form-error"))
        assert await _audited(pool, "user.adjust") == 0
        app.screen.query_one("#field-amount_micros").value = ""
        app.screen.query_one("#field-amount_micros").focus()
        await _type(pilot, "5.25")
        await pilot.press("enter", "enter")

        async def adjusted() -> bool:
            balance = await pool.fetchval(
                "SELECT balance_micros FROM balances WHERE user_id = $1", uuid.UUID(bob)
            )
            return balance == 17_590_000

        await _until_true(pilot, adjusted)
        reason = await pool.fetchval(
            "SELECT detail->>'reason' FROM admin_actions WHERE action = 'user.adjust'"
        )
        assert reason == "goodwill for the outage"
        await _until(pilot, lambda: _cells(app, "#user-table")[bob][1] == "$17.59")

        # Pause every assistant of a user, after a yes; then resume.
        await _select(pilot, "#user-table", ada)
        await pilot.press("p")
        await _until(pilot, lambda: _screen(app) == "Confirm")
        await pilot.press("y")

        async def status() -> str:
            return await pool.fetchval(
                "SELECT status FROM instances WHERE id = $1", uuid.UUID(inst.id)
            )

        await _until_true(pilot, lambda: _is(status, "paused"))
        assert await _audited(pool, "user.pause") == 1
        await pilot.press("P")
        await _until(pilot, lambda: _screen(app) == "Confirm")
        await pilot.press("y")
        await _until_true(pilot, lambda: _is(status, "active"))
        assert await _audited(pool, "user.resume") == 1
    client.close()


async def _is(read: Callable[[], Awaitable[Any]], wanted: Any) -> bool:
    return await read() == wanted


async def test_pool_and_jobs(database: str, tmp_path: Path) -> None:
    """Servers by status and age; provision one more; drain (typed confirmation) and resume;
    a failed job with its error, retried."""
    async with fleet_env(database, tmp_path) as env:
        await available(env, 2)
        client = BlitzClient(env.api, ADMIN_KEY)
        app = ConsoleApp(client)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("j")
            await _until(pilot, lambda: app.query_one("#server-table").row_count == 2)
            servers = (await _get(client, "/api/admin/pool"))["servers"]
            shown = _cells(app, "#server-table")
            for server in servers:
                assert shown[server["id"]][:4] == (
                    server["name"],
                    server["status"],
                    server["location"],
                    server["ip"],
                )
            assert "available: 2" in _text(app, "#pool-summary")

            # Provision one more.
            before = len(env.fake.servers)
            await pilot.press("n")
            await _until(pilot, lambda: _screen(app) == "Form")
            app.screen.query_one("#field-count").value = ""
            await _type(pilot, "1")
            await pilot.press("enter")
            await _until(pilot, lambda: len(env.fake.servers) == before + 1)
            assert await _audited(env.pool, "pool.provision") == 1
            await _until(pilot, lambda: app.query_one("#server-table").row_count == 3)

            # Drain: the typed word is needed; then the pool is held.
            await pilot.press("d")
            await _until(pilot, lambda: _screen(app) == "Form")
            await pilot.press("enter", "enter")
            await _type(pilot, "yes")
            await pilot.press("enter")
            await _until(pilot, lambda: "type drain" in _text(app.screen, "#form-error"))
            app.screen.query_one("#field-confirm").value = ""
            await _type(pilot, "drain")
            await pilot.press("enter")
            await _until_true(pilot, lambda: _held(client))
            assert await _audited(env.pool, "pool.drain") == 1
            await _until(pilot, lambda: "HELD" in _text(app, "#pool-summary"))
            await pilot.press("g")
            await _until_true(pilot, lambda: _not_held(client))
            assert await _audited(env.pool, "pool.resume") == 1

            # A failed job, its error shown; retried.
            owner = await seed.create_user(env.pool)
            inst = await seed.create_instance(env.pool, owner, status="stopped")
            failed = await env.pool.fetchval(
                """INSERT INTO instance_jobs (instance_id, kind, status, attempts, last_error,
                                              finished_at)
                   VALUES ($1, 'restart', 'failed', 5, 'ssh: connection refused', now())
                   RETURNING id""",
                uuid.UUID(inst.id),
            )
            await pilot.press("r")
            await _until(pilot, lambda: str(failed) in _cells(app, "#job-table"))
            assert _cells(app, "#job-table")[str(failed)][-1] == "ssh: connection refused"
            await _select(pilot, "#job-table", str(failed))
            await pilot.press("t")
            await _until(pilot, lambda: f"retry job {failed}: done" in _text(app, "#status-line"))
            assert await _audited(env.pool, "job.retry") == 1
        client.close()


async def test_overview_palette_and_events(api_env) -> None:
    """The supervision tree in full and an actor restarted from it; the proxy live; a health
    sweep; every action in the command palette; events paused, filtered and resumed."""
    pool = api_env.pool
    user = await seed.create_user(pool, email="carol@example.test")
    await seed.credit(pool, user, 25_000_000)
    inst = await seed.create_instance(pool, user)
    client = BlitzClient(api_env.api, api_env.admin_key)
    app = ConsoleApp(client)
    async with app.run_test(size=SIZE) as pilot:
        tree = app.query_one("#actor-tree")

        def nodes() -> dict[str, Any]:
            found: dict[str, Any] = {}
            stack = list(tree.root.children)
            while stack:
                node = stack.pop()
                if node.data:
                    found[node.data[1]] = node
                stack.extend(node.children)
            return found

        await _until(pilot, lambda: "core/notifier" in nodes())
        daemons = await _get(client, "/api/admin/daemons")
        every = set()
        stack = [(a, "") for a in daemons["actors"]]
        while stack:
            actor, above = stack.pop()
            path = f"{above}/{actor['name']}" if above else actor["name"]
            every.add(path)
            stack.extend((c, path) for c in actor["children"])
        assert set(nodes()) == every and "edge/api-listener" in every

        # Restart an actor picked in the tree.
        tree.focus()
        tree.move_cursor(nodes()["core/notifier"])
        await pilot.press("A")
        await _until(pilot, lambda: _screen(app) == "Confirm")
        await pilot.press("y")
        await _until_true(pilot, lambda: _audited(pool, "actor.restart"))
        await _until(pilot, lambda: "restart core/notifier: done" in _text(app, "#status-line"))
        await _until(pilot, lambda: "(running" in str(nodes()["core/notifier"].label))

        # The proxy live, from the event stream.
        await proxied(api_env.http, api_env.proxy, inst.headers)
        await _until(pilot, lambda: "req/s" in _text(app, "#proxy"), 30)

        # A health sweep now.
        await pilot.press("c")
        await _until_true(pilot, lambda: _audited(pool, "health.check"))

        # The palette lists every action; one is run from it.
        palette = {c.title for c in app.get_system_commands(app.screen)}
        assert {c.title for c in commands.COMMANDS} <= palette
        await pilot.press("ctrl+p")
        await _until(pilot, lambda: _screen(app) == "CommandPalette")
        await _type(pilot, "Pause events")
        await _until(pilot, lambda: _highlighted(app) == "Pause events")
        await pilot.press("enter")
        await _until(pilot, lambda: app.tab == "events")
        pane = app.query_one("#events-pane")
        assert pane.paused
        shown_before = len(app.query_one("#event-log").lines)

        # Paused: what arrives is counted, not shown; on resume, it is.
        product = next(iter(api_env.creem.products))
        _, raw = api_env.creem.product_link_order(product, customer_email="x@example.test")
        await api_env.creem.deliver(api_env.api + "/api/billing/webhook", raw)
        await _until(pilot, lambda: pane.unseen > 0, 30)
        assert "paused" in _text(app, "#event-state")
        assert len(app.query_one("#event-log").lines) == shown_before
        await pilot.press("space")
        assert not pane.paused
        await _until(
            pilot, lambda: any(" webhook: " in s.text for s in app.query_one("#event-log").lines)
        )

        # Filtered: only the webhook lines stay.
        await pilot.press("slash")
        assert app.focused.id == "event-filter"
        await _type(pilot, "webhook")
        await pilot.press("enter")
        shown = "\n".join(s.text for s in app.query_one("#event-log").lines)  # lines wrap
        assert " webhook: " in shown
        assert not any(f" {kind}: " in shown for kind in ("proxy", "actor", "instance")), shown
        assert "filter 'webhook'" in _text(app, "#event-state")
    client.close()


def _highlighted(app: ConsoleApp) -> str | None:
    from textual.command import CommandList

    found = app.screen.query(CommandList)
    if not found or found.first().highlighted is None:
        return None
    option = found.first().get_option_at_index(found.first().highlighted)
    return str(option.prompt).split("\n")[0]


async def _operator_key(database: str) -> str:
    """An admin user's own sk_ key: it outlives any one daemon (the admin key is per test
    daemon here)."""
    conn = await asyncpg.connect(database)
    try:
        user_id = await seed.create_user(conn, email="operator@example.test")
        await conn.execute("UPDATE users SET role = 'admin' WHERE id = $1", uuid.UUID(user_id))
        key = new_api_key()
        await conn.execute(
            "INSERT INTO api_keys (user_id, name, prefix, key_hash) VALUES ($1, 'ops', $2, $3)",
            uuid.UUID(user_id),
            key[:8],
            hash_key(key),
        )
        return key
    finally:
        await conn.close()


async def test_a_daemon_restart_is_survived(database: str, tmp_path: Path) -> None:
    """The daemon process is stopped and started again on the same address: the console says
    the stream broke, reconnects with Last-Event-ID, is told events were lost, and loads every
    view again (the new daemon in the overview)."""
    daemon = DaemonProcess(tmp_path, database_url=database)
    config = daemon.config_path.read_text()  # a short grace: the console's stream is open
    daemon.config_path.write_text(config.replace("[daemon]\n", "[daemon]\nshutdown_grace = 0.5\n"))
    owner = await seed.create_user(await _connect(database), email="dora@example.test")
    client = BlitzClient(daemon.api_url, await _operator_key(database))
    app = ConsoleApp(client)
    try:
        async with aiohttp.ClientSession() as http, app.run_test(size=SIZE) as pilot:
            await daemon.start()
            await daemon.wait_ready(http)
            await _until(pilot, lambda: "1 daemon(s)" in _text(app, "#daemon"), 30)
            first = _text(app, "#daemon").split(":")[0]

            async def instance_event() -> None:
                """An instance appears: its event is on the stream within a second or two."""
                conn = await _connect(database)
                try:
                    await seed.create_instance(conn, owner)
                finally:
                    await conn.close()

            async with asyncio.timeout(30):  # the stream is open once an event came through
                while not any(" instance: " in line for line in app.seen_events):
                    await instance_event()
                    for _ in range(40):
                        await pilot.pause(0.05)
            before = app.reconnects
            assert await daemon.stop() == 0
            await _until(pilot, lambda: "event stream broken" in _text(app, "#status-line"), 30)
            await daemon.start()
            await daemon.wait_ready(http)
            await _until(pilot, lambda: any(" lost: " in x for x in app.seen_events), 30)
            try:
                await _until(pilot, lambda: _text(app, "#daemon").split(":")[0] != first, 30)
            except AssertionError:
                raise AssertionError((first, _text(app, "#daemon"), app.daemon_answers)) from None
            assert app.reconnects > before
            notes = list(app.query_one("#events-pane").kept)
            assert LOST in notes and any("event stream broken" in n for n in notes)
    finally:
        client.close()
        await daemon.stop()


async def _connect(database: str) -> asyncpg.Connection:
    return await asyncpg.connect(database)


async def test_instance_actions(database: str, tmp_path: Path) -> None:
    """On a real instance over real SSH: its log followed live; paused (the proxy refuses it)
    and resumed; its own limits set; deleted after the typed word; each audited."""
    async with fleet_env(database, tmp_path) as env:
        await available(env, 2)
        alice = await env.user()
        iid, row = await create_active(env, alice)
        server = env.server_of(row["hetzner_server_id"])
        client = BlitzClient(env.api, ADMIN_KEY)
        app = ConsoleApp(client)

        async def status_of() -> str:
            return (await env.instance(iid))["status"]

        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("i")
            await _until(pilot, lambda: iid in _cells(app, "#instance-table"))
            listed = (await _get(client, "/api/admin/instances"))["instances"][0]
            cells = _cells(app, "#instance-table")[iid]
            assert cells[:5] == (
                iid[:8],
                "active",
                listed["email"],
                listed["server_ip"],
                "telegram",
            )
            await _select(pilot, "#instance-table", iid)
            assert iid in _text(app, "#instance-detail")

            # Its log, followed: a line written on the server arrives.
            await pilot.press("L")
            log = app.query_one("#instance-log")

            def logged(text: str) -> bool:  # (long lines wrap)
                return text in " ".join(s.text.strip() for s in log.lines)

            await _until(pilot, lambda: logged("Started openclaw-gateway.service"))
            server.ssh.log("a line written while the operator watches", "openclaw[1]")
            await _until(pilot, lambda: logged("while the operator watches"))
            assert await _audited(env.pool, "instance.logs") == 1

            # Restarted after a yes; stopped after a yes and started without a question.
            await pilot.press("R")
            await _until(pilot, lambda: _screen(app) == "Confirm")
            await pilot.press("y")
            await _until_true(pilot, lambda: _audited(env.pool, "instance.restart"))
            await active(env, iid)
            await pilot.press("s")
            await _until(pilot, lambda: _screen(app) == "Confirm")
            await pilot.press("y")
            await _until_true(pilot, lambda: _is(status_of, "stopped"))
            await pilot.press("S")
            await _until_true(pilot, lambda: _is(status_of, "active"), 30)
            assert await _audited(env.pool, "instance.start") == 1
            await _until(pilot, lambda: _cells(app, "#instance-table")[iid][1] == "active")

            # Paused after a yes: the proxy refuses it at once; resumed without a question.
            await pilot.press("p")
            await _until(pilot, lambda: _screen(app) == "Confirm")
            question = app.screen.question  # the owner and the status, not only an id
            assert listed["email"] in question and "now active" in question and iid in question
            await pilot.press("y")
            await _until_true(pilot, lambda: _is(status_of, "paused"))
            assert (await env.instance(iid))["status_reason"] == "paused_by_operator"
            await _until(pilot, lambda: _cells(app, "#instance-table")[iid][1] == "paused *")
            await pilot.press("P")
            await _until_true(pilot, lambda: _is(status_of, "active"))
            assert await _audited(env.pool, "instance.pause") == 1
            assert await _audited(env.pool, "instance.resume") == 1

            # Its own limits: 120 messages an hour, tokens left as they are.
            await pilot.press("l")
            await _until(pilot, lambda: _screen(app) == "Form")
            await _type(pilot, "120")
            await pilot.press("enter", "enter")

            async def limited() -> bool:
                found = await env.instance(iid)
                return found["msgs_per_hour"] == 120 and found["tokens_per_day"] is None

            await _until_true(pilot, limited)
            assert await _audited(env.pool, "instance.limits") == 1

            # Deleted only after the typed word.
            await pilot.press("D")
            await _until(pilot, lambda: _screen(app) == "Form")
            await _type(pilot, "yes")
            await pilot.press("enter")
            await _until(pilot, lambda: "type delete" in _text(app.screen, "#form-error"))
            assert (await env.instance(iid))["deleted_at"] is None
            app.screen.query_one("#field-confirm").value = ""
            await _type(pilot, "delete")
            await pilot.press("enter")

            async def deleted() -> bool:
                return (await env.instance(iid))["deleted_at"] is not None

            await _until_true(pilot, deleted)
            assert await _audited(env.pool, "instance.delete") == 1
            await _until(pilot, lambda: iid not in _cells(app, "#instance-table"))
        client.close()


async def test_two_daemons_in_one_console(database: str) -> None:
    """`blitzclaw console --daemon URL`: two daemons sharing a database, both supervision trees
    in the overview and both event streams in the events tab."""
    key = await _operator_key(database)
    async with running_api_env(database) as first, running_api_env(database) as second:
        clients = [BlitzClient(env.api, key) for env in (first, second)]
        app = ConsoleApp(*clients)
        async with app.run_test(size=SIZE) as pilot:
            ids = [env.daemon.daemon_id for env in (first, second)]
            tree = app.query_one("#actor-tree")
            await _until(pilot, lambda: len(tree.root.children) == 2, 30)
            roots = [str(node.label) for node in tree.root.children]
            for daemon_id, env in zip(ids, (first, second), strict=True):
                assert any(r.startswith(daemon_id[:8]) and env.api in r for r in roots), roots

            # A singleton runs in one daemon; the other's tree says another daemon holds it.
            def states() -> dict[str, list[str]]:
                found: dict[str, list[str]] = {}
                stack = list(tree.root.children)
                while stack:
                    node = stack.pop()
                    if node.data:
                        found.setdefault(node.data[1], []).append(str(node.label))
                    stack.extend(node.children)
                return found

            await _until(
                pilot,
                lambda: any("held by another daemon" in " ".join(v) for v in states().values()),
            )
            for labels in states().values():
                if any("held by another daemon" in label for label in labels):
                    assert len(labels) == 2 and any("(running" in label for label in labels)
            # (two daemons of one test process share a pid: the database keeps one of them)
            await _until(pilot, lambda: all(i in _text(app, "#daemon") for i in ids))
            # Each stream is followed: an event from either daemon's proxy shows its address.
            owner = await seed.create_user(first.pool)
            await seed.credit(first.pool, owner, 25_000_000)
            inst = await seed.create_instance(first.pool, owner)
            for env in (first, second):
                async with asyncio.timeout(30):
                    while not any(
                        line.startswith(f"[{env.api}]") and " proxy: " in line
                        for line in app.seen_events
                    ):
                        await proxied(env.http, env.proxy, inst.headers)
                        for _ in range(10):
                            await pilot.pause(0.05)
        for client in clients:
            client.close()
