"""Loading plugins: the ``blitzclawd`` entry-point group, built-ins included (blitzclawd.hookspecs).

from blitzclawd import plugins
plugins.channels()["telegram"]      # a blitzclawd.channels.Channel
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Any

import pluggy

from blitzclawd import hookspecs
from blitzclawd.channels import Channel

log = logging.getLogger("blitzclawd.plugins")

ENTRY_POINT_GROUP = hookspecs.PROJECT


@functools.cache
def manager() -> pluggy.PluginManager:
    """The plugin manager, with every plugin of the entry-point group loaded (once)."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    loaded = pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    log.debug("plugins loaded", extra={"count": loaded})
    return pm


@functools.cache
def channels() -> dict[str, Channel]:
    """Every channel the plugins register, by its type name (a duplicate name is an error)."""
    found: dict[str, Channel] = {}
    for batch in manager().hook.register_channels():
        for channel in batch:
            _check(channel)
            if channel.name in found:
                raise RuntimeError(f"two plugins register the channel {channel.name!r}")
            found[channel.name] = channel
    return dict(sorted(found.items()))  # by name, whatever order the plugins loaded in


_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
_HOME_PATH = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


def _check(channel: Channel) -> None:
    """A plugin's channel must be usable as it is declared: fail at load, not at a user's."""
    name = getattr(channel, "name", None)
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise RuntimeError(f"a channel's name must match {_NAME.pattern}: {name!r}")
    for attr in ("display_name", "fields", "server_packages", "session_dirs"):
        if not hasattr(channel, attr):
            raise RuntimeError(f"channel {name!r} has no {attr}")
    for path in channel.session_dirs:
        if not _HOME_PATH.fullmatch(path) or ".." in path.split("/"):
            raise RuntimeError(f"channel {name!r}: session dir {path!r} is not inside the home")
    for route in channel.routes():
        if route.method not in ("GET", "POST") or not _HOME_PATH.fullmatch(route.path):
            raise RuntimeError(f"channel {name!r}: bad route {route.method} {route.path!r}")


def describe() -> list[dict[str, Any]]:
    """Each loaded plugin: its name, where it comes from, the hooks it implements."""
    pm = manager()
    dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    out = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda np: np[0]):
        dist = dists.get(id(plugin))
        out.append(
            {
                "name": name,
                "module": getattr(plugin, "__name__", repr(plugin)),
                "distribution": f"{dist.project_name} {dist.version}" if dist else None,
                "hooks": sorted(h.name for h in pm.get_hookcallers(plugin) or []),
            }
        )
    return out
