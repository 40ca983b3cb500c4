"""`blitzclawd serve | migrate | config check | plugins` — the daemon's command line."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from blitzclawd.config import (
    ConfigError,
    Secrets,
    Settings,
    find_config_path,
    load_secrets,
    load_settings,
)
from blitzclawd.logs import setup_logging

EXIT_CONFIG = 78  # EX_CONFIG: systemd's RestartPreventExitStatus keeps a bad config from looping

log = logging.getLogger("blitzclawd")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="blitzclawd", description="BlitzClaw hosting daemon")
    p.add_argument(
        "--config",
        "-c",
        help="path to blitzclawd.toml "
        "(default: $BLITZCLAW_CONFIG, then /etc/blitzclawd/blitzclawd.toml, "
        "else built-in defaults)",
    )
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the daemon (migrates the database first)")
    sub.add_parser("migrate", help="apply pending database migrations and exit")
    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="validate a configuration file")
    check.add_argument("path", nargs="?", help="file to check (default: as --config)")
    sub.add_parser(
        "plugins", help="list the loaded plugins (entry-point group 'blitzclawd') as JSON"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "config":
        return _config_check(args.path or args.config)
    if args.command == "plugins":
        return _plugins()
    try:
        settings = load_settings(find_config_path(args.config))
        secrets = load_secrets()
    except ConfigError as exc:
        _print_problems(exc)
        return EXIT_CONFIG
    setup_logging(settings.daemon.log_level, settings.daemon.log_format)
    if args.command == "serve":
        return _run(_serve(settings, secrets))
    return _run(_migrate(settings, secrets))


def _config_check(path_arg: str | None) -> int:
    path = find_config_path(path_arg)
    try:
        load_settings(path)
        load_secrets()
    except ConfigError as exc:
        _print_problems(exc)
        return EXIT_CONFIG
    print(f"{path or 'built-in defaults'}: ok")
    return 0


def _print_problems(exc: ConfigError) -> None:
    for problem in exc.problems:
        print(f"config error: {problem}", file=sys.stderr)


def _run(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:  # uvloop is optional on platforms without it
        return asyncio.run(coro)
    return uvloop.run(coro)


async def _serve(settings: Settings, secrets: Secrets) -> int:
    from blitzclawd.daemon import EXIT_START_FAILED, Daemon

    daemon = Daemon(settings, secrets)
    _tune_gc()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.request_stop)
    try:
        return await daemon.run()
    except Exception:
        log.exception("daemon failed")
        return EXIT_START_FAILED


def _tune_gc() -> None:
    """Fewer young-generation collections on the request path.

    Every proxied request parses a JSON body into thousands of small objects; with CPython's
    default threshold (700 allocations) that triggers a collection every few requests. Objects
    alive at start-up (modules, settings) are frozen out of every future collection.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


async def _migrate(settings: Settings, secrets: Secrets) -> int:
    from blitzclawd.daemon import open_database
    from blitzclawd.db.migrate import migrate
    from blitzclawd.db.pool import connect

    db = await open_database(settings, secrets)
    try:
        conn = await connect(db.dsn)
        try:
            applied = await migrate(conn)
        finally:
            await conn.close()
    finally:
        if db.embedded is not None:
            await db.embedded.stop()
    print("\n".join(f"applied {name}" for name in applied) or "schema is up to date")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def _plugins() -> int:
    """Each plugin with the hooks it implements, and the channels they add."""
    import json

    from blitzclawd import plugins
    from blitzclawd.channels import describe

    found = {
        "plugins": plugins.describe(),
        "channels": [describe(c) for c in plugins.channels().values()],
    }
    print(json.dumps(found, indent=2))
    return 0
