"""What an operator does from the console, each after the question it needs (a yes, a typed
word for what cannot be undone, a form checked before it is sent): mixed into ConsoleApp, which
gives it the client, the panes and `say`. Each call runs in a thread worker; the daemon's answer
comes back as a Done or Failed message."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from textual import work
from textual.widgets import Input, Tree
from textual.worker import get_current_worker

from blitzclaw.client import BlitzClient, ClientError
from blitzclawd_tui.events import EventsPane
from blitzclawd_tui.format import parse_dollars
from blitzclawd_tui.instances import InstancesPane
from blitzclawd_tui.messages import Done, Failed, LogText
from blitzclawd_tui.modals import Confirm, Field, Form, required_text, typed_word, whole_number
from blitzclawd_tui.money import MoneyPane
from blitzclawd_tui.pool import PoolPane

if TYPE_CHECKING:
    from blitzclawd_tui.app import ConsoleApp

    _Base = ConsoleApp
else:
    _Base = object


class OperatorActions(_Base):
    # -- actions -------------------------------------------------------------------------------

    @work(thread=True, group="act")
    def act(
        self,
        text: str,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        refresh: tuple[str, ...] = (),
        client: BlitzClient | None = None,
    ) -> None:
        try:
            answer = (client or self.client).request(method, path, json=body)
        except ClientError as exc:
            self.post_message(Failed(text, str(exc)))
            return
        outcome = answer.get("outcome") if isinstance(answer, dict) else None
        self.post_message(Done(f"{text}: done" + (f" ({outcome})" if outcome else ""), refresh))

    def on_done(self, message: Done) -> None:
        self.say(message.text)
        self.notify(message.text)
        if message.refresh:
            self.load(*message.refresh)

    def confirm_then(self, question: str, then: Callable[[], None]) -> None:
        def decided(yes: bool | None) -> None:
            if yes:
                then()

        self.push_screen(Confirm(question), decided)

    def _instance(self) -> str | None:
        key = self.query_one(InstancesPane).selected()
        if key is None:
            self.say("Select an instance first (i, then the arrow keys)")
        return key

    def _instance_action(self, action: str, confirm: bool) -> None:
        key = self._instance()
        if key is None:
            return
        path = f"/api/admin/instances/{key}/{action}"

        def go() -> None:
            self.act(f"{action} {key[:8]}", "POST", path, refresh=("instances",))

        if confirm:
            self.confirm_then(f"{action.capitalize()} {self._described(key)}?", go)
        else:
            go()

    def _described(self, key: str) -> str:
        """An instance as the operator knows it: id, owner and status, not a bare uuid."""
        row = self.query_one(InstancesPane).rows.get(key, {})
        return (
            f"instance {key[:8]} of {row.get('email') or 'an unknown owner'} "
            f"(now {row.get('status') or 'unknown'})\n{key}"
        )

    def do_restart(self) -> None:
        self._instance_action("restart", True)

    def do_stop(self) -> None:
        self._instance_action("stop", True)

    def do_start(self) -> None:
        self._instance_action("start", False)

    def do_pause(self) -> None:
        self._instance_action("pause", True)

    def do_resume(self) -> None:
        self._instance_action("resume", False)

    def do_delete(self) -> None:
        key = self._instance()
        if key is None:
            return

        def decided(answers: dict[str, Any] | None) -> None:
            if answers:
                path = f"/api/admin/instances/{key}"
                self.act(f"delete {key[:8]}", "DELETE", path, refresh=("instances", "pool"))

        self.push_screen(
            Form(
                f"Delete {self._described(key)}?\nIts server is wiped; this cannot be undone.",
                [Field("confirm", "Type delete to confirm", "delete", typed_word("delete"))],
            ),
            decided,
        )

    def do_limits(self) -> None:
        key = self._instance()
        if key is None:
            return
        row = self.query_one(InstancesPane).rows.get(key, {})
        leave = "leave"

        def limit(high: int) -> Callable[[str], Any]:
            number = whole_number(0, high)

            def parse(text: str) -> Any:
                if not text.strip():
                    return leave
                if text.strip().lower() in ("global", "-", "none"):
                    return None
                return number(text)

            return parse

        def decided(answers: dict[str, Any] | None) -> None:
            if not answers:
                return
            body = {k: v for k, v in answers.items() if v != leave}
            if not body:
                self.say("limits: nothing changed")
                return
            path = f"/api/admin/instances/{key}/limits"
            self.act(f"limits of {key[:8]}", "PATCH", path, body, refresh=("instances",))

        self.push_screen(
            Form(
                f"Limits of instance {key[:8]} (blank: leave; global: the global limit)",
                [
                    Field(
                        "messages_per_hour",
                        f"Messages per hour (now {row.get('messages_per_hour') or 'global'})",
                        "e.g. 120",
                        limit(10**9),
                    ),
                    Field(
                        "tokens_per_day",
                        f"Tokens per day (now {row.get('tokens_per_day') or 'global'})",
                        "e.g. 2000000",
                        limit(10**15),
                    ),
                ],
            ),
            decided,
        )

    def do_logs(self) -> None:
        key = self._instance()
        if key is None:
            return
        self.query_one(InstancesPane).log_started(key)
        self.follow_log(key)

    @work(thread=True, group="log", exclusive=True)
    def follow_log(self, instance_id: str) -> None:
        worker = get_current_worker()
        path = f"/api/admin/instances/{instance_id}/logs"
        try:
            for text in self.client.stream(path, params={"lines": 100, "follow": 1}):
                if worker.is_cancelled:
                    return
                self.post_message(LogText(instance_id, text))
        except ClientError as exc:
            self.post_message(Failed("log", str(exc)))

    def on_log_text(self, message: LogText) -> None:
        self.query_one(InstancesPane).log_text(message.instance_id, message.text)

    def _user(self) -> tuple[str, dict[str, Any]] | None:
        money = self.query_one(MoneyPane)
        key = money.selected()
        if key is None:
            self.say("Select a user first (u, then the arrow keys)")
            return None
        return key, money.users.get(key, {})

    def do_adjust(self) -> None:
        found = self._user()
        if found is None:
            return
        key, user = found
        idempotency = str(uuid.uuid4())  # one booking however often this form's answer is sent

        def decided(answers: dict[str, Any] | None) -> None:
            if answers:
                body = {**answers, "idempotency_key": idempotency}
                self.act(
                    f"adjust {user.get('email') or key[:8]}",
                    "POST",
                    f"/api/admin/users/{key}/adjust",
                    body,
                    refresh=("users", "metrics"),
                )

        self.push_screen(
            Form(
                f"Adjust the balance of {user.get('email') or key}",
                [
                    Field(
                        "amount_micros",
                        "Amount in dollars (negative debits)",
                        "e.g. 5.00 or -2.50",
                        parse_dollars,
                    ),
                    Field("reason", "Reason (kept in the ledger and the audit)", "", required_text),
                ],
            ),
            decided,
        )

    def _user_action(self, action: str) -> None:
        found = self._user()
        if found is None:
            return
        key, user = found
        who = user.get("email") or key

        def go() -> None:
            path = f"/api/admin/users/{key}/{action}"
            self.act(f"{action} {who}", "POST", path, refresh=("users", "instances"))

        self.confirm_then(f"{action.capitalize()} every assistant of {who}?", go)

    def do_pause_user(self) -> None:
        self._user_action("pause")

    def do_resume_user(self) -> None:
        self._user_action("resume")

    def do_range(self) -> None:
        self.query_one(MoneyPane).next_range()
        self.load("metrics")

    def do_provision(self) -> None:
        def decided(answers: dict[str, Any] | None) -> None:
            if answers:
                body = {"count": answers["count"]}
                self.act("provision", "POST", "/api/admin/pool/provision", body, refresh=("pool",))

        self.push_screen(
            Form(
                "Provision servers now (within the pool's maximum size)",
                [Field("count", "How many (1 to 50)", "e.g. 3", whole_number(1, 50), "1")],
            ),
            decided,
        )

    def do_drain(self) -> None:
        def location(text: str) -> str | None:
            return text.strip() or None

        def decided(answers: dict[str, Any] | None) -> None:
            if answers:
                body = {k: v for k, v in answers.items() if k != "confirm" and v is not None}
                self.act("drain", "POST", "/api/admin/pool/drain", body, refresh=("pool",))

        self.push_screen(
            Form(
                "Drain: delete ready spare servers and hold the pool until resumed",
                [
                    Field(
                        "count",
                        "How many (blank: every one)",
                        "",
                        whole_number(1, 1000, blank=None),
                    ),
                    Field("location", "Location (blank: every location)", "e.g. fsn1", location),
                    Field("confirm", "Type drain to confirm", "drain", typed_word("drain")),
                ],
            ),
            decided,
        )

    def do_resume_pool(self) -> None:
        self.act("resume the pool", "POST", "/api/admin/pool/resume", refresh=("pool",))

    def do_retry(self) -> None:
        job = self.query_one(PoolPane).selected_job()
        if job is None:
            self.say("Select a job first (j, then the arrow keys)")
            return
        if job.get("status") != "failed":
            self.say(f"job {job['id']} is {job.get('status')}: only a failed job is retried")
            return
        path = f"/api/admin/jobs/{job['id']}/retry"
        self.act(f"retry job {job['id']}", "POST", path, refresh=("jobs",))

    def do_health_check(self) -> None:
        self.say("Health sweep running…")
        self.act("health sweep", "POST", "/api/admin/health/check", refresh=("health", "instances"))

    def do_restart_actor(self) -> None:
        node = self.query_one("#actor-tree", Tree).cursor_node
        target = None if node is None else node.data
        if not target:
            self.say("Select an actor in the tree first (o, then the arrow keys)")
            return
        url, name = target
        client = next(c for c in self.clients if c.api_url == url)

        def go() -> None:
            path = f"/api/admin/actors/{quote(name, safe='')}/restart"
            self.act(f"restart {name}", "POST", path, refresh=("daemons",), client=client)

        self.confirm_then(f"Restart actor {name} on {url}?", go)

    def do_pause_events(self) -> None:
        self.query_one(EventsPane).toggle_pause()

    def do_filter(self) -> None:
        self.query_one("#event-filter", Input).focus()
