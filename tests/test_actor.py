"""The actor: mailbox semantics, ask/tell, timers and lifecycle hooks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest

from blitzclawd.runtime.actor import Actor, ActorNotRunning, AskTimeout, MailboxFull
from blitzclawd.runtime.messages import Tick

DEADLINE = 5.0


@dataclass(frozen=True, slots=True)
class Block:
    """Handler enters, sets `entered`, waits for `release`."""

    entered: asyncio.Event
    release: asyncio.Event


class Recorder(Actor):
    """Records every lifecycle event and message; a few messages have special behaviour."""

    def __init__(self, name: str = "rec", **kwargs: int) -> None:
        super().__init__(name, **kwargs)
        self.events: list[object] = []
        self.ticked = asyncio.Condition()

    async def on_start(self) -> None:
        self.events.append("start")

    async def on_stop(self) -> None:
        self.events.append("stop")

    async def handle(self, message: object) -> object | None:
        if isinstance(message, Block):
            self.events.append("block:begin")
            message.entered.set()
            await message.release.wait()
            self.events.append("block:end")
            return "unblocked"
        if message == "get":
            return list(self.events)
        if message == "boom":
            raise ValueError("boom")
        self.events.append(message)
        if isinstance(message, Tick):
            async with self.ticked:
                self.ticked.notify_all()
        return message


@asynccontextmanager
async def running(actor: Actor) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(actor.run(), name=actor.name)
    await asyncio.wait_for(actor.started.wait(), DEADLINE)
    try:
        yield task
    finally:
        actor.stop()
        await asyncio.wait({task}, timeout=DEADLINE)
        if not task.done():
            task.cancel()


async def ticks(actor: Recorder, timer: str, count: int) -> None:
    """Wait until `actor` has handled `count` ticks of `timer`."""

    def enough() -> bool:
        return sum(1 for e in actor.events if e == Tick(timer)) >= count

    async with actor.ticked:
        await asyncio.wait_for(actor.ticked.wait_for(enough), DEADLINE)


async def test_tell_and_ask_are_handled_in_order() -> None:
    actor = Recorder()
    async with running(actor):
        for i in range(5):
            actor.tell(i)
        replies = await asyncio.gather(*(actor.ask(f"q{i}") for i in range(3)))
        assert replies == ["q0", "q1", "q2"]
        assert await actor.ask("get") == ["start", 0, 1, 2, 3, 4, "q0", "q1", "q2"]


async def test_ask_times_out_and_the_late_reply_is_dropped() -> None:
    actor = Recorder()
    block = Block(asyncio.Event(), asyncio.Event())
    async with running(actor):
        actor.tell(block)
        await asyncio.wait_for(block.entered.wait(), DEADLINE)
        with pytest.raises(AskTimeout) as raised:
            await actor.ask("late", timeout=0.01)
        assert isinstance(raised.value, TimeoutError)
        block.release.set()
        # The timed-out message is still handled; the actor carries on normally.
        assert await actor.ask("after") == "after"
        assert actor.events[-2:] == ["late", "after"]


async def test_a_failing_handler_raises_to_the_asker_and_crashes_the_actor() -> None:
    actor = Recorder()
    task = asyncio.create_task(actor.run())
    await asyncio.wait_for(actor.started.wait(), DEADLINE)
    queued_behind = asyncio.create_task(actor.ask("never"))
    with pytest.raises(ValueError, match="boom"):
        await actor.ask("boom")
    with pytest.raises(ValueError, match="boom"):
        await asyncio.wait_for(task, DEADLINE)
    assert actor.state == "crashed"
    assert not actor.running
    assert actor.events == ["start", "stop"]  # on_stop ran after the crash
    with pytest.raises(ActorNotRunning):
        await asyncio.wait_for(queued_behind, DEADLINE)
    with pytest.raises(ActorNotRunning):
        actor.tell("late")


async def test_a_crash_in_on_start_skips_on_stop() -> None:
    class BadStart(Recorder):
        async def on_start(self) -> None:
            raise RuntimeError("no database")

    actor = BadStart()
    with pytest.raises(RuntimeError, match="no database"):
        await asyncio.wait_for(actor.run(), DEADLINE)
    assert actor.state == "crashed"
    assert not actor.started.is_set()
    assert actor.events == []


async def test_tell_on_a_full_mailbox_raises() -> None:
    actor = Recorder(mailbox_size=2)
    first = Block(asyncio.Event(), asyncio.Event())
    second = Block(asyncio.Event(), asyncio.Event())
    async with running(actor):
        actor.tell(first)
        await asyncio.wait_for(first.entered.wait(), DEADLINE)
        actor.tell(1)
        actor.tell(second)
        assert actor.queued == 2
        with pytest.raises(MailboxFull):
            actor.tell(3)
        with pytest.raises(MailboxFull):
            await actor.ask(4)
        first.release.set()
        await asyncio.wait_for(second.entered.wait(), DEADLINE)
        second.release.set()
        assert await actor.ask("get") == [
            "start",
            "block:begin",
            "block:end",
            1,
            "block:begin",
            "block:end",
        ]


async def test_messages_are_refused_before_run_and_after_stop() -> None:
    actor = Recorder()
    with pytest.raises(ActorNotRunning):
        actor.tell("early")
    with pytest.raises(ActorNotRunning):
        await actor.ask("early")
    async with running(actor):
        assert actor.running
        assert actor.state == "running"
    assert actor.state == "stopped"
    with pytest.raises(ActorNotRunning):
        actor.tell("late")


async def test_an_instance_runs_only_once() -> None:
    actor = Recorder()
    async with running(actor):
        pass
    with pytest.raises(RuntimeError, match="only once"):
        await actor.run()


async def test_stop_before_run_means_run_returns_at_once() -> None:
    actor = Recorder()
    actor.stop()
    await asyncio.wait_for(actor.run(), DEADLINE)
    assert actor.state == "stopped"
    assert actor.events == []


async def test_stop_lets_the_current_message_finish_then_runs_on_stop() -> None:
    actor = Recorder()
    block = Block(asyncio.Event(), asyncio.Event())
    task = asyncio.create_task(actor.run())
    await asyncio.wait_for(actor.started.wait(), DEADLINE)
    actor.tell(block)
    await asyncio.wait_for(block.entered.wait(), DEADLINE)
    actor.tell("queued")
    pending = asyncio.create_task(actor.ask("queued ask"))
    await asyncio.sleep(0)  # one loop step: the ask task runs up to its enqueue
    assert actor.queued == 2
    actor.stop()
    actor.stop()  # idempotent
    assert actor.state == "stopping"
    assert not task.done()
    with pytest.raises(ActorNotRunning):
        actor.tell("refused")
    block.release.set()
    await asyncio.wait_for(task, DEADLINE)  # returns normally
    assert actor.state == "stopped"
    # The message in hand finished; what was still queued was not handled.
    assert actor.events == ["start", "block:begin", "block:end", "stop"]
    with pytest.raises(ActorNotRunning):
        await asyncio.wait_for(pending, DEADLINE)


async def test_stop_wakes_an_idle_actor() -> None:
    actor = Recorder()
    task = asyncio.create_task(actor.run())
    await asyncio.wait_for(actor.started.wait(), DEADLINE)
    actor.stop()
    await asyncio.wait_for(task, DEADLINE)
    assert actor.events == ["start", "stop"]


async def test_on_stop_errors_are_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    class BadStop(Recorder):
        async def on_stop(self) -> None:
            raise RuntimeError("cannot close")

    actor = BadStop()
    async with running(actor) as task:
        pass
    assert task.done() and task.exception() is None
    assert actor.state == "stopped"
    assert "on_stop failed" in caplog.text


async def test_timer_delivers_ticks() -> None:
    class Ticking(Recorder):
        async def on_start(self) -> None:
            self.every(0.001, "poll")

    actor = Ticking()
    async with running(actor):
        await ticks(actor, "poll", 3)
        with pytest.raises(ValueError, match="already has a timer"):
            actor.every(1.0, "poll")
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "rec:timer:poll"]


async def test_timer_skips_ticks_while_one_is_unhandled() -> None:
    block = Block(asyncio.Event(), asyncio.Event())

    class Slow(Recorder):
        async def on_start(self) -> None:
            self.every(0.001, "slow")

        async def handle(self, message: object) -> object | None:
            if message == Tick("slow") and not block.entered.is_set():
                await super().handle(block)  # the first tick blocks the actor
            return await super().handle(message)

    slow = Slow("slow")
    clock = Recorder("clock")  # its ticks prove time has passed
    async with running(slow), running(clock):
        await asyncio.wait_for(block.entered.wait(), DEADLINE)
        clock.every(0.001, "clock")
        await ticks(clock, "clock", 20)  # the slow timer fired about as often meanwhile
        assert slow.queued == 0  # every tick was skipped: the first one is still in hand
        block.release.set()
        await ticks(slow, "slow", 3)
        assert slow.queued <= 1


async def test_cancelling_run_fails_the_message_in_hand_and_skips_on_stop() -> None:
    actor = Recorder()
    block = Block(asyncio.Event(), asyncio.Event())
    task = asyncio.create_task(actor.run())
    await asyncio.wait_for(actor.started.wait(), DEADLINE)
    asker = asyncio.create_task(actor.ask(block))
    await asyncio.wait_for(block.entered.wait(), DEADLINE)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, DEADLINE)
    with pytest.raises(ActorNotRunning):
        await asyncio.wait_for(asker, DEADLINE)
    assert actor.state == "stopped"
    assert actor.events == ["start", "block:begin"]  # a hard kill: on_stop is not run
