"""Loading plugins: the ``blitzclawd`` entry-point group, built-ins included (blitzclawd.hookspecs).

from blitzclawd import plugins
plugins.channels()["telegram"]      # a blitzclawd.channels.Channel
"""

from __future__ import annotations

import functools
import logging
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
            if channel.name in found:
                raise RuntimeError(f"two plugins register the channel {channel.name!r}")
            found[channel.name] = channel
    return dict(sorted(found.items()))  # by name, whatever order the plugins loaded in


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
