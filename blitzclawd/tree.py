"""The daemon's supervision tree, declared in one place.

    root                      one_for_one
    ├── postgres              the embedded cluster's keeper (only when it is ours)
    ├── core                  one_for_one: heartbeat, janitor*, notifier
    ├── money                 one_for_one: billing, proxy
    ├── fleet                 one_for_one: provisioner, health-monitor*, pool-manager*
    └── edge                  one_for_one: proxy-listener, api-listener
                              (* a singleton: one daemon sharing the database runs it)

Start in this order, stop in reverse: the listeners open once what they serve is up and close
first; the database keeper stops last. Each subtree has its own restart window
([supervisor] max_restarts within `within` s): a crash-looping fleet actor restarts within
fleet, then fleet as a whole (one restart in the root's window), and only a fleet that keeps
escalating takes the daemon down (exit 70, systemd starts it afresh). Money is one_for_one, not
rest_for_one: the proxy looks billing up at every hand-off and journals settlements while it is
away, so a billing restart must not cut the streams the proxy is relaying.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from blitzclawd.children import Children
from blitzclawd.config import SupervisorSettings
from blitzclawd.runtime.supervisor import ChildSpec, Strategy, Supervisor


@dataclass(frozen=True, slots=True)
class Branch:
    """A supervisor in the tree: its children start in order and stop in reverse."""

    name: str
    strategy: Strategy
    children: tuple[Branch | ChildSpec, ...]


def declare(
    c: Children, *, embedded: bool, pool_manager: bool, extra: Sequence[ChildSpec] = ()
) -> Branch:
    """The tree. `extra`: children tests add to the root, before the listeners."""
    one = Strategy.ONE_FOR_ONE
    return Branch(
        "root",
        one,
        (
            *([c.postgres()] if embedded else []),
            Branch("core", one, (c.heartbeat(), c.janitor(), c.notifier())),
            Branch("money", one, (c.billing(), c.proxy())),
            Branch(
                "fleet",
                one,
                (
                    c.provisioner(),
                    c.health_monitor(),
                    *([c.pool_manager()] if pool_manager else []),
                ),
            ),
            *extra,
            Branch("edge", one, (c.proxy_listener(), c.api_listener())),
        ),
    )


def build(root: Branch, window: SupervisorSettings) -> Supervisor:
    """The root supervisor of `root` (not started)."""
    return Supervisor(
        [_spec(child, window) for child in root.children],
        name=root.name,
        strategy=root.strategy,
        max_restarts=window.max_restarts,
        within=window.within,
        backoff_base=window.backoff_base,
        backoff_max=window.backoff_max,
    )


def _spec(node: Branch | ChildSpec, window: SupervisorSettings) -> ChildSpec:
    if isinstance(node, ChildSpec):
        return node
    specs = [_spec(child, window) for child in node.children]
    return ChildSpec(
        node.name,
        lambda: build(Branch(node.name, node.strategy, tuple(specs)), window),
        # A subtree starts and stops its children one after the other.
        shutdown_timeout=sum(s.shutdown_timeout for s in specs) + 5,
        start_timeout=sum(s.start_timeout for s in specs) + 5,
    )


def shape(node: Branch | ChildSpec) -> object:
    """The tree as plain data: a leaf's name, or {name: [strategy, children...]}."""
    if isinstance(node, ChildSpec):
        return node.name
    return {node.name: [node.strategy.value, *(shape(child) for child in node.children)]}
