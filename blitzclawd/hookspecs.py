"""The plugin contract: the hooks a blitzclawd plugin may implement (pluggy, the datasette way).

A plugin is a module with functions marked ``@hookimpl`` and named like the hooks below, listed
under the ``blitzclawd`` entry-point group of its distribution::

    [project.entry-points.blitzclawd]
    discord = "my_package.discord_channel"

Built-in plugins (Telegram, WhatsApp: ``plugins/``) are registered exactly the same way, from
this project's own pyproject. Hooks are synchronous and run at setup; what they return are
objects whose async methods the daemon awaits (see blitzclawd.channels).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from blitzclawd.channels import Channel

PROJECT = "blitzclawd"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_channels() -> list[Channel]:
    """The messaging channels this plugin adds, each a blitzclawd.channels.Channel."""
    raise NotImplementedError  # a spec: pluggy calls the plugins' implementations
