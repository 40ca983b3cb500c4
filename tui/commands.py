"""Every action of the console, once: its key (in the footer while its tab is shown), its title
and help in the command palette (ctrl+p), and the tab it acts on."""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding


@dataclass(frozen=True)
class Command:
    name: str
    key: str
    label: str  # in the footer
    title: str  # in the command palette
    help: str
    tab: str | None  # the tab it belongs to; None: every tab


TABS = (
    ("overview", "o", "Overview"),
    ("instances", "i", "Instances"),
    ("money", "u", "Users & money"),
    ("pool", "j", "Pool & jobs"),
    ("events", "e", "Events"),
)

COMMANDS = (
    Command("refresh", "r", "Refresh", "Refresh", "Load every view again", None),
    Command("health-check", "c", "Sweep", "Health sweep now", "Check every instance", "overview"),
    Command(
        "restart-actor",
        "A",
        "Restart actor",
        "Restart the selected actor",
        "Restart the actor selected in the supervision tree",
        "overview",
    ),
    Command("restart", "R", "Restart", "Restart instance", "Restart its gateway", "instances"),
    Command("stop", "s", "Stop", "Stop instance", "Stop its gateway", "instances"),
    Command("start", "S", "Start", "Start instance", "Start a stopped gateway", "instances"),
    Command(
        "pause", "p", "Pause", "Pause instance", "The proxy refuses it until resumed", "instances"
    ),
    Command(
        "resume", "P", "Resume", "Resume instance", "Resume one an operator paused", "instances"
    ),
    Command(
        "limits",
        "l",
        "Limits",
        "Set instance limits",
        "Messages per hour, tokens per day",
        "instances",
    ),
    Command("delete", "D", "Delete", "Delete instance", "Tear down its server", "instances"),
    Command(
        "logs", "L", "Follow log", "Follow instance log", "Its gateway's log, live", "instances"
    ),
    Command(
        "adjust", "a", "Adjust", "Adjust user balance", "A ledger entry with a reason", "money"
    ),
    Command(
        "pause-user", "p", "Pause user", "Pause user", "Pause all of a user's instances", "money"
    ),
    Command(
        "resume-user",
        "P",
        "Resume user",
        "Resume user",
        "Resume what an operator paused",
        "money",
    ),
    Command("range", "m", "Range", "Change money range", "24 h, 7, 30 or 90 days", "money"),
    Command("provision", "n", "Provision", "Provision servers", "Create N servers now", "pool"),
    Command("drain", "d", "Drain", "Drain the pool", "Delete spares and hold the pool", "pool"),
    Command("resume-pool", "g", "Resume pool", "Resume the pool", "Lift the hold", "pool"),
    Command("retry", "t", "Retry job", "Retry failed job", "Run the selected job again", "pool"),
    Command("pause-events", "space", "Pause", "Pause events", "Pause or resume", "events"),
    Command("filter", "slash", "Filter", "Filter events", "Show matching events only", "events"),
)
BY_NAME = {c.name: c for c in COMMANDS}


def bindings() -> list[Binding]:
    # The tabs' keys are in their labels, not in the footer.
    found = [Binding(key, f"show('{tab}')", label, show=False) for tab, key, label in TABS]
    found += [Binding(c.key, f"command('{c.name}')", c.label) for c in COMMANDS]
    return [*found, Binding("q", "quit", "Quit")]
